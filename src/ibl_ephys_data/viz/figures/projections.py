"""All channels of a workspace projected on the CCF planes, coloured by region, verdict or any column.

Orientation: the horizontal axis grows to the viewer's right. In the top and coronal views it is ML, so the
left hemisphere (``ccf_ml_um`` below bregma's) is on the viewer's left and the midline is marked; anterior
(top view) and dorsal (coronal, sagittal) are up; the sagittal view has anterior on the left. Stored
coordinates are never mirrored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ibl_ephys_data.atlas import (
    BREGMA_CCF_UM,
    CCF_EXTENT_UM,
    channel_atlas_ids,
    region_acronyms,
    region_colors,
    xyz_to_ccf_um,
)
from ibl_ephys_data.viz.figures.common import (
    DPI,
    FORMATS,
    is_missing,
    require,
    save_figure,
    verdict_color,
    verdict_of,
)
from ibl_ephys_data.workspace.schema import VERDICT_ORDER

logger = logging.getLogger(__name__)

#: view -> (horizontal axis, vertical axis); vertical axes are drawn inverted (anterior / dorsal up).
VIEWS = {"top": ("ml", "ap"), "coronal": ("ml", "dv"), "sagittal": ("ap", "dv")}


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
    require(verdicts, ("pid",), "verdicts")
    per_pid = {row["pid"]: verdict_of(row) for _, row in verdicts.iterrows()}
    require(channels, ("pid",), "channels")
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
        ax.axvline(BREGMA_CCF_UM["ml"], color="0.55", ls="--", lw=1, zorder=1)
        ax.text(BREGMA_CCF_UM["ml"], 0, " midline", color="0.45", fontsize=8, va="top", ha="left", zorder=1)
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
        values = data[color_by].map(lambda v: "missing" if is_missing(v) else str(v))
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
