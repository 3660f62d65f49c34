"""One insertion's destriped LFP, streamed into ``lfp.zarr/<pid>/`` through `LfpStore` (see docs/workspace.md).

Why: later stages (QC, dataset windows, a PyTorch loader) read short windows of single channels at random;
the group must never be read half-written, and re-running the stage must skip finished insertions unless
a parameter changed.

The layout, encoding (scaled int16 by default) and integrity checks live in
`ibl_ephys_data.workspace.lfp_store`; this module runs the destriping and feeds the writer whole shards, so
no shard is ever read back and memory stays below one shard whatever the window lengths. The group is built
under a hidden temporary name and renamed into place, so a killed run leaves no ``<pid>`` group at all.
Attrs also hold ``artifacts``: the per-window QC intervals of ``lfp.artifacts`` (stored samples).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ibl_ephys_data.errors import check_option
from ibl_ephys_data.lfp.artifacts import ArtifactScanner, ArtifactThresholds, default_thresholds
from ibl_ephys_data.lfp.destripe import (
    destripe_params,
    iter_destriped,
    labels_array,
    n_data_channels,
    raw_channel_indices,
    window_samples,
)
from ibl_ephys_data.lfp.windows import Window
from ibl_ephys_data.workspace import package_versions
from ibl_ephys_data.workspace.lfp_store import DTYPES, Encoding, InsertionWriter, LfpStore

logger = logging.getLogger(__name__)


def lfp_params(
    windows: Sequence[Window],
    fs_out: float = 1250.0,
    dtype: str = "int16",
    chunk_seconds: float = 30.0,
    pad_seconds: float | None = None,
    **extra,
) -> dict:
    """The parameters an insertion's group is computed with: equal params => the group can be reused.

    ``extra`` (JSON-able, e.g. the bad-channel detection settings) is stored and compared as well; the
    per-window QC thresholds' fingerprint (``artifact_thresholds``) defaults to the default rules file's.
    """
    check_option("dtype", dtype, DTYPES)
    params = {
        "windows": [[float(w.start_s), float(w.stop_s)] for w in windows],
        "fs_out": float(fs_out),
        "dtype": dtype,
        "chunk_seconds": float(chunk_seconds),
        "pad_seconds": pad_seconds,
        "artifact_thresholds": default_thresholds().fingerprint,
        **extra,
    }
    return _jsonable(params)


def process_insertion(
    reader,
    zarr_root: str | Path,
    pid: str,
    windows: Sequence[Window],
    channel_labels,
    fs_out: float = 1250.0,
    dtype: str = "int16",
    time_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk_seconds: float = 30.0,
    pad_seconds: float | None = None,
    n_threads: int = 2,
    extra_params: dict | None = None,
    artifact_thresholds: ArtifactThresholds | None = None,
) -> Path:
    """Destripe ``windows`` of one insertion into ``<zarr_root>/<pid>/`` atomically; return its path.

    ``reader``: a ``spikeglx.Reader``-like object; ``channel_labels``: the bad-channel DataFrame (or
    label array) in the reader's channel order; ``time_fn`` maps probe seconds to session seconds.
    Windows are concatenated along samples in the order given. Chunks are streamed to disk, so memory
    does not depend on the window lengths. Artifact intervals (``lfp.artifacts``, thresholds from the
    default rules file unless given) are found on the same samples and stored in attrs ``artifacts``.
    """
    if not windows:
        raise ValueError(f"{pid}: no window to process: select windows with ibl_ephys_data.lfp.windows")
    # -- per-window QC hook (lfp.artifacts): thresholds fingerprint in params, scanner fed every chunk --
    thresholds = artifact_thresholds or default_thresholds()
    extra_params = {**(extra_params or {}), "artifact_thresholds": thresholds.fingerprint}
    params = lfp_params(windows, fs_out, dtype, chunk_seconds, pad_seconds, **extra_params)
    labels = labels_array(channel_labels, reader)
    fs = float(reader.fs)
    spans = [window_samples(reader, w.start_s, w.stop_s, fs_out) for w in windows]
    q = spans[0][2]
    n_total = sum(s[3] for s in spans)
    nc = n_data_channels(reader)
    store = LfpStore(zarr_root)
    with store.create(pid, nc, n_total, Encoding.for_reader(reader, dtype)) as out:
        writer = _AlignedWriter(out)
        records = []
        offset = 0
        scanner = ArtifactScanner(labels, fs, q, np.asarray(reader.range_volts)[:nc], thresholds)
        for w, (s0, s1, _, n_out) in zip(windows, spans, strict=True):
            scanner.start_window(offset)
            for chunk, cm in iter_destriped(reader, w.start_s, w.stop_s, labels, fs_out=fs_out,
                                            chunk_seconds=chunk_seconds, pad_seconds=pad_seconds,
                                            n_threads=n_threads, on_raw=scanner.feed_raw):
                scanner.feed(chunk, cm)
                writer.write(chunk, cm)
            records.append(_window_record(s0 / fs, s1 / fs, w, time_fn, offset, n_out))
            offset += n_out
            logger.info("%s: window %.1f-%.1f s done (%d samples)", pid, s0 / fs, s1 / fs, n_out)
        writer.flush()
        out.finish({
            "pid": pid,
            "fs": fs / q,
            "units": "uV",
            "raw_ind": raw_channel_indices(reader).tolist(),
            "bad_channel_label": labels.astype(int).tolist(),
            "windows": records,
            "params": params,
            "processing": destripe_params(reader, fs_out, chunk_seconds, pad_seconds).to_dict(),
            "versions": package_versions(),
            "artifacts": scanner.finish(),
        })
    logger.info("%s: wrote %s (%d channels x %d samples)", pid, store.path(pid), nc, n_total)
    return store.path(pid)


class _AlignedWriter:
    """Hands the store whole shards only (no read-modify-write of a shard); holds < 1 shard back."""

    def __init__(self, out: InsertionWriter):
        self.out = out
        self.position = 0  # samples received
        self.rest: list[np.ndarray] = []

    def write(self, chunk: np.ndarray, cm: np.ndarray) -> None:
        self.out.write_common_mode(self.position, cm)
        self.position += cm.size
        self.rest.append(np.asarray(chunk, dtype=np.float32))
        start = self.position - sum(r.shape[1] for r in self.rest)
        stop = (self.position // self.out.shard) * self.out.shard
        if stop > start:
            data = np.concatenate(self.rest, axis=1)
            self.out.write_lfp(start, data[:, :stop - start])
            self.rest = [data[:, stop - start:].copy()]

    def flush(self) -> None:
        start = self.position - sum(r.shape[1] for r in self.rest)
        if self.position > start:
            self.out.write_lfp(start, np.concatenate(self.rest, axis=1))
        self.rest = []


def _window_record(start_s: float, stop_s: float, window: Window, time_fn, offset: int, n_samples: int
                   ) -> dict:
    if time_fn is not None:
        session = np.asarray(time_fn(np.array([start_s, stop_s])), dtype=np.float64)
        s_start, s_stop = float(session[0]), float(session[1])
    else:
        s_start, s_stop = window.session_start_s, window.session_stop_s
    return {"start_s": start_s, "stop_s": stop_s, "session_start_s": s_start, "session_stop_s": s_stop,
            "offset": int(offset), "n_samples": int(n_samples)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))
