"""Find the files of a dataset release in unpacked folders and zip archives, and read them.

A source is any mix of folders and zip files. Folders are walked recursively; every zip found is
listed without unpacking it; a zip inside a zip (the ISPRS Potsdam download nests its archives) is
unpacked to a scratch folder only when its name is one of the release's official archive names.
Each file gets a posix path ending (``rel``) that the release's path patterns are matched against.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bicorseg.errors import InputError


@dataclass(frozen=True)
class SourceFile:
    """One file of the release: a plain file, or a member of a zip archive."""

    rel: str  # posix path used for matching (folder name + relative path, or the archive member name)
    size: int
    path: Path | None = None  # a plain file
    archive: Path | None = None  # ... or a member of this zip
    member: str | None = None

    @property
    def display(self) -> str:
        """How messages name the file."""
        if self.archive is not None:
            return f"{self.archive}!{self.member}"
        return str(self.path)

    @property
    def in_archive(self) -> bool:
        return self.archive is not None

    @property
    def suffix(self) -> str:
        return Path(self.rel).suffix.lower()

    def read_bytes(self) -> bytes:
        try:
            if self.archive is not None:
                with zipfile.ZipFile(self.archive) as archive, archive.open(str(self.member)) as stream:
                    return stream.read()
            assert self.path is not None
            return self.path.read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError, EOFError) as error:
            raise InputError(f"{self.display}: cannot read ({error})") from error


def _zip_members(archive: Path) -> list[tuple[str, int]]:
    try:
        with zipfile.ZipFile(archive) as handle:
            return [(info.filename, info.file_size) for info in handle.infolist() if not info.is_dir()]
    except (OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{archive}: not a readable zip archive ({error})") from error


def scan_sources(
    sources: Sequence[str | os.PathLike], scratch: Path, nested_archives: Iterable[str] = ()
) -> list[SourceFile]:
    """Every file under the sources (folders, zip files, and the release's zips inside zips)."""
    nested = set(nested_archives)
    files: list[SourceFile] = []
    if not sources:
        raise InputError("no source given: pass the folder (or archives) of the unpacked release")
    for source in sources:
        root = Path(source).expanduser()
        if not root.exists():
            raise InputError(f"{root}: source does not exist")
        if root.is_file():
            if zipfile.is_zipfile(root):
                files.extend(_scan_zip(root, scratch, nested))
            else:
                files.append(SourceFile(rel=root.name, size=root.stat().st_size, path=root))
            continue
        for directory, subdirs, names in os.walk(root, followlinks=True):
            # Hidden folders (ours: .bicorseg-prepare, should the output lie inside the source) are skipped.
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(directory) / name
                if name.startswith("."):
                    continue
                rel = (Path(root.name) / path.relative_to(root)).as_posix()
                if name.lower().endswith(".zip"):
                    files.extend(_scan_zip(path, scratch, nested))
                else:
                    files.append(SourceFile(rel=rel, size=path.stat().st_size, path=path))
    return files


def _scan_zip(archive: Path, scratch: Path, nested: set[str]) -> list[SourceFile]:
    files = []
    for member, size in _zip_members(archive):
        base = member.rsplit("/", 1)[-1]
        if base.lower().endswith(".zip"):
            if base in nested:
                files.extend(_scan_zip(_extract(archive, member, scratch), scratch, nested))
            continue
        files.append(SourceFile(rel=member, size=size, archive=archive, member=member))
    return files


def _extract(archive: Path, member: str, scratch: Path) -> Path:
    """Unpack a zip member (itself a zip) to the scratch folder, once."""
    target = scratch / "archives" / member.replace("/", "__")
    with zipfile.ZipFile(archive) as handle:
        size = handle.getinfo(member).file_size
        if target.exists() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        try:
            with handle.open(member) as source, open(temp, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 22)
            os.replace(temp, target)
        except (OSError, zipfile.BadZipFile) as error:
            temp.unlink(missing_ok=True)
            raise InputError(f"{archive}!{member}: cannot unpack ({error})") from error
    return target
