"""Which brain regions each dataset covers: external channel tables, the coverage table, overlay frames.

Before training, the first question is what each dataset covers. IBL releases are sources (an insertion in
two releases counts for both, from ``catalog.parquet``'s ``releases``); so is any channel table imported
with :func:`import_channels` (e.g. the Allen Institute's Visual Coding Neuropixels channels), stored in
``external_channels.parquet`` with a ``source`` column.

Imported coordinates are Allen CCF µm (``ap, dv, ml``; ML grows to the animal's right), the frame AllenSDK
and IBL share (``iblatlas.atlas.AllenAtlas.xyz2ccf``): they are stored as given, never mirrored, and IBL
``x, y, z`` are derived from them with :func:`ibl_ephys_data.atlas.ccf_um_to_xyz`, so the lateralised ids
(negative in the left hemisphere) follow the coordinates.

Rows that cannot be placed are never dropped silently. Each row is kept or excluded for the first of these
reasons, counted per source in the import summary (returned, logged, recorded in the manifest and shown
by the HTML report): ``no_coordinates`` (a CCF coordinate is missing), ``outside_volume`` (outside the
Allen volume, :data:`ibl_ephys_data.atlas.CCF_EXTENT_UM`; a warning), ``no_region`` (neither an id nor an
acronym), ``unknown_region`` (an id or acronym not in the iblatlas structure tree: counted, not an error,
so one odd label does not block a whole dataset; the first ones are listed). Stored rows always have
coordinates and a region.

Void and root: ``void`` (id 0, outside the brain) and ``root`` (997, in the brain without a finer label)
are rows of the coverage table like any region, so every channel is counted exactly once per level and the
Beryl / Cosmos roll-ups sum to the Allen-level total. At the Beryl and Cosmos levels, labels without a
parcel of that level (e.g. ``grey``, fibre tracts) become ``root``, as ``BrainRegions.remap`` does.
:func:`regions_in_one_source`, :func:`overlap`, :func:`overlap_summary` and :func:`channels_per_region` (the
one pivot the command line and the report show) leave void and root out: they are not regions anyone
trains on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ibl_ephys_data.atlas import (
    BREGMA_CCF_UM,
    CCF_EXTENT_UM,
    NON_REGIONS,
    acronym_to_id,
    ccf_um_to_xyz,
    id_to_row,
    region_table,
)
from ibl_ephys_data.errors import InputError, MissingInputError, MissingStageError
from ibl_ephys_data.ibl import RELEASES
from ibl_ephys_data.workspace import Workspace, write_parquet

logger = logging.getLogger(__name__)

ALLENSDK_CCF = ("anterior_posterior_ccf_coordinate", "dorsal_ventral_ccf_coordinate",
                "left_right_ccf_coordinate")
ALLENSDK_REGION = ("ecephys_structure_id", "ecephys_structure_acronym")
GENERIC_CCF = ("ccf_ap_um", "ccf_dv_um", "ccf_ml_um")
GENERIC_REGION = ("atlas_id", "acronym")
#: layout -> (ccf columns, id column, acronym column, probe, session, channel id, axial, lateral candidates)
LAYOUTS = {
    "allensdk": (ALLENSDK_CCF, *ALLENSDK_REGION, ("ecephys_probe_id",), ("ecephys_session_id",),
                 ("id", "ecephys_channel_id"), ("probe_vertical_position",), ("probe_horizontal_position",)),
    "generic": (GENERIC_CCF, *GENERIC_REGION, ("probe_id", "pid"), ("session_id", "eid"),
                ("channel_id", "id"), ("axial_um",), ("lateral_um",)),
}
REASONS = ("no_coordinates", "outside_volume", "no_region", "unknown_region")
LEVELS = {"allen": ("atlas_id", "acronym"), "beryl": ("beryl_id", "beryl_acronym"),
          "cosmos": ("cosmos_id", "cosmos_acronym")}
#: Source of IBL channels whose insertion has no release in the catalog (or when there is no catalog).
IBL_SOURCE = "ibl"
IMPORT_STAGE = "import-channels"
EXTERNAL_COLUMNS = (
    "source", "probe_id", "session_id", "channel_id", "ccf_ap_um", "ccf_dv_um", "ccf_ml_um", "x", "y", "z",
    "axial_um", "lateral_um", "atlas_id", "lateralized_id", "acronym", "beryl_id", "beryl_acronym",
    "cosmos_id", "cosmos_acronym",
)
COVERAGE_COLUMNS = ("region", "region_id", "source", "n_channels", "n_insertions", "channel_fraction",
                    "level", "usable_only")
SUMMARY_COLUMNS = ("source", "file", "layout", "n_rows", "n_stored", *(f"n_{r}" for r in REASONS),
                   "unknown_regions")


def _workspace(workspace: Workspace | str | os.PathLike) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def _check_source(source: str) -> str:
    name = str(source).strip() if source is not None else ""
    reserved = {*RELEASES, IBL_SOURCE}
    if not name or "," in name or name.lower() in reserved:
        raise InputError(f"source name {source!r} must be non-empty, without commas, and not one of "
                         f"{', '.join(sorted(reserved))} (IBL sources): pick e.g. 'allen-visual-coding'")
    return name


def _detect_layout(columns: pd.Index, csv_path: Path) -> str:
    for layout, (ccf, id_col, acronym_col, *_) in LAYOUTS.items():
        if set(ccf) <= set(columns) and (id_col in columns or acronym_col in columns):
            return layout
    raise InputError(
        f"{csv_path} has neither channel-table layout: expected AllenSDK columns {', '.join(ALLENSDK_CCF)} "
        f"plus {' or '.join(ALLENSDK_REGION)}, or generic columns {', '.join(GENERIC_CCF)} plus "
        f"{' or '.join(GENERIC_REGION)} (found: {', '.join(map(str, columns[:12]))})"
    )


def _first(df: pd.DataFrame, candidates: tuple[str, ...]) -> pd.Series | None:
    return next((df[c] for c in candidates if c in df.columns), None)


def _id_strings(values: pd.Series | None, n: int) -> pd.Series:
    """Ids as strings (``123``, not ``123.0`` when a column of integers holds a NaN), None when missing."""
    if values is None:
        return pd.Series([None] * n, dtype=object)
    numeric = pd.to_numeric(values, errors="coerce")
    present = values.notna()
    if numeric[present].notna().all() and (numeric[present] % 1 == 0).all():
        out = numeric.astype("Int64").astype(str)
    else:
        out = values.astype(str).str.strip()
    return out.where(present, None).astype(object).reset_index(drop=True)


def _region_ids(ids: pd.Series | None, acronyms: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Allen ids (positive) from an id column, else the acronym; and which rows had a region at all.

    Unknown ids / acronyms come back as -1 (counted as ``unknown_region``). Where both are given the id wins.
    """
    out = np.full(n, -1, dtype=np.int64)
    has_id = np.zeros(n, dtype=bool)
    if ids is not None:
        numeric = pd.to_numeric(ids, errors="coerce").to_numpy(dtype=float)
        has_id = np.isfinite(numeric)
        known = id_to_row()
        out[has_id] = [int(abs(v)) if int(abs(v)) in known else -1 for v in numeric[has_id]]
    has_acronym = np.zeros(n, dtype=bool)
    if acronyms is not None:
        text = acronyms.astype(object).where(acronyms.notna(), "").astype(str).str.strip().to_numpy()
        has_acronym = (text != "") & (text.astype(str) != "nan")
        use = has_acronym & ~has_id
        lookup = acronym_to_id()
        out[use] = [lookup.get(a, -1) for a in text[use]]
    return out, has_id | has_acronym


def _unknown_labels(ids: pd.Series | None, acronyms: pd.Series | None, rows: np.ndarray) -> list[str]:
    labels: list[str] = []
    for column in (ids, acronyms):
        if column is not None:
            labels += column.iloc[rows].dropna().astype(str).tolist()
    return sorted(set(labels))[:10]


def import_channels(workspace: Workspace | str | os.PathLike, csv_path: str | os.PathLike,
                    source: str) -> pd.DataFrame:
    """Read an external channel table (AllenSDK ``get_channels()`` or generic CSV) into the workspace.

    The rows of ``source`` in ``external_channels.parquet`` are replaced by those of ``csv_path`` (an
    ``id``/``acronym`` per row; CCF µm stored as given). Returns the stored rows of ``source``; the import
    summary (counts per exclusion reason, see the module docstring) is in ``.attrs["summary"]``.
    """
    ws = _workspace(workspace)
    source = _check_source(source)
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise MissingInputError(f"channel table {csv_path} does not exist: pass the CSV to import")
    try:
        raw = pd.read_csv(csv_path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{csv_path} is empty: pass a CSV with a header and one row per channel") from None
    layout = _detect_layout(raw.columns, csv_path)
    ccf_cols, id_col, acronym_col, probe_cols, session_cols, channel_cols, axial_cols, lateral_cols = (
        LAYOUTS[layout])
    raw = raw.reset_index(drop=True)
    n = len(raw)
    ccf = raw.loc[:, list(ccf_cols)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    ids = raw[id_col] if id_col in raw else None
    acronyms = raw[acronym_col] if acronym_col in raw else None
    atlas_ids, has_region = _region_ids(ids, acronyms, n)

    reason = np.full(n, "", dtype=object)
    no_coordinates = ~np.isfinite(ccf).all(axis=1)
    lows = np.zeros(3)
    highs = np.array([CCF_EXTENT_UM[a] for a in ("ap", "dv", "ml")])
    with np.errstate(invalid="ignore"):
        outside = ~no_coordinates & ((ccf < lows) | (ccf > highs)).any(axis=1)
    for name, mask in zip(REASONS, (no_coordinates, outside, ~has_region, atlas_ids < 0), strict=True):
        reason[(reason == "") & mask] = name
    keep = reason == ""
    counts = {f"n_{r}": int((reason == r).sum()) for r in REASONS}
    summary = {"source": source, "file": str(csv_path.absolute()), "layout": layout, "n_rows": n,
               "n_stored": int(keep.sum()), **counts,
               "unknown_regions": _unknown_labels(ids, acronyms, np.flatnonzero(reason == "unknown_region"))}
    if not keep.any():
        logger.warning("%s: no row could be placed (%s): nothing stored for %s; are the coordinates Allen "
                       "CCF µm?", csv_path.name, ", ".join(f"{k}={v}" for k, v in counts.items()), source)
    if counts["n_outside_volume"]:
        logger.warning("%s: %d of %d rows lie outside the Allen CCF volume (0-%s µm) and are excluded",
                       csv_path.name, counts["n_outside_volume"], n, CCF_EXTENT_UM)
    if counts["n_no_coordinates"] or counts["n_no_region"] or counts["n_unknown_region"]:
        logger.warning("%s: %d rows without coordinates, %d without a region, %d with a region not in the "
                       "Allen tree (%s) are not stored", csv_path.name, counts["n_no_coordinates"],
                       counts["n_no_region"], counts["n_unknown_region"],
                       ", ".join(summary["unknown_regions"]) or "-")

    kept = raw[keep].reset_index(drop=True)
    ccf_kept = ccf[keep]
    xyz = ccf_um_to_xyz(ccf_kept) if len(kept) else np.empty((0, 3))
    regions = region_table(atlas_ids[keep], xyz[:, 0])
    axial, lateral = _first(kept, axial_cols), _first(kept, lateral_cols)
    table = pd.DataFrame({
        "source": source,
        "probe_id": _id_strings(_first(kept, probe_cols), len(kept)),
        "session_id": _id_strings(_first(kept, session_cols), len(kept)),
        "channel_id": _id_strings(_first(kept, channel_cols), len(kept)),
        "ccf_ap_um": ccf_kept[:, 0], "ccf_dv_um": ccf_kept[:, 1], "ccf_ml_um": ccf_kept[:, 2],
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "axial_um": (pd.to_numeric(axial, errors="coerce").to_numpy(dtype=float) if axial is not None
                     else np.full(len(kept), np.nan)),
        "lateral_um": (pd.to_numeric(lateral, errors="coerce").to_numpy(dtype=float) if lateral is not None
                       else np.full(len(kept), np.nan)),
        **{c: regions[c].to_numpy() for c in regions.columns},
    }, columns=list(EXTERNAL_COLUMNS))
    if table["probe_id"].isna().all() and len(table):
        logger.warning("%s has no probe id column (%s): insertions of %s cannot be counted",
                       csv_path.name, " or ".join(probe_cols), source)

    others = None
    if ws.external_channels.exists():
        existing = pd.read_parquet(ws.external_channels)
        others = existing[existing["source"].astype(str) != source]
    frames = [f for f in (others, table) if f is not None and len(f)]
    stored = pd.concat(frames, ignore_index=True) if frames else table
    stored = stored.sort_values("source", kind="stable").reset_index(drop=True)
    write_parquet(stored, ws.create().external_channels)
    sources = ws.read_manifest()["stages"].get(IMPORT_STAGE, {}).get("parameters", {}).get("sources", {})
    ws.record_stage(IMPORT_STAGE, {"sources": {**sources, source: summary}})
    logger.info("imported %d of %d channels of %s (%s layout) from %s", summary["n_stored"], n, source,
                layout, csv_path)
    table.attrs["summary"] = summary
    return table


def import_summary(workspace: Workspace | str | os.PathLike) -> pd.DataFrame:
    """One row per imported source: rows read, stored, and excluded by reason.

    Sources whose rows are no longer in ``external_channels.parquet`` are left out, except those that
    stored no row at all (an import that placed nothing is exactly what the summary must show).
    """
    ws = _workspace(workspace)
    present = (set(pd.read_parquet(ws.external_channels, columns=["source"])["source"].astype(str))
               if ws.external_channels.exists() else set())
    sources = ws.read_manifest()["stages"].get(IMPORT_STAGE, {}).get("parameters", {}).get("sources", {})
    rows = [{**s, "unknown_regions": ", ".join(s.get("unknown_regions") or [])}
            for name, s in sorted(sources.items()) if name in present or s.get("n_stored") == 0]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


# coverage -----------------------------------------------------------------------------------------
def _release_lists(pids: pd.Series, catalog: pd.DataFrame | None) -> pd.Series:
    """Per channel, the list of IBL sources (release names) of its insertion; ``ibl`` when none is known."""
    if catalog is None or "releases" not in catalog.columns:
        return pd.Series([[IBL_SOURCE]] * len(pids), index=pids.index, dtype=object)
    per_pid = catalog.assign(pid=catalog["pid"].astype(str)).drop_duplicates("pid")
    per_pid = per_pid.set_index("pid")["releases"]

    def split(value: object) -> list[str]:
        names = [] if pd.isna(value) else [r.strip() for r in str(value).split(",") if r.strip()]
        return names or [IBL_SOURCE]

    lists = {pid: split(value) for pid, value in per_pid.items()}
    return pids.astype(str).map(lambda pid: lists.get(pid, [IBL_SOURCE]))


def _level_columns(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """``region_id`` / ``region`` of each row at ``level``, from the stored columns or else from atlas_id."""
    id_col, acronym_col = LEVELS[level]
    if id_col in df.columns and acronym_col in df.columns:
        return pd.DataFrame({"region_id": np.abs(df[id_col].to_numpy(dtype=np.int64)),
                             "region": df[acronym_col].astype(str).to_numpy()}, index=df.index)
    if "atlas_id" not in df.columns:
        raise MissingStageError("channels have no 'atlas_id' column", "channels")
    x = df["x"] if "x" in df else df["ccf_ml_um"] - BREGMA_CCF_UM["ml"]  # only the sign matters here
    regions = region_table(df["atlas_id"].to_numpy(dtype=np.int64), x.to_numpy(dtype=float))
    return pd.DataFrame({"region_id": regions[id_col].to_numpy(), "region": regions[acronym_col].to_numpy()},
                        index=df.index)


def _usable(channels: pd.DataFrame, ws: Workspace) -> pd.DataFrame:
    if not ws.qc_channel_metrics.exists():
        raise MissingStageError(f"{ws.qc_channel_metrics} does not exist (or drop --usable-only)", "qc", ws)
    metrics = pd.read_parquet(ws.qc_channel_metrics, columns=["pid", "raw_ind", "usable"])
    metrics = metrics.assign(pid=metrics["pid"].astype(str), raw_ind=metrics["raw_ind"].astype(np.int64))
    merged = channels.assign(pid=channels["pid"].astype(str), raw_ind=channels["raw_ind"].astype(np.int64)
                             ).merge(metrics.drop_duplicates(["pid", "raw_ind"]), on=["pid", "raw_ind"],
                                     how="left")
    unknown = int(merged["usable"].isna().sum())
    if unknown:
        logger.warning("%d channels have no QC row in qc/channel_metrics.parquet: counted as not usable",
                       unknown)
    return channels[merged["usable"].astype("boolean").fillna(False).to_numpy(dtype=bool)]


def coverage_table(workspace: Workspace | str | os.PathLike, level: str = "allen",
                   usable_only: bool = False) -> pd.DataFrame:
    """Channels and insertions per region per source, written to ``coverage.parquet``.

    Sources are the IBL releases of ``catalog.parquet`` (``ibl`` for insertions without one) and every
    source of ``external_channels.parquet``. ``usable_only`` keeps the IBL channels QC marks usable
    (external channels have no QC and are all kept). ``channel_fraction`` is the share of the source's
    channels in the region. Rows are sorted by source, then channels (most first).
    """
    if level not in LEVELS:
        raise InputError(f"level={level!r} is not one of {', '.join(LEVELS)}")
    ws = _workspace(workspace)
    channels = ws.read_channels()
    if usable_only:
        channels = _usable(channels, ws)
    catalog = pd.read_parquet(ws.catalog) if ws.catalog.exists() else None
    if catalog is None:
        logger.warning("%s is missing: all IBL channels count as source %r", ws.catalog, IBL_SOURCE)
    ibl = _level_columns(channels, level).assign(
        insertion=channels["pid"].astype(str).to_numpy(), source=_release_lists(channels["pid"], catalog)
    ).explode("source")
    frames = [ibl]
    if ws.external_channels.exists():
        ext = pd.read_parquet(ws.external_channels)
        clash = sorted(set(ext["source"].astype(str)) & set(ibl["source"]))
        if clash:
            raise InputError(f"external_channels.parquet uses IBL source names {clash}: re-import those "
                             "tables under another --source name")
        probe = _first(ext, ("probe_id", "pid"))
        frames.append(_level_columns(ext, level).assign(
            insertion=probe.to_numpy() if probe is not None else None,
            source=ext["source"].astype(str).to_numpy()))
    rows = pd.concat(frames, ignore_index=True)
    grouped = rows.groupby(["source", "region_id", "region"], sort=True)
    table = grouped.agg(n_channels=("insertion", "size"), n_insertions=("insertion", "nunique")).reset_index()
    no_probe_ids = rows.groupby("source")["insertion"].apply(lambda s: s.isna().all())
    table["n_insertions"] = table["n_insertions"].astype("Int64").mask(
        table["source"].map(no_probe_ids).astype(bool))
    totals = table.groupby("source")["n_channels"].transform("sum")
    table = table.assign(channel_fraction=table["n_channels"] / totals, level=level,
                         usable_only=bool(usable_only))
    table = table.sort_values(["source", "n_channels", "region"], ascending=[True, False, True],
                              kind="stable").reset_index(drop=True)
    table = table.loc[:, list(COVERAGE_COLUMNS)].astype({"region_id": np.int64, "n_channels": np.int64})
    write_parquet(table, ws.create().coverage)
    ws.record_stage("coverage", {"level": level, "usable_only": bool(usable_only),
                                 "sources": sorted(table["source"].unique().tolist())})
    logger.info("coverage (%s): %d regions x sources over %d sources", level, len(table),
                table["source"].nunique())
    return table


def _regions_only(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("region", "region_id", "source", "n_channels", "n_insertions") if c not in table]
    if missing:
        raise InputError(f"table lacks columns {missing}: pass the result of coverage_table()")
    return table[~table["region"].isin(NON_REGIONS) & (table["n_channels"] > 0)]


def regions_in_one_source(table: pd.DataFrame) -> pd.DataFrame:
    """Regions (not void / root) that exactly one source has channels in, with that source's counts."""
    regions = _regions_only(table)
    n_sources = regions.groupby("region")["source"].transform("nunique")
    only = regions[n_sources == 1]
    only = only.loc[:, ["region", "region_id", "source", "n_channels", "n_insertions"]]
    return only.sort_values(["source", "n_channels", "region"], ascending=[True, False, True],
                            kind="stable").reset_index(drop=True)


def channels_per_region(table: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Channels per region (rows) and source (columns), regions with the most channels first.

    The one pivot of the coverage table that people look at: ``ibl-ephys-data coverage`` prints it and the
    report charts it, so both show the same numbers. Void and root are left out (not regions); ties are
    broken by region name; ``top`` keeps the first regions only. Absent counts are 0.
    """
    regions = _regions_only(table)
    if regions.empty:
        return pd.DataFrame(index=pd.Index([], name="region"), dtype=np.int64)
    wide = regions.pivot_table(index="region", columns="source", values="n_channels", aggfunc="sum",
                               fill_value=0)
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    wide.columns = [str(c) for c in wide.columns]
    return (wide if top is None else wide.iloc[:top]).astype(np.int64)


def _source_counts(regions: pd.DataFrame, source: str, prefix: str) -> pd.DataFrame:
    rows = regions[regions["source"] == source].set_index(["region", "region_id"])
    return rows[["n_channels", "n_insertions"]].rename(
        columns={"n_channels": f"{prefix}_channels", "n_insertions": f"{prefix}_insertions"})


def overlap(table: pd.DataFrame, train: str, test: str) -> pd.DataFrame:
    """Regions of the ``train`` and ``test`` sources side by side (not void / root), ``shared`` if both.

    Sorted by test channels (most first): the regions a zero-shot test evaluates, and whether training saw
    them. Absent counts are 0.
    """
    regions = _regions_only(table)
    available = sorted(table["source"].astype(str).unique())
    for role, name in (("train", train), ("test", test)):
        if name not in available:
            raise InputError(f"{role} source {name!r} is not in the coverage table: use one of "
                             f"{', '.join(available)}")
    both = _source_counts(regions, train, "train").join(_source_counts(regions, test, "test"), how="outer")
    both = both.fillna(0).astype(np.int64).reset_index()
    both["shared"] = (both["train_channels"] > 0) & (both["test_channels"] > 0)
    return both.sort_values(["test_channels", "train_channels", "region"], ascending=[False, False, True],
                            kind="stable").reset_index(drop=True)


def overlap_summary(table: pd.DataFrame, train: str, test: str) -> dict[str, float | int | str]:
    """How much of ``test`` lies in regions ``train`` covers: region counts and the channel fraction."""
    both = overlap(table, train, test)
    in_test = both[both["test_channels"] > 0]
    shared = in_test[in_test["shared"]]
    total = int(in_test["test_channels"].sum())
    return {"train": train, "test": test, "train_regions": int((both["train_channels"] > 0).sum()),
            "test_regions": len(in_test), "shared_regions": len(shared),
            "test_channels_in_shared_regions": int(shared["test_channels"].sum()),
            "test_channel_fraction_shared": float(shared["test_channels"].sum() / total) if total else 0.0}


# overlays -----------------------------------------------------------------------------------------
def overlay_channels(channels: pd.DataFrame, catalog: pd.DataFrame | None = None,
                     external: pd.DataFrame | None = None) -> pd.DataFrame:
    """IBL and external channels in one frame with a ``source`` column, for the 2D / 3D overlays.

    IBL rows keep their ``source`` if they have one, else get their insertion's ``releases`` (their own
    column, else the catalog's; ``ibl`` when unknown, as in the coverage table); external rows get
    ``pid = "<source>:<probe_id>"`` when they have no pid, and, when their probe geometry is unknown,
    ``axial_um = -ccf_dv_um`` so a probe drawn as a line follows depth.
    """
    ours = channels.copy()
    if "source" not in ours:
        label = pd.Series(IBL_SOURCE, index=ours.index, dtype=object)
        releases = ours["releases"] if "releases" in ours else None
        if releases is None and catalog is not None and {"pid", "releases"} <= set(catalog.columns):
            per_pid = catalog.assign(pid=catalog["pid"].astype(str)).drop_duplicates("pid").set_index("pid")
            releases = ours["pid"].astype(str).map(per_pid["releases"])
        if releases is not None:
            label = releases.where(releases.notna() & (releases.astype(str).str.strip() != ""), label)
        ours["source"] = label.astype(str)
    if external is None or external.empty:
        return ours
    theirs = external.copy() if "source" in external else external.assign(source="external")
    if "pid" not in theirs:
        probe = theirs["probe_id"] if "probe_id" in theirs else pd.Series(None, index=theirs.index)
        probe = probe.astype(object).where(probe.notna(), "?").astype(str)
        theirs["pid"] = theirs["source"].astype(str) + ":" + probe
    if "ccf_dv_um" in theirs:
        axial = theirs["axial_um"] if "axial_um" in theirs else pd.Series(np.nan, index=theirs.index)
        theirs["axial_um"] = pd.to_numeric(axial, errors="coerce").fillna(-theirs["ccf_dv_um"])
    return pd.concat([ours, theirs], ignore_index=True)
