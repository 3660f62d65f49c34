"""The probe of one insertion: regions along the shank (Allen colours) next to the bad-channel map."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ibl_ephys_data.atlas import channel_atlas_ids, region_acronyms, region_colors
from ibl_ephys_data.viz.figures.common import DPI, require
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_COLORS, BAD_CHANNEL_LABELS


def _text_color(rgb: np.ndarray) -> str:
    """Black on light colours, white on dark ones (luma above one half)."""
    return "black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5 else "white"


def region_strip_figure(channels: pd.DataFrame, title: str = "") -> Figure:
    """Regions along the probe (Allen colours and acronyms) next to the probe map with bad channels.

    Depth is ``axial_um`` (µm from the tip, up = dorsal); where two channels share a depth the first wins.
    """
    require(channels, ("axial_um",), "channels")
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
        for value, color in BAD_CHANNEL_COLORS.items():
            name = BAD_CHANNEL_LABELS[value]
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
