"""The baseline on the report page: the table, a confusion matrix and a per-region recall chart.

One function, `baseline_section`, returns an HTML fragment and writes its figures under the report
folder, so the report only needs one call to include it.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ibl_ephys_data.baseline.stage import RESULTS
from ibl_ephys_data.errors import command_hint
from ibl_ephys_data.viz.figures import save_figure
from ibl_ephys_data.workspace import Workspace

logger = logging.getLogger(__name__)

FIGURE_DIR = ("figures", "baseline")


def confusion_figure(labels: list[str], matrix: np.ndarray) -> Figure:
    """Row-normalised confusion matrix (rows: true region, columns: predicted), counts in the cells."""
    counts = np.asarray(matrix, dtype=float)
    support = counts.sum(axis=1, keepdims=True)
    shown = support[:, 0] > 0
    frac = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)[shown]
    size = 1.0 + 0.45 * len(labels)
    fig = Figure(figsize=(size + 1.5, 0.45 * shown.sum() + 1.5), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), n in np.ndenumerate(counts[shown]):
        if n:
            ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(np.arange(int(shown.sum())), [lab for lab, s in zip(labels, shown, strict=True) if s], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (test)")
    fig.colorbar(image, ax=ax, label="fraction of the true region's windows")
    fig.tight_layout()
    return fig


def recall_figure(recall: dict[str, float], chance: float) -> Figure:
    """Recall per test region of the main model, with the stratified chance level as a line."""
    names = list(recall)
    fig = Figure(figsize=(6, 0.35 * len(names) + 1.2), dpi=100)
    ax = fig.subplots()
    ax.barh(np.arange(len(names)), [recall[n] for n in names], color="#3a6ee8")
    ax.axvline(chance, color="#c33", linestyle="--", label=f"chance (stratified) {chance:.2f}")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def baseline_section(ws: Workspace, out_dir: Path) -> str:
    """HTML of the baseline for the report whose folder is ``out_dir`` (figures go to figures/baseline/)."""
    from ibl_ephys_data.baseline.card import render_summary
    from ibl_ephys_data.viz.report import render_markdown

    path = ws.dataset_dir / "baseline" / RESULTS
    head = '<h2 id="baseline">Reference baseline</h2>'
    if not path.exists():
        return (f'{head}<p class="missing">dataset/baseline/{RESULTS} is missing: run '
                f"<code>{html.escape(command_hint('baseline', ws))}</code>.</p>")
    results = json.loads(path.read_text())
    fig_dir = Path(out_dir).joinpath(*FIGURE_DIR)
    fig_dir.mkdir(parents=True, exist_ok=True)
    cm = results["confusion"]
    images = []
    for name, fig, caption in (
        ("confusion", confusion_figure(cm["labels"], np.asarray(cm["matrix"])),
         "confusion matrix of the main model on the test split (rows normalised, counts in cells)"),
        ("recall", recall_figure(results["per_region_recall"], results["chance"]["stratified"]),
         "recall per test region of the main model"),
    ):
        png = next(p for p in save_figure(fig, fig_dir / name, ("png",)))
        src = "/".join((*FIGURE_DIR, png.name))
        images.append(f'<figure><img src="{src}" alt="baseline {name}"><figcaption>{caption}</figcaption></figure>')
    table = render_markdown(render_summary(results).split("\n", 1)[1], heading_offset=2)
    return f'{head}{table}<div class="gallery">{"".join(images)}</div>'
