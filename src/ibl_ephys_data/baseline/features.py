"""Features of one channel-window: log10 band powers from a Welch PSD, plus depth along the probe.

Why band powers: they are what a reviewer can reason about (theta in hippocampus, a steep 1/f in
thalamus), cheap on a CPU, and a floor any learned embedding should beat. Why depth separately: position
along the probe predicts the region on its own (insertions at one site cross the same layers at the same
depths), so it must be switchable and reported alone, or a "region decoder" may only be a depth decoder.

Welch setting (the one documented place; docs/baseline.md repeats it): Hann segments of
``WELCH_SECONDS`` (1 s -> 1 Hz resolution), 50 % overlap, constant detrend, mean of the segments,
one-sided density. A band's power is the PSD summed over bins ``lo <= f < hi`` times the bin width, then
log10 (µV² when the store holds µV). Bands whose upper edge exceeds ``NYQUIST_FRACTION`` of the Nyquist
frequency are dropped: the decimation filter of the lfp stage attenuates that top of the spectrum.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.signal

logger = logging.getLogger(__name__)

# (name, low Hz, high Hz): the usual LFP bands, up to high-frequency oscillations
BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 12.0), ("beta", 12.0, 30.0),
    ("gamma_low", 30.0, 80.0), ("gamma_high", 80.0, 200.0), ("hfo", 200.0, 500.0),
)
WELCH_SECONDS = 1.0
NYQUIST_FRACTION = 0.8
DEPTH_FEATURE = "depth_um"
TINY_POWER = 1e-12  # floor before log10, so a flat (zero) window gives a finite feature


def usable_bands(fs: float, bands: tuple[tuple[str, float, float], ...] = BANDS) -> list[tuple[str, float, float]]:
    """The ``bands`` whose upper edge lies at or below ``NYQUIST_FRACTION`` x fs/2."""
    top = NYQUIST_FRACTION * fs / 2
    kept = [b for b in bands if b[2] <= top]
    if not kept:
        raise ValueError(f"no LFP band fits below {top:g} Hz at fs={fs:g} Hz: the store's rate is too low")
    return kept


def welch_nperseg(fs: float, n_samples: int, seconds: float = WELCH_SECONDS) -> int:
    """Samples per Welch segment: ``seconds`` of signal, at most the window."""
    return int(min(n_samples, round(seconds * fs)))


def band_powers(x: np.ndarray, fs: float, bands: list[tuple[str, float, float]] | None = None,
                welch_seconds: float = WELCH_SECONDS) -> np.ndarray:
    """log10 band power of every row of ``x`` (n_windows, n_samples) -> (n_windows, n_bands), float64."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    bands = usable_bands(fs) if bands is None else bands
    nperseg = welch_nperseg(fs, x.shape[-1], welch_seconds)
    freqs, psd = scipy.signal.welch(x, fs=fs, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                                    detrend="constant", scaling="density", average="mean", axis=-1)
    df = freqs[1] - freqs[0]
    out = np.empty((x.shape[0], len(bands)))
    for j, (_, lo, hi) in enumerate(bands):
        sel = (freqs >= lo) & (freqs < hi)
        if not sel.any():
            raise ValueError(f"band {lo:g}-{hi:g} Hz holds no Welch bin at {df:g} Hz resolution: "
                             "lengthen welch_seconds")
        out[:, j] = np.log10(psd[:, sel].sum(axis=1) * df + TINY_POWER)
    return out
