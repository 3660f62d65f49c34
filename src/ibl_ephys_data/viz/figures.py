"""2D figures of single insertions and of the whole dataset (matplotlib, PNG + SVG).

Figures are drawn on bare ``Figure`` objects (no pyplot state, so they are safe in notebooks and worker
processes) and saved at a fixed size and dpi, with a fixed SVG hash salt and without timestamps or software
versions in the metadata: the same inputs give the same bytes, so a changed figure means changed data.

Orientation of the CCF projections: the horizontal axis grows to the viewer's right. In the top and coronal
views it is ML, so the left hemisphere (``ccf_ml_um < 5739``) is on the viewer's left and the midline is
marked; anterior (top view) and dorsal (coronal, sagittal) are up; the sagittal view has anterior on the
left. Stored coordinates are never mirrored.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from scipy import signal

from ibl_ephys_data.atlas import BREGMA_CCF_UM, brain_regions, xyz_to_ccf_um
from ibl_ephys_data.coverage import overlay_channels
from ibl_ephys_data.workspace import Workspace, atomic_path
from ibl_ephys_data.workspace.lfp_store import LfpInsertion, LfpStore

logger = logging.getLogger(__name__)

DPI = 100
FORMATS = ("png", "svg")
SVG_HASH_SALT = "ibl-ephys-data"
MIDLINE_ML_UM = BREGMA_CCF_UM["ml"]
#: Extent of the Allen CCF 25 µm volume (µm): the fixed frame of every projection.
CCF_EXTENT_UM = {"ml": 11400.0, "ap": 13200.0, "dv": 8000.0}
#: view -> (horizontal axis, vertical axis); vertical axes are drawn inverted (anterior / dorsal up).
VIEWS = {"top": ("ml", "ap"), "coronal": ("ml", "dv"), "sagittal": ("ap", "dv")}
VERDICT_ORDER = ("PASS", "WARNING", "FAIL", "CRITICAL", "NOT_SET")
VERDICT_COLORS = {
    "PASS": "#2ca02c",
    "WARNING": "#ff7f0e",
    "FAIL": "#d62728",
    "CRITICAL": "#7f0000",
    "NOT_SET": "#9e9e9e",
}
MISSING_COLOR = "#9e9e9e"
BAD_CHANNEL_LABELS = {1: ("dead", "#1f77b4"), 2: ("noisy", "#d62728"), 3: ("outside brain", "#9467bd")}
ARTIFACT_COLORS = ("#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ALYX_FIELDS = ("qc", "drift_rms_um", "alignment_qc", "experimenter_raw_destripe")
#: (column, label, format, prefix of the ids of the rules on that metric in qc_rules.yaml)
LFP_METRICS = (
    ("snr_db", "Mean SNR", "{:.2f} dB", "snr_"),
    ("power_cv", "LFP Power Coefficient of Variation", "{:.2f}", "power_cv_"),
    ("line_noise_pct", "Line Noise Ratio", "{:.2f}%", "line_noise_"),
    ("spectral_slope", "Spectral Slope", "{:.2f}", "slope_"),
    ("discontinuity_pct", "Discontinuity Percentage", "{:.2f}%", "discontinuity_"),
)
_SEVERITY = re.compile(r"\((WARNING|FAIL|CRITICAL)\)")


@dataclass
class FigureSet:
    """Files written per figure name, and for each figure that could not be drawn, why."""

    paths: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


# saving -------------------------------------------------------------------------------------------
def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``<stem>.<format>`` atomically; byte-stable for the same figure."""
    unknown = sorted(set(formats) - {"png", "svg"})
    if unknown:
        raise ValueError(f"unsupported figure formats {unknown}: use 'png' and/or 'svg'")
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT, "svg.fonttype": "path"}):
        for fmt in formats:
            path = stem.parent / f"{stem.name}.{fmt}"
            metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
            paths.append(path)
    return paths


# regions ------------------------------------------------------------------------------------------
@cache
def _region_index() -> tuple[dict[int, int], dict[str, int]]:
    br = brain_regions()
    by_id: dict[int, int] = {}
    by_acronym: dict[str, int] = {}
    for k, (rid, acronym) in enumerate(zip(br.id, br.acronym, strict=True)):
        if rid >= 0:
            by_id.setdefault(int(rid), k)
            by_acronym.setdefault(str(acronym), int(rid))
    return by_id, by_acronym


def channel_atlas_ids(channels: pd.DataFrame) -> np.ndarray:
    """Allen ids (positive) of channels, from ``atlas_id`` or else ``acronym``; unknown -> 0 (void)."""
    if "atlas_id" in channels:
        ids = pd.to_numeric(channels["atlas_id"], errors="coerce").fillna(0).to_numpy()
        return np.abs(ids).astype(np.int64)
    if "acronym" in channels:
        by_acronym = _region_index()[1]
        return np.array([by_acronym.get(str(a), 0) for a in channels["acronym"]], dtype=np.int64)
    raise ValueError("channels have neither an 'atlas_id' nor an 'acronym' column: pass channels.parquet")


def region_colors(atlas_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Allen colours (n x 3, 0..1) for Allen ids; lateralised ids are folded, void and unknown ids grey."""
    br = brain_regions()
    by_id = _region_index()[0]
    unique, inverse = np.unique(np.abs(np.asarray(atlas_ids, dtype=np.int64)), return_inverse=True)
    rgb = np.tile(np.array(matplotlib.colors.to_rgb(MISSING_COLOR)), (unique.size, 1))
    for k, rid in enumerate(unique):
        index = by_id.get(int(rid))
        if index is not None and rid != 0:
            rgb[k] = br.rgb[index] / 255.0
    return rgb[inverse.ravel()]


def region_acronyms(atlas_ids: Sequence[int] | np.ndarray) -> list[str]:
    """Acronyms of Allen ids, keeping the length (``BrainRegions.id2acronym`` silently drops unknown ids)."""
    br = brain_regions()
    by_id = _region_index()[0]
    return [
        str(br.acronym[by_id[int(r)]]) if int(r) in by_id else "?" for r in np.abs(np.asarray(atlas_ids))
    ]


def _text_color(rgb: np.ndarray) -> str:
    return "black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5 else "white"


def _require(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}: pass the columns of docs/workspace.md")


# per insertion ------------------------------------------------------------------------------------
def region_strip_figure(channels: pd.DataFrame, title: str = "") -> Figure:
    """Regions along the probe (Allen colours and acronyms) next to the probe map with bad channels.

    Depth is ``axial_um`` (µm from the tip, up = dorsal); where two channels share a depth the first wins.
    """
    _require(channels, ("axial_um",), "channels")
    if channels.empty:
        raise ValueError("channels is empty: pass the channels.parquet rows of one insertion")
    ch = channels.copy()
    ch["lateral_um"] = ch["lateral_um"] if "lateral_um" in ch else 0.0
    ch["_id"] = channel_atlas_ids(ch)
    ch = ch.sort_values(["axial_um", "lateral_um"], kind="stable").reset_index(drop=True)
    per_depth = ch.groupby("axial_um", sort=True)["_id"].first()
    depth = per_depth.index.to_numpy(dtype=float)
    ids = per_depth.to_numpy()
    pitch = float(np.median(np.diff(depth))) if depth.size > 1 else 20.0
    mids = (depth[:-1] + depth[1:]) / 2
    lower = np.r_[depth[0] - pitch / 2, mids]
    upper = np.r_[mids, depth[-1] + pitch / 2]
    starts = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
    stops = np.r_[starts[1:], ids.size]
    colors = region_colors(ids[starts])
    acronyms = region_acronyms(ids[starts])

    fig = Figure(figsize=(5.5, 9), dpi=DPI)
    ax_regions, ax_probe = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1.3]})
    for k, (i0, i1) in enumerate(zip(starts, stops, strict=True)):
        lo, hi = lower[i0], upper[i1 - 1]
        ax_regions.add_patch(Rectangle((0, lo), 1, hi - lo, facecolor=colors[k], edgecolor="white", lw=0.5))
        if hi - lo >= 2.5 * pitch:
            ax_regions.text(0.5, (lo + hi) / 2, acronyms[k], ha="center", va="center", fontsize=8,
                            color=_text_color(colors[k]))
    ax_regions.set_xlim(0, 1)
    ax_regions.set_xticks([])
    ax_regions.set_ylim(lower[0], upper[-1])
    ax_regions.set_ylabel("depth along the probe (µm from the tip)")
    ax_regions.set_title("regions (Allen)", fontsize=10)

    ax_probe.scatter(ch["lateral_um"], ch["axial_um"], s=4, c="0.8", linewidths=0)
    labels = pd.to_numeric(ch["bad_channel_label"], errors="coerce") if "bad_channel_label" in ch else None
    if labels is None or labels.isna().all():
        ax_probe.text(0.5, 0.5, "bad-channel labels\nnot computed yet", transform=ax_probe.transAxes,
                      ha="center", va="center", fontsize=9, color="0.3")
    else:
        handles = []
        for value, (name, color) in BAD_CHANNEL_LABELS.items():
            bad = ch[labels == value]
            if len(bad):
                ax_probe.scatter(bad["lateral_um"], bad["axial_um"], s=14, c=color, linewidths=0)
            handles.append(Line2D([], [], ls="", marker="o", color=color, label=f"{name} ({len(bad)})"))
        ax_probe.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.07), fontsize=8,
                        frameon=False)
    lateral = ch["lateral_um"].to_numpy(dtype=float)
    ax_probe.set_xlim(np.nanmin(lateral) - 16, np.nanmax(lateral) + 16)
    ax_probe.set_xlabel("lateral (µm)")
    ax_probe.set_title("channels (bad ones coloured)", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.93, wspace=0.08)
    return fig


def _check_intervals(intervals: pd.DataFrame | None) -> pd.DataFrame:
    if intervals is None:
        return pd.DataFrame({"start_s": [], "stop_s": [], "kind": []})
    if not isinstance(intervals, pd.DataFrame):
        raise ValueError("intervals must be a DataFrame with columns start_s, stop_s (and optionally kind)")
    _require(intervals, ("start_s", "stop_s"), "intervals")
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


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_list(value: Any) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def verdict_of(row: Mapping | pd.Series | None) -> str:
    """The verdict that counts: ``final_verdict`` (after review) if set, else ``verdict``, else NOT_SET."""
    if row is None:
        return "NOT_SET"
    for key in ("final_verdict", "verdict"):
        value = row.get(key)
        if not _is_missing(value) and str(value):
            return str(value).upper()
    return "NOT_SET"


def verdict_color(verdict: Any) -> str:
    if _is_missing(verdict):
        return MISSING_COLOR
    return VERDICT_COLORS.get(str(verdict).upper(), MISSING_COLOR)


def _format_value(value: Any) -> str:
    if _is_missing(value):
        return "null"
    if isinstance(value, float | np.floating):
        return f"{value:.2f}"
    return str(value)


def qc_panel_lines(
    metrics: Mapping | pd.Series, verdict: Mapping | pd.Series | None = None
) -> list[tuple[str, str, str]]:
    """The QC panel as (column, text, colour) lines: Alyx fields, then the five LFP metrics, then the verdict.

    The Alyx ``qc`` is coloured by its level. An LFP metric takes the colour of the worst severity among the
    reasons that name its column (``"<rule> (<SEVERITY>): <column> = ..."``, as the QC stage writes them),
    or of the verdict when only a fired rule id starting with its prefix is known; green otherwise, grey
    when not computed.
    """
    lines = []
    for name in ALYX_FIELDS:
        value = metrics.get(name)
        if name == "qc":
            text = str(value) if not _is_missing(value) else "NOT_SET"
            lines.append((name, f"qc: {text}", verdict_color(text)))
        else:
            lines.append((name, f"{name}: {_format_value(value)}", "black"))
    final = verdict_of(verdict)
    rules = _as_list(verdict.get("fired_rules")) if verdict is not None else []
    reasons = _as_list(verdict.get("reasons")) if verdict is not None else []
    for column, label, fmt, prefix in LFP_METRICS:
        value = metrics.get(column)
        if _is_missing(value):
            lines.append((column, f"{label}: not computed", MISSING_COLOR))
            continue
        severity = _metric_severity(column, prefix, rules, reasons, final)
        lines.append((column, f"{label}: {fmt.format(float(value))}", verdict_color(severity)))
    detail = f" (rules: {', '.join(rules)})" if rules else ""
    lines.append(("verdict", f"verdict: {final}{detail}", verdict_color(final)))
    return lines


def _metric_severity(column: str, prefix: str, rules: list[str], reasons: list[str], final: str) -> str:
    named = re.compile(rf"(?<!\w){re.escape(column)}(?!\w)")
    severities = [match.group(1) for line in reasons if named.search(line)
                  for match in [_SEVERITY.search(line)] if match]
    if not severities and any(rule.startswith(prefix) for rule in rules):
        severities = [final]
    worst = max(severities, key=VERDICT_ORDER.index, default="PASS")
    return worst if worst in ("WARNING", "FAIL", "CRITICAL") else "PASS"


def qc_panel_figure(
    metrics: Mapping | pd.Series, verdict: Mapping | pd.Series | None = None, title: str = ""
) -> Figure:
    """The per-insertion QC panel (Alyx fields left, five LFP metrics right), as the scientists asked for."""
    lines = qc_panel_lines(metrics, verdict)
    alyx, lfp, final = lines[: len(ALYX_FIELDS)], lines[len(ALYX_FIELDS):-1], lines[-1]
    fig = Figure(figsize=(16, 3.2), dpi=DPI)
    for column_x, block in ((0.01, alyx), (0.5, lfp)):
        for k, (_, text, color) in enumerate(block):
            fig.text(column_x, 0.86 - k * 0.14, text, family="monospace", fontsize=15, color=color, va="top")
    fig.text(0.01, 0.12, final[1], family="monospace", fontsize=13, color=final[2], va="top",
             fontweight="bold")
    if title:
        fig.text(0.99, 0.98, title, fontsize=8, color="0.4", ha="right", va="top")
    return fig


# across insertions --------------------------------------------------------------------------------
def ccf_coordinates(channels: pd.DataFrame) -> pd.DataFrame:
    """Allen CCF µm (columns ap, dv, ml) of channels, from ``ccf_*_um`` or else from IBL ``x, y, z`` (m)."""
    if {"ccf_ap_um", "ccf_dv_um", "ccf_ml_um"} <= set(channels.columns):
        return pd.DataFrame(
            {"ap": channels["ccf_ap_um"], "dv": channels["ccf_dv_um"], "ml": channels["ccf_ml_um"]},
            index=channels.index,
        ).astype(float)
    if {"x", "y", "z"} <= set(channels.columns):
        ccf = xyz_to_ccf_um(channels[["x", "y", "z"]].to_numpy(dtype=float))
        return pd.DataFrame(ccf, columns=["ap", "dv", "ml"], index=channels.index)
    raise ValueError("channels have neither ccf_ap_um/ccf_dv_um/ccf_ml_um nor x/y/z: pass channels.parquet")


def projection_coordinates(channels: pd.DataFrame, view: str) -> pd.DataFrame:
    """The (h, v) CCF µm a projection plots, one row per channel (same index); h grows to the right."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: use one of {sorted(VIEWS)}")
    ccf = ccf_coordinates(channels)
    h, v = VIEWS[view]
    return pd.DataFrame({"h": ccf[h], "v": ccf[v]}, index=channels.index)


def _with_verdicts(channels: pd.DataFrame, verdicts: pd.DataFrame | None) -> pd.DataFrame:
    if "verdict" in channels:
        return channels
    if verdicts is None:
        raise ValueError("color_by='verdict' needs a 'verdict' column in channels or the verdicts table")
    _require(verdicts, ("pid",), "verdicts")
    per_pid = {row["pid"]: verdict_of(row) for _, row in verdicts.iterrows()}
    _require(channels, ("pid",), "channels")
    return channels.assign(verdict=channels["pid"].map(per_pid).fillna("NOT_SET"))


def _categories(values: pd.Series, color_by: str) -> tuple[list[str], dict[str, str]]:
    present = sorted(values.unique())
    if color_by == "verdict":
        known = [v for v in VERDICT_ORDER if v in present]
        present = known + [v for v in present if v not in known]
        return present, {v: verdict_color(v) for v in present}
    cmap = matplotlib.colormaps["tab10" if len(present) <= 10 else "tab20"]
    return present, {v: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, v in enumerate(present)}


def projection_figure(
    channels: pd.DataFrame,
    view: str = "top",
    color_by: str = "region",
    verdicts: pd.DataFrame | None = None,
    title: str = "",
) -> Figure:
    """All channels projected on one CCF plane, coloured by region (Allen colours), verdict or any column.

    ``color_by='source'`` (or ``releases``, ``lab``...) colours each value of that column with a legend,
    e.g. to overlay external datasets on IBL channels. The scatter collections hold the plotted (h, v) µm.
    """
    coords = projection_coordinates(channels, view)
    data = channels.copy()
    if color_by == "verdict":
        data = _with_verdicts(data, verdicts)
    elif color_by != "region" and color_by not in data:
        raise ValueError(f"channels have no {color_by!r} column: colour by 'region', 'verdict' or a column")
    valid = coords.notna().all(axis=1).to_numpy()
    if not valid.all():
        logger.warning("%d channels without CCF coordinates are not drawn", int((~valid).sum()))
    coords, data = coords[valid], data[valid]
    h_axis, v_axis = VIEWS[view]

    fig = Figure(figsize=(9.5, 6.5), dpi=DPI)
    ax = fig.add_axes((0.09, 0.1, 0.58, 0.8))
    if view in ("top", "coronal"):
        ax.axvline(MIDLINE_ML_UM, color="0.55", ls="--", lw=1, zorder=1)
        ax.text(MIDLINE_ML_UM, 0, " midline", color="0.45", fontsize=8, va="top", ha="left", zorder=1)
        ax.text(0.02, 0.02, "L", transform=ax.transAxes, fontsize=12, fontweight="bold", color="0.3")
        ax.text(0.98, 0.02, "R", transform=ax.transAxes, fontsize=12, fontweight="bold", color="0.3",
                ha="right")
    handles = []
    if color_by == "region":
        ids = channel_atlas_ids(data)
        ax.scatter(coords["h"], coords["v"], s=3, c=region_colors(ids), linewidths=0, zorder=2,
                   rasterized=True)
        counts = pd.Series(ids).value_counts(sort=False)
        top = counts.sort_values(ascending=False, kind="stable").index[:15]
        for rid, acronym, rgb in zip(top, region_acronyms(top), region_colors(top), strict=True):
            handles.append(Line2D([], [], ls="", marker="o", color=rgb, label=f"{acronym} ({counts[rid]})"))
    else:
        values = data[color_by].map(lambda v: "missing" if _is_missing(v) else str(v))
        order, colors = _categories(values, color_by)
        for value in order:
            mask = (values == value).to_numpy()
            ax.scatter(coords["h"][mask], coords["v"][mask], s=3, c=colors[value], linewidths=0, zorder=2,
                       rasterized=True)
            label = f"{value} ({mask.sum()})"
            handles.append(Line2D([], [], ls="", marker="o", color=colors[value], label=label))
    bregma_h, bregma_v = BREGMA_CCF_UM[h_axis], BREGMA_CCF_UM[v_axis]
    ax.plot([bregma_h], [bregma_v], marker="+", color="black", ms=12, mew=1.5, ls="", zorder=3)
    handles.append(Line2D([], [], ls="", marker="+", color="black", ms=10, label="bregma"))
    ax.set_xlim(0, CCF_EXTENT_UM[h_axis])
    ax.set_ylim(CCF_EXTENT_UM[v_axis], 0)
    ax.set_aspect("equal")
    names = {"ml": "ML (µm, left → right)", "ap": "AP (µm, anterior → posterior)", "dv": "DV (µm)"}
    ax.set_xlabel(names[h_axis])
    ax.set_ylabel({"ap": "AP (µm, anterior up)", "dv": "DV (µm, dorsal up)"}[v_axis])
    n_pids = data["pid"].nunique() if "pid" in data else 0
    ax.set_title(title or f"{view} view: {len(data)} channels, {n_pids} insertions, colour = {color_by}",
                 fontsize=10)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              title=color_by, title_fontsize=9)
    return fig


def ccf_projection_figures(
    channels: pd.DataFrame,
    out_dir: str | os.PathLike,
    color_by: str = "region",
    verdicts: pd.DataFrame | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Coronal, sagittal and top projections of all channels, written as ``ccf_<view>_<color_by>.<fmt>``."""
    paths = []
    for view in ("coronal", "sagittal", "top"):
        fig = projection_figure(channels, view=view, color_by=color_by, verdicts=verdicts)
        paths += save_figure(fig, Path(out_dir) / f"ccf_{view}_{color_by}", formats)
    return paths


# artifacts ----------------------------------------------------------------------------------------
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


# workspace wrappers -------------------------------------------------------------------------------
def _workspace(workspace: Workspace | str | os.PathLike) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def read_optional(path: Path) -> pd.DataFrame | None:
    """A workspace table if it exists, else None (every figure degrades instead of failing)."""
    return pd.read_parquet(path) if Path(path).exists() else None


def read_tables(workspace: Workspace | str | os.PathLike) -> dict[str, pd.DataFrame | None]:
    """Every workspace table the figures and the report use, None for those not written yet."""
    ws = _workspace(workspace)
    paths = {"catalog": ws.catalog, "channels": ws.channels, "metrics": ws.qc_metrics,
             "channel_metrics": ws.qc_channel_metrics, "verdicts": ws.qc_verdicts, "coverage": ws.coverage,
             "external_channels": ws.external_channels}
    return {name: read_optional(path) for name, path in paths.items()}


def _pid_rows(df: pd.DataFrame | None, pid: str) -> pd.DataFrame | None:
    if df is None or "pid" not in df:
        return None
    rows = df[df["pid"].astype(str) == pid]
    return rows if len(rows) else None


def _open_lfp(ws: Workspace, pid: str) -> tuple[LfpInsertion | None, str]:
    store = LfpStore(ws.lfp)
    if not ws.lfp.exists():
        return None, "lfp.zarr is missing: run the lfp stage"
    if store.kind(pid) is None:
        return None, f"lfp.zarr has no group for {pid}"
    if store.attrs(pid).get("complete") is not True or "fs" not in store.attrs(pid):
        return None, f"lfp.zarr/{pid} is incomplete or has no 'fs' attribute"
    return store.open(pid), ""


def _first_window(group: LfpInsertion) -> tuple[int, int, float]:
    windows = group.windows
    n_total = group.shape[1]
    if not windows:
        return 0, n_total, 0.0
    w = windows[0]
    offset = int(w.get("offset", 0))
    stop = min(n_total, offset + int(w.get("n_samples", n_total - offset)))
    return offset, stop, float(w.get("start_s", 0.0))


def write_insertion_figures(
    workspace: Workspace | str | os.PathLike,
    pid: str,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    snapshot_s: float = 2.0,
    psd_s: float = 10.0,
    tables: Mapping[str, pd.DataFrame | None] | None = None,
) -> FigureSet:
    """Region strip, LFP snapshot, PSD heatmap and QC panel of one insertion from the workspace files.

    Each figure whose inputs are missing is skipped with the reason in ``FigureSet.missing``. ``tables``
    (as from :func:`read_tables`, possibly already cut to this pid) saves re-reading them per insertion.
    """
    ws = _workspace(workspace)
    out_dir = Path(out_dir)
    result = FigureSet()
    tables = read_tables(ws) if tables is None else tables
    channels = _pid_rows(tables.get("channels"), pid)
    if channels is None:
        reason = "no channels for this insertion" if ws.channels.exists() else "channels.parquet is missing"
        result.missing["region_strip"] = reason
    else:
        fig = region_strip_figure(channels, title=pid)
        result.paths["region_strip"] = save_figure(fig, out_dir / "region_strip", formats)

    group, reason = _open_lfp(ws, pid)
    if group is None:
        result.missing["lfp_snapshot"] = result.missing["psd_heatmap"] = reason
    else:
        _lfp_figures(ws, pid, group, channels, out_dir, formats, snapshot_s, psd_s, result)

    metrics = _pid_rows(tables.get("metrics"), pid)
    catalog = _pid_rows(tables.get("catalog"), pid)
    verdicts = _pid_rows(tables.get("verdicts"), pid)
    source = metrics if metrics is not None else catalog
    if source is None:
        result.missing["qc_panel"] = "neither qc/metrics.parquet nor catalog.parquet has this insertion"
    else:
        verdict = verdicts.iloc[0] if verdicts is not None else None
        fig = qc_panel_figure(source.iloc[0], verdict, title=pid)
        result.paths["qc_panel"] = save_figure(fig, out_dir / "qc_panel", formats)
    return result


def _lfp_figures(
    ws: Workspace,
    pid: str,
    group: LfpInsertion,
    channels: pd.DataFrame | None,
    out_dir: Path,
    formats: Sequence[str],
    snapshot_s: float,
    psd_s: float,
    result: FigureSet,
) -> None:
    fs = group.fs
    start, stop, t_start = _first_window(group)
    common_mode = group.common_mode(slice(start, stop)) if (group.path / "common_mode").is_dir() else None
    intervals = common_mode_bursts(common_mode, fs, t0=t_start) if common_mode is not None else None
    n_snap = int(min(stop - start, round(snapshot_s * fs)))
    first = start
    if intervals is not None and len(intervals):
        centre = int(round((float(intervals["start_s"].iloc[0]) - t_start) * fs)) + start
        first = int(np.clip(centre - n_snap // 2, start, stop - n_snap))
    lfp = np.asarray(group.lfp(samples=slice(first, first + n_snap)), dtype=float)
    if common_mode is None:
        result.missing["lfp_snapshot"] = f"lfp.zarr/{pid} has no common_mode to rebuild the raw signal from"
    else:
        cm = np.asarray(common_mode[first - start:first - start + n_snap], dtype=float)
        fig = lfp_snapshot_figure(lfp + cm[np.newaxis, :], lfp, fs, intervals,
                                  t0=t_start + (first - start) / fs, title=pid)
        result.paths["lfp_snapshot"] = save_figure(fig, out_dir / "lfp_snapshot", formats)
    n_psd = int(min(stop - start, round(psd_s * fs)))
    depth = None
    raw_ind = group.attrs.get("raw_ind")
    if channels is not None and raw_ind is not None and {"raw_ind", "axial_um"} <= set(channels.columns):
        by_raw = channels.drop_duplicates("raw_ind").set_index("raw_ind")["axial_um"]
        mapped = pd.Series(raw_ind).map(by_raw)
        depth = mapped.to_numpy(dtype=float) if mapped.notna().all() else None
    fig = psd_heatmap_figure(group.lfp(samples=slice(start, start + n_psd)), fs, depth_um=depth,
                             title=f"PSD {pid}")
    result.paths["psd_heatmap"] = save_figure(fig, out_dir / "psd_heatmap", formats)


def write_overview_figures(
    workspace: Workspace | str | os.PathLike, out_dir: str | os.PathLike, formats: Sequence[str] = FORMATS
) -> FigureSet:
    """CCF projections of all channels coloured by region, verdict and (with external channels) source."""
    ws = _workspace(workspace)
    out_dir = Path(out_dir)
    result = FigureSet()
    channels = read_optional(ws.channels)
    if channels is None or channels.empty:
        reason = "channels.parquet is missing" if channels is None else "channels.parquet is empty"
        for name in ("region", "verdict", "source"):
            result.missing[f"ccf_{name}"] = reason
        return result
    result.paths["ccf_region"] = ccf_projection_figures(channels, out_dir, "region", formats=formats)
    verdicts = read_optional(ws.qc_verdicts)
    if verdicts is None:
        result.missing["ccf_verdict"] = "qc/verdicts.parquet is missing: run the qc stage"
    else:
        result.paths["ccf_verdict"] = ccf_projection_figures(channels, out_dir, "verdict", verdicts, formats)
    external = read_optional(ws.external_channels)
    if external is None:
        result.missing["ccf_source"] = "no external_channels.parquet to overlay"
    else:
        both = overlay_channels(channels, read_optional(ws.catalog), external)
        result.paths["ccf_source"] = ccf_projection_figures(both, out_dir, "source", formats=formats)
    return result
