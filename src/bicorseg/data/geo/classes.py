"""The classes of a GIS training source, and how label codes (attribute values, raster values) map to them.

Classes come from a class table (:class:`bicorseg.data.folder.ClassTable`; a class's ``value`` is
its code, ``ignore_values`` mean "not labelled"), else a list of names, else the codes found in the
labels (docs/gis-training.md, "The class attribute"). A code means the class whose name it spells
(``"water"``, or ``3`` for a class named ``"3"``) or whose ``value`` it is; any other code is refused
before training starts, naming it. Numbers stored as floating point (``3.0``) are the integer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bicorseg.data.folder import ClassTable
from bicorseg.defaults import NODATA, default_palette
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import DatasetSpec, LabelEncoding, check_class_names

DEFAULT_IGNORE = NODATA  # the ignore index of classes without a table: never a class


def normalise_code(value: Any) -> int | str | None:
    """A label code as an int or a string (None for a missing value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
        return str(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item"):  # numpy scalars
        return normalise_code(value.item())
    text = str(value).strip()
    return text or None


def sort_codes(codes: Iterable[int | str]) -> list[int | str]:
    """Numbers numerically first, then text alphabetically."""
    return sorted(set(codes), key=lambda c: (isinstance(c, str), c))


@dataclass(frozen=True)
class GeoClasses:
    """Class names, colours and the code of each class.

    Attributes:
        names: one name per class index.
        palette: one RGB colour per class.
        ignore_index: the label of pixels that are not labelled.
        eval_classes: the classes averaged into mIoU and mean F1.
        values: the table's code of each class (empty without a table listing values).
        ignore_codes: codes that mean "not labelled".
        background: the index of the class of uncovered pixels inside the labelled area, or None.
    """

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = DEFAULT_IGNORE
    eval_classes: tuple[int, ...] = ()
    values: tuple[int, ...] = ()
    ignore_codes: tuple[int, ...] = ()
    background: int | None = None
    _lookup: dict[int | str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[int | str, int] = {name: i for i, name in enumerate(self.names)}
        lookup.update({int(v): i for i, v in enumerate(self.values)})
        lookup.update({int(v): self.ignore_index for v in self.ignore_codes})
        for i, name in enumerate(self.names):  # a class named "3" is the code 3 too
            code = normalise_code(_number(name))
            if isinstance(code, int):
                lookup.setdefault(code, i)
        object.__setattr__(self, "_lookup", lookup)
        if not self.eval_classes:
            object.__setattr__(self, "eval_classes", tuple(range(len(self.names))))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, code: Any) -> int | None:
        """The class index of a code (the ignore index for an ignore code), None when it means no class."""
        key = normalise_code(code)
        if key is None:
            return None
        found = self._lookup.get(key)
        if found is None and isinstance(key, str):
            number = normalise_code(_number(key))
            found = self._lookup.get(number) if isinstance(number, int) else None
        return found

    def check_codes(self, codes: Iterable[Any], where: str) -> None:
        """Refuse codes that mean no class, naming them and the classes."""
        unknown = sort_codes({normalise_code(c) for c in codes if self.index(c) is None} - {None})  # type: ignore[arg-type]
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:8]) + (
                f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
            )
            known = ", ".join(self.names) + (
                f" (values {', '.join(map(str, self.values))})" if self.values else ""
            )
            raise InputError(f"{where}: code(s) {shown} are not classes of the class table: {known}")

    def spec(
        self, name: str, bands: Sequence[str], mean: Sequence[float], std: Sequence[float]
    ) -> DatasetSpec:
        """The dataset facts of these classes; the spec records how codes name them (values, or names)."""
        return DatasetSpec(
            name=name,
            class_names=self.names,
            palette=self.palette,
            ignore_index=self.ignore_index,
            eval_classes=self.eval_classes,
            bands=tuple(bands),
            mean=tuple(mean),
            std=tuple(std),
            label_encoding=LabelEncoding("values", self.values, self.ignore_codes)
            if self.values
            else LabelEncoding(),
        )

    @classmethod
    def from_table(cls, table: ClassTable, background: str | None) -> GeoClasses:
        where = table.source
        encoding = table.labels.encoding()
        if table.labels.kind == "value" and encoding.kind == "index":  # codes equal to the class indices
            count = len(table.class_names)
            encoding = LabelEncoding("values", tuple(range(count)), (table.ignore_index,))
        return cls(*_facts(table, encoding), _background(table.class_names, background, where))

    @classmethod
    def from_spec(cls, spec: DatasetSpec, background: str | None) -> GeoClasses:
        """The classes a model was trained on (a checkpoint's, a run's)."""
        where = f"the classes of {spec.name!r}"
        return cls(*_facts(spec, spec.label_encoding), _background(spec.class_names, background, where))

    @classmethod
    def from_names(
        cls, names: Sequence[str], background: str | None, where: str = "data.classes"
    ) -> GeoClasses:
        names = check_class_names([str(n) for n in names], where)
        if len(names) < 2:
            raise ConfigError(f"{where}: at least two classes are needed, got {len(names)}")
        return cls(names, default_palette(len(names)), background=_background(names, background, where))

    @classmethod
    def from_codes(cls, codes: Iterable[Any], background: str | None, where: str) -> GeoClasses:
        """The sorted distinct codes as classes (the background class first, when there is one)."""
        names = [str(c) for c in sort_codes(c for c in map(normalise_code, codes) if c is not None)]
        if background is not None and background not in names:
            names.insert(0, background)
        if len(names) < 2:
            raise InputError(
                f"{where}: the labels hold {len(names)} class(es) ({', '.join(names)}); at least two are needed"
            )
        return cls.from_names(names, background, where)


def _facts(source: ClassTable | DatasetSpec, encoding: LabelEncoding) -> tuple[Any, ...]:
    """Names, palette, ignore index, evaluation classes, and the codes of the classes and of "not
    labelled" when the masks or attributes hold values (none for colours or class indices)."""
    values = encoding.kind == "values"
    codes = [tuple(int(v) for v in c) if values else () for c in (encoding.classes, encoding.ignore)]
    return (source.class_names, source.palette, source.ignore_index, source.eval_classes, *codes)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _background(names: Sequence[str], background: str | None, where: str) -> int | None:
    if background is None:
        return None
    if background not in names:
        raise ConfigError(
            f"{where}: the background class {background!r} of the labelled area is not a class "
            f"({', '.join(names)}); name one with `background`"
        )
    return list(names).index(background)
