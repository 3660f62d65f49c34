"""What every command shares: the Typer app, option types, the error policy, workspace/ONE helpers, printing.

Commands parse options, call the stage function and print. Exit codes: 0 when every requested insertion is
done (or was already), 1 when any failed (a table names each failed pid with a one-line reason, also in the
log), 2 for usage errors (one red line naming the input and the fix). Imports are lazy so ``--help`` is fast.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ibl_ephys_data.errors import IblEphysDataError
from ibl_ephys_data.network_policy import NetworkPolicy

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Quality-controlled, region-labelled, ML-ready LFP datasets from IBL releases.")
console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger("ibl_ephys_data")

WorkspaceOpt = Annotated[str, typer.Option(
    "--workspace", "-w", help="Workspace folder (created if missing), or s3://bucket/prefix (object store).")]
AlyxUrlOpt = Annotated[str | None, typer.Option(
    "--alyx-url", help="Alyx database URL (default: the public IBL Alyx).", show_default=False)]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use the ONE cache only, no network.")]
OneCacheOpt = Annotated[Path | None, typer.Option("--one-cache", help="ONE cache folder (default: ONE's own).")]
DataServerOpt = Annotated[str | None, typer.Option("--http-data-server", help="Override ONE's HTTP data server.")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Read timeout of every request (s): Alyx, downloads, range reads, an s3:// workspace.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries of a failed request (5xx, reset, short body).")]
DEFAULT_TIMEOUT, DEFAULT_RETRIES = NetworkPolicy.read_timeout, NetworkPolicy.retries
PidsOpt = Annotated[list[str] | None, typer.Option("--pids", help="Only these insertion UUIDs (repeatable).")]
PidCsvOpt = Annotated[Path | None, typer.Option(
    "--pid-csv", help="CSV with a 'pid' column (optional 'eid', 'release').")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Run insertions on Dask: 'local' (a local cluster) or tcp://HOST:PORT.")]
RetryFailedOpt = Annotated[bool, typer.Option("--retry-failed", help="Only the insertions whose last run failed.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Let an empty result replace a non-empty output.")]
DEFAULT_WORKSPACE = "ibl-workspace"
USER_ERRORS = (IblEphysDataError,)  # only errors the user can act on; anything else is a bug: a traceback


def user_errors(func):
    """Turn the errors a user can fix into one clear line and exit code 2 (tracebacks go to the log)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as ex:
            logger.debug("error", exc_info=True)
            logger.error("%s", ex)
            err_console.print(f"[red]error:[/red] {ex}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception:  # a bug: the traceback belongs in the log, and on screen
            logger.exception("unexpected error")
            raise

    return wrapper


def open_workspace(location: str, network: NetworkPolicy | None = None):
    """The workspace to write: created if missing; an object-store workspace's working copy brought up to date
    (its bucket reached under ``network``)."""
    from ibl_ephys_data.workspace import Workspace

    ws = Workspace(location, network=network).create().refresh()
    ws.attach_log()
    return ws


def _existing(location: str):
    """A workspace to read (nothing is created; an object-store workspace is pulled into its working copy)."""
    from ibl_ephys_data.workspace import Workspace

    ws = Workspace(location)
    return ws.create().refresh() if ws.mirror is not None else ws


def connection(alyx_url: str | None, offline: bool, one_cache: Path | None, http_data_server: str | None,
               timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES):
    from ibl_ephys_data.run import ConnectionOptions

    return ConnectionOptions(alyx_url=alyx_url, offline=offline, one_cache=str(one_cache) if one_cache else None,
                             http_data_server=http_data_server, read_timeout=timeout, retries=retries).connection()


def requested_pids(pids: list[str] | None, pid_csv: Path | None) -> list[str] | None:
    """``--pids`` and ``--pid-csv`` together; non-UUIDs are rejected before anything runs."""
    from ibl_ephys_data.pipeline import validate_pids

    out = list(pids or [])
    if pid_csv is not None:
        from ibl_ephys_data.catalog import read_pid_csv

        out += list(read_pid_csv(pid_csv)["pid"])
    return validate_pids(out) if out else None


def finish(result, title: str) -> None:
    """Print the statuses and the failed insertions; exit 1 if any insertion failed."""
    table = Table(title=title)
    table.add_column("status")
    table.add_column("insertions", justify="right")
    for status, count in result.counts().items():
        table.add_row(status, str(count))
    console.print(table)
    if result.failed:
        failed = Table(title=f"{result.stage}: {len(result.failed)} insertion(s) failed", title_style="red")
        failed.add_column("pid")
        failed.add_column("reason")
        for pid, reason in result.failed.items():
            failed.add_row(pid, reason)
        err_console.print(failed)
        raise typer.Exit(1)


def _run_insertion_stage(stage: str, workspace: str, options, pids, pid_csv, scheduler, retry_failed, force,
                         alyx_url, offline, one_cache, http_data_server, timeout, retries) -> None:
    """The shared body of ``channels``, ``lfp`` and ``qc``: lock, ONE, the pipeline runner, honest exit."""
    from ibl_ephys_data.run import _per_insertion

    wanted = requested_pids(pids, pid_csv)
    conn = connection(alyx_url, offline, one_cache, http_data_server, timeout, retries)
    ws = open_workspace(workspace, conn.network)
    run = _per_insertion(stage)
    with ws.lock():
        if scheduler:
            result = run(ws, None, options, wanted, connection=conn, scheduler=scheduler, retry_failed=retry_failed,
                         force=force)
        else:
            with conn.session() as one:
                result = run(ws, one, options, wanted, connection=conn, retry_failed=retry_failed, force=force)
    finish(result, f"{stage} -> {ws.location}")


def _print_series(series, label: str, title: str) -> None:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("insertions", justify="right")
    for key, count in series.items():
        table.add_row(str(key), str(count))
    console.print(table)


def _print_counts(df, column: str, title: str) -> None:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("insertions", justify="right")
    if len(df):
        for value, count in df[column].value_counts().sort_index().items():
            table.add_row(str(value), str(count))
    console.print(table)


def _finish_run(result) -> None:
    for line in result.lines:
        console.print(line, highlight=False)
    if result.failed:
        failed = Table(title="failed insertions", title_style="red")
        for column in ("stage", "pid", "reason"):
            failed.add_column(column)
        for stage, pids in result.failed.items():
            for pid, reason in pids.items():
                failed.add_row(stage, pid, reason)
        err_console.print(failed)
        raise typer.Exit(1)
