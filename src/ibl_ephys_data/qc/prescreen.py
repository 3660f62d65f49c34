"""Pre-screen an insertion without raw data, from IBL's small LF QC datasets.

``_iblqc_ephysSpectralDensityLF.{power,freqs}`` and ``_iblqc_ephysTimeRmsLF.{rms,timestamps}`` weigh a
few MB instead of GBs, so all brain-wide-map insertions can be triaged before streaming any raw LFP.
ibllib (``ephysqc.rmsmap``) cuts the recording into 2**ceil(log2(3 fs))-sample windows (3.28 s at
2500 Hz), high-passes each at 1 Hz (cosine taper 0-1 Hz), stores each window's RMS, and *sums* over the
windows the Welch PSD (1024-sample Hann segments, V^2/Hz, a 2.44 Hz grid). We divide by the number of
windows that got a spectrum to recover the mean PSD, then follow the definitions of DESIGN section 7 as
far as that grid allows (docs/qc.md ("Rules and thresholds") lists the differences):

- on a 2.44 Hz grid the Hann kernel spreads the steep low-frequency LFP power: the bins from 4.9 to
  100 Hz are corrected by the ratio of the bin-averaged to the Welch-expected value of the fitted power
  law (exact for a power-law spectrum); the 2.4 Hz bin is dominated by leakage of the unknowable < 1 Hz
  power through ibllib's 1-Hz taper, so 1-3.7 Hz is the fitted power law pinned to the 4.9 Hz bin;
- a mains line spreads over +-2 bins (Hann main lobe), so the line window is +-2 bins and its baseline
  the median of the bins 2-5 bins away (the raw metric uses +-1 Hz and 2-5 Hz flanks);
- the power CV comes from 3.28-s windows of the broadband (> 1 Hz) RMS; the part of a CV that is pure
  sampling noise of a stationary Gaussian signal depends on window length and band, so it is computed
  from the spectrum and swapped for that of the raw metric's 1-s, 1-100 Hz windows. Power modulation
  faster than the 3.28-s windows is averaged out: this is a proxy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from ibldsp import fourier

from ibl_ephys_data.qc.artifacts import LINE_FAMILIES_HZ
from ibl_ephys_data.workspace.schema import IBLQC_LF_FILES

logger = logging.getLogger(__name__)

RMS_WIN_LENGTH_SECS = 3  # ibllib.ephys.ephysqc.RMS_WIN_LENGTH_SECS
WELCH_WIN_LENGTH_SAMPLES = 1024  # ibllib.ephys.ephysqc.WELCH_WIN_LENGTH_SAMPLES
HIGHPASS_HZ = (0.0, 1.0)  # ibllib.ephys.ephysqc.rmsmap: fourier.hp(D, 1 / fs, [0, 1])
LINE_MAX_HZ = 300.0
LINE_HALF_BINS = 2  # Hann main lobe half-width, in bins
FLANK_BINS = 5  # baseline from the bins LINE_HALF_BINS < |f - h f0| <= FLANK_BINS bins away
SNR_BAND = (1.0, 100.0)
LINE_EXCLUSION_HZ = 2.0  # SNR, slope and CV bands drop +-2 Hz around 50 and 60 Hz harmonics (raw metrics)
NOISE_BAND = (600.0, 1000.0)
SLOPE_BAND = (2.0, 100.0)
LINE_BAND = (1.0, 300.0)
CV_TARGET_WINDOW_S = 1.0
CV_BAND = (1.0, 100.0)
FIRST_BIN = 2  # bin 1 (2.4 Hz) is dominated by leakage of the unknowable < 1 Hz power through the taper
CORRECTION_MAX_HZ = 100.0  # bins up to here get the leakage correction
SLOPE_CLIP = (-3.9, 1.0)  # power laws used for corrections; below -4 the tapered model is not integrable
KERNEL_OVERSAMPLING = 32  # fine grid of the Welch kernel: fs / (1024 * 32) = 0.076 Hz
FINE_DF_HZ = 0.05  # grid of the exact window-power variance, fine against the 1/T = 0.3 Hz kernel
FINE_MAX_HZ = 20.0  # above, the spectrum is smooth on the 1/T scale and integral(S^2)/T is exact enough

PRESCREEN_KEYS = ("prescreen_snr_db", "prescreen_line_noise_pct", "prescreen_line_f0_hz",
                  "prescreen_spectral_slope", "prescreen_power_cv")
FILES = IBLQC_LF_FILES
LABELS_FILE = "_iblqc_ephysChannels.labels.npy"
RMS_TIMELINE_FILE = "rms_timeline.parquet"  # beside qc/metrics.parquet: rms_timeline() rows of every insertion


def prescreen_arrays(power: np.ndarray, freqs: np.ndarray, rms: np.ndarray, timestamps: np.ndarray,
                     good: np.ndarray | None = None) -> dict[str, float]:
    """Pre-screen metrics from the four IBL LF QC arrays.

    ``power`` (n_freqs, n_channels) is ibllib's summed Welch PSD, ``rms`` (n_windows, n_channels) the
    per-window RMS; ``good`` optionally selects channels (boolean mask or indices). Returns the keys of
    PRESCREEN_KEYS: SNR (dB, mean over channels), line-noise ratio (%, median), detected mains f0 (Hz),
    spectral slope (median) and power-CV proxy (median).
    """
    power, freqs, rms, timestamps = _validated(power, freqs, rms, timestamps)
    df = float(freqs[1] - freqs[0])
    fs = 2.0 * float(freqs[-1])
    nswin = int(2 ** np.ceil(np.log2(fs * RMS_WIN_LENGTH_SECS)))
    lengths = _window_lengths(timestamps, fs, nswin)
    n_spectra = int(np.sum(lengths >= WELCH_WIN_LENGTH_SAMPLES))
    if n_spectra == 0:
        raise ValueError("the recording is shorter than one Welch segment: no spectrum to pre-screen")
    sel = _good_channels(good, power.shape[1])
    raw_psd = power[:, sel].astype(float) / n_spectra
    usable = np.all(np.isfinite(raw_psd), axis=0) & np.all(raw_psd[1:] > 0, axis=0)
    if not usable.all():
        logger.info("pre-screen ignores %d silent or non-finite channel(s)", int((~usable).sum()))
    raw_psd = raw_psd[:, usable]
    power_rms = rms[:, sel][:, usable].astype(float) ** 2
    if raw_psd.shape[1] == 0:
        raise ValueError("no channel with a finite, non-zero spectrum: nothing to pre-screen")

    psd, slope = _leakage_corrected(raw_psd, freqs, df, fs)
    f0 = _detect_f0(np.median(psd, axis=1), freqs, df)
    line_pct = 100.0 * _line_excess(psd, freqs, df, f0) / _band_integral(psd, freqs, df, LINE_BAND, slope)
    clean = _replace_lines(psd, freqs, df)
    snr = _snr_db(clean, freqs, df, slope)
    cv = _power_cv_proxy(power_rms[lengths == nswin], clean, freqs, df, fs, nswin, slope)
    return {
        "prescreen_snr_db": _nan_reduce(np.nanmean, snr),
        "prescreen_line_noise_pct": _nan_reduce(np.nanmedian, line_pct),
        "prescreen_line_f0_hz": float(f0),
        "prescreen_spectral_slope": _nan_reduce(np.nanmedian, slope),
        "prescreen_power_cv": _nan_reduce(np.nanmedian, cv) if cv is not None else float("nan"),
    }


def prescreen_folder(alf_probe_folder: str | os.PathLike, good: np.ndarray | None = None) -> dict[str, float]:
    """Pre-screen from a folder holding the four ``_iblqc_*LF`` files (e.g. raw_ephys_data/probe00).

    Good channels are ``good`` if given, else ``_iblqc_ephysChannels.labels.npy == 0`` when that file is
    present, else all channels.
    """
    folder = Path(alf_probe_folder)
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: download the insertion's _iblqc_*LF "
                                "datasets or compute them with ibl_ephys_data.demo.iblqc.write_iblqc_lf")
    arrays = {key: np.load(folder / name) for key, name in FILES.items()}
    if good is None and (folder / LABELS_FILE).is_file():
        labels = np.load(folder / LABELS_FILE)
        if labels.shape == (arrays["power"].shape[1],):
            good = labels == 0
    return prescreen_arrays(**arrays, good=good)


def prescreen_table(folders: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Pre-screen many insertions ({pid: folder}); a folder that cannot be read gives NaN and a warning."""
    rows = []
    for pid in sorted(folders):
        try:
            values = prescreen_folder(folders[pid])
        except (FileNotFoundError, ValueError) as err:
            logger.warning("pre-screen of %s failed: %s", pid, err)
            values = dict.fromkeys(PRESCREEN_KEYS, float("nan"))
        rows.append({"pid": str(pid), **values})
    return pd.DataFrame(rows, columns=["pid", *PRESCREEN_KEYS])


def _nan_reduce(fn, values: np.ndarray) -> float:
    """nanmean / nanmedian that return NaN (not a warning) when every channel is NaN."""
    values = np.asarray(values, dtype=float)
    return float(fn(values)) if np.isfinite(values).any() else float("nan")


def _validated(power, freqs, rms, timestamps) -> tuple[np.ndarray, ...]:
    power, freqs = np.asarray(power), np.asarray(freqs, dtype=float).ravel()
    rms, timestamps = np.asarray(rms), np.asarray(timestamps, dtype=float).ravel()
    if power.ndim != 2 or power.shape[0] != freqs.size:
        raise ValueError(f"power has shape {power.shape} but freqs has {freqs.size} values: expected power "
                         "as (n_freqs, n_channels) from _iblqc_ephysSpectralDensityLF.power.npy")
    if rms.ndim != 2 or rms.shape != (timestamps.size, power.shape[1]):
        raise ValueError(f"rms has shape {rms.shape}, expected ({timestamps.size}, {power.shape[1]}) "
                         "(n_windows, n_channels) from _iblqc_ephysTimeRmsLF.rms.npy")
    steps = np.diff(freqs)
    if freqs.size < 3 or freqs[0] != 0 or not np.allclose(steps, steps[0], rtol=1e-4):
        raise ValueError("freqs must be the uniform one-sided Welch grid starting at 0 Hz "
                         "(_iblqc_ephysSpectralDensityLF.freqs.npy)")
    if freqs[-1] < NOISE_BAND[1]:
        raise ValueError(f"spectrum stops at {freqs[-1]:g} Hz: the noise-floor band {NOISE_BAND} Hz needs LF "
                         "data sampled at >= 2 kHz")
    return power, freqs, rms, timestamps


def _good_channels(good: np.ndarray | None, n: int) -> np.ndarray:
    if good is None:
        return np.arange(n)
    good = np.asarray(good)
    if good.dtype == bool:
        if good.shape != (n,):
            raise ValueError(f"good mask has shape {good.shape}, expected ({n},) one flag per channel")
        idx = np.flatnonzero(good)
    else:
        idx = good.astype(int).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"good channel indices must lie in 0..{n - 1}")
    if idx.size == 0:
        raise ValueError("no good channel selected: pass good=None to use all channels")
    return idx


def _window_lengths(timestamps: np.ndarray, fs: float, nswin: int) -> np.ndarray:
    """Samples per RMS window; only the last can be short (ibldsp WindowGenerator, centre timestamps)."""
    lengths = np.full(timestamps.size, nswin, dtype=int)
    centre = timestamps[-1] * fs
    first = np.floor(centre / nswin) * nswin
    lengths[-1] = int(np.clip(np.round(2 * (centre - first) + 1), 1, nswin))
    return lengths


def _harmonics(f0: float, fmax: float) -> np.ndarray:
    return np.arange(f0, fmax + 1e-9, f0)


def _all_harmonics(fmax: float) -> np.ndarray:
    """Harmonics of both mains families: the raw metrics exclude both whatever f0 is detected."""
    return np.unique(np.concatenate([_harmonics(f0, fmax) for f0 in LINE_FAMILIES_HZ]))


def _near_lines(f: np.ndarray, fmax: float, half_width: float) -> np.ndarray:
    """Frequencies within ``half_width`` Hz of a 50 or 60 Hz harmonic up to ``fmax``."""
    near = np.zeros(f.shape, dtype=bool)
    for h in _all_harmonics(fmax + half_width):
        near |= np.abs(f - h) <= half_width + 1e-9
    return near


def _line_windows(freqs: np.ndarray, df: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    dist = np.abs(freqs - h)
    window = dist <= LINE_HALF_BINS * df + 1e-9
    flank = ~window & (dist <= FLANK_BINS * df + 1e-9)
    return window, flank


def _line_excess(psd: np.ndarray, freqs: np.ndarray, df: float, f0: float) -> np.ndarray:
    """Power of the mains harmonics up to 300 Hz above their local baseline, per channel (V^2)."""
    excess = np.zeros(psd.shape[1:])
    for h in _harmonics(f0, LINE_MAX_HZ):
        window, flank = _line_windows(freqs, df, h)
        excess += np.maximum(np.sum(psd[window] - np.median(psd[flank], axis=0), axis=0) * df, 0.0)
    return excess


def _detect_f0(psd: np.ndarray, freqs: np.ndarray, df: float) -> float:
    excess = [float(_line_excess(psd[:, None], freqs, df, f0)[0]) for f0 in LINE_FAMILIES_HZ]
    return LINE_FAMILIES_HZ[int(np.argmax(excess))]


def _replace_lines(psd: np.ndarray, freqs: np.ndarray, df: float) -> np.ndarray:
    """PSD with every 50/60 Hz line window replaced by its flank median: the spectrum without the mains."""
    clean = psd.copy()
    for h in _all_harmonics(LINE_MAX_HZ):
        window, flank = _line_windows(freqs, df, h)
        clean[window] = np.median(psd[flank], axis=0)
    return clean


def _fit_slope(psd: np.ndarray, freqs: np.ndarray, lo: float) -> np.ndarray:
    """Per-channel least-squares slope of log10 PSD against log10 f from ``lo`` to 100 Hz, lines out."""
    sel = (freqs >= lo) & (freqs <= SLOPE_BAND[1]) & ~_near_lines(freqs, SLOPE_BAND[1], LINE_EXCLUSION_HZ)
    if sel.sum() < 3:
        raise ValueError("fewer than 3 spectral bins between 2 and 100 Hz: cannot fit the spectral slope")
    x = np.log10(freqs[sel])
    x -= x.mean()
    y = np.log10(psd[sel])
    return (x @ (y - y.mean(axis=0))) / np.sum(x ** 2)


def _leakage_corrected(psd: np.ndarray, freqs: np.ndarray, df: float, fs: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """PSD whose low bins are corrected for Hann leakage and the 1-Hz taper, and its 2-100 Hz slope.

    The first slope comes from bins >= 7 Hz, where the correction is small; the next ones from the
    corrected bins from FIRST_BIN (4.9 Hz) to 100 Hz.
    """
    slope = _fit_slope(psd, freqs, 3 * df)
    for _ in range(2):
        factor = _leakage_factor(freqs, fs, float(np.median(slope)))
        corrected = psd * factor[:, None]
        slope = _fit_slope(corrected, freqs, max(SLOPE_BAND[0], FIRST_BIN * df - 1e-9))
    return corrected, slope


def _leakage_factor(freqs: np.ndarray, fs: float, slope: float) -> np.ndarray:
    """Per bin: (power law averaged over the bin) / (its expected value in ibllib's Welch estimate).

    The Welch expectation of bin f_k is integral S(v) g(v)^2 [K(f_k - v) + K(f_k + v)] dv with K the
    spectral window of the 1024-sample Hann segment (unit integral) and g ibllib's 1-Hz cosine taper.
    """
    slope = float(np.clip(slope, *SLOPE_CLIP))
    n_pad = WELCH_WIN_LENGTH_SAMPLES * KERNEL_OVERSAMPLING
    step = fs / n_pad
    window = np.hanning(WELCH_WIN_LENGTH_SAMPLES + 1)[:-1]  # periodic Hann, as scipy.signal.welch
    kernel = np.abs(np.fft.fft(window, n_pad)) ** 2 / (fs * np.sum(window ** 2))  # K(m * step), unit integral
    n_bins = int(np.searchsorted(freqs, CORRECTION_MAX_HZ, side="right"))
    m = np.arange(1, (n_bins + 4) * KERNEL_OVERSAMPLING)  # fine frequencies m * step, beyond the last bin
    nu = m * step
    spectrum = nu ** slope
    tapered = spectrum * fourier.fcn_cosine(list(HIGHPASS_HZ))(nu) ** 2
    factor = np.ones(freqs.size)
    half = KERNEL_OVERSAMPLING // 2
    for k in range(FIRST_BIN, n_bins):
        centre = k * KERNEL_OVERSAMPLING
        expected = np.sum(tapered * (kernel[(centre - m) % n_pad] + kernel[(centre + m) % n_pad])) * step
        averaged = np.mean(spectrum[centre - half - 1: centre + half - 1])
        factor[k] = averaged / expected
    return factor


def _band_integral(psd: np.ndarray, freqs: np.ndarray, df: float, band: tuple[float, float],
                   slope: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Integral over ``band`` of psd**power: each bin from FIRST_BIN covers +-df/2 (cut at the band
    edges); below it, the power law of slope ``slope`` whose average over that bin is the bin."""
    lo, hi = band
    edge = freqs[FIRST_BIN] - df / 2
    left = np.maximum(freqs - df / 2, max(lo, edge))
    right = np.minimum(freqs + df / 2, hi)
    weight = np.clip(right - left, 0, None)
    weight[:FIRST_BIN] = 0.0
    total = np.tensordot(weight, psd ** power, axes=(0, 0))
    if lo < edge:
        amplitude = _pinned_amplitude(psd[FIRST_BIN], freqs[FIRST_BIN], df, slope)
        total = total + amplitude ** power * _power_law_integral(power * slope, lo, min(edge, hi))
    return total


def _power_law_integral(exponent: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Integral of f**exponent from lo to hi (per channel exponent)."""
    k = np.asarray(exponent, dtype=float) + 1
    safe = np.where(np.abs(k) < 1e-9, 1.0, k)
    return np.where(np.abs(k) < 1e-9, np.log(hi / lo), (hi ** safe - lo ** safe) / safe)


def _pinned_amplitude(value: np.ndarray, centre: float, df: float, slope: np.ndarray) -> np.ndarray:
    """A of A f**slope whose average over the bin [centre +- df/2] is ``value`` (a bin is an average)."""
    return value * df / _power_law_integral(slope, centre - df / 2, centre + df / 2)


def _snr_db(clean: np.ndarray, freqs: np.ndarray, df: float, slope: np.ndarray) -> np.ndarray:
    """DESIGN section 7 SNR per channel, on the line-free spectrum; NaN where the band is below the floor.

    The raw metric integrates 1-100 Hz minus +-2 Hz around every 50 and 60 Hz harmonic; here those
    windows are removed from the line-free integral at their baseline level, and the bandwidth shrinks
    the same way.
    """
    lo, hi = SNR_BAND
    signal = _band_integral(clean, freqs, df, SNR_BAND, slope)
    width = hi - lo
    for h in _all_harmonics(hi + LINE_EXCLUSION_HZ):
        a, b = max(lo, h - LINE_EXCLUSION_HZ), min(hi, h + LINE_EXCLUSION_HZ)
        if b <= a:
            continue
        signal = signal - np.median(clean[np.abs(freqs - h) <= FLANK_BINS * df], axis=0) * (b - a)
        width -= b - a
    noise = np.median(clean[(freqs >= NOISE_BAND[0]) & (freqs <= NOISE_BAND[1])], axis=0) * width
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (signal - noise) / noise
        return np.where((noise > 0) & (ratio > 0), 10 * np.log10(ratio), np.nan)


def _power_cv_proxy(power_rms: np.ndarray, clean: np.ndarray, freqs: np.ndarray, df: float, fs: float,
                    nswin: int, slope: np.ndarray) -> np.ndarray | None:
    """CV of window power, with its stationary sampling part moved from ibllib's 3.28-s broadband windows
    to the 1-s, 1-100 Hz windows of the raw metric.

    For a stationary Gaussian signal of one-sided PSD S, the mean square over T seconds has variance
    (1/T) double-integral S(f) S(f') [F_T(f - f') + F_T(f + f')] (F_T the Fejer kernel), computed on a
    fine grid below FINE_MAX_HZ (where 1/T is not small against the spectrum's structure) and as
    (1/T) integral(S^2) above. A power modulation independent of the signal multiplies:
    1 + CV^2 = (1 + CV_m^2)(1 + CV_sampling^2), so CV_m is kept as measured and the sampling part swapped.
    Mains lines are sinusoids, whose power does not fluctuate: only the line-free spectrum enters the
    variances; the measured mean power keeps them.
    """
    if power_rms.shape[0] < 2:
        logger.info("fewer than 2 full RMS windows: no power-CV proxy")
        return None
    mean = power_rms.mean(axis=0)
    cv_measured = power_rms.std(axis=0) / mean
    fine = np.arange(FINE_DF_HZ / 2, FINE_MAX_HZ, FINE_DF_HZ)
    s_fine = _fine_psd(fine, clean, freqs, slope)
    above = freqs >= FINE_MAX_HZ
    # ibllib's RMS windows: the whole spectrum through its 1-Hz cosine high-pass taper
    taper = fourier.fcn_cosine(list(HIGHPASS_HZ))(fine) ** 2
    t_measured = nswin / fs
    var_measured = _window_power_var(s_fine * taper[:, None], t_measured) + np.sum(
        clean[above] ** 2, axis=0) * df / t_measured
    samp_measured = var_measured / mean ** 2
    # the raw metric's windows: 1-100 Hz without +-2 Hz around 50/60 Hz harmonics
    keep = (fine >= CV_BAND[0]) & ~_near_lines(fine, CV_BAND[1], LINE_EXCLUSION_HZ)
    in_band = above & (freqs <= CV_BAND[1]) & ~_near_lines(freqs, CV_BAND[1], LINE_EXCLUSION_HZ)
    target_mean = np.sum(s_fine[keep], axis=0) * FINE_DF_HZ + np.sum(clean[in_band], axis=0) * df
    var_target = _window_power_var(s_fine * keep[:, None], CV_TARGET_WINDOW_S) + np.sum(
        clean[in_band] ** 2, axis=0) * df / CV_TARGET_WINDOW_S
    samp_target = var_target / target_mean ** 2
    modulation = np.maximum((1 + cv_measured ** 2) / (1 + samp_measured) - 1, 0.0)
    return np.sqrt((1 + modulation) * (1 + samp_target) - 1)


def _fine_psd(fine: np.ndarray, clean: np.ndarray, freqs: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Line-free PSD on a fine grid: log-log interpolation between bins from FIRST_BIN up, the power law
    pinned to that bin below it (as in the band integrals)."""
    k0 = FIRST_BIN
    logf = np.log10(freqs[k0:])
    logp = np.log10(clean[k0:])
    out = np.empty((fine.size, clean.shape[1]))
    hi = fine >= freqs[k0]
    idx = np.clip(np.searchsorted(logf, np.log10(fine[hi])) - 1, 0, logf.size - 2)
    w = (np.log10(fine[hi]) - logf[idx]) / (logf[idx + 1] - logf[idx])
    out[hi] = 10 ** ((1 - w)[:, None] * logp[idx] + w[:, None] * logp[idx + 1])
    out[~hi] = _pinned_amplitude(clean[k0], freqs[k0], freqs[1] - freqs[0], slope) * fine[~hi, None] ** slope
    return out


def _window_power_var(s: np.ndarray, t: float) -> np.ndarray:
    """Variance of the mean square over ``t`` s of a Gaussian signal with PSD ``s`` on the fine grid."""
    fine = (np.arange(s.shape[0]) + 0.5) * FINE_DF_HZ
    kernel = _fejer(fine[:, None] - fine[None, :], t) + _fejer(fine[:, None] + fine[None, :], t)
    return np.sum(s * (kernel @ s), axis=0) * FINE_DF_HZ ** 2 / t


def _fejer(nu: np.ndarray, t: float) -> np.ndarray:
    """Fejer kernel T sinc^2(nu T): unit integral, the spectral window of a T-second mean."""
    return t * np.sinc(nu * t) ** 2


def rms_timeline(rms: np.ndarray, timestamps: np.ndarray, fs: float, good: np.ndarray | None = None
                 ) -> pd.DataFrame:
    """The whole recording as IBL's ``_iblqc_ephysTimeRmsLF`` windows: start, stop (s) and median RMS (µV).

    Why: signal QC reads a few snippets and the lfp stage a few windows, but ibllib's RMS windows cover every
    second of the recording; kept per insertion (``qc/rms_timeline.parquet``) they are the backdrop of the
    report's artifact timeline. ``timestamps`` are window centres (ibldsp WindowGenerator); the median over
    ``good`` channels (all if None).
    """
    timestamps = np.asarray(timestamps, dtype=float).ravel()
    nswin = int(2 ** np.ceil(np.log2(fs * RMS_WIN_LENGTH_SECS)))
    half = _window_lengths(timestamps, fs, nswin) / fs / 2
    rms = np.asarray(rms, dtype=float)[:, _good_channels(good, np.asarray(rms).shape[1])]
    return pd.DataFrame({"t_start_s": timestamps - half, "t_stop_s": timestamps + half,
                         "rms_uv": np.median(rms, axis=1) * 1e6})
