"""The static HTML report of a workspace: ``<workspace>/report/index.html``, browsable without Python.

Everything is a static file referenced by relative links (CSS, the sort/filter script, ``plotly.min.js``
written once, PNG/SVG figures), so the report opens from disk (file://) with no server and no network, and
the whole folder can be zipped or copied. Missing inputs never stop the report: each section says what
is missing and which stage writes it. The folder is replaced atomically, so a browser never sees half a
report. Markup is in ``viz/assets`` (:mod:`ibl_ephys_data.viz.html`), figures in
:mod:`ibl_ephys_data.viz.figures`, one insertion's page in :mod:`ibl_ephys_data.viz.insertion_page`.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
import plotly.offline

from ibl_ephys_data.baseline.report import baseline_section
from ibl_ephys_data.coverage import channels_per_region, import_summary, regions_in_one_source
from ibl_ephys_data.errors import MissingInputError, command_hint
from ibl_ephys_data.viz.figures.common import (
    FigureSet,
    as_list,
    as_workspace,
    read_tables,
    save_figure,
    verdict_of,
    verdict_rank,
)
from ibl_ephys_data.viz.figures.coverage import COVERAGE_REGIONS, GENERIC_ROWS, column_figure, coverage_figure
from ibl_ephys_data.viz.figures.trajectories import trajectories_figure
from ibl_ephys_data.viz.figures.writers import write_insertion_figures, write_overview_figures
from ibl_ephys_data.viz.html import (
    STATIC_ASSETS,
    asset,
    frame_table,
    missing,
    number_cell,
    page,
    safe_name,
    text_cell,
    verdict_badge,
)
from ibl_ephys_data.viz.insertion_page import insertion_page
from ibl_ephys_data.viz.markdown import render_markdown
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

#: (file, stage that writes it, what it holds) of the inputs section.
INPUTS = (
    ("catalog.parquet", "catalog", "the insertion list"),
    ("channels.parquet", "channels", "channel positions and regions"),
    ("lfp.zarr", "lfp", "preprocessed LFP"),
    ("qc/metrics.parquet", "qc", "signal QC metrics"),
    ("qc/channel_metrics.parquet", "qc", "per-channel metrics"),
    ("qc/verdicts.parquet", "qc", "verdicts"),
    ("dataset/DATA_CARD.md", "dataset", "the data card"),
)


def _split_by_pid(df: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Rows per pid, cut once: filtering a 270k-channel table per insertion would dominate the report."""
    if df is None or "pid" not in df:
        return {}
    return {str(pid): rows for pid, rows in df.groupby(df["pid"].astype(str), sort=False)}


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


def _index_table(table: pd.DataFrame, pages: dict[str, str]) -> str:
    """The sortable, filterable table of all insertions, linking to their pages."""
    headers = ["pid", "release", "lab", "subject", "date", "verdict", "fired rules", "Alyx qc"]
    headers += [h for _, h, _ in KEY_METRICS]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = []
    for _, row in table.iterrows():
        pid = row["pid"]
        verdict = row["final"]
        rules = as_list(row.get("fired_rules"))
        cells = [
            f'<td data-sort="{html.escape(pid)}"><a href="{pages[pid]}" title="{html.escape(pid)}">'
            f"{html.escape(pid[:8])}</a></td>",
            f"<td>{text_cell(row.get('releases'))}</td>",
            f"<td>{text_cell(row.get('lab'))}</td>",
            f"<td>{text_cell(row.get('subject'))}</td>",
            f"<td>{text_cell(row.get('date'))}</td>",
            f'<td class="verdict-cell" data-sort="{verdict_rank(verdict)}">{verdict_badge(verdict)}</td>',
            f"<td>{html.escape(', '.join(rules))}</td>",
            f"<td>{text_cell(row.get('qc'))}</td>",
        ]
        cells += [number_cell(row.get(col), fmt) for col, _, fmt in KEY_METRICS]
        rows.append(f'<tr data-pid="{html.escape(pid)}">' + "".join(cells) + "</tr>")
    return (
        '<p><input id="filter" type="search" placeholder="filter: lab, subject, verdict, rule..." '
        'aria-label="filter insertions"> <span id="shown"></span></p>'
        '<p>Click a column header to sort (again to reverse); verdicts sort by severity.</p>'
        f'<div class="scroll"><table id="insertions" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _inputs_section(ws: Workspace) -> str:
    """Which stage outputs exist, with the command for each missing one."""
    items = []
    for rel, stage, what in INPUTS:
        present = (ws.root / rel).exists()
        status = '<span class="ok">present</span>' if present else (
            f'<span class="absent">missing</span>: run <code>{html.escape(command_hint(stage))}</code>')
        items.append(f"<li><code>{rel}</code> ({what}): {status}</li>")
    return "<h2 id=\"inputs\">Inputs</h2><ul>" + "".join(items) + "</ul>"


def _coverage_chart(coverage: pd.DataFrame, out_dir: Path, formats: Sequence[str]) -> str:
    """Channels per region, one bar colour per source: the pivot ``ibl-ephys-data coverage`` prints."""
    wide = channels_per_region(coverage, COVERAGE_REGIONS)
    if wide.empty:
        return '<p class="missing">coverage.parquet has no channel in a brain region (only void / root).</p>'
    paths = save_figure(coverage_figure(wide), out_dir / "coverage", formats)
    image = next((p for p in paths if p.suffix == ".png"), paths[0])
    return (f'<figure><img src="figures/overview/{image.name}" alt="coverage: channels per region">'
            f"<figcaption>channels per region and source, the {len(wide)} regions with the most channels "
            "(void and root left out)</figcaption></figure>")


def _coverage_section(coverage: pd.DataFrame | None, out_dir: Path, formats: Sequence[str],
                      imports: pd.DataFrame | None = None) -> str:
    """Imported tables, channels per region and source, and the coverage table."""
    if coverage is None and (imports is None or imports.empty):
        return ""
    parts = ['<h2 id="coverage">Coverage</h2>']
    if imports is not None and not imports.empty:
        parts.append("<p>Imported external channel tables: rows read, stored, and excluded by reason "
                     "(first reason per row).</p>" + frame_table(imports))
    if coverage is None:
        parts.append(missing("coverage.parquet is missing", "coverage"))
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
                         f"{frame_table(only)}</details>")
        parts.append(frame_table(coverage))
        return "\n".join(parts)
    numeric = [c for c in coverage.columns if pd.api.types.is_numeric_dtype(coverage[c])
               and not pd.api.types.is_bool_dtype(coverage[c])]
    labels = [c for c in coverage.columns if c not in numeric]
    if numeric and len(coverage):
        value = numeric[0]
        names = coverage[labels[0]].astype(str) if labels else coverage.index.astype(str)
        fig = column_figure(names, coverage[value].to_numpy(dtype=float), value)
        paths = save_figure(fig, out_dir / "coverage", formats)
        image = next((p for p in paths if p.suffix == ".png"), paths[0])
        parts.append(f'<figure><img src="figures/overview/{image.name}" alt="coverage: {html.escape(value)}">'
                     f"<figcaption>{html.escape(value)} per {html.escape(labels[0] if labels else 'row')}"
                     f"{f' (first {GENERIC_ROWS} rows)' if len(coverage) > GENERIC_ROWS else ''}"
                     "</figcaption></figure>")
    else:
        parts.append('<p class="missing">coverage.parquet has no numeric column to chart.</p>')
    parts.append(frame_table(coverage))
    return "\n".join(parts)


def _data_card_section(ws: Workspace) -> str:
    """The dataset's data card, its links kept only to files that exist."""
    card = ws.dataset_dir / "DATA_CARD.md"
    if not card.exists():
        return '<h2 id="data-card">Data card</h2>' + missing("dataset/DATA_CARD.md is missing", "dataset")

    def resolve(url: str) -> str | None:
        target = url.split("#")[0]
        if not target or "://" in target or target.startswith("/"):
            return None
        return f"../dataset/{url}" if (ws.dataset_dir / target).exists() else None

    body = render_markdown(card.read_text(encoding="utf-8"), resolve, heading_offset=2)
    return f'<h2 id="data-card">Data card</h2><div class="card">{body}</div>'


def _trajectories_section(channels: pd.DataFrame | None, verdicts: pd.DataFrame | None) -> tuple[str, bool]:
    """The plotly 3D view, inlined as JSON; False when there is nothing to draw."""
    if channels is None or channels.empty:
        return ('<h2 id="trajectories-3d">3D trajectories</h2>'
                + missing("channels.parquet is missing or empty", "channels")), False
    figure = json.loads(pio.to_json(trajectories_figure(channels, verdicts), pretty=False))
    figure["layout"].pop("template", None)
    payload = json.dumps(figure, separators=(",", ":")).replace("</", "<\\/")
    return ('<h2 id="trajectories-3d">3D trajectories</h2><div id="trajectories"></div>'
            f'<script>drawFigure("trajectories", {payload});</script>'), True


def _overview_section(figures: FigureSet) -> str:
    """The CCF projections, one gallery per colouring."""
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
    ws = as_workspace(workspace)
    if not ws.root.is_dir():
        raise MissingInputError(f"workspace {ws.root} does not exist: pass the folder the pipeline writes to")
    tables = read_tables(ws)
    imports = import_summary(ws)
    table = insertion_table(tables)
    available = {name for name, df in tables.items() if df is not None}
    per_pid = {name: _split_by_pid(tables[name])
               for name in ("catalog", "channels", "metrics", "channel_metrics", "verdicts")}
    with atomic_path(ws.report_dir) as tmp:
        tmp.mkdir(parents=True)
        for name in STATIC_ASSETS:
            (tmp / name).write_text(asset(name), encoding="utf-8")
        pages = {pid: f"insertions/{safe_name(pid)}.html" for pid in table["pid"]}
        pids = list(table["pid"])
        for k, (_, row) in enumerate(table.iterrows()):
            pid = row["pid"]
            logger.info("report: insertion %d/%d %s", k + 1, len(pids), pid)
            rows = {name: groups.get(pid) for name, groups in per_pid.items()}
            figures = write_insertion_figures(ws, pid, tmp / "figures" / safe_name(pid), formats, snapshot_s,
                                              tables=rows)
            nav = "".join(
                f' <a href="{safe_name(pids[j])}.html">{label}</a>'
                for j, label in ((k - 1, "&larr; previous"), (k + 1, "next &rarr;")) if 0 <= j < len(pids)
            )
            text = insertion_page(row, rows, available, figures, nav)
            timeline = timeline_section(ws, pid, tmp / "figures" / safe_name(pid), "../figures/")
            text = text.replace("<h2>Metrics</h2>", timeline + "<h2>Metrics</h2>", 1)
            (tmp / pages[pid]).parent.mkdir(parents=True, exist_ok=True)
            (tmp / pages[pid]).write_text(text, encoding="utf-8")
        overview = write_overview_figures(ws, tmp / "figures" / "overview", formats)
        trajectories, has_3d = _trajectories_section(tables["channels"], tables["verdicts"])
        if has_3d:
            (tmp / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        body = [f"<h1>ibl-ephys-data report</h1><p>workspace: <code>{html.escape(ws.location)}</code></p>",
                '<nav><a href="#insertions-section">insertions</a><a href="#trajectories-3d">3D</a>'
                '<a href="#projections">projections</a>'
                + ('<a href="#coverage">coverage</a>' if tables["coverage"] is not None or len(imports)
                   else "")
                + '<a href="#data-card">data card</a><a href="#inputs">inputs</a></nav>',
                '<h2 id="insertions-section">Insertions</h2>']
        if table.empty:
            body.append('<p class="message" id="empty">No insertions in this workspace yet: catalog.parquet '
                        f"and the other stage outputs are missing. Run <code>{html.escape(command_hint('catalog'))}"
                        "</code> (or <code>ibl-ephys-data demo</code>) and the later stages, then write the "
                        "report again.</p>")
        else:
            counts = table["final"].value_counts()
            order = sorted(counts.index, key=lambda v: (verdict_rank(v), v))
            summary = ", ".join(f"{v}: {counts[v]}" for v in order)
            body.append(f"<p>{len(table)} insertions ({html.escape(summary)}).</p>")
            body.append(_index_table(table, pages))
        body += [trajectories, _overview_section(overview),
                 _coverage_section(tables["coverage"], tmp / "figures" / "overview", formats, imports),
                 baseline_section(ws, tmp), _data_card_section(ws), _inputs_section(ws)]
        head = '<script src="plotly.min.js"></script>\n' if has_3d else ""
        (tmp / "index.html").write_text(page("ibl-ephys-data report", "\n".join(body), head=head),
                                        encoding="utf-8")
    index = ws.report_dir / "index.html"
    logger.info("report written to %s", index)
    return index
