"""A tiny brainglobe atlas in the Allen CCF frame, so 3D scenes render offline (tests and the demo).

brainrender normally downloads ``allen_mouse_25um``; without the internet nothing can be drawn. This module
writes a 100 µm atlas with the Allen CCF extents (13200 x 8000 x 11400 µm, brainglobe "asr" order) that
``BrainGlobeAtlas(name, brainglobe_dir=..., check_latest=False)`` and ``brainrender.Scene`` load like a
downloaded one. The brain and its regions are ellipsoids, symmetric about the volume midline, placed where
the repeated-site regions (VISa, CA1, DG, LP, PO) sit in the real CCF, with the real Allen ids, acronyms,
colours and hierarchy (from iblatlas), so real channel coordinates land inside the brain and mostly in
the right regions.

It is written in the on-disk layout of brainglobe-atlasapi 2, the major version this project pins
(``<name>_v1.0/`` with tiffs, json and .obj meshes): the layout brainglobe's own download archives unpack to.
"""

from __future__ import annotations

import configparser
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from ibl_ephys_data.atlas import CCF_EXTENT_UM, brain_regions

logger = logging.getLogger(__name__)

SYNTHETIC_ATLAS_NAME = "ibl_synthetic_mouse_100um"
RESOLUTION_UM = 100.0
#: Voxels along (ap, dv, ml): the extents of the Allen CCF volume.
SHAPE = tuple(int(CCF_EXTENT_UM[axis] // RESOLUTION_UM) for axis in ("ap", "dv", "ml"))
VERSION = "1.0"
ROOT_ID = 997
#: The brain: centre (ap, dv) µm and semi-axes (ap, dv, ml) µm; centred on the volume midline in ML.
BRAIN = ((6400.0, 3600.0), (5600.0, 3500.0, 4700.0))
#: Leaf regions, one ellipsoid per hemisphere: acronym -> (centre ap, centre dv, |ml - midline|), semi-axes.
LEAF_REGIONS = {
    "MOs": ((3200.0, 1400.0, 1000.0), (900.0, 500.0, 600.0)),
    "CP": ((5000.0, 3600.0, 2300.0), (1100.0, 900.0, 800.0)),
    "VISa": ((7300.0, 900.0, 2000.0), (500.0, 250.0, 800.0)),
    "CA1": ((7400.0, 1600.0, 2100.0), (700.0, 300.0, 900.0)),
    "DG": ((7500.0, 2200.0, 1700.0), (600.0, 250.0, 700.0)),
    "LP": ((7400.0, 2900.0, 1500.0), (500.0, 400.0, 500.0)),
    "PO": ((7200.0, 3600.0, 1300.0), (500.0, 400.0, 500.0)),
}


def _midline_um() -> float:
    """ML midline of the volume in voxel-index space, as brainglobe splits hemispheres."""
    return (SHAPE[2] - 1) * RESOLUTION_UM / 2


def _ellipsoid_mesh(centre: np.ndarray, semi: np.ndarray, n_lat: int = 20, n_lon: int = 40):
    """Closed triangle mesh of an ellipsoid (vertices in µm, outward-facing counter-clockwise faces)."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.c_[np.cos(t).ravel(), (np.sin(t) * np.cos(p)).ravel(), (np.sin(t) * np.sin(p)).ravel()]
    unit = np.r_[[[1.0, 0.0, 0.0]], ring, [[-1.0, 0.0, 0.0]]]
    top, bottom = 0, len(unit) - 1
    faces = []
    for j in range(n_lon):
        j1 = (j + 1) % n_lon
        faces.append((top, 1 + j1, 1 + j))
        for i in range(n_lat - 2):
            a, b = 1 + i * n_lon + j, 1 + i * n_lon + j1
            c, d = a + n_lon, b + n_lon
            faces += [(a, b, d), (a, d, c)]
        last = 1 + (n_lat - 2) * n_lon
        faces.append((bottom, last + j, last + j1))
    return unit * semi + centre, np.asarray(faces, dtype=np.uint32)


def _leaf_ellipsoids() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Both hemispheres' ellipsoids (centre, semi-axes in asr µm) of every leaf region."""
    mid = _midline_um()
    return {
        acronym: [(np.array([ap, dv, mid + side * off]), np.array(semi)) for side in (-1, 1)]
        for acronym, ((ap, dv, off), semi) in LEAF_REGIONS.items()
    }


def _brain_ellipsoid() -> tuple[np.ndarray, np.ndarray]:
    (ap, dv), semi = BRAIN
    return np.array([ap, dv, _midline_um()]), np.array(semi)


def _structures() -> pd.DataFrame:
    """Leaves plus all their Allen ancestors: id, parent, acronym, name, rgb and root-to-self id path."""
    br = brain_regions()
    index = {int(i): k for k, i in enumerate(br.id) if i > 0}
    rows: dict[int, dict] = {}
    for acronym in LEAF_REGIONS:
        (k,) = np.flatnonzero((br.acronym == acronym) & (br.id > 0))
        path = [int(br.id[k])]
        while not np.isnan(br.parent[index[path[0]]]):
            path.insert(0, int(br.parent[index[path[0]]]))
        for depth, sid in enumerate(path):
            j = index[sid]
            rows[sid] = {
                "id": sid, "parent": path[depth - 1] if depth else None, "acronym": str(br.acronym[j]),
                "name": str(br.name[j]), "rgb": [int(v) for v in br.rgb[j]], "path": path[: depth + 1],
            }
    return pd.DataFrame(sorted(rows.values(), key=lambda r: (len(r["path"]), r["id"])))


def _volumes(structures: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Annotation (leaf ids, root elsewhere in the brain, 0 outside) and a template image, ap x dv x ml."""
    axes = np.ix_(*[np.arange(n) * RESOLUTION_UM for n in SHAPE])  # voxel i <-> i * resolution µm

    def inside(centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
        return sum(((axis - c) / s) ** 2 for axis, c, s in zip(axes, centre, semi, strict=True)) <= 1

    annotation = np.where(inside(*_brain_ellipsoid()), ROOT_ID, 0).astype(np.uint32)
    template = np.where(annotation > 0, 160, 0).astype(np.uint16)
    ids = dict(zip(structures["acronym"], structures["id"], strict=True))
    for k, (acronym, ellipsoids) in enumerate(_leaf_ellipsoids().items()):
        for centre, semi in ellipsoids:
            mask = inside(centre, semi) & (annotation > 0)
            annotation[mask] = ids[acronym]
            template[mask] = 200 + 10 * k
    return annotation, template


def _v2_dir(brainglobe_dir: Path) -> Path:
    return brainglobe_dir / f"{SYNTHETIC_ATLAS_NAME}_v{VERSION}"


def synthetic_atlas_exists(brainglobe_dir: str | Path) -> bool:
    """Whether :func:`build_synthetic_atlas` already wrote a loadable atlas into ``brainglobe_dir``."""
    return (_v2_dir(Path(brainglobe_dir)) / "metadata.json").is_file()


def _meshes(structures: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Every structure's mesh (vertices in asr µm, faces): the root is the brain, a parent the union of its
    leaves' ellipsoids."""
    leaves = _leaf_ellipsoids()
    paths = dict(zip(structures["acronym"], structures["path"], strict=True))
    meshes = {}
    for sid in structures["id"]:
        if sid == ROOT_ID:
            parts = [_brain_ellipsoid()]
        else:
            parts = [e for acronym, ells in leaves.items() if sid in paths[acronym] for e in ells]
        pieces = [_ellipsoid_mesh(c, s) for c, s in parts]
        offsets = np.cumsum([0] + [len(v) for v, _ in pieces[:-1]])
        faces = np.vstack([f + o for (_, f), o in zip(pieces, offsets, strict=True)])
        meshes[int(sid)] = (np.vstack([v for v, _ in pieces]), faces)
    return meshes


def _metadata(base: str) -> dict:
    """The keys brainglobe's METADATA_TEMPLATE requires."""
    return {
        "name": base, "citation": "unpublished", "atlas_link": "", "species": "Mus musculus",
        "symmetric": True, "resolution": [RESOLUTION_UM] * 3, "orientation": "asr", "shape": list(SHAPE),
        "version": VERSION, "additional_references": [],
        "atlas_packager": "ibl-ephys-data (synthetic atlas in the Allen CCF frame)",
    }


def _write_v2(out: Path, base: str, structures: pd.DataFrame, meshes: dict, volumes: tuple) -> None:
    """One ``<name>_v<version>`` folder of tiffs, json and .obj meshes."""
    atlas_dir = _v2_dir(out)
    shutil.rmtree(atlas_dir, ignore_errors=True)
    (atlas_dir / "meshes").mkdir(parents=True)
    tifffile.imwrite(atlas_dir / "annotation.tiff", volumes[0], compression="zlib")
    tifffile.imwrite(atlas_dir / "reference.tiff", volumes[1], compression="zlib")
    for sid, (vertices, faces) in meshes.items():  # Wavefront OBJ at 0.1 µm, faces 1-based
        lines = [f"v {x:.1f} {y:.1f} {z:.1f}" for x, y, z in vertices]
        lines += [f"f {a} {b} {c}" for a, b, c in faces + 1]
        (atlas_dir / "meshes" / f"{sid}.obj").write_text("\n".join(lines) + "\n")
    records = [{"acronym": r.acronym, "id": r.id, "name": r.name, "structure_id_path": r.path,
                "rgb_triplet": r.rgb} for r in structures.itertuples()]
    (atlas_dir / "structures.json").write_text(json.dumps(records, indent=2))
    (atlas_dir / "metadata.json").write_text(json.dumps(_metadata(base), indent=2))


def build_synthetic_atlas(brainglobe_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the synthetic atlas into ``brainglobe_dir`` and return that directory (absolute).

    Use it as ``brainglobe_dir`` of :func:`ibl_ephys_data.viz.scene3d.render_scene` (``atlas_name=
    SYNTHETIC_ATLAS_NAME``) or of ``BrainGlobeAtlas``; a ``bg_config.conf`` pointing at it is written too,
    so ``BRAINGLOBE_CONFIG_DIR=<brainglobe_dir>`` makes a fresh Python process find it. Takes ~2 s and
    ~5 MB. An existing atlas is kept unless ``overwrite``.
    """
    out = Path(brainglobe_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"brainglobe_dir {out} is a file: pass a directory (it is created if missing)")
    if synthetic_atlas_exists(out) and not overwrite:
        logger.info("synthetic atlas already in %s", out)
        return out
    base = SYNTHETIC_ATLAS_NAME.rsplit("_", 1)[0]
    structures = _structures()
    meshes = _meshes(structures)
    volumes = _volumes(structures)
    _write_v2(out, base, structures, meshes, volumes)
    conf = configparser.ConfigParser()
    conf["default_dirs"] = {"brainglobe_dir": str(out), "interm_download_dir": str(out)}
    with open(out / "bg_config.conf", "w") as f:
        conf.write(f)
    logger.info("wrote synthetic atlas %s to %s", SYNTHETIC_ATLAS_NAME, out)
    return out
