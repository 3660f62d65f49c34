"""Stage 2 — where every channel is: ``SpikeSortingLoader.load_channels`` -> channels.parquet.

Coordinates are stored as IBL xyz (metres) and Allen CCF µm (``atlas.xyz_to_ccf_um``), never mirrored.
The loader gets a regions-only atlas, so no Allen volume is ever downloaded implicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from brainbox.io.one import SpikeSortingLoader
from one.api import One

from ibl_ephys_data.atlas import RegionsOnlyAtlas, region_table, xyz_to_ccf_um
from ibl_ephys_data.net import verified_datasets
from ibl_ephys_data.pipeline import InsertionStage, StageResult, run_stage
from ibl_ephys_data.workspace import Workspace, fingerprint
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_COLUMNS, CHANNELS, columns

STAGE = "channels"
LABELS_STAGE = "lfp"  # the lfp stage's parts hold each insertion's bad-channel labels

CHANNEL_COLUMNS = [c for c in columns(CHANNELS) if c == "raw_ind" or c not in BAD_CHANNEL_COLUMNS]


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
    # the loader downloads these itself, unchecked: put verified copies in ONE's cache first (so ONE need not
    # hash them again, 0.27 s a file with its hasher; it still compares sizes)
    verified_datasets(one, loader.eid, ["electrodeSites.*", "channels.*"], collection=f"alf/{loader.pname}*")
    channels = loader.load_channels(check_hash=False)
    if not channels or "x" not in channels:
        raise LookupError(f"no channel locations for pid {pid} (no spike sorting or histology in Alyx)")
    return channels_frame(pid, str(loader.eid), channels, loader.histology)


@dataclass(frozen=True)
class ChannelsOptions:
    """What decides an insertion's channel table (nothing to choose yet: the schema version only)."""

    schema_version: int = 1

    def spec(self) -> dict:
        return asdict(self)


def process_channels(one: One, workspace: Workspace, pid: str, options: ChannelsOptions) -> None:
    """One insertion's channels -> ``parts/channels/<pid>.parquet`` (written when it finishes)."""
    workspace.write_part(STAGE, pid, load_insertion_channels(one, pid), fingerprint(options.spec()))


def channels_done(workspace: Workspace, pid: str, options: ChannelsOptions) -> bool:
    return workspace.has_part(STAGE, pid, fingerprint(options.spec()))


def assemble_channels(workspace: Workspace, options: object = None, force: bool = False) -> pd.DataFrame:
    """Rebuild ``channels.parquet`` from every catalog insertion's channel part plus its bad-channel labels.

    Why from parts: the table is then the same whatever order, subset or interruption produced the parts.
    Labels come from the lfp stage's parts (NaN until that insertion's lfp is done).
    """
    pids = set(workspace.read_catalog()["pid"].astype(str))
    _adopt_table_without_parts(workspace)
    frames = workspace.read_parts(STAGE, pids=pids)
    channels = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CHANNEL_COLUMNS)
    labels = workspace.read_parts(LABELS_STAGE, pids=pids)
    label_columns = [c for c in BAD_CHANNEL_COLUMNS if c != "raw_ind"]
    if labels:
        table = pd.concat(labels, ignore_index=True)[["pid", *BAD_CHANNEL_COLUMNS]]
        channels = channels.merge(table, on=["pid", "raw_ind"], how="left")
    for col in label_columns:
        if col not in channels:
            channels[col] = np.nan
        channels[col] = channels[col].astype("float64")
    channels["bad_channel_label"] = channels["bad_channel_label"].round().astype("Int8")
    channels = channels[CHANNEL_COLUMNS + label_columns].sort_values(["pid", "raw_ind"]).reset_index(drop=True)
    workspace.replace_table(channels, workspace.channels, force=force)
    return channels


def _adopt_table_without_parts(workspace: Workspace) -> None:
    """A channels.parquet written before parts existed (or copied in) becomes parts, so nothing is lost.

    The parts are stamped ``legacy``: kept as they are, recomputed by the next ``channels`` run.
    """
    if (workspace.parts_dir / STAGE).exists() or not workspace.channels.exists():
        return
    table = workspace.read_channels()
    for pid, rows in table.groupby("pid", sort=True):
        workspace.write_part(STAGE, str(pid), rows[CHANNEL_COLUMNS].reset_index(drop=True), "legacy")


CHANNELS = InsertionStage(STAGE, process_channels, channels_done, assemble_channels)


def run_channels(workspace: Workspace, one: One | None = None, options: ChannelsOptions | None = None,
                 pids: list[str] | None = None, **execution) -> StageResult:
    """Channel tables of the catalog's insertions (or ``pids``) -> ``channels.parquet``, merged, never dropped.

    ``execution``: ``connection``, ``scheduler``, ``retry_failed``, ``force``, ``progress`` of
    :func:`ibl_ephys_data.pipeline.run_stage`.
    """
    return run_stage(CHANNELS, workspace, options or ChannelsOptions(), pids, one=one, **execution)
