"""Stage 3 — raw LF -> destriped, decimated LFP in ``lfp.zarr/<pid>/`` for every catalog insertion.

Per insertion: open a reader (HTTP range streaming, or local files), detect bad channels once, pick the
windows, destripe them chunk by chunk into zarr. A finished insertion whose parameters did not change is
skipped before anything is downloaded; a failing one is recorded in the manifest and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from one.api import One

from ibl_ephys_data.errors import InputError
from ibl_ephys_data.lfp.artifacts import default_thresholds
from ibl_ephys_data.lfp.bad_channels import batch_starts, detect_channel_labels
from ibl_ephys_data.lfp.destripe import default_pad_seconds
from ibl_ephys_data.lfp.store import process_insertion
from ibl_ephys_data.lfp.stream import ChunkCachedStreamer, open_lf_reader
from ibl_ephys_data.lfp.windows import explicit_windows, probe_to_session_fn, snippet_windows
from ibl_ephys_data.net import verified_datasets
from ibl_ephys_data.pipeline import InsertionStage, StageResult, run_stage
from ibl_ephys_data.workspace import Workspace, fingerprint
from ibl_ephys_data.workspace.lfp_store import LfpStore
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_COLUMNS

logger = logging.getLogger(__name__)
STAGE = "lfp"

AP_FS_PER_LF_FS = 12  # IBL's timestamps files count samples of the 30 kHz AP clock


@dataclass(frozen=True)
class LfpOptions:
    """What decides an insertion's output: equal options => a finished insertion is reused."""

    windows: tuple[tuple[float, float], ...] = ()  # explicit (start_s, seconds); empty => snippets
    n_snippets: int = 4
    snippet_seconds: float = 60.0
    fs_out: float = 1250.0
    dtype: str = "int16"  # storage encoding, see workspace/lfp_store.py
    n_batches: int = 10
    batch_seconds: float = 4.0
    full_download: bool = field(default=False, compare=False)

    def spec(self) -> dict:
        """The fingerprinted options, with the per-window QC thresholds' fingerprint (changed -> recompute)."""
        spec = asdict(self)
        spec.pop("full_download")
        spec["windows"] = [list(w) for w in self.windows]
        spec["artifact_thresholds"] = default_thresholds().fingerprint
        return spec


def parse_window(text: str) -> tuple[float, float]:
    """``START:SECONDS`` -> (start_s, seconds), with the option named in the error."""
    try:
        start, seconds = (float(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--window {text!r}: expected START:SECONDS, e.g. 120:300") from None
    if seconds <= 0 or start < 0:
        raise InputError(f"--window {text!r}: START must be >= 0 and SECONDS > 0")
    return start, seconds


def is_done(zarr_root: Path, pid: str, options: LfpOptions) -> bool:
    """Finished with the same options and intact (`LfpStore.is_done`)? Decided locally (no network)."""
    return LfpStore(zarr_root).is_done(pid, options.spec())


def _time_fn(one: One, eid: str, probe: str, fs: float):
    files = verified_datasets(one, eid, "_spikeglx_*.timestamps.npy", collection=f"raw_ephys_data/{probe}")
    if not files:
        return None
    timestamps = np.load(files[0])
    return probe_to_session_fn(timestamps, fs=fs * AP_FS_PER_LF_FS)


def process_pid(one: One, zarr_root: Path, pid: str, options: LfpOptions,
                label_part: Callable[[pd.DataFrame], object] | None = None) -> pd.DataFrame:
    """Bad channels + destriped windows of one insertion; returns its bad-channel table.

    ``label_part`` receives the labels as soon as they are known, before the group is written.
    """
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
    if label_part is not None:
        label_part(labels)
    process_insertion(reader, zarr_root, pid, windows, labels, fs_out=options.fs_out, dtype=options.dtype,
                      time_fn=time_fn, extra_params={"spec": options.spec()})
    return labels


def process_lfp(one: One, workspace: Workspace, pid: str, options: LfpOptions) -> None:
    """One insertion: bad-channel labels -> ``parts/lfp/<pid>.parquet``, then its ``lfp.zarr/<pid>`` group.

    The labels part is written first and the group's atomic rename commits the insertion: a kill between the
    two leaves the insertion not done, so it is recomputed whole on the next run.
    """
    labels = process_pid(one, workspace.lfp, pid, options, label_part=lambda df: workspace.write_part(
        STAGE, pid, df.assign(pid=pid)[["pid", *BAD_CHANNEL_COLUMNS]], fingerprint(options.spec())))
    logger.debug("%s: %d channels labelled", pid, len(labels))


def lfp_done(workspace: Workspace, pid: str, options: LfpOptions) -> bool:
    """Done = the group is complete with these options, its chunks are all there, and its labels part exists."""
    return workspace.has_part(STAGE, pid, fingerprint(options.spec())) and is_done(workspace.lfp, pid, options)


def assemble_lfp(workspace: Workspace, options: LfpOptions, force: bool = False) -> None:
    """The labels of every finished insertion reach ``channels.parquet`` (not only this run's)."""
    from ibl_ephys_data.channels import assemble_channels

    assemble_channels(workspace, force=force)


LFP = InsertionStage(STAGE, process_lfp, lfp_done, assemble_lfp)


def run_lfp(workspace: Workspace, one: One | None = None, options: LfpOptions | None = None,
            pids: list[str] | None = None, **execution) -> StageResult:
    """Stream, label and destripe the catalog's insertions (or ``pids``) into ``lfp.zarr``.

    ``execution``: ``connection``, ``scheduler``, ``retry_failed``, ``force``, ``progress`` of
    :func:`ibl_ephys_data.pipeline.run_stage`.
    """
    workspace.lfp.mkdir(parents=True, exist_ok=True)
    return run_stage(LFP, workspace, options or LfpOptions(), pids, one=one, **execution)
