"""Experiment: what speeds up the fp32 evaluation forward on a CPU (backbone layout, block forward, compile).

One random-weight BiCoR-Seg with the published architecture (ConvNeXt-B, C = 256), evaluation mode,
``torch.inference_mode``, batch 1. The variants share the weights (layer scales drawn in [0.1, 1] so
that the blocks do real work) and run interleaved in one process, the order reversed every round, so
that a machine shared with other jobs slows them alike; the medians of wall time and of the process
CPU time are reported (with one thread, CPU time is the work done, whatever the other jobs do).

* ``torchvision blocks``: torchvision's ConvNeXt block forward, contiguous weights (the model before).
* ``torchvision blocks, channels-last``: the same with channels-last convolution weights.
* ``InferenceCNBlock, contiguous``: fused Linear + GELU, layer scale, bias and residual in one
  product (:class:`bicorseg.models.backbone.InferenceCNBlock`), contiguous weights.
* ``InferenceCNBlock, channels-last``: what bicorseg runs (channels-last convolution weights).
* ``... , channels-last input``: the same with the input converted to channels-last too.
* with ``--compile``: ``torch.compile`` of the backbone (inductor), and with inductor's ``freezing``;
  the compilation time is reported separately.

``--profile`` prints the operator table (torch.profiler) of one pass of the model as bicorseg runs it.

    python benchmarks/fp32_layout.py --size 1024 --rounds 6 --threads 1
    python benchmarks/fp32_layout.py --size 512 --rounds 4 --threads 1 --compile

Writes ``benchmarks/results/fp32_layout_<size>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.models.convnext import CNBlock

from bicorseg.models import BiCoRSeg, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.helpers.reference
from tests.helpers.reference import use_torchvision_blocks

RESULTS = Path(__file__).resolve().parent / "results"


def layout(model: BiCoRSeg, memory_format: torch.memory_format) -> BiCoRSeg:
    model.backbone.to(memory_format=memory_format)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants")
    parser.add_argument("--profile", action="store_true", help="print the operator profile of one pass")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BiCoRSeg(ModelConfig(num_classes=6, backbone="convnext_base", width=256)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, CNBlock):
                module.layer_scale.uniform_(0.1, 1.0)
    x = torch.randn(1, 3, args.size, args.size)
    x_last = x.contiguous(memory_format=torch.channels_last)
    contiguous, last = torch.contiguous_format, torch.channels_last
    tv = layout(use_torchvision_blocks(copy.deepcopy(model)), contiguous)
    variants = {
        "torchvision blocks": (tv, x),
        "torchvision blocks, channels-last": (layout(copy.deepcopy(tv), last), x),
        "InferenceCNBlock, contiguous": (layout(copy.deepcopy(model), contiguous), x),
        "InferenceCNBlock, channels-last": (model, x),
        "InferenceCNBlock, channels-last input": (model, x_last),
    }
    compile_seconds = {}
    if args.compile:
        import torch._inductor.config as inductor

        for name, freezing in (("torch.compile", False), ("torch.compile, freezing", True)):
            inductor.freezing = freezing
            compiled = copy.deepcopy(tv)
            compiled.backbone.compile()
            start = time.perf_counter()
            with torch.inference_mode():
                compiled(x)  # compiles
            compile_seconds[name] = time.perf_counter() - start
            variants[name] = (compiled, x)
            print(f"{name}: compiled in {compile_seconds[name]:.0f} s", flush=True)
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    with torch.inference_mode():
        reference = tv(x)
        differences = {name: float((m(v) - reference).abs().max()) for name, (m, v) in variants.items()}
        for round_index in range(args.rounds):
            names = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
            for name in names:
                network, inputs = variants[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                network(inputs)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(x)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    base = statistics.median(cpu["torchvision blocks"])
    rows = []
    print(
        "| variant | wall (s): median [min-max] | CPU (s): median [min-max] | CPU speed-up | max abs diff |"
    )
    print("|---|---|---|---|---|")
    for name in variants:
        row = {
            "variant": name,
            "wall_seconds": wall[name],
            "cpu_seconds": cpu[name],
            "cpu_median": statistics.median(cpu[name]),
            "wall_median": statistics.median(wall[name]),
            "cpu_speedup_vs_torchvision_blocks": base / statistics.median(cpu[name]),
            "max_abs_diff_vs_torchvision_blocks": differences[name],
        }
        rows.append(row)
        print(
            f"| {name} | {row['wall_median']:.2f} [{min(wall[name]):.2f}-{max(wall[name]):.2f}] | "
            f"{row['cpu_median']:.2f} [{min(cpu[name]):.2f}-{max(cpu[name]):.2f}] | "
            f"{row['cpu_speedup_vs_torchvision_blocks']:.2f}x | {differences[name]:.1e} |"
        )
    output = args.output or RESULTS / f"fp32_layout_{args.size}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "fp32 eval forward variants, interleaved in one process",
        "size": args.size,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "compile_seconds": compile_seconds,
        "rows": rows,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
