"""The ``baseline`` stage: what a plain model gets on an exported dataset, what chance is, and what a leaky
split or a confound would add.

Why: a number without its chance level and its controls cannot be judged. A public audit of the LFP2Vec
scripts found electrode position alone decoding the region, frozen embeddings identifying the lab and test
insertions that were in the training release. This stage prints those effects for the user's own export:

- main: band powers (+ depth) -> logistic regression, trained on ``train``, scored on the zero-shot
  ``test`` split; balanced accuracy with a bootstrap CI over test insertions, per-region recall, confusion;
- chance: majority and stratified guessers (exact, see `models.chance_levels`);
- controls: (a) training labels permuted, (b) the same model trained on the pid-level split (made by
  `dataset.splits.zero_shot_split`, so insertions sharing a subject or session with the test set come
  back), (c) depth-only and band-power-only models, (d) lab decodability (AUC) from the same features.

Inputs come only through the exported dataset (windows.parquet, splits.json, read with `LfpWindows`);
the leaky control's extra insertions are windowed with the export's own functions and parameters.
Outputs: ``dataset/baseline/`` (baseline.json, summary.md, leaky_windows.parquet) and a section appended
to ``dataset/DATA_CARD.md``. A re-export replaces ``dataset/`` whole, which drops both: results of an
older export must not survive next to a new one; run the stage again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ibl_ephys_data.baseline.card import append_to_card, render_summary
from ibl_ephys_data.baseline.features import DEPTH_FEATURE, WELCH_SECONDS, band_powers, usable_bands, welch_nperseg
from ibl_ephys_data.baseline.models import (
    CLASSIFIERS,
    balanced_accuracy,
    bootstrap_ci,
    chance_levels,
    confusion,
    difference_ci,
    fit_predict,
    lab_auc,
    per_class_recall,
    permuted,
)
from ibl_ephys_data.dataset.labels import label_channels
from ibl_ephys_data.dataset.loader import LfpWindows
from ibl_ephys_data.dataset.splits import zero_shot_split
from ibl_ephys_data.dataset.windows import build_windows, read_layout, to_table
from ibl_ephys_data.errors import DataIntegrityError, InputError, MissingStageError, check_option
from ibl_ephys_data.workspace import Workspace, atomic_path, write_json, write_text

logger = logging.getLogger(__name__)

STAGE = "baseline"
RESULTS = "baseline.json"
SUMMARY = "summary.md"
LEAKY_WINDOWS = "leaky_windows.parquet"
_FRAME_COLUMNS = ["pid", "lab", "split", "label", "axial_um", "row", "row_start", "fs", "n_samples"]


@dataclass(frozen=True)
class BaselineOptions:
    """Everything that decides the numbers (recorded in baseline.json; same options => same numbers)."""

    depth: bool = True  # add depth along the probe (axial_um) to the band powers of the main model
    classifier: str = "logistic"
    c: float = 1.0  # inverse L2 regularisation of the logistic regression
    n_bootstrap: int = 1000  # resamples of the test insertions for the CIs
    n_permutations: int = 5  # label permutations of control (a), averaged: one alone varies a lot
    ci_level: float = 0.95
    max_windows: int = 50_000  # per side (train, test, leaky train, lab check): seeded subsample above this
    welch_seconds: float = WELCH_SECONDS
    seed: int = 0


def _workspace(workspace: Workspace | str | os.PathLike) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def _subsample(index: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n_max`` of ``index``, drawn without replacement, kept in file order."""
    if len(index) <= n_max:
        return index
    return np.sort(rng.choice(index, size=n_max, replace=False))


def window_features(ds: LfpWindows, frame: pd.DataFrame, rows: np.ndarray, welch_seconds: float = WELCH_SECONDS,
                    batch: int = 2048) -> np.ndarray:
    """log10 band powers (n, n_bands) of the labelled channel of windows ``rows`` of ``ds``.

    ``frame`` holds the same rows as ``ds`` (its windows.parquet columns ``row``, ``row_start``, ``fs``,
    ``n_samples``). Windows are read one by one through the loader and transformed in batches.
    """
    fs_values = frame["fs"].iloc[rows].unique() if len(rows) else frame["fs"].unique()
    lengths = frame["n_samples"].iloc[rows].unique() if len(rows) else frame["n_samples"].unique()
    if len(fs_values) != 1 or len(lengths) != 1:
        raise DataIntegrityError(f"{ds.windows_path} mixes sampling rates {sorted(fs_values)} or window lengths "
                                 f"{sorted(lengths)}: re-run `ibl-ephys-data lfp` with one fs_out and re-export")
    fs, n = float(fs_values[0]), int(lengths[0])
    bands = usable_bands(fs)
    channel = (frame["row"] - frame["row_start"]).to_numpy()
    out = np.empty((len(rows), len(bands)))
    buf = np.empty((min(batch, max(len(rows), 1)), n), dtype=np.float32)
    for b0 in range(0, len(rows), batch):
        chunk = rows[b0:b0 + batch]
        for k, i in enumerate(chunk):
            buf[k] = ds.read(int(i))[channel[i]]
        out[b0:b0 + len(chunk)] = band_powers(buf[:len(chunk)], fs, bands, welch_seconds)
    return out


def _leaky_windows(ws: Workspace, recorded: dict, pids: list[str], classes: list[str]) -> tuple[pd.DataFrame,
                                                                                              dict[str, str]]:
    """Windows of ``pids`` built as the export built its own (same parameters, QC and classes).

    Returns the windows and {pid: why skipped} for those without lfp/qc outputs, failing QC or without
    a channel of the export's classes.
    """
    export = recorded["export"]
    catalog = ws.read_catalog().astype({"pid": str}).set_index("pid")
    channels = ws.read_channels().astype({"pid": str})
    channel_qc = pd.read_parquet(ws.qc_channel_metrics) if ws.qc_channel_metrics.exists() else None
    verdicts = pd.read_parquet(ws.qc_verdicts) if ws.qc_verdicts.exists() else pd.DataFrame(
        columns=["pid", "final_verdict"])
    verdict_of = dict(zip(verdicts["pid"].astype(str), verdicts["final_verdict"].astype(str), strict=True))
    excluded_verdicts = {str(v).upper() for v in export["exclude_verdicts"]}
    layouts, skipped = {}, {}
    for pid in sorted(pids):
        layout, why = read_layout(ws.lfp, pid)
        verdict = verdict_of.get(pid)
        if layout is None or verdict is None or verdict.upper() in excluded_verdicts:
            skipped[pid] = why or ("no qc verdict" if verdict is None else f"QC {verdict}")
        else:
            layouts[pid] = layout
    kept, _ = label_channels(channels[channels["pid"].isin(list(layouts))], channel_qc, export["level"],
                             export["regions"] or None)
    pieces = []
    for pid, layout in layouts.items():
        chans = kept[(kept["pid"] == pid) & kept["raw_ind"].isin(layout.raw_ind) & kept["label"].isin(classes)]
        if chans.empty:
            skipped[pid] = "no usable channel of the export's classes"
            continue
        info = catalog.loc[pid]
        insertion = {"eid": str(info["eid"]), "subject": str(info["subject"]),
                     "lab": str(info["lab"]) if "lab" in info.index else None, "qc_verdict": verdict_of[pid],
                     "split": "train", "fold": -1}
        pieces.append(build_windows(chans, layout, export["window_seconds"], export["stride_seconds"],
                                    export["neighbours"], insertion))
    return (pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()), skipped


def _score(name: str, y_test: np.ndarray, pred: np.ndarray, boot: dict) -> dict:
    return {"balanced_accuracy": balanced_accuracy(y_test, pred), "ci": boot["ci"][name]}


def run_baseline(workspace: Workspace | str | os.PathLike, options: BaselineOptions = BaselineOptions()) -> dict:
    """Fit the reference baseline and its controls on ``dataset/``; write ``dataset/baseline/``; return results.

    The returned dict is what baseline.json holds (see docs/baseline.md for every key).
    """
    ws = _workspace(workspace)
    check_option("classifier", options.classifier, CLASSIFIERS)
    if min(options.n_bootstrap, options.n_permutations, options.max_windows) < 1 or not 0 < options.ci_level < 1:
        raise InputError(f"n_bootstrap={options.n_bootstrap}, n_permutations={options.n_permutations}, "
                         f"max_windows={options.max_windows}, ci_level={options.ci_level}: need the counts >= 1 "
                         "and 0 < ci_level < 1")
    splits_path = ws.dataset_dir / "splits.json"
    if not splits_path.exists():
        raise MissingStageError(f"{splits_path} is missing", "dataset", ws)
    recorded = json.loads(splits_path.read_text())
    split_params = recorded["parameters"]
    if split_params["mode"] != "zero-shot":
        raise InputError(f"{splits_path} is a {split_params['mode']} export: the baseline scores the zero-shot "
                         "test split, re-export with `--mode zero-shot`")
    t0 = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    ds = LfpWindows(ws.dataset_dir, lfp_path=ws.lfp)
    frame = pq.read_table(ds.windows_path, columns=_FRAME_COLUMNS).to_pandas()
    split = frame["split"].to_numpy()
    train_rows = _subsample(np.flatnonzero(split == "train"), options.max_windows, rng)
    test_rows = _subsample(np.flatnonzero(split == "test"), options.max_windows, rng)
    if not len(train_rows) or not len(test_rows):
        raise InputError(f"{ds.windows_path} has {len(train_rows)} train and {len(test_rows)} test windows: "
                         "the baseline needs both; re-export with more insertions")
    # leaky control: the pid-level split of the same catalog and parameters
    leaky_pids: list[str] = []
    leaky_added: list[str] = []
    n_leaky_pids = 0
    leaky_skipped: dict[str, str] = {}
    extra = pd.DataFrame()
    if split_params["leakage"] != "pid":
        leak = zero_shot_split(ws.read_catalog(), split_params["train_release"], split_params["test_release"],
                               "pid", split_params["val_fraction"], split_params["seed"])
        leaky_pids = sorted(leak.loc[leak["split"] == "train", "pid"].astype(str))
        leaky_added = sorted(set(leaky_pids) - set(frame["pid"]))
        classes = sorted(set(frame["label"].astype(str)))
        extra, leaky_skipped = _leaky_windows(ws, recorded, leaky_added, classes)
    bands = [b[0] for b in usable_bands(float(frame["fs"].iloc[0]))]

    with atomic_path(ws.dataset_dir / "baseline") as out_dir:
        out_dir.mkdir(parents=True)
        lab_rows = _subsample(np.arange(len(frame)), options.max_windows, rng)
        needed = np.union1d(np.union1d(train_rows, test_rows), lab_rows)
        own = _subsample(np.flatnonzero(frame["pid"].isin(leaky_pids).to_numpy()), options.max_windows, rng)
        needed = np.union1d(needed, own)
        t_feat = time.perf_counter()
        feats = np.full((len(frame), len(bands)), np.nan)
        feats[needed] = window_features(ds, frame, needed, options.welch_seconds)
        feature_seconds = time.perf_counter() - t_feat
        n_extracted = len(needed)
        depth = frame["axial_um"].to_numpy(dtype=np.float64)[:, None]
        labels = frame["label"].astype(str).to_numpy()

        x_all = {"main": np.hstack([feats, depth]) if options.depth else feats, "bands": feats, "depth": depth}
        y_train, y_test = labels[train_rows], labels[test_rows]
        fit = {"classifier": options.classifier, "c": options.c, "seed": options.seed}
        preds = {name: fit_predict(x_all[kind][train_rows], y_train, x_all[kind][test_rows], **fit)
                 for name, kind in (("main", "main"), ("depth_only", "depth"), ("bands_only", "bands"))}
        if len(own) or len(extra):
            x_leak, y_leak = x_all["main"][own], labels[own]
            if len(extra):
                extra_path = out_dir / LEAKY_WINDOWS
                pq.write_table(to_table(extra), extra_path)
                extra_frame = pq.read_table(extra_path, columns=_FRAME_COLUMNS).to_pandas()
                t_feat = time.perf_counter()
                extra_feats = window_features(LfpWindows(extra_path, lfp_path=ws.lfp), extra_frame,
                                              np.arange(len(extra_frame)), options.welch_seconds)
                feature_seconds += time.perf_counter() - t_feat
                n_extracted += len(extra_frame)
                extra_depth = extra_frame["axial_um"].to_numpy(dtype=np.float64)[:, None]
                x_leak = np.vstack([x_leak, np.hstack([extra_feats, extra_depth]) if options.depth else extra_feats])
                y_leak = np.concatenate([y_leak, extra_frame["label"].astype(str).to_numpy()])
            n_leaky_pids = len(set(frame["pid"].iloc[own]) | set(extra["pid"] if len(extra) else ()))
            keep = _subsample(np.arange(len(y_leak)), options.max_windows, rng)
            preds["leaky"] = fit_predict(x_leak[keep], y_leak[keep], x_all["main"][test_rows], **fit)

        x_train, x_test = x_all["main"][train_rows], x_all["main"][test_rows]
        shuffled = [balanced_accuracy(y_test, fit_predict(x_train, permuted(y_train, options.seed + k), x_test, **fit))
                    for k in range(options.n_permutations)]
        groups = frame["pid"].to_numpy()[test_rows]
        boot = bootstrap_ci(y_test, preds, groups, options.n_bootstrap, options.ci_level, options.seed)
        scores = {name: _score(name, y_test, pred, boot) for name, pred in preds.items()}
        x_lab = x_all["main"][lab_rows]
        lab, pid_of_row = frame["lab"].astype(str).to_numpy()[lab_rows], frame["pid"].to_numpy()[lab_rows]
        labels_cm = sorted(set(y_test.tolist()) | set(preds["main"].tolist()))
        results = {
            "parameters": {
                **asdict(options), "features": [*bands, *([DEPTH_FEATURE] if options.depth else [])],
                "bands_hz": {name: [lo, hi] for name, lo, hi in usable_bands(float(frame["fs"].iloc[0]))},
                "welch": {"window": "hann", "nperseg": welch_nperseg(float(frame["fs"].iloc[0]),
                                                                    int(frame["n_samples"].iloc[0]),
                                                                    options.welch_seconds),
                          "overlap": 0.5, "detrend": "constant", "average": "mean", "scaling": "density"},
                "split": split_params,
                "splits_json_sha256": hashlib.sha256(splits_path.read_bytes()).hexdigest(),  # which export
                "label_name": recorded.get("summary", {}).get("label_name"),
            },
            "counts": {
                "train_windows": int(len(train_rows)), "test_windows": int(len(test_rows)),
                "train_insertions": int(frame["pid"].iloc[train_rows].nunique()),
                "test_insertions": int(frame["pid"].iloc[test_rows].nunique()),
                "train_classes": sorted(set(y_train.tolist())), "test_classes": sorted(set(y_test.tolist())),
            },
            "main": scores["main"],
            "chance": chance_levels(y_train, y_test),
            "per_region_recall": per_class_recall(y_test, preds["main"]),
            "confusion": {"labels": labels_cm, "matrix": confusion(y_test, preds["main"], labels_cm).tolist()},
            "controls": {
                "permuted_labels": {"balanced_accuracy": float(np.mean(shuffled)),
                                    "range": [float(np.min(shuffled)), float(np.max(shuffled))],
                                    "values": shuffled},
                "depth_only": scores["depth_only"],
                "bands_only": scores["bands_only"],
                "leaky_split": _leaky_result(scores, boot, options, n_leaky_pids, leaky_added, leaky_skipped,
                                             split_params["leakage"]),
                "lab": {
                    "labs": sorted(set(lab.tolist())),
                    "auc_new_insertions": lab_auc(x_lab, lab, pid_of_row, seed=options.seed,
                                                  classifier=options.classifier, c=options.c),
                    "auc_windows": lab_auc(x_lab, lab, None, seed=options.seed, classifier=options.classifier,
                                           c=options.c),
                },
            },
        }
        write_json(results, out_dir / RESULTS)
        summary = render_summary(results)
        write_text(summary, out_dir / SUMMARY)
    append_to_card(ws.dataset_dir / "DATA_CARD.md", summary)
    rate = n_extracted / feature_seconds if feature_seconds > 0 else float("nan")
    logger.info("baseline: balanced accuracy %.3f (chance %.3f) on %d test windows; %d windows featurised "
                "in %.1f s (%.0f windows/s); total %.1f s", results["main"]["balanced_accuracy"],
                results["chance"]["stratified"], len(test_rows), n_extracted, feature_seconds, rate,
                time.perf_counter() - t0)
    ws.record_stage(STAGE, asdict(options))
    return results


def _leaky_result(scores: dict, boot: dict, options: BaselineOptions, n_pids: int, added: list[str],
                  skipped: dict[str, str], leakage: str) -> dict:
    if leakage == "pid":
        return {"note": "the export is already split at the pid level: no leakier split to compare"}
    if "leaky" not in scores:
        return {"note": "the pid-level split has no training insertion with lfp and qc outputs",
                "skipped_insertions": skipped}
    return {**scores["leaky"],
            "inflation": scores["leaky"]["balanced_accuracy"] - scores["main"]["balanced_accuracy"],
            "inflation_ci": difference_ci(boot["replicates"]["leaky"], boot["replicates"]["main"],
                                          options.ci_level),
            "train_insertions": n_pids, "added_insertions": [p for p in added if p not in skipped],
            "skipped_insertions": skipped}
