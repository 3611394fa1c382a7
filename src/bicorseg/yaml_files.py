"""Read the YAML files users give (training configs, class tables, option files) with one-line errors.

Files are decoded as UTF-8 and parsed with PyYAML's safe loader (plain data only: no Python
objects). A missing file, bytes that are not UTF-8, invalid YAML or a top level that is not a
mapping raise :class:`~bicorseg.errors.ConfigError` naming the file (and the line, for YAML errors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bicorseg.errors import ConfigError, first_line


def read_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict[str, Any]:
    """The mapping at the top of a YAML file (``{}`` for an empty file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: {what} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: unreadable {what} ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: unreadable {what} (not UTF-8 text: byte {error.object[error.start]:#04x} at offset "
            f"{error.start}; save it as UTF-8)"
        ) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise ConfigError(f"{path}: unreadable {what} (not valid YAML{where}: {problem})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of keys, not a {type(data).__name__}")
    return data
