"""The manifest file of a prepared dataset: read it (checked, as typed records), write it atomically.

``DIR/manifest.json`` is written last by :func:`bicorseg.data.release.prepare`::

    {"format": "bicorseg-prepared", "version": 1, "bicorseg_version": "...",
     "dataset": release name, "variant": band variant, "bands": [...], "spec": DatasetSpec.to_dict(),
     "unknown_colours": "error" | "ignore", "protocol": "clean" | "paper", "protocol_notes": [...],
     "sources": [...], "found": {split: ["Train/Rural (n images)", ...]},
     "splits": {split: {"rule": {...}, "label_variant": "full" | "eroded" | null,
                        "count": samples, "pixels": [per class], "ignored": pixels,
                        "tiles": {name: {"tile", "fields", "source", "size", "unknown_ignored"}},
                        "items": [{"name", "image", "mask", "height", "width", "tile", "copy",
                                   "window": [y, x] | null, "image_sha256", "mask_sha256",
                                   ["zoom",] "pixels": [per class], "ignored", "source_name"}, ...]}}}

The records are :mod:`bicorseg.data.release.records`; paths in items are relative to ``DIR``.
Version 1 is the first format: another version, or a missing key, is refused in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bicorseg.atomic import atomic_output
from bicorseg.data.release.records import MANIFEST_FORMAT, MANIFEST_VERSION, MalformedRecord, Manifest
from bicorseg.errors import InputError

MANIFEST = "manifest.json"


def manifest_path(root: str | os.PathLike[str]) -> Path:
    root = Path(root)
    return root if root.name == MANIFEST else root / MANIFEST


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Load and check ``root/manifest.json``."""
    path = manifest_path(root)
    if not path.is_file():
        raise InputError(f"{path}: no manifest here; run `bicorseg prepare` to build this folder first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable manifest ({error})") from error
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InputError(
            f"{path}: not a bicorseg manifest (format {data.get('format') if isinstance(data, dict) else None!r})"
        )
    version = data.get("version")
    if version != MANIFEST_VERSION:
        raise InputError(
            f"{path}: manifest version {version!r}; this bicorseg reads version {MANIFEST_VERSION}"
        )
    if not isinstance(data.get("splits"), dict):
        raise InputError(f"{path}: manifest has no splits")
    try:
        return Manifest.from_dict(data)
    except MalformedRecord as error:
        raise InputError(f"{path}: malformed manifest: {error}") from None


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    path = manifest_path(root)
    with atomic_output(path) as temp:
        with open(temp, "w", encoding="utf-8") as stream:
            json.dump(manifest.to_dict(), stream, indent=1)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
    return path
