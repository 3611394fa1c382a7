"""Atomic file output: one temporary-file scheme for every writer, and the cleanup of its leftovers.

Every file bicorseg writes (checkpoints, predictions, patches, manifests, reports, archives, ONNX
models) is first written under a hidden temporary name beside its target and renamed onto the
target only when complete, so an interrupted or failed write never leaves a partial file under the
final name. The temporary name of a target ``NAME`` is::

    .NAME.HOST-PID-RANDOM.tmpSUFFIX        e.g.  .scene.tif.node1-4242-9f3a01c2.tmp.tif

``HOST`` and ``PID`` name the process that owns it (``HOST`` with everything but letters and digits
removed), ``RANDOM`` is 8 hex digits, and ``SUFFIX`` repeats the target's suffix for writers that
pick a format by extension. A name that would exceed the file system's 255 bytes keeps the start of
``NAME`` and a hash of all of it.

:func:`atomic_output` writes one file, :class:`OutputGroup` several that appear together.
:func:`remove_stale_temps` deletes the temporary files whose owner process has ended on this host
(names are parsed, never used as glob patterns); one of a live process, or of another host, is never
touched. :func:`ensure_writable` checks, before any work, that an output can be created;
:func:`sha256_file` is the content hash that identifies a file written or read.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bicorseg.errors import OutputError, first_line

_MAX_NAME_BYTES = 255
_TEMP_NAME = re.compile(
    r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{8})\.tmp(?P<suffix>.*)",
    re.DOTALL,
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _name_key(name: str, room: int) -> str:
    """``name``, or its start plus a hash when the temporary name would not fit in ``room`` bytes."""
    if len(name.encode()) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    start = name.encode()[: max(room - len(digest) - 1, 1)].decode(errors="ignore")
    return f"{start}~{digest}"


def is_plain_name(name: str) -> bool:
    """Whether ``name`` names a file directly inside a folder: no folder part, not ``.`` or ``..``.

    Names read from files (plans, tags) are checked with it before a path is made of them.
    """
    return name not in ("", ".", "..") and "\0" not in name and Path(name).name == name


def temp_name(target: str | os.PathLike, token: str | None = None) -> str:
    """The temporary name (no folder) that this process uses for ``target``."""
    target = Path(target)
    tag = f"{_host()}-{os.getpid()}-{token or secrets.token_hex(4)}"
    suffix = target.suffix if len(target.suffix.encode()) <= 16 else ""
    room = _MAX_NAME_BYTES - len(f"..{tag}.tmp{suffix}".encode())
    return f".{_name_key(target.name, room)}.{tag}.tmp{suffix}"


def _create_temp(target: Path, create: Callable[[Path], object]) -> Path:
    """A temporary name for ``target``, made by ``create`` (which fails when it exists), and its path."""
    while True:
        temp = target.with_name(temp_name(target))
        try:
            create(temp)
        except FileExistsError:  # 32 random bits collided: draw again
            continue
        return temp


def new_temp(target: str | os.PathLike) -> Path:
    """Create an empty temporary file for ``target`` (beside it, ordinary permissions) and return its path."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _create_temp(
        target, lambda temp: os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    )


@dataclass(frozen=True)
class TempFile:
    """A temporary file (or folder) of this scheme, parsed from its name."""

    path: Path
    name: str  # the target's name (or its start and hash, for very long names)
    host: str
    pid: int

    def is_for(self, target_name: str) -> bool:
        """Whether this is a temporary file of the target named ``target_name`` (its name, or for a long
        name its start and hash)."""
        return self.name == target_name or _name_key(target_name, len(self.name.encode())) == self.name

    @property
    def stale(self) -> bool:
        """Its owner process has ended (checked on this host only; another host's are never stale)."""
        if self.host != _host() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, OverflowError):  # no such process (or no such pid)
            return True
        except PermissionError:  # exists, owned by someone else
            pass
        return False


def parse_temp(path: str | os.PathLike) -> TempFile | None:
    """The parsed temporary file at ``path``, or None when its name is not of this scheme."""
    path = Path(path)
    match = _TEMP_NAME.fullmatch(path.name)
    if match is None:
        return None
    return TempFile(path, match["name"], match["host"], int(match["pid"]))


def find_temps(folder: str | os.PathLike) -> list[TempFile]:
    """Every temporary file or folder of this scheme directly inside ``folder``, live or stale."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (parse_temp(Path(folder) / e.name) for e in entries if e.name.startswith("."))
    return sorted((t for t in found if t is not None), key=lambda t: t.path.name)


def remove_stale_temps(
    folder: str | os.PathLike, names: Iterable[str] | None = None, *, recursive: bool = False
) -> list[Path]:
    """Delete the stale temporary files in ``folder`` (only those of targets in ``names`` if given).

    ``recursive`` also looks in every sub-folder. Returns what was deleted.
    """
    wanted = None if names is None else list(names)
    folders = [Path(folder)]
    if recursive:
        folders += [Path(root) / d for root, dirs, _ in os.walk(folder) for d in dirs]
    removed = []
    for where in folders:
        for temp in find_temps(where):
            if not temp.stale or (wanted is not None and not any(temp.is_for(n) for n in wanted)):
                continue
            if temp.path.is_dir() and not temp.path.is_symlink():
                shutil.rmtree(temp.path, ignore_errors=True)
            else:
                temp.path.unlink(missing_ok=True)
            removed.append(temp.path)
    return removed


class OutputGroup:
    """Files that appear together: each is written to its own temporary file, then all are renamed.

    ``targets`` maps keys to final paths; :meth:`temp` gives (and creates) the temporary file of a
    key. :meth:`commit` runs ``verify(key, temp)`` on every temporary file first (a failure leaves
    no target changed and no temporary file), then renames them in order, ``last`` (a key) at the
    end. Leaving a ``with`` block by an exception, or :meth:`abort`, deletes every temporary file.
    With ``clean`` (default), stale temporary files of the same targets (left by ended processes)
    are deleted first; writers of many files into one folder pass False and clean the folder once.
    """

    def __init__(
        self, targets: Mapping[str, str | os.PathLike], last: str | None = None, *, clean: bool = True
    ) -> None:
        self.targets = {key: Path(path) for key, path in targets.items()}
        if last is not None and last not in self.targets:
            raise KeyError(last)
        self.last = last
        self.temps: dict[str, Path] = {}
        self._side_files: list[Path] = []
        if clean:
            folders: dict[Path, list[str]] = {}
            for path in self.targets.values():
                folders.setdefault(path.parent, []).append(path.name)
            for folder, names in folders.items():
                remove_stale_temps(folder, names)

    def temp(self, key: str) -> Path:
        """The temporary file of ``key`` (created empty on first use)."""
        if key not in self.temps:
            self.temps[key] = new_temp(self.targets[key])
        return self.temps[key]

    def side_file(self, key: str, suffix: str) -> Path:
        """A file a writer puts beside the temporary file of ``key`` (``temp + suffix``); always deleted."""
        path = self.temp(key).with_name(self.temp(key).name + suffix)
        self._side_files.append(path)
        return path

    def commit(self, verify: Callable[[str, Path], None] | None = None) -> None:
        """Check every temporary file with ``verify``, then rename each onto its target."""
        try:
            if verify is not None:
                for key, temp in self.temps.items():
                    verify(key, temp)
            for key in sorted(self.temps, key=lambda k: k == self.last):
                os.replace(self.temps[key], self.targets[key])
        except BaseException:
            self.abort()
            raise
        for path in self._side_files:
            path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Delete every temporary file (the targets are left as they were)."""
        for path in [*self.temps.values(), *self._side_files]:
            path.unlink(missing_ok=True)

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abort()


@contextmanager
def atomic_output(path: str | os.PathLike, *, clean: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``clean``: first delete the stale temporary files of ``path`` (see :class:`OutputGroup`).
    """
    with OutputGroup({"file": path}, clean=clean) as group:
        yield group.temp("file")
        group.commit()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """A text file (UTF-8), written atomically."""
    with atomic_output(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def scratch_folder(parent: str | os.PathLike, name: str = "scratch") -> Iterator[Path]:
    """A hidden working folder inside ``parent`` (named by the scheme), deleted with its content at exit."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = _create_temp(parent / name, Path.mkdir)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def folder_kept_on_success(folder: str | os.PathLike) -> Iterator[None]:
    """Within the block ``folder`` may be created; should the block fail, the folders it created
    (``folder`` and the missing ones above it) are removed again if they are empty."""
    missing, here = [], Path(folder).expanduser().absolute()
    while not here.exists() and here != here.parent:
        missing.append(here)  # deepest first
        here = here.parent
    try:
        yield
    except BaseException:
        for created in missing:
            with suppress(OSError):  # not empty (parts kept for a rerun), or never created
                created.rmdir()
        raise


def ensure_writable(path: str | os.PathLike, *, folder: bool = False, overwrite: bool = True) -> None:
    """Raise :class:`OutputError` unless the file (or, with ``folder``, the folder) ``path`` can be written.

    Without ``overwrite`` an existing file is refused too. Nothing is left behind: missing folders
    are not created; the check creates and deletes a temporary file in the nearest existing folder
    above ``path`` (or in ``path`` itself).
    """
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"cannot write into {path}: it is a file, not a folder")
    if not folder and path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    if not folder and not overwrite and os.path.lexists(path):
        raise OutputError(f"{path} exists (use `overwrite` to replace it)")
    where = path if folder else path.parent.absolute()  # the nearest existing folder above, or itself
    with suppress(OSError):  # not searchable: reported as the place that cannot be written
        while not where.exists() and where != where.parent:
            where = where.parent
    if not where.is_dir():
        raise OutputError(f"cannot write {path}: {where} is not a folder")
    try:
        new_temp(where / "write-check").unlink()
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error} ({where})") from None


def write_error(target: Path, error: BaseException, kept: str = "nothing was kept") -> OutputError:
    """The one-line error of a failed write of ``target`` (a full disk is named as such); ``kept``: what remains."""
    reason = getattr(error, "strerror", None) or first_line(error)
    with suppress(OSError):
        usage = shutil.disk_usage(target if target.is_dir() else target.parent)
        if usage.free < 1 << 20:
            reason = f"the disk is full ({usage.free // 1024} KiB free)"
    return OutputError(f"cannot write {target}: {reason}; {kept}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
