"""Leakage-free splits and their verification, derived from the catalog alone.

Why: 44 of the 83 reproducible-ephys insertions are also brain-wide-map insertions, and their sessions and
subjects hold many more. Training on BWM and testing on repro-ephys is only zero-shot if nothing at the
chosen level (pid < session < subject < lab) appears on both sides. The split is a pure function of the
catalog and a few parameters, so `verify` can re-derive it and compare, trusting nothing but the catalog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ibl_ephys_data.errors import IblEphysDataError, InputError, MissingStageError
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpStore

logger = logging.getLogger(__name__)

LEAKAGE_LEVELS = ("pid", "session", "subject", "lab")
LEVEL_KEYS = {"pid": "pid", "session": "eid", "subject": "subject", "lab": "lab"}
MODES = ("zero-shot", "kfold")
EXCLUDED = "excluded"


class LeakageError(IblEphysDataError, ValueError):
    """Raised when a split leaks (or disagrees with its re-derivation from the catalog)."""


def normalize_leakage(leakage: str) -> str:
    name = str(leakage).strip().lower()
    if name not in LEAKAGE_LEVELS:
        raise InputError(f"unknown leakage level {leakage!r}: use one of {', '.join(LEAKAGE_LEVELS)}")
    return name


def levels_up_to(leakage: str) -> tuple[str, ...]:
    """The levels a split at ``leakage`` must keep apart: that level and every finer one."""
    return LEAKAGE_LEVELS[: LEAKAGE_LEVELS.index(normalize_leakage(leakage)) + 1]


def release_sets(catalog: pd.DataFrame) -> pd.Series:
    """The catalog's comma-joined ``releases`` as sets (empty for missing)."""
    if "releases" not in catalog.columns:
        raise InputError("catalog lacks the 'releases' column: re-run `ibl-ephys-data catalog`")
    return catalog["releases"].fillna("").astype(str).map(
        lambda s: frozenset(r.strip() for r in s.split(",") if r.strip())
    )


def _check_catalog(catalog: pd.DataFrame, levels: Iterable[str]) -> pd.DataFrame:
    needed = {"pid", "releases"} | {LEVEL_KEYS[lev] for lev in levels}
    missing = sorted(needed - set(catalog.columns))
    if missing:
        raise InputError(f"catalog lacks columns {missing}: re-run `ibl-ephys-data catalog`")
    if catalog["pid"].duplicated().any():
        dup = catalog.loc[catalog["pid"].duplicated(), "pid"].iloc[0]
        raise InputError(f"catalog lists pid {dup} more than once: rebuild catalog.parquet")
    out = catalog.copy()
    out["pid"] = out["pid"].astype(str)
    return out.reset_index(drop=True)


def _keys(catalog: pd.DataFrame, level: str) -> pd.Series:
    """Key of every row at ``level`` as str, None where unknown (unknown never matches anything)."""
    col = catalog[LEVEL_KEYS[level]]
    return col.map(lambda v: None if pd.isna(v) or str(v) == "" else str(v))


def _release_mask(catalog: pd.DataFrame, release: str) -> pd.Series:
    sets = release_sets(catalog)
    mask = sets.map(lambda s: release in s)
    if not mask.any():
        known = sorted(set().union(*sets)) if len(sets) else []
        raise InputError(f"no insertion of release {release!r} in the catalog (releases there: {known})")
    return mask


def _leaking(catalog: pd.DataFrame, candidates: pd.Series, test: pd.Series, level: str) -> pd.Series:
    """Candidate rows sharing any key at ``level`` or a finer level with the test rows."""
    hit = pd.Series(False, index=catalog.index)
    for lev in levels_up_to(level):
        keys = _keys(catalog, lev)
        test_keys = {k for k in keys[test] if k is not None}
        hit |= candidates & keys.map(lambda k, tk=test_keys: k is not None and k in tk)
    return hit


def plan_zero_shot(catalog: pd.DataFrame, train: str = "bwm", test: str = "repro-ephys") -> dict[str, int]:
    """How many training insertions each leakage level costs: {level: n training pids removed}.

    Insertions in both releases belong to the test side, so even the pid level costs their number.
    """
    cat = _check_catalog(catalog, LEAKAGE_LEVELS)
    is_test = _release_mask(cat, test)
    candidates = _release_mask(cat, train) & ~is_test
    cost = {"pid": int((_release_mask(cat, train) & is_test).sum())}
    for level in LEAKAGE_LEVELS[1:]:
        cost[level] = cost["pid"] + int(_leaking(cat, candidates, is_test, level).sum())
    return cost


def _group_keys(catalog: pd.DataFrame, level: str) -> pd.Series:
    """Grouping key at ``level``; an unknown key falls back to the pid (its own group)."""
    keys = _keys(catalog, level)
    return keys.where(keys.notna(), "pid:" + catalog["pid"])


def _take_validation(groups: pd.Series, fraction: float, seed: int) -> set[str]:
    """Whole groups, in a seeded order, adding up to round(``fraction`` x rows) without overshooting.

    Skipping a group that would overshoot keeps a small release from losing half its training set to one
    large subject; never all groups are taken.
    """
    if not 0 <= fraction < 1:
        raise InputError(f"val_fraction={fraction} must be in [0, 1)")
    goal = round(fraction * len(groups))
    if goal == 0:
        return set()
    sizes = groups.value_counts().sort_index()
    chosen, total = set(), 0
    for i in np.random.default_rng(seed).permutation(len(sizes)):
        if len(chosen) == len(sizes) - 1 or total == goal:
            break
        if total + int(sizes.iloc[i]) <= goal:
            chosen.add(sizes.index[i])
            total += int(sizes.iloc[i])
    return chosen


def zero_shot_split(
    catalog: pd.DataFrame,
    train: str = "bwm",
    test: str = "repro-ephys",
    leakage: str = "subject",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per insertion of either release: pid, split (train/val/test/excluded), fold (-1), reason.

    The validation insertions are whole groups at the leakage level taken from the training side, so
    train and validation are as separate as train and test.
    """
    leakage = normalize_leakage(leakage)
    if train == test:
        raise InputError(f"train and test release are both {train!r}: a zero-shot split needs two releases")
    cat = _check_catalog(catalog, LEAKAGE_LEVELS)
    is_test = _release_mask(cat, test)
    is_train = _release_mask(cat, train)
    leak = _leaking(cat, is_train & ~is_test, is_test, leakage)
    split = pd.Series(None, index=cat.index, dtype=object)
    reason = pd.Series("", index=cat.index, dtype=object)
    split[is_test] = "test"
    split[is_train & ~is_test & leak] = EXCLUDED
    reason[is_train & is_test] = f"in both releases (test side), costs a {train} insertion"
    reason[is_train & ~is_test & leak] = f"shares a {leakage} (or finer) key with the {test} release"
    train_rows = is_train & ~is_test & ~leak
    groups = _group_keys(cat, leakage)[train_rows]
    val_groups = _take_validation(groups, val_fraction, seed)
    split[train_rows] = np.where(groups.isin(val_groups), "val", "train")
    keep = split.notna()
    return pd.DataFrame(
        {"pid": cat.loc[keep, "pid"], "split": split[keep], "fold": -1, "reason": reason[keep]}
    ).reset_index(drop=True)


def kfold_split(
    catalog: pd.DataFrame,
    release: str = "bwm",
    k: int = 5,
    group_by: str = "subject",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """k folds of one release grouped by ``group_by`` (pid/session/subject/lab) plus a validation split.

    Groups are dealt to folds largest first onto the smallest fold, so folds stay balanced in insertions
    while a group never straddles two folds. Rows: pid, split (``fold<i>`` or ``val``), fold (-1 for val).
    """
    group_by = normalize_leakage(group_by)
    if k < 2:
        raise InputError(f"k={k}: k-fold splitting needs k >= 2")
    cat = _check_catalog(catalog, LEAKAGE_LEVELS)
    cat = cat[_release_mask(cat, release)].reset_index(drop=True)
    groups = _group_keys(cat, group_by)
    val_groups = _take_validation(groups, val_fraction, seed)
    rest = groups[~groups.isin(val_groups)]
    sizes = rest.value_counts()
    if len(sizes) < k:
        raise InputError(
            f"only {len(sizes)} {group_by} groups left for k={k} folds in release {release!r}: lower k"
        )
    rng = np.random.default_rng(seed + 1)
    order = sorted(sizes.index, key=lambda g: (-int(sizes[g]), rng.random()))
    fold_sizes = np.zeros(k, dtype=int)
    fold_of: dict[str, int] = {}
    for g in order:
        f = int(np.argmin(fold_sizes))
        fold_of[g] = f
        fold_sizes[f] += int(sizes[g])
    fold = groups.map(lambda g: fold_of.get(g, -1)).astype(int)
    split = np.where(fold < 0, "val", "fold" + fold.astype(str))
    return pd.DataFrame({"pid": cat["pid"], "split": split, "fold": fold, "reason": ""})


def make_split(
    catalog: pd.DataFrame,
    mode: str = "zero-shot",
    leakage: str = "subject",
    train_release: str = "bwm",
    test_release: str = "repro-ephys",
    k: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Dispatch on ``mode``; the parameters are exactly those recorded in splits.json."""
    if mode == "zero-shot":
        return zero_shot_split(catalog, train_release, test_release, leakage, val_fraction, seed)
    if mode == "kfold":
        return kfold_split(catalog, train_release, k, leakage, val_fraction, seed)
    raise InputError(f"unknown split mode {mode!r}: use one of {', '.join(MODES)}")


def split_parameters(
    mode: str, leakage: str, train_release: str, test_release: str, k: int, val_fraction: float, seed: int
) -> dict[str, Any]:
    """The parameters `verify` needs to re-derive a split (stored in splits.json under ``parameters``)."""
    return {
        "mode": mode, "leakage": normalize_leakage(leakage), "train_release": train_release,
        "test_release": test_release, "k": int(k), "val_fraction": float(val_fraction), "seed": int(seed),
    }


# verification --------------------------------------------------------------------------------------------
def _resolve_paths(
    workspace: Workspace | str | Path, catalog: Path | None, splits: Path | None, windows: Path | None
) -> tuple[Path, Path, Path | None]:
    root = Path(workspace.root if isinstance(workspace, Workspace) else workspace)
    dataset_dir = root if (root / "splits.json").exists() else Workspace(root).dataset_dir
    ws_root = root.parent if dataset_dir == root else root
    catalog = Path(catalog) if catalog else Workspace(ws_root).catalog
    splits = Path(splits) if splits else dataset_dir / "splits.json"
    if windows is None and (splits.parent / "windows.parquet").exists():
        windows = splits.parent / "windows.parquet"
    for path, what in ((catalog, "catalog"), (splits, "export")):
        if not path.exists():
            raise MissingStageError(f"{path} does not exist", "dataset" if what == "export" else what)
    return catalog, splits, windows


def _fmt(items: Iterable[str], n: int = 8) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _leak_problems(cat: pd.DataFrame, assigned: pd.DataFrame, leakage: str) -> list[str]:
    """Keys at ``leakage`` or finer found in more than one split, naming the pids involved."""
    problems = []
    rows = assigned[assigned["split"] != EXCLUDED].merge(cat, on="pid", how="inner")
    for level in levels_up_to(leakage):
        keys = _keys(rows, level)
        frame = pd.DataFrame({"key": keys, "split": rows["split"], "pid": rows["pid"]}).dropna(subset=["key"])
        spread = frame.groupby("key")["split"].nunique()
        for key in sorted(spread[spread > 1].index):
            parts = frame[frame["key"] == key].groupby("split")["pid"].apply(list)
            sides = "; ".join(f"{s}: {_fmt(p, 4)}" for s, p in parts.items())
            label = "pid" if level == "pid" else f"{level} {key}"
            problems.append(f"leakage at {level} level: {label} appears in several splits ({sides})")
    return problems


def verify_split(catalog: pd.DataFrame, splits: dict, windows: pd.DataFrame | None = None) -> list[str]:
    """Problems found re-deriving ``splits`` (a loaded splits.json) from the catalog; empty when clean."""
    problems: list[str] = []
    params = splits.get("parameters")
    assignments = splits.get("assignments")
    if not isinstance(params, dict) or not isinstance(assignments, dict):
        return ["splits.json lacks 'parameters' or 'assignments': re-run `ibl-ephys-data export`"]
    cat = _check_catalog(catalog, LEAKAGE_LEVELS)
    assigned = pd.DataFrame(
        [{"pid": str(p), "split": str(v["split"]), "fold": int(v.get("fold", -1))}
         for p, v in assignments.items()],
        columns=["pid", "split", "fold"],
    )
    unknown = set(assigned["pid"]) - set(cat["pid"])
    if unknown:
        problems.append(f"pids in splits.json but not in the catalog: {_fmt(unknown)}")
    problems += _leak_problems(cat, assigned, params["leakage"])

    sets = dict(zip(cat["pid"], release_sets(cat), strict=True))
    if params["mode"] == "zero-shot":
        train, test = params["train_release"], params["test_release"]
        bad_test = [
            p for p in assigned.loc[assigned["split"] == "test", "pid"] if test not in sets.get(p, ())
        ]
        bad_train = [
            p for p in assigned.loc[assigned["split"].isin(["train", "val"]), "pid"]
            if train not in sets.get(p, ()) or test in sets.get(p, ())
        ]
        if bad_test:
            problems.append(f"test pids outside release {test}: {_fmt(bad_test)}")
        if bad_train:
            problems.append(f"train/val pids outside release {train} or inside {test}: {_fmt(bad_train)}")

    try:
        expected = make_split(cat, **{k: params[k] for k in
                                      ("mode", "leakage", "train_release", "test_release", "k",
                                       "val_fraction", "seed")})
    except (KeyError, ValueError) as err:
        problems.append(f"cannot re-derive the split from the catalog: {err}")
    else:
        exp = dict(zip(expected["pid"], expected["split"], strict=True))
        got = dict(zip(assigned["pid"], assigned["split"], strict=True))
        diff = sorted(p for p in set(exp) | set(got) if exp.get(p) != got.get(p))
        if diff:
            detail = _fmt([f"{p} (splits.json: {got.get(p)}, catalog: {exp.get(p)})" for p in diff], 5)
            problems.append(f"{len(diff)} pids disagree with the split re-derived from the catalog: {detail}")
        if params["mode"] == "zero-shot" and "cost" in splits:
            cost = plan_zero_shot(cat, params["train_release"], params["test_release"])
            if {k: int(v) for k, v in splits["cost"].items()} != cost:
                problems.append(f"recorded leakage cost {splits['cost']} differs from the catalog's {cost}")

    if windows is not None and len(windows):
        pairs = windows[["pid", "split"]].astype(str).drop_duplicates()
        got = dict(zip(assigned["pid"], assigned["split"], strict=True))
        wrong = [f"{p} (windows: {s}, splits.json: {got.get(p)})" for p, s in pairs.itertuples(index=False)
                 if got.get(p) != s or s == EXCLUDED]
        if wrong:
            problems.append(f"windows.parquet splits disagree with splits.json for pids: {_fmt(wrong, 5)}")
            problems += [f"windows.parquet: {p}" for p in _leak_problems(cat, pairs, params["leakage"])]
    return problems


def verify(
    workspace: Workspace | str | Path,
    catalog: Path | None = None,
    splits: Path | None = None,
    windows: Path | None = None,
    storage: bool = True,
) -> list[str]:
    """Re-derive the dataset's split from the catalog; return the problems (leaks name pids/subjects).

    ``workspace`` is a Workspace, its root or its dataset/ folder; the paths override single files. With
    ``storage`` the lfp.zarr groups the windows point into are checked too (`LfpStore.problems`: missing or
    short shard files are named).
    """
    catalog, splits, windows = _resolve_paths(workspace, catalog, splits, windows)
    recorded = json.loads(Path(splits).read_text())
    win = pd.read_parquet(windows, columns=["pid", "split"]) if windows is not None else None
    problems = verify_split(pd.read_parquet(catalog), recorded, win)
    if storage and win is not None:
        store = LfpStore(Workspace(Path(catalog).parent).lfp)
        problems += [p for pid in sorted(win["pid"].unique()) for p in store.problems(str(pid))]
    for p in problems:
        logger.error("verify: %s", p)
    if not problems:
        logger.info("verify: %s is leakage-free at the %s level", splits, recorded["parameters"]["leakage"])
    return problems


def verify_or_raise(workspace: Workspace | str | Path, **paths: Path | None) -> None:
    """`verify`, raising `LeakageError` with every problem (``export_dataset`` calls it before writing)."""
    problems = verify(workspace, **paths)
    if problems:
        raise LeakageError(f"dataset split verification failed: {' | '.join(problems)}")
