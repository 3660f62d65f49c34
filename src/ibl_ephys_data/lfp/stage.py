"""Stage 3 — raw LF -> destriped, decimated LFP in ``lfp.zarr/<pid>/`` for every catalog insertion.

Per insertion: open a reader (HTTP range streaming, or local files), detect bad channels once, pick the
windows, destripe them chunk by chunk into zarr. A finished insertion whose parameters did not change is
skipped before anything is downloaded; a failing one is recorded in the manifest and the others go on.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from one.api import One

from ibl_ephys_data.ibl import Connection, save_one_cache
from ibl_ephys_data.lfp.artifacts import default_thresholds
from ibl_ephys_data.lfp.bad_channels import COLUMNS as BAD_CHANNEL_COLUMNS
from ibl_ephys_data.lfp.bad_channels import batch_starts, detect_channel_labels
from ibl_ephys_data.lfp.destripe import default_pad_seconds
from ibl_ephys_data.lfp.store import process_insertion
from ibl_ephys_data.lfp.stream import ChunkCachedStreamer, open_lf_reader
from ibl_ephys_data.lfp.windows import explicit_windows, probe_to_session_fn, snippet_windows
from ibl_ephys_data.scale import open_with_retries, run_on_dask
from ibl_ephys_data.workspace import Workspace, run_per_pid, write_parquet

AP_FS_PER_LF_FS = 12  # IBL's timestamps files count samples of the 30 kHz AP clock


@dataclass(frozen=True)
class LfpOptions:
    """What decides an insertion's output: equal options => a finished insertion is reused."""

    windows: tuple[tuple[float, float], ...] = ()  # explicit (start_s, seconds); empty => snippets
    n_snippets: int = 4
    snippet_seconds: float = 60.0
    fs_out: float = 1250.0
    dtype: str = "float32"
    n_batches: int = 10
    batch_seconds: float = 4.0
    full_download: bool = field(default=False, compare=False)

    def spec(self) -> dict:
        spec = asdict(self)
        spec.pop("full_download")
        spec["windows"] = [list(w) for w in self.windows]
        return spec


def parse_window(text: str) -> tuple[float, float]:
    """``START:SECONDS`` -> (start_s, seconds), with the option named in the error."""
    try:
        start, seconds = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--window {text!r}: expected START:SECONDS, e.g. 120:300") from None
    if seconds <= 0 or start < 0:
        raise ValueError(f"--window {text!r}: START must be >= 0 and SECONDS > 0")
    return start, seconds


def is_done(zarr_root: Path, pid: str, options: LfpOptions) -> bool:
    """Finished with the same options? Decided from the group's attrs alone (no network)."""
    path = Path(zarr_root) / pid
    if not (path / ".zattrs").exists():
        return False
    attrs = zarr.open_group(str(path), mode="r").attrs
    params = attrs.get("params", {})
    return (attrs.get("complete") is True and params.get("spec") == options.spec()
            and params.get("artifact_thresholds") == default_thresholds().fingerprint)  # per-window QC


def _time_fn(one: One, eid: str, probe: str, fs: float):
    names = one.list_datasets(eid, collection=f"raw_ephys_data/{probe}", filename="_spikeglx_*.timestamps.npy")
    if not len(names):
        return None
    timestamps = one.load_dataset(eid, names[0])
    return probe_to_session_fn(timestamps, fs=fs * AP_FS_PER_LF_FS)


def process_pid(one: One, zarr_root: Path, pid: str, options: LfpOptions) -> pd.DataFrame:
    """Bad channels + destriped windows of one insertion; returns its bad-channel table."""
    eid, probe = one.pid2eid(pid)
    reader = open_lf_reader(one, pid, full_download=options.full_download, eid=eid, probe=probe)
    duration = reader.ns / reader.fs
    time_fn = _time_fn(one, eid, probe, reader.fs)
    if options.windows:
        windows = explicit_windows(options.windows, duration, time_fn=time_fn)
    else:
        windows = snippet_windows(duration, options.n_snippets, options.snippet_seconds, time_fn=time_fn)
    if isinstance(reader, ChunkCachedStreamer):  # batch chunks that a window reads again stay in memory
        pad = default_pad_seconds()
        batches = set().union(*(reader.chunk_ids(s, s + options.batch_seconds)
                                for s in batch_starts(duration, options.n_batches, options.batch_seconds)))
        needed = set().union(*(reader.chunk_ids(w.start_s - pad, w.stop_s + pad) for w in windows))
        reader.pin(batches & needed)
    labels = detect_channel_labels(reader, n_batches=options.n_batches, batch_seconds=options.batch_seconds)
    process_insertion(reader, zarr_root, pid, windows, labels, fs_out=options.fs_out, dtype=options.dtype,
                      time_fn=time_fn, extra_params={"spec": options.spec()})
    return labels


def process_pid_on_worker(connection: Connection, zarr_root: Path, options: LfpOptions, pid: str) -> pd.DataFrame:
    """A Dask task: its own ONE session on the worker, then :func:`process_pid`."""
    one = open_with_retries(connection)
    try:
        return process_pid(one, zarr_root, pid, options)
    finally:
        save_one_cache(one)


def run_lfp(workspace: Workspace, one: One, options: LfpOptions | None = None,
            pids: list[str] | None = None, scheduler: str | None = None,
            connection: Connection | None = None) -> dict[str, dict]:
    """Process the catalog's insertions (or ``pids``); returns per-pid statuses (also in the manifest).

    With ``scheduler`` (``local`` or a Dask scheduler address) insertions run in parallel on Dask workers,
    each opening ``connection`` itself; otherwise one after the other in this process with ``one``.
    """
    options = options or LfpOptions()
    catalog = workspace.read_catalog()
    wanted = list(catalog["pid"]) if not pids else [p for p in pids if p in set(catalog["pid"])]
    missing = sorted(set(pids or []) - set(catalog["pid"]))
    statuses: dict[str, dict] = {p: {"status": "failed", "reason": "pid not in catalog.parquet"} for p in missing}
    zarr_root = workspace.lfp
    zarr_root.mkdir(parents=True, exist_ok=True)
    todo = [pid for pid in wanted if not is_done(zarr_root, pid, options)]
    statuses.update({pid: {"status": "skipped", "reason": "already done with the same options"}
                     for pid in wanted if pid not in todo})
    if scheduler:
        if connection is None:
            raise ValueError("running on Dask needs the connection (alyx url, cache) for the workers to open")
        task = functools.partial(process_pid_on_worker, connection, zarr_root, options)
        results, done = run_on_dask("lfp", todo, task, scheduler)
    else:
        results, done = run_per_pid("lfp", todo, lambda pid: process_pid(one, zarr_root, pid, options))
    statuses.update(done)
    new_labels = [labels.assign(pid=pid) for pid, labels in results.items()]
    if new_labels:
        update_channel_labels(workspace, pd.concat(new_labels, ignore_index=True))
    workspace.record_stage("lfp", options.spec(), statuses)
    return statuses


def update_channel_labels(workspace: Workspace, labels: pd.DataFrame) -> None:
    """Write the bad-channel labels and features into channels.parquet (other insertions untouched)."""
    channels = workspace.read_channels().set_index(["pid", "raw_ind"])
    columns = [c for c in BAD_CHANNEL_COLUMNS if c != "raw_ind"]
    for col in columns:
        if col not in channels:
            channels[col] = np.nan
        channels[col] = channels[col].astype("float64")
    channels.update(labels.set_index(["pid", "raw_ind"])[columns].astype("float64"))
    channels["bad_channel_label"] = channels["bad_channel_label"].round().astype("Int8")
    write_parquet(channels.reset_index(), workspace.channels)
