"""Find the files of a dataset release in unpacked folders and zip archives, and read them.

A source is any mix of folders and zip files. Folders are walked recursively; every zip found is
listed without unpacking it; a zip inside a zip (the ISPRS Potsdam download nests its archives) is
unpacked only when its name is one of the release's official archive names. Each file gets a posix
path ending (``rel``) that the release's path patterns are matched against.

Archives come from strangers, so sizes are checked from the archive directories before anything is
read or unpacked (:class:`ArchiveLimits`: one file, one unpacked nested archive, the total of every
archive's members, and the nesting depth); members whose names are absolute or climb out with
``..`` are refused, and so is a symbolic link in a source folder that points back to a folder
above it. Members are streamed, never held whole in memory: :meth:`SourceFile.local` unpacks one
to a scratch file for the readers, :meth:`SourceFile.copy_to` copies it. Everything unpacked (nested
archives and members) lives in one hidden scratch folder of :func:`source_files`, removed when its
block ends, whether the block succeeded or failed.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from bicorseg.atomic import atomic_output, new_temp, scratch_folder
from bicorseg.errors import InputError

GIB = 2**30


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits on what a source may make bicorseg read or unpack (sizes as the archives declare them).

    zipfile never returns more bytes than a member declares, so the declared sizes bound what is
    read. The defaults hold the official releases with room to spare (an ISPRS Potsdam tile is
    under 200 MB; its largest nested archive about 14 GiB).
    """

    file_bytes: int = 2 * GIB  # one image or label file, read into memory
    archive_bytes: int = 64 * GIB  # one nested archive, unpacked to the scratch folder
    total_bytes: int = 512 * GIB  # the members of every archive of one scan together
    depth: int = 3  # archives inside archives (Potsdam.zip -> 2_Ortho_RGB.zip is 2)


LIMITS = ArchiveLimits()


def _size(nbytes: int) -> str:
    return f"{nbytes / GIB:.3g} GiB" if nbytes >= GIB else f"{nbytes} bytes"


class Unpacked(os.PathLike):
    """An archive member unpacked to a scratch file: opened as that file, named as the member in messages."""

    def __init__(self, local: Path, name: str) -> None:
        self.local, self.name = local, name

    def __fspath__(self) -> str:
        return str(self.local)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SourceFile:
    """One file of the release: a plain file, or a member of a zip archive."""

    rel: str  # posix path used for matching (folder name + relative path, or the archive member name)
    size: int
    path: Path | None = None  # a plain file
    archive: Path | None = None  # ... or a member of this zip
    member: str | None = None
    scratch: Path | None = None  # where a member is unpacked to be read
    limit: int = LIMITS.file_bytes  # the most bytes the file may have (ArchiveLimits.file_bytes)

    @property
    def display(self) -> str:
        """How messages name the file."""
        if self.archive is not None:
            return f"{self.archive}!{self.member}"
        return str(self.path)

    @property
    def suffix(self) -> str:
        return Path(self.rel).suffix.lower()

    def _check_size(self) -> None:
        if self.size > self.limit:
            raise InputError(
                f"{self.display}: {_size(self.size)} is more than the {_size(self.limit)} "
                "an image or label file may have"
            )

    @contextmanager
    def local(self) -> Iterator[Path | Unpacked]:
        """The file as a local path for the readers: a plain file itself, a member unpacked (then removed)."""
        self._check_size()
        if self.path is not None:
            yield self.path
            return
        assert self.archive is not None and self.member is not None and self.scratch is not None
        temp = new_temp(self.scratch / PurePosixPath(self.member).name)
        try:
            _unpack(self.archive, self.member, temp)
            yield Unpacked(temp, self.display)
        finally:
            temp.unlink(missing_ok=True)

    def copy_to(self, target: Path) -> None:
        """Copy the file's bytes unchanged to ``target`` (atomically; a member streamed from its archive)."""
        self._check_size()
        with atomic_output(target, clean=False) as temp:
            if self.path is not None:
                shutil.copyfile(self.path, temp)
            else:
                assert self.archive is not None and self.member is not None
                _unpack(self.archive, self.member, temp)


def _unpack(archive: Path, member: str, target: Path) -> None:
    """Stream one member into the file ``target`` in blocks (a fault of the archive is an InputError)."""
    with open(target, "wb") as out:
        try:
            with zipfile.ZipFile(archive) as handle, handle.open(member) as source:
                while block := _read(source, archive, member):
                    out.write(block)  # a full disk: an OSError, for the caller to name
        except (zipfile.BadZipFile, KeyError, EOFError) as error:
            raise InputError(f"{archive}!{member}: cannot unpack ({error})") from error


def _read(source: zipfile.ZipExtFile, archive: Path, member: str) -> bytes:
    try:
        return source.read(1 << 20)
    except OSError as error:
        raise InputError(f"{archive}!{member}: cannot read ({error})") from error


def _zip_members(archive: Path) -> list[tuple[str, int]]:
    try:
        with zipfile.ZipFile(archive) as handle:
            members = [(info.filename, info.file_size) for info in handle.infolist() if not info.is_dir()]
    except (OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{archive}: not a readable zip archive ({error})") from error
    for name, _ in members:
        windows = PureWindowsPath(name)  # also splits on "/", and knows drive letters
        if PurePosixPath(name).is_absolute() or windows.anchor or ".." in windows.parts:
            raise InputError(f"{archive}: member {name!r} has an absolute path or climbs out with '..'")
    return members


@contextmanager
def source_files(
    sources: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    nested_archives: Iterable[str] = (),
    limits: ArchiveLimits = LIMITS,
) -> Iterator[list[SourceFile]]:
    """Every file under the sources (folders, zip files, and the release's zips inside zips).

    What is unpacked goes to a hidden scratch folder in ``folder``, removed when the block ends.
    """
    if not sources:
        raise InputError("no source given: pass the folder (or archives) of the unpacked release")
    with scratch_folder(folder, "sources") as scratch:
        scan = _Scan(scratch, set(nested_archives), limits)
        yield [file for source in sources for file in scan.source(Path(source).expanduser())]


class _Scan:
    """One :func:`source_files` call: the running total of archive sizes."""

    def __init__(self, scratch: Path, nested: set[str], limits: ArchiveLimits) -> None:
        self.scratch, self.nested, self.limits = scratch, nested, limits
        self.total = 0

    def source(self, root: Path) -> list[SourceFile]:
        if not root.exists():
            raise InputError(f"{root}: source does not exist")
        if root.is_file():
            if zipfile.is_zipfile(root):
                return self.zip(root)
            return [
                SourceFile(rel=root.name, size=root.stat().st_size, path=root, limit=self.limits.file_bytes)
            ]
        files = []
        for directory, names in _walk(root):
            for name in names:
                path = directory / name
                if name.startswith("."):
                    continue
                if name.lower().endswith(".zip"):
                    files.extend(self.zip(path))
                else:
                    rel = (Path(root.name) / path.relative_to(root)).as_posix()
                    try:
                        size = path.stat().st_size
                    except OSError as error:  # a dangling link, or links pointing at each other
                        raise InputError(f"{path}: cannot read ({error.strerror})") from error
                    files.append(SourceFile(rel=rel, size=size, path=path, limit=self.limits.file_bytes))
        return files

    def zip(self, archive: Path, depth: int = 1) -> list[SourceFile]:
        if depth > self.limits.depth:
            raise InputError(f"{archive}: archives nested more than {self.limits.depth} deep")
        members = _zip_members(archive)
        self.total += sum(size for _, size in members)
        if self.total > self.limits.total_bytes:
            raise InputError(
                f"{archive}: the archives of the source unpack to more than {_size(self.limits.total_bytes)}"
            )
        files = []
        for member, size in members:
            base = member.rsplit("/", 1)[-1]
            if base.lower().endswith(".zip"):
                if base in self.nested:  # unpacked to the scratch folder, then scanned
                    if size > self.limits.archive_bytes:
                        raise InputError(
                            f"{archive}!{member}: {_size(size)} is more than the "
                            f"{_size(self.limits.archive_bytes)} a nested archive may unpack to"
                        )
                    target = new_temp(self.scratch / PurePosixPath(member).name)
                    _unpack(archive, member, target)
                    files.extend(self.zip(target, depth + 1))
                continue
            files.append(
                SourceFile(
                    rel=member,
                    size=size,
                    archive=archive,
                    member=member,
                    scratch=self.scratch,
                    limit=self.limits.file_bytes,
                )
            )
        return files


def _walk(root: Path) -> Iterable[tuple[Path, list[str]]]:
    """Every folder under ``root`` (symbolic links followed) with its sorted file names.

    A symbolic link to a folder that contains it (a loop) is an :class:`InputError`. Hidden
    folders (ours: .bicorseg-prepare, should the output lie inside the source) are skipped.
    """

    def fail(error: OSError) -> None:
        raise InputError(f"{error.filename}: cannot read the source folder ({error.strerror})") from error

    for directory, subdirs, names in os.walk(root, followlinks=True, onerror=fail):
        here = Path(directory)
        above = {os.path.realpath(here), *(os.path.realpath(p) for p in here.parents)}
        for sub in subdirs:
            link = here / sub
            if link.is_symlink() and os.path.realpath(link) in above:
                raise InputError(f"{link}: symbolic link loop (it points back to {os.path.realpath(link)})")
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        yield here, sorted(names)
