"""Coverage charts: channels per region and source (the pivot the command line prints), or any table."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ibl_ephys_data.viz.figures.common import DPI

#: regions in the coverage bar chart
COVERAGE_REGIONS = 30
#: rows in the chart of a table that is not a coverage table
GENERIC_ROWS = 60


def coverage_figure(wide: pd.DataFrame) -> Figure:
    """Horizontal bars of :func:`ibl_ephys_data.coverage.channels_per_region`: one colour per source."""
    sources = list(wide.columns)
    height = 1.0 / (len(sources) + 1)
    fig = Figure(figsize=(10, min(0.3 * len(wide) * max(1, len(sources) / 2) + 1.5, 30)), dpi=DPI)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    for k, name in enumerate(sources):
        offset = (k - (len(sources) - 1) / 2) * height
        ax.barh(np.arange(len(wide)) + offset, wide[name].to_numpy(dtype=float), height=height,
                color=cmap(k % cmap.N), label=str(name))
    ax.set_yticks(np.arange(len(wide)), wide.index.astype(str).tolist(), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("channels")
    ax.legend(title="source", fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.15, right=0.97, top=1 - 0.4 / fig.get_figheight(),
                        bottom=0.8 / fig.get_figheight())
    return fig


def column_figure(names: pd.Series, values: np.ndarray, label: str) -> Figure:
    """Bars of one numeric column of a table that is not a coverage table, one per row (first rows)."""
    shown = min(len(values), GENERIC_ROWS)
    fig = Figure(figsize=(10, 0.25 * shown + 1.2), dpi=DPI)
    ax = fig.subplots()
    ax.barh(np.arange(shown), np.asarray(values, dtype=float)[:shown], color="#3a6ee8")
    ax.set_yticks(np.arange(shown), names[:shown].tolist(), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    fig.subplots_adjust(left=0.25, right=0.97, top=1 - 0.4 / fig.get_figheight(),
                        bottom=0.8 / fig.get_figheight())
    return fig
