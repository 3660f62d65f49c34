"""The signal of one insertion: LFP before / after destriping, and the per-channel spectrum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy import signal

from ibl_ephys_data.viz.figures.common import DPI, require

ARTIFACT_COLORS = ("#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _check_intervals(intervals: pd.DataFrame | None) -> pd.DataFrame:
    if intervals is None:
        return pd.DataFrame({"start_s": [], "stop_s": [], "kind": []})
    if not isinstance(intervals, pd.DataFrame):
        raise ValueError("intervals must be a DataFrame with columns start_s, stop_s (and optionally kind)")
    require(intervals, ("start_s", "stop_s"), "intervals")
    out = intervals.copy()
    out["kind"] = out["kind"].astype(str) if "kind" in out else "artifact"
    if (out["stop_s"] < out["start_s"]).any():
        raise ValueError("intervals has rows with stop_s < start_s: swap or drop them")
    return out.reset_index(drop=True)


def lfp_snapshot_figure(
    raw: np.ndarray,
    destriped: np.ndarray,
    fs: float,
    intervals: pd.DataFrame | None = None,
    t0: float = 0.0,
    title: str = "",
) -> Figure:
    """Raw and destriped LFP side by side on one colour scale, artifact intervals shaded on both.

    ``raw`` and ``destriped`` are (channels x samples) in µV starting at time ``t0`` (s); ``intervals``
    has ``start_s``, ``stop_s`` (same time base) and optionally ``kind``. One shared scale makes a
    probe-wide stripe visible in the raw panel and its removal visible in the destriped one.
    """
    raw = np.asarray(raw, dtype=float)
    destriped = np.asarray(destriped, dtype=float)
    if raw.ndim != 2 or raw.shape != destriped.shape:
        raise ValueError(
            f"raw {raw.shape} and destriped {destriped.shape} must be 2-D arrays of the same shape "
            "(channels x samples)"
        )
    if not fs > 0:
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs}")
    intervals = _check_intervals(intervals)
    n_channels, n_samples = raw.shape
    t1 = t0 + n_samples / fs
    scale = float(np.nanpercentile(np.abs(destriped), 99)) if destriped.size else 1.0
    scale = scale if scale > 0 else 1.0
    kinds = sorted(intervals["kind"].unique())
    kind_colors = {k: ARTIFACT_COLORS[i % len(ARTIFACT_COLORS)] for i, k in enumerate(kinds)}
    visible = intervals[(intervals["stop_s"] >= t0) & (intervals["start_s"] <= t1)]

    fig = Figure(figsize=(12, 6), dpi=DPI)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, data, name in ((axes[0], raw, "raw (before destriping)"), (axes[1], destriped, "destriped")):
        image = ax.imshow(data, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-scale, vmax=scale,
                          extent=(t0, t1, -0.5, n_channels - 0.5), interpolation="antialiased")
        for row in visible.itertuples():
            ax.axvspan(max(row.start_s, t0), min(row.stop_s, t1), color=kind_colors[row.kind], alpha=0.3,
                       lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes[0].set_ylabel("channel")
    colorbar = fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    colorbar.set_label("µV")
    handles = [Patch(color=kind_colors[k], alpha=0.3, label=k) for k in kinds]
    summary = f"{len(visible)} artifact interval(s) in view" if len(intervals) else "no artifact intervals"
    axes[1].legend(handles=handles, title=summary, loc="upper right", fontsize=8, title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def channel_psd(lfp: np.ndarray, fs: float, segment_s: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of every channel (Hann, 50 % overlap): frequencies (Hz) and power (units²/Hz)."""
    lfp = np.asarray(lfp, dtype=float)
    if lfp.ndim != 2 or lfp.shape[1] < 2:
        raise ValueError(f"lfp must be a 2-D array (channels x samples) with >= 2 samples, got {lfp.shape}")
    if not fs > 0:
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs}")
    nperseg = int(min(lfp.shape[1], max(2, round(segment_s * fs))))
    return signal.welch(lfp, fs=fs, nperseg=nperseg, axis=-1)


def psd_heatmap_figure(
    lfp: np.ndarray,
    fs: float,
    depth_um: Sequence[float] | np.ndarray | None = None,
    fmax: float = 300.0,
    title: str = "",
) -> Figure:
    """Per-channel PSD (dB) as an image, channels sorted by depth: noisy or dead channels show as rows."""
    freqs, psd = channel_psd(lfp, fs)
    keep = freqs <= fmax
    freqs, psd = freqs[keep], psd[:, keep]
    power_db = 10 * np.log10(np.maximum(psd, np.finfo(float).tiny))
    order = np.arange(psd.shape[0])
    if depth_um is not None:
        depth = np.asarray(depth_um, dtype=float)
        if depth.shape != (psd.shape[0],):
            raise ValueError(f"depth_um has {depth.size} values for {psd.shape[0]} channels: one per channel")
        order = np.argsort(depth, kind="stable")
    finite = power_db[np.isfinite(power_db)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))

    fig = Figure(figsize=(8, 7), dpi=DPI)
    ax = fig.subplots()
    image = ax.imshow(power_db[order], aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax,
                      extent=(freqs[0], freqs[-1], -0.5, psd.shape[0] - 0.5), interpolation="nearest")
    ax.set_xlabel("frequency (Hz)")
    if depth_um is None:
        ax.set_ylabel("channel")
    else:
        ticks = np.linspace(0, psd.shape[0] - 1, min(6, psd.shape[0])).round().astype(int)
        ax.set_yticks(ticks, [f"{depth[order][t]:.0f}" for t in ticks])
        ax.set_ylabel("depth along the probe (µm from the tip)")
    fig.colorbar(image, ax=ax).set_label("power (dB re 1 µV²/Hz)")
    ax.set_title(title or "per-channel power spectral density", fontsize=10)
    return fig


def common_mode_bursts(
    common_mode: np.ndarray, fs: float, t0: float = 0.0, threshold: float = 5.0, merge_s: float = 0.05
) -> pd.DataFrame:
    """Common-mode bursts (|cm − median| > threshold · 1.4826 · MAD), merged across gaps < ``merge_s``.

    A display aid that works at any output rate on the stored ``common_mode`` (the QC stage's own detector
    needs raw LF above 2 kHz); not a QC metric.
    """
    cm = np.asarray(common_mode, dtype=float).ravel()
    empty = pd.DataFrame({"start_s": pd.Series(dtype=float), "stop_s": pd.Series(dtype=float),
                          "kind": pd.Series(dtype=str)})
    if cm.size == 0:
        return empty
    deviation = np.abs(cm - np.median(cm))
    mad = 1.4826 * np.median(deviation)
    if mad == 0:
        return empty
    flagged = np.flatnonzero(deviation > threshold * mad)
    if flagged.size == 0:
        return empty
    breaks = np.flatnonzero(np.diff(flagged) > merge_s * fs)
    first = flagged[np.r_[0, breaks + 1]]
    last = flagged[np.r_[breaks, flagged.size - 1]]
    return pd.DataFrame({"start_s": t0 + first / fs, "stop_s": t0 + (last + 1) / fs,
                         "kind": "common-mode burst"})
