"""Benchmark of reading a large zip member for ``prepare``: peak resident memory, streamed against whole.

Writes an uncompressed 3-band uint8 GeoTIFF of SIDE x SIDE pixels, stores it in a zip (no
compression, so the member is as large as the image) and, in a fresh process for each way, reads
it as ``prepare`` does and copies it unchanged (what ``prepare`` does for whole images):

* ``streamed``: :meth:`bicorseg.data.sources.SourceFile.local` (the member unpacked in 1 MiB blocks
  to a scratch file) and :func:`bicorseg.data.io.read_georeferenced`, then
  :meth:`~bicorseg.data.sources.SourceFile.copy_to`;
* ``file``: the same image as a plain file, read by ``read_georeferenced`` and copied: the floor;
* ``whole``: the member's bytes read at once, opened from memory by
  :func:`bicorseg.raster_access.open_raster` (``data=``) and written back from those bytes, as
  ``prepare`` read members before they were streamed.

The child reports its resident set after its imports and its peak (``VmHWM``, Linux); the table
gives the growth over the baseline against the decoded image's size. Results go to
``benchmarks/results/archive_members.json``.

    python benchmarks/archive_members.py               # 12000 px: a 412 MiB member
    python benchmarks/archive_members.py --side 22400  # a 1.4 GiB member
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

RESULTS = Path(__file__).resolve().parent / "results" / "archive_members.json"
CHILD = """
import json, sys, zipfile
from pathlib import Path
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
from bicorseg.data.io import read_georeferenced
from bicorseg.data.sources import source_files
from bicorseg.raster_access import open_raster
import rasterio
way, archive, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
baseline = status("VmRSS:")
if way == "file":
    image, _ = read_georeferenced(archive.with_suffix(".tif"))
    del image
    import shutil
    shutil.copyfile(archive.with_suffix(".tif"), out / "copy.tif")
elif way == "streamed":
    with source_files([archive], out / "scratch") as files:
        with files[0].local() as local:
            image, _ = read_georeferenced(local)
        del image
        files[0].copy_to(out / "copy.tif")
else:
    with zipfile.ZipFile(archive) as handle:
        data = handle.read(handle.namelist()[0])
    with open_raster("member.tif", data=data, whole=True) as dataset:
        image = dataset.read()
    del image
    (out / "copy.tif").write_bytes(data)
print("BENCH " + json.dumps({"baseline_rss_bytes": baseline, "peak_rss_bytes": status("VmHWM:")}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12000, help="image side in pixels (default 12000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        tif = folder / "top_mosaic_09cm_area1.tif"
        profile = dict(driver="GTiff", width=args.side, height=args.side, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(496000, 5420000, 0.09, 0.09))  # fmt: skip
        rng = np.random.default_rng(0)
        with rasterio.open(tif, "w", **profile) as dst:
            for row in range(0, args.side, 1024):
                rows = min(1024, args.side - row)
                window = rasterio.windows.Window(0, row, args.side, rows)
                dst.write(rng.integers(0, 256, (3, rows, args.side), dtype=np.uint8), window=window)
        archive = folder / "release.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as handle:
            handle.write(tif, f"top/{tif.name}")
        member = tif.stat().st_size
        tif.rename(archive.with_suffix(".tif"))
        rows = []
        for way in ("file", "streamed", "whole"):
            out = folder / way
            out.mkdir()
            done = subprocess.run([sys.executable, "-c", CHILD, way, str(archive), str(out)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            report = json.loads(done.stdout.split("BENCH ", 1)[1])
            growth = report["peak_rss_bytes"] - report["baseline_rss_bytes"]
            rows.append(
                {
                    "way": way,
                    **report,
                    "growth_bytes": growth,
                    "growth_over_image": growth / (3 * args.side**2),
                }
            )
    result = {"side": args.side, "member_bytes": member, "image_bytes": 3 * args.side**2, "rows": rows,
              "machine": describe()}  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"member {member / 2**20:.0f} MiB, decoded image {3 * args.side**2 / 2**20:.0f} MiB")
    print(f"{'way':<10} {'peak growth MiB':>16} {'x image':>8}")
    for row in rows:
        print(f"{row['way']:<10} {row['growth_bytes'] / 2**20:>16.0f} {row['growth_over_image']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
