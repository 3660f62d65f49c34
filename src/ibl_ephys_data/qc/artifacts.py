"""Probe-wide artifacts in raw LF snippets: saturation, jumps, flat runs, common-mode bursts (DESIGN §7).

Motion, electrical transients and amplifier saturation hit every channel at once; a per-channel metric
averaged over channels dilutes them, so they are measured on the probe as a whole. Samples flagged as
discontinuities (saturation, common-mode jumps, flat runs) are zeroed before anything spectral is
computed, so one event is counted once (by ``discontinuity_pct``) instead of inflating every other metric.

All functions take raw LF in volts as ``(n_samples, n_channels)`` and a boolean ``good`` mask over channels
(bad-channel label 0); the band-limited signal they share is 1-100 Hz with +/-2 Hz around the 50 and 60 Hz
line harmonics removed, so stationary mains pickup is left to the line-noise metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

#: NP1 LF full scale in volts: imAiRangeMax 0.6 V over LF gain 250 (spikeglx ``Reader.range_volts``).
NP1_LF_RANGE_VOLTS = 0.6 / 250
SATURATION_LEVEL = 0.96  # fraction of the range, as ibldsp.voltage.saturation
CHANNEL_PROPORTION = 0.2  # a sample is an artifact when more than this fraction of good channels agree
JUMP_MADS = 10.0  # |dx| > JUMP_MADS * 1.4826 * MAD(dx)
MAD_STRIDE = 5
FLAT_SECONDS = 0.010
BAND_HZ = (1.0, 100.0)
#: the two mains families (Hz): every QC spectrum treats harmonics of both, whichever the lab has
LINE_FAMILIES_HZ = (50.0, 60.0)
LINE_EXCLUSION_HZ = 2.0
WINDOW_SECONDS = 1.0
BURST_MADS = 5.0  # common-mode window rms > median + BURST_MADS * MAD
COBURST_FACTOR = 5.0  # channel window power > COBURST_FACTOR * its own median
BAND_FS_HZ = 250.0  # the band signal is resampled to about this rate: it holds nothing above 100 Hz



@dataclass
class PreparedSnippet:
    """One snippet reduced to what every metric needs, computed once.

    ``clean`` is (n_channels, n_samples) float32 volts, each channel's DC offset (mean of its unflagged
    samples) removed and discontinuity samples set to zero; ``power`` is (n_channels, n_windows)
    mean-square band signal per 1-s window; ``cm_rms`` is the rms of the common mode (median over good
    channels) per window.
    """

    fs: float
    good: np.ndarray
    clean: np.ndarray
    masks: dict[str, np.ndarray]
    discontinuity: np.ndarray
    power: np.ndarray
    cm_rms: np.ndarray
    striping_ratio: float


def check_volts(volts: np.ndarray, fs: float, good: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (n_samples, n_channels) volts array and a good-channel mask; return them as arrays."""
    volts = np.asarray(volts)
    if volts.ndim != 2:
        raise ValueError(f"volts must be 2-D (n_samples, n_channels), got shape {volts.shape}")
    if not np.isfinite(fs) or fs <= 2000:
        raise ValueError(f"fs={fs}: signal QC needs raw LF sampled above 2000 Hz (NP LF is 2500 Hz)")
    if volts.shape[0] < round(WINDOW_SECONDS * fs):
        raise ValueError(f"volts has {volts.shape[0]} samples: pass at least {WINDOW_SECONDS} s of LF")
    good = np.ones(volts.shape[1], bool) if good is None else np.asarray(good)
    if good.dtype != bool or good.shape != (volts.shape[1],):
        raise ValueError(
            f"good must be a boolean mask of length n_channels={volts.shape[1]}, "
            f"got {good.dtype} {good.shape}"
        )
    if not good.any():
        raise ValueError("good selects no channel: pass a mask with at least one good (label 0) channel")
    if not np.isfinite(volts).all():
        raise ValueError("volts contains NaN or inf: pass raw LF as read by spikeglx.Reader")
    return volts, good


def discontinuity_masks(
    volts: np.ndarray, fs: float, good: np.ndarray | None = None,
    range_volts: float | np.ndarray = NP1_LF_RANGE_VOLTS,
) -> dict[str, np.ndarray]:
    """Per-sample boolean masks of the three discontinuity kinds, each voted by > 20 % of good channels.

    ``saturation``: |x| above 0.96 x the ADC range (``ibldsp.voltage.saturation``'s absolute criterion);
    ``jump``: |dx| > 10 x 1.4826 x MAD(dx) of the channel (the sample after the jump is flagged);
    ``flat``: inside a run of identical values lasting >= 10 ms.
    The kinds are disjoint (saturation wins over flat, both over jump), so their union counts each once.
    """
    volts, good = check_volts(volts, fs, good)
    return _masks(np.ascontiguousarray(volts.T[good], dtype=np.float32), fs, _good_range(range_volts, good))


def _good_range(range_volts: float | np.ndarray, good: np.ndarray) -> float | np.ndarray:
    rv = np.asarray(range_volts, dtype=float)
    if rv.ndim == 0:
        return float(rv)
    if rv.shape != good.shape:
        raise ValueError(
            f"range_volts has shape {rv.shape}: pass a scalar or one value per channel {good.shape}"
        )
    return rv[good]


def _median_rows(a: np.ndarray) -> np.ndarray:
    """Median of each row, via np.partition: several times faster than np.median on float32 rows."""
    n = a.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=1)[:, k]
    part = np.partition(a, [k - 1, k], axis=1)
    return (part[:, k - 1] + part[:, k]) / 2


def _masks(xg: np.ndarray, fs: float, range_volts: float | np.ndarray) -> dict[str, np.ndarray]:
    """``xg`` is (n_good, n_samples) float32 volts of the good channels only."""
    nc, ns = xg.shape
    # ibldsp.voltage.saturation's absolute criterion (v_per_sec=None), without importing its plotting stack
    rv = np.broadcast_to(np.asarray(range_volts, dtype=np.float32), (nc,))[:, None]
    sat = (np.abs(xg) > SATURATION_LEVEL * rv).mean(axis=0) > CHANNEL_PROPORTION
    d = np.diff(xg, axis=1)
    # the MAD is a scale estimate: every MAD_STRIDE-th difference gives it to ~2 % at a fifth of the cost
    sub = np.ascontiguousarray(d[:, ::MAD_STRIDE])
    mad = _median_rows(np.abs(sub - _median_rows(sub)[:, None]))[:, None]
    big = (np.abs(d) > JUMP_MADS * 1.4826 * mad) & (mad > 0)
    jump = np.zeros(ns, bool)
    jump[1:] = big.mean(axis=0) > CHANNEL_PROPORTION
    n_flat = max(2, int(np.ceil(FLAT_SECONDS * fs)))
    flat = np.zeros(ns, bool)
    if ns >= n_flat:
        # a run of n_flat equal samples starting at s is n_flat - 1 consecutive zero differences
        zeros = np.zeros((nc, ns), np.int32)
        np.cumsum(d == 0, axis=1, out=zeros[:, 1:])
        starts = zeros[:, n_flat - 1:] - zeros[:, : ns - n_flat + 1] == n_flat - 1
        if starts.any():
            # n_starts[:, n_flat - 1 + k] counts runs starting before sample k; sample j is flat when
            # a run starts anywhere in [j - n_flat + 1, j]
            n_starts = np.zeros((nc, ns + 1), np.int32)
            np.cumsum(starts, axis=1, out=n_starts[:, n_flat:])
            j = np.arange(ns)
            first = np.maximum(j - n_flat + 1, 0) + n_flat - 1
            covered = n_starts[:, np.minimum(j + n_flat, ns)] - n_starts[:, first]
            flat = (covered > 0).mean(axis=0) > CHANNEL_PROPORTION
    # disjoint kinds: a saturated stretch is also flat and starts with a jump; count it as saturation
    flat &= ~sat
    jump &= ~(sat | flat)
    return {"saturation": sat, "jump": jump, "flat": flat}


def line_bins(freqs: np.ndarray, half_width_hz: float = LINE_EXCLUSION_HZ) -> np.ndarray:
    """Frequencies within ``half_width_hz`` of any harmonic of 50 or 60 Hz (both families, always)."""
    near = np.zeros(freqs.shape, bool)
    for f0 in LINE_FAMILIES_HZ:
        harmonic = np.maximum(np.round(freqs / f0), 1) * f0
        near |= np.abs(freqs - harmonic) <= half_width_hz
    return near


def prepare_snippet(
    volts: np.ndarray, fs: float, good: np.ndarray | None = None,
    range_volts: float | np.ndarray = NP1_LF_RANGE_VOLTS,
) -> PreparedSnippet:
    """Flag discontinuities, zero them, and compute the 1-s band powers and common mode of one snippet.

    ``volts`` is never written to: ``clean`` is always a new array (a spikeglx slice is float32 and
    column-ordered, so a transposed view would otherwise alias it and zero the caller's saturated samples).
    """
    volts, good = check_volts(volts, fs, good)
    x = np.array(volts.T, dtype=np.float32, order="C", copy=True)
    masks = _masks(x[good] if not good.all() else x, fs, _good_range(range_volts, good))
    disc = masks["saturation"] | masks["jump"] | masks["flat"]
    # DC offset from the unflagged samples only, so a saturated stretch does not shift it
    n_kept = disc.size - int(disc.sum())
    if n_kept:
        offset = (x.sum(axis=1, dtype=np.float64) - x[:, disc].sum(axis=1, dtype=np.float64)) / n_kept
        x -= offset.astype(np.float32)[:, None]
    x[:, disc] = 0
    power, cm_rms, striping = _band_windows(x, fs, good)
    return PreparedSnippet(fs=fs, good=good, clean=x, masks=masks, discontinuity=disc,
                           power=power, cm_rms=cm_rms, striping_ratio=striping)


def _band_windows(x: np.ndarray, fs: float, good: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Band-limit (1-100 Hz, line bins out) by FFT, resample to ~250 Hz, and take 1-s window powers.

    The linear trend joining the first and last sample is removed first so the FFT's implicit periodic
    extension has no step, whose 1/f^2 leakage would otherwise swamp a 1/f^2 LFP at every frequency
    (subtracted in the frequency domain, where the ramp's spectrum is known, to spare a full copy).
    """
    decim = max(1, int(fs // BAND_FS_HZ))
    n_win = int(round(WINDOW_SECONDS * fs)) // decim  # output samples per window
    n_windows = x.shape[1] // (n_win * decim)
    n = n_windows * n_win * decim
    n_out = n // decim
    n_bins = n_out // 2 + 1  # only bins below the output Nyquist (~125 Hz) are needed
    freqs = np.fft.rfftfreq(n, 1 / fs)[:n_bins]
    keep = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1]) & ~line_bins(freqs)
    spec = scipy.fft.rfft(x[:, :n], axis=1)[:, :n_bins]
    ramp = scipy.fft.rfft(np.linspace(0, 1, n))[:n_bins]  # DC bin aside, the offset adds nothing
    spec -= (x[:, n - 1] - x[:, 0]).astype(np.float64)[:, None] * ramp[None, :]
    band = scipy.fft.irfft(spec * keep, n=n_out, axis=1).astype(np.float32) * np.float32(n_out / n)
    power = (band.reshape(band.shape[0], n_windows, n_win).astype(np.float64) ** 2).mean(axis=2)
    cm = _median_rows(np.ascontiguousarray(band[good].T)).astype(np.float64)
    cm_rms = np.sqrt((cm.reshape(n_windows, n_win) ** 2).mean(axis=1))
    channel_rms = np.sqrt(power[good].mean(axis=1))
    median_rms = float(np.median(channel_rms))
    striping = float(np.sqrt(np.mean(cm**2)) / median_rms) if median_rms > 0 else float("nan")
    return power, cm_rms, striping


def pool_artifacts(snippets: list[PreparedSnippet]) -> dict[str, float]:
    """Probe-wide measures over several snippets of one insertion.

    Event rates are pooled (a median over snippets would hide an event that lands in one snippet);
    the striping ratio is a steady-state property and takes the median over snippets.
    """
    if not snippets:
        raise ValueError("pool_artifacts needs at least one prepared snippet")
    n_samples = sum(s.discontinuity.size for s in snippets)
    cm_rms = np.concatenate([s.cm_rms for s in snippets])
    power = np.concatenate([s.power[s.good] for s in snippets], axis=1)
    return {
        "cm_burst_pct": 100 * float(np.mean(_cm_burst_windows(cm_rms))) if cm_rms.size >= 3 else float("nan"),
        "striping_ratio": float(np.median([s.striping_ratio for s in snippets])),
        "coburst_fraction": float(_coburst(power).max()) if power.shape[1] >= 3 else float("nan"),
        "saturation_pct": 100 * sum(int(s.masks["saturation"].sum()) for s in snippets) / n_samples,
    }


def _cm_burst_windows(cm_rms: np.ndarray) -> np.ndarray:
    med = np.median(cm_rms)
    return cm_rms > med + BURST_MADS * 1.4826 * np.median(np.abs(cm_rms - med))


def _coburst(power: np.ndarray) -> np.ndarray:
    """Fraction of channels per window whose band power exceeds 5x the channel's own median."""
    med = np.median(power, axis=1, keepdims=True)
    return ((power > COBURST_FACTOR * med) & (med > 0)).mean(axis=0)


def probe_artifacts(
    volts: np.ndarray, fs: float, good: np.ndarray | None = None,
    range_volts: float | np.ndarray = NP1_LF_RANGE_VOLTS,
) -> dict[str, float]:
    """cm_burst_pct, striping_ratio, coburst_fraction, saturation_pct of one (n_samples, n_channels) array."""
    return pool_artifacts([prepare_snippet(volts, fs, good, range_volts)])
