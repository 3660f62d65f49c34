"""IBL space <-> Allen CCF, the region hierarchy and the display mirror, without downloading any volume.

IBL xyz is metres from bregma (x = ML right +, y = AP anterior +, z = DV dorsal +). Allen CCF is µm from the
front-top-left corner of the 25 µm volume with ML increasing to the right. The conversion is the one of
``iblatlas.atlas.AllenAtlas.xyz2ccf`` (a translation, no scaling, no mirroring).

Every atlas fact the package uses lives here (bregma, the volume's extent, acronym / id / colour lookups,
the display mirror), so a figure, the coverage import and the 3D view cannot disagree about them.

Display mirror. Stored channels keep Allen CCF µm as IBL computes it: the ML axis starts at the animal's
*left* edge of the volume and increases to the right. brainglobe describes the very same Allen volume as
"asr" (axis 0 anterior -> posterior, axis 1 superior -> inferior, axis 2 *right -> left*; its OME-Zarr axes
say ``"right-to-left"``), so a CCF point drawn as is in brainrender lands in the other hemisphere.
Mirroring ML about the volume midline in voxel-index space (voxel ``i`` <-> ``n - 1 - i``, ``ml' = 11375 -
ml`` for the 456-voxel-wide 25 µm atlas) puts every channel in the hemisphere brainglobe calls by the same
name. Only the display is mirrored: stored data never are, and mirroring about bregma (the widely copied
script) is wrong by ~100 µm on top of being stored.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from iblatlas.atlas import ALLEN_CCF_LANDMARKS_MLAPDV_UM
from iblatlas.regions import BrainRegions

from ibl_ephys_data.errors import InputError
from ibl_ephys_data.workspace.schema import MISSING_COLOR

#: Bregma in Allen CCF µm, from iblatlas' ``ALLEN_CCF_LANDMARKS_MLAPDV_UM`` (ml, ap, dv).
BREGMA_CCF_UM = {
    "ml": float(ALLEN_CCF_LANDMARKS_MLAPDV_UM["bregma"][0]),
    "ap": float(ALLEN_CCF_LANDMARKS_MLAPDV_UM["bregma"][1]),
    "dv": float(ALLEN_CCF_LANDMARKS_MLAPDV_UM["bregma"][2]),
}
#: Bregma as an (ap, dv, ml) row, the column order of stored CCF coordinates.
BREGMA_CCF_APDVML_UM = np.array([BREGMA_CCF_UM[a] for a in ("ap", "dv", "ml")])
#: Voxel size and shape of the Allen CCF 25 µm volume (brainrender's default atlas ``allen_mouse_25um``).
ALLEN_RESOLUTION_UM = 25.0
ALLEN_SHAPE_VOXELS = {"ap": 528, "dv": 320, "ml": 456}
#: Extent of that volume (µm): valid CCF coordinates lie in [0, extent] on each axis.
CCF_EXTENT_UM = {axis: n * ALLEN_RESOLUTION_UM for axis, n in ALLEN_SHAPE_VOXELS.items()}
#: Labels that are not brain regions anyone trains on: outside the brain, and in it without a finer label.
NON_REGIONS = ("void", "root")


@cache
def brain_regions() -> BrainRegions:
    """The Allen structure tree shipped inside the iblatlas wheel (works offline)."""
    return BrainRegions()


@cache
def acronym_to_id() -> dict[str, int]:
    """Allen acronym -> positive Allen id (the first id of an acronym that the tree lists twice)."""
    br = brain_regions()
    lookup: dict[str, int] = {}
    for rid, acronym in zip(br.id, br.acronym, strict=True):
        if rid >= 0:
            lookup.setdefault(str(acronym), int(rid))
    return lookup


@cache
def id_to_row() -> dict[int, int]:
    """Positive Allen id -> its row in the structure tree (the first row of an id listed twice)."""
    rows: dict[int, int] = {}
    for k, rid in enumerate(brain_regions().id):
        if rid >= 0:
            rows.setdefault(int(rid), k)
    return rows


def channel_atlas_ids(channels: pd.DataFrame) -> np.ndarray:
    """Allen ids (positive) of channels, from ``atlas_id``, else (row by row) ``acronym``; unknown -> 0 (void)."""
    if "atlas_id" not in channels and "acronym" not in channels:
        raise InputError("channels have neither an 'atlas_id' nor an 'acronym' column: pass channels.parquet")
    ids = pd.Series(np.nan, index=channels.index)
    if "atlas_id" in channels:
        ids = pd.to_numeric(channels["atlas_id"], errors="coerce")
    if "acronym" in channels and ids.isna().any():
        lookup = acronym_to_id()
        ids = ids.fillna(channels["acronym"].map(lambda a: lookup.get(str(a))))
    return np.abs(ids.fillna(0).to_numpy(dtype=float)).astype(np.int64)


def region_colors(atlas_ids: np.ndarray | list[int]) -> np.ndarray:
    """Allen colours (n x 3, 0..1) for Allen ids; lateralised ids are folded, void and unknown ids grey."""
    br = brain_regions()
    rows = id_to_row()
    grey = np.array([int(MISSING_COLOR[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    unique, inverse = np.unique(np.abs(np.asarray(atlas_ids, dtype=np.int64)), return_inverse=True)
    rgb = np.tile(grey, (unique.size, 1))
    for k, rid in enumerate(unique):
        row = rows.get(int(rid))
        if row is not None and rid != 0:
            rgb[k] = br.rgb[row] / 255.0
    return rgb[inverse.ravel()]


def region_acronyms(atlas_ids: np.ndarray | list[int]) -> list[str]:
    """Acronyms of Allen ids, keeping the length (``BrainRegions.id2acronym`` silently drops unknown ids)."""
    br = brain_regions()
    rows = id_to_row()
    return [str(br.acronym[rows[int(r)]]) if int(r) in rows else "?" for r in np.abs(np.asarray(atlas_ids))]


class RegionsOnlyAtlas:
    """What ``SpikeSortingLoader`` needs from an atlas when channels come from ALF files: ``.regions``.

    Passing ``atlas=None`` would make the loader download the Allen volumes; this stand-in never does.
    """

    def __init__(self) -> None:
        self.regions = brain_regions()


def xyz_to_ccf_um(xyz_m: np.ndarray) -> np.ndarray:
    """IBL xyz (metres, n x 3) -> Allen CCF µm as columns (ap, dv, ml), like ``xyz2ccf(ccf_order='apdvml')``."""
    xyz_um = np.atleast_2d(np.asarray(xyz_m, dtype=float)) * 1e6
    ap = BREGMA_CCF_UM["ap"] - xyz_um[:, 1]
    dv = BREGMA_CCF_UM["dv"] - xyz_um[:, 2]
    ml = BREGMA_CCF_UM["ml"] + xyz_um[:, 0]
    return np.c_[ap, dv, ml]


def ccf_um_to_xyz(ccf_apdvml_um: np.ndarray) -> np.ndarray:
    """Inverse of :func:`xyz_to_ccf_um`: Allen CCF µm (ap, dv, ml) -> IBL xyz metres."""
    ccf = np.atleast_2d(np.asarray(ccf_apdvml_um, dtype=float))
    x = ccf[:, 2] - BREGMA_CCF_UM["ml"]
    y = BREGMA_CCF_UM["ap"] - ccf[:, 0]
    z = BREGMA_CCF_UM["dv"] - ccf[:, 1]
    return np.c_[x, y, z] / 1e6


def region_table(atlas_ids: np.ndarray, x_m: np.ndarray) -> pd.DataFrame:
    """Acronyms, lateralised ids and Beryl / Cosmos groupings for Allen ids.

    ``BrainRegions.remap`` silently drops unknown ids, so lengths are checked and unknown ids raise.
    """
    br = brain_regions()
    ids = np.asarray(atlas_ids, dtype=np.int64)
    unknown = np.setdiff1d(np.abs(ids), br.id)
    if unknown.size:
        raise InputError(f"Allen ids not in the iblatlas structure tree: {unknown[:10].tolist()}")
    allen = np.abs(ids)
    beryl = br.remap(allen, source_map="Allen", target_map="Beryl")
    cosmos = br.remap(allen, source_map="Allen", target_map="Cosmos")
    if not (len(beryl) == len(cosmos) == len(allen)):
        raise RuntimeError("BrainRegions.remap dropped ids")
    lateralized = np.where(np.asarray(x_m) < 0, -allen, allen)
    lateralized[allen == 0] = 0
    return pd.DataFrame(
        {
            "atlas_id": allen,
            "lateralized_id": lateralized,
            "acronym": br.id2acronym(allen),
            "beryl_id": beryl,
            "beryl_acronym": br.id2acronym(beryl),
            "cosmos_id": cosmos,
            "cosmos_acronym": br.id2acronym(cosmos),
        }
    )


def ccf_to_display(
    ccf_apdvml_um: np.ndarray,
    ml_voxels: int = ALLEN_SHAPE_VOXELS["ml"],
    ml_resolution_um: float = ALLEN_RESOLUTION_UM,
) -> np.ndarray:
    """Map stored Allen CCF µm (n x 3, columns ap, dv, ml) to brainglobe "asr" display µm (n x 3).

    ``ml_voxels`` / ``ml_resolution_um`` are the ML shape and voxel size of the brainglobe atlas drawn
    (``atlas.shape[2]``, ``atlas.resolution[2]``); the defaults are those of ``allen_mouse_25um``, where
    the mirror is ``11375 - ml``. AP and DV pass through unchanged (see the module docstring for why).
    """
    ccf = np.asarray(ccf_apdvml_um, dtype=float)
    if ccf.ndim != 2 or ccf.shape[1] != 3:
        raise InputError(f"ccf_apdvml_um must be an (n, 3) array of (ap, dv, ml) µm, got shape {ccf.shape}")
    if ml_voxels < 1 or ml_resolution_um <= 0:
        raise InputError(
            f"ml_voxels={ml_voxels} and ml_resolution_um={ml_resolution_um} must be positive: "
            "pass the atlas' shape[2] and resolution[2]"
        )
    display = ccf.copy()
    display[:, 2] = (ml_voxels - 1) * ml_resolution_um - ccf[:, 2]
    return display
