"""A small workspace, built per the workspace contract, whose releases overlap like the real ones.

Zero-shot ground truth (train bwm, test repro-ephys):
- `both`  is in both releases (pid level costs 1);
- `b_sess` shares a session with `r_sess`; `b_sessb` shares a session with `both` (session level costs 3);
- `b_subj1`, `b_subj2` share a subject with `r_subj`, `b_subj3` with `both`, `b_subj4` with `r_sess`
  (subject level costs 7).
Upstream outputs: `b_nolfp` has no lfp store, `b_noqc` no channel QC, `b_fail` a FAIL verdict.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from iblatlas.regions import BrainRegions

from ibl_ephys_data.workspace import Workspace, write_parquet
from ibl_ephys_data.workspace.lfp_store import Encoding, LfpStore

# name: (releases, subject, session, lab)
INSERTIONS = {
    "b_free1": ("bwm", "S3", "E4", "L1"),
    "b_free2": ("bwm", "S4", "E5", "L2"),
    "b_free3": ("bwm", "S8", "E11", "L3"),
    "b_free4": ("bwm", "S8", "E12", "L3"),
    "b_free5": ("bwm", "S9", "E13", "L1"),
    "b_ca2": ("bwm", "S10", "E14", "L2"),
    "b_fail": ("bwm", "S11", "E15", "L2"),
    "b_nolfp": ("bwm", "S12", "E16", "L1"),
    "b_noqc": ("bwm", "S13", "E17", "L3"),
    "b_sess": ("bwm", "S2", "E3", "L1"),
    "b_sessb": ("bwm", "S5", "E6", "L2"),
    "b_subj1": ("bwm", "S1", "E1", "L1"),
    "b_subj2": ("bwm", "S1", "E2", "L1"),
    "b_subj3": ("bwm", "S5", "E9", "L2"),
    "b_subj4": ("bwm", "S2", "E10", "L1"),
    "both": ("bwm,repro-ephys", "S5", "E6", "L2"),
    "r_subj": ("repro-ephys", "S1", "E7", "L1"),
    "r_sess": ("repro-ephys", "S2", "E3", "L1"),
    "r_new": ("repro-ephys", "S6", "E8", "L3"),
}
COST = {"pid": 1, "session": 3, "subject": 7}
# regions along a 24-channel probe, tip first; `b_ca2` has CA2 instead of CA3 (a class too small to keep)
LAYOUT = [("CA1", 4), ("DG-mo", 4), ("VISp5", 4), ("fi", 2), ("PO", 4), ("CA3", 2), ("LP", 2), ("root", 1),
          ("void", 1)]
UNUSABLE = {5: "dead", 15: "noisy"}
NO_CHANNEL_QC = ("b_free1", 9)
FAIL_RULES = ["drift_rms_um>40", "alignment_unresolved"]


def pid_of(name: str) -> str:
    """A UUID-looking pid per insertion name (stable across runs)."""
    h = sum((i + 1) * ord(c) for i, c in enumerate(name))
    return f"{h:08x}-0000-4000-8000-{sum(map(ord, name)):012x}"


def acronyms(name: str, n_channels: int = 24) -> list[str]:
    rep = n_channels // 24
    out = [a for a, n in LAYOUT for _ in range(n * rep)]
    if name == "b_ca2":
        out = ["CA2" if a == "CA3" else a for a in out]
    return out


@functools.lru_cache(maxsize=1)
def _regions() -> BrainRegions:
    return BrainRegions()


def channels_table(name: str, n_channels: int = 24) -> pd.DataFrame:
    br = _regions()
    acr = np.array(acronyms(name, n_channels))
    id_of = {str(a): int(i) for a, i in zip(br.acronym, br.id, strict=True) if i >= 0}
    ids = np.array([id_of[a] for a in acr], dtype=np.int64)
    beryl = br.remap(ids, target_map="Beryl")
    cosmos = br.remap(ids, target_map="Cosmos")
    raw = np.arange(n_channels)
    axial = 20.0 * (raw // 2) + 20
    x = np.full(n_channels, -0.0012)
    y = np.full(n_channels, -0.0021)
    z = -0.0045 + axial * 1e-6
    return pd.DataFrame({
        "pid": pid_of(name), "eid": INSERTIONS[name][2], "raw_ind": raw, "axial_um": axial,
        "lateral_um": np.tile([43.0, 11.0, 59.0, 27.0], n_channels // 4), "x": x, "y": y, "z": z,
        "ccf_ap_um": 5400 - y * 1e6, "ccf_dv_um": 332 - z * 1e6, "ccf_ml_um": 5739 + x * 1e6,
        "atlas_id": ids, "lateralized_id": -ids, "acronym": acr,
        "beryl_id": beryl, "beryl_acronym": br.id2acronym(beryl), "cosmos_id": cosmos,
        "cosmos_acronym": br.id2acronym(cosmos), "histology": "alf", "bad_channel_label": np.int8(0),
    })


def write_lfp(ws: Workspace, pid: str, n_channels: int, segments: list[tuple[int, int]], fs: float,
              chunks: tuple[int, int], dtype: str, compressor: object | None, seed: int,
              legacy: bool = False) -> np.ndarray:
    """One insertion's store through `LfpStore` (``chunks[1]`` samples per inner chunk), or with ``legacy``
    the old zarr v2 layout (``chunks``, ``compressor``). Returns the float32 µV the store decodes to."""
    n_samples = sum(n for _, n in segments)
    data = (np.random.default_rng(seed).standard_normal((n_channels, n_samples)) * 50).astype(np.float32)
    attrs = {
        "fs": fs, "units": "uV", "raw_ind": list(range(n_channels)),
        "windows": [{"start_s": 100.0 * i, "stop_s": 100.0 * i + n / fs, "session_start_s": 100.0 * i,
                     "session_stop_s": 100.0 * i + n / fs, "offset": off, "n_samples": n}
                    for i, (off, n) in enumerate(segments)],
        "params": {"destripe": "ibldsp.voltage.destripe_lfp", "revision": "2024-05-06"},
        "versions": {},
    }
    if legacy:
        group = zarr.open_group(str(ws.lfp / pid), mode="w", zarr_format=2)
        group.create_array("lfp", data=data.astype(dtype), chunks=chunks, compressors=compressor)
        group.create_array("common_mode", data=np.zeros(n_samples, np.float32), chunks=(chunks[1],),
                           compressors=None, config={"write_empty_chunks": True})  # as zarr 2 wrote them
        group.attrs.update({**attrs, "complete": True})
        return data.astype(dtype).astype(np.float32)
    encoding = Encoding.for_probe(dtype, 1)
    with LfpStore(ws.lfp).create(pid, n_channels, n_samples, encoding, chunk_samples=chunks[1]) as out:
        for start in range(0, n_samples, out.shard):
            out.write_lfp(start, data[:, start:start + out.shard])
        out.finish(attrs)
    return encoding.decode(encoding.encode(data)[0])


def build_fake_workspace(
    root: Path,
    names: list[str] | None = None,
    n_channels: int = 24,
    fs: float = 250.0,
    segments: tuple[tuple[int, int], ...] = ((0, 1000), (1000, 750)),
    chunks: tuple[int, int] = (1, 300),
    dtype: str = "int16",
    compressor: object | None = None,
    variants: bool = True,
    legacy: bool = False,
) -> Workspace:
    """Write catalog, channels, lfp.zarr and qc files for ``names`` (default: all of `INSERTIONS`).

    With ``variants`` one store is in the old layout (zarr v2, Blosc, odd chunks) and one is float16, so the
    loader's legacy and float paths are exercised as well. ``legacy`` writes every store in the old layout.
    """
    import numcodecs

    ws = Workspace(root).create()
    names = list(INSERTIONS) if names is None else names
    catalog = pd.DataFrame([
        {"pid": pid_of(n), "eid": INSERTIONS[n][2], "subject": INSERTIONS[n][1], "lab": INSERTIONS[n][3],
         "date": "2023-01-01", "session_number": 1, "probe_name": "probe00", "probe_model": "3B2",
         "releases": INSERTIONS[n][0], "qc": "PASS"} for n in names
    ])
    write_parquet(catalog, ws.catalog)
    write_parquet(pd.concat([channels_table(n, n_channels) for n in names], ignore_index=True), ws.channels)
    qc_rows, verdict_rows = [], []
    for i, name in enumerate(names):
        pid = pid_of(name)
        if name != "b_nolfp":
            chunk, typ, comp, old = chunks, dtype, compressor, legacy
            if variants and name == "both":
                chunk, typ, comp, old = (5, 256), "float32", numcodecs.Blosc(cname="zstd", clevel=3), True
            if variants and name == "b_free2":
                typ = "float16"
            write_lfp(ws, pid, n_channels, list(segments), fs, chunk, typ, comp, seed=i, legacy=old)
        for raw in range(n_channels):
            if name == "b_noqc" or (name, raw) == NO_CHANNEL_QC:
                continue
            reason = UNUSABLE.get(raw % 24, "")
            qc_rows.append({"pid": pid, "raw_ind": raw, "usable": not reason, "unusable_reason": reason})
        verdict = "FAIL" if name == "b_fail" else "WARNING" if name == "b_free3" else "PASS"
        verdict_rows.append({"pid": pid, "final_verdict": verdict,
                             "fired_rules": FAIL_RULES if verdict == "FAIL" else []})
    write_parquet(pd.DataFrame(qc_rows), ws.qc_channel_metrics)
    write_parquet(pd.DataFrame(verdict_rows), ws.qc_verdicts)
    return ws
