"""The five signal-QC metrics on raw LF snippets, exactly as defined in DESIGN §7 and docs/qc.md.

They run on raw LF in volts *before* destriping (destriping would hide the very problems they look for),
per channel, then reduce over good channels (bad-channel label 0) and over several snippets per insertion.
Spectra use Welch with 8-s Hann segments on the prewhitened (first-difference) signal: shorter segments
let the strong < 1 Hz power leak into the 1-300 Hz band totals (a 2-s window under-reports a 50 Hz line
ratio by ~20-25 %), and a 1 Hz high-pass would cut the 1-2 Hz power the totals need. Discontinuity
samples are zeroed before any spectrum (see :mod:`ibl_ephys_data.qc.artifacts`), so a saturation is
counted by ``discontinuity_pct`` only.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft

from ibl_ephys_data.qc.artifacts import (
    LINE_FAMILIES_HZ,
    NP1_LF_RANGE_VOLTS,
    PreparedSnippet,
    line_bins,
    pool_artifacts,
    prepare_snippet,
)

logger = logging.getLogger(__name__)

SEGMENT_SECONDS = 8.0
SNR_BAND_HZ = (1.0, 100.0)
NOISE_BAND_HZ = (600.0, 1000.0)
NOISE_BLOCK_HZ = 2.0
FLANK_BLOCK_HZ = 1.0
LINE_MAX_HZ = 300.0
LINE_HALF_WIDTH_HZ = 1.0
LINE_FLANK_HZ = (2.0, 5.0)
SLOPE_BAND_HZ = (2.0, 100.0)
SNR_FLOOR_DB = -20.0  # a channel with nothing above its noise floor counts as this, not as a missing value

METRIC_KEYS = ("snr_db", "power_cv", "line_noise_pct", "line_f0_hz", "spectral_slope", "discontinuity_pct")
CHANNEL_METRICS = ("snr_db", "power_cv", "line_noise_pct", "spectral_slope")


def welch_psd(
    x: np.ndarray, fs: float, segment_seconds: float = SEGMENT_SECONDS, prewhiten: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD (V²/Hz) of ``x`` (n_channels, n_samples) with Hann segments spread evenly over the data.

    Segments overlap by at least 50 % and the last one ends on the last sample, so a 10-s snippet gives
    two 8-s segments instead of one with 2 s unused. With ``prewhiten`` the PSD is estimated on the first
    difference of ``x`` and divided by the difference filter's gain 4·sin²(πf/fs): that flattens a 1/f²
    LFP before windowing, so less of the strong power just below 1 Hz rides the Hann main lobe and
    sidelobes into the band totals above it (classical prewhitening against leakage).
    """
    if prewhiten:
        x = np.diff(x, axis=1)
    ns = x.shape[1]
    nseg_len = min(int(round(segment_seconds * fs)), ns)
    n_segments = 1 + int(np.ceil((ns - nseg_len) / (nseg_len / 2)))
    starts = np.round(np.linspace(0, ns - nseg_len, n_segments)).astype(int)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nseg_len) / nseg_len)  # periodic, as scipy's welch
    window = hann.astype(np.float32)
    scale = 1 / (fs * float(np.sum(window.astype(np.float64) ** 2)) * n_segments)
    psd = np.zeros((x.shape[0], nseg_len // 2 + 1))
    for start in starts:
        seg = x[:, start : start + nseg_len]
        seg = (seg - seg.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)) * window
        spec = scipy.fft.rfft(seg, axis=1)
        power = spec.real**2
        power += spec.imag**2
        psd += power
    psd *= scale
    psd[:, 1 : (nseg_len + 1) // 2] *= 2  # one-sided: double all but DC and (even length) Nyquist
    freqs = np.fft.rfftfreq(nseg_len, 1 / fs)
    if prewhiten:
        psd[:, 1:] /= 4 * np.sin(np.pi * freqs[1:] / fs) ** 2
        psd[:, 0] = 0  # the difference removed DC: there is nothing to report there
    return freqs, psd


def _band(freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (freqs >= lo) & (freqs <= hi)


def _block_median(psd: np.ndarray, bins: np.ndarray, block: int) -> np.ndarray:
    """Median over consecutive ``block``-bin means of ``psd[:, bins]``.

    A single Welch bin is chi-square distributed with few degrees of freedom, so its median sits ~30 %
    below the mean density; averaging blocks first makes the median estimate the mean, yet a narrow
    peak still spoils only one block.
    """
    n_blocks = max(1, bins.size // block)
    used = bins[: n_blocks * block] if bins.size >= block else bins
    return np.median(psd[:, used].reshape(psd.shape[0], n_blocks, -1).mean(axis=2), axis=1)


def snr_db(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Per-channel 10·log10((P - N) / N): P the 1-100 Hz power without line bins, N the noise floor there.

    N = median PSD over 600-1000 Hz (of 2-Hz block means, see ``_block_median``) times the bandwidth
    of P. (P - N) / N is floored at -20 dB so a signal-less channel drags the mean down instead of
    dropping out of it; NaN only where there is no noise floor to compare with (N = 0, a digital flat).
    """
    df = freqs[1] - freqs[0]
    in_band = _band(freqs, *SNR_BAND_HZ) & ~line_bins(freqs)
    power = psd[:, in_band].sum(axis=1) * df
    block = max(1, int(round(NOISE_BLOCK_HZ / df)))
    noise = _block_median(psd, np.flatnonzero(_band(freqs, *NOISE_BAND_HZ)), block) * in_band.sum() * df
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum((power - noise) / noise, 10 ** (SNR_FLOOR_DB / 10))
        return np.where(noise > 0, 10 * np.log10(ratio), np.nan)


def line_noise_pct(freqs: np.ndarray, psd: np.ndarray, f0: float) -> np.ndarray:
    """Per-channel 100 × line power / 1-300 Hz power, line = harmonics h·f0 <= 300 Hz.

    Each harmonic's power is the PSD excess within ±1 Hz over the median of its 2-5 Hz flanks (of 1-Hz
    block means per side, see ``_block_median``).
    """
    df = freqs[1] - freqs[0]
    block = max(1, int(round(FLANK_BLOCK_HZ / df)))
    total = psd[:, _band(freqs, 1.0, LINE_MAX_HZ)].sum(axis=1) * df
    excess = np.zeros(psd.shape[0])
    for harmonic in np.arange(f0, LINE_MAX_HZ + 1e-9, f0):
        distance = np.abs(freqs - harmonic)
        flank = (distance >= LINE_FLANK_HZ[0]) & (distance <= LINE_FLANK_HZ[1])
        below, above = np.flatnonzero(flank & (freqs < harmonic)), np.flatnonzero(flank & (freqs > harmonic))
        n_side = min(below.size, above.size) // block * block or min(below.size, above.size)
        bins = np.r_[below[below.size - n_side :], above[:n_side]]
        baseline = _block_median(psd, bins, max(1, min(block, n_side)))[:, None]
        excess += (psd[:, distance <= LINE_HALF_WIDTH_HZ] - baseline).sum(axis=1) * df
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 100 * np.maximum(excess, 0) / total, np.nan)


def spectral_slope(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Per-channel least-squares slope of log10 PSD against log10 f over 2-100 Hz, line bins excluded."""
    sel = _band(freqs, *SLOPE_BAND_HZ) & ~line_bins(freqs)
    logf = np.log10(freqs[sel])
    logf -= logf.mean()
    p = psd[:, sel]
    with np.errstate(divide="ignore"):
        logp = np.log10(np.where(p > 0, p, 1.0))
    slope = (logp - logp.mean(axis=1, keepdims=True)) @ logf / np.sum(logf**2)
    return np.where((p > 0).all(axis=1), slope, np.nan)


def power_cv(power: np.ndarray) -> np.ndarray:
    """Per-channel std / mean over 1-s windows of 1-100 Hz band power (``power`` is channels × windows)."""
    mean = power.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = power.std(axis=1) / mean
    return np.where((mean > 0) & (power.shape[1] >= 2), cv, np.nan)


def _channel_measures(snip: PreparedSnippet) -> dict[str, np.ndarray]:
    freqs, psd = welch_psd(snip.clean, snip.fs)
    out = {
        "snr_db": snr_db(freqs, psd),
        "power_cv": power_cv(snip.power),
        "spectral_slope": spectral_slope(freqs, psd),
    }
    for f0 in LINE_FAMILIES_HZ:
        out[f"line_{int(f0)}"] = line_noise_pct(freqs, psd, f0)
    return out


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a nan-reduction without the all-NaN RuntimeWarning: an all-NaN input gives NaN, as documented."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _summarise(
    measures: list[dict[str, np.ndarray]], snippets: list[PreparedSnippet]
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Insertion values (good channels, then over snippets) and per-channel medians over snippets."""
    good = snippets[0].good
    per_snippet = {
        "snr_db": [_quiet(np.nanmean, m["snr_db"][good]) for m in measures],
        **{k: [_quiet(np.nanmedian, m[k][good]) for m in measures]
           for k in ("power_cv", "spectral_slope", "line_50", "line_60")},
    }
    insertion = {k: float(_quiet(np.nanmedian, v)) for k, v in per_snippet.items()}
    f0 = 60.0 if insertion["line_60"] > insertion["line_50"] else 50.0
    flagged = sum(int(s.discontinuity.sum()) for s in snippets)
    n_samples = sum(s.discontinuity.size for s in snippets)
    summary = {
        "snr_db": insertion["snr_db"],
        "power_cv": insertion["power_cv"],
        "line_noise_pct": insertion[f"line_{int(f0)}"],
        "line_f0_hz": f0,
        "spectral_slope": insertion["spectral_slope"],
        "discontinuity_pct": 100 * flagged / n_samples,
    }
    channels = {
        k: _quiet(np.nanmedian, np.stack([m[src] for m in measures]), axis=0)
        for k, src in (("snr_db", "snr_db"), ("power_cv", "power_cv"),
                       ("line_noise_pct", f"line_{int(f0)}"), ("spectral_slope", "spectral_slope"))
    }
    return summary, channels


def _snippet_job(
    volts: np.ndarray, fs: float, good: np.ndarray, range_volts: float | np.ndarray
) -> tuple[dict[str, np.ndarray], PreparedSnippet]:
    snip = prepare_snippet(volts, fs, good, range_volts)
    measures = _channel_measures(snip)
    # pooling needs the masks and window powers only: drop the cleaned copy of the snippet
    return measures, replace(snip, clean=np.empty((0, 0), np.float32))


def lfp_metrics(
    volts: np.ndarray, fs: float, good: np.ndarray | None = None,
    range_volts: float | np.ndarray = NP1_LF_RANGE_VOLTS,
) -> tuple[dict[str, float], pd.DataFrame]:
    """The five metrics of one raw LF array (n_samples, n_channels) in volts.

    Returns the insertion-level dict (keys ``METRIC_KEYS``: mean SNR over good channels, medians of the
    others, ``line_f0_hz`` the larger of the 50/60 Hz line ratios) and a per-channel DataFrame
    (channel, good, snr_db, power_cv, line_noise_pct, spectral_slope) with values for every channel.
    ``range_volts`` is the ADC full scale for the saturation test (NP1 LF default).
    """
    snip = prepare_snippet(volts, fs, good, range_volts)
    summary, channels = _summarise([_channel_measures(snip)], [snip])
    df = pd.DataFrame({"channel": np.arange(snip.good.size), "good": snip.good, **channels})
    return summary, df


def snippet_windows(
    ns: int, fs: float, n_snippets: int = 5, snippet_seconds: float = 10.0
) -> list[tuple[int, int]]:
    """(start, stop) samples of evenly spaced, non-overlapping snippets starting on whole seconds.

    Snippets are centred in equal parts of the recording; when the recording is too short for
    ``n_snippets`` of them, fewer are used (never overlapping ones, which would count an event twice).
    Used by :func:`snippet_qc`; the report's artifact timeline (viz.timeline) shows the seconds it picks.
    """
    if n_snippets < 1 or not snippet_seconds > 0:
        raise ValueError(f"n_snippets={n_snippets}, snippet_seconds={snippet_seconds}: both must be positive")
    second = int(round(fs))
    length = min(int(round(snippet_seconds * fs)), ns)
    if length < second:
        raise ValueError(f"recording of {ns} samples is shorter than 1 s at fs={fs}: nothing to QC")
    n = min(n_snippets, ns // length)
    centres = (np.arange(n) + 0.5) * ns / n
    starts = np.clip(centres - length / 2, 0, ns - length).astype(int)
    if length % second == 0:  # flooring whole-second snippets to whole seconds keeps them apart
        starts = starts // second * second
    return [(int(a), int(a) + length) for a in starts]


def snippet_qc(
    reader: Any, channel_labels: np.ndarray, n_snippets: int = 5, snippet_seconds: float = 10.0,
    range_volts: float | np.ndarray | None = None, n_workers: int = 2,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Signal QC of one insertion from a ``spikeglx.Reader``-like object (``fs``, ``ns``, ``nsync``, slicing).

    Reads ``n_snippets`` evenly spaced snippets (volts), computes the five metrics (median over snippets;
    SNR is the mean over good channels first), the probe-wide artifact measures (event rates pooled
    over snippets), and the bad-channel counts from ``channel_labels`` (0 good, 1 dead, 2 noisy,
    3 outside). ``range_volts`` defaults to ``reader.range_volts`` (else NP1 LF full scale).
    ``n_workers`` threads compute snippets while the next one is read (results do not depend on it).
    Returns the insertion dict and a per-channel DataFrame keyed by ``raw_ind``.
    """
    fs, ns, nsync = float(reader.fs), int(reader.ns), int(reader.nsync)
    n_channels = int(reader.nc) - nsync
    labels = np.asarray(channel_labels)
    if labels.shape != (n_channels,):
        raise ValueError(
            f"channel_labels has shape {labels.shape}, the reader has {n_channels} channels: "
            "pass one bad-channel label (0-3) per channel"
        )
    good = labels == 0
    if not good.any():
        raise ValueError("channel_labels has no good channel (label 0): nothing to compute QC on")
    if range_volts is None:
        rv = np.asarray(getattr(reader, "range_volts", np.nan), dtype=float).ravel()[:n_channels]
        range_volts = rv if rv.size == n_channels and np.isfinite(rv).all() else NP1_LF_RANGE_VOLTS
    channels = slice(None, -nsync) if nsync else slice(None)
    windows = snippet_windows(ns, fs, n_snippets, snippet_seconds)
    if len(windows) < n_snippets:
        logger.info("recording of %.1f s holds %d snippets of %.1f s, not %d", ns / fs, len(windows),
                    snippet_seconds, n_snippets)
    # the reader is used from this thread only; the snippets are computed by n_workers threads (numpy and
    # scipy.fft release the GIL), so reading the next snippet overlaps computing the previous ones
    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
        pending: deque[Future] = deque()
        results = []
        for start, stop in windows:
            volts = np.asarray(reader[start:stop, channels])
            pending.append(pool.submit(_snippet_job, volts, fs, good, range_volts))
            if len(pending) > n_workers:
                results.append(pending.popleft().result())
        results += [future.result() for future in pending]
    measures = [m for m, _ in results]
    snippets = [s for _, s in results]
    summary, per_channel = _summarise(measures, snippets)
    summary.update(pool_artifacts(snippets))
    summary.update({
        "n_dead": int((labels == 1).sum()),
        "n_noisy": int((labels == 2).sum()),
        "n_outside": int((labels == 3).sum()),
        "n_good": int(good.sum()),
        "n_snippets": len(windows),
    })
    df = pd.DataFrame({"raw_ind": np.arange(n_channels), "label": labels.astype(np.int8), **per_channel})
    return summary, df
