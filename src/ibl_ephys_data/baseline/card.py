"""The baseline table as markdown, and its section in DATA_CARD.md.

The section is the last one of the card and starts at its own heading, so running the stage again
replaces it instead of adding a second copy (no marker comment: the report renders the card as text).
``export`` re-renders the card and replaces ``dataset/`` (``baseline/`` included), so a re-export drops
the section together with the numbers it describes, until ``baseline`` runs again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ibl_ephys_data.workspace import write_text

logger = logging.getLogger(__name__)

HEADING = "## Reference baseline"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(entry: dict) -> str:
    lo, hi = entry["ci"]
    return f"{entry['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"


def render_summary(results: dict[str, Any]) -> str:
    """Markdown of the baseline table (main number with CI, chance, the four controls, per-region recall)."""
    p, c, ctl = results["parameters"], results["counts"], results["controls"]
    level = f"{p['ci_level']:.0%}"
    features = ", ".join(p["features"])
    leaky = ctl["leaky_split"]
    if "balanced_accuracy" in leaky:
        lo, hi = leaky["inflation_ci"]
        leaky_row = (f"| (b) trained on the pid-level split ({leaky['train_insertions']} training insertions, "
                     f"{len(leaky['added_insertions'])} sharing a subject/session with test) | {_ci(leaky)} | "
                     f"inflation {leaky['inflation']:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    else:
        leaky_row = f"| (b) leaky split | n/a | {leaky['note']} |"
    lab, perm = ctl["lab"], ctl["permuted_labels"]
    lines = [
        HEADING,
        "",
        f"Logistic regression (C={p['c']}, balanced class weights) on {features}; trained on "
        f"{c['train_windows']} windows of {c['train_insertions']} `train` insertions, scored on "
        f"{c['test_windows']} windows of {c['test_insertions']} `test` insertions ({len(c['test_classes'])} "
        f"classes). Balanced accuracy with its {level} bootstrap interval over test insertions "
        f"({p['n_bootstrap']} resamples, seed {p['seed']}). Every number and parameter: "
        "`baseline/baseline.json`; what each means and its limits: docs/baseline.md.",
        "",
        "| model | balanced accuracy | note |",
        "|---|---|---|",
        f"| **main** | **{_ci(results['main'])}** | |",
        f"| chance: majority class | {_num(results['chance']['majority'])} | always the largest training class |",
        f"| chance: stratified | {_num(results['chance']['stratified'])} | random with training frequencies |",
        f"| (a) training labels permuted | {perm['balanced_accuracy']:.3f} [{perm['range'][0]:.3f}, "
        f"{perm['range'][1]:.3f}] | mean [min, max] of {p['n_permutations']} permutations; should sit at chance |",
        leaky_row,
        f"| (c) depth only | {_ci(ctl['depth_only'])} | position along the probe alone |",
        f"| (c) band powers only | {_ci(ctl['bands_only'])} | spectrum alone |",
        f"| (d) lab from the same features, AUC | {_num(lab['auc_new_insertions'])} (new insertions), "
        f"{_num(lab['auc_windows'])} (windows) | {len(lab['labs'])} labs; 0.5 = not decodable |",
        "",
        "Per-region recall of the main model: "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["per_region_recall"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def append_to_card(card: Path, summary: str) -> Path:
    """Put ``summary`` (which starts with `HEADING`) at the end of the card, replacing an earlier copy."""
    card = Path(card)
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    text = text.split(f"\n{HEADING}\n", 1)[0]
    return write_text(text.rstrip("\n") + "\n\n" + summary.rstrip("\n") + "\n", card)
