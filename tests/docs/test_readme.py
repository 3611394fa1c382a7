"""The README's Python examples run as written (offline, on a CPU, in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples() -> None:
    assert python_blocks(), "README.md has no ```python block"


@pytest.mark.slow  # a training step and a sliding-window prediction: seconds of CPU
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch) -> None:
    code = python_blocks()[index]
    monkeypatch.chdir(tmp_path)  # the example writes model.ckpt in the working folder
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)
    if "classes" in namespace:  # the API example: the sliding-window output has the image's size
        assert namespace["classes"].shape == (300, 400)
        assert namespace["logits"].shape[1] == namespace["config"].num_classes
        assert (tmp_path / "model.ckpt").is_file()
