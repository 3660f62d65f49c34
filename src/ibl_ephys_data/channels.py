"""Stage 2 — where every channel is: ``SpikeSortingLoader.load_channels`` -> channels.parquet.

Coordinates are stored as IBL xyz (metres) and Allen CCF µm (``atlas.xyz_to_ccf_um``), never mirrored.
The loader gets a regions-only atlas, so no Allen volume is ever downloaded implicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from brainbox.io.one import SpikeSortingLoader
from one.api import One

from ibl_ephys_data.atlas import RegionsOnlyAtlas, region_table, xyz_to_ccf_um
from ibl_ephys_data.net import verified_datasets
from ibl_ephys_data.workspace import Workspace, run_per_pid, write_parquet

CHANNEL_COLUMNS = ["pid", "eid", "raw_ind", "axial_um", "lateral_um", "x", "y", "z", "ccf_ap_um", "ccf_dv_um",
                   "ccf_ml_um", "atlas_id", "lateralized_id", "acronym", "beryl_id", "beryl_acronym",
                   "cosmos_id", "cosmos_acronym", "histology"]


def channels_frame(pid: str, eid: str, channels: dict, histology: str) -> pd.DataFrame:
    """Loader output -> typed rows with CCF coordinates and region groupings."""
    xyz = np.c_[channels["x"], channels["y"], channels["z"]].astype(float)
    ccf = xyz_to_ccf_um(xyz)
    regions = region_table(np.asarray(channels["atlas_id"]), xyz[:, 0])
    raw_ind = np.asarray(channels.get("rawInd", np.arange(len(xyz))), dtype=np.int64)
    df = pd.DataFrame({
        "pid": pid, "eid": eid, "raw_ind": raw_ind,
        "axial_um": np.asarray(channels["axial_um"], dtype=float),
        "lateral_um": np.asarray(channels["lateral_um"], dtype=float),
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "ccf_ap_um": ccf[:, 0], "ccf_dv_um": ccf[:, 1], "ccf_ml_um": ccf[:, 2],
    })
    df = pd.concat([df, regions], axis=1)
    df["histology"] = histology
    return df[CHANNEL_COLUMNS]


def load_insertion_channels(one: One, pid: str) -> pd.DataFrame:
    """Channels of one insertion through ``SpikeSortingLoader`` (remote or offline, same call)."""
    loader = SpikeSortingLoader(one=one, pid=pid, atlas=RegionsOnlyAtlas())
    # the loader downloads these itself, unchecked: put verified copies in ONE's cache first
    verified_datasets(one, loader.eid, ["electrodeSites.*", "channels.*"], collection=f"alf/{loader.pname}*")
    channels = loader.load_channels()
    if not channels or "x" not in channels:
        raise LookupError(f"no channel locations for pid {pid} (no spike sorting or histology in Alyx)")
    return channels_frame(pid, str(loader.eid), channels, loader.histology)


def run_channels(workspace: Workspace, one: One, pids: list[str] | None = None) -> pd.DataFrame:
    """Write ``channels.parquet`` for the catalog's insertions; a failing insertion is recorded and skipped.

    Columns added by later stages (bad-channel labels) are kept for insertions that are not recomputed.
    """
    catalog = workspace.read_catalog()
    wanted = list(catalog["pid"]) if not pids else [p for p in catalog["pid"] if p in set(pids)]
    previous = workspace.read_channels() if workspace.channels.exists() else None
    loaded, statuses = run_per_pid("channels", wanted, lambda pid: load_insertion_channels(one, pid))
    frames = list(loaded.values())
    fresh = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CHANNEL_COLUMNS)
    if previous is not None:
        extra = [c for c in previous.columns if c not in CHANNEL_COLUMNS]
        fresh = fresh.merge(previous[["pid", "raw_ind", *extra]], on=["pid", "raw_ind"], how="left")
        kept = previous[~previous["pid"].isin(fresh["pid"])]
        fresh = pd.concat([kept, fresh], ignore_index=True)
    fresh = fresh.sort_values(["pid", "raw_ind"]).reset_index(drop=True)
    write_parquet(fresh, workspace.channels)
    workspace.record_stage("channels", {"pids": pids, "mode": "offline" if one.offline else "remote"}, statuses)
    return fresh
