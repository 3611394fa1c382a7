"""Benchmark: the whole model's evaluation and training speed and peak memory, by precision and engine.

One random-weight BiCoR-Seg with the published architecture (ConvNeXt-B, C = 256, 2 HBIS layers,
6 classes) is saved once; every configuration then runs in a fresh process that loads it the way
the product does (``load_model(..., precision=...)``, ``OnnxModel`` for exported files), runs
``--warmup`` passes and ``--repeats`` timed ones, and reports the median (and min, max) wall time,
the process CPU time, and its peak memory: on CPU the peak resident set (VmHWM) and its growth over
the set-up, on CUDA the peak allocated memory.

* ``eval``: ``model(x)`` under ``torch.inference_mode``, batch ``--batch``, at each ``--sizes``;
  precisions fp32 and bf16 (fp16 too on a GPU); fp32 with torchvision's own ConvNeXt block forward
  (what :class:`~bicorseg.models.backbone.InferenceCNBlock` saves); the reference model (explicit
  neck, CE2F and head, torchvision's blocks, fp32: the baseline inside the repository); and the ONNX export (``bicorseg export onnx``, onnxruntime fp32) at each graph
  optimisation level.
* ``train``: one optimisation step (forward, every loss term, backward, AdamW) at ``--train-size``,
  batch ``--train-batch``: fp32, ``bf16-mixed`` (Lightning's own precision plugin, as
  ``--trainer.precision bf16`` runs it) and the reference model.

    python benchmarks/speed.py                   # CPU rows, plus GPU rows when CUDA is available
    python benchmarks/speed.py --device cuda     # GPU rows only
    python benchmarks/speed.py --only eval-512   # configurations whose name contains the text

Writes ``benchmarks/results/speed.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.helpers.reference
RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"
ONNX_LEVELS = ("all", "extended", "basic", "disabled")  # onnxruntime GraphOptimizationLevel, default first


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    task: str  # "eval" or "train"
    size: int
    variant: str  # fp32, bf16, fp16, bf16-mixed, fp32-torchvision-blocks, reference-fp32, onnx-<level>
    device: str  # "cpu" or "cuda"

    @property
    def name(self) -> str:
        return f"{self.task}-{self.size}-{self.variant}-{self.device}"


def configurations(args: argparse.Namespace) -> list[Config]:
    devices = [args.device] if args.device != "auto" else ["cpu"]
    if args.device == "auto":
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    configs = []
    for device in devices:
        precisions = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
        for size in args.sizes:
            configs.append(Config("eval", size, "reference-fp32", device))
            configs += [Config("eval", size, p, device) for p in precisions]
            if device == "cpu":
                configs.append(Config("eval", size, "fp32-torchvision-blocks", device))
            if not args.skip_onnx and device == "cpu":
                levels = ONNX_LEVELS if size == min(args.sizes) else ONNX_LEVELS[:1]
                configs += [Config("eval", size, f"onnx-{level}", device) for level in levels]
        configs += [
            Config("train", args.train_size, variant, device)
            for variant in ("reference-fp32", "fp32", "bf16-mixed")
        ]
    return [c for c in configs if not args.only or any(text in c.name for text in args.only)]


# --- the measuring child ---------------------------------------------------------------------------


def _onnx_session(path: Path, level: str):
    import onnxruntime as ort

    from bicorseg.inference.onnx import OnnxModel

    if level == "all":  # the product's session (onnxruntime's default level)
        return OnnxModel(path).run
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as OnnxModel does
    options.graph_optimization_level = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def measure(config: Config, args: argparse.Namespace, work: Path) -> dict:
    """Run one configuration in this (fresh) process and return its row."""
    import numpy as np
    import torch
    from hbis import _status_mib  # VmRSS / VmHWM of this process

    from bicorseg.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(config.device)
    torch.manual_seed(0)
    batch = args.batch if config.task == "eval" else args.train_batch
    x = torch.randn(batch, 3, config.size, config.size, device=device)
    checkpoint = work / "model.ckpt"
    reference = config.variant.startswith("reference")
    output_path = work / f"{config.task}-{config.size}-{config.device}-{config.variant}.npy"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if config.variant.startswith("onnx"):
        run = _onnx_session(work / f"model-{config.size}.onnx", config.variant.removeprefix("onnx-"))
        batch_np = x.numpy()

        def step():
            return run(batch_np)

    elif config.task == "eval":
        from tests.helpers.reference import use_reference_model, use_torchvision_blocks

        precision = config.variant if config.variant in ("bf16", "fp16") else "fp32"
        model = load_model(checkpoint, map_location=device, precision=precision)
        if reference:
            use_reference_model(model)
        elif config.variant == "fp32-torchvision-blocks":
            use_torchvision_blocks(model)

        def step():
            with torch.inference_mode():
                return model(x).cpu().numpy()

    else:
        from lightning.pytorch.plugins.precision import MixedPrecision

        from bicorseg.losses import BiCoRSegLoss, LossConfig

        model = load_model(checkpoint, map_location=device).train()
        if reference:
            from tests.helpers.reference import use_reference_model

            use_reference_model(model)
        loss_fn = BiCoRSegLoss(LossConfig(ignore_index=args.classes))
        labels = torch.randint(0, args.classes, (batch, config.size, config.size), device=device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
        plugin = MixedPrecision("bf16-mixed", device.type) if config.variant == "bf16-mixed" else None

        def step():
            optimizer.zero_grad(set_to_none=True)
            if plugin is not None:
                with plugin.forward_context():
                    total = loss_fn(model.forward_train(x), labels)["total"]
            else:
                total = loss_fn(model.forward_train(x), labels)["total"]
            total.backward()
            optimizer.step()
            return np.asarray(total.item())

    sync()
    baseline = _status_mib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated() / 2**20
    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        output = step()
    walls, cpus = [], []
    for _ in range(args.repeats):
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        output = step()
        sync()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    peak_growth = (
        torch.cuda.max_memory_allocated() / 2**20 - baseline_cuda
        if device.type == "cuda"
        else _status_mib("VmHWM") - baseline
    )
    row = {
        **asdict(config),
        "name": config.name,
        "batch": batch,
        "seconds": statistics.median(walls),
        "seconds_min": min(walls),
        "seconds_max": max(walls),
        "seconds_all": walls,
        "cpu_seconds": statistics.median(cpus),
        "peak_growth_mib": peak_growth,
        "process_peak_mib": _status_mib("VmHWM"),
        "threads": torch.get_num_threads(),
        "load_average": [load_before, os.getloadavg()[0]],
    }
    if config.task == "eval":  # logits against the torch fp32 run (which runs before the others)
        np.save(output_path, output)
        fp32 = output_path.with_name(f"eval-{config.size}-{config.device}-fp32.npy")
        if fp32.exists() and fp32 != output_path:
            expected = np.load(fp32)
            row["max_abs_logit_diff_vs_fp32"] = float(np.abs(output - expected).max())
            row["argmax_agreement_vs_fp32"] = float((output.argmax(1) == expected.argmax(1)).mean())
    return row


# --- the parent ------------------------------------------------------------------------------------


def _child(args: argparse.Namespace, *extra: str) -> list[str]:
    forwarded = [
        *("--batch", str(args.batch), "--train-batch", str(args.train_batch)),
        *("--warmup", str(args.warmup), "--repeats", str(args.repeats), "--classes", str(args.classes)),
        *("--threads", str(args.threads)),
    ]
    return [sys.executable, str(Path(__file__).resolve()), *forwarded, *extra]


def prepare(args: argparse.Namespace, work: Path, configs: list[Config]) -> dict:
    """The random-weight checkpoint and the ONNX exports the configurations need."""
    import torch

    from bicorseg import BiCoRSeg, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    model = BiCoRSeg(ModelConfig(num_classes=args.classes, backbone=args.backbone, width=args.width))
    save_checkpoint(model, work / "model.ckpt")
    del model
    exports = {}
    for size in sorted({c.size for c in configs if c.variant.startswith("onnx")}):
        start = time.perf_counter()
        command = [sys.executable, "-m", "bicorseg.cli.main", "export", "onnx", "--checkpoint"]
        command += [
            str(work / "model.ckpt"),
            "--tile",
            str(size),
            "--output",
            str(work / f"model-{size}.onnx"),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"export at {size} failed: {result.stderr.strip()}")
        exports[size] = {"seconds": time.perf_counter() - start, "message": result.stdout.strip()}
        print(f"  exported {size}: {result.stdout.strip()}", file=sys.stderr)
    return exports


def machine() -> dict:
    import torch

    from bicorseg.precision import cpu_flags

    model_name = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    flags = cpu_flags() or set()
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": model_name or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| task | input | variant | device | time (s): median [min-max] | CPU time (s) | speed-up vs reference* "
        "| peak growth (MiB) | process peak (MiB) | memory vs reference | arg-max agreement vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(
            (
                r
                for r in rows
                if (r["task"], r["size"], r["device"], r["variant"])
                == (row["task"], row["size"], row["device"], "reference-fp32")
            ),
            None,
        )
        # on a CPU the process CPU time (one thread: the work done, whatever else shares the machine)
        key = "cpu_seconds" if row["device"] == "cpu" else "seconds"
        speed = f"{base[key] / row[key]:.2f}x" if base else ""
        memory = f"{row['peak_growth_mib'] / base['peak_growth_mib']:.2f}x" if base else ""
        agreement = row.get("argmax_agreement_vs_fp32")
        lines.append(
            f"| {row['task']} | {row['size']} | {row['variant']} | {row['device']} | "
            f"{row['seconds']:.2f} [{row['seconds_min']:.2f}-{row['seconds_max']:.2f}] | "
            f"{row['cpu_seconds']:.2f} | {speed} | {row['peak_growth_mib']:.0f} | {row['process_peak_mib']:.0f} | "
            f"{memory} | {'' if agreement is None else f'{100 * agreement:.2f} %'} |"
        )
    lines.append("")
    lines.append(
        "\\* by CPU time on a CPU (the work done, whatever else shares the machine), by wall time on a GPU"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when present), cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="evaluation inputs")
    parser.add_argument("--batch", type=int, default=1, help="evaluation batch")
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--backbone", default="convnext_base")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--only", nargs="+", help="run the configurations whose name contains one of these")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        config = Config(**json.loads(args.worker[0]))
        print("ROW " + json.dumps(measure(config, args, Path(args.worker[1]))))
        return

    configs = configurations(args)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # the optional extra "export" is not installed
        configs = [c for c in configs if not c.variant.startswith("onnx")]
    # the torch fp32 run of each size first: the others compare their logits with it
    configs.sort(key=lambda c: (c.device, c.task, c.size, c.variant != "fp32"))
    report = {"benchmark": "whole model: eval and train step by precision and engine", "machine": machine()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bicorseg-speed-") as tmp:
        work = Path(tmp)
        report["onnx_exports"] = prepare(args, work, configs)
        rows = []
        for config in configs:
            result = subprocess.run(
                _child(args, "--worker", json.dumps(asdict(config)), str(work)),
                capture_output=True,
                text=True,
            )
            lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
            if result.returncode != 0 or not lines:
                raise SystemExit(f"{config.name} failed:\n{result.stderr.strip()[-2000:]}")
            rows.append(json.loads(lines[-1].removeprefix("ROW ")))
            print(f"  {config.name}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["settings"] = {
        key: getattr(args, key)
        for key in ("sizes", "batch", "train_size", "train_batch", "warmup", "repeats", "threads", "classes")
    } | {"backbone": args.backbone, "width": args.width}
    report["total_seconds"] = time.perf_counter() - started
    report["rows"] = rows
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    print(f"wrote {args.output} ({report['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
