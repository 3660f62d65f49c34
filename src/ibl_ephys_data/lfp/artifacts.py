"""Artifact intervals of the stored LFP, found while the lfp stage has the samples in memory.

Why: signal QC reads a few snippets of a recording (``qc.metrics.snippet_windows``) and the dataset exports
other seconds, so a saturation, dropout, step, probe-wide burst or line-noise episode inside an exported
window reaches training whenever it misses QC's snippets. The lfp stage is the one place that holds every
stored sample (raw and destriped) anyway, so it scans them there, at no extra download, and stores
*intervals* (kind, stored samples, channel rows, measured value) in the zarr group's attrs: the export's
window length and stride are export options unknown here, and intervals map onto any of them
(:func:`flag_windows`).

Which samples each kind is measured on, and why:

- ``saturation`` and ``flat`` on the **raw** samples (volts, input rate) handed over by the destriping loop:
  the ADC rail and runs of identical ADC codes only exist there (the band-pass, the common-average
  reference and the decimation turn a pinned probe into a near-zero trace and a dropout into ringing).
  A sample of a channel block is flagged when more than ``*_proportion`` of the block's good channels
  (bad-channel label 0) agree; a flat run must last ``flat_seconds``.
- ``step`` and ``cm_burst`` on the **common-mode trace** (the median removed by destriping, output rate):
  a probe-wide step leaves a sharp transient in it (second difference above ``step_mads`` robust
  standard deviations of the whole stored recording), a probe-wide burst raises its RMS over a
  ``segment_seconds`` segment above ``cm_burst_factor`` times the recording's median segment RMS. Both
  hit every channel, so their intervals span all rows.
- ``line_noise`` on the **destriped** output per channel block and segment: the median over the block's
  good channels of the power within ``line_half_width_hz`` of the 50/60 Hz harmonics, as a fraction of
  the 1-300 Hz power, above ``line_noise_fraction``.

Thresholds live in ``qc/qc_rules.yaml`` (``window_flags``) and are documented in docs/qc.md; their
fingerprint is part of the lfp parameters, so changing one recomputes the insertions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

KINDS = ("saturation", "flat", "step", "cm_burst", "line_noise")
BLOCK_ROWS = 32  # channel rows per block: 16 sites x 2 columns of NP1, ~320 µm of probe
LINE_FAMILIES_HZ = (50.0, 60.0)
LINE_BAND_HZ = (1.0, 300.0)
MAD_TO_SIGMA = 1.4826
RULE_WINDOW_SECONDS = 3.0  # the export's default window: what flagged_window_pct (a QC rule metric) counts in


@dataclass(frozen=True)
class ArtifactThresholds:
    """The per-window QC thresholds (values in ``qc_rules.yaml``, meaning in docs/qc.md)."""

    saturation_level: float
    saturation_proportion: float
    flat_seconds: float
    flat_proportion: float
    step_mads: float
    cm_burst_factor: float
    line_noise_fraction: float
    line_half_width_hz: float
    segment_seconds: float
    pad_seconds: float

    @classmethod
    def from_mapping(cls, values: dict, origin: str = "<window_flags>") -> ArtifactThresholds:
        names = [f.name for f in fields(cls)]
        missing, unknown = sorted(set(names) - set(values)), sorted(set(values) - set(names))
        if missing or unknown:
            raise ValueError(f"{origin}: window_flags needs exactly {names}; missing {missing}, unknown {unknown}")
        out = cls(**{k: float(values[k]) for k in names})
        bad = [k for k in names if not getattr(out, k) > 0]
        if bad:
            raise ValueError(f"{origin}: window_flags {bad} must be positive numbers")
        return out

    @property
    def fingerprint(self) -> str:
        """Short hash of the values: stored with the lfp parameters so changed thresholds recompute."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def default_thresholds(rules_path: str | None = None) -> ArtifactThresholds:
    """The ``window_flags`` of a rules file (default: the package's ``qc_rules.yaml``)."""
    from ibl_ephys_data.qc.rules import read_window_flags

    values, origin = read_window_flags(rules_path)
    return ArtifactThresholds.from_mapping(values, origin)


def _runs2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True along axis 0 of (n, k): (column, start, stop) arrays, sorted by column then start."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1]), dtype=np.int8)
    padded[1:-1] = mask
    col_s, row_s = np.nonzero(np.diff(padded, axis=0).T == 1)
    col_e, row_e = np.nonzero(np.diff(padded, axis=0).T == -1)
    return col_s, row_s, row_e


def _block_fraction(flags: np.ndarray, block_of_good: np.ndarray, n_good: np.ndarray) -> np.ndarray:
    """(n, n_good) booleans -> (n, n_blocks) fraction of each block's good channels that are True."""
    counts = np.zeros((flags.shape[0], n_good.size), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, np.diff(block_of_good) != 0])
    sums = np.add.reduceat(flags, starts, axis=1, dtype=np.int32) if flags.shape[1] else counts[:, :0]
    counts[:, block_of_good[starts]] = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_good > 0, counts / np.maximum(n_good, 1), 0.0)


class ArtifactScanner:
    """Fed each window's raw and destriped chunks in order; :meth:`finish` returns the intervals.

    ``labels``: bad-channel labels in stored row order (0 good); ``fs_in`` / ``q``: raw rate and decimation
    to the stored rate; ``range_volts``: ADC full scale (scalar or per channel). Sample positions in the
    returned intervals are stored (output) samples, stop excluded.
    """

    def __init__(self, labels: np.ndarray, fs_in: float, q: int, range_volts: float | np.ndarray,
                 thresholds: ArtifactThresholds):
        self.t = thresholds
        self.labels = np.asarray(labels)
        self.nc = self.labels.size
        self.fs_in, self.q = float(fs_in), int(q)
        self.fs_out = self.fs_in / self.q
        self.good = np.flatnonzero(self.labels == 0)
        self.block_of_good = self.good // BLOCK_ROWS
        self.n_blocks = -(-self.nc // BLOCK_ROWS)
        self.n_good = np.bincount(self.block_of_good, minlength=self.n_blocks).astype(np.float32)
        rv = np.broadcast_to(np.asarray(range_volts, dtype=np.float32), (self.nc,))
        self.rail = (self.t.saturation_level * rv[self.good]).astype(np.float32)
        self.flat_n = max(2, int(np.ceil(self.t.flat_seconds * self.fs_in)))
        self.seg = max(8, int(round(self.t.segment_seconds * self.fs_out)))
        self.rows: list[dict] = []
        self.offset = 0  # stored sample of the current window's first output sample
        self.cm: list[tuple[int, np.ndarray]] = []  # (offset, common mode µV) per window
        self._cm_parts: list[np.ndarray] = []
        self._last_raw: np.ndarray | None = None
        self._open_flat: dict[int, tuple[int, float]] = {}  # block -> (raw start, value) of a run at chunk end
        self._raw_pos = 0
        self._tail = np.empty((self.nc, 0), dtype=np.float32)
        self._out_pos = 0

    # ---- feeding --------------------------------------------------------------------------------------
    def start_window(self, offset: int) -> None:
        """The next chunks belong to a new window starting at stored sample ``offset``."""
        self._end_window()
        self.offset = int(offset)
        self._raw_pos, self._out_pos, self._last_raw = 0, 0, None

    def feed_raw(self, raw: np.ndarray) -> None:
        """Raw volts (n, n_channels) at ``fs_in``, the next samples of the current window."""
        x = raw[:, self.good] if self.good.size < raw.shape[1] else raw
        n = x.shape[0]
        sat = _block_fraction(np.abs(x) > self.rail, self.block_of_good, self.n_good)
        self._add_runs("saturation", sat > self.t.saturation_proportion, sat, self._raw_pos, 1)
        prev = x[:1] if self._last_raw is None else self._last_raw
        same = np.empty(x.shape, dtype=bool)
        same[0] = x[0] == prev[0]
        np.equal(x[1:], x[:-1], out=same[1:])
        flat = _block_fraction(same, self.block_of_good, self.n_good)
        self._add_flat(flat > self.t.flat_proportion, flat)
        self._last_raw = x[-1:].copy()
        self._raw_pos += n

    def feed(self, lfp_uv: np.ndarray, cm_uv: np.ndarray) -> None:
        """Destriped output (n_channels, n) µV and common mode (n,) µV, the next stored samples."""
        self._cm_parts.append(np.asarray(cm_uv, dtype=np.float32))
        data = np.concatenate([self._tail, lfp_uv], axis=1) if self._tail.shape[1] else lfp_uv
        n_whole = data.shape[1] // self.seg * self.seg
        if n_whole:
            self._line_noise(data[:, :n_whole], self._out_pos)
        self._out_pos += n_whole
        self._tail = np.array(data[:, n_whole:], dtype=np.float32)

    def finish(self) -> list[dict]:
        """Every interval found, merged per (kind, rows): dicts kind, start, stop, row_start, row_stop, value."""
        self._end_window()
        self._common_mode()
        return merge_intervals(self.rows, gap=int(round(self.t.pad_seconds * self.fs_out)))

    # ---- kernels --------------------------------------------------------------------------------------
    def _rows_of(self, block: int) -> tuple[int, int]:
        return block * BLOCK_ROWS, min((block + 1) * BLOCK_ROWS, self.nc)

    def _add(self, kind: str, start: int, stop: int, rows: tuple[int, int], value: float) -> None:
        pad = int(round(self.t.pad_seconds * self.fs_out))
        self.rows.append({"kind": kind, "start": max(self.offset, self.offset + start - pad),
                          "stop": self.offset + stop + pad, "row_start": rows[0], "row_stop": rows[1],
                          "value": round(float(value), 4)})

    def _add_runs(self, kind: str, mask: np.ndarray, values: np.ndarray, first: int, min_len: int) -> None:
        if not mask.any():
            return
        for b, a, z in zip(*_runs2d(mask), strict=True):
            if z - a >= min_len:
                self._add(kind, (first + a) // self.q, -(-(first + z) // self.q), self._rows_of(int(b)),
                          values[a:z, b].max())

    def _add_flat(self, mask: np.ndarray, values: np.ndarray) -> None:
        """Flat runs may cross chunk edges: a run touching the end stays open for the next chunk."""
        n = mask.shape[0]
        still_open: dict[int, tuple[int, float]] = {}
        runs = zip(*_runs2d(mask), strict=True) if mask.any() else ()
        for b, a, z in runs:
            b = int(b)
            start, value = self._raw_pos + a, float(values[a:z, b].max())
            if a == 0 and b in self._open_flat:
                start, value = self._open_flat[b][0], max(value, self._open_flat[b][1])
            if z == n:
                still_open[b] = (start, value)
            elif self._raw_pos + z - start >= self.flat_n:
                self._add("flat", start // self.q, -(-(self._raw_pos + z) // self.q), self._rows_of(b), value)
        for b, (start, value) in self._open_flat.items():  # runs that ended exactly at the last chunk edge
            if not (mask.shape[0] and mask[0, b]) and self._raw_pos - start >= self.flat_n:
                self._add("flat", start // self.q, -(-self._raw_pos // self.q), self._rows_of(b), value)
        self._open_flat = still_open

    def _end_window(self) -> None:
        for b, (start, value) in self._open_flat.items():
            if self._raw_pos - start >= self.flat_n:
                self._add("flat", start // self.q, -(-self._raw_pos // self.q), self._rows_of(b), value)
        self._open_flat = {}
        if self._tail.shape[1] >= self.seg // 4:
            self._line_noise(self._tail, self._out_pos)
        self._tail = np.empty((self.nc, 0), dtype=np.float32)
        if self._cm_parts:
            self.cm.append((self.offset, np.concatenate(self._cm_parts)))
        self._cm_parts = []

    def _line_noise(self, data: np.ndarray, first: int) -> None:
        """Line-noise fraction per block for each whole segment of ``data`` (n_channels, k * seg)."""
        if not self.good.size:
            return
        fraction = line_fraction(data[self.good], self.fs_out, min(self.seg, data.shape[1]),
                                 self.t.line_half_width_hz)  # (n_good, n_segments)
        seg = min(self.seg, data.shape[1])
        fraction = np.nan_to_num(fraction)  # a channel without power (dropout) is the flat kind's business
        for b in np.unique(self.block_of_good):
            value = np.median(fraction[self.block_of_good == b], axis=0)
            for k in np.flatnonzero(value > self.t.line_noise_fraction):
                self._add("line_noise", first + k * seg, first + (k + 1) * seg, self._rows_of(int(b)), value[k])

    def _common_mode(self) -> None:
        """Steps and bursts of the common mode, against robust statistics of the whole stored recording."""
        pieces = [(o, c) for o, c in self.cm if c.size >= 3]
        if not pieces:
            return
        d2 = [np.abs(c[2:] - 2 * c[1:-1] + c[:-2]) for _, c in pieces]
        every = np.concatenate(d2)
        sigma = MAD_TO_SIGMA * np.median(np.abs(every - np.median(every)))
        rms = [np.sqrt(np.mean(c[: c.size // self.seg * self.seg].reshape(-1, self.seg) ** 2, axis=1))
               for _, c in pieces]
        all_rms = np.concatenate(rms) if rms else np.empty(0)
        median_rms = float(np.median(all_rms)) if all_rms.size >= 3 else np.nan
        probe = (0, self.nc)
        for (offset, c), d, r in zip(pieces, d2, rms, strict=True):
            self.offset = offset
            if sigma > 0:
                z = d / sigma
                for _, a, b in zip(*_runs2d((z > self.t.step_mads)[:, None]), strict=True):
                    self._add("step", a + 1, b + 1, probe, z[a:b].max())
            # mains common to the probe is removed from the channels by the CAR but stays in the stored
            # common mode, and real pickup is never exactly common: the channels keep a residue of it
            line = line_fraction(c[None, :], self.fs_out, min(self.seg, c.size), self.t.line_half_width_hz)[0]
            for _, a, b in zip(*_runs2d((line > self.t.line_noise_fraction)[:, None]), strict=True):
                seg = min(self.seg, c.size)
                self._add("line_noise", a * seg, b * seg, probe, line[a:b].max())
            if np.isfinite(median_rms) and median_rms > 0:
                ratio = r / median_rms
                for _, a, b in zip(*_runs2d((ratio > self.t.cm_burst_factor)[:, None]), strict=True):
                    self._add("cm_burst", a * self.seg, b * self.seg, probe, ratio[a:b].max())


def line_fraction(x: np.ndarray, fs: float, seg: int, half_width_hz: float) -> np.ndarray:
    """(k, n) -> (k, n // seg): excess power at the 50/60 Hz harmonics over 1-300 Hz power.

    The excess is the power within ``half_width_hz`` of each harmonic above the median of its flanks (2-6 Hz
    away), as signal QC's line ratio does: counting the raw power of the line bins would flag any flat
    spectrum, where those ~10 % of the bins hold ~10 % of the power without any line noise.
    """
    x = x[:, : x.shape[1] // seg * seg].reshape(x.shape[0], -1, seg)
    spec = np.abs(np.fft.rfft(x - x.mean(axis=2, keepdims=True), axis=2)) ** 2
    freqs = np.fft.rfftfreq(seg, 1 / fs)
    band = (freqs >= LINE_BAND_HZ[0]) & (freqs <= LINE_BAND_HZ[1])
    harmonics = np.unique(np.concatenate([np.arange(f0, LINE_BAND_HZ[1] + 1e-9, f0) for f0 in LINE_FAMILIES_HZ]))
    excess = np.zeros(spec.shape[:2])
    for h in harmonics:
        distance = np.abs(freqs - h)
        on, flank = band & (distance <= half_width_hz), band & (distance >= 2.0) & (distance <= 6.0)
        if on.any() and flank.any():
            floor = np.median(spec[..., flank], axis=2, keepdims=True)
            excess += np.clip(spec[..., on] - floor, 0, None).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return excess / spec[..., band].sum(axis=2)


def merge_intervals(rows: Sequence[dict], gap: int = 0) -> list[dict]:
    """Merge intervals of the same kind and rows that overlap or lie within ``gap`` samples; keep max value."""
    out: list[dict] = []
    key = lambda r: (r["kind"], r["row_start"], r["row_stop"], r["start"])  # noqa: E731
    for r in sorted(rows, key=key):
        last = out[-1] if out else None
        if (last is not None and (last["kind"], last["row_start"], last["row_stop"])
                == (r["kind"], r["row_start"], r["row_stop"]) and r["start"] <= last["stop"] + gap):
            last["stop"] = max(last["stop"], r["stop"])
            last["value"] = max(last["value"], r["value"])
        else:
            out.append({**r, "start": int(r["start"]), "stop": int(r["stop"]),
                        "row_start": int(r["row_start"]), "row_stop": int(r["row_stop"])})
    # plain Python numbers: the intervals are stored as JSON attrs
    out = [{**r, "start": int(r["start"]), "stop": int(r["stop"]), "value": float(r["value"])} for r in out]
    return sorted(out, key=lambda r: (r["start"], r["kind"], r["row_start"]))


def flag_windows(intervals: Sequence[dict] | pd.DataFrame, start: np.ndarray, n_samples: int,
                 row_start: np.ndarray, row_stop: np.ndarray) -> pd.DataFrame:
    """One boolean column per kind: does an interval of that kind overlap the window's samples and rows?

    Windows are ``[start, start + n_samples)`` over rows ``[row_start, row_stop)`` of the stored array.
    """
    start = np.asarray(start, dtype=np.int64)
    stop = start + int(n_samples)
    r0, r1 = np.asarray(row_start), np.asarray(row_stop)
    out = {kind: np.zeros(start.size, dtype=bool) for kind in KINDS}
    table = pd.DataFrame(list(intervals) if not isinstance(intervals, pd.DataFrame) else intervals)
    for iv in table.itertuples(index=False):
        hit = (start < iv.stop) & (stop > iv.start) & (r0 < iv.row_stop) & (r1 > iv.row_start)
        out[iv.kind] |= hit
    return pd.DataFrame(out)


def flagged_fraction(intervals: Sequence[dict], window_samples: int, segments: Sequence[dict], n_rows: int
                     ) -> float:
    """Fraction of (window, channel block) pairs an interval touches, for back-to-back windows of
    ``window_samples`` inside each stored segment (``offset``, ``n_samples``): what the rules judge before
    an export exists; NaN when no window fits."""
    start = np.concatenate([int(s["offset"]) + np.arange(0, int(s["n_samples"]) - window_samples + 1,
                                                         window_samples) for s in segments] or [[]])
    blocks = np.arange(0, n_rows, BLOCK_ROWS)
    if not start.size or not blocks.size:
        return float("nan")
    starts = np.repeat(start.astype(np.int64), blocks.size)
    r0 = np.tile(blocks, start.size)
    flags = flag_windows(intervals, starts, window_samples, r0, np.minimum(r0 + BLOCK_ROWS, n_rows))
    return float(flags.any(axis=1).mean())


def window_flag_metrics(lfp_root: str | Path, pids: Sequence[str], window_seconds: float = RULE_WINDOW_SECONDS
                        ) -> pd.DataFrame:
    """``flagged_window_pct`` per pid from the finished lfp stores' ``artifacts`` attrs (NaN without them).

    The qc stage runs before any export, so it judges back-to-back windows of the export's default length
    over every stored segment and channel block.
    """
    from ibl_ephys_data.workspace.lfp_store import LfpStore

    store = LfpStore(lfp_root)
    rows = []
    for pid in pids:
        value = np.nan
        attrs = store.attrs(pid) if store.kind(pid) is not None else {}
        if attrs.get("complete") is True and attrs.get("artifacts") is not None:
            n_rows, n_total = store.open(pid).shape
            n = max(1, int(round(window_seconds * float(attrs["fs"]))))
            segments = attrs.get("windows") or [{"offset": 0, "n_samples": n_total}]
            value = 100.0 * flagged_fraction(attrs["artifacts"], n, segments, n_rows)
        rows.append({"pid": pid, "flagged_window_pct": value})
    return pd.DataFrame(rows, columns=["pid", "flagged_window_pct"])
