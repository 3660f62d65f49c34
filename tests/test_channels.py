import numpy as np
import pandas as pd

from ibl_ephys_data.channels import run_channels
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.store import channel_geometry, trajectory
from ibl_ephys_data.ibl import Connection
from ibl_ephys_data.workspace import Workspace


def test_channels_match_the_store_trajectories(demo_workspace):
    ws, _ = demo_workspace
    ch = ws.read_channels()
    assert ch.groupby("pid").size().to_dict() == {i.pid: 384 for i in INSERTIONS}
    geometry = channel_geometry()
    for ins in INSERTIONS:
        rows = ch[ch["pid"] == ins.pid].sort_values("raw_ind")
        xyz, atlas_id = trajectory(ins, geometry["axial_um"].to_numpy())
        np.testing.assert_allclose(rows[["x", "y", "z"]].to_numpy(), xyz, atol=1e-9)
        np.testing.assert_array_equal(rows["atlas_id"], atlas_id)
        # CCF by the DESIGN §4 formula, in µm, not mirrored
        np.testing.assert_allclose(rows["ccf_ml_um"], 5739 + xyz[:, 0] * 1e6, atol=1e-3)
        np.testing.assert_allclose(rows["ccf_ap_um"], 5400 - xyz[:, 1] * 1e6, atol=1e-3)
        np.testing.assert_allclose(rows["ccf_dv_um"], 332 - xyz[:, 2] * 1e6, atol=1e-3)
        left = xyz[:, 0] < 0
        assert (rows["lateralized_id"].to_numpy()[left & (atlas_id > 0)] < 0).all()
        assert (rows["lateralized_id"].to_numpy()[~left & (atlas_id > 0)] > 0).all()
        assert set(rows["histology"]) == {"alf"}


def test_regions_change_with_depth(demo_workspace):
    ws, _ = demo_workspace
    ch = ws.read_channels()
    rs = ch[ch["pid"] == INSERTIONS[0].pid].sort_values("axial_um")
    seq = list(dict.fromkeys(rs["cosmos_acronym"]))
    assert seq == ["TH", "HPF", "Isocortex", "void"], seq
    assert {"CA1", "DG", "LP", "PO", "VISa"} <= set(rs["beryl_acronym"])


def test_offline_channels_equal_remote(demo_workspace, tmp_path):
    ws, one_cache = demo_workspace
    offline = Workspace(tmp_path / "ws").create()
    offline.catalog.write_bytes(ws.catalog.read_bytes())
    assert run_channels(offline, Connection(cache_dir=one_cache, offline=True).open()).ok
    df = offline.read_channels()
    pd.testing.assert_frame_equal(df, ws.read_channels()[df.columns])
