"""The static HTML report of a workspace: ``<workspace>/report/index.html``, browsable without Python.

Everything is a static file referenced by relative links (CSS, the sort/filter script, ``plotly.min.js``
written once, PNG/SVG figures), so the report opens from disk (file://) with no server and no network, and
the whole folder can be zipped or copied. Missing inputs never stop the report: each section says what
is missing and which stage writes it. The folder is replaced atomically, so a browser never sees half a
report.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from matplotlib.figure import Figure

from ibl_ephys_data.coverage import NON_REGIONS, import_summary, regions_in_one_source
from ibl_ephys_data.viz.figures import (
    BAD_CHANNEL_LABELS,
    BREGMA_CCF_UM,
    CCF_EXTENT_UM,
    VERDICT_ORDER,
    FigureSet,
    _as_list,
    _is_missing,
    ccf_coordinates,
    channel_atlas_ids,
    read_tables,
    region_colors,
    save_figure,
    verdict_color,
    verdict_of,
    write_insertion_figures,
    write_overview_figures,
)
from ibl_ephys_data.viz.timeline import timeline_section
from ibl_ephys_data.workspace import Workspace, atomic_path

logger = logging.getLogger(__name__)

#: (column, header, format) of the key metrics in the insertions table.
KEY_METRICS = (
    ("snr_db", "SNR (dB)", "{:.2f}"),
    ("power_cv", "power CV", "{:.2f}"),
    ("line_noise_pct", "line noise (%)", "{:.2f}"),
    ("spectral_slope", "slope", "{:.2f}"),
    ("discontinuity_pct", "discontinuity (%)", "{:.2f}"),
    ("n_bad", "bad channels", "{:.0f}"),
)
INSERTION_FIGURES = (
    ("qc_panel", "QC panel: Alyx fields and the five LFP metrics, coloured by the verdict"),
    ("region_strip", "Regions along the probe (Allen colours) and bad channels"),
    ("lfp_snapshot", "LFP before and after destriping, common-mode bursts shaded"),
    ("psd_heatmap", "Per-channel power spectral density"),
)
INPUTS = (
    ("catalog.parquet", "catalog", "the insertion list"),
    ("channels.parquet", "channels", "channel positions and regions"),
    ("lfp.zarr", "lfp", "preprocessed LFP"),
    ("qc/metrics.parquet", "qc", "signal QC metrics"),
    ("qc/channel_metrics.parquet", "qc", "per-channel metrics"),
    ("qc/verdicts.parquet", "qc", "verdicts"),
    ("dataset/DATA_CARD.md", "dataset", "the data card"),
)
COVERAGE_REGIONS = 30  # regions in the coverage bar chart
TRAJECTORY_POINTS = 64  # per insertion in the 3D view: enough for the track, small enough for 700 probes

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-weight: bold; padding: .05em .4em; border-radius: .3em; color: white; }
.missing { color: #8a5a00; background: #fff6e0; padding: .3em .6em; border-left: 3px solid #e0a000; }
.message { font-size: 1.1em; padding: 1em; background: #eef4ff; border-left: 4px solid #3a6ee8; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: .5em; } .gallery figure { flex: 1 1 30%; margin: 0; }
.scroll { overflow-x: auto; }
#filter { font-size: 1em; padding: .3em; width: 24em; }
#trajectories { width: 100%; height: 640px; }
.card { max-width: 60em; } .card pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; } dd { margin: 0; }
.ok { color: #2ca02c; } .absent { color: #d62728; }
"""

SCRIPT = """
"use strict";
function sortKey(cell) {
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  if (raw === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw.toLowerCase();
}
function compareKeys(a, b) {
  if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
  if (typeof a === typeof b) return a < b ? -1 : (a > b ? 1 : 0);
  return typeof a === "number" ? -1 : 1;
}
function sortTable(table, column, header) {
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(th => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row, i) => [sortKey(row.cells[column]), i, row]);
  rows.sort((x, y) => {
    const c = compareKeys(x[0], y[0]);
    if (c !== 0 && x[0] !== null && y[0] !== null) return ascending ? c : -c;
    return c !== 0 ? c : x[1] - y[1];
  });
  rows.forEach(r => body.appendChild(r[2]));
}
function filterTable(table, text, counter) {
  const words = text.toLowerCase().split(/\\s+/).filter(w => w);
  let shown = 0;
  Array.from(table.tBodies[0].rows).forEach(row => {
    const content = row.textContent.toLowerCase();
    const keep = words.every(w => content.includes(w));
    row.hidden = !keep;
    if (keep) shown += 1;
  });
  if (counter) counter.textContent = shown + " of " + table.tBodies[0].rows.length + " insertions shown";
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(table => {
    table.querySelectorAll("th").forEach((th, i) => {
      th.addEventListener("click", () => sortTable(table, i, th));
    });
  });
  const box = document.getElementById("filter");
  const table = document.getElementById("insertions");
  if (box && table) {
    const counter = document.getElementById("shown");
    box.addEventListener("input", () => filterTable(table, box.value, counter));
    filterTable(table, box.value, counter);
  }
});
function hasWebGL() {
  try {
    const canvas = document.createElement("canvas");
    return !!(canvas.getContext("webgl") || canvas.getContext("experimental-webgl"));
  } catch (e) { return false; }
}
function drawFigure(id, figure) {
  const element = document.getElementById(id);
  if (typeof Plotly === "undefined") {
    element.textContent = "plotly.min.js could not be loaded: keep it next to index.html.";
  } else if (!hasWebGL()) {
    element.textContent = "This browser has no WebGL: the 3D view cannot be drawn (the figures still work).";
  } else {
    Plotly.newPlot(element, figure.data, figure.layout, {responsive: true, displaylogo: false});
  }
}
"""


# markdown ---------------------------------------------------------------------------------------
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_EXTERNAL = re.compile(r"^(https?:|mailto:|#)")


def _inline(text: str, resolve_link: Callable[[str], str | None]) -> str:
    codes: list[str] = []

    def stash(match: re.Match) -> str:
        codes.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(stash, text)

    def link(match: re.Match) -> str:
        label, url = match.group(1), match.group(2)
        href = url if _EXTERNAL.match(url) else resolve_link(url)
        label_html = html.escape(label)
        return label_html if href is None else f'<a href="{html.escape(href)}">{label_html}</a>'

    parts = []
    last = 0
    for match in _LINK.finditer(text):
        parts.append(html.escape(text[last:match.start()]))
        parts.append(link(match))
        last = match.end()
    parts.append(html.escape(text[last:]))
    out = "".join(parts)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _ITALIC.sub(r"<em>\1</em>", out)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], out)


def _table_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render_markdown(
    text: str, resolve_link: Callable[[str], str | None] | None = None, heading_offset: int = 1
) -> str:
    """Markdown (headings, paragraphs, lists, tables, code, quotes, links, emphasis) -> HTML, offline.

    A small renderer instead of a dependency: the data card is generated by this project and uses only
    these constructs. Relative links go through ``resolve_link`` (return the new href, or None to keep the
    text without a link), so the report never links to a file that is not there.
    """
    resolve = resolve_link or (lambda url: None)
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph), resolve)}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
        elif heading := re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", stripped):
            flush()
            level = min(6, len(heading.group(1)) + heading_offset)
            out.append(f"<h{level}>{_inline(heading.group(2), resolve)}</h{level}>")
        elif re.match(r"^(-{3,}|\*{3,}|_{3,})$", stripped):
            flush()
            out.append("<hr>")
        elif (stripped.startswith("|") and i + 1 < len(lines)
              and re.match(r"^\|?\s*:?-{2,}", lines[i + 1].strip())):
            flush()
            header = _table_cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_table_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{_inline(c, resolve)}</th>" for c in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c, resolve)}</td>" for c in row) + "</tr>" for row in rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        elif re.match(r"^([-*+]|\d+[.)])\s+", stripped):
            flush()
            ordered = bool(re.match(r"^\d+[.)]\s", stripped))
            items = []
            while i < len(lines) and re.match(r"^\s*([-*+]|\d+[.)])\s+", lines[i]):
                items.append(re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", lines[i]))
                i += 1
                while (i < len(lines) and lines[i].startswith("  ") and lines[i].strip()
                       and not re.match(r"^\s*([-*+]|\d+[.)])\s+", lines[i])):
                    items[-1] += " " + lines[i].strip()
                    i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t, resolve)}</li>" for t in items) + f"</{tag}>")
            continue
        elif stripped.startswith(">"):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].strip())
                i += 1
            out.append(f"<blockquote>{_inline(' '.join(quote), resolve)}</blockquote>")
            continue
        elif not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


# tables -----------------------------------------------------------------------------------------
def _safe_name(pid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(pid))


def insertion_table(tables: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """One row per pid found in any input (catalog order first), with catalog, metric and verdict columns."""
    pids: list[str] = []
    for name in ("catalog", "metrics", "verdicts", "channels", "channel_metrics"):
        df = tables.get(name)
        if df is not None and "pid" in df:
            pids += [str(p) for p in pd.unique(df["pid"]) if str(p) not in pids]
    out = pd.DataFrame({"pid": pids})
    for name in ("catalog", "metrics", "verdicts"):
        df = tables.get(name)
        if df is None or "pid" not in df or df.empty:
            continue
        new = ["pid"] + [c for c in df.columns if c not in out.columns]
        out = out.merge(df[new].drop_duplicates("pid").astype({"pid": str}), on="pid", how="left")
    channels = tables.get("channels")
    if channels is not None and "pid" in channels:
        counts = channels.groupby(channels["pid"].astype(str)).size()
        out["n_channels"] = out["pid"].map(counts)
        if "n_bad" not in out and "bad_channel_label" in channels:
            labels = pd.to_numeric(channels["bad_channel_label"], errors="coerce")
            bad = (labels > 0).groupby(channels["pid"].astype(str)).sum()
            known = labels.notna().groupby(channels["pid"].astype(str)).any()
            out["n_bad"] = out["pid"].map(bad.where(known))
    if "n_bad" not in out:
        parts = [c for c in ("n_dead", "n_noisy", "n_outside") if c in out]
        out["n_bad"] = out[parts].sum(axis=1, min_count=1) if parts else np.nan
    out["final"] = [verdict_of(row) for _, row in out.iterrows()]
    return out


def _verdict_rank(verdict: str) -> int:
    return VERDICT_ORDER.index(verdict) if verdict in VERDICT_ORDER else len(VERDICT_ORDER)


def _text(value: Any) -> str:
    return "" if _is_missing(value) else html.escape(str(value))


def _number_cell(value: Any, fmt: str) -> str:
    if _is_missing(value):
        return '<td class="num" data-sort=""></td>'
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"<td>{_text(value)}</td>"
    return f'<td class="num" data-sort="{number!r}">{html.escape(fmt.format(number))}</td>'


def _verdict_badge(verdict: str) -> str:
    return f'<span class="verdict" style="background:{verdict_color(verdict)}">{html.escape(verdict)}</span>'


def _page(title: str, body: str, prefix: str = "", head: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        f'<link rel="stylesheet" href="{prefix}report.css">\n'
        f'<script src="{prefix}report.js"></script>\n{head}</head>\n<body>\n{body}\n</body>\n</html>\n'
    )


# 3D view ----------------------------------------------------------------------------------------
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
    for verdict in sorted(data["verdict"].unique(), key=lambda v: (_verdict_rank(v), v)):
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


# report -----------------------------------------------------------------------------------------
def _split_by_pid(df: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Rows per pid, cut once: filtering a 270k-channel table per insertion would dominate the report."""
    if df is None or "pid" not in df:
        return {}
    return {str(pid): rows for pid, rows in df.groupby(df["pid"].astype(str), sort=False)}


def _figure_html(name: str, caption: str, figures: FigureSet, prefix: str) -> str:
    if name in figures.missing:
        reason = html.escape(figures.missing[name])
        return f'<p class="missing">{html.escape(caption)}: not drawn, {reason}.</p>'
    paths = figures.paths.get(name, [])
    png = next((p for p in paths if p.suffix == ".png"), None)
    svg = next((p for p in paths if p.suffix == ".svg"), None)
    if png is None and svg is None:
        return ""
    image = png or svg
    link = f' (<a href="{prefix}{image.parent.name}/{svg.name}">SVG</a>)' if svg is not None and png else ""
    return (f'<figure><img src="{prefix}{image.parent.name}/{image.name}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>")


def _key_value_table(row: pd.Series, skip: Sequence[str] = ()) -> str:
    cells = []
    for key, value in row.items():
        if key in skip:
            continue
        if isinstance(value, list | tuple | np.ndarray):
            text = html.escape(", ".join(str(v) for v in value))
        elif isinstance(value, float | np.floating) and not _is_missing(value):
            text = f"{value:.4g}"
        else:
            text = _text(value)
        cells.append(f"<tr><th>{html.escape(str(key))}</th><td>{text}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _frame_table(df: pd.DataFrame, max_rows: int = 500) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for value in row:
            if isinstance(value, float | np.floating) and not _is_missing(value):
                cells.append(f'<td class="num">{value:.4g}</td>')
            else:
                cells.append(f"<td>{_text(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>{len(df) - max_rows} more rows not shown.</p>" if len(df) > max_rows else ""
    body = "".join(rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def _insertion_page(
    row: pd.Series, rows: dict[str, pd.DataFrame | None], available: set[str], figures: FigureSet, nav: str
) -> str:
    """One insertion's page; ``rows`` are its rows of each table, ``available`` the tables that exist."""
    pid = row["pid"]
    parts = [f'<nav><a href="../index.html">&larr; all insertions</a>{nav}</nav>',
             f"<h1>Insertion {html.escape(pid)}</h1>"]
    facts = [("subject", "subject"), ("lab", "lab"), ("date", "date"), ("probe", "probe_name"),
             ("releases", "releases"), ("session (eid)", "eid"), ("probe model", "probe_model")]
    items = "".join(f"<dt>{label}</dt><dd>{_text(row.get(col))}</dd>" for label, col in facts if col in row)
    parts.append(f"<dl>{items}</dl>" if items else '<p class="missing">catalog.parquet has no row.</p>')
    verdict = row["final"]
    automatic = row.get("verdict")
    rules = _as_list(row.get("fired_rules"))
    reasons = _as_list(row.get("reasons"))
    overridden = not _is_missing(automatic) and str(automatic).upper() != verdict
    note = f" (automatic verdict: {_text(automatic)}, overridden by review)" if overridden else ""
    parts.append(f"<h2>Verdict</h2><p>{_verdict_badge(verdict)}{note}</p>")
    if rules:
        parts.append("<p>fired rules: " + ", ".join(f"<code>{html.escape(r)}</code>" for r in rules) + "</p>")
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>")
    if "verdicts" not in available:
        parts.append('<p class="missing">qc/verdicts.parquet is missing: run the qc stage.</p>')
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(name, caption, figures, "../figures/") for name, caption in INSERTION_FIGURES]
    metrics = rows.get("metrics")
    parts.append("<h2>Metrics</h2>")
    if metrics is not None:
        parts.append(_key_value_table(metrics.iloc[0], skip=("pid",)))
    else:
        parts.append('<p class="missing">qc/metrics.parquet has no row for it: run the qc stage.</p>')
    parts.append(_channel_section(rows, available))
    return _page(f"Insertion {pid}", "\n".join(parts), prefix="../")


def _channel_section(rows: dict[str, pd.DataFrame | None], available: set[str]) -> str:
    parts = ["<h2>Channels</h2>"]
    ch = rows.get("channels")
    if ch is not None:
        parts.append(f"<p>{len(ch)} channels.</p>")
        if "bad_channel_label" in ch:
            labels = pd.to_numeric(ch["bad_channel_label"], errors="coerce")
            counts = [f"{name}: {(labels == value).sum()}" for value, (name, _) in BAD_CHANNEL_LABELS.items()]
            parts.append("<p>bad-channel labels: " + ", ".join(counts) + "</p>")
        region_col = "beryl_acronym" if "beryl_acronym" in ch else "acronym" if "acronym" in ch else None
        if region_col:
            regions = ch[region_col].astype(str).value_counts()
            parts.append("<p>regions (" + region_col + "): "
                         + ", ".join(f"{html.escape(k)} ({v})" for k, v in regions.items()) + "</p>")
    elif "channels" in available:
        parts.append('<p class="missing">channels.parquet has no channel of this insertion.</p>')
    else:
        parts.append('<p class="missing">channels.parquet is missing: run the channels stage.</p>')
    per_channel = rows.get("channel_metrics")
    if per_channel is not None:
        cm = per_channel.drop(columns="pid")
        if "usable" in cm:
            parts.append(f"<p>usable channels: {int(cm['usable'].fillna(False).astype(bool).sum())} "
                         f"of {len(cm)}.</p>")
        parts.append(f"<details><summary>per-channel metrics ({len(cm)} rows)</summary>"
                     f"{_frame_table(cm)}</details>")
    elif "channel_metrics" in available:
        parts.append('<p class="missing">qc/channel_metrics.parquet has no row for it.</p>')
    else:
        parts.append('<p class="missing">qc/channel_metrics.parquet is missing: run the qc stage.</p>')
    return "\n".join(parts)


def _index_table(table: pd.DataFrame, pages: dict[str, str]) -> str:
    headers = ["pid", "release", "lab", "subject", "date", "verdict", "fired rules", "Alyx qc"]
    headers += [h for _, h, _ in KEY_METRICS]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = []
    for _, row in table.iterrows():
        pid = row["pid"]
        verdict = row["final"]
        rules = _as_list(row.get("fired_rules"))
        cells = [
            f'<td data-sort="{html.escape(pid)}"><a href="{pages[pid]}" title="{html.escape(pid)}">'
            f"{html.escape(pid[:8])}</a></td>",
            f"<td>{_text(row.get('releases'))}</td>",
            f"<td>{_text(row.get('lab'))}</td>",
            f"<td>{_text(row.get('subject'))}</td>",
            f"<td>{_text(row.get('date'))}</td>",
            f'<td class="verdict-cell" data-sort="{_verdict_rank(verdict)}">{_verdict_badge(verdict)}</td>',
            f"<td>{html.escape(', '.join(rules))}</td>",
            f"<td>{_text(row.get('qc'))}</td>",
        ]
        cells += [_number_cell(row.get(col), fmt) for col, _, fmt in KEY_METRICS]
        rows.append(f'<tr data-pid="{html.escape(pid)}">' + "".join(cells) + "</tr>")
    return (
        '<p><input id="filter" type="search" placeholder="filter: lab, subject, verdict, rule..." '
        'aria-label="filter insertions"> <span id="shown"></span></p>'
        '<p>Click a column header to sort (again to reverse); verdicts sort by severity.</p>'
        f'<div class="scroll"><table id="insertions" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _inputs_section(ws: Workspace) -> str:
    items = []
    for rel, stage, what in INPUTS:
        present = (ws.root / rel).exists()
        status = '<span class="ok">present</span>' if present else (
            f'<span class="absent">missing</span>: run <code>ibl-ephys-data {stage}</code>')
        items.append(f"<li><code>{rel}</code> ({what}): {status}</li>")
    return "<h2 id=\"inputs\">Inputs</h2><ul>" + "".join(items) + "</ul>"


def _coverage_chart(coverage: pd.DataFrame, out_dir: Path, formats: Sequence[str]) -> str:
    """Channels per region, one bar colour per source, for the regions with the most channels overall."""
    regions = coverage[~coverage["region"].isin(NON_REGIONS)]
    wide = regions.pivot_table(index="region", columns="source", values="n_channels", aggfunc="sum",
                               fill_value=0)
    if wide.empty:
        return '<p class="missing">coverage.parquet has no channel in a brain region (only void / root).</p>'
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False, kind="stable").index[:COVERAGE_REGIONS]]
    sources = list(wide.columns)
    height = 1.0 / (len(sources) + 1)
    fig = Figure(figsize=(10, min(0.3 * len(wide) * max(1, len(sources) / 2) + 1.5, 30)), dpi=100)
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
    paths = save_figure(fig, out_dir / "coverage", formats)
    image = next((p for p in paths if p.suffix == ".png"), paths[0])
    return (f'<figure><img src="figures/overview/{image.name}" alt="coverage: channels per region">'
            f"<figcaption>channels per region and source, the {len(wide)} regions with the most channels "
            "(void and root left out)</figcaption></figure>")


def _coverage_section(coverage: pd.DataFrame | None, out_dir: Path, formats: Sequence[str],
                      imports: pd.DataFrame | None = None) -> str:
    if coverage is None and (imports is None or imports.empty):
        return ""
    parts = ['<h2 id="coverage">Coverage</h2>']
    if imports is not None and not imports.empty:
        parts.append("<p>Imported external channel tables: rows read, stored, and excluded by reason "
                     "(first reason per row).</p>" + _frame_table(imports))
    if coverage is None:
        parts.append('<p class="missing">coverage.parquet is missing: run '
                     "<code>ibl-ephys-data coverage</code>.</p>")
        return "\n".join(parts)
    if {"region", "source", "n_channels", "n_insertions"} <= set(coverage.columns):
        first = coverage.iloc[0] if len(coverage) else pd.Series(dtype=object)
        which = "usable channels only" if bool(first.get("usable_only", False)) else "all channels"
        totals = ", ".join(f"{k}: {v}" for k, v in coverage.groupby("source")["n_channels"].sum().items())
        parts.append(f"<p>Level: {html.escape(str(first.get('level', '?')))}; {which}; "
                     f"channels per source: {html.escape(totals)}.</p>")
        parts.append(_coverage_chart(coverage, out_dir, formats))
        only = regions_in_one_source(coverage)
        if len(only):
            parts.append(f"<details><summary>{len(only)} regions only one source has</summary>"
                         f"{_frame_table(only)}</details>")
        parts.append(_frame_table(coverage))
        return "\n".join(parts)
    numeric = [c for c in coverage.columns if pd.api.types.is_numeric_dtype(coverage[c])
               and not pd.api.types.is_bool_dtype(coverage[c])]
    labels = [c for c in coverage.columns if c not in numeric]
    if numeric and len(coverage):
        value = numeric[0]
        names = coverage[labels[0]].astype(str) if labels else coverage.index.astype(str)
        shown = min(len(coverage), 60)
        fig = Figure(figsize=(10, 0.25 * shown + 1.2), dpi=100)
        ax = fig.subplots()
        ax.barh(np.arange(shown), coverage[value].to_numpy(dtype=float)[:shown], color="#3a6ee8")
        ax.set_yticks(np.arange(shown), names[:shown].tolist(), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(value)
        fig.subplots_adjust(left=0.25, right=0.97, top=1 - 0.4 / fig.get_figheight(),
                            bottom=0.8 / fig.get_figheight())
        paths = save_figure(fig, out_dir / "coverage", formats)
        image = next((p for p in paths if p.suffix == ".png"), paths[0])
        parts.append(f'<figure><img src="figures/overview/{image.name}" alt="coverage: {html.escape(value)}">'
                     f"<figcaption>{html.escape(value)} per {html.escape(labels[0] if labels else 'row')}"
                     f"{' (first 60 rows)' if len(coverage) > shown else ''}</figcaption></figure>")
    else:
        parts.append('<p class="missing">coverage.parquet has no numeric column to chart.</p>')
    parts.append(_frame_table(coverage))
    return "\n".join(parts)


def _data_card_section(ws: Workspace) -> str:
    card = ws.dataset_dir / "DATA_CARD.md"
    if not card.exists():
        return ('<h2 id="data-card">Data card</h2><p class="missing">dataset/DATA_CARD.md is missing: '
                "run <code>ibl-ephys-data dataset</code>.</p>")

    def resolve(url: str) -> str | None:
        target = url.split("#")[0]
        if not target or "://" in target or target.startswith("/"):
            return None
        return f"../dataset/{url}" if (ws.dataset_dir / target).exists() else None

    body = render_markdown(card.read_text(encoding="utf-8"), resolve, heading_offset=2)
    return f'<h2 id="data-card">Data card</h2><div class="card">{body}</div>'


def _trajectories_section(channels: pd.DataFrame | None, verdicts: pd.DataFrame | None) -> tuple[str, bool]:
    if channels is None or channels.empty:
        return ('<h2 id="trajectories-3d">3D trajectories</h2><p class="missing">channels.parquet is missing '
                "or empty: run the channels stage.</p>"), False
    figure = json.loads(pio.to_json(trajectories_figure(channels, verdicts), pretty=False))
    figure["layout"].pop("template", None)
    payload = json.dumps(figure, separators=(",", ":")).replace("</", "<\\/")
    return ('<h2 id="trajectories-3d">3D trajectories</h2><div id="trajectories"></div>'
            f'<script>drawFigure("trajectories", {payload});</script>'), True


def _overview_section(figures: FigureSet) -> str:
    parts = ['<h2 id="projections">CCF projections</h2>',
             "<p>Left hemisphere on the viewer's left in the top and coronal views (dashed line: midline); "
             "anterior is up in the top view and left in the sagittal view.</p>"]
    for name, label in (("ccf_region", "region"), ("ccf_verdict", "verdict"), ("ccf_source", "source")):
        if name in figures.missing:
            parts.append(f'<p class="missing">coloured by {label}: {html.escape(figures.missing[name])}.</p>')
            continue
        pngs = [p for p in figures.paths.get(name, []) if p.suffix == ".png"] or figures.paths.get(name, [])
        gallery = []
        for path in pngs:
            view = path.stem.split("_")[1]
            gallery.append(f'<figure><img src="figures/overview/{path.name}" alt="{view} view by {label}">'
                           f"<figcaption>{view} view, coloured by {label}</figcaption></figure>")
        parts.append('<div class="gallery">' + "".join(gallery) + "</div>")
    return "\n".join(parts)


def write_report(
    workspace: Workspace | str | os.PathLike, formats: Sequence[str] = ("png",), snapshot_s: float = 2.0
) -> Path:
    """Write ``<workspace>/report/`` (index, one page per insertion, figures, 3D view) and return index.html.

    ``formats`` are the figure formats (add ``"svg"`` for vector copies, linked from each figure; it roughly
    doubles the time). The report folder is replaced as a whole.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.root.is_dir():
        raise FileNotFoundError(f"workspace {ws.root} does not exist: pass the folder the pipeline writes to")
    tables = read_tables(ws)
    imports = import_summary(ws)
    table = insertion_table(tables)
    available = {name for name, df in tables.items() if df is not None}
    per_pid = {name: _split_by_pid(tables[name])
               for name in ("catalog", "channels", "metrics", "channel_metrics", "verdicts")}
    with atomic_path(ws.report_dir) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "report.css").write_text(CSS, encoding="utf-8")
        (tmp / "report.js").write_text(SCRIPT, encoding="utf-8")
        pages = {pid: f"insertions/{_safe_name(pid)}.html" for pid in table["pid"]}
        pids = list(table["pid"])
        for k, (_, row) in enumerate(table.iterrows()):
            pid = row["pid"]
            logger.info("report: insertion %d/%d %s", k + 1, len(pids), pid)
            rows = {name: groups.get(pid) for name, groups in per_pid.items()}
            figures = write_insertion_figures(ws, pid, tmp / "figures" / _safe_name(pid), formats, snapshot_s,
                                              tables=rows)
            nav = "".join(
                f' <a href="{_safe_name(pids[j])}.html">{label}</a>'
                for j, label in ((k - 1, "&larr; previous"), (k + 1, "next &rarr;")) if 0 <= j < len(pids)
            )
            page = _insertion_page(row, rows, available, figures, nav)
            timeline = timeline_section(ws, pid, tmp / "figures" / _safe_name(pid), "../figures/")  # viz.timeline
            page = page.replace("<h2>Metrics</h2>", timeline + "<h2>Metrics</h2>", 1)
            (tmp / pages[pid]).parent.mkdir(parents=True, exist_ok=True)
            (tmp / pages[pid]).write_text(page, encoding="utf-8")
        overview = write_overview_figures(ws, tmp / "figures" / "overview", formats)
        trajectories, has_3d = _trajectories_section(tables["channels"], tables["verdicts"])
        if has_3d:
            (tmp / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        body = [f"<h1>ibl-ephys-data report</h1><p>workspace: <code>{html.escape(str(ws.root))}</code></p>",
                '<nav><a href="#insertions-section">insertions</a><a href="#trajectories-3d">3D</a>'
                '<a href="#projections">projections</a>'
                + ('<a href="#coverage">coverage</a>' if tables["coverage"] is not None or len(imports)
                   else "")
                + '<a href="#data-card">data card</a><a href="#inputs">inputs</a></nav>',
                '<h2 id="insertions-section">Insertions</h2>']
        if table.empty:
            body.append('<p class="message" id="empty">No insertions in this workspace yet: catalog.parquet '
                        "and the other stage outputs are missing. Run <code>ibl-ephys-data catalog</code> "
                        "(or <code>ibl-ephys-data demo</code>) and the later stages, then write the report "
                        "again.</p>")
        else:
            counts = table["final"].value_counts()
            order = sorted(counts.index, key=lambda v: (_verdict_rank(v), v))
            summary = ", ".join(f"{v}: {counts[v]}" for v in order)
            body.append(f"<p>{len(table)} insertions ({html.escape(summary)}).</p>")
            body.append(_index_table(table, pages))
        body += [trajectories, _overview_section(overview),
                 _coverage_section(tables["coverage"], tmp / "figures" / "overview", formats, imports),
                 _data_card_section(ws), _inputs_section(ws)]
        head = '<script src="plotly.min.js"></script>\n' if has_3d else ""
        (tmp / "index.html").write_text(_page("ibl-ephys-data report", "\n".join(body), head=head),
                                        encoding="utf-8")
    index = ws.report_dir / "index.html"
    logger.info("report written to %s", index)
    return index
