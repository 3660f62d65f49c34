"""One insertion's page of the report: facts, verdict and reasons, figures, metrics, channels."""

from __future__ import annotations

import html

import pandas as pd

from ibl_ephys_data.viz.figures.common import FigureSet, as_list, is_missing
from ibl_ephys_data.viz.html import figure_html, frame_table, key_value_table, missing, page, text_cell, verdict_badge
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_LABELS

INSERTION_FIGURES = (
    ("qc_panel", "QC panel: Alyx fields and the five LFP metrics, coloured by the verdict"),
    ("region_strip", "Regions along the probe (Allen colours) and bad channels"),
    ("lfp_snapshot", "LFP before and after destriping, common-mode bursts shaded"),
    ("psd_heatmap", "Per-channel power spectral density"),
)


def insertion_page(
    row: pd.Series, rows: dict[str, pd.DataFrame | None], available: set[str], figures: FigureSet, nav: str
) -> str:
    """One insertion's page; ``rows`` are its rows of each table, ``available`` the tables that exist."""
    pid = row["pid"]
    parts = [f'<nav><a href="../index.html">&larr; all insertions</a>{nav}</nav>',
             f"<h1>Insertion {html.escape(pid)}</h1>"]
    facts = [("subject", "subject"), ("lab", "lab"), ("date", "date"), ("probe", "probe_name"),
             ("releases", "releases"), ("session (eid)", "eid"), ("probe model", "probe_model")]
    items = "".join(f"<dt>{label}</dt><dd>{text_cell(row.get(col))}</dd>" for label, col in facts if col in row)
    parts.append(f"<dl>{items}</dl>" if items else '<p class="missing">catalog.parquet has no row.</p>')
    verdict = row["final"]
    automatic = row.get("verdict")
    rules = as_list(row.get("fired_rules"))
    reasons = as_list(row.get("reasons"))
    overridden = not is_missing(automatic) and str(automatic).upper() != verdict
    note = f" (automatic verdict: {text_cell(automatic)}, overridden by review)" if overridden else ""
    parts.append(f"<h2>Verdict</h2><p>{verdict_badge(verdict)}{note}</p>")
    if rules:
        parts.append("<p>fired rules: " + ", ".join(f"<code>{html.escape(r)}</code>" for r in rules) + "</p>")
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>")
    if "verdicts" not in available:
        parts.append(missing("qc/verdicts.parquet is missing", "qc"))
    parts.append("<h2>Figures</h2>")
    parts += [figure_html(name, caption, figures, "../figures/") for name, caption in INSERTION_FIGURES]
    metrics = rows.get("metrics")
    parts.append("<h2>Metrics</h2>")
    if metrics is not None:
        parts.append(key_value_table(metrics.iloc[0], skip=("pid",)))
    else:
        parts.append(missing("qc/metrics.parquet has no row for it", "qc"))
    parts.append(_channel_section(rows, available))
    return page(f"Insertion {pid}", "\n".join(parts), prefix="../")


def _channel_section(rows: dict[str, pd.DataFrame | None], available: set[str]) -> str:
    """Channel counts, bad labels, regions and the per-channel metrics of one insertion."""
    parts = ["<h2>Channels</h2>"]
    ch = rows.get("channels")
    if ch is not None:
        parts.append(f"<p>{len(ch)} channels.</p>")
        if "bad_channel_label" in ch:
            labels = pd.to_numeric(ch["bad_channel_label"], errors="coerce")
            counts = [f"{name}: {(labels == value).sum()}" for value, name in BAD_CHANNEL_LABELS.items() if value]
            parts.append("<p>bad-channel labels: " + ", ".join(counts) + "</p>")
        region_col = "beryl_acronym" if "beryl_acronym" in ch else "acronym" if "acronym" in ch else None
        if region_col:
            regions = ch[region_col].astype(str).value_counts()
            parts.append("<p>regions (" + region_col + "): "
                         + ", ".join(f"{html.escape(k)} ({v})" for k, v in regions.items()) + "</p>")
    elif "channels" in available:
        parts.append('<p class="missing">channels.parquet has no channel of this insertion.</p>')
    else:
        parts.append(missing("channels.parquet is missing", "channels"))
    per_channel = rows.get("channel_metrics")
    if per_channel is not None:
        cm = per_channel.drop(columns="pid")
        if "usable" in cm:
            parts.append(f"<p>usable channels: {int(cm['usable'].fillna(False).astype(bool).sum())} "
                         f"of {len(cm)}.</p>")
        parts.append(f"<details><summary>per-channel metrics ({len(cm)} rows)</summary>"
                     f"{frame_table(cm)}</details>")
    elif "channel_metrics" in available:
        parts.append('<p class="missing">qc/channel_metrics.parquet has no row for it.</p>')
    else:
        parts.append(missing("qc/channel_metrics.parquet is missing", "qc"))
    return "\n".join(parts)
