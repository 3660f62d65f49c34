"""Stage 1 — which insertions: a release (union of Alyx dataset tags) or a user's pid CSV -> catalog.parquet.

Remote mode asks Alyx (``search_insertions(django='datasets__tags__name,<tag>')``) and keeps ONE's per-tag
cache tables, which Alyx publishes for data releases (``cache/info/<tag>``), so that ``--offline`` can
answer the same question from disk later.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from one.alf.cache import load_tables
from one.api import One

from ibl_ephys_data.errors import InputError
from ibl_ephys_data.ibl import RELEASES, release_tags
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.schema import CATALOG, QC_LEVELS, columns

_logger = logging.getLogger(__name__)

FLOAT_FIELDS = {"drift_rms_um": ("drift_rms_um",), "ap_rms_p10_raw": ("extended_qc", "apRms_p10_raw"),
                "ap_rms_p90_raw": ("extended_qc", "apRms_p90_raw")}
INT_FIELDS = {"n_units": ("n_units",), "alignment_count": ("extended_qc", "alignment_count")}
BOOL_FIELDS = {"tracing_exists": ("extended_qc", "tracing_exists"),
               "alignment_resolved": ("extended_qc", "alignment_resolved")}
STR_FIELDS = {"alignment_stored": ("extended_qc", "alignment_stored"),
              "alignment_resolved_by": ("extended_qc", "alignment_resolved_by"),
              "alignment_qc": ("extended_qc", "alignment_qc"),
              "experimenter_raw_destripe": ("extended_qc", "experimenter_raw_destripe")}
COLUMNS = columns(CATALOG)


class CatalogError(InputError):
    """Bad catalog input (pid file, release name); the message names the input and the fix."""


def read_pid_csv(path: str | Path) -> pd.DataFrame:
    """A user's pid list: needs a ``pid`` column of UUIDs; an ``eid`` column is optional and cross-checked."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    df = pd.read_csv(path, dtype=str)
    if "pid" not in df.columns:
        raise CatalogError(f"{path} has no 'pid' column (columns: {', '.join(df.columns)}); add a header 'pid'")
    df["pid"] = df["pid"].str.strip()
    bad = [p for p in df["pid"] if not _is_uuid(p)]
    if bad:
        raise CatalogError(f"{path}: {len(bad)} pid(s) are not UUIDs, e.g. {bad[0]!r}; fix or remove those rows")
    cols = ["pid", "eid"] if "eid" in df.columns else ["pid"]
    return df[cols].drop_duplicates("pid").reset_index(drop=True)


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return len(str(value)) == 36


def _get(record: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _parse_json(value) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    return dict(value) if value is not None else {}


def catalog_row(pid: str, eid: str, name: str, model: str | None, qc_json: dict, session: dict,
                releases: list[str]) -> dict:
    """One insertion as a typed catalog row; missing Alyx QC keys become NOT_SET / null, never an error."""
    qc = qc_json.get("qc") or "NOT_SET"
    row = {
        "pid": str(pid), "eid": str(eid), "subject": session.get("subject"), "lab": session.get("lab"),
        "date": str(session.get("date") or session.get("start_time", ""))[:10],
        "session_number": int(session.get("number") or 0), "probe_name": name, "probe_model": model,
        "releases": ",".join(sorted(releases)), "qc": qc if qc in QC_LEVELS else "NOT_SET",
    }
    for col, path in FLOAT_FIELDS.items():
        value = _get(qc_json, path)
        row[col] = float(value) if value is not None else np.nan
    for col, path in {**INT_FIELDS, **BOOL_FIELDS, **STR_FIELDS}.items():
        row[col] = _get(qc_json, path)
    return row


def typed_catalog(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.astype({c: "Int64" for c in INT_FIELDS} | {c: "boolean" for c in BOOL_FIELDS}
                   | {c: "string" for c in STR_FIELDS} | {c: "float64" for c in FLOAT_FIELDS})
    return df.sort_values("pid").reset_index(drop=True)


# release membership --------------------------------------------------------------------------
def release_members(one: One, release: str) -> dict[str, dict]:
    """pid -> Alyx insertion record for every insertion carrying any tag of the release."""
    members: dict[str, dict] = {}
    for tag in release_tags(release):
        if one.offline:
            members.update(_offline_tag_members(one, tag))
            continue
        _, records = one.search_insertions(django=f"datasets__tags__name,{tag}", details=True)
        for rec in records or []:
            members[str(rec["id"])] = rec
        _fetch_tag_tables(one, tag)
    return members


def _fetch_tag_tables(one: One, tag: str) -> None:
    """Keep Alyx's per-release cache tables beside the ONE cache: they answer release membership offline."""
    try:
        info = one.alyx.get(f"cache/info/{tag}", expires=True)
        one.alyx.download_cache_tables(info["location"], Path(one.cache_dir) / tag)
    except Exception as ex:  # the public Alyx may not publish a table for every tag
        _logger.warning("no release cache tables for tag %s (%s); --offline cannot list this release", tag, ex)


def _offline_tag_members(one: One, tag: str) -> dict[str, dict]:
    folder = Path(one.cache_dir) / tag
    tables = load_tables(folder) if folder.exists() else {}
    if "insertions" not in tables:
        raise CatalogError(
            f"no cached tables for tag {tag} in {folder}: run `catalog` once online to fetch them"
        )
    out = {}
    for (eid, pid), row in tables["insertions"].iterrows():
        out[str(pid)] = {"id": str(pid), "session": str(eid), "name": row["name"], "model": row.get("model"),
                         "json": row.get("json")}
    return out


def _session_info(one: One, record: dict) -> dict:
    if record.get("session_info"):
        return record["session_info"]
    details = one.get_details(record["session"])
    return {"subject": details["subject"], "lab": details["lab"], "date": details["date"],
            "number": details["number"]}


def _local_insertions(one: One) -> dict[str, dict]:
    """pid -> record of every insertion in ONE's insertions cache table (read once per catalog run)."""
    local_pids, details = one.search_insertions(details=True, query_type="local")
    return dict(zip(map(str, local_pids), details or [], strict=True))


def _insertion_record(one: One, pid: str, local: dict[str, dict] | None = None) -> dict | None:
    """The Alyx record of one insertion, from Alyx (remote) or ONE's insertions cache table (offline)."""
    if one.offline:
        eid, name = one.pid2eid(pid)
        if eid is None:
            return None
        rec = (local or {}).get(pid, {})
        return {"id": pid, "session": str(eid), "name": name, "model": rec.get("model"), "json": rec.get("json")}
    import requests

    try:
        return one.alyx.rest("insertions", "read", id=pid)
    except requests.HTTPError as ex:
        if ex.response is not None and ex.response.status_code == 404:
            return None
        raise


def build_catalog(one: One, releases: list[str] | None = None, pids: pd.DataFrame | None = None
                  ) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Catalog rows and per-pid statuses; an unknown pid is reported, the others are still catalogued."""
    for release in releases or []:
        release_tags(release)
    membership = {}
    known = dict.fromkeys(RELEASES) if pids is not None else dict.fromkeys(releases or [])
    for release in known:
        try:
            membership[release] = release_members(one, release)
        except CatalogError:
            if pids is None:
                raise
            _logger.warning("release membership of %s unavailable offline", release)
            membership[release] = {}
    if pids is None:
        wanted = sorted({pid for members in membership.values() for pid in members})
        given_eids = {}
    else:
        wanted = list(pids["pid"])
        given_eids = dict(zip(pids["pid"], pids["eid"].fillna(""), strict=True)) if "eid" in pids else {}
    rows, statuses = [], {}
    local = _local_insertions(one) if one.offline and pids is not None else None
    for pid in wanted:
        record = next((m[pid] for m in membership.values() if pid in m), None) or _insertion_record(one, pid, local)
        if record is None:
            statuses[pid] = {"status": "failed", "reason": f"pid {pid} not found in Alyx"}
            _logger.error("pid %s not found in Alyx", pid)
            continue
        eid = str(record["session"])
        if given_eids.get(pid) and given_eids[pid] != eid:
            statuses[pid] = {"status": "failed",
                             "reason": f"eid {given_eids[pid]} in the pid file but Alyx says {eid}"}
            continue
        in_releases = [r for r, m in membership.items() if pid in m]
        rows.append(catalog_row(pid, eid, record["name"], record.get("model"), _parse_json(record.get("json")),
                                _session_info(one, record), in_releases))
        statuses[pid] = {"status": "done"}
    return typed_catalog(rows), statuses


def run_catalog(workspace: Workspace, one: One, releases: list[str] | None = None,
                pid_file: str | Path | None = None, force: bool = False) -> pd.DataFrame:
    """Write ``catalog.parquet`` and record the stage in the manifest.

    A catalog with no row never replaces a non-empty one unless ``force`` (a pid CSV whose pids are all
    unknown must not empty the workspace's catalog).
    """
    if not releases and pid_file is None:
        raise CatalogError("give --release NAME (repro-ephys, bwm) or --pids FILE.csv")
    pids = read_pid_csv(pid_file) if pid_file is not None else None
    catalog, statuses = build_catalog(one, releases=releases, pids=pids)
    workspace.create()
    workspace.replace_table(catalog, workspace.catalog, force=force)
    workspace.record_stage("catalog", {"releases": releases, "pid_file": str(pid_file) if pid_file else None,
                                       "mode": "offline" if one.offline else "remote"}, statuses)
    return catalog
