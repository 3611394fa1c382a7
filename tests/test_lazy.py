"""The packages' names are imported on first use: importing the packages (and the shared facts of
``bicorseg.defaults``) loads neither torch nor Lightning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import sys
import bicorseg, bicorseg.defaults, bicorseg.losses, bicorseg.models, bicorseg.training
print("torch" in sys.modules, "lightning" in sys.modules)
print(bicorseg.models.ModelConfig.__module__, bicorseg.losses.LossConfig.__module__, bicorseg.load_model.__module__)
print("torch" in sys.modules, "lightning" in sys.modules)
for package in (bicorseg, bicorseg.models, bicorseg.losses, bicorseg.training):
    try:
        package.no_such_name
    except AttributeError as error:
        print(error)
"""


def test_packages_import_their_names_on_first_use() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False False"  # nothing heavy at import
    assert lines[1] == "bicorseg.models.config bicorseg.losses.config bicorseg.checkpoint"
    assert lines[2] == "True False"  # the checkpoint module needs torch; none of them needs Lightning
    assert lines[3:] == [
        f"module {name!r} has no attribute 'no_such_name'"
        for name in ("bicorseg", "bicorseg.models", "bicorseg.losses", "bicorseg.training")
    ]
