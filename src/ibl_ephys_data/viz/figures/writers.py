"""The figures of the report, written from the workspace files: per insertion, and across insertions.

Each figure whose inputs are missing is skipped with the reason, so a report never fails on a stage
that has not run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ibl_ephys_data.coverage import overlay_channels
from ibl_ephys_data.errors import command_hint
from ibl_ephys_data.viz.figures.common import (
    FORMATS,
    FigureSet,
    as_workspace,
    pid_rows,
    read_optional,
    read_tables,
    save_figure,
)
from ibl_ephys_data.viz.figures.probe import region_strip_figure
from ibl_ephys_data.viz.figures.projections import ccf_projection_figures
from ibl_ephys_data.viz.figures.qc_panel import qc_panel_figure
from ibl_ephys_data.viz.figures.signals import common_mode_bursts, lfp_snapshot_figure, psd_heatmap_figure
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpInsertion, LfpStore


def _open_lfp(ws: Workspace, pid: str) -> tuple[LfpInsertion | None, str]:
    """One insertion's stored LFP, or None and why it cannot be drawn."""
    if not ws.lfp.exists():
        return None, f"lfp.zarr is missing: run `{command_hint('lfp')}`"
    store = LfpStore(ws.lfp)
    if store.kind(pid) is None:
        return None, f"lfp.zarr has no group for {pid}"
    if store.attrs(pid).get("complete") is not True or "fs" not in store.attrs(pid):
        return None, f"lfp.zarr/{pid} is incomplete or has no 'fs' attribute"
    return store.open(pid), ""


def _first_window(group: LfpInsertion) -> tuple[int, int, float]:
    """(start, stop, start_s) of the first stored window, or the whole array when none is listed."""
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
    ws = as_workspace(workspace)
    out_dir = Path(out_dir)
    result = FigureSet()
    tables = read_tables(ws) if tables is None else tables
    channels = pid_rows(tables.get("channels"), pid)
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

    metrics = pid_rows(tables.get("metrics"), pid)
    catalog = pid_rows(tables.get("catalog"), pid)
    verdicts = pid_rows(tables.get("verdicts"), pid)
    if metrics is None and catalog is None:
        result.missing["qc_panel"] = "neither qc/metrics.parquet nor catalog.parquet has this insertion"
    else:
        verdict = verdicts.iloc[0] if verdicts is not None else None
        alyx = catalog.iloc[0] if catalog is not None else None
        values = metrics.iloc[0] if metrics is not None else pd.Series(dtype=object)
        fig = qc_panel_figure(values, verdict, title=pid, alyx=alyx)
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
    ws = as_workspace(workspace)
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
        result.missing["ccf_verdict"] = f"qc/verdicts.parquet is missing: run `{command_hint('qc')}`"
    else:
        result.paths["ccf_verdict"] = ccf_projection_figures(channels, out_dir, "verdict", verdicts, formats)
    external = read_optional(ws.external_channels)
    if external is None:
        result.missing["ccf_source"] = "no external_channels.parquet to overlay"
    else:
        both = overlay_channels(channels, read_optional(ws.catalog), external)
        result.paths["ccf_source"] = ccf_projection_figures(both, out_dir, "source", formats=formats)
    return result
