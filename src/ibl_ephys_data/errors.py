"""The errors a user can act on, under one base class, and the one validator for "X is not one of ...".

Why one base: the command line turns exactly these into one red line and exit code 2 (or, for a failed
insertion, a row of the failure table); anything else is a bug, and its traceback belongs in the log, not
hidden behind a friendly sentence. Library code raises a subclass with a message that names the input (a
file, a pid, an option) and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# stage -> the command that produces its outputs (the one place a "run X first" hint is written)
STAGE_COMMANDS: dict[str, str] = {
    "catalog": "catalog --release bwm --release repro-ephys",
    "channels": "channels",
    "lfp": "lfp",
    "qc": "qc",
    "dataset": "export",
    "baseline": "baseline",
    "coverage": "coverage",
    "report": "report",
}


class IblEphysDataError(Exception):
    """Base of every error the user can act on; the message names the input and the fix."""


class InputError(IblEphysDataError, ValueError):
    """A bad argument, option, file or pid given by the user."""


class MissingInputError(IblEphysDataError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingStageError(IblEphysDataError, FileNotFoundError):
    """An upstream stage's output is missing; the message names the command that makes it."""

    def __init__(self, what: str, stage: str, workspace: Any = None, pids: Iterable[str] | None = None):
        self.stage = stage
        super().__init__(f"{what}: run `{command_hint(stage, workspace, pids)}` first")


class DataIntegrityError(IblEphysDataError):
    """A file or chunk failed a size/hash/shape check; the message names it."""


class AtlasUnavailable(IblEphysDataError):
    """An atlas could not be found locally nor downloaded; the message says how to get it."""


class ConnectionFailed(IblEphysDataError):
    """Alyx or the data server could not be reached, refused credentials, or answered with an error."""


class WorkspaceLocked(IblEphysDataError):
    """Another live process holds the workspace lock; the message names it (pid, host, start time)."""


class EmptyResultError(IblEphysDataError):
    """A stage produced nothing and refuses to replace a non-empty output (pass ``force=True``/``--force``)."""


def command_hint(stage: str, workspace: Any = None, pids: Iterable[str] | None = None) -> str:
    """The command line that (re)makes ``stage``'s outputs, e.g. ``ibl-ephys-data lfp --pids P``."""
    check_option("stage", stage, STAGE_COMMANDS)
    parts = ["ibl-ephys-data", STAGE_COMMANDS[stage]]
    if workspace is not None:
        parts.append(f"--workspace {getattr(workspace, 'location', workspace)}")
    for pid in pids or ():
        parts.append(f"--pids {pid}")
    return " ".join(parts)


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``InputError`` in the one format."""
    allowed = list(allowed)
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}")
    return value
