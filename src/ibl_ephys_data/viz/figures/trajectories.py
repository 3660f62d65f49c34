"""The interactive 3D view of the report (plotly): every insertion's channels, one line per probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ibl_ephys_data.atlas import BREGMA_CCF_UM, CCF_EXTENT_UM, channel_atlas_ids, region_colors
from ibl_ephys_data.viz.figures.common import verdict_color, verdict_of, verdict_rank
from ibl_ephys_data.viz.figures.projections import ccf_coordinates

TRAJECTORY_POINTS = 64  # per insertion in the 3D view: enough for the track, small enough for 700 probes


def trajectories_figure(channels: pd.DataFrame, verdicts: pd.DataFrame | None = None) -> go.Figure:
    """Plotly 3D view of every insertion's channels, one line per probe coloured by verdict.

    Axes are IBL-like µm from bregma (x right +, y anterior +, z dorsal +), a right-handed frame, viewed
    from behind and above so the left hemisphere is on the viewer's left. Points are Allen region colours.
    """
    ccf = ccf_coordinates(channels)
    data = pd.DataFrame({
        "pid": channels["pid"].astype(str).to_numpy() if "pid" in channels else "",
        "x": (ccf["ml"] - BREGMA_CCF_UM["ml"]).to_numpy(),
        "y": (BREGMA_CCF_UM["ap"] - ccf["ap"]).to_numpy(),
        "z": (BREGMA_CCF_UM["dv"] - ccf["dv"]).to_numpy(),
        "axial": channels["axial_um"].to_numpy() if "axial_um" in channels else np.arange(len(channels)),
        "acronym": channels["acronym"].astype(str).to_numpy() if "acronym" in channels else "",
        "rgb": [f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"
                for r, g, b in region_colors(channel_atlas_ids(channels))],
    }).dropna(subset=["x", "y", "z"])
    per_pid = {}
    if verdicts is not None and "pid" in verdicts:
        per_pid = {str(row["pid"]): verdict_of(row) for _, row in verdicts.iterrows()}
    data["verdict"] = data["pid"].map(per_pid).fillna("NOT_SET")
    fig = go.Figure()
    for verdict in sorted(data["verdict"].unique(), key=lambda v: (verdict_rank(v), v)):
        xs: list[float | None] = []
        ys: list[float | None] = []
        zs: list[float | None] = []
        texts: list[str | None] = []
        colors: list[str] = []
        subset = data[data["verdict"] == verdict]
        for pid, probe in subset.groupby("pid", sort=True):
            probe = probe.sort_values("axial", kind="stable")
            step = max(1, int(np.ceil(len(probe) / TRAJECTORY_POINTS)))
            probe = probe.iloc[::step]
            xs += probe["x"].round(1).tolist() + [None]
            ys += probe["y"].round(1).tolist() + [None]
            zs += probe["z"].round(1).tolist() + [None]
            texts += [f"{pid[:8]} {a}" for a in probe["acronym"]] + [None]
            colors += probe["rgb"].tolist() + ["rgb(0,0,0)"]
        fig.add_trace(go.Scatter3d(
            x=xs, y=ys, z=zs, text=texts, mode="lines+markers", name=f"{verdict} ({subset['pid'].nunique()})",
            line={"color": verdict_color(verdict), "width": 4}, marker={"size": 2, "color": colors},
            hoverinfo="text",
        ))
    # the frame is the whole CCF volume, so probes are seen where they are in the brain
    ranges = {
        "x": [-BREGMA_CCF_UM["ml"], CCF_EXTENT_UM["ml"] - BREGMA_CCF_UM["ml"]],
        "y": [BREGMA_CCF_UM["ap"] - CCF_EXTENT_UM["ap"], BREGMA_CCF_UM["ap"]],
        "z": [BREGMA_CCF_UM["dv"] - CCF_EXTENT_UM["dv"], BREGMA_CCF_UM["dv"]],
    }
    fig.add_trace(go.Scatter3d(x=[0], y=[0], z=[0], mode="markers+text", text=["bregma"], name="bregma",
                               marker={"size": 5, "color": "black", "symbol": "cross"}))
    fig.update_layout(
        scene={"xaxis": {"title": {"text": "ML (µm, right +)"}, "range": ranges["x"]},
               "yaxis": {"title": {"text": "AP (µm, anterior +)"}, "range": ranges["y"]},
               "zaxis": {"title": {"text": "DV (µm, dorsal +)"}, "range": ranges["z"]},
               "aspectmode": "data",
               "camera": {"eye": {"x": 0.4, "y": -1.8, "z": 1.0}, "up": {"x": 0, "y": 0, "z": 1}}},
        margin={"l": 0, "r": 0, "t": 30, "b": 0}, legend={"title": {"text": "verdict"}},
        title={"text": "Channels of every insertion (left hemisphere on the left)"},
    )
    return fig
