"""IBL's LFP destriping in bounded memory: ``destripe_lfp`` applied chunk by chunk, then decimated.

Why: ``ibldsp.voltage.destripe_lfp`` works on one in-memory float64 block, so destriping 300 s of 384
channels needs gigabytes and runs on one core. Here the same operations, in the same order, run on
overlapping chunks of the window on several threads, in float32 after the filter:

1. Butterworth N=3 band-pass 0.5-300 Hz, zero-phase (``scipy.signal.sosfiltfilt``, float64);
2. ADC phase shift by the probe's ``sample_shift``: the frequency-domain shift of
   ``ibldsp.fourier.fshift``, in float32 with one phase ramp per distinct shift (13 on NP1). NP1 only:
   for NP2 the LF band is derived from 30-kHz samples and the shift is below 1/12 of an LF sample,
   which ``destripe_lfp`` also neglects (it zeroes the shifts for ``neuropixel_version >= 2``);
3. interpolation of dead (1) and noisy (2) channels (``ibldsp.voltage.interpolate_bad_channels``);
4. median common-average reference over the channels inside the brain (label != 3); the removed median
   is kept as the common-mode trace;
5. anti-aliased decimation to ``fs_out`` (:func:`decimate`).

Chunk edges: each chunk is filtered with ``pad_seconds`` of real data on both sides (default 3 / 0.5 Hz
= 6 s, IBL's own warm-up for chunked LFP filters; the band-pass response to a chunk edge has then
decayed to ~2e-4 of the signal RMS, 1e-5 with 8 s), then cropped. Chunks touching a window edge use
no data beyond it, exactly as ``destripe_lfp`` on the whole window does, so the result equals
``decimate(destripe_lfp(window))`` away from the window edges.
Memory is bounded by the chunk size (``chunk_seconds + 2 * pad_seconds``), not by the window length.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import neuropixel
import numpy as np
import pandas as pd
import scipy.fft
import scipy.signal
from ibldsp.voltage import interpolate_bad_channels

_logger = logging.getLogger(__name__)

BAND_HZ = (0.5, 300.0)
BUTTER_ORDER = 3
CHANNEL_BLOCK = 16  # channels per filter task: small float64 temporaries, enough tasks for the threads
READ_BLOCK_SECONDS = 2.0
_TIME_SLICE = 8192  # samples per median/CAR task


@dataclass(frozen=True)
class DestripeParams:
    """How the output was computed, as stored with the data (``attrs["processing"]``) for provenance."""

    fs_in: float
    fs_out: float
    decimation: int
    band_hz: tuple[float, float] = BAND_HZ
    butter_order: int = BUTTER_ORDER
    adc_shift: bool = True
    interpolated_labels: tuple[int, ...] = (1, 2)
    car: str = "median over channels with label != 3"
    decimation_filter: str = "scipy.signal.resample_poly(x, 1, q): Kaiser(5.0) FIR, 20q+1 taps, zero-phase"
    chunk_seconds: float = 30.0
    pad_seconds: float = 6.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["band_hz"], d["interpolated_labels"] = list(self.band_hz), list(self.interpolated_labels)
        return d


def n_data_channels(reader) -> int:
    """Number of electrophysiology channels (the sync channels excluded)."""
    return int(reader.nc - reader.nsync)


def raw_channel_indices(reader) -> np.ndarray:
    """Raw (on-disk) index of each data channel, in the order ``reader[...]`` returns them."""
    n = n_data_channels(reader)
    order = getattr(reader, "raw_channel_order", None)
    return np.arange(n) if order is None else np.asarray(order[:n], dtype=np.int64)


def read_volts(reader, first: int, last: int) -> np.ndarray:
    """Samples ``[first, last)`` of the data channels as float32 volts (n_samples, n_channels).

    A truncated or corrupted file becomes a one-line ``ValueError`` naming the file.
    """
    name = getattr(reader, "file_bin", None) or getattr(reader, "pid", None) or type(reader).__name__
    try:
        data = reader[first:last, :n_data_channels(reader)]
    except (OSError, AssertionError, ValueError, EOFError, zlib.error) as e:  # mtscomp/HTTP failures
        raise ValueError(f"cannot read samples {first}-{last} of {name}: the .cbin/.ch pair is truncated or "
                         f"corrupted ({type(e).__name__}: {e}); download it again") from e
    data = np.asarray(data, dtype=np.float32)
    if data.shape != (last - first, n_data_channels(reader)):
        raise ValueError(f"reading samples {first}-{last} of {name} returned {data.shape[0]} samples: the "
                         "file is shorter than its .meta says (truncated); download it again")
    return data


def decimation_factor(fs: float, fs_out: float) -> int:
    """Integer factor q with fs / q within 1 % of ``fs_out`` (the output rate is exactly fs / q)."""
    if not (fs_out > 0 and fs_out <= fs):
        raise ValueError(f"fs_out={fs_out}: must be positive and at most the input rate {fs:g} Hz")
    q = max(1, int(round(fs / fs_out)))
    if abs(fs / q - fs_out) > 0.01 * fs_out:
        raise ValueError(f"fs_out={fs_out:g} Hz is not an integer fraction of the {fs:g}-Hz input: use "
                         f"fs / k, e.g. {fs / q:g} or {fs / (q + 1):g} Hz")
    return q


def decimate(x: np.ndarray, q: int, axis: int = -1) -> np.ndarray:
    """Anti-aliased, zero-phase decimation by ``q`` (``resample_poly``'s Kaiser FIR); identity for q=1.

    Applied to the destriped data; also what the equivalence test applies to ``destripe_lfp``'s output.
    """
    if q == 1:
        return x
    return scipy.signal.resample_poly(x, 1, q, axis=axis)


def sample_shifts(reader) -> np.ndarray:
    """Per-channel ADC sample shift (in samples) to undo, in the reader's channel order; zeros for NP2."""
    n = n_data_channels(reader)
    version = getattr(reader, "major_version", None)
    if _is_np2(version):
        _logger.info("NP2 probe: no ADC phase shift (< 1/12 of an LF sample, neglected as in destripe_lfp)")
        return np.zeros(n)
    return np.asarray(_geometry(reader)["sample_shift"][:n], dtype=np.float64)


def _is_np2(version) -> bool:
    if isinstance(version, str):
        return version.startswith("NP2")
    return version is not None and float(version) >= 2


def _geometry(reader) -> dict:
    geometry = getattr(reader, "geometry", None)
    if geometry is None:
        _logger.warning("reader has no geometry: assuming the NP1 layout of neuropixel.trace_header(1)")
        geometry = neuropixel.trace_header(version=1)
    return geometry


def labels_array(channel_labels, reader) -> np.ndarray:
    """Channel labels (0-3) in the reader's channel order, from an array or a bad-channel DataFrame."""
    n = n_data_channels(reader)
    if isinstance(channel_labels, pd.DataFrame):
        if "bad_channel_label" not in channel_labels:
            raise ValueError("channel_labels DataFrame has no 'bad_channel_label' column: pass the output of "
                             "detect_channel_labels")
        df = channel_labels
        if "raw_ind" in df:
            df = df.set_index("raw_ind").reindex(raw_channel_indices(reader))
        labels = df["bad_channel_label"].to_numpy()
    else:
        labels = np.asarray(channel_labels)
    if labels.shape != (n,) or pd.isna(labels).any() or not np.isin(labels, (0, 1, 2, 3)).all():
        raise ValueError(f"channel_labels must give a label 0-3 for each of the {n} channels "
                         f"(got shape {labels.shape}): run detect_channel_labels on this insertion first")
    return labels.astype(np.int8)


class _Destriper:
    """The per-chunk pipeline; state is read-only during a chunk so channel blocks can run on threads."""

    def __init__(self, reader, labels: np.ndarray, q: int, pool: ThreadPoolExecutor):
        self.fs, self.q, self.pool = float(reader.fs), q, pool
        geometry = _geometry(reader)
        n = n_data_channels(reader)
        if np.unique(np.asarray(geometry.get("shank", np.zeros(n)))[:n]).size > 1:
            raise ValueError("multi-shank probes are not supported: the common-mode trace is per shank "
                             "(IBL's brain-wide-map and repeated-site insertions are single-shank NP1)")
        self.x = np.asarray(geometry["x"][:n], dtype=np.float64)
        self.y = np.asarray(geometry["y"][:n], dtype=np.float64)
        self.shifts = sample_shifts(reader)
        self.labels = labels
        self.has_bad = bool(np.isin(labels, (1, 2)).any())
        inside = np.flatnonzero(labels != 3)
        contiguous = inside.size and inside[-1] - inside[0] + 1 == inside.size
        self.inside = slice(int(inside[0]), int(inside[-1]) + 1) if contiguous else inside
        self.n_inside = inside.size
        self.sos = scipy.signal.butter(BUTTER_ORDER, BAND_HZ, btype="bandpass", fs=self.fs, output="sos")
        self.blocks = [(i, min(i + CHANNEL_BLOCK, n)) for i in range(0, n, CHANNEL_BLOCK)]
        # NP1 has 13 distinct shifts: one phase ramp per distinct value, rebuilt when the length changes
        self.shift_values, self.shift_index = np.unique(self.shifts, return_inverse=True)
        self._phase_n, self._phase_table = -1, np.empty((0, 0), dtype=np.complex64)

    def run(self, seg: np.ndarray, seg0: int, crop: tuple[int, int], core: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
        """Destripe ``seg`` (raw volts (n, nc) starting at sample ``seg0``); return the ``core`` samples.

        Filter on the whole segment, then keep ``crop`` (a few samples beyond ``core`` so the phase shift
        and the decimation filter see real data), CAR, decimate and keep the ``core`` output samples.
        """
        c0, c1 = crop
        n = c1 - c0
        y = np.empty((seg.shape[1], n), dtype=np.float32)
        phases = self._phases(n)

        def filter_block(block: tuple[int, int]) -> None:
            i0, i1 = block
            f = scipy.signal.sosfiltfilt(self.sos, seg[:, i0:i1].T, axis=-1)
            f = f[:, c0 - seg0:c1 - seg0].astype(np.float32)
            if self.shifts[i0:i1].any():
                spectrum = scipy.fft.rfft(f, axis=1)
                for row, index in zip(spectrum, self.shift_index[i0:i1], strict=True):
                    row *= phases[index]
                f = scipy.fft.irfft(spectrum, n, axis=1)
            y[i0:i1] = f

        list(self.pool.map(filter_block, self.blocks))
        if self.has_bad:
            interpolate_bad_channels(y, self.labels, self.x, self.y)
        cm = np.zeros(n, dtype=np.float32)
        if self.n_inside:
            list(self.pool.map(lambda t0: self._car(y, cm, t0), range(0, n, _TIME_SLICE)))
        a, b = core
        first, count = (a - c0) // self.q, -(-(b - a) // self.q)
        out = np.empty((y.shape[0], count), dtype=np.float32)

        def decimate_block(block: tuple[int, int]) -> None:
            i0, i1 = block
            out[i0:i1] = decimate(y[i0:i1], self.q, axis=1)[:, first:first + count] * 1e6

        list(self.pool.map(decimate_block, self.blocks))
        common = (decimate(cm, self.q)[first:first + count] * 1e6).astype(np.float32)
        return out, common

    def _phases(self, n: int) -> np.ndarray:
        """``ibldsp.fourier.fshift``'s phase ramps exp(-2i pi k s / n), one row per distinct shift s."""
        if n != self._phase_n:
            k = np.arange(n // 2 + 1)
            ramps = np.exp(-2j * np.pi * k[None, :] / n * self.shift_values[:, None])
            self._phase_n, self._phase_table = n, ramps.astype(np.complex64)
        return self._phase_table

    def _car(self, y: np.ndarray, cm: np.ndarray, t0: int) -> None:
        """Median over inside-brain channels of samples [t0, t0 + slice): store it and subtract it."""
        rows = y[self.inside, t0:t0 + _TIME_SLICE]
        part = np.ascontiguousarray(rows.T)
        k = self.n_inside // 2
        if self.n_inside % 2:
            part.partition(k, axis=1)
            median = part[:, k]
        else:
            part.partition((k - 1, k), axis=1)
            median = (part[:, k - 1] + part[:, k]) / 2
        cm[t0:t0 + _TIME_SLICE] = median
        if isinstance(self.inside, slice):
            rows -= median
        else:
            y[self.inside, t0:t0 + _TIME_SLICE] = rows - median


class _Prefetcher:
    """Reads ``[first, last)`` in chunk-aligned blocks on one background thread (readers are not
    thread-safe; a Streamer downloads each mtscomp chunk once if reads start on chunk bounds)."""

    def __init__(self, reader, first: int, last: int, block: int):
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        bounds = _chunk_bounds(reader)
        edges = [first]
        while edges[-1] < last:
            target = edges[-1] + block
            if bounds is not None:
                k = np.searchsorted(bounds, target)
                target = int(bounds[k]) if k < len(bounds) else target
            edges.append(min(target, last))
        self.edges = edges
        self.thread = threading.Thread(target=self._run, args=(reader,), daemon=True)
        self.thread.start()

    def _run(self, reader) -> None:
        try:
            for a, b in zip(self.edges[:-1], self.edges[1:], strict=True):
                if self.stop.is_set():
                    return
                self._put(read_volts(reader, a, b))
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> np.ndarray:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _chunk_bounds(reader) -> np.ndarray | None:
    chunks = getattr(reader, "chunks", None)  # brainbox Streamer
    if isinstance(chunks, dict) and "chunk_bounds" in chunks:
        return np.asarray(chunks["chunk_bounds"])
    raw = getattr(reader, "_raw", None)  # spikeglx.Reader over an mtscomp file
    bounds = getattr(raw, "chunk_bounds", None)
    return None if bounds is None else np.asarray(bounds)


def iter_destriped(
    reader,
    t0: float,
    t1: float,
    channel_labels,
    fs_out: float = 1250.0,
    chunk_seconds: float = 30.0,
    pad_seconds: float | None = None,
    n_threads: int = 2,
    on_raw: Callable[[np.ndarray], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Destriped, decimated LFP of probe-clock seconds ``[t0, t1)``, one chunk at a time.

    Yields ``(lfp_uv, common_mode_uv)``: float32 arrays (n_channels, n) and (n,) in µV at fs / q, in
    the reader's channel order; concatenated they cover ``ceil(n_in / q)`` output samples, the first at
    input sample ``round(t0 * fs)``. Peak memory is set by ``chunk_seconds`` and ``pad_seconds``.
    ``on_raw`` is handed each chunk's raw volts (n, n_channels), in order and without overlap, before
    the chunk is yielded (the per-window QC of ``lfp.artifacts`` reads the ADC-scale samples there).
    """
    fs = float(reader.fs)
    s0, s1, q, _ = window_samples(reader, t0, t1, fs_out)
    labels = labels_array(channel_labels, reader)
    pad = int(math.ceil((pad_seconds if pad_seconds is not None else default_pad_seconds()) * fs))
    core_len = max(q, int(round(chunk_seconds * fs / q)) * q)
    margin = min(pad, int(math.ceil(fs / q)) * q)  # ~1 s of real data for fshift and the decimation FIR
    capacity = core_len + 2 * pad + int(READ_BLOCK_SECONDS * fs) + int(2 * fs)
    buf = np.empty((min(capacity, s1 - s0), n_data_channels(reader)), dtype=np.float32)
    buf_start, buf_len = s0, 0
    prefetch = _Prefetcher(reader, s0, s1, int(READ_BLOCK_SECONDS * fs))
    try:
        with ThreadPoolExecutor(max(1, n_threads)) as pool:
            destriper = _Destriper(reader, labels, q, pool)
            for a in range(s0, s1, core_len):
                b = min(a + core_len, s1)
                lo, hi = max(s0, a - pad), min(s1, b + pad)
                keep = buf_start + buf_len - lo
                if lo > buf_start:  # drop what no later chunk needs
                    buf[:keep] = buf[lo - buf_start:buf_len]
                    buf_start, buf_len = lo, keep
                while buf_start + buf_len < hi:
                    block = prefetch.get()
                    if buf_len + len(block) > len(buf):
                        buf = _grow(buf, buf_len + len(block))
                    buf[buf_len:buf_len + len(block)] = block
                    buf_len += len(block)
                crop = (max(s0, a - margin), min(s1, b + margin))
                if on_raw is not None:
                    on_raw(buf[a - buf_start:b - buf_start])
                yield destriper.run(buf[:hi - buf_start], buf_start, crop, (a, b))
    finally:
        prefetch.close()


def window_samples(reader, t0: float, t1: float, fs_out: float = 1250.0) -> tuple[int, int, int, int]:
    """``(first, last, q, n_out)``: input samples of probe-clock ``[t0, t1)``, decimation, output length."""
    fs = float(reader.fs)
    q = decimation_factor(fs, fs_out)
    s0, s1 = int(round(t0 * fs)), min(int(round(t1 * fs)), int(reader.ns))
    if not 0 <= s0 < s1:
        raise ValueError(f"window {t0:g}-{t1:g} s is empty or outside the {reader.ns / fs:g}-s recording: "
                         "select windows with ibl_ephys_data.lfp.windows")
    return s0, s1, q, -(-(s1 - s0) // q)


def _grow(buf: np.ndarray, n: int) -> np.ndarray:
    bigger = np.empty((n, buf.shape[1]), dtype=buf.dtype)
    bigger[:len(buf)] = buf
    return bigger


def default_pad_seconds() -> float:
    """Filter padding: 3 / low corner (6 s at 0.5 Hz), as ``ibldsp.voltage._warmup_pad_out``."""
    return 3.0 / BAND_HZ[0]


def destripe_params(reader, fs_out: float = 1250.0, chunk_seconds: float = 30.0,
                    pad_seconds: float | None = None) -> DestripeParams:
    """The parameters :func:`iter_destriped` uses for this reader (for provenance and re-run checks)."""
    fs = float(reader.fs)
    return DestripeParams(
        fs_in=fs, fs_out=fs / decimation_factor(fs, fs_out), decimation=decimation_factor(fs, fs_out),
        adc_shift=not _is_np2(getattr(reader, "major_version", None)), chunk_seconds=float(chunk_seconds),
        pad_seconds=float(pad_seconds if pad_seconds is not None else default_pad_seconds()),
    )


def preprocess_window(
    reader,
    t0: float,
    t1: float,
    channel_labels,
    fs_out: float = 1250.0,
    dtype: np.dtype | str = np.float32,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Destriped LFP of one window, for notebooks: ``(lfp_uv (n_channels, n_samples), common_mode_uv)``.

    Does not touch any workspace. ``channel_labels``: the DataFrame of
    :func:`~ibl_ephys_data.lfp.bad_channels.detect_channel_labels` or an array of labels (0-3) in the
    reader's channel order. ``kwargs`` go to :func:`iter_destriped` (``chunk_seconds``, ``n_threads``...).
    """
    n_out = window_samples(reader, t0, t1, fs_out)[3]
    lfp = np.empty((n_data_channels(reader), n_out), dtype=dtype)
    common = np.empty(n_out, dtype=np.float32)
    offset = 0
    for chunk, cm in iter_destriped(reader, t0, t1, channel_labels, fs_out=fs_out, **kwargs):
        lfp[:, offset:offset + chunk.shape[1]] = chunk
        common[offset:offset + cm.size] = cm
        offset += cm.size
    return lfp, common
