"""Benchmark of ``bicorseg predict`` on a remote raster: time, requests and bytes against the local file.

Writes the synthetic scene of ``benchmarks/raster.py`` (3-band uint8 GeoTIFF, tiled 256, EPSG:32633)
and its random-weight checkpoint, serves the folder from the range-capable HTTP server of the
tests (``tests/helpers/range_server.py``, on 127.0.0.1), and runs ``bicorseg predict`` in this process on the
local file and on its ``http://`` URL (tile 512, overlap 0.25, no TTA). Reports wall time, HTTP
requests (HEAD and ranged GETs), bytes transferred against the file size, and whether the outputs
are byte for byte the same. Results go to ``benchmarks/results/remote.json``.

    python benchmarks/remote.py                 # 2048 px
    python benchmarks/remote.py --size 4096
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repository: the test suite's helpers package

from raster import make_checkpoint, write_scene  # noqa: E402
from tests.helpers.range_server import RangeServer  # noqa: E402

RESULTS = HERE / "results" / "remote.json"


def predict(source: str, checkpoint: Path, out: Path) -> float:
    from bicorseg.cli.main import main

    start = time.perf_counter()
    code = main(["predict", source, "--checkpoint", str(checkpoint), "--output", str(out), "--quiet"])
    if code != 0:
        raise SystemExit(f"predict {source} failed with status {code}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bicorseg-remote-") as folder:
        root = Path(folder)
        (root / "served").mkdir()
        raster = root / "served" / "scene.tif"
        write_scene(raster, args.size)
        checkpoint = root / "model.ckpt"
        make_checkpoint(checkpoint)
        size = raster.stat().st_size
        local_seconds = predict(str(raster), checkpoint, root / "local")
        server = RangeServer(root / "served")
        try:
            remote_seconds = predict(server.url("scene.tif"), checkpoint, root / "remote")
            requests = list(server.requests)
        finally:
            server.close()
        same = (root / "local" / "scene.tif").read_bytes() == (root / "remote" / "scene.tif").read_bytes()
    gets = [r for r in requests if r.method == "GET"]
    sent = sum(r.sent for r in requests)
    row = {
        "size_px": args.size,
        "file_bytes": size,
        "local_seconds": round(local_seconds, 2),
        "remote_seconds": round(remote_seconds, 2),
        "head_requests": sum(r.method == "HEAD" for r in requests),
        "get_requests": len(gets),
        "gets_without_range": sum(r.range is None for r in gets),
        "largest_response_bytes": max((r.sent for r in gets), default=0),
        "bytes_sent": sent,
        "bytes_sent_over_file": round(sent / size, 3),
        "paths_requested": sorted({r.path for r in requests}),
        "outputs_identical": same,
    }
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "command": f"python benchmarks/remote.py --size {args.size}",
        "results": [row],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
