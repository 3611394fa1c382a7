"""The README's test command (its second line) is exactly what CI runs (.ci/run), mypy and the docs included."""

from __future__ import annotations

from tests.helpers.shared import REPO_ROOT


def test_readme_test_line_is_what_ci_runs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    block = readme[readme.index("```bash") + 1 :]
    command = block[1].split("#", 1)[0].strip()
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci, (command, ci)
    assert " && mypy && " in command and " && mkdocs build --strict && " in command
    assert command.endswith("python -m pytest -q")
