"""Typed configs for every command: dataclasses in; YAML, dotted overrides, help and printing out.

A config is a dataclass: its fields carry the types and defaults, and its docstring's
``Attributes:`` section says what each field means. This module is the one mechanism the commands
share to

* read YAML files (:func:`read_yaml`) and command-line values (:func:`parse_value`, read as YAML);
* build a dataclass strictly (:func:`build`): an unknown key is refused with the nearest valid one,
  values are checked against the annotations (numbers written as strings are converted), then the
  dataclass's own ``__post_init__`` checks run; every fault is one :class:`ConfigError` naming the
  key (``optimizer.lr: expected a number, got 'abc'``);
* set dotted keys in nested mappings (:func:`set_dotted`);
* describe fields for ``--help`` (:func:`describe_fields`) and print configs as YAML (:func:`to_yaml`).

It imports neither torch nor Lightning, so ``--help`` and config errors answer at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from bicorseg.errors import ConfigError
from bicorseg.yaml_files import parse_yaml, read_yaml_mapping

__all__ = [
    "FieldInfo",
    "build",
    "coerce",
    "describe_fields",
    "field_docs",
    "nearest",
    "parse_value",
    "read_yaml",
    "set_dotted",
    "to_yaml",
    "type_name",
]


# --- names --------------------------------------------------------------------------------------------


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (a likely misspelling or a shortening of it), or None."""
    candidates = list(candidates)
    longer = [c for c in candidates if c.lower().startswith(word.lower())] if word else []
    if len(longer) == 1:
        return longer[0]
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_key(key: str, name: str, known: list[str], what: str = "key") -> ConfigError:
    guess = nearest(name, known)
    hint = f"did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{guess}?" if guess else ""
    section = key.rpartition(".")[0]
    takes = f"{section or 'the config'} takes {', '.join(known)}"
    return ConfigError(f"unknown {what}; {hint + ' ' if hint else ''}({takes})", key=key)


# --- documentation of fields ---------------------------------------------------------------------------

_SECTION = re.compile(r"^(Attributes|Args|Arguments|Parameters|Fields):\s*$")
_ENTRY = re.compile(r"^(\s+)([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?:\s*(.*)$")


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``x`` -> x, :class:`Foo` -> Foo."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def field_docs(cls: type) -> dict[str, str]:
    """What each field means, from the ``Attributes:`` (or ``Args:``) section of ``cls``'s docstring.

    An entry is ``name: text`` (or ``a, b: text`` for several fields), continued on more deeply
    indented lines; docstring markup is removed.
    """
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    inside, current, indent = False, [], None
    for line in lines:
        if _SECTION.match(line):
            inside, current, indent = True, [], None
            continue
        if not inside:
            continue
        if line and not line[0].isspace():  # the section ended
            inside = False
            continue
        match = _ENTRY.match(line)
        if match and (indent is None or len(match.group(1)) <= indent):
            indent = len(match.group(1))
            current = [n.strip() for n in match.group(2).split(",")]
            for name in current:
                docs[name] = match.group(3).strip()
        elif current and line.strip():
            for name in current:
                docs[name] = f"{docs[name]} {line.strip()}".strip()
    return {name: _plain(text) for name, text in docs.items()}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One field of a config dataclass, as ``--help`` shows it."""

    name: str
    type: Any
    default: Any  # dataclasses.MISSING when required
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def is_mapping(self) -> bool:
        """A field holding a mapping (keys inside it can be set one by one: ``data.augment.mosaic_p``)."""
        return any(typing.get_origin(t) is dict for t in _options(self.type))


def describe_fields(cls: type) -> list[FieldInfo]:
    """The init fields of a dataclass with their types, defaults and documentation."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    infos = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        infos.append(FieldInfo(f.name, hints[f.name], default, docs.get(f.name, "")))
    return infos


def type_name(tp: Any) -> str:
    """A readable name of an annotation: ``int | float | null``, ``list[float]``, ``mapping``."""
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(t) for t in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"list[{type_name(item)}]"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _options(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


# --- values --------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``3``, ``1e-4``, ``null``, ``[0.02, 0.02]``, ``true``)."""
    try:
        return parse_yaml(text) if text.strip() else text
    except ConfigError:
        return text


def _union_rank(value: Any) -> Any:
    def rank(option: Any) -> int:
        exact = {bool: bool, int: int, float: float, str: str}.get(option)
        if exact is not None and type(value) is exact:
            return 0
        if typing.get_origin(option) in (list, dict) and isinstance(value, list | dict | tuple):
            return 0
        return 1 if option is not str else 2  # strings last: "1e-4" should become a number

    return rank


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp``; numbers written as strings are converted.

    An integer is accepted where a string is expected (YAML reads the sample name ``7`` or the
    split ``2024`` as a number).
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError("must not be null", key=key)
        # the exact types first (an int stays an int in "int | float")
        errors = []
        for option in sorted((o for o in options if o is not type(None)), key=_union_rank(value)):
            try:
                return coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:  # one type besides null: its own reason is the clearest
            raise errors[0]
        raise ConfigError(f"expected {type_name(tp).replace(' | ', ' or ')}, got {value!r}", key=key)
    if value is None:
        raise ConfigError(f"must not be null (expected {type_name(tp)})", key=key)
    if origin is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", key=key)
        return [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key=key)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", key=key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"expected an integer, got {value!r}", key=key)
    if tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # YAML reads "5e-5" (no dot) as a string
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"expected a number, got {value!r}", key=key)
        if not math.isfinite(number):
            raise ConfigError(f"must be a finite number, got {value!r}", key=key)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"expected a string, got {value!r}", key=key)
    return value


# --- building ------------------------------------------------------------------------------------------


def build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """A ``cls`` instance from a mapping, strictly (see the module docstring).

    ``prefix`` is the section name errors put before a key (``optimizer`` -> ``optimizer.lr``).
    """
    where = f"{prefix}." if prefix else ""
    infos = {info.name: info for info in describe_fields(cls)}
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping of keys, got {data!r}", key=prefix or "config")
    for name in data:
        if name not in infos:
            raise _unknown_key(f"{where}{name}", str(name), list(infos))
    values = {name: coerce(value, infos[name].type, f"{where}{name}") for name, value in data.items()}
    missing = [name for name, info in infos.items() if info.required and name not in values]
    if missing:
        raise ConfigError("is required", key=f"{where}{missing[0]}")
    try:
        return cls(**values)
    except ConfigError as error:
        if error.key is None and not str(error).startswith(where or "\0"):
            raise ConfigError(error.detail, key=prefix or None) from None
        raise


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of a nested mapping with ``a.b.c`` set to ``value`` (inner mappings created as needed)."""
    head, _, rest = dotted.partition(".")
    out = dict(data)
    if not rest:
        out[head] = value
        return out
    inner = out.get(head)
    out[head] = set_dotted(dict(inner) if isinstance(inner, Mapping) else {}, rest, value)
    return out


# --- files ---------------------------------------------------------------------------------------------


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping, as a dict (``{}`` for an empty file); see :mod:`bicorseg.yaml_files`."""
    return read_yaml_mapping(path, what)


def to_plain(value: Any) -> Any:
    """Dataclasses (their ``to_dict`` when they have one), tuples and paths as plain YAML values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        data = to_dict() if callable(to_dict) else dataclasses.asdict(value)
        return {k: to_plain(v) for k, v in data.items()}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for short lists of numbers or names."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def to_yaml(value: Any) -> str:
    """A config (dataclass or mapping) as YAML, keys in declaration order."""
    return yaml.dump(to_plain(value), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
