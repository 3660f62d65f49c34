"""The dataset stage: catalog, channels, lfp.zarr and qc -> windows.parquet, splits.json, DATA_CARD.md.

The three files are written into a temporary folder, verified (the split is re-derived from the catalog)
and only then renamed onto ``dataset/``, so a dataset on disk is always complete and leakage-free.

Insertions whose lfp store is missing/incomplete or that have no QC outputs are skipped, not fatal: the
stages upstream run per pid and some pids legitimately fail (no raw data, bad histology), and one failed
download should not block a dataset of hundreds of insertions. Each skipped pid is named in the manifest
and counted in the data card; pass ``on_missing="error"`` to fail instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ibl_ephys_data.dataset.card import render_card
from ibl_ephys_data.dataset.labels import (
    LEVELS,
    apply_min_channels,
    label_channels,
    normalize_level,
    parse_regions,
    resolve_regions,
)
from ibl_ephys_data.dataset.splits import (
    EXCLUDED,
    MODES,
    make_split,
    plan_zero_shot,
    release_sets,
    split_parameters,
    verify,
    verify_or_raise,
)
from ibl_ephys_data.dataset.windows import (
    FLAG_COLUMNS,
    WINDOW_SCHEMA,
    LfpLayout,
    build_windows,
    read_layout,
    to_table,
)
from ibl_ephys_data.errors import EmptyResultError, InputError, MissingStageError
from ibl_ephys_data.workspace import Workspace, atomic_path, package_versions, write_json, write_text
from ibl_ephys_data.workspace.lfp_store import LfpStore

logger = logging.getLogger(__name__)

STAGE = "dataset"
SPLIT_ORDER = ("train", "val", "test")


def _workspace(workspace: Workspace | str | os.PathLike) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def _fired(rules: Any) -> list[str]:
    if rules is None or (isinstance(rules, float) and np.isnan(rules)):
        return []
    if isinstance(rules, str):
        return [r.strip() for r in rules.split(",") if r.strip()]
    return [str(r) for r in rules]


def _read_optional(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def _revisions(ws: Workspace, layouts: dict[str, LfpLayout]) -> dict[str, str]:
    """Every 'revision'/'tag' setting recorded upstream (manifest stage parameters, lfp params)."""
    found: dict[str, str] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                name = f"{prefix}.{k}" if prefix else str(k)
                if isinstance(v, dict | list):
                    walk(v, name)
                elif any(w in str(k).lower() for w in ("revision", "tag")):
                    found[name] = str(v)

    walk({s: v.get("parameters", {}) for s, v in ws.read_manifest().get("stages", {}).items()}, "")
    for pid in list(layouts)[:1]:
        walk({"lfp.params": LfpStore(ws.lfp).attrs(pid).get("params", {})}, "")
    return found


def _storage(ws: Workspace, pids: list[str]) -> list[dict]:
    """How the exported insertions' LFP is stored: per encoding, insertions, µV per unit, worst RMS error."""
    store = LfpStore(ws.lfp)
    groups: dict[tuple, list[float]] = {}
    for pid in pids:
        enc = store.open(pid).encoding()
        key = (enc.get("dtype", "float32 (old layout)"), enc.get("scale", 1.0))
        groups.setdefault(key, []).append(float(enc.get("rms_error_rel", 0.0)))
    return [{"dtype": d, "scale_uv": scale, "insertions": len(errs), "max_rms_error_rel": max(errs)}
            for (d, scale), errs in sorted(groups.items())]


def _verdicts(verdicts: pd.DataFrame | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Final verdict and fired rule ids per pid from qc/verdicts.parquet."""
    if verdicts is None:
        return {}, {}
    if not {"pid", "final_verdict"} <= set(verdicts.columns):
        raise InputError("qc/verdicts.parquet lacks pid/final_verdict: re-run `ibl-ephys-data qc`")
    rules = verdicts["fired_rules"] if "fired_rules" in verdicts.columns else [None] * len(verdicts)
    pids = verdicts["pid"].astype(str)
    return (dict(zip(pids, verdicts["final_verdict"].astype(str), strict=True)),
            {p: _fired(r) for p, r in zip(pids, rules, strict=True)})


def _upstream(ws: Workspace, pids: list[str], channels: pd.DataFrame, verdict_of: dict[str, str],
              channel_qc: pd.DataFrame | None) -> tuple[dict[str, LfpLayout], dict[str, str]]:
    """Split ``pids`` into those with every upstream output (their lfp layouts) and missing: {pid: why}."""
    channel_pids = set(channels["pid"])
    qc_pids = set() if channel_qc is None else set(channel_qc["pid"].astype(str))
    layouts: dict[str, LfpLayout] = {}
    missing: dict[str, str] = {}
    for pid in pids:
        layout, why = read_layout(ws.lfp, pid)
        if layout is None:
            missing[pid] = why
        elif pid not in channel_pids:
            missing[pid] = "no channels"
        elif pid not in verdict_of:
            missing[pid] = "no qc verdict"
        elif pid not in qc_pids:
            missing[pid] = "no channel qc"
        else:
            layouts[pid] = layout
    return layouts, missing


def _versions() -> dict[str, str]:
    versions = package_versions()
    try:
        versions["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        versions["torch"] = "not installed"
    return versions


def export_dataset(
    workspace: Workspace | str | os.PathLike,
    regions: str | Sequence[str] | None = None,
    level: str = "beryl",
    window_seconds: float = 3.0,
    stride_seconds: float | None = None,
    neighbours: int = 0,
    min_channels: int = 10,
    leakage: str = "subject",
    train_release: str = "bwm",
    test_release: str = "repro-ephys",
    mode: str = "zero-shot",
    k: int = 5,
    strict: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    exclude_verdicts: Sequence[str] = ("FAIL", "CRITICAL"),
    on_missing: str = "skip",
    force: bool = False,
    keep_flagged: bool = False,
) -> Path:
    """Build dataset/ (windows.parquet, splits.json, DATA_CARD.md) and return its path.

    ``regions`` (Allen acronyms, parents include descendants) replaces the ``level`` labels as classes;
    ``min_channels`` drops smaller classes (``strict`` raises instead); ``mode`` is ``zero-shot`` (train on
    ``train_release``, test on ``test_release``) or ``kfold`` (``k`` folds of ``train_release``), both free of
    leakage at ``leakage`` (pid/session/subject/lab). Insertions with a QC verdict in ``exclude_verdicts``
    are left out; pids missing lfp/qc outputs are skipped and counted (``on_missing="error"`` raises).
    Windows touched by an artifact interval of the lfp stage (``flag_*`` columns) are left out unless
    ``keep_flagged``, then kept with their flags; either way they are counted per reason in the data card.
    """
    ws = _workspace(workspace)
    level = normalize_level(level)
    names = parse_regions(regions)
    if names:
        resolve_regions(names)  # fail on a typo before reading anything
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if on_missing not in ("skip", "error"):
        raise InputError(f"on_missing={on_missing!r}: use 'skip' or 'error'")
    exclude_verdicts = tuple(str(v).upper() for v in exclude_verdicts)
    params = {
        **split_parameters(mode, leakage, train_release, test_release, k, val_fraction, seed),
        "level": level, "regions": names, "window_seconds": float(window_seconds),
        "stride_seconds": None if stride_seconds is None else float(stride_seconds),
        "neighbours": int(neighbours),
        "min_channels": int(min_channels), "strict": bool(strict), "exclude_verdicts": list(exclude_verdicts),
        "on_missing": on_missing, "keep_flagged": bool(keep_flagged),
    }
    catalog = ws.read_catalog()
    catalog["pid"] = catalog["pid"].astype(str)
    channels = ws.read_channels()
    channels["pid"] = channels["pid"].astype(str)
    verdicts = _read_optional(ws.qc_verdicts)
    channel_qc = _read_optional(ws.qc_channel_metrics)

    split = make_split(catalog, mode, leakage, train_release, test_release, k, val_fraction, seed)
    cost = plan_zero_shot(catalog, train_release, test_release) if mode == "zero-shot" else {}
    candidates = split.loc[split["split"] != EXCLUDED, "pid"].tolist()

    verdict_of, rules_of = _verdicts(verdicts)
    layouts, missing = _upstream(ws, candidates, channels, verdict_of, channel_qc)
    if missing and on_missing == "error":
        listing = ", ".join(f"{p} ({w})" for p, w in sorted(missing.items()))
        raise InputError(
            f"{len(missing)} pids lack lfp/qc outputs: {listing}; run those stages or pass on_missing='skip'"
        )
    if missing:
        logger.warning("skipping %d pids without lfp/qc outputs: %s", len(missing), sorted(missing))
    qc_excluded = {
        pid: {"verdict": verdict_of[pid], "rules": rules_of[pid]}
        for pid in layouts if verdict_of[pid].upper() in exclude_verdicts
    }
    ready = [pid for pid in layouts if pid not in qc_excluded]
    if not ready:
        raise InputError(
            f"no insertion of {train_release}/{test_release} in {ws.location} has lfp and qc outputs passing QC: "
            "run `ibl-ephys-data lfp` and `ibl-ephys-data qc` first"
        )

    labelled, excluded_ch = label_channels(channels[channels["pid"].isin(ready)], channel_qc, level, names)
    stored = {pid: set(layout.raw_ind) for pid, layout in layouts.items()}
    in_store = np.array([r in stored[p] for p, r in zip(labelled["pid"], labelled["raw_ind"], strict=True)],
                        dtype=bool)
    excluded_ch = pd.concat([excluded_ch, labelled.loc[~in_store, ["pid", "raw_ind"]].assign(
        reason="not in lfp store")], ignore_index=True)
    labelled, dropped = apply_min_channels(labelled[in_store].reset_index(drop=True), min_channels, strict)
    if labelled.empty:
        raise InputError(f"no channel left after labelling and min_channels={min_channels}: see the logs")

    assignment = split.set_index("pid")
    info = catalog.set_index("pid")
    per_label: dict[str, dict[str, list[int]]] = {}
    per_split: dict[str, dict[str, int]] = {}
    subjects: dict[str, set[str]] = {}
    classes: dict[str, set[str]] = {lev: set() for lev in (*LEVELS, "label", "target")}
    statuses: dict[str, dict] = {}
    flagged = FlagTally(keep_flagged)
    dataset_dir = ws.dataset_dir
    with atomic_path(dataset_dir) as tmp:
        tmp.mkdir(parents=True)
        with pq.ParquetWriter(tmp / "windows.parquet", WINDOW_SCHEMA) as writer:
            for pid, chans in labelled.groupby("pid", sort=True):
                s = str(assignment.at[pid, "split"])
                insertion = {
                    "eid": _str(info.at[pid, "eid"]), "subject": _str(info.at[pid, "subject"]),
                    "lab": _str(info.at[pid, "lab"]) if "lab" in info.columns else None,
                    "qc_verdict": verdict_of[pid], "split": s, "fold": int(assignment.at[pid, "fold"]),
                }
                win = build_windows(chans, layouts[pid], window_seconds, stride_seconds, neighbours,
                                       insertion)
                win = flagged.apply(win)
                writer.write_table(to_table(win))
                _tally(win, chans, s, insertion["subject"], per_split, subjects, per_label, classes)
                statuses[pid] = {"status": "done", "split": s, "channels": len(chans), "windows": len(win)}
        empty = sorted(set(ready) - set(statuses))
        summary = {
            "parameters": params,
            "label_name": f"regions {','.join(names)}" if names else f"{level} acronym",
            "catalog_releases": dict(Counter(r for s in release_sets(catalog) for r in s)),
            "revisions": _revisions(ws, layouts),
            "versions": _versions(),
            "cost": cost,
            "split_order": sorted(per_split, key=_split_key),
            "per_split": per_split,
            "per_label": per_label,
            "excluded_insertions": {
                "leakage": split.loc[split["split"] == EXCLUDED, "pid"].tolist(),
                "missing": missing,
                "qc": qc_excluded,
                "no_channels": empty,
            },
            "qc_rules": dict(Counter(r for v in qc_excluded.values() for r in v["rules"])),
            "excluded_channels": {str(k): int(v) for k, v in excluded_ch["reason"].value_counts().items()},
            "dropped_classes": dropped,
            "flagged_windows": flagged.summary(),
            "verified": "yes",
            "storage": _storage(ws, [p for p, st in statuses.items() if st.get("status") == "done"]),
        }
        splits_json = {
            "parameters": split_parameters(mode, leakage, train_release, test_release, k, val_fraction, seed),
            "export": params,
            "assignments": {
                r.pid: {"split": r.split, "fold": int(r.fold), "reason": r.reason}
                for r in split.itertuples(index=False)
            },
            "cost": cost,
            "classes": {lev: sorted(v) for lev, v in classes.items() if v},
            "summary": summary,
        }
        n_windows = sum(v["windows"] for v in per_split.values())
        if not n_windows and not force and (dataset_dir / "windows.parquet").exists() and \
                pq.read_metadata(dataset_dir / "windows.parquet").num_rows > 0:
            raise EmptyResultError(f"{dataset_dir}: these options give no window (window_seconds="
                                   f"{window_seconds}); the existing dataset was kept (pass --force to replace it)")
        write_json(splits_json, tmp / "splits.json")
        write_text(render_card(summary), tmp / "DATA_CARD.md")
        verify_or_raise(tmp, catalog=ws.catalog, storage=False)  # the split only; raising leaves nothing written
    for pid, why in missing.items():
        statuses[pid] = {"status": "skipped", "reason": why}
    for pid in empty:
        statuses[pid] = {"status": "excluded", "reason": "no usable labelled channel"}
    for pid, v in qc_excluded.items():
        statuses[pid] = {"status": "excluded", "reason": f"QC {v['verdict']}: {', '.join(v['rules'])}"}
    ws.record_stage(STAGE, params, statuses)
    logger.info("dataset written to %s: %s", dataset_dir,
                {s: v["windows"] for s, v in per_split.items()})
    return dataset_dir


class FlagTally:
    """Counts windows flagged by per-window QC (per reason, per split) and drops them unless kept."""

    def __init__(self, keep: bool):
        self.keep = keep
        self.per_reason: Counter = Counter()
        self.per_split: Counter = Counter()
        self.flagged = self.unchecked = self.total = 0

    def apply(self, win: pd.DataFrame) -> pd.DataFrame:
        flags = win[list(FLAG_COLUMNS)]
        unchecked = flags.isna().all(axis=1).to_numpy()
        hit = flags.fillna(False).astype(bool).to_numpy().any(axis=1)
        self.total += len(win)
        self.unchecked += int(unchecked.sum())
        self.flagged += int(hit.sum())
        for col in FLAG_COLUMNS:
            self.per_reason[col.removeprefix("flag_")] += int(flags[col].fillna(False).astype(bool).sum())
        self.per_split.update(win.loc[hit, "split"].astype(str).value_counts().to_dict())
        return win if self.keep else win[~hit].reset_index(drop=True)

    def summary(self) -> dict:
        return {"kept": self.keep, "windows": self.flagged, "of": self.total, "unchecked": self.unchecked,
                "per_reason": {k: v for k, v in self.per_reason.items() if v}, "per_split": dict(self.per_split)}


def _str(value: Any) -> str | None:
    return None if pd.isna(value) else str(value)


def _split_key(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name), "") if name in SPLIT_ORDER else (len(SPLIT_ORDER), name)


def _tally(win: pd.DataFrame, chans: pd.DataFrame, split: str, subject: str | None, per_split: dict,
           subjects: dict, per_label: dict, classes: dict) -> None:
    """Accumulate the per-split and per-label counts of one insertion (the windows are not kept)."""
    s = per_split.setdefault(split, {"insertions": 0, "subjects": 0, "channels": 0, "windows": 0})
    s["insertions"] += 1
    if subject is not None:
        subjects.setdefault(split, set()).add(subject)
    s["subjects"] = len(subjects.get(split, ()))
    s["channels"] += len(chans)
    s["windows"] += len(win)
    n_win = win.groupby("label").size()
    for label, n_ch in chans.groupby("label").size().items():
        row = per_label.setdefault(str(label), {}).setdefault(split, [0, 0])
        row[0] += int(n_ch)
        row[1] += int(n_win.get(label, 0))
    for lev in LEVELS:
        classes[lev].update(chans[f"{lev}_acronym"].astype(str))
    classes["label"].update(chans["label"].astype(str))
    classes["target"].update(chans["target"].dropna().astype(str))


def dataset_info(workspace: Workspace | str | os.PathLike) -> dict:
    """Summary of an exported dataset (parameters, counts, exclusions, leakage cost) plus a fresh verify."""
    ws = _workspace(workspace)
    splits_path = ws.dataset_dir / "splits.json"
    if not splits_path.exists():
        raise MissingStageError(f"{splits_path} does not exist", "dataset", ws)
    recorded = json.loads(splits_path.read_text())
    summary = recorded.get("summary", {})
    windows = ws.dataset_dir / "windows.parquet"
    problems = verify(ws)
    return {
        "path": str(ws.dataset_dir),
        "parameters": recorded.get("export", recorded.get("parameters")),
        "cost": recorded.get("cost", {}),
        "classes": recorded.get("classes", {}).get("label", []),
        "per_split": summary.get("per_split", {}),
        "per_label": summary.get("per_label", {}),
        "excluded_insertions": {k: len(v) for k, v in summary.get("excluded_insertions", {}).items()},
        "excluded_channels": summary.get("excluded_channels", {}),
        "dropped_classes": summary.get("dropped_classes", {}),
        "flagged_windows": summary.get("flagged_windows", {}),
        "n_windows": pq.ParquetFile(windows).metadata.num_rows if windows.exists() else 0,
        "verified": not problems,
        "problems": problems,
    }
