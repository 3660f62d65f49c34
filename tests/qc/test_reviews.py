"""Human reviews: appended on record, latest wins, never lost when verdicts are recomputed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from verdict_files import read_verdicts

from ibl_ephys_data.qc.reviews import add_review, apply_reviews, read_reviews
from ibl_ephys_data.qc.verdicts import compute_verdicts, update_verdicts
from ibl_ephys_data.workspace import Workspace, write_parquet

PIDS = ["11111111-0000-0000-0000-000000000001", "22222222-0000-0000-0000-000000000002",
        "33333333-0000-0000-0000-000000000003"]
CLEAN = {"alyx_qc_level": 10.0, "tracing_exists": 1.0, "alignment_resolved": 1.0, "drift_rms_um": 5.0,
         "snr_db": 20.0, "power_cv": 0.3, "line_noise_pct": 0.01, "spectral_slope": -2.0,
         "discontinuity_pct": 0.0, "cm_burst_pct": 0.0, "striping_ratio": 0.5, "coburst_fraction": 0.0,
         "saturation_pct": 0.0, "n_dead": 0, "n_noisy": 1}


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").create()
    write_parquet(pd.DataFrame({"pid": PIDS, "eid": ["e1", "e1", "e2"]}), ws.catalog)
    metrics = pd.DataFrame([{"pid": PIDS[0], **CLEAN}, {"pid": PIDS[1], **CLEAN, "line_noise_pct": 12.0},
                            {"pid": PIDS[2], **CLEAN, "snr_db": float("nan")}])
    write_parquet(metrics, ws.qc_metrics)
    return ws


def test_add_review_appends_one_json_line(workspace):
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rec = add_review(workspace, PIDS[1], "pass", "  line noise is notched downstream ", "ada", time=t0)
    assert rec == {"time": "2026-03-01T12:00:00.000000+00:00", "reviewer": "ada", "verdict": "PASS",
                   "reason": "line noise is notched downstream", "pid": PIDS[1]}
    add_review(workspace, PIDS[0], "WARNING", "odd theta band", "bob")
    lines = workspace.qc_reviews.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == rec
    second = json.loads(lines[1])
    assert second["reviewer"] == "bob" and datetime.fromisoformat(second["time"]).tzinfo is not None
    recorded = read_reviews(workspace)[["pid", "verdict"]].values.tolist()
    assert recorded == [[PIDS[1], "PASS"], [PIDS[0], "WARNING"]]


def test_bad_reviews_are_refused_and_not_recorded(workspace, tmp_path):
    with pytest.raises(ValueError, match="pid deadbeef is not in the catalog"):
        add_review(workspace, "deadbeef", "PASS", "typo", "ada")
    with pytest.raises(ValueError, match="verdict 'GREAT' is not valid: use one of PASS, WARNING, FAIL"):
        add_review(workspace, PIDS[0], "GREAT", "why not", "ada")
    with pytest.raises(ValueError, match="review reason is empty"):
        add_review(workspace, PIDS[0], "PASS", " ", "ada")
    with pytest.raises(ValueError, match="review reviewer is empty"):
        add_review(workspace, PIDS[0], "PASS", "fine", "")
    assert not workspace.qc_reviews.exists()
    with pytest.raises(FileNotFoundError, match="catalog.parquet does not exist"):
        add_review(Workspace(tmp_path / "empty"), PIDS[0], "PASS", "fine", "ada")


def test_latest_review_wins_and_the_automatic_verdict_stays_visible(workspace):
    auto = compute_verdicts(pd.read_parquet(workspace.qc_metrics))
    assert auto["verdict"].tolist() == ["PASS", "FAIL", "NOT_SET"]
    day1, day2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    add_review(workspace, PIDS[1], "WARNING", "first look", "ada", time=day1)
    add_review(workspace, PIDS[1], "PASS", "notch filter fixes it", "bob", time=day2)
    out = apply_reviews(auto, workspace).set_index("pid")
    assert out["auto_verdict"].tolist() == ["PASS", "FAIL", "NOT_SET"]
    assert out["final_verdict"].tolist() == ["PASS", "PASS", "NOT_SET"]
    assert out["verdict"].tolist() == out["final_verdict"].tolist()
    assert out.loc[PIDS[1], ["override_by", "override_reason"]].tolist() == ["bob", "notch filter fixes it"]
    assert out.loc[PIDS[1], "override_time"] == "2026-01-02T00:00:00.000000+00:00"
    assert out.loc[PIDS[0], ["override_by", "override_time", "override_reason"]].isna().all()
    assert out.loc[PIDS[1], "fired_rules"] == ["line_noise_warning", "line_noise_fail"]  # reasons kept
    again = apply_reviews(out.reset_index(), workspace)  # applying twice keeps the automatic verdict
    assert again["auto_verdict"].tolist() == ["PASS", "FAIL", "NOT_SET"]
    assert apply_reviews(auto, None)["final_verdict"].tolist() == ["PASS", "FAIL", "NOT_SET"]


def test_override_survives_recompute_and_reviews_file_is_untouched(workspace):
    update_verdicts(workspace)
    add_review(workspace, PIDS[2], "FAIL", "SNR unusable by eye", "ada")
    before = workspace.qc_reviews.read_bytes()
    first = update_verdicts(workspace)
    # metrics change (new raw-LF run) and verdicts are recomputed from scratch: the override is still there
    metrics = pd.read_parquet(workspace.qc_metrics)
    metrics.loc[metrics["pid"] == PIDS[2], "snr_db"] = 25.0
    write_parquet(metrics, workspace.qc_metrics)
    second = update_verdicts(workspace)
    assert workspace.qc_reviews.read_bytes() == before
    for v in (first, second):
        row = v.set_index("pid").loc[PIDS[2]]
        assert (row["final_verdict"], row["override_by"]) == ("FAIL", "ada")
    assert first.set_index("pid").loc[PIDS[2], "auto_verdict"] == "NOT_SET"
    assert second.set_index("pid").loc[PIDS[2], "auto_verdict"] == "PASS"
    on_disk = read_verdicts(workspace.qc_verdicts).set_index("pid")
    assert on_disk.loc[PIDS[2], ["auto_verdict", "final_verdict", "override_reason"]].tolist() == [
        "PASS", "FAIL", "SNR unusable by eye"]
    # same inputs, same bytes, reviews included
    bytes_before = workspace.qc_verdicts.read_bytes()
    update_verdicts(workspace)
    assert workspace.qc_verdicts.read_bytes() == bytes_before


def test_corrupt_reviews_file_names_the_line(workspace):
    add_review(workspace, PIDS[0], "PASS", "ok", "ada")
    with open(workspace.qc_reviews, "a") as f:
        f.write('{"pid": "x", "verdict": "PASS"}\n{not json\n')
    with pytest.raises(ValueError, match=r"reviews.jsonl line 2 lacks \['time', 'reviewer', 'reason'\]"):
        read_reviews(workspace)


def test_review_validates_before_it_writes(workspace):
    add_review(workspace, PIDS[0], "PASS", "fine", "ada")
    good = workspace.qc_reviews.read_bytes()
    workspace.qc_reviews.write_bytes(good + b'{"time": "2026-03-01T12:00')  # a line cut by a kill
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        add_review(workspace, PIDS[1], "PASS", "retry", "ada")
    assert workspace.qc_reviews.read_bytes() == good + b'{"time": "2026-03-01T12:00'
    workspace.qc_reviews.write_bytes(good)
    workspace.manifest_path.write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        add_review(workspace, PIDS[1], "PASS", "retry", "ada")
    assert workspace.qc_reviews.read_bytes() == good  # nothing stored, so a retry cannot duplicate it
    workspace.manifest_path.unlink()
    workspace.qc_reviews.write_bytes(good.rstrip(b"\n"))  # a hand edit dropped the last newline
    add_review(workspace, PIDS[1], "FAIL", "own line", "ada")
    assert [json.loads(line)["reason"] for line in workspace.qc_reviews.read_text().splitlines()] == ["fine",
                                                                                                  "own line"]
