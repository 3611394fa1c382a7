"""User-facing errors: one clear line that names the file or parameter and what is wrong.

One type per kind of fault, each also the standard exception it is, so that generic callers catch
them: :class:`ConfigError` (a parameter or config value) is a ``ValueError``; :class:`InputError`
(an input file, folder or value) is a ``ValueError`` too, a missing or unreadable file included (it
is about what the user gave, not an I/O failure to retry, and an ``except OSError`` around I/O code
must not swallow it); :class:`CheckpointError` (a checkpoint) is a ``ValueError``; :class:`OutputError`
(an output cannot be written: disk full, no permission) is an ``OSError``; :class:`InstallError` (the
installed packages do not work together) is an ``ImportError``. The command-line entry
point prints these without a traceback and exits with status 2. Anything else that escapes is a bug
and keeps its traceback.

:class:`BicorsegWarning` is the category of every warning bicorseg gives: a result is written, with
something about it to know (``warnings.simplefilter("ignore", BicorsegWarning)`` hides them).

Core code speaks Python: an error about a parameter gives its name as ``key`` (the message reads
``"tile: must be at least 32 pixels, got 16"``), and a message that mentions another parameter writes
it in backquotes (``"out.tif exists: use `overwrite` to replace it"``). The command line, which speaks
flags, prints both as its options (``--tile: ...``, ``use --overwrite ...``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType


class BicorsegError(Exception):
    """Base class of every error bicorseg reports to a user.

    Args:
        message: what is wrong, one line.
        key: the parameter (or config key, ``optimizer.lr``) the error is about; the message is then
            prefixed with it.
    """

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        self.key = key
        self.detail = message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self) -> tuple:  # keep ``key`` across processes (predict workers)
        return (_rebuild, (type(self), self.detail, self.key))


def _rebuild(cls: type[BicorsegError], message: str, key: str | None) -> BicorsegError:
    error = cls.__new__(cls)
    BicorsegError.__init__(error, message, key=key)
    return error


class InputError(BicorsegError, ValueError):
    """An input file, folder or value is missing, unreadable or inconsistent (a ``ValueError``)."""


class CheckpointError(BicorsegError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit what it is used for (a ``ValueError``)."""


class ConfigError(BicorsegError, ValueError):
    """A configuration value or parameter is invalid (a ``ValueError``)."""


class OutputError(BicorsegError, OSError):
    """An output cannot be written (disk full, no permission, ...); nothing partial is left behind
    (an ``OSError``)."""


class InstallError(BicorsegError, ImportError):
    """The installed packages do not work together, e.g. a torchvision built for another torch (an
    ``ImportError``); the message says what to install."""


class BicorsegWarning(UserWarning):
    """A result is written, but something about it should be known (a band left out, pixels masked as
    nodata, an output recomputed); the command line prints it as one line."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_extra(extra: str, modules: Sequence[str], what: str, key: str | None = None) -> list[ModuleType]:
    """``modules`` imported, or a one-line :class:`ConfigError`: ``what`` needs the optional extra ``extra``."""
    imported, missing = [], []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f'{what} needs the optional extra ({", ".join(missing)} missing): pip install "bicorseg[{extra}]"',
            key=key,
        )
    return imported
