"""Benchmark of how fast the command line answers ``--help``: the target is under 1.5 s.

Each command runs in a fresh process, RUNS times, interleaved, timed by the wall clock and by the
CPU time it used (user + system: on a shared machine the wall clock also counts the waits for a core):

* ``bicorseg --help``, ``bicorseg train --help`` (every config key is an option) and
  ``bicorseg predict --help``;
* ``jsonargparse train --help`` (when jsonargparse is installed): the same commands' parsers, then
  ``train``'s built by jsonargparse from the same config dataclasses, as a ``train`` command on
  jsonargparse would; the alternative docs/ARCHITECTURE.md weighs against ``bicorseg.typedconfig``.

Results go to ``benchmarks/results/cli_help.json``; the table gives each command's runs in seconds.

    python benchmarks/cli_help.py            # 5 runs of each
    python benchmarks/cli_help.py --runs 10
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cli_help.json"
JSONARGPARSE_TRAIN_HELP = """
from bicorseg.cli.main import build_parser
build_parser()
from jsonargparse import ActionConfigFile, ArgumentParser
from bicorseg.training.config import SECTIONS
parser = ArgumentParser(prog="bicorseg train")
parser.add_argument("--config", action=ActionConfigFile)
for name, cls in SECTIONS.items():
    parser.add_class_arguments(cls, name, sub_configs=True)
parser.parse_args(["--help"])
"""


def commands() -> dict[str, list[str]]:
    """The commands timed, by the name the table gives them."""
    cli = [sys.executable, "-m", "bicorseg.cli.main"]
    timed = {
        "bicorseg --help": [*cli, "--help"],
        "bicorseg train --help": [*cli, "train", "--help"],
        "bicorseg predict --help": [*cli, "predict", "--help"],
    }
    if importlib.util.find_spec("jsonargparse") is not None:
        timed["jsonargparse train --help"] = [sys.executable, "-c", JSONARGPARSE_TRAIN_HELP]
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default: 5)")
    args = parser.parse_args()
    timed = commands()
    load = os.getloadavg()
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.runs):
        for name, command in timed.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[name].append(round(time.perf_counter() - start, 3))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu_seconds[name].append(round(used, 3))
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"machine": machine, "runs": args.runs, "seconds": seconds}, indent=2) + "\n"
    )
    print(f"load average {load[0]:.1f} at start, {machine['load_average_at_end'][0]:.1f} at end")
    print(f"{'command':28s} {'wall min':>8s} {'max':>5s} {'CPU min':>8s} {'max':>5s}")
    for name, runs in seconds.items():
        cpu = cpu_seconds[name]
        print(f"{name:28s} {min(runs):8.2f} {max(runs):5.2f} {min(cpu):8.2f} {max(cpu):5.2f}")


if __name__ == "__main__":
    main()
