"""Typed configs: the one mechanism that turns structured input into dataclasses, and back into YAML.

A config is a dataclass: its fields carry the types and defaults (a field may be another dataclass,
a section), and its docstring's ``Attributes:`` section says what each field means. Every structured
input goes through :func:`build`: training configs, ``prepare`` option files, class tables, the
augmentation and folder sections, the dataset facts a checkpoint stores. Building is strict: an
unknown key is refused with the nearest valid one, values are checked against the annotations
(numbers written as strings, numpy's numbers and paths are converted; an integer is taken where a
name is expected, as YAML reads the sample ``7``), then the dataclass's own ``__post_init__`` checks
run; every fault is one :class:`ConfigError` naming the key (``optimizer.lr: expected a number, got 'abc'``).
:func:`fields_of` describes the keys (with their documentation, for ``--help``), :func:`set_dotted`
sets one (``data.augment.mosaic_p``), :func:`to_yaml` prints a config.

Files are read by :mod:`bicorseg.text_files` (bounded). It imports neither torch nor Lightning, so
``--help`` and config errors answer at once. Why this module rather than jsonargparse: see
``docs/ARCHITECTURE.md`` (Contracts between layers, Configs).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Union

import yaml

from bicorseg.errors import ConfigError
from bicorseg.text_files import parse_yaml


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (a likely misspelling or a shortening of it), or None."""
    candidates = list(candidates)
    longer = [c for c in candidates if c.lower().startswith(word.lower())] if word else []
    if len(longer) == 1:
        return longer[0]
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    """Refuse ``value`` unless it is one of ``choices``, naming the nearest one (a :class:`ConfigError`)."""
    if value not in choices:
        guess = nearest(str(value), choices)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}{hint}", key=key)


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


# --- fields and their documentation --------------------------------------------------------------------

_ENTRY = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)*):\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """What each field means, from the ``Attributes:`` section of ``cls``'s docstring.

    An entry is ``name: text`` (or ``a, b: text`` for several fields), continued on more deeply
    indented lines; docstring markup (``x``, :class:`Foo`) is removed.
    """
    docs: dict[str, str] = {}
    inside, current, indent = False, [], None
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        if line.rstrip() == "Attributes:":
            inside, current, indent = True, [], None
        elif inside and line and not line[0].isspace():  # the section ended
            inside = False
        elif inside and (match := _ENTRY.match(line)) and (indent is None or len(match.group(1)) <= indent):
            indent = len(match.group(1))
            current = [n.strip() for n in match.group(2).split(",")]
            docs.update(dict.fromkeys(current, match.group(3).strip()))
        elif inside and current and line.strip():
            docs.update({name: f"{docs[name]} {line.strip()}" for name in current})
    plain = lambda text: re.sub(r"``([^`]+)``", r"\1", re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text))  # noqa: E731
    return {name: plain(text) for name, text in docs.items()}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One key of a config: its dotted name, annotation, default (``MISSING`` when required) and meaning."""

    key: str
    type: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def section_of(tp: Any) -> type | None:
    """The dataclass a field of this annotation holds (``AugmentOptions | bool`` -> AugmentOptions), or None."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return next((t for t in options if dataclasses.is_dataclass(t)), None)


def fields_of(cls: type, prefix: str = "") -> Iterator[FieldInfo]:
    """The init fields of a dataclass, each section's fields after the section."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        default = item.default
        if item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        key, section = _join(prefix, item.name), section_of(hints[item.name])
        yield FieldInfo(key, hints[item.name], default, docs.get(item.name, ""))
        if section is not None:
            yield from fields_of(section, key)


def type_name(tp: Any) -> str:
    """A readable name of an annotation: ``int | float | null``, ``list[float]``, ``mapping``."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(t) for t in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list[{type_name((typing.get_args(tp) or (Any,))[0])}]"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


# --- values --------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``3``, ``1e-4``, ``null``, ``[0.02, 0.02]``, ``true``)."""
    try:
        return parse_yaml(text) if text.strip() else text
    except ConfigError:
        return text


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _is_already(value: Any, option: Any) -> bool:
    """Whether ``value`` is of the kind ``option`` without conversion (an int for ``int``, a list for ``list[...]``)."""
    if option in _EXPECTED:
        return type(value) is option
    container = typing.get_origin(option) in (list, tuple, dict) or dataclasses.is_dataclass(option)
    return container and isinstance(value, list | dict | tuple)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    """``value`` as the scalar type ``tp`` (other annotations: as it is)."""
    if tp not in _EXPECTED:
        return value
    # numpy's numbers too (a Python caller's statistics, counts): they become Python's
    number = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and number and isinstance(value, numbers.Integral):
        return int(value)
    if tp is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if tp is float and (number or isinstance(value, str)):
        try:
            result = float(value)  # YAML reads "5e-5" (no dot) as text
        except ValueError:
            pass
        else:
            if not math.isfinite(result):
                raise ConfigError(f"must be a finite number, got {value!r}", key=key)
            return result
    # a path: a file given from Python
    if tp is str and (isinstance(value, str | PurePath) or (number and isinstance(value, numbers.Integral))):
        return str(value)
    raise ConfigError(f"expected {_EXPECTED[tp]}, got {value!r}", key=key)


def coerce(value: Any, tp: Any, key: str, complete: bool = False) -> Any:
    """``value`` checked against the annotation ``tp`` (see the module docstring; ``complete``: :func:`build`'s)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(tp)):
                return None
            raise ConfigError("must not be null", key=key)
        errors = []
        # the option the value already is first (an int stays an int in int | float), text last
        for option in sorted(options, key=lambda o: (not _is_already(value, o), o is str)):
            try:
                return coerce(value, option, key, complete)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1 or (isinstance(value, Mapping) and section_of(tp) is not None):
            raise errors[0]  # one type besides null, or a section given as a mapping: its own reason
        raise ConfigError(f"expected {type_name(tp).replace(' | ', ' or ')}, got {value!r}", key=key)
    if value is None:
        raise ConfigError(f"must not be null (expected {type_name(tp)})", key=key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, complete)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, got {value!r}", key=key)
        item = (typing.get_args(tp) or (Any,))[0]
        return origin(coerce(v, item, f"{key}[{i}]", complete) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key=key)
        item = (typing.get_args(tp) or (Any, Any))[1]
        return {k: coerce(v, item, _join(key, k), complete) for k, v in value.items()}
    return _scalar(value, tp, key)


# --- building ------------------------------------------------------------------------------------------


def check_keys(cls: type, data: Any, prefix: str = "") -> None:
    """Refuse, at any depth, a key that names no field, naming the nearest valid one."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping of keys, got {data!r}", key=prefix or "config")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for name, value in data.items():
        key = _join(prefix, name)
        if name not in known:
            guess = nearest(str(name), known)
            hint = f"did you mean {_join(prefix, guess)}? " if guess else ""
            raise ConfigError(f"unknown key; {hint}(known: {', '.join(known)})", key=key)
        section = section_of(hints[name])
        if section is not None and isinstance(value, Mapping):
            check_keys(section, value, key)


def build(cls: type, data: Mapping[str, Any], prefix: str = "", complete: bool = False) -> Any:
    """A ``cls`` instance from a mapping, strictly; ``prefix`` is the key errors put before a field.

    ``complete``: every field is required, in the sections too (a record its ``to_dict`` wrote).
    """
    check_keys(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    values = {name: coerce(value, hints[name], _join(prefix, name), complete) for name, value in data.items()}
    for item in dataclasses.fields(cls):
        required = complete or item.default is item.default_factory is dataclasses.MISSING
        if item.init and required and item.name not in values:
            raise ConfigError("is required", key=_join(prefix, item.name))
    try:
        return cls(**values)
    except ConfigError as error:  # a check of the dataclass: its key below the prefix
        inside = error.key is not None and (error.key == prefix or error.key.startswith(f"{prefix}."))
        if not prefix or inside or (error.key is None and str(error).startswith(prefix)):
            raise
        raise ConfigError(error.detail, key=_join(prefix, error.key) if error.key else prefix) from None


def set_dotted(data: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of a nested mapping with ``a.b.c`` set to ``value`` (inner mappings created as needed)."""
    head, _, rest = dotted.partition(".")
    out = dict(data)
    inner = out.get(head)
    out[head] = set_dotted(inner if isinstance(inner, Mapping) else {}, rest, value) if rest else value
    return out


def to_plain(value: Any) -> Any:
    """Dataclasses (their ``to_dict`` when they have one), tuples, paths and numbers of other types
    (numpy's) as plain YAML values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_plain(to_dict() if callable(to_dict) else dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return str(value) if isinstance(value, Path) else value


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for lists of numbers or names."""


_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=all(not isinstance(v, dict | list) for v in data)
    ),
)


def to_yaml(value: Any) -> str:
    """A config (dataclass or mapping) as YAML, keys in declaration order."""
    return yaml.dump(to_plain(value), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
