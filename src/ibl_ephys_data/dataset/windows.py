"""The windows index: one row per (pid, channel, start sample), pointing into lfp.zarr (no signal copy).

Why an index and not arrays: the signal already sits in lfp.zarr; copying it per region (what the LFP2Vec
scripts pickle) multiplies storage and freezes one window length. A row says where to read
(``row_start:row_stop`` channels of ``lfp.zarr/<pid>/lfp``, samples ``start:start + n_samples``) and carries
everything needed to select and label it. Windows never straddle two recorded segments of the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ibl_ephys_data.errors import DataIntegrityError, InputError, command_hint
from ibl_ephys_data.lfp.artifacts import KINDS as ARTIFACT_KINDS
from ibl_ephys_data.lfp.artifacts import flag_windows
from ibl_ephys_data.workspace.lfp_store import LfpStore

logger = logging.getLogger(__name__)

WINDOW_SCHEMA = pa.schema([
    ("pid", pa.string()), ("eid", pa.string()), ("subject", pa.string()), ("lab", pa.string()),
    ("raw_ind", pa.int32()), ("row", pa.int32()), ("row_start", pa.int32()), ("row_stop", pa.int32()),
    ("start", pa.int64()), ("n_samples", pa.int32()), ("stride", pa.int32()), ("fs", pa.float64()),
    ("segment", pa.int32()), ("t_session_s", pa.float64()),
    ("allen_id", pa.int64()), ("allen_acronym", pa.string()),
    ("beryl_id", pa.int64()), ("beryl_acronym", pa.string()),
    ("cosmos_id", pa.int64()), ("cosmos_acronym", pa.string()),
    ("target", pa.string()), ("label", pa.string()),
    ("x", pa.float64()), ("y", pa.float64()), ("z", pa.float64()),
    ("ccf_ap_um", pa.float64()), ("ccf_dv_um", pa.float64()), ("ccf_ml_um", pa.float64()),
    ("axial_um", pa.float64()), ("lateral_um", pa.float64()),
    ("qc_verdict", pa.string()), ("split", pa.string()), ("fold", pa.int32()),
    # per-window artifact flags (lfp.artifacts intervals of the lfp store): one boolean per kind + the list
    *[(f"flag_{kind}", pa.bool_()) for kind in ARTIFACT_KINDS], ("artifact_flags", pa.list_(pa.string())),
])
FLAG_COLUMNS = tuple(f"flag_{kind}" for kind in ARTIFACT_KINDS)
WINDOW_COLUMNS = tuple(WINDOW_SCHEMA.names)
_CHANNEL_COLUMNS = (
    "raw_ind", "allen_id", "allen_acronym", "beryl_id", "beryl_acronym", "cosmos_id", "cosmos_acronym",
    "target", "label", "x", "y", "z", "ccf_ap_um", "ccf_dv_um", "ccf_ml_um", "axial_um", "lateral_um",
)


@dataclass
class LfpLayout:
    """What the windows index needs from ``lfp.zarr/<pid>``: rate, channel order, recorded segments."""

    pid: str
    fs: float
    raw_ind: list[int]
    n_samples: int
    segments: list[dict] = field(default_factory=list)
    artifacts: list[dict] | None = None  # lfp.artifacts intervals; None: store written before per-window QC

    @property
    def n_channels(self) -> int:
        return len(self.raw_ind)


def read_layout(lfp_root: Path, pid: str) -> tuple[LfpLayout | None, str]:
    """The layout of one pid's LFP store, or (None, why) when it is missing or not complete."""
    store = LfpStore(lfp_root)
    path = store.path(pid)
    if store.kind(pid) is None:
        return None, "no lfp store"
    attrs = store.attrs(pid)
    if attrs.get("complete") is not True:
        return None, "lfp store incomplete"
    if "fs" not in attrs or "raw_ind" not in attrs:
        raise DataIntegrityError(f"{path} lacks attrs fs/raw_ind: re-run `{command_hint('lfp', pids=[pid])}`")
    insertion = store.open(pid)
    raw_ind = insertion.raw_ind
    shape = insertion.shape
    if len(shape) != 2 or shape[0] != len(raw_ind):
        raise DataIntegrityError(
            f"{path}/lfp has shape {shape} but {len(raw_ind)} raw_ind: re-run `{command_hint('lfp', pids=[pid])}`"
        )
    n_samples = int(shape[1])
    segments = attrs.get("windows") or [{"offset": 0, "n_samples": n_samples}]
    for seg in segments:
        if int(seg["offset"]) < 0 or int(seg["offset"]) + int(seg["n_samples"]) > n_samples:
            raise DataIntegrityError(f"{path} attrs windows {seg} exceed the {n_samples} samples of lfp: "
                                     f"re-run `{command_hint('lfp', pids=[pid])}`")
    artifacts = attrs.get("artifacts")
    return LfpLayout(pid, float(attrs["fs"]), raw_ind, n_samples, list(segments),
                     None if artifacts is None else list(artifacts)), ""


def window_starts(layout: LfpLayout, n_samples: int, stride: int) -> pd.DataFrame:
    """Start samples of every full window inside each recorded segment (segment, start, t_session_s)."""
    rows = []
    for i, seg in enumerate(layout.segments):
        offset, length = int(seg["offset"]), int(seg["n_samples"])
        starts = offset + np.arange(0, length - n_samples + 1, stride, dtype=np.int64)
        t0 = seg.get("session_start_s", seg.get("start_s", np.nan))
        t0 = np.nan if t0 is None else float(t0)
        t = t0 + (starts - offset) / layout.fs
        rows.append(pd.DataFrame({"segment": i, "start": starts, "t_session_s": t}))
    if not rows:
        return pd.DataFrame({"segment": [], "start": [], "t_session_s": []})
    return pd.concat(rows, ignore_index=True)


def samples_for(seconds: float, fs: float, what: str) -> int:
    """Seconds to whole samples at ``fs``; a window shorter than a sample is a user error, not empty."""
    n = int(round(float(seconds) * fs))
    if n < 1:
        raise InputError(f"{what}={seconds} s is less than one sample at {fs} Hz: give a longer {what}")
    return n


def build_windows(
    channels: pd.DataFrame,
    layout: LfpLayout,
    window_seconds: float = 3.0,
    stride_seconds: float | None = None,
    neighbours: int = 0,
    insertion: dict | None = None,
) -> pd.DataFrame:
    """Windows of one insertion's labelled channels (all of them must be in the store).

    ``channels`` are the kept rows of `label_channels` for this pid. ``insertion`` adds constant columns
    (eid, subject, lab, qc_verdict, split, fold). With ``neighbours=N`` a window spans 2N+1 adjacent rows
    of the store (ordered by raw index); at the probe ends the range is shifted to stay inside the array,
    so every window of a dataset has the same shape; ``row`` is the labelled channel.
    """
    if neighbours < 0:
        raise InputError(f"neighbours={neighbours} is negative: give 0 (single channel) or more")
    width = 2 * neighbours + 1
    if width > layout.n_channels:
        raise InputError(
            f"neighbours={neighbours} needs {width} channels but pid {layout.pid} stores {layout.n_channels}"
        )
    n = samples_for(window_seconds, layout.fs, "window_seconds")
    stride = samples_for(stride_seconds, layout.fs, "stride_seconds") if stride_seconds else n
    row_of = {raw: i for i, raw in enumerate(layout.raw_ind)}
    rows = channels["raw_ind"].map(row_of)
    if rows.isna().any():
        absent = sorted(channels.loc[rows.isna(), "raw_ind"].astype(int))
        raise InputError(f"channels {absent} are not in the lfp store of pid {layout.pid}: drop them first")
    chans = channels.copy()
    chans["row"] = rows.astype(np.int64)
    chans = chans.sort_values("row").reset_index(drop=True)
    chans["row_start"] = np.clip(chans["row"] - neighbours, 0, layout.n_channels - width)
    chans["row_stop"] = chans["row_start"] + width
    starts = window_starts(layout, n, stride)
    if starts.empty:
        logger.warning("pid %s: no segment holds a %s s window", layout.pid, window_seconds)
    ci = np.repeat(np.arange(len(chans)), len(starts))
    si = np.tile(np.arange(len(starts)), len(chans))
    cols = [c for c in (*_CHANNEL_COLUMNS, "row", "row_start", "row_stop") if c in chans.columns]
    out = chans[cols].iloc[ci].reset_index(drop=True)
    out = pd.concat([out, starts.iloc[si].reset_index(drop=True)], axis=1)
    out["pid"] = layout.pid
    out["n_samples"], out["stride"], out["fs"] = n, stride, layout.fs
    for key, value in (insertion or {}).items():
        out[key] = value
    out = pd.concat([out, window_flags(layout, out["start"].to_numpy(), n, out["row_start"].to_numpy(),
                                       out["row_stop"].to_numpy())], axis=1)
    for col in WINDOW_COLUMNS:
        if col not in out.columns:
            out[col] = None
    return out[list(WINDOW_COLUMNS)]


def window_flags(layout: LfpLayout, start: np.ndarray, n_samples: int, row_start: np.ndarray,
                 row_stop: np.ndarray) -> pd.DataFrame:
    """``flag_<kind>`` booleans and the ``artifact_flags`` list of each window, from the store's intervals.

    A store written before per-window QC has no intervals: its windows get null flags (unknown), never
    False (clean), so they are not mistaken for checked data.
    """
    if layout.artifacts is None:
        logger.warning("pid %s: lfp store has no artifact intervals (written before per-window QC): flags are "
                       "null; run `%s` to compute them", layout.pid, command_hint("lfp", pids=[layout.pid]))
        flags = pd.DataFrame({c: pd.Series([None] * len(start), dtype="boolean") for c in FLAG_COLUMNS})
        return flags.assign(artifact_flags=[None] * len(start))
    hits = flag_windows(layout.artifacts, start, n_samples, row_start, row_stop)
    names = np.array(ARTIFACT_KINDS, dtype=object)
    reasons = [list(names[row]) for row in hits[list(ARTIFACT_KINDS)].to_numpy()]
    return hits.rename(columns=dict(zip(ARTIFACT_KINDS, FLAG_COLUMNS, strict=True))).assign(artifact_flags=reasons)


def to_table(windows: pd.DataFrame) -> pa.Table:
    """Arrow table with the fixed schema, so per-pid pieces stream into one parquet file."""
    return pa.Table.from_pandas(windows, schema=WINDOW_SCHEMA, preserve_index=False)
