"""Generate a small, deterministic IBL-format store that the real ONE, ibllib and ibl-neuropixel read.

Layout of the store (``root``):

- ``<lab>/Subjects/<subject>/<date>/<NNN>/...``: ALF files (channels, electrodeSites, spikes, raw LF mtscomp,
  IBL's small LF QC datasets), exactly as ONE lays out a local cache;
- ``sessions.pqt``, ``datasets.pqt``, ``insertions.pqt``: ONE cache tables, so ``ONE(mode='local')`` reads
  the store directly and the loopback server can serve per-tag cache zips;
- ``alyx.json``: what the loopback Alyx knows beyond the cache tables (insertion records with their QC
  json, dataset tags, the demo account);
- ``ground_truth.json``: every planted signal defect (pid, kind, probe-clock seconds, raw channels), drawn
  from the demo's own seed (``demo.artifacts.draw_events``), for checking QC against it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from iblutil.io import parquet
from one.alf.cache import DATASETS_COLUMNS, QC_TYPE, SESSIONS_COLUMNS
from rich.progress import Progress

from ibl_ephys_data.atlas import brain_regions
from ibl_ephys_data.demo import signals
from ibl_ephys_data.demo.artifacts import draw_events, events_transform
from ibl_ephys_data.demo.iblqc import write_iblqc_lf
from ibl_ephys_data.demo.layout import INSERTIONS, DemoInsertion, demo_uuid, releases_of
from ibl_ephys_data.net import md5_file

_logger = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # the loopback server's own account; never a real IBL credential
DEFAULT_SECONDS = 40.0
LF_FS = 2500.0
PROBE_LENGTH_UM = 3840.0
SPIKE_SORTER = "pykilosort"
ORIGIN = "ibl-ephys-data-demo"
GROUND_TRUTH = "ground_truth.json"


def channel_geometry() -> pd.DataFrame:
    """NP1 site layout (checkerboard of 4 columns, 20 µm rows), from ibl-neuropixel's own table."""
    import neuropixel

    th = neuropixel.trace_header(version=1)
    return pd.DataFrame({"lateral_um": th["x"].astype(float), "axial_um": th["y"].astype(float)})


def trajectory(ins: DemoInsertion, axial_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel xyz (metres) along a straight track, and the Allen id of the region at each depth.

    The tip sits at the bottom of the last region; sites above the brain surface are outside (id 0, void).
    """
    theta, phi = math.radians(ins.theta_deg), math.radians(ins.phi_deg)
    direction = np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), -math.cos(theta)])
    tip_depth = sum(t for _, t in ins.regions)
    depth = tip_depth - axial_um  # distance below the brain surface along the track
    xyz_um = np.asarray(ins.entry_um)[None, :] + depth[:, None] * direction[None, :]
    bounds = np.cumsum([t for _, t in ins.regions])
    ids = brain_regions().acronym2id([a for a, _ in ins.regions])
    region_index = np.searchsorted(bounds, depth, side="right").clip(0, len(ids) - 1)
    atlas_id = np.where(depth < 0, 0, ids[region_index])
    return xyz_um / 1e6, atlas_id.astype(np.int64)


def planted_bad_channels(ins: DemoInsertion) -> dict[str, list[int]]:
    """Raw indices of the dead and noisy channels planted in an insertion (stable per pid)."""
    rng = np.random.default_rng(int(ins.pid[:8], 16))
    picks = rng.choice(np.arange(40, 300), size=3, replace=False)
    return {"dead": [int(picks[0])], "noisy": sorted(int(p) for p in picks[1:])}


def generate_store(root: str | Path, seconds: float = DEFAULT_SECONDS, seed: int = 0,
                   n_insertions: int | None = None) -> Path:
    """Write the demo store under ``root`` (deterministic for a given ``seconds`` and ``seed``).

    ``n_insertions`` keeps only the first few insertions (benchmarks want one long recording, not eight).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    geometry = channel_geometry()
    dataset_rows, session_rows, insertion_rows, tags, records, truth = [], {}, [], {}, [], []
    cast = INSERTIONS[:n_insertions]
    jobs = [(root / ins.session_rel, ins, geometry, seconds, seed + i) for i, ins in enumerate(cast)]
    with Progress(transient=True) as progress, ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        task = progress.add_task("demo store", total=len(cast))
        futures = [pool.submit(_write_insertion, *job) for job in jobs]
        for (session_path, ins, *_), future in zip(jobs, futures, strict=True):
            files, events = future.result()
            truth += [{"pid": ins.pid, **e.to_dict()} for e in events]
            session_rows[ins.eid] = {
                "id": ins.eid, "lab": ins.lab, "subject": ins.subject,
                "date": pd.Timestamp(ins.date).date(), "number": ins.number,
                "task_protocol": "_iblrig_tasks_ephysChoiceWorld6.6.2",
                "projects": "ibl_neuropixel_brainwide_01",
            }
            for f in files:
                rel = f.relative_to(session_path).as_posix()
                did = demo_uuid("dataset", ins.eid, rel)
                dataset_rows.append({
                    "eid": ins.eid, "id": did, "rel_path": rel, "file_size": f.stat().st_size,
                    "hash": md5_file(f), "exists": True, "qc": "NOT_SET", "default_revision": True,
                })
                tags[did] = list(ins.tags)
            insertion_rows.append({
                "eid": ins.eid, "id": ins.pid, "model": "3B2", "name": ins.probe,
                "json": json.dumps(ins.alyx_json), "serial": str(18005116811 + len(insertion_rows)),
                "chronic_insertion": None,
            })
            records.append({**asdict(ins), "eid": ins.eid, "pid": ins.pid, "releases": releases_of(ins),
                            "planted": planted_bad_channels(ins)})
            progress.advance(task)
    _write_tables(root, session_rows, dataset_rows, insertion_rows)
    alyx = {"users": {DEMO_USER: DEMO_PASSWORD}, "dataset_tags": tags, "insertions": records,
            "seconds": seconds, "seed": seed}
    (root / GROUND_TRUTH).write_text(json.dumps({"seconds": seconds, "seed": seed, "events": truth}, indent=1))
    (root / "alyx.json").write_text(json.dumps(alyx, indent=1, sort_keys=True))
    _logger.info("demo store written to %s", root)
    return root


def _write_tables(root: Path, sessions: dict, datasets: list, insertions: list) -> None:
    meta = {"date_created": "2026-01-01 00:00", "origin": ORIGIN}
    ses = pd.DataFrame(list(sessions.values()))[list(SESSIONS_COLUMNS)].set_index("id").sort_index()
    dtypes = {**DATASETS_COLUMNS, "qc": QC_TYPE}
    dsets = pd.DataFrame(datasets)
    dsets = dsets.astype({k: v for k, v in dtypes.items() if k in dsets}).set_index(["eid", "id"]).sort_index()
    ins = pd.DataFrame(insertions).set_index(["eid", "id"]).sort_index()
    parquet.save(root / "sessions.pqt", ses, meta)
    parquet.save(root / "datasets.pqt", dsets, meta)
    parquet.save(root / "insertions.pqt", ins, meta)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def _write_insertion(session_path: Path, ins: DemoInsertion, geometry: pd.DataFrame, seconds: float,
                     seed: int) -> tuple[list[Path], list]:
    axial, lateral = geometry["axial_um"].to_numpy(), geometry["lateral_um"].to_numpy()
    xyz, atlas_id = trajectory(ins, axial)
    mlapdv = (xyz * 1e6).astype(np.float32)
    local = np.c_[lateral, axial].astype(np.float32)
    alf = session_path / "alf" / ins.probe
    sorter = alf / SPIKE_SORTER
    raw = session_path / "raw_ephys_data" / ins.probe
    files = [
        _save(alf / "electrodeSites.localCoordinates.npy", local),
        _save(alf / "electrodeSites.mlapdv.npy", mlapdv),
        _save(alf / "electrodeSites.brainLocationIds_ccf_2017.npy", atlas_id),
        _save(sorter / "channels.rawInd.npy", np.arange(len(axial), dtype=np.int64)),
        _save(sorter / "channels.localCoordinates.npy", local),
        _save(sorter / "channels.mlapdv.npy", mlapdv),
        _save(sorter / "channels.brainLocationIds_ccf_2017.npy", atlas_id),
    ]
    rng = np.random.default_rng(seed)
    n_spikes = 5000
    files.append(_save(sorter / "spikes.times.npy", np.sort(rng.uniform(0, seconds, n_spikes))))
    files.append(_save(sorter / "spikes.clusters.npy", rng.integers(0, 50, n_spikes).astype(np.uint32)))
    files.append(_save(sorter / "clusters.channels.npy", rng.integers(0, 384, 50).astype(np.int64)))
    raw_files, events = _write_raw_lf(raw, ins, atlas_id, seconds, seed)
    return files + raw_files, events


def _write_raw_lf(raw: Path, ins: DemoInsertion, atlas_id: np.ndarray, seconds: float, seed: int
                  ) -> tuple[list[Path], list]:
    planted = planted_bad_channels(ins)
    n_outside = int(np.sum(atlas_id == 0))
    imec = f"imec{int(ins.probe[-2:])}"
    stem = f"_spikeglx_ephysData_g0_t0.{imec}.lf"
    pickup = np.flatnonzero((atlas_id != 0) & ~np.isin(np.arange(atlas_id.size), planted["dead"]))
    events = draw_events(ins.artifact, seconds, seed, pickup, extras=ins.defects)
    plant = events_transform(events, LF_FS) if events else None
    cbin = signals.write_demo_lf(
        raw, stem=stem, n_seconds=seconds, fs=LF_FS, seed=seed, dead=planted["dead"],
        noisy=planted["noisy"], n_outside=n_outside, transform=plant, region_ids=tuple(atlas_id.tolist()),
    )
    files = [cbin, cbin.with_suffix(".ch"), cbin.with_suffix(".meta")]
    # probe clock -> session clock: samples of the AP clock (30 kHz) against session seconds
    fs_ap = LF_FS * 12
    offset, drift = 12.3456 + seed, 1 + 1.5e-5
    samples = np.array([0.0, seconds * fs_ap])
    files.append(_save(raw / f"_spikeglx_ephysData_g0_t0.{imec}.timestamps.npy",
                       np.c_[samples, offset + samples / fs_ap * drift]))
    files += write_iblqc_lf(cbin, raw)
    return files, events
