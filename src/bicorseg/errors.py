"""User-facing errors: one clear line that names the file or option and what is wrong.

The command-line entry point prints these without a traceback and exits with status 2. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class BicorsegError(Exception):
    """Base class of every error bicorseg reports to a user."""


class InputError(BicorsegError):
    """An input file, folder or value is missing, unreadable or inconsistent."""


class CheckpointError(BicorsegError):
    """A checkpoint is missing, corrupt, or does not fit what it is used for."""


class ConfigError(BicorsegError):
    """A configuration value or command-line option is invalid."""


class OutputError(BicorsegError):
    """An output cannot be written (disk full, no permission, ...); nothing partial is left behind."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
