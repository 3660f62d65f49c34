"""One insertion's destriped LFP as a zarr v2 group ``lfp.zarr/<pid>/`` (see docs/workspace.md).

Why: later stages (QC, dataset windows, a PyTorch loader) read short windows of single channels at random;
the group must never be read half-written, and re-running the stage must skip finished insertions unless
a parameter changed.

Layout: ``lfp`` (n_channels, n_samples) µV float32|float16, ``common_mode`` (n_samples,) µV float32,
attrs ``fs``, ``units``, ``raw_ind``, ``windows``, ``params``, ``processing``, ``bad_channel_label``,
``versions``, ``artifacts`` (intervals of ``lfp.artifacts``, stored samples) and, written last,
``complete``. The group is built under a hidden temporary name and renamed into place
(``workspace.atomic_path``), so a killed run leaves no ``<pid>`` group at all.

Chunking: ``lfp`` is stored uncompressed in chunks of one channel x 16384 samples (13 s at 1250 Hz,
64 KiB in float32). A 3-s single-channel window then touches one chunk file (two at most) and decoding is
a plain memory copy, which keeps a random-access loader close to a memmap; compression would save
little on destriped LFP (~10-20 % with lossless codecs) and cost a decode per window.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import zarr

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
from ibl_ephys_data.workspace import atomic_path, package_versions

_logger = logging.getLogger(__name__)

CHUNK_SAMPLES = 16384
DTYPES = ("float32", "float16")


def lfp_params(
    windows: Sequence[Window],
    fs_out: float = 1250.0,
    dtype: str = "float32",
    chunk_seconds: float = 30.0,
    pad_seconds: float | None = None,
    **extra,
) -> dict:
    """The parameters an insertion's group is computed with: equal params => the group can be reused.

    ``extra`` (JSON-able, e.g. the bad-channel detection settings) is stored and compared as well; the
    per-window QC thresholds' fingerprint (``artifact_thresholds``) defaults to the default rules file's.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {', '.join(DTYPES)}")
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


def is_complete(zarr_root: str | Path, pid: str, params: dict) -> bool:
    """True if ``<zarr_root>/<pid>`` was fully written with exactly these ``params`` (skip it)."""
    path = Path(zarr_root) / pid
    if not (path / ".zattrs").exists():
        return False
    attrs = json.loads((path / ".zattrs").read_text())
    return attrs.get("complete") is True and attrs.get("params") == _jsonable(params)


def open_lfp(zarr_root: str | Path, pid: str) -> zarr.Group:
    """Open a finished insertion group read-only (``FileNotFoundError`` if absent or incomplete)."""
    path = Path(zarr_root) / pid
    if not (path / ".zattrs").exists() or not zarr.open_group(str(path), mode="r").attrs.get("complete"):
        raise FileNotFoundError(f"{path} is missing or incomplete: run `ibl-ephys-data lfp --pids {pid}`")
    return zarr.open_group(str(path), mode="r")


def process_insertion(
    reader,
    zarr_root: str | Path,
    pid: str,
    windows: Sequence[Window],
    channel_labels,
    fs_out: float = 1250.0,
    dtype: str = "float32",
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
    root = Path(zarr_root)
    zarr.open_group(str(root), mode="a")
    _remove_stale(root, pid)
    with atomic_path(root / pid) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        lfp = group.create_dataset("lfp", shape=(nc, n_total), chunks=(1, CHUNK_SAMPLES), dtype=dtype,
                                   compressor=None, fill_value=0.0)
        common = group.create_dataset("common_mode", shape=(n_total,), chunks=(CHUNK_SAMPLES,),
                                      dtype="float32", compressor=None, fill_value=0.0)
        writer = _AlignedWriter(lfp, common)
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
            _logger.info("%s: window %.1f-%.1f s done (%d samples)", pid, s0 / fs, s1 / fs, n_out)
        writer.flush()
        group.attrs.update({
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
        group.attrs["complete"] = True
    _logger.info("%s: wrote %s (%d channels x %d samples)", pid, root / pid, nc, n_total)
    return root / pid


class _AlignedWriter:
    """Writes whole zarr chunks only (no read-modify-write of partial chunks); holds < 1 chunk back."""

    def __init__(self, lfp: zarr.Array, common: zarr.Array):
        self.lfp, self.common = lfp, common
        self.position = 0  # samples received
        self.rest = np.empty((lfp.shape[0], 0), dtype=lfp.dtype)
        self.rest_cm = np.empty(0, dtype=np.float32)

    def write(self, chunk: np.ndarray, cm: np.ndarray) -> None:
        start = self.position - self.rest_cm.size
        self.position += cm.size
        stop = (self.position // CHUNK_SAMPLES) * CHUNK_SAMPLES
        data = np.concatenate([self.rest, chunk.astype(self.lfp.dtype, copy=False)], axis=1)
        cm = np.concatenate([self.rest_cm, cm])
        if stop > start:
            self.lfp[:, start:stop] = data[:, :stop - start]
            self.common[start:stop] = cm[:stop - start]
        else:
            stop = start
        self.rest, self.rest_cm = data[:, stop - start:].copy(), cm[stop - start:].copy()

    def flush(self) -> None:
        start = self.position - self.rest_cm.size
        if self.rest_cm.size:
            self.lfp[:, start:self.position] = self.rest
            self.common[start:self.position] = self.rest_cm


def _window_record(start_s: float, stop_s: float, window: Window, time_fn, offset: int, n_samples: int
                   ) -> dict:
    if time_fn is not None:
        session = np.asarray(time_fn(np.array([start_s, stop_s])), dtype=np.float64)
        s_start, s_stop = float(session[0]), float(session[1])
    else:
        s_start, s_stop = window.session_start_s, window.session_stop_s
    return {"start_s": start_s, "stop_s": stop_s, "session_start_s": s_start, "session_stop_s": s_stop,
            "offset": int(offset), "n_samples": int(n_samples)}


def _remove_stale(root: Path, pid: str) -> None:
    """Temporaries of a killed run for this pid (never read: hidden names), removed before rewriting."""
    for stale in root.glob(f".{pid}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))
