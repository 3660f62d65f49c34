"""Export: windows index, leakage-free zero-shot sets at each level, verify on corruption, data card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fake_workspace import COST, FAIL_RULES, build_fake_workspace, pid_of

from ibl_ephys_data.dataset import LeakageError, dataset_info, export_dataset, verify, verify_or_raise

LEVEL_COLUMN = {"pid": "pid", "session": "eid", "subject": "subject"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_fake_workspace(tmp_path_factory.mktemp("dataset_export") / "ws")


def _windows(ws) -> pd.DataFrame:
    return pd.read_parquet(ws.dataset_dir / "windows.parquet")


@pytest.mark.parametrize("leakage", ["pid", "session", "subject"])
def test_zero_shot_export_has_no_overlap_at_its_level(ws, leakage):
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage=leakage, val_fraction=0.3)
    win = _windows(ws)
    catalog = ws.read_catalog().set_index("pid")
    per_pid = win.groupby("pid")["split"].agg(set)
    assert (per_pid.map(len) == 1).all()  # an insertion lives in one split
    split_of = per_pid.map(lambda s: next(iter(s)))
    assert set(split_of) == {"train", "val", "test"}
    levels = ["pid", "session", "subject"]
    for lev in levels[: levels.index(leakage) + 1]:
        keys = catalog.loc[split_of.index, LEVEL_COLUMN[lev]] if lev != "pid" else split_of.index.to_series()
        sides = {s: set(keys[split_of == s]) for s in ("train", "val", "test")}
        assert not sides["train"] & sides["test"] and not sides["val"] & sides["test"], lev
        assert not sides["train"] & sides["val"], lev
    test_pids = {pid_of(n) for n in ("both", "r_subj", "r_sess", "r_new")}
    assert set(split_of[split_of == "test"].index) == test_pids
    in_dataset = set(split_of.index)
    removed = {"pid": set(), "session": {"b_sess", "b_sessb"},
               "subject": {"b_sess", "b_sessb", "b_subj1", "b_subj2", "b_subj3", "b_subj4"}}[leakage]
    assert not {pid_of(n) for n in removed} & in_dataset
    assert verify(ws) == []
    splits = json.loads((ws.dataset_dir / "splits.json").read_text())
    assert {k: splits["cost"][k] for k in ("pid", "session", "subject")} == COST


def test_windows_index_rows_and_times(ws):
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="pid", val_fraction=0)
    first = (ws.dataset_dir / "windows.parquet").read_bytes()
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="pid", val_fraction=0)
    assert (ws.dataset_dir / "windows.parquet").read_bytes() == first  # re-running is idempotent
    win = _windows(ws)
    one = win[(win["pid"] == pid_of("r_new")) & (win["raw_ind"] == 0)].sort_values("start")
    # 250 Hz, segments of 1000 and 750 samples at offsets 0 and 1000, 1-s windows without overlap
    assert one["start"].tolist() == [0, 250, 500, 750, 1000, 1250, 1500]
    assert one["segment"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(one["t_session_s"], [0, 1, 2, 3, 100, 101, 102])
    assert (one["n_samples"] == 250).all() and (one["row_start"] == 0).all() and (one["row_stop"] == 1).all()
    channels = ws.read_channels()
    row = one.iloc[0]
    src = channels[(channels["pid"] == row["pid"]) & (channels["raw_ind"] == 0)].iloc[0]
    assert (row["allen_acronym"], row["beryl_acronym"], row["cosmos_acronym"]) == ("CA1", "CA1", "HPF")
    for col in ("ccf_ap_um", "ccf_dv_um", "ccf_ml_um", "axial_um", "x", "y", "z"):
        assert row[col] == pytest.approx(src[col])
    assert (row["qc_verdict"], row["split"], row["subject"], row["eid"]) == ("PASS", "test", "S6", "E8")
    # channels per insertion: 24 - 4 void/root at beryl - 2 unusable (CA2 dropped on b_ca2 as well)
    per_pid = win.groupby("pid")["raw_ind"].nunique()
    assert per_pid[pid_of("r_new")] == 18 and per_pid[pid_of("b_ca2")] == 16
    assert per_pid[pid_of("b_free1")] == 17  # one channel without channel QC
    assert (win.groupby(["pid", "raw_ind"]).size() == 7).all()

    export_dataset(ws, window_seconds=1.0, stride_seconds=0.5, neighbours=2, min_channels=3, leakage="pid")
    win = _windows(ws)
    one = win[win["pid"] == pid_of("r_new")]
    assert one.groupby("raw_ind").size().unique().tolist() == [7 + 5]  # (1000-250)/125+1, (750-250)/125+1
    bounds = one.drop_duplicates("raw_ind").set_index("raw_ind")[["row_start", "row_stop"]]
    assert tuple(bounds.loc[0]) == (0, 5) and tuple(bounds.loc[10]) == (8, 13)
    assert tuple(bounds.loc[21]) == (19, 24)


def test_exclusions_skips_and_the_data_card(ws):
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="subject", val_fraction=0)
    card = (ws.dataset_dir / "DATA_CARD.md").read_text()
    win = _windows(ws)
    info = dataset_info(ws)
    assert info["verified"] and info["n_windows"] == len(win)
    counts = win.groupby("split").agg(insertions=("pid", "nunique"), windows=("pid", "size"))
    for split, row in counts.iterrows():
        assert info["per_split"][split]["insertions"] == row["insertions"]
        assert info["per_split"][split]["windows"] == row["windows"]
        assert f"| {split} | {row['insertions']} |" in card
    assert pid_of("b_fail") not in set(win["pid"]) and pid_of("b_nolfp") not in set(win["pid"])
    assert info["excluded_insertions"] == {"leakage": 6, "missing": 2, "qc": 1, "no_channels": 0}
    assert f"no lfp store: 1 (`{pid_of('b_nolfp')}`)" in card
    assert f"no channel qc: 1 (`{pid_of('b_noqc')}`)" in card
    for rule in FAIL_RULES:
        assert f"| {rule} | 1 |" in card
    assert "| CA2 | 2 |" in card and info["dropped_classes"] == {"CA2": 2}
    assert "| subject (chosen) | 7 |" in card and "`2022_Q4_IBL_et_al_BWM`" in card
    assert "| unusable: dead |" in card and "| no channel QC | 1 |" in card
    manifest = ws.read_manifest()
    assert manifest["pids"][pid_of("b_nolfp")]["dataset"]["status"] == "skipped"
    assert manifest["pids"][pid_of("b_fail")]["dataset"]["status"] == "excluded"


def test_verify_fails_on_hand_corrupted_splits(ws):
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="subject", val_fraction=0)
    path = ws.dataset_dir / "splits.json"
    good = path.read_text()
    try:
        splits = json.loads(good)
        moved = pid_of("r_subj")  # a test insertion of subject S1, moved to train
        splits["assignments"][moved]["split"] = "train"
        path.write_text(json.dumps(splits))
        problems = verify(ws)
        text = " | ".join(problems)
        assert moved in text and "windows.parquet splits disagree" in text
        assert "subject S1" not in text  # S1's other insertions are excluded, so only the pid is named
        splits["assignments"][pid_of("b_subj1")]["split"] = "test"
        splits["assignments"][moved]["split"] = "test"
        splits["assignments"][pid_of("b_subj2")]["split"] = "train"
        path.write_text(json.dumps(splits))
        text = " | ".join(verify(ws))
        assert "leakage at subject level: subject S1" in text and pid_of("b_subj2") in text
        with pytest.raises(LeakageError, match="subject S1"):
            verify_or_raise(ws)
    finally:
        path.write_text(good)
    assert verify(ws) == []


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="splits.json does not exist: run `ibl-ephys-data export"):
        dataset_info(tmp_path)
    with pytest.raises(FileNotFoundError, match="catalog.parquet does not exist"):
        export_dataset(tmp_path)


def test_kfold_export_and_bad_inputs(ws):
    export_dataset(ws, window_seconds=1.0, min_channels=3, mode="kfold", k=3, leakage="subject")
    win = _windows(ws)
    assert {s for s in win["split"].unique()} <= {"fold0", "fold1", "fold2", "val"}
    assert win.groupby("subject")["split"].nunique().max() == 1
    assert verify(ws) == []
    before = (ws.dataset_dir / "splits.json").read_text()
    with pytest.raises(ValueError, match=r"classes with fewer than 3 channels: CA2 \(2\)"):
        export_dataset(ws, window_seconds=1.0, min_channels=3, strict=True)
    assert (ws.dataset_dir / "splits.json").read_text() == before  # a failed export leaves the old one
    missing = f"2 pids lack lfp/qc outputs: .*{pid_of('b_nolfp')} \\(no lfp store\\)"
    with pytest.raises(ValueError, match=missing):
        export_dataset(ws, on_missing="error")
    with pytest.raises(ValueError, match="unknown region acronym 'HPC'"):
        export_dataset(ws, regions="HPC")
    with pytest.raises(ValueError, match="no insertion of release 'bmw'"):
        export_dataset(ws, train_release="bmw")


def test_regions_export_uses_targets_as_classes(ws):
    export_dataset(ws, regions="HPF,VIS", window_seconds=1.0, min_channels=3, leakage="pid")
    win = _windows(ws)
    assert set(win["label"]) == {"HPF", "VIS"}
    assert set(win.loc[win["label"] == "HPF", "allen_acronym"]) == {"CA1", "DG-mo", "CA3", "CA2"}
    assert set(win.loc[win["label"] == "VIS", "allen_acronym"]) == {"VISp5"}
    splits = json.loads((ws.dataset_dir / "splits.json").read_text())
    assert splits["classes"]["label"] == ["HPF", "VIS"]


# ---- per-window QC flags (lfp.artifacts intervals in the lfp store attrs) ------------------------------------
def test_flagged_windows_are_excluded_counted_and_kept_on_request(tmp_path):
    import zarr

    from ibl_ephys_data.dataset import LfpWindows

    ws = build_fake_workspace(tmp_path / "ws", variants=False)
    pid = pid_of("r_new")
    intervals = [  # 250 Hz store, segments [0, 1000) and [1000, 1750); 1-s windows start every 250 samples
        {"kind": "flat", "start": 300, "stop": 400, "row_start": 0, "row_stop": 4, "value": 1.0},
        {"kind": "step", "start": 1100, "stop": 1110, "row_start": 0, "row_stop": 24, "value": 25.0},
    ]
    for other in {pid_of(n) for n in ("r_new", "b_free1")}:
        zarr.open_group(str(ws.lfp / other), mode="a").attrs["artifacts"] = intervals if other == pid else []
    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="pid", val_fraction=0, keep_flagged=True)
    win = _windows(ws)
    mine = win[win["pid"] == pid]
    flat = mine["flag_flat"] & (mine["raw_ind"] < 4) & (mine["start"] == 250)
    assert mine["flag_flat"].sum() == flat.sum() == mine[(mine["raw_ind"] < 4) & (mine["start"] == 250)].shape[0]
    assert set(mine.loc[mine["flag_step"], "start"]) == {1000} and mine["flag_step"].sum() == 18
    assert mine.loc[mine["flag_step"], "artifact_flags"].map(list).isin([["step"], ["flat", "step"]]).all()
    assert not mine[["flag_saturation", "flag_cm_burst", "flag_line_noise"]].to_numpy().any()
    # a store written before per-window QC: unknown (null) flags, kept, counted as unchecked
    unknown = win[~win["pid"].isin([pid, pid_of("b_free1")])]
    assert unknown["flag_flat"].isna().all() and len(unknown)
    n_flagged = int((mine["flag_flat"] | mine["flag_step"]).sum())
    summary = json.loads((ws.dataset_dir / "splits.json").read_text())["summary"]["flagged_windows"]
    assert summary["windows"] == n_flagged and summary["kept"] is True and summary["unchecked"] == len(unknown)
    assert summary["per_reason"] == {"flat": int(mine["flag_flat"].sum()), "step": 18}
    card = (ws.dataset_dir / "DATA_CARD.md").read_text()
    assert "### Windows flagged by per-window QC" in card and f"{n_flagged} of {len(win)} windows" in card
    assert "| step | 18 |" in card
    # the loader drops them on request, all flags or named ones
    assert len(LfpWindows(ws.root, exclude_flags=True)) == len(win) - n_flagged
    assert len(LfpWindows(ws.root, exclude_flags=["step"])) == len(win) - 18
    with pytest.raises(ValueError, match="exclude_flags='stepp' is not one of saturation, flat"):
        LfpWindows(ws.root, exclude_flags=["stepp"])

    export_dataset(ws, window_seconds=1.0, min_channels=3, leakage="pid", val_fraction=0)  # default: excluded
    again = _windows(ws)
    assert len(again) == len(win) - n_flagged and not again[["flag_flat", "flag_step"]].fillna(False).any().any()
    info = dataset_info(ws)
    assert info["flagged_windows"]["kept"] is False and info["flagged_windows"]["windows"] == n_flagged
