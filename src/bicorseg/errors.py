"""User-facing errors: one clear line that names the file or parameter and what is wrong.

One type per kind of fault, each also the standard exception it is (a ``ValueError``, ``OSError``
or ``ImportError``, see each class), so that generic callers catch them; a missing input file is an
:class:`InputError`, about what the user gave, never an ``OSError`` that I/O code would swallow.
The command line prints them without a traceback and exits with status 2; anything else that
escapes is a bug and keeps its traceback. :class:`BicorsegWarning` is the category of every warning.

Core code speaks Python: an error about a parameter gives its name as ``key`` (the message reads
``"tile: must be at least 32 pixels, got 16"``), and a message that mentions another parameter writes
it in backquotes (``"out.tif exists: use `overwrite` to replace it"``). The command line, which speaks
flags, prints both as its options (``--tile: ...``, ``use --overwrite ...``).
"""

from __future__ import annotations

import functools
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
        return (functools.partial(type(self), key=self.key), (self.detail,))


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
    """The first line of an exception's message (or its type), for one-line reports; for rasterio's
    "Read failed. See previous exception for details.", that of the GDAL error it was raised from."""
    text = str(error).strip()
    if "See previous exception" in text and error.__cause__ is not None:
        return first_line(error.__cause__)
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
