"""The documentation's Python examples run as written (offline, on a CPU, in a scratch folder).

Every ```python block of README.md runs, and every block of docs/ preceded by the line
``<!-- runnable -->`` (``<!-- runnable: slow -->`` for blocks that train or predict: outside the fast
loop); docs/contributing.md documents the convention.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"

FENCE = r"^```python\n(.*?)^```"
ANY_BLOCK = re.compile(FENCE, re.DOTALL | re.MULTILINE)
MARKED_BLOCK = re.compile(r"^<!-- runnable(: slow)? -->\n" + FENCE, re.DOTALL | re.MULTILINE)


def blocks() -> list:
    """(name, code, slow) of every block to run, README first."""
    found = []
    for index, code in enumerate(ANY_BLOCK.findall(README.read_text(encoding="utf-8"))):
        found.append((f"README.md#{index + 1}", code, True))
    for page in sorted(DOCS.rglob("*.md")):
        for index, (slow, code) in enumerate(MARKED_BLOCK.findall(page.read_text(encoding="utf-8"))):
            found.append((f"{page.relative_to(REPO)}#{index + 1}", code, bool(slow)))
    return found


def test_the_readme_and_the_docs_have_runnable_examples() -> None:
    names = [name for name, _, _ in blocks()]
    assert any(name.startswith("README.md") for name in names), "README.md has no ```python block"
    assert any(name.startswith("docs/") for name in names), "no block in docs/ is marked <!-- runnable -->"


def test_every_runnable_marker_precedes_a_python_block() -> None:
    """A marker before a ```bash block or with a typo would silently run nothing."""
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        markers = len(re.findall(r"^<!-- runnable", text, re.MULTILINE))
        assert markers == len(MARKED_BLOCK.findall(text)), (
            f"{page}: a runnable marker not followed by ```python"
        )


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param(name, code, marks=[pytest.mark.slow] if slow else [], id=name)
        for name, code, slow in blocks()
    ],
)
def test_code_block_runs(name: str, code: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their files (model.ckpt, ...) in the working folder
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, name, "exec"), namespace)
    if "predict_array(" in code:  # the API example: the sliding-window output has the image's size
        assert namespace["classes"].shape == (300, 400)
        assert namespace["logits"].shape[1] == namespace["model"].config.num_classes
        assert (tmp_path / "model.ckpt").is_file()
