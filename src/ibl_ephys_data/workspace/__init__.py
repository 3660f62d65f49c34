"""The workspace: the only contract between stages (see docs/workspace.md).

Every write goes to a temporary sibling first and is renamed into place, so a killed run never leaves a
half-written file that a later stage would read as complete. Per-insertion stages write one *part* per
insertion as soon as it finishes (``parts/<stage>/<pid>.parquet``, stamped with the stage options'
fingerprint); the shared tables (``channels.parquet``, ``qc/*.parquet``) are rebuilt from all parts, in pid
order. So a run killed at any moment and started again, or a run on a subset of pids, ends with the same
bytes as one uninterrupted run over everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ibl_ephys_data.errors import EmptyResultError, InputError, MissingStageError, WorkspaceLocked
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.workspace import objects

LOG_NAME = "ibl-ephys-data.log"
LOCK_NAME = ".lock"
FINGERPRINT_KEY = b"ibl_ephys_data.fingerprint"
TRACKED_PACKAGES = (
    "ibl-ephys-data", "ONE-api", "ibllib", "ibl-neuropixel", "iblatlas", "iblutil", "mtscomp",
    "numpy", "scipy", "pandas", "pyarrow", "zarr",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the outputs, for provenance."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories (a directory target is replaced whole). In the working copy of an
    object-store workspace the rename is also the publication of ``path`` (see `objects`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    try:
        yield tmp
        with objects.committing(path):
            if path.is_dir() and not path.is_symlink():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: Path, fingerprint: str | None = None) -> Path:
    """Write a DataFrame atomically, without the index, deterministically (same data, same bytes).

    ``fingerprint`` (of the options that made the rows) is stored in the file's metadata, so a done-check
    reads it from the footer without loading the table.
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    if fingerprint is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def parquet_fingerprint(path: Path) -> str | None:
    """The fingerprint stored by :func:`write_parquet`, or None (absent, unreadable or unstamped file)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(FINGERPRINT_KEY)
    return value.decode() if value is not None else None


def fingerprint(spec: Any) -> str:
    """A short, stable hash of a JSON-able options spec: equal options <=> equal fingerprint."""
    return hashlib.sha256(json.dumps(_jsonable(spec), sort_keys=True).encode()).hexdigest()[:16]


def write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: Any, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


class Workspace:
    """Paths of the workspace layout plus its manifest; pass one around instead of raw paths.

    ``root`` is a folder, or ``s3://bucket/prefix`` for an object-store workspace: then ``root`` becomes the
    local working copy (in ``cache_dir``, see `objects.working_copy`), ``url`` the bucket location and
    ``mirror`` what keeps the two in step; stages work on the working copy, unchanged. ``network`` (timeouts,
    retries) is how the bucket is reached; a folder workspace has no use for it.
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 network: NetworkPolicy | None = None):
        self.url = str(root).rstrip("/") if objects.is_url(root) else None
        if self.url is not None:
            self.root = objects.working_copy(self.url, cache_dir)
            self.mirror: objects.Mirror | None = objects.open_mirror(self.url, self.root, self.published(),
                                                                     network)
        else:
            self.root = Path(root).expanduser().absolute()
            self.mirror = None

    def __repr__(self) -> str:
        return f"Workspace({self.location!r})"

    def __reduce__(self) -> tuple:  # the working copy is the unpickler's own (its cache folder)
        return Workspace, (self.location, None, self.mirror.store.network if self.mirror else None)

    @property
    def location(self) -> str:
        """What the user named: the folder, or the ``s3://`` location of an object-store workspace."""
        return self.url or str(self.root)

    def where(self, path: Path) -> str:
        """How to name ``path`` to the user: its ``s3://`` address in an object-store workspace."""
        if self.url is None:
            return str(path)
        try:
            return f"{self.url}/{Path(path).relative_to(self.root).as_posix()}"
        except ValueError:
            return str(path)

    catalog = property(lambda self: self.root / "catalog.parquet")
    channels = property(lambda self: self.root / "channels.parquet")
    lfp = property(lambda self: self.root / "lfp.zarr")
    qc_dir = property(lambda self: self.root / "qc")
    qc_metrics = property(lambda self: self.qc_dir / "metrics.parquet")
    qc_channel_metrics = property(lambda self: self.qc_dir / "channel_metrics.parquet")
    qc_verdicts = property(lambda self: self.qc_dir / "verdicts.parquet")
    qc_reviews = property(lambda self: self.qc_dir / "reviews.jsonl")
    dataset_dir = property(lambda self: self.root / "dataset")
    report_dir = property(lambda self: self.root / "report")
    parts_dir = property(lambda self: self.root / "parts")
    manifest_path = property(lambda self: self.root / "manifest.json")
    log_path = property(lambda self: self.root / LOG_NAME)
    lock_path = property(lambda self: self.root / LOCK_NAME)
    external_channels = property(lambda self: self.root / "external_channels.parquet")
    coverage = property(lambda self: self.root / "coverage.parquet")

    def published(self) -> dict[str, str]:
        """What an object-store workspace publishes, by top-level name, and how each is replaced."""
        kinds = {self.catalog: objects.FILE, self.channels: objects.FILE, self.manifest_path: objects.FILE,
                 self.external_channels: objects.FILE, self.coverage: objects.FILE, self.qc_dir: objects.FOLDER,
                 self.dataset_dir: objects.FOLDER, self.report_dir: objects.FOLDER, self.parts_dir: objects.FILES,
                 self.lfp: objects.GROUPS}
        return {path.name: kind for path, kind in kinds.items()}

    def refresh(self, prune: bool = False) -> Workspace:
        """Bring an object-store workspace's working copy up to date (nothing to do for a folder)."""
        if self.mirror is not None:
            self.mirror.pull(prune=prune)
        return self

    def create(self) -> Workspace:
        """Make the folder; a path that is a file or not writable is one clear ``InputError``."""
        if self.mirror is not None and not self.root.is_dir():
            self.mirror.store.check()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"workspace {self.root} is a file: pass a folder to --workspace")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise InputError(f"workspace {self.root} cannot be created ({ex.strerror}): pass a writable folder "
                             "to --workspace") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise InputError(f"workspace {self.root} is read-only: pass a writable folder to --workspace")
        return self

    def read_catalog(self) -> pd.DataFrame:
        return self._read(self.catalog, "catalog")

    def read_channels(self) -> pd.DataFrame:
        return self._read(self.channels, "channels")

    def _read(self, path: Path, stage: str) -> pd.DataFrame:
        if not path.exists():
            raise MissingStageError(f"{path} does not exist", stage, self)
        return pd.read_parquet(path)

    # per-insertion parts ----------------------------------------------------------------------
    def part_path(self, stage: str, pid: str, name: str = "") -> Path:
        """Where one insertion's output of a stage lives (``name`` tells several tables of a stage apart)."""
        return self.parts_dir / stage / (f"{pid}.{name}.parquet" if name else f"{pid}.parquet")

    def write_part(self, stage: str, pid: str, df: pd.DataFrame, fingerprint: str, name: str = "") -> Path:
        return write_parquet(df, self.part_path(stage, pid, name), fingerprint=fingerprint)

    def has_part(self, stage: str, pid: str, fingerprint: str, name: str = "") -> bool:
        """True if the insertion's part exists and was made with these options."""
        return parquet_fingerprint(self.part_path(stage, pid, name)) == fingerprint

    def read_parts(self, stage: str, name: str = "", pids: set[str] | None = None) -> list[pd.DataFrame]:
        """Every part of a stage in pid order (optionally only ``pids``); unreadable parts are skipped."""
        folder = self.parts_dir / stage
        suffix = f".{name}.parquet" if name else ".parquet"
        frames = []
        for path in sorted(folder.glob(f"*{suffix}")) if folder.exists() else []:
            pid = path.name[: -len(suffix)]
            if "." in pid or (pids is not None and pid not in pids):
                continue
            try:
                frames.append(pd.read_parquet(path))
            except (OSError, pa.ArrowInvalid):
                logging.getLogger(__name__).warning("%s is unreadable: that insertion will be recomputed", path)
        return frames

    def replace_table(self, df: pd.DataFrame, path: Path, force: bool = False) -> Path:
        """Write a shared table, refusing to replace a non-empty one with an empty one unless ``force``."""
        if df.empty and not force and path.exists() and pq.read_metadata(path).num_rows > 0:
            raise EmptyResultError(f"{path}: this run produced no rows; the existing table was kept "
                                   "(pass --force to replace it with an empty one)")
        return write_parquet(df, path)

    # manifest ---------------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if self.manifest_path.exists():
            try:
                return json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError:
                raise InputError(f"{self.manifest_path} is not valid JSON: restore it or delete it (stage "
                                 "outputs are kept; the next run rewrites it)") from None
        return {"tool": "ibl-ephys-data", "created": _now(), "stages": {}, "pids": {}}

    def record_stage(self, stage: str, parameters: dict, statuses: dict[str, dict] | None = None) -> dict:
        """Record a stage run: its parameters, versions and the status of every pid it touched.

        ``statuses`` maps pid -> {"status": "done"|"failed"|"skipped", "reason": str, ...}.
        """
        manifest = self.read_manifest()
        manifest["versions"] = package_versions()
        manifest["updated"] = _now()
        manifest["stages"][stage] = {"parameters": _jsonable(parameters), "finished": _now()}
        _set_pid_statuses(manifest, stage, statuses or {})
        write_json(manifest, self.manifest_path)
        return manifest

    def record_pid(self, stage: str, pid: str, status: dict) -> None:
        """Record one insertion's status as soon as it is known (a killed run keeps what it learnt)."""
        self.record_stage_pids(stage, {pid: status})

    def record_stage_pids(self, stage: str, statuses: dict[str, dict]) -> None:
        manifest = self.read_manifest()
        _set_pid_statuses(manifest, stage, statuses)
        write_json(manifest, self.manifest_path)

    def pid_status(self, pid: str, stage: str) -> dict | None:
        return self.read_manifest()["pids"].get(pid, {}).get(stage)

    def failed_pids(self, stage: str) -> dict[str, str]:
        pids = self.read_manifest()["pids"]
        return {
            pid: s[stage].get("reason", "")
            for pid, s in pids.items()
            if stage in s and s[stage].get("status") == "failed"
        }

    # one writer at a time ---------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[Workspace]:
        """Hold the workspace lock: a second writer stops with one line naming the holder.

        The lock records pid, host and start time; a holder on this host whose process is gone left a stale
        lock, which is taken over (a killed run must not block the next one). An object-store workspace is
        locked in the bucket too (a conditional write of ``.lock``), then its working copy is brought to the
        bucket's committed state, dropping what a killed run wrote but did not publish.
        """
        self.create()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        with contextlib.ExitStack() as held:
            if self.mirror is not None:
                held.enter_context(_held(self.mirror.lock_backend(), me, f"{self.url}/.lock", self.location))
            held.enter_context(_held(self._local_lock_backend(), me, str(self.lock_path), self.location))
            self.refresh(prune=True)
            self.remove_stale_temporaries()
            yield self

    def _local_lock_backend(self) -> tuple:
        def create(data: bytes) -> bool:
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True

        def read() -> dict | None:
            try:
                return json.loads(self.lock_path.read_text())
            except (OSError, json.JSONDecodeError):
                return None

        return create, read, lambda: self.lock_path.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what killed runs left behind (hidden ``.<name>.*.tmp`` folders, ``.<name>.old``).

        Call it only while holding the lock: a live writer's temporaries look the same. A ``.<name>.old``
        whose ``<name>`` is missing is the previous good output of a replace killed between its two
        renames; it is put back rather than deleted.
        """
        removed = []
        folders = [self.root, self.qc_dir, self.lfp, self.parts_dir]
        folders += [p for p in self.parts_dir.iterdir() if p.is_dir()] if self.parts_dir.is_dir() else []
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if not path.name.startswith("."):
                    continue
                if path.name.endswith(".tmp"):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                elif path.name.endswith(".old"):
                    original = path.with_name(path.name[1:-4])
                    if original.exists():
                        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
                    else:
                        path.rename(original)
                    removed.append(path)
        if removed:
            logging.getLogger(__name__).info("removed %d stale temporaries of killed runs in %s", len(removed),
                                             self.root)
        return removed

    # logging ----------------------------------------------------------------------------------
    def attach_log(self) -> logging.Handler:
        """Send the package's log records, tracebacks included, to the workspace log file (DEBUG and up).

        The console gets INFO and up (``configure_console_logging``); credentials are never logged.
        """
        self.create()
        handler = logging.FileHandler(self.log_path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("ibl_ephys_data")
        root.setLevel(logging.DEBUG)
        if not any(getattr(h, "baseFilename", None) == handler.baseFilename for h in root.handlers):
            root.addHandler(handler)
        return handler


@contextlib.contextmanager
def _held(backend: tuple, me: dict, where: str, location: str) -> Iterator[None]:
    """Take a lock through ``backend`` = (create if absent, read holder, remove); release it if still ours."""
    create, read, remove = backend
    for _ in range(3):
        if create(json.dumps(me).encode()):
            break
        holder = read()
        if holder is not None and _alive(holder):
            raise WorkspaceLocked(
                f"workspace {location} is in use by pid {holder.get('pid')} on {holder.get('host')} since "
                f"{holder.get('started')}: wait for it to finish (or stop it, then delete {where})")
        logging.getLogger(__name__).warning("taking over the stale lock %s (%s)", where, holder)
        remove()
    else:
        raise WorkspaceLocked(f"workspace {location}: could not take the lock {where}")
    try:
        yield
    finally:
        if read() == me:
            remove()


def _set_pid_statuses(manifest: dict, stage: str, statuses: dict[str, dict]) -> None:
    for pid, status in statuses.items():
        manifest["pids"].setdefault(pid, {})[stage] = {**_jsonable(status), "time": _now()}


def _alive(holder: dict) -> bool:
    """Is the lock holder still running? Only answerable on the same host; elsewhere assume it is."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except (OSError, ValueError):  # no usable pid recorded: not a live holder
        return False
    return True


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
