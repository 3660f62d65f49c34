"""HTML building blocks of the report: the page template, cells, badges, tables, figures.

Markup lives in package files (``viz/assets``: the page template, the stylesheet and the sort / filter
script), read with importlib.resources; this module only fills them in, escaping every value.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from string import Template
from typing import Any

import numpy as np
import pandas as pd

from ibl_ephys_data.errors import command_hint
from ibl_ephys_data.viz.figures.common import FigureSet, is_missing, verdict_color

#: files of ``viz/assets`` copied into every report folder as they are
STATIC_ASSETS = ("report.css", "report.js")


@cache
def asset(name: str) -> str:
    """The text of one file of ``viz/assets`` (the page template, the stylesheet, the script)."""
    return resources.files("ibl_ephys_data.viz").joinpath("assets", name).read_text(encoding="utf-8")


def missing(what: str, stage: str | None = None) -> str:
    """The report's note for a missing input, with the command that makes it when one does."""
    fix = f": run <code>{html.escape(command_hint(stage))}</code>" if stage else ""
    return f'<p class="missing">{html.escape(what)}{fix}.</p>'


def safe_name(pid: str) -> str:
    """A pid as a file name: anything but letters, digits, ``_.-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(pid))


def text_cell(value: Any) -> str:
    """An escaped cell text; missing -> empty."""
    return "" if is_missing(value) else html.escape(str(value))


def number_cell(value: Any, fmt: str) -> str:
    """A right-aligned numeric cell that sorts by value (missing sorts last)."""
    if is_missing(value):
        return '<td class="num" data-sort=""></td>'
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"<td>{text_cell(value)}</td>"
    return f'<td class="num" data-sort="{number!r}">{html.escape(fmt.format(number))}</td>'


def verdict_badge(verdict: str) -> str:
    """A verdict as a coloured badge."""
    return f'<span class="verdict" style="background:{verdict_color(verdict)}">{html.escape(verdict)}</span>'


def page(title: str, body: str, prefix: str = "", head: str = "") -> str:
    """A whole HTML page from ``assets/page.html``; ``prefix`` leads to the report folder (``../``)."""
    return Template(asset("page.html")).substitute(title=html.escape(title), prefix=prefix, head=head, body=body)


def figure_html(name: str, caption: str, figures: FigureSet, prefix: str) -> str:
    """A figure with its caption (and a link to its SVG), or why it was not drawn."""
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


def key_value_table(row: pd.Series, skip: Sequence[str] = ()) -> str:
    """One row as a two-column table (lists joined, floats to 4 digits)."""
    cells = []
    for key, value in row.items():
        if key in skip:
            continue
        if isinstance(value, list | tuple | np.ndarray):
            text = html.escape(", ".join(str(v) for v in value))
        elif isinstance(value, float | np.floating) and not is_missing(value):
            text = f"{value:.4g}"
        else:
            text = text_cell(value)
        cells.append(f"<tr><th>{html.escape(str(key))}</th><td>{text}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def frame_table(df: pd.DataFrame, max_rows: int = 500) -> str:
    """A sortable table of a DataFrame (at most ``max_rows`` rows)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for value in row:
            if isinstance(value, float | np.floating) and not is_missing(value):
                cells.append(f'<td class="num">{value:.4g}</td>')
            else:
                cells.append(f"<td>{text_cell(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>{len(df) - max_rows} more rows not shown.</p>" if len(df) > max_rows else ""
    body = "".join(rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'
