"""Channel labels at the Allen, Beryl and Cosmos levels, and user target sets matched through the hierarchy.

Peers pick regions by substring ("CA" matches "CA1" but also "CA3" and "CP"...). Here a target acronym is an
Allen structure and a channel belongs to it only if the structure is the channel's own region or one of its
ancestors (a parent includes its descendants). Every channel that does not make it into the dataset is kept
in an exclusion table with its reason, so the data card can account for all of them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ibl_ephys_data.atlas import acronym_to_id, brain_regions
from ibl_ephys_data.errors import InputError

logger = logging.getLogger(__name__)

LEVELS = ("allen", "beryl", "cosmos")
# channels.parquet columns (id, acronym) per level
LEVEL_COLUMNS = {
    "allen": ("atlas_id", "acronym"),
    "beryl": ("beryl_id", "beryl_acronym"),
    "cosmos": ("cosmos_id", "cosmos_acronym"),
}
VOID_ID, ROOT_ID = 0, 997
TARGET = "target"


def normalize_level(level: str) -> str:
    """Accept 'Allen'/'beryl'/... and return the lower-case level name, or fail naming the choices."""
    name = str(level).strip().lower()
    if name not in LEVELS:
        raise InputError(f"unknown label level {level!r}: use one of {', '.join(LEVELS)}")
    return name


def parse_regions(regions: str | Sequence[str] | None) -> list[str]:
    """Split a comma-joined string (as typed on a command line) or clean a list; keep order, drop repeats."""
    if regions is None:
        return []
    items = regions.split(",") if isinstance(regions, str) else list(regions)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def _name_table() -> dict[str, str]:
    br = brain_regions()
    return {str(n).lower(): str(a) for n, a, rid in zip(br.name, br.acronym, br.id, strict=True) if rid >= 0}


def close_matches(name: str, acronyms: Sequence[str], n: int = 8) -> list[str]:
    """Most similar acronyms (case-insensitive difflib ratio, ties in alphabetical order)."""
    matcher = difflib.SequenceMatcher(b=name.lower())
    scored = []
    for acronym in acronyms:
        matcher.set_seq1(acronym.lower())
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6 and matcher.ratio() >= 0.6:
            scored.append((-matcher.ratio(), acronym))
    return [a for _, a in sorted(scored)[:n]]


def resolve_regions(regions: str | Sequence[str]) -> dict[str, int]:
    """Map target acronyms to Allen ids; an unknown acronym raises a one-line error listing close matches."""
    names = parse_regions(regions)
    if not names:
        raise InputError("regions is empty: give Allen acronyms such as CA1,DG,VIS")
    table = acronym_to_id()
    resolved = {}
    for name in names:
        if name not in table:
            by_name = _name_table().get(name.lower())
            hints = ([f"{by_name} ({name})"] if by_name else []) + close_matches(name, table)
            hint = ", ".join(hints) or "none"
            raise InputError(
                f"unknown region acronym {name!r} (close matches: {hint}); "
                "regions are Allen acronyms, matched through the hierarchy, never by substring"
            )
        resolved[name] = table[name]
    return resolved


def descendant_ids(region_id: int) -> np.ndarray:
    """Allen ids (positive) of a structure and all its descendants."""
    ids = brain_regions().descendants(int(region_id)).id
    return np.unique(ids[ids >= 0]).astype(np.int64)


def assign_targets(atlas_ids: Sequence[int] | np.ndarray, regions: str | Sequence[str]) -> np.ndarray:
    """Target acronym of every Allen id (object array, None outside all targets).

    Why hierarchy and not strings: ``HPF`` must take ``CA1`` and ``DG-mo`` channels but never ``CP``. When
    targets are nested (``HPF`` and ``CA1``) the most specific one wins, so each channel has one class.
    """
    targets = resolve_regions(regions)
    ids = np.abs(np.asarray(atlas_ids, dtype=np.int64))
    out = np.full(ids.shape, None, dtype=object)
    depth = {name: int(brain_regions().get(rid).level[0]) for name, rid in targets.items()}
    for name in sorted(targets, key=lambda n: depth[n]):
        out[np.isin(ids, descendant_ids(targets[name]))] = name
    return out


def label_channels(
    channels: pd.DataFrame,
    channel_qc: pd.DataFrame | None = None,
    level: str = "beryl",
    regions: str | Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label every channel and split them into kept and excluded (with a reason each).

    ``channels`` follows channels.parquet; ``channel_qc`` follows qc/channel_metrics.parquet (pid, raw_ind,
    usable, unusable_reason). Kept channels get ``allen_id/allen_acronym``, ``beryl_*``, ``cosmos_*``,
    ``target`` (the matched target region, or None without targets) and ``label`` (the class: the target,
    else the acronym at ``level``). Excluded rows are (pid, raw_ind, reason) with reasons
    ``unusable: <qc reason>``, ``no channel QC``, ``void/root at <level>`` and ``outside target regions``.
    """
    level = normalize_level(level)
    needed = {"pid", "raw_ind"} | {c for cols in LEVEL_COLUMNS.values() for c in cols}
    missing = sorted(needed - set(channels.columns))
    if missing:
        raise InputError(
            f"channels table lacks columns {missing}: re-run `ibl-ephys-data channels` (channels.parquet)"
        )
    df = channels.copy()
    df["pid"] = df["pid"].astype(str)
    df["raw_ind"] = df["raw_ind"].astype(np.int64)
    for lev, (id_col, acr_col) in LEVEL_COLUMNS.items():
        df[f"{lev}_id"] = pd.to_numeric(df[id_col], errors="coerce").abs().fillna(VOID_ID).astype(np.int64)
        df[f"{lev}_acronym"] = df[acr_col].astype("string").fillna("void").astype(object)
    reason = pd.Series(pd.NA, index=df.index, dtype="object")

    if channel_qc is not None:
        qc_missing = sorted({"pid", "raw_ind", "usable"} - set(channel_qc.columns))
        if qc_missing:
            raise InputError(
                f"channel QC table lacks columns {qc_missing}: re-run `ibl-ephys-data qc` to rebuild "
                "qc/channel_metrics.parquet"
            )
        qc = channel_qc[["pid", "raw_ind", "usable"]].copy()
        qc["pid"] = qc["pid"].astype(str)
        qc["unusable_reason"] = channel_qc.get("unusable_reason", pd.Series("", index=channel_qc.index))
        qc["raw_ind"] = qc["raw_ind"].astype(np.int64)
        merged = df[["pid", "raw_ind"]].merge(qc.drop_duplicates(["pid", "raw_ind"]), how="left",
                                               on=["pid", "raw_ind"])
        merged.index = df.index
        no_qc = merged["usable"].isna()
        unusable = ~no_qc & ~merged["usable"].eq(True)
        why = merged["unusable_reason"].fillna("").astype(str).str.strip().replace("", "unspecified")
        reason[no_qc] = "no channel QC"
        reason[unusable] = "unusable: " + why[unusable]

    names = parse_regions(regions)
    # with targets the class comes from the Allen id, so that is the level that must not be void/root
    check_level = "allen" if names else level
    void_root = df[f"{check_level}_id"].isin([VOID_ID, ROOT_ID])
    reason[reason.isna() & void_root] = f"void/root at {check_level}"

    if names:
        df[TARGET] = assign_targets(df["allen_id"].to_numpy(), names)
        reason[reason.isna() & df[TARGET].isna()] = "outside target regions"
        df["label"] = df[TARGET]
    else:
        df[TARGET] = None
        df["label"] = df[f"{level}_acronym"]

    excluded = df.loc[reason.notna(), ["pid", "raw_ind"]].assign(reason=reason[reason.notna()].astype(str))
    kept = df.loc[reason.isna()].reset_index(drop=True)
    logger.info("labelled %d channels: %d kept, %d excluded", len(df), len(kept), len(excluded))
    return kept, excluded.reset_index(drop=True)


def apply_min_channels(
    labelled: pd.DataFrame, min_channels: int, strict: bool = False
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop classes with fewer than ``min_channels`` channels; return the kept rows and {class: n channels}.

    A class that is too small cannot be learned or evaluated, but silently losing it would mislead, so the
    dropped classes are returned for the data card (or, with ``strict``, raised).
    """
    if min_channels < 0:
        raise InputError(f"min_channels={min_channels} is negative: give 0 (keep all) or a positive count")
    counts = labelled.groupby("label").size()
    small = counts[counts < min_channels]
    dropped = {str(k): int(v) for k, v in small.sort_index().items()}
    if dropped and strict:
        listing = ", ".join(f"{k} ({v})" for k, v in dropped.items())
        raise InputError(
            f"classes with fewer than {min_channels} channels: {listing}; lower min_channels or drop strict"
        )
    if dropped:
        logger.warning("dropping %d classes below %d channels: %s", len(dropped), min_channels, dropped)
    return labelled[~labelled["label"].isin(list(dropped))].reset_index(drop=True), dropped
