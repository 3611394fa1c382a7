"""Benchmark: the HBIS decoder with closed-form CE2F against the explicit N-fold form.

Measures one training step of the decoder (neck output F_0 -> HBIS layers -> head -> every loss
term -> backward) at 512 and 1024 input, batch 2, with the published width C = 256. Each
configuration runs in a fresh process so that peak memory is its own: on CUDA the peak allocated
memory, on CPU the growth of the peak resident set over the set-up. Both forms start from the same
weights and inputs; the total loss and the gradient norm must agree.

    python benchmarks/hbis.py                      # CPU, writes benchmarks/results/hbis.json
    python benchmarks/hbis.py --device cuda --output benchmarks/results/hbis_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bicorseg.losses import BiCoRSegLoss, LossConfig
from bicorseg.models import BiCoRSeg, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.helpers.reference
from tests.helpers.reference import use_explicit_ce2f

FORMS = ("closed", "explicit")


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; ru_maxrss would include the parent's peak."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(size: int, form: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = ModelConfig(
        num_classes=args.classes,
        backbone="convnext_nano",
        width=args.width,
        layers=args.layers,
        topk_ratio=1.0,
    )
    model = BiCoRSeg(config).to(device).train()
    if form == "explicit":
        use_explicit_ce2f(model)
    loss_fn = BiCoRSegLoss(LossConfig(ignore_index=args.classes))
    h = size // 4
    f0 = torch.randn(args.batch, args.width, h, h, device=device)
    labels = torch.randint(0, args.classes, (args.batch, size, size), device=device)
    parameters = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]

    def step() -> tuple[float, float]:
        for p in parameters:
            p.grad = None
        terms = loss_fn(model.decode_features(f0, train=True), labels)
        terms["total"].backward()
        grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in parameters if p.grad is not None))
        return terms["total"].item(), grad_norm.item()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    baseline = _status_mib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated() / 2**20
    loss, grad_norm = step()  # warm-up (also the measured outputs)
    times = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - baseline_cuda
    else:
        peak = _status_mib("VmHWM") - baseline
    return {
        "size": size,
        "form": form,
        "step_seconds": statistics.median(times),
        "peak_memory_mib": peak,
        "loss": loss,
        "grad_norm": grad_norm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="benchmarks/results/hbis.json")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "FORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(int(args.worker[0]), args.worker[1], args)))
        return

    forwarded = [
        *("--batch", str(args.batch), "--classes", str(args.classes), "--layers", str(args.layers)),
        *("--width", str(args.width), "--repeats", str(args.repeats), "--device", args.device),
    ]
    rows = []
    for size in args.sizes:
        for form in FORMS:
            command = [sys.executable, __file__, *forwarded, "--worker", str(size), form]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  measured {size} {form}", file=sys.stderr)

    summary = []
    for size in args.sizes:
        closed, explicit = (next(r for r in rows if r["size"] == size and r["form"] == f) for f in FORMS)
        summary.append(
            {
                "size": size,
                "speedup": explicit["step_seconds"] / closed["step_seconds"],
                "memory_ratio": closed["peak_memory_mib"] / explicit["peak_memory_mib"],
                "loss_rel_diff": abs(closed["loss"] - explicit["loss"]) / abs(explicit["loss"]),
                "grad_norm_rel_diff": abs(closed["grad_norm"] - explicit["grad_norm"])
                / explicit["grad_norm"],
            }
        )
    report = {
        "benchmark": "hbis decoder training step (F_0 -> logits, all losses, backward)",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "classes": args.classes,
        "layers": args.layers,
        "width": args.width,
        "runs": rows,
        "summary": summary,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")

    print("| input | form | step (s) | peak memory (MiB) | speed-up | memory ratio | loss rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        for form in FORMS:
            r = next(r for r in rows if r["size"] == s["size"] and r["form"] == form)
            extra = (
                f"{s['speedup']:.2f}x | {s['memory_ratio']:.2f}x | {s['loss_rel_diff']:.1e}"
                if form == "closed"
                else " | | "
            )
            print(
                f"| {s['size']} | {form} | {r['step_seconds']:.3f} | {r['peak_memory_mib']:.0f} | {extra} |"
            )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
