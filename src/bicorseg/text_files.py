"""Read the YAML and JSON files users give (training configs, class tables, option files, metrics
reports, manifests, model configurations) with one-line errors.

Files are read with a size limit (:data:`MAX_BYTES` unless the caller gives its own) and decoded as
UTF-8. YAML is parsed with PyYAML's safe loader (plain data only: no Python objects) and bounded
before it is built: the document, with every alias expanded, holds at most :data:`MAX_NODES` nodes
(an alias bomb, a few lines that expand to billions of nodes, is refused at once; an alias inside
the node it names is refused too). JSON must be one object and may not hold ``NaN`` or
``Infinity``, which JSON does not allow. A missing file, bytes that are not UTF-8, invalid YAML or
JSON, a document over the limits or a top level that is not a mapping raise the caller's error
type (:class:`~bicorseg.errors.ConfigError` by default) naming the file (and the line, for YAML).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from bicorseg.errors import ConfigError, first_line

MAX_BYTES = 1 << 20  # configs and class tables are a few KiB
MAX_NODES = 100_000  # nodes after alias expansion; configs have a few hundred


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, source: str, what: str) -> None:
    """Refuse a node graph that expands to more than :data:`MAX_NODES` nodes, or that holds a cycle."""
    sizes: dict[int, int] = {}  # expanded node count of each finished node
    open_nodes: set[int] = set()  # the nodes on the current path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                raise ConfigError(
                    f"{source}: unreadable {what} (its aliases expand to more than {MAX_NODES} values, "
                    f"line {node.start_mark.line + 1})"
                )
        elif key in open_nodes:
            raise ConfigError(
                f"{source}: unreadable {what} (an alias inside the node it names, line {node.start_mark.line + 1})"
            )
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def parse_yaml(text: str, source: str = "<text>", what: str = "YAML") -> Any:
    """The plain data of one YAML document (None for an empty one), within the limits above."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source, what)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise ConfigError(f"{source}: unreadable {what} (not valid YAML{where}: {problem})") from error
    except RecursionError as error:  # the composer recurses once per level
        raise ConfigError(f"{source}: unreadable {what} (nested too deeply)") from error
    finally:
        loader.dispose()


def read_text(
    path: str | os.PathLike, what: str, error: type[Exception] = ConfigError, limit: int = MAX_BYTES
) -> str:
    """The UTF-8 text of a file of at most ``limit`` bytes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{path}: {what} does not exist")
    try:
        with open(path, "rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as failure:
        raise error(f"{path}: unreadable {what} ({failure.strerror})") from failure
    if len(raw) > limit:
        raise error(f"{path}: unreadable {what} (more than {limit // 1024} KiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(
            f"{path}: unreadable {what} (not UTF-8 text: byte {failure.object[failure.start]:#04x} at offset "
            f"{failure.start}; save it as UTF-8)"
        ) from failure


def read_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict[str, Any]:
    """The mapping at the top of a YAML file (``{}`` for an empty file)."""
    path = Path(path).expanduser()
    data = parse_yaml(read_text(path, what), str(path), what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of keys, not a {type(data).__name__}")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_object(
    path: str | os.PathLike, what: str, error: type[Exception] = ConfigError, limit: int = MAX_BYTES
) -> dict[str, Any]:
    """The object at the top of a JSON file."""
    text = read_text(path, what, error, limit)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as failure:
        raise error(f"{path}: unreadable {what} (invalid JSON: {first_line(failure)})") from failure
    if not isinstance(data, dict):
        raise error(f"{path}: unreadable {what} (a JSON object is expected, not a {type(data).__name__})")
    return data
