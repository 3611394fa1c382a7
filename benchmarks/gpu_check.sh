#!/usr/bin/env bash
# The GPU check: every test marked `cuda` (predict, evaluate and training steps at fp32 and bf16 on
# CUDA, a data-parallel start over NCCL, the speed benchmark against the reference form), then the GPU
# benchmarks, within one time budget (default 480 s: sized to finish in under 8 minutes on one H100;
# a step the budget cannot hold is recorded as not run).
#
#     bash benchmarks/gpu_check.sh            # GPU_CHECK_BUDGET=SECONDS to change the budget
#
# Writes benchmarks/results/gpu_check.json (the GPU, every step's command, time and outcome, every
# test's outcome) and the benchmarks' own JSON: speed_cuda.json, hbis_cuda.json, raster_cuda.json.
# Exit status 0 when every step passed (a skipped cuda test is a failure here), 1 otherwise, 2 when
# no CUDA GPU is visible (one line on stderr, nothing run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, installed or not
PYTHON=${PYTHON:-python}
BUDGET=${GPU_CHECK_BUDGET:-480}
RESULTS=benchmarks/results

if ! reason=$("$PYTHON" -c 'import torch; print("" if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is false)")' 2>/dev/null); then
    reason="$PYTHON cannot import torch"
fi
if [[ -n "$reason" ]]; then
    echo "gpu_check.sh: $reason; run it on a machine with an NVIDIA GPU" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$RESULTS"
start=$SECONDS

# step NAME LIMIT RESULT COMMAND...: run COMMAND for at most LIMIT seconds (less if the budget is
# nearly spent); one line per step in $work/steps.tsv: name, exit status, seconds, result file, command
step() {
    local name=$1 limit=$2 result=$3
    shift 3
    local left=$((BUDGET - (SECONDS - start)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 30)); then
        printf '%s\tnot run\t0\t%s\t%s\n' "$name" "$result" "$*" >>"$work/steps.tsv"
        echo "== $name: not run, the ${BUDGET} s budget is spent" >&2
        return
    fi
    echo "== $name (at most ${limit} s): $*" >&2
    local began=$SECONDS status
    timeout --kill-after=10 "$limit" "$@"
    status=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - began))" "$result" "$*" >>"$work/steps.tsv"
}

step tests 300 "" "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests --junitxml="$work/tests.xml"
step speed 150 "$RESULTS/speed_cuda.json" \
    "$PYTHON" benchmarks/speed.py --device cuda --warmup 2 --repeats 5 --output "$RESULTS/speed_cuda.json"
step hbis 60 "$RESULTS/hbis_cuda.json" "$PYTHON" benchmarks/hbis.py --device cuda --output "$RESULTS/hbis_cuda.json"
step raster 90 "$RESULTS/raster_cuda.json" \
    "$PYTHON" benchmarks/raster.py --device cuda --sizes 2048 6144 --output "$RESULTS/raster_cuda.json"

"$PYTHON" - "$work" "$RESULTS/gpu_check.json" "$BUDGET" "$((SECONDS - start))" <<'EOF'
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, output, budget, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
steps = []
for line in (work / "steps.tsv").read_text().splitlines():
    name, status, seconds, result, command = line.split("\t", 4)
    outcome = {"not run": "not run (budget spent)", "0": "passed", "124": "timed out", "137": "timed out"}
    steps.append({"name": name, "command": command, "seconds": int(seconds), "exit_status": status,
                  "outcome": outcome.get(status, "failed"), "results": result if result and Path(result).exists() else None})
tests = None
if (work / "tests.xml").exists():  # pytest's own JUnit report of the cuda tests
    cases = []
    for case in ET.parse(work / "tests.xml").getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time", 0)), 2)})
    tests = {name: sum(c["outcome"] == kind for c in cases)
             for name, kind in (("passed", "passed"), ("failed", "failure"), ("errors", "error"), ("skipped", "skipped"))}
    tests["cases"] = cases
    step = next(s for s in steps if s["name"] == "tests")
    if step["outcome"] == "passed" and (tests["skipped"] or not cases):
        step["outcome"] = "failed: cuda tests skipped on a GPU machine" if cases else "failed: no cuda test ran"
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError):
    smi = None
report = {
    "check": "benchmarks/gpu_check.sh: the cuda tests and the GPU benchmarks",
    "gpu": torch.cuda.get_device_name(), "nvidia_smi": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
    "budget_seconds": budget, "total_seconds": total, "steps": steps, "tests": tests,
}
output.write_text(json.dumps(report, indent=2) + "\n")
print("| step | outcome | seconds |\n|---|---|---|")
for s in steps:
    print(f"| {s['name']} | {s['outcome']} | {s['seconds']} |")
print(f"wrote {output} ({total} s of a {budget} s budget)")
sys.exit(0 if all(s["outcome"] == "passed" for s in steps) else 1)
EOF
