"""The manifest of a prepared dataset: read it, write it atomically, check it.

``DIR/manifest.json`` (written last by ``bicorseg prepare``)::

    {"format": "bicorseg-prepared", "version": 1, "bicorseg_version": "...",
     "dataset": "vaihingen", "variant": "IRRG", "spec": DatasetSpec.to_dict(),
     "sources": [...], "found": {split: ["Train/Rural", ...]},
     "splits": {split: {"rule": {...}, "label_variant": "full" | "eroded" | null,
                        "count": patches, "pixels": [per class], "ignored": pixels,
                        "tiles": {tile: {"source": {...}, "count": patches}},
                        "items": [{"name", "image", "mask", "height", "width", "tile", "copy",
                                   "window": [y, x] | null, "image_sha256", "mask_sha256",
                                   "pixels": [per class], "ignored"}, ...]}}}

Paths in items are relative to ``DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bicorseg.data.io import atomic_output
from bicorseg.errors import InputError

MANIFEST = "manifest.json"
FORMAT = "bicorseg-prepared"
VERSION = 1


def manifest_path(root: str | os.PathLike) -> Path:
    root = Path(root)
    return root if root.name == MANIFEST else root / MANIFEST


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Load and sanity-check ``root/manifest.json``."""
    path = manifest_path(root)
    if not path.is_file():
        raise InputError(f"{path}: no manifest here; run `bicorseg prepare` to build this folder first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable manifest ({error})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{path}: not a bicorseg manifest (format {data.get('format') if isinstance(data, dict) else None!r})"
        )
    if int(data.get("version", 0)) > VERSION:
        raise InputError(
            f"{path}: manifest version {data.get('version')} is newer than this bicorseg supports"
        )
    if not isinstance(data.get("splits"), dict):
        raise InputError(f"{path}: manifest has no splits")
    return data


def write_manifest(root: str | os.PathLike, data: dict[str, Any]) -> Path:
    path = manifest_path(root)
    with atomic_output(path) as temp:
        with open(temp, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
    return path
