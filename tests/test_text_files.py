"""User YAML (training configs, option files, class tables) is bounded: alias bombs, huge files and text
that is not UTF-8 are one line."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bicorseg.cli.main import main
from bicorseg.errors import ConfigError
from bicorseg.text_files import MAX_BYTES, parse_yaml, read_json_object, read_yaml_mapping
from tests.helpers.cli import refused
from tests.helpers.inference import tiny_checkpoint


def _alias_bomb(levels: int = 9) -> str:
    """The billion laughs in YAML: each level names the previous one ten times (10**levels leaves)."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]" for prev, name in itertools.pairwise(names)]
    return "\n".join(lines) + "\n"


def _refused(capsys, *args: object) -> str:
    started = time.monotonic()
    status = main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, (status, lines)
    assert time.monotonic() - started < 10  # refused before anything expands the document
    return lines[0]


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["train", "--output", "{tmp}/run", "--config"], "config file"),
        (["prepare", "loveda", "--config"], "option file"),
    ],
    ids=["train-config", "prepare-options"],
)
def test_an_alias_bomb_is_refused_at_once_in_one_line(command, what, tmp_path: Path, capsys) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    line = _refused(capsys, *args, bomb)
    assert f"{bomb}: unreadable {what} (its aliases expand to more than 100000 values, line" in line, line
    assert not (tmp_path / "run").exists()


def test_a_class_table_alias_bomb_is_refused(tmp_path: Path) -> None:
    from bicorseg.data.folder import ClassTable

    table = tmp_path / "classes.yaml"
    table.write_text("classes: [{name: a, value: 0}, {name: b, value: 1}]\n" + _alias_bomb())
    with pytest.raises(ConfigError, match=r"classes\.yaml: unreadable class table \(its aliases expand"):
        ClassTable.from_yaml(table)


def test_an_alias_inside_the_node_it_names_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("model: &m\n  backbone: convnext_nano\n  again: *m\n")
    with pytest.raises(
        ConfigError, match=r"loop\.yaml: unreadable config file \(an alias inside the node it names"
    ):
        read_yaml_mapping(path, "config file")


def test_a_file_over_the_size_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("notes: " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: unreadable config file \(more than 1024 KiB\)"):
        read_yaml_mapping(path, "config file")


def test_deep_nesting_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"deep\.yaml: unreadable YAML \(nested too deeply\)"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000, "deep.yaml")


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "base: &base {lr: 0.001, wd: 0.01}\nfine: {<<: *base, lr: 0.0001}\nboth: [*base, *base]\n"
    )
    data = read_yaml_mapping(path)
    assert data["fine"] == {"lr": 0.0001, "wd": 0.01}
    assert data["both"] == [{"lr": 0.001, "wd": 0.01}] * 2


def test_an_alias_bomb_given_as_an_option_value_is_not_expanded() -> None:
    from bicorseg.typedconfig import parse_value

    text = "{" + _alias_bomb().strip().replace("\n", ", ") + "}"
    assert parse_value(text) == text  # kept as text; the typed check then names the key


LATIN1 = "model:\n  backbone: convnext_nano\n# caf\xe9\n".encode("latin-1")


def test_yaml_that_is_not_utf8_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(LATIN1)
    offset = LATIN1.index(b"\xe9")
    message = f"latin1.yaml: unreadable {{}} (not UTF-8 text: byte 0xe9 at offset {offset}; save it as UTF-8)"
    assert message.format("config file") in refused(
        capsys, "train", "--config", bad, "--output", tmp_path / "r"
    )
    assert message.format("option file") in refused(capsys, "prepare", "loveda", "--config", bad)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / "a.png")
    line = refused(capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "m.ckpt"), "--dataset", "folder",
                   "--root", tmp_path, "--split", "all", "--class-table", bad)  # fmt: skip
    assert message.format("class table") in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", r"unreadable report \(a JSON object is expected, not a list\)"),
        (b'{"a": Infinity}', r"unreadable report \(invalid JSON: Infinity is not a number JSON allows\)"),
        (b'{"a": "caf\xe9"}', r"unreadable report \(not UTF-8 text: byte 0xe9 at offset 10"),
        (b"[" * 100_000 + b"]" * 100_000, r"unreadable report \(invalid JSON: maximum recursion depth"),
        (b'{"a": "' + b"x" * 2048 + b'"}', r"unreadable report \(more than 1 KiB\)"),
        (None, r"report does not exist"),
    ],
    ids=["not-an-object", "infinity", "not-utf8", "nested", "too-large", "missing"],
)
def test_json_files_are_bounded_and_checked(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"report\.json: {message}"):
        read_json_object(path, "report", ValueError, limit=300_000 if len(content or b"") > 4096 else 1024)
    path.write_text('{"miou": 0.5}')
    assert read_json_object(path, "report") == {"miou": 0.5}
