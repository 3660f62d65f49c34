"""Execution in one place: every per-insertion stage runs through :func:`run_stage`, in process or on Dask.

Why one runner: skip-if-done (options fingerprint *and* an integrity check of the outputs), per-pid status in
the manifest, progress, failure isolation and the choice of executor are the same for every stage that loops
over insertions, and a long run over the brain-wide map depends on all of them being right. A stage is data
(:class:`InsertionStage`): a module-level ``process(one, workspace, pid, options)`` that writes that insertion's
outputs atomically, an ``is_done(workspace, pid, options)`` check, and an ``assemble(workspace, options, force)``
that rebuilds the stage's shared tables from every insertion's part, so a subset run merges and a killed run
resumes to the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ibl_ephys_data.errors import ConnectionFailed, InputError, MissingStageError
from ibl_ephys_data.workspace import Workspace

logger = logging.getLogger(__name__)

PROGRESS_EVERY_N = 10  # a log line every N insertions ...
PROGRESS_EVERY_S = 30.0  # ... or every 30 s, when output is not a terminal


@dataclass(frozen=True)
class InsertionStage:
    """A per-insertion stage as data (see the module docstring)."""

    name: str
    process: Callable[[Any, Workspace, str, Any], None]
    is_done: Callable[[Workspace, str, Any], bool]
    assemble: Callable[[Workspace, Any, bool], None]
    needs_one: bool = True


@dataclass
class StageResult:
    """What a stage run did for each requested insertion: done, skipped (already done) or failed."""

    stage: str
    statuses: dict[str, dict] = field(default_factory=dict)

    def pids_with(self, status: str) -> list[str]:
        return [pid for pid, s in self.statuses.items() if s["status"] == status]

    @property
    def failed(self) -> dict[str, str]:
        return {pid: s.get("reason", "") for pid, s in self.statuses.items() if s["status"] == "failed"}

    @property
    def ok(self) -> bool:
        """True only when every requested insertion succeeded or was already done."""
        return not self.failed

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.statuses.values():
            out[s["status"]] = out.get(s["status"], 0) + 1
        return dict(sorted(out.items()))


def validate_pids(pids: Iterable[str] | None) -> list[str] | None:
    """Reject anything that is not a UUID up front, naming it (a typo must not look like a failed download)."""
    if pids is None:
        return None
    out = []
    for pid in pids:
        try:
            ok = len(str(pid)) == 36 and str(uuid.UUID(str(pid))) == str(pid).lower()
        except ValueError:
            ok = False
        if not ok:
            raise InputError(f"--pids {pid!r} is not an insertion UUID (e.g. 1a276285-8b0e-4cc9-9f0a-a3a002978724)")
        out.append(str(pid).lower())
    return list(dict.fromkeys(out))


def select_pids(workspace: Workspace, pids: Iterable[str] | None, retry_failed_of: str | None = None
                ) -> tuple[list[str], dict[str, dict]]:
    """The catalog's pids to run (all, ``pids``, or those that failed last time) and failures for unknown pids."""
    pids = validate_pids(pids)
    if not workspace.catalog.exists():
        raise MissingStageError(f"{workspace.catalog} does not exist", "catalog", workspace)
    catalog = [str(p) for p in workspace.read_catalog()["pid"]]
    known = set(catalog)
    if retry_failed_of is not None:
        failed = set(workspace.failed_pids(retry_failed_of))
        pids = [p for p in (pids or catalog) if p in failed]
    if not pids and retry_failed_of is None:
        return catalog, {}
    unknown = {p: {"status": "failed", "reason": "pid not in catalog.parquet: add it with `ibl-ephys-data catalog`"}
               for p in pids or [] if p not in known}
    return [p for p in catalog if p in set(pids or [])], unknown


# progress ---------------------------------------------------------------------------------------
class Progress:
    """Progress of a stage over insertions: a rich bar on a terminal, periodic log lines otherwise.

    Why both: a many-hour run usually writes to a log or a pipe, where a bar prints nothing until the end.
    """

    def __init__(self, stage: str, total: int, terminal: bool | None = None):
        self.stage, self.total = stage, total
        self.done = self.failed = 0
        self.t0 = self._last = time.monotonic()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = None
        if self.terminal and total:
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(stage, total=total)
        logger.info("%s: %d insertions to run", stage, total)

    def advance(self, pid: str, status: str) -> None:
        self.done += status != "failed"
        self.failed += status == "failed"
        n = self.done + self.failed
        if self._bar is not None:
            self._bar.advance(self._task)
        now = time.monotonic()
        if n == self.total or n % PROGRESS_EVERY_N == 0 or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            eta = (now - self.t0) / n * (self.total - n) if n else float("nan")
            line = f"{self.stage}: {n}/{self.total} ({self.done} done, {self.failed} failed), ETA {eta:.0f} s"
            logger.info(line)
            if not self.terminal:
                print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# executors --------------------------------------------------------------------------------------
_OPENING_ONE = threading.Lock()


def open_with_retries(connection, attempts: int = 5):
    """Open ONE on a worker: one thread at a time in a process, and retried briefly.

    Why: ONE writes its params files (``~/.one/.<host>``, ``~/.one/.caches``) when it first meets a URL,
    without guarding against concurrent writers; two threads of one worker opening at once tore them.
    The lock orders this process's threads; the retries cover worker processes that share a home folder.
    """
    for attempt in range(attempts):
        try:
            with _OPENING_ONE:
                return connection.open()
        except ConnectionFailed:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise InputError(f"attempts={attempts}: must be at least 1")


def _guarded(stage: InsertionStage, one, workspace: Workspace, pid: str, options) -> dict:
    """One insertion, its failure turned into a status with a one-line reason (the traceback goes to the log)."""
    t0 = time.monotonic()
    try:
        stage.process(one, workspace, pid, options)
    except Exception as ex:  # one broken insertion never stops the others
        logger.debug("%s failed for %s", stage.name, pid, exc_info=True)
        reason = " ".join(f"{type(ex).__name__}: {ex}".split())
        return {"status": "failed", "reason": reason, "seconds": round(time.monotonic() - t0, 3)}
    return {"status": "done", "seconds": round(time.monotonic() - t0, 3)}


_WORKER_ONE = threading.local()  # one ONE per worker thread, reused by the tasks that thread runs


def _worker_one(connection):
    """This worker thread's ONE for ``connection``, opened on first use.

    Why reuse: opening ONE (and checking the token) costs as much as a small stage's work per insertion.
    Why per thread: a Dask worker runs tasks on several threads, and a ONE instance is not thread-safe.
    Its cache tables are not saved from workers: the downloaded files are what the stages need, and workers
    of one cluster saving tables into a shared cache folder at once could tear them.
    """
    cache = _WORKER_ONE.__dict__.setdefault("by_connection", {})
    if connection not in cache:
        cache[connection] = open_with_retries(connection)
    return cache[connection]


def _on_worker(stage: InsertionStage, connection, location: str, pid: str, options) -> dict:
    """A Dask task: the worker's own ONE (no shared params or caches needed), then the pid.

    For an object-store workspace the worker's working copy is brought up to date first (a worker on
    another machine has its own), and what the pid writes is published from the worker.
    """
    workspace = Workspace(location, network=connection.network if connection is not None else None)
    try:
        workspace.refresh()
    except Exception as ex:
        return {"status": "failed", "reason": f"{type(ex).__name__}: {ex}"}
    if not stage.needs_one:
        return _guarded(stage, None, workspace, pid, options)
    try:
        one = _worker_one(connection)
    except Exception as ex:
        return {"status": "failed", "reason": f"{type(ex).__name__}: {ex}"}
    return _guarded(stage, one, workspace, pid, options)


@contextlib.contextmanager
def dask_client(scheduler: Any) -> Iterator[Any]:
    """``local`` starts a LocalCluster sized to this machine, a string is a scheduler address, and a
    ``distributed.Client`` is used as it is (so ``run`` starts one cluster for all its stages)."""
    from distributed import Client, LocalCluster

    if not isinstance(scheduler, str):
        yield scheduler
    elif scheduler == "local":
        n_workers = max(1, (os.cpu_count() or 1) // 2)
        with LocalCluster(n_workers=n_workers, threads_per_worker=2, processes=True, dashboard_address=None) as cl:
            with Client(cl) as client:
                yield client
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as ex:
            raise ConnectionFailed(f"--scheduler {scheduler}: no Dask scheduler answers there ({ex})") from None
        with client:
            yield client


def _run_in_process(stage, workspace, todo, options, one, connection, report) -> None:
    from ibl_ephys_data.ibl import save_one_cache

    opened = None
    if stage.needs_one and one is None:
        if connection is None:
            raise InputError(f"{stage.name}: pass `one` or `connection` to reach ONE")
        one = opened = connection.open()
    try:
        for pid in todo:
            report(pid, _guarded(stage, one, workspace, pid, options))
    finally:
        if opened is not None:
            save_one_cache(opened)


def _run_on_dask(stage, workspace, todo, options, connection, scheduler, report) -> None:
    from distributed import as_completed

    if stage.needs_one and connection is None:
        raise InputError("running on Dask needs the connection (alyx url, cache) for the workers to open")
    if connection is not None:
        connection = connection.for_workers()
    with dask_client(scheduler) as client:
        logger.info("%s: %d insertions on Dask (%s)", stage.name, len(todo), client.scheduler.address)
        futures = {client.submit(_on_worker, stage, connection, workspace.location, pid, options,
                                 key=f"{stage.name}-{pid}-{uuid.uuid4().hex[:8]}", pure=False): pid for pid in todo}
        for future in as_completed(futures):
            pid = futures[future]
            try:
                status = future.result()
            except Exception as ex:  # a worker died under this task
                status = {"status": "failed", "reason": f"{type(ex).__name__}: {ex}"}
            report(pid, status)


def run_stage(stage: InsertionStage, workspace: Workspace, options: Any, pids: Iterable[str] | None = None, *,
              one=None, connection=None, scheduler: str | None = None, retry_failed: bool = False,
              force: bool = False, progress: bool | None = None) -> StageResult:
    """Run ``stage`` for the catalog's insertions (or ``pids``), skipping those already done.

    ``scheduler``: None (in this process, with ``one`` or a ONE opened from ``connection``), ``local`` (a
    LocalCluster) or a Dask scheduler address; workers open ONE from ``connection`` themselves.
    ``retry_failed`` runs only the insertions whose last run of this stage failed. ``progress`` forces the
    terminal bar on or off (default: a bar on a terminal, log lines otherwise). ``force`` lets an empty result
    replace a non-empty shared table. Each insertion's status is in the manifest as soon as it is known.
    """
    workspace.create().refresh()
    wanted, result_statuses = select_pids(workspace, pids, stage.name if retry_failed else None)
    todo = []
    for pid in wanted:
        if stage.is_done(workspace, pid, options):
            result_statuses[pid] = {"status": "skipped", "reason": "already done with the same options"}
        else:
            todo.append(pid)
    if result_statuses:
        workspace.record_stage_pids(stage.name, result_statuses)
    bar = Progress(stage.name, len(todo), terminal=progress)

    def report(pid: str, status: dict) -> None:
        result_statuses[pid] = status
        workspace.record_pid(stage.name, pid, status)
        if status["status"] == "failed":
            logger.error("%s failed for %s: %s", stage.name, pid, status["reason"])
        bar.advance(pid, status["status"])

    try:
        if todo and scheduler:
            _run_on_dask(stage, workspace, todo, options, connection, scheduler, report)
        elif todo:
            _run_in_process(stage, workspace, todo, options, one, connection, report)
    finally:
        bar.close()
    if scheduler:
        workspace.refresh()  # parts published by workers on other machines
    stage.assemble(workspace, options, force)
    spec = options.spec() if hasattr(options, "spec") else options
    workspace.record_stage(stage.name, {"options": spec, "pids": list(pids) if pids else None,
                                        "scheduler": scheduler})
    result = StageResult(stage.name, {p: result_statuses[p] for p in sorted(result_statuses)})
    logger.info("%s: %s", stage.name, result.counts())
    return result
