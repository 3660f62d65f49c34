"""The per-insertion QC panel the scientists asked for: Alyx's own fields left, the five LFP metrics right.

The Alyx fields are shown as Alyx wrote them, from the insertion's ``catalog.parquet`` row (``qc: PASS``,
``alignment_qc: high``); the QC stage's metrics table holds numeric versions of them for the rules and is no
place to read them back from. A metric is coloured by the worst severity among the fired rules on it, read
from ``verdicts.parquet``'s ``fired_metrics`` / ``fired_severities`` columns (data, never parsed prose).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ibl_ephys_data.viz.figures.common import DPI, as_list, is_missing, verdict_color, verdict_of
from ibl_ephys_data.workspace.schema import MISSING_COLOR, VERDICT_ORDER

#: Alyx fields of the panel, as catalog.parquet stores them.
ALYX_FIELDS = ("qc", "drift_rms_um", "alignment_qc", "experimenter_raw_destripe")
#: (column, label, format) of the five LFP metrics.
LFP_METRICS = (
    ("snr_db", "Mean SNR", "{:.2f} dB"),
    ("power_cv", "LFP Power Coefficient of Variation", "{:.2f}"),
    ("line_noise_pct", "Line Noise Ratio", "{:.2f}%"),
    ("spectral_slope", "Spectral Slope", "{:.2f}"),
    ("discontinuity_pct", "Discontinuity Percentage", "{:.2f}%"),
)


def _format_value(value: object) -> str:
    if is_missing(value):
        return "null"
    if isinstance(value, float | np.floating):
        return f"{value:.2f}"
    return str(value)


def metric_severity(column: str, verdict: Mapping | pd.Series | None) -> str | None:
    """Worst severity of the fired rules on ``column`` (PASS when none fired); None when the verdicts
    table predates the ``fired_metrics`` / ``fired_severities`` columns (re-run the qc stage)."""
    if verdict is None:
        return "PASS"
    if "fired_metrics" not in verdict or "fired_severities" not in verdict:
        return None
    severities = [s for m, s in zip(as_list(verdict.get("fired_metrics")), as_list(verdict.get("fired_severities")),
                                    strict=True) if m == column]
    return max(severities, key=VERDICT_ORDER.index, default="PASS")


def qc_panel_lines(
    metrics: Mapping | pd.Series,
    verdict: Mapping | pd.Series | None = None,
    alyx: Mapping | pd.Series | None = None,
) -> list[tuple[str, str, str]]:
    """The QC panel as (column, text, colour) lines: Alyx fields, then the five LFP metrics, then the verdict.

    ``alyx`` is the insertion's catalog row (Alyx fields as Alyx wrote them); without it they are looked up
    in ``metrics``. The Alyx ``qc`` is coloured by its level; an LFP metric by :func:`metric_severity`
    (black when unknown), grey when not computed.
    """
    alyx = metrics if alyx is None else alyx
    lines = []
    for name in ALYX_FIELDS:
        value = alyx.get(name)
        if name == "qc":
            text = str(value) if not is_missing(value) else "NOT_SET"
            lines.append((name, f"qc: {text}", verdict_color(text)))
        else:
            lines.append((name, f"{name}: {_format_value(value)}", "black"))
    final = verdict_of(verdict)
    rules = as_list(verdict.get("fired_rules")) if verdict is not None else []
    for column, label, fmt in LFP_METRICS:
        value = metrics.get(column)
        if is_missing(value):
            lines.append((column, f"{label}: not computed", MISSING_COLOR))
            continue
        severity = metric_severity(column, verdict)
        colour = "black" if severity is None else verdict_color(severity)
        lines.append((column, f"{label}: {fmt.format(float(value))}", colour))
    detail = f" (rules: {', '.join(rules)})" if rules else ""
    lines.append(("verdict", f"verdict: {final}{detail}", verdict_color(final)))
    return lines


def qc_panel_figure(
    metrics: Mapping | pd.Series,
    verdict: Mapping | pd.Series | None = None,
    title: str = "",
    alyx: Mapping | pd.Series | None = None,
) -> Figure:
    """The panel of :func:`qc_panel_lines` drawn as a wide figure (Alyx left, LFP metrics right, verdict below)."""
    lines = qc_panel_lines(metrics, verdict, alyx)
    alyx_lines, lfp, final = lines[: len(ALYX_FIELDS)], lines[len(ALYX_FIELDS):-1], lines[-1]
    fig = Figure(figsize=(16, 3.2), dpi=DPI)
    for column_x, block in ((0.01, alyx_lines), (0.5, lfp)):
        for k, (_, text, color) in enumerate(block):
            fig.text(column_x, 0.86 - k * 0.14, text, family="monospace", fontsize=15, color=color, va="top")
    fig.text(0.01, 0.12, final[1], family="monospace", fontsize=13, color=final[2], va="top",
             fontweight="bold")
    if title:
        fig.text(0.99, 0.98, title, fontsize=8, color="0.4", ha="right", va="top")
    return fig
