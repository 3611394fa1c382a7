"""Read the YAML users give (training configs, class tables, option files, option values) with one-line errors.

Files are decoded as UTF-8 and parsed with PyYAML's safe loader (plain data only: no Python
objects). YAML from strangers is bounded before it is built: a file may hold at most
:data:`MAX_BYTES`, and the document, with every alias expanded, at most :data:`MAX_NODES` nodes (an
alias bomb, a few lines that expand to billions of nodes, is refused at once; an alias inside the
node it names is refused too). A missing file, bytes that are not UTF-8, invalid YAML, a document
over the limits or a top level that is not a mapping raise :class:`~bicorseg.errors.ConfigError`
naming the file (and the line, for YAML errors).
"""

from __future__ import annotations

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


def read_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict[str, Any]:
    """The mapping at the top of a YAML file (``{}`` for an empty file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: {what} does not exist")
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: unreadable {what} ({error.strerror})") from error
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: unreadable {what} (more than {MAX_BYTES // 1024} KiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: unreadable {what} (not UTF-8 text: byte {error.object[error.start]:#04x} at offset "
            f"{error.start}; save it as UTF-8)"
        ) from error
    data = parse_yaml(text, str(path), what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of keys, not a {type(data).__name__}")
    return data
