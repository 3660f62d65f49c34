"""Per-insertion artifact timeline: the whole recording, what QC read, what was stored and exported, what is flagged.

Why: signal QC reads a few 10-s snippets, the lfp stage stores other seconds and the dataset exports windows
of those; a verdict only means something if one can see which seconds it describes. The timeline draws
IBL's whole-recording RMS windows (``qc/rms_timeline.parquet``, from ``_iblqc_ephysTimeRmsLF``), QC's
snippets, the stored and exported seconds and the lfp stage's artifact intervals on one time axis, and
states the coverage in one sentence ("signal QC read 50 s of 5,412 s; exported 240 s; flagged 6 s").
Everything is read from the workspace.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ibl_ephys_data.lfp.artifacts import KINDS, default_thresholds
from ibl_ephys_data.qc.metrics import snippet_windows
from ibl_ephys_data.qc.prescreen import RMS_TIMELINE_FILE
from ibl_ephys_data.viz.figures import save_figure
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpStore

logger = logging.getLogger(__name__)

Spans = list[tuple[float, float]]
_SNIPPET_FS = 1000.0  # snippet_windows works in samples; a 1-ms grid places the snippets to the millisecond
_COLORS = {"saturation": "#d62728", "flat": "#7f7f7f", "step": "#9467bd", "cm_burst": "#ff7f0e",
           "line_noise": "#17becf"}


@dataclass
class Timeline:
    """One insertion's time axis, in probe-clock seconds."""

    pid: str
    duration_s: float
    rms: pd.DataFrame | None = None  # t_start_s, t_stop_s, rms_uv
    qc_snippets: Spans = field(default_factory=list)
    stored: Spans = field(default_factory=list)
    exported: Spans = field(default_factory=list)
    flagged: dict[str, Spans] = field(default_factory=dict)  # kind -> spans (any channel rows)

    def coverage(self) -> str:
        """One sentence: seconds read by signal QC, exported and flagged, against the recording's length."""
        flagged = _union([s for spans in self.flagged.values() for s in spans])
        qc = f"signal QC read {_length(self.qc_snippets):,.0f} s" if self.qc_snippets else "signal QC read no raw LF"
        return (f"{qc} of {self.duration_s:,.0f} s; stored {_length(self.stored):,.0f} s; "
                f"exported {_length(self.exported):,.0f} s; flagged {_length(flagged):,.1f} s")


def _union(spans: Spans) -> Spans:
    out: Spans = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(spans: Spans) -> float:
    return float(sum(b - a for a, b in _union(spans)))


def _to_seconds(samples: np.ndarray, segments: list[dict], fs: float) -> np.ndarray:
    """Stored sample positions -> probe-clock seconds through the store's segments (``windows`` attrs)."""
    offsets = np.array([int(s["offset"]) for s in segments])
    starts = np.array([float(s["start_s"]) for s in segments])
    i = np.clip(np.searchsorted(offsets, samples, side="right") - 1, 0, len(segments) - 1)
    return starts[i] + (samples - offsets[i]) / fs


def read_timeline(workspace: Workspace, pid: str) -> Timeline:
    """Gather one insertion's timeline from the workspace (missing pieces stay empty)."""
    rms = None
    rms_path = workspace.qc_metrics.with_name(RMS_TIMELINE_FILE)
    if rms_path.exists():
        table = pd.read_parquet(rms_path)
        rms = table[table["pid"] == pid].reset_index(drop=True) if (table["pid"] == pid).any() else None
    tl = Timeline(pid, float(rms["t_stop_s"].max()) if rms is not None else 0.0, rms)
    store = LfpStore(workspace.lfp)
    if store.kind(pid) is not None:
        attrs = store.attrs(pid)
        segments, fs = attrs.get("windows") or [], float(attrs.get("fs", 0) or 0)
        if segments and fs:
            tl.stored = [(float(s["start_s"]), float(s["stop_s"])) for s in segments]
            for iv in attrs.get("artifacts") or []:
                a, b = _to_seconds(np.array([iv["start"], iv["stop"]]), segments, fs)
                tl.flagged.setdefault(iv["kind"], []).append((float(a), float(b)))
            windows = workspace.dataset_dir / "windows.parquet"
            if windows.exists():
                rows = pd.read_parquet(windows, columns=["pid", "start", "n_samples"], filters=[("pid", "==", pid)])
                starts = np.unique(rows["start"].to_numpy())
                if starts.size:
                    t0 = _to_seconds(starts, segments, fs)
                    tl.exported = _union([(float(t), float(t) + float(rows["n_samples"].iloc[0]) / fs) for t in t0])
    tl.duration_s = max([tl.duration_s, *(b for _, b in tl.stored)])
    params = workspace.read_manifest().get("stages", {}).get("qc", {}).get("parameters", {})
    params = params.get("options", params)  # the runner records a stage's options under "options"
    if tl.duration_s > 1 and not params.get("prescreen_only", True) and "n_snippets" in params:
        ns = int(tl.duration_s * _SNIPPET_FS)
        tl.qc_snippets = [(a / _SNIPPET_FS, b / _SNIPPET_FS) for a, b in snippet_windows(
            ns, _SNIPPET_FS, int(params["n_snippets"]), float(params["snippet_seconds"]))]
    return tl


def timeline_figure(tl: Timeline) -> Figure:
    """RMS over the whole recording on top; lanes for QC snippets, stored, exported and each flagged kind."""
    fig = Figure(figsize=(10, 3.6))
    ax_rms, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.6]})
    if tl.rms is not None and len(tl.rms):
        centre = (tl.rms["t_start_s"] + tl.rms["t_stop_s"]) / 2
        ax_rms.plot(centre, tl.rms["rms_uv"], color="k", lw=0.8)
        high = tl.rms["rms_uv"] > default_thresholds().cm_burst_factor * tl.rms["rms_uv"].median()
        for a, b in tl.rms.loc[high, ["t_start_s", "t_stop_s"]].itertuples(index=False):
            ax_rms.axvspan(a, b, color="#ff7f0e", alpha=0.3, lw=0)
        ax_rms.set_ylabel("RMS (µV)\nmedian ch.")
    else:
        ax_rms.text(0.5, 0.5, "no _iblqc_ephysTimeRmsLF timeline (run the qc stage with the pre-screen)",
                    ha="center", va="center", transform=ax_rms.transAxes, fontsize=8)
    lanes = [("QC snippets", tl.qc_snippets, "#1f77b4"), ("stored (lfp)", tl.stored, "#2ca02c"),
             ("exported", tl.exported, "#98df8a")]
    lanes += [(kind, _union(tl.flagged.get(kind, [])), _COLORS[kind]) for kind in KINDS]
    for i, (_, spans, color) in enumerate(lanes):
        y = len(lanes) - 1 - i
        ax.broken_barh([(a, max(b - a, tl.duration_s / 2000)) for a, b in spans], (y - 0.4, 0.8), color=color)
    ax.set_yticks(range(len(lanes)), [name for name, *_ in reversed(lanes)], fontsize=7)
    ax.set_xlim(0, max(tl.duration_s, 1.0))
    ax.set_xlabel("probe time (s)")
    fig.suptitle(tl.coverage(), fontsize=9)
    fig.tight_layout()
    return fig


def timeline_section(workspace: Workspace, pid: str, out_dir: Path, prefix: str) -> str:
    """HTML of the timeline for an insertion page: the coverage sentence and the figure (PNG in ``out_dir``)."""
    tl = read_timeline(workspace, pid)
    if tl.duration_s <= 0:
        return '<h2>Artifact timeline</h2><p class="missing">no lfp store or RMS timeline yet.</p>'
    (path,) = save_figure(timeline_figure(tl), Path(out_dir) / "timeline", ("png",))
    src = f"{prefix}{html.escape(path.parent.name)}/{html.escape(path.name)}"
    return (f"<h2>Artifact timeline</h2><p>{html.escape(tl.coverage())}</p>"
            f'<figure><img src="{src}" alt="artifact timeline of {html.escape(pid)}"></figure>')
