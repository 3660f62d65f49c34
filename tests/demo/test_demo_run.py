"""`ibl-ephys-data demo` end to end: every stage through the loopback Alyx, ending with a verified dataset."""

import json
import shutil

import pandas as pd
from typer.testing import CliRunner

from ibl_ephys_data.cli import app
from ibl_ephys_data.dataset import LfpWindows, verify
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpStore


def test_demo_command_runs_every_stage(demo_store, demo_seconds, tmp_path):
    out = tmp_path / "demo-ws"
    shutil.copytree(demo_store, out / "demo-store")  # the same store: the demo reuses it instead of regenerating
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--seconds", str(demo_seconds)])
    assert result.exit_code == 0, result.output
    ws = Workspace(out)
    assert len(ws.read_catalog()) == len(INSERTIONS)
    assert ws.read_channels().groupby("pid").size().eq(384).all()
    store = LfpStore(ws.lfp)
    assert all(store.attrs(i.pid).get("complete") is True and not store.problems(i.pid) for i in INSERTIONS)
    verdicts = pd.read_parquet(ws.qc_verdicts)
    assert verdicts["final_verdict"].value_counts().to_dict() == {"PASS": 4, "FAIL": 4}
    assert verify(ws) == []
    splits = json.loads((ws.dataset_dir / "splits.json").read_text())
    assert splits and (ws.dataset_dir / "DATA_CARD.md").exists()
    assert (ws.report_dir / "index.html").exists() and str(ws.report_dir / "index.html") in result.output.replace(
        "\n", "")
    # zero-shot test windows come only from repro-ephys insertions; no training subject is a test subject
    windows = pd.read_parquet(ws.dataset_dir / "windows.parquet")
    catalog = ws.read_catalog().set_index("pid")
    test_pids = set(windows.loc[windows["split"] == "test", "pid"])
    train_pids = set(windows.loc[windows["split"] == "train", "pid"])
    assert test_pids and train_pids
    assert all("repro-ephys" in catalog.loc[p, "releases"] for p in test_pids)
    assert not set(catalog.loc[list(test_pids), "subject"]) & set(catalog.loc[list(train_pids), "subject"])
    manifest = json.loads(ws.manifest_path.read_text())
    assert {"catalog", "channels", "lfp", "qc", "baseline"} <= set(manifest["stages"])
    # the baseline table (main number with CI, chance, the four controls) in the data card and the report
    card, index = (ws.dataset_dir / "DATA_CARD.md").read_text(), (ws.report_dir / "index.html").read_text()
    for row in ("**main**", "chance: stratified", "(a) training labels permuted", "(b) trained on the pid-level",
                "(c) depth only", "(c) band powers only", "(d) lab from the same features"):
        assert row in card and row.strip("*") in index
    assert (ws.report_dir / "figures" / "baseline" / "confusion.png").exists()
    # the loader reads exactly what lfp.zarr holds
    ds = LfpWindows(ws.dataset_dir, split="train", level="beryl")
    item = ds[0]
    assert item["x"].dtype.name == "float32" and item["x"].shape[-1] == int(3.0 * 1250)
