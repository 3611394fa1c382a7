"""The documentation site builds with warnings as errors (``mkdocs build --strict``, as CI runs it).

Here in the fast loop too, so that a change that breaks a link, an anchor or an API reference page
(a renamed module or a docstring the reference cannot read) is found before it lands.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import require
from tests.helpers.shared import REPO_ROOT


def test_the_site_builds_strict(tmp_path) -> None:
    require("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    problems = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "\n".join(problems) or result.stderr[-2000:]
    assert (tmp_path / "site" / "api" / "models" / "index.html").is_file()
