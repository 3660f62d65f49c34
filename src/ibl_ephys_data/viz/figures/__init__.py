"""2D figures (matplotlib, PNG + SVG) and the report's 3D view (plotly), one module per subject.

``common`` (saving, tables, verdict colours), ``probe`` (regions and bad channels along a probe),
``signals`` (LFP snapshot, spectra), ``qc_panel``, ``projections`` (CCF planes), ``coverage`` (charts),
``trajectories`` (3D), and ``writers``, which draws them from a workspace.
"""

from ibl_ephys_data.viz.figures.common import FORMATS, FigureSet, read_tables, save_figure, verdict_color, verdict_of
from ibl_ephys_data.viz.figures.probe import region_strip_figure
from ibl_ephys_data.viz.figures.projections import (
    ccf_coordinates,
    ccf_projection_figures,
    projection_coordinates,
    projection_figure,
)
from ibl_ephys_data.viz.figures.qc_panel import qc_panel_figure, qc_panel_lines
from ibl_ephys_data.viz.figures.signals import (
    channel_psd,
    common_mode_bursts,
    lfp_snapshot_figure,
    psd_heatmap_figure,
)
from ibl_ephys_data.viz.figures.trajectories import trajectories_figure
from ibl_ephys_data.viz.figures.writers import write_insertion_figures, write_overview_figures

__all__ = [
    "FORMATS", "FigureSet", "ccf_coordinates", "ccf_projection_figures", "channel_psd", "common_mode_bursts",
    "lfp_snapshot_figure", "projection_coordinates", "projection_figure", "psd_heatmap_figure",
    "qc_panel_figure", "qc_panel_lines", "read_tables", "region_strip_figure", "save_figure",
    "trajectories_figure", "verdict_color", "verdict_of", "write_insertion_figures", "write_overview_figures",
]
