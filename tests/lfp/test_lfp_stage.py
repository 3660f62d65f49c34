"""The lfp stage end to end: streamed through ONE from the loopback server into lfp.zarr."""

import json
import shutil

import numpy as np
import pandas as pd
import zarr
from iblutil.io import parquet

from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.run import demo_connection
from ibl_ephys_data.ibl import Connection
from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpStore

SECONDS = 24.0


def test_every_insertion_streamed_and_written(lfp_workspace, demo_store):
    ws, _, statuses, bytes_served = lfp_workspace
    assert {s["status"] for s in statuses.values()} == {"done"}
    cbin_bytes = sum(f.stat().st_size for f in demo_store.rglob("*.lf.cbin"))
    # whole recordings were asked for: every chunk once, plus the small .ch/.meta/timestamps files
    assert cbin_bytes <= bytes_served <= 1.05 * cbin_bytes
    for ins in INSERTIONS:
        group = zarr.open_group(str(ws.lfp / ins.pid), mode="r")
        assert group.attrs["complete"] is True and group.attrs["units"] == "uV"
        assert group["lfp"].shape == (384, int(SECONDS * 1250))
        (window,) = group.attrs["windows"]
        assert (window["start_s"], window["stop_s"], window["offset"]) == (0.0, SECONDS, 0)
        seed = INSERTIONS.index(ins)
        # probe -> session clock from the timestamps dataset the store carries (offset + drift)
        np.testing.assert_allclose(window["session_start_s"], 12.3456 + seed, atol=1e-6)
        np.testing.assert_allclose(window["session_stop_s"], 12.3456 + seed + SECONDS * (1 + 1.5e-5), atol=1e-6)
        uv = LfpStore(ws.lfp).open(ins.pid).lfp(slice(100, 110), slice(5000, 10000))
        rms = float(np.sqrt(np.mean(uv.astype(float) ** 2)))
        assert 1 < rms < 1000, rms  # µV, destriped cortex/thalamus LFP


def test_planted_bad_channels_are_labelled(lfp_workspace, demo_store):
    ws, *_ = lfp_workspace
    channels = ws.read_channels()
    planted = {r["pid"]: r["planted"] for r in json.loads((demo_store / "alyx.json").read_text())["insertions"]}
    for pid, truth in planted.items():
        ch = channels[channels["pid"] == pid].set_index("raw_ind")
        labels = ch["bad_channel_label"]
        assert sorted(labels[labels == 1].index) == truth["dead"], pid
        assert sorted(labels[labels == 2].index) == truth["noisy"], pid
        assert sorted(labels[labels == 3].index) == sorted(ch.index[ch["atlas_id"] == 0]), pid
    assert {"bad_channel_xcor_hf", "bad_channel_xcor_lf", "bad_channel_psd_hf"} <= set(channels.columns)


def test_rerun_skips_and_changed_parameters_recompute(lfp_workspace, alyx_server, tmp_path):
    src, one_cache, *_ = lfp_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    pid = INSERTIONS[0].pid
    before = alyx_server.bytes_served
    with demo_connection(alyx_server, one_cache).session() as one:
        statuses = run_lfp(ws, one, LfpOptions(windows=((0.0, SECONDS),))).statuses
    assert {s["status"] for s in statuses.values()} == {"skipped"}
    assert alyx_server.bytes_served == before
    with demo_connection(alyx_server, one_cache).session() as one:
        statuses = run_lfp(ws, one, LfpOptions(windows=((2.0, 10.0),), fs_out=625.0), pids=[pid]).statuses
    assert statuses[pid]["status"] == "done"
    group = zarr.open_group(str(ws.lfp / pid), mode="r")
    assert group["lfp"].shape == (384, 6250) and group.attrs["fs"] == 625.0


def test_broken_insertions_fail_alone(lfp_workspace, demo_store, tmp_path):
    """Offline on a damaged copy of the store: each broken insertion is named; the others are processed."""
    src, *_ = lfp_workspace
    store = tmp_path / "store"
    shutil.copytree(demo_store, store, copy_function=lambda a, b: shutil.copy2(a, b)
                    if a.endswith((".pqt", ".ch", ".meta", ".cbin")) else shutil.copy2(a, b))
    broken = {ins.pid: ins for ins in INSERTIONS[:3]}
    ins_ch, ins_meta, ins_gone = INSERTIONS[:3]
    raw = {i.pid: next((store / i.session_rel / "raw_ephys_data" / i.probe).glob("*.lf.cbin")) for i in INSERTIONS[:3]}
    ch_file = raw[ins_ch.pid].with_suffix(".ch")
    ch = json.loads(ch_file.read_text())
    ch["chunk_offsets"] = [o // 2 for o in ch["chunk_offsets"]]  # offsets no longer match the data
    ch_file.write_text(json.dumps(ch))
    meta = raw[ins_meta.pid].with_suffix(".meta")
    meta.write_text("\n".join(line for line in meta.read_text().splitlines()
                              if not line.startswith(("imSampRate", "nSavedChans"))))
    dsets, meta_tables = parquet.load(store / "datasets.pqt")
    gone = dsets.index.get_level_values("eid") == ins_gone.eid
    gone &= dsets["rel_path"].str.contains(f"{ins_gone.probe}/.*lf\\.", regex=True)
    parquet.save(store / "datasets.pqt", dsets[~gone], meta_tables)
    ws = Workspace(tmp_path / "ws").create()
    ws.catalog.write_bytes(src.catalog.read_bytes())
    ws.channels.write_bytes(src.channels.read_bytes())
    one = Connection(cache_dir=store, offline=True).open()
    statuses = run_lfp(ws, one, LfpOptions(windows=((0.0, 8.0),)), pids=[i.pid for i in INSERTIONS[:4]]).statuses
    failed = ws.failed_pids("lfp")
    assert set(failed) == set(broken), failed
    assert "corrupt" in failed[ins_ch.pid] or "truncated" in failed[ins_ch.pid]
    assert ".meta" in failed[ins_meta.pid] or "meta" in failed[ins_meta.pid].lower()
    assert "no raw LF" in failed[ins_gone.pid]
    assert statuses[INSERTIONS[3].pid]["status"] == "done"
    assert not (ws.lfp / ins_ch.pid).exists()
    assert pd.read_parquet(ws.channels)["pid"].nunique() == len(INSERTIONS)
