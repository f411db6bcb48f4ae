"""User-facing errors.

Anything a user can cause (a missing file, a corrupt volume, a bad config key) is raised as a
:class:`MedsslError` with one sentence naming the file and the problem. The CLI prints that
sentence without a traceback (``--debug`` shows it); library users can catch the class.
"""

from __future__ import annotations

from pathlib import Path


class MedsslError(Exception):
    """An error caused by the user's input, with a message meant to be read by that user."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class ConfigError(MedsslError):
    """A configuration file or ``--set`` override is invalid."""


class DataError(MedsslError):
    """A data file or folder is missing, unreadable or inconsistent."""


class TrainingDiverged(MedsslError, FloatingPointError):
    """The loss became NaN or infinite: the settings (learning rate, precision) need changing."""


class RunInterrupted(MedsslError):
    """The user interrupted a run (Ctrl-C); what was saved is intact and the run can resume."""

    exit_code = 130


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError`` a user can cause (a missing, unwritable or wrong-kind path)."""
    what = exc.strerror or type(exc).__name__
    path = exc.filename if exc.filename is not None else ""
    return f"{path}: {what[0].lower() + what[1:]}" if path else what
