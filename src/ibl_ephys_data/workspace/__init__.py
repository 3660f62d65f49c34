"""The workspace: the only contract between stages (see docs/workspace.md).

Every write goes to a temporary sibling first and is renamed into place, so a killed run never leaves a
half-written file that a later stage would read as complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

LOG_NAME = "ibl-ephys-data.log"
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

    Works for files and directories (a directory target is replaced whole).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    try:
        yield tmp
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


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame atomically, without the index, deterministically (same data, same bytes)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return Path(path)


def write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: Any, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


class Workspace:
    """Paths of the workspace layout plus its manifest; pass one around instead of raw paths."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

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
    manifest_path = property(lambda self: self.root / "manifest.json")
    log_path = property(lambda self: self.root / LOG_NAME)
    external_channels = property(lambda self: self.root / "external_channels.parquet")
    coverage = property(lambda self: self.root / "coverage.parquet")

    def create(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def read_catalog(self) -> pd.DataFrame:
        return self._read(self.catalog, "catalog")

    def read_channels(self) -> pd.DataFrame:
        return self._read(self.channels, "channels")

    def _read(self, path: Path, stage: str) -> pd.DataFrame:
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: run `ibl-ephys-data {stage} --workspace {self.root}` first"
            )
        return pd.read_parquet(path)

    # manifest ---------------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return {"tool": "ibl-ephys-data", "created": _now(), "stages": {}, "pids": {}}

    def record_stage(self, stage: str, parameters: dict, statuses: dict[str, dict] | None = None) -> dict:
        """Record a stage run: its parameters, versions and the status of every pid it touched.

        ``statuses`` maps pid -> {"status": "done"|"failed"|"skipped", "reason": str, ...}.
        """
        manifest = self.read_manifest()
        manifest["versions"] = package_versions()
        manifest["updated"] = _now()
        manifest["stages"][stage] = {"parameters": _jsonable(parameters), "finished": _now()}
        for pid, status in (statuses or {}).items():
            manifest["pids"].setdefault(pid, {})[stage] = {**_jsonable(status), "time": _now()}
        write_json(manifest, self.manifest_path)
        return manifest

    def pid_status(self, pid: str, stage: str) -> dict | None:
        return self.read_manifest()["pids"].get(pid, {}).get(stage)

    def failed_pids(self, stage: str) -> dict[str, str]:
        pids = self.read_manifest()["pids"]
        return {
            pid: s[stage].get("reason", "")
            for pid, s in pids.items()
            if stage in s and s[stage].get("status") == "failed"
        }

    # logging ----------------------------------------------------------------------------------
    def attach_log(self) -> logging.Handler:
        """Send the package's log records to the workspace log file (credentials are never logged)."""
        self.create()
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("ibl_ephys_data")
        root.setLevel(logging.INFO)
        if not any(getattr(h, "baseFilename", None) == handler.baseFilename for h in root.handlers):
            root.addHandler(handler)
        return handler


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_per_pid(stage: str, pids: list[str], work) -> tuple[dict[str, Any], dict[str, dict]]:
    """Run ``work(pid)`` for every pid with a progress bar; one failing insertion never stops the others.

    Returns the results of the insertions that ran and a status per pid (done, or failed with its reason).
    """
    from rich.progress import Progress

    logger = logging.getLogger(f"ibl_ephys_data.{stage}")
    results, statuses = {}, {}
    with Progress(transient=True) as progress:
        task = progress.add_task(stage, total=len(pids))
        for pid in pids:
            try:
                results[pid] = work(pid)
                statuses[pid] = {"status": "done"}
            except Exception as ex:  # one broken insertion never stops the others
                logger.debug("traceback", exc_info=True)
                logger.error("%s failed for %s: %s", stage, pid, ex)
                statuses[pid] = {"status": "failed", "reason": f"{type(ex).__name__}: {ex}"}
            progress.advance(task)
    return results, statuses
