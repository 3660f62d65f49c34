"""What every figure shares: byte-stable saving, the workspace tables they read, missing values, verdicts.

Figures are drawn on bare ``Figure`` objects (no pyplot state, so they are safe in notebooks and worker
processes) and saved at a fixed size and dpi, with a fixed SVG hash salt and without timestamps or software
versions in the metadata: the same inputs give the same bytes, so a changed figure means changed data.
Views read the workspace files only (never a stage module), so a figure shows what the stages wrote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from ibl_ephys_data.workspace import Workspace, atomic_path
from ibl_ephys_data.workspace.schema import MISSING_COLOR, VERDICT_COLORS, VERDICT_ORDER

DPI = 100

FORMATS = ("png", "svg")

SVG_HASH_SALT = "ibl-ephys-data"


@dataclass
class FigureSet:
    """Files written per figure name, and for each figure that could not be drawn, why."""

    paths: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``<stem>.<format>`` atomically; byte-stable for the same figure."""
    unknown = sorted(set(formats) - {"png", "svg"})
    if unknown:
        raise ValueError(f"unsupported figure formats {unknown}: use 'png' and/or 'svg'")
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT, "svg.fonttype": "path"}):
        for fmt in formats:
            path = stem.parent / f"{stem.name}.{fmt}"
            metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
            paths.append(path)
    return paths


def is_missing(value: Any) -> bool:
    """None, NA and NaN are missing; anything else (including a list) is a value."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def as_list(value: Any) -> list[str]:
    """A list cell (list, array or single string) as a list of strings; missing -> []."""
    if is_missing(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def verdict_of(row: Mapping | pd.Series | None) -> str:
    """The verdict that counts: ``final_verdict`` (after review) if set, else ``verdict``, else NOT_SET."""
    if row is None:
        return "NOT_SET"
    for key in ("final_verdict", "verdict"):
        value = row.get(key)
        if not is_missing(value) and str(value):
            return str(value).upper()
    return "NOT_SET"


def verdict_color(verdict: Any) -> str:
    """The colour of a verdict or Alyx QC value; grey when missing or unknown."""
    if is_missing(verdict):
        return MISSING_COLOR
    return VERDICT_COLORS.get(str(verdict).upper(), MISSING_COLOR)


def verdict_rank(verdict: str) -> int:
    """Sort key of a verdict: its place in VERDICT_ORDER (best first), unknown ones last."""
    return VERDICT_ORDER.index(verdict) if verdict in VERDICT_ORDER else len(VERDICT_ORDER)


def require(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise when ``df`` lacks any of ``columns``, naming the table and where its contract is written."""
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}: pass the columns of docs/workspace.md")


def as_workspace(workspace: Workspace | str | os.PathLike) -> Workspace:
    """A Workspace from a Workspace or its folder."""
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def read_optional(path: Path) -> pd.DataFrame | None:
    """A workspace table if it exists, else None (every figure degrades instead of failing)."""
    return pd.read_parquet(path) if Path(path).exists() else None


def read_tables(workspace: Workspace | str | os.PathLike) -> dict[str, pd.DataFrame | None]:
    """Every workspace table the figures and the report use, None for those not written yet."""
    ws = as_workspace(workspace)
    paths = {"catalog": ws.catalog, "channels": ws.channels, "metrics": ws.qc_metrics,
             "channel_metrics": ws.qc_channel_metrics, "verdicts": ws.qc_verdicts, "coverage": ws.coverage,
             "external_channels": ws.external_channels}
    return {name: read_optional(path) for name, path in paths.items()}


def pid_rows(df: pd.DataFrame | None, pid: str) -> pd.DataFrame | None:
    """The rows of one insertion, or None when the table or the insertion is absent."""
    if df is None or "pid" not in df:
        return None
    rows = df[df["pid"].astype(str) == pid]
    return rows if len(rows) else None
