"""`ibl-ephys-data demo` end to end: every stage through the loopback Alyx, ending with a verified dataset."""

import json
import shutil

import pandas as pd
import pytest
from s3_env import bucket_objects
from typer.testing import CliRunner

from ibl_ephys_data.cli import app
from ibl_ephys_data.dataset import LfpWindows, verify
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import LfpStore


@pytest.fixture(scope="module")
def s3_demo(demo_store, demo_seconds, s3_bucket_module):
    """``ibl-ephys-data demo --workspace s3://bucket/runs/demo`` against the local S3 server: (url, its working
    copy, what it printed). The same code as a folder run, on the working copy; compared with one below."""
    from ibl_ephys_data.workspace import objects

    url = f"{s3_bucket_module}/runs/demo"
    shutil.copytree(demo_store, objects.working_copy(url) / "demo-store")  # reused instead of regenerated
    result = CliRunner().invoke(app, ["demo", "--workspace", url, "--seconds", str(demo_seconds)])
    assert result.exit_code == 0, result.output
    return url, Workspace(url), result


def test_demo_command_runs_every_stage(s3_demo):
    url, ws, result = s3_demo
    assert len(ws.read_catalog()) == len(INSERTIONS)
    assert ws.read_channels().groupby("pid").size().eq(384).all()
    store = LfpStore(ws.lfp)
    assert all(store.attrs(i.pid).get("complete") is True and not store.problems(i.pid) for i in INSERTIONS)
    verdicts = pd.read_parquet(ws.qc_verdicts)
    assert verdicts["final_verdict"].value_counts().to_dict() == {"PASS": 4, "FAIL": 4}
    assert verify(ws) == []
    splits = json.loads((ws.dataset_dir / "splits.json").read_text())
    assert splits and (ws.dataset_dir / "DATA_CARD.md").exists()
    assert (ws.report_dir / "index.html").exists()
    assert f"report: {url}/report/index.html" in result.output.replace("\n", "")
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


def test_the_bucket_holds_what_a_folder_run_writes(s3_demo, qc_workspace, tmp_path, monkeypatch):
    from ibl_ephys_data.workspace.lfp_store import LfpStore

    url, ws, _ = s3_demo
    stored = bucket_objects(url)
    # the bucket holds exactly the working copy's published outputs: no lock, no temporaries, no demo store
    published = {p.relative_to(ws.root).as_posix(): p for name in ws.published()
                 for p in ([ws.root / name] if (ws.root / name).is_file() else (ws.root / name).rglob("*"))
                 if p.is_file()}
    assert set(published) == {k for k in stored if not k.startswith(".commits/")}
    assert all(p.read_bytes() == stored[k] for k, p in published.items())
    # ... and what the stages write into a folder workspace, bit for bit (the session's qc workspace ran the
    # same stages with the same options through the API)
    folder, _ = qc_workspace
    same = [p.relative_to(folder.root).as_posix() for p in folder.root.rglob("*") if p.is_file()
            and p.relative_to(folder.root).parts[0] in ("channels.parquet", "lfp.zarr", "parts", "qc")]
    assert len([k for k in same if k.startswith("lfp.zarr/") and "/c/" in k]) == 2 * len(INSERTIONS)
    assert len(same) == 10 * len(INSERTIONS) + 6 and all((folder.root / k).read_bytes() == stored[k] for k in same)
    # every folder unit is committed, naming the size and MD5 of each of its files
    records = {k: json.loads(v) for k, v in stored.items() if k.startswith(".commits/")}
    assert len(records) == len(INSERTIONS) + 3  # one per lfp.zarr group, qc, dataset, report
    for record in records.values():
        assert record["state"] == "committed"
        assert all(meta["size"] == len(stored[rel]) for rel, meta in record["files"].items())

    # another machine: a fresh working copy verifies the dataset and reads what the folder workspace holds
    elsewhere = Workspace(url, cache_dir=tmp_path / "other-machine").create().refresh()
    assert verify(elsewhere) == []
    assert not any((elsewhere.lfp / i.pid / "lfp" / "c").exists() for i in INSERTIONS)  # shards: on demand only
    reference = LfpStore(folder.lfp)
    monkeypatch.setenv("IBL_EPHYS_DATA_CACHE", str(tmp_path / "reader-machine"))  # LfpWindows(url)'s copy
    for local_cache in (False, True):
        ds = LfpWindows(url if local_cache else elsewhere.dataset_dir, split="test", level="beryl",
                        local_cache=local_cache)
        picked = (0, len(ds) // 2, len(ds) - 1)
        for i in picked:
            pid, r0, r1, s0, s1 = ds.location(i)
            assert (ds[i]["x"] == reference.open(pid).lfp(slice(r0, r1), slice(s0, s1))).all()
    # range reads keep nothing on disk; the cached reader fetched exactly the insertions it read
    assert not any((elsewhere.lfp / i.pid / "lfp" / "c").exists() for i in INSERTIONS)
    reader_copy = Workspace(url)
    fetched = {i.pid for i in INSERTIONS if (reader_copy.lfp / i.pid / "lfp" / "c").exists()}
    assert fetched == {ds.location(i)[0] for i in picked}
