"""``ibl-ephys-data``: a thin command line over the Python API (one sub-command per stage, plus ``run``, ``demo``).

Commands parse options, call the stage function and print. Exit codes: 0 when every requested insertion is
done (or was already), 1 when any failed (a table names each failed pid with a one-line reason, also in the
log), 2 for usage errors (one red line naming the input and the fix). Imports are lazy so ``--help`` is fast.
"""

# isort: off
# importing the command modules registers their commands, pipeline stages first (the order --help lists)
from ibl_ephys_data.cli import stages  # noqa: F401
from ibl_ephys_data.cli import outputs  # noqa: F401
from ibl_ephys_data.cli._common import app
# isort: on

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ibl-ephys-data")
