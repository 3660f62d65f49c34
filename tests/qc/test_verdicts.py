"""Verdicts from hand-made metrics tables: combination, NOT_SET, reasons, determinism, usable channels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from verdict_files import read_verdicts

from ibl_ephys_data.qc.rules import parse_rules
from ibl_ephys_data.qc.verdicts import (
    alyx_metrics,
    channel_counts,
    channel_usable,
    compute_verdicts,
    update_verdicts,
    write_verdicts,
)
from ibl_ephys_data.workspace import Workspace, write_parquet


def rule(rid, metric, comparison, threshold, severity, **extra):
    return {"id": rid, "metric": metric, "comparison": comparison, "threshold": threshold,
            "severity": severity, "rationale": "test rule", "source": "test", **extra}


RULES = parse_rules({"version": "t1", "rules": [
    rule("line_warn", "line_noise_pct", ">", 1, "WARNING"),
    rule("line_fail", "line_noise_pct", ">", 5, "FAIL"),
    rule("drift_warn", "drift_rms_um", ">", 20, "WARNING"),
    rule("critical", "alyx_qc_level", ">=", 50, "FAIL"),
    rule("prescreen_line", "prescreen_line_noise_pct", ">", 5, "FAIL", on_missing="SKIP"),
]})

# Clean values of every default-rule metric: qc.metrics on synthetic demo LFP, and a healthy insertion
CLEAN = {
    "alyx_qc_level": 10.0, "tracing_exists": 1.0, "alignment_resolved": 1.0, "drift_rms_um": 12.1,
    "snr_db": 28.5, "power_cv": 0.28, "line_noise_pct": 0.014, "line_f0_hz": 60.0, "spectral_slope": -1.6,
    "discontinuity_pct": 0.0, "cm_burst_pct": 0.0, "striping_ratio": 0.77, "coburst_fraction": 0.0,
    "saturation_pct": 0.0, "n_dead": 1, "n_noisy": 2, "n_outside": 40,
}


def table(rows: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([{"pid": pid, **values} for pid, values in rows.items()])


def test_fail_beats_warning_and_reasons_carry_values():
    metrics = table({
        "p_fail": {"line_noise_pct": 7.25, "drift_rms_um": 31.0, "alyx_qc_level": 10},
        "p_warn": {"line_noise_pct": 2.0, "drift_rms_um": 5.0, "alyx_qc_level": 40},
        "p_pass": {"line_noise_pct": 0.1, "drift_rms_um": 5.0, "alyx_qc_level": 10},
        "p_crit": {"line_noise_pct": 0.1, "drift_rms_um": 5.0, "alyx_qc_level": 50},
    })
    v = compute_verdicts(metrics, RULES).set_index("pid")
    assert v["verdict"].to_dict() == {"p_crit": "FAIL", "p_fail": "FAIL", "p_pass": "PASS",
                                      "p_warn": "WARNING"}
    assert v.loc["p_fail", "fired_rules"] == ["line_warn", "line_fail", "drift_warn"]  # rule-file order
    assert v.loc["p_fail", "reasons"] == [
        "line_warn (WARNING): line_noise_pct = 7.25, rule line_noise_pct > 1",
        "line_fail (FAIL): line_noise_pct = 7.25, rule line_noise_pct > 5",
        "drift_warn (WARNING): drift_rms_um = 31, rule drift_rms_um > 20",
    ]
    # severities and metrics of the fired rules are data, element by element with fired_rules
    assert v.loc["p_fail", "fired_severities"] == ["WARNING", "FAIL", "WARNING"]
    assert v.loc["p_fail", "fired_metrics"] == ["line_noise_pct", "line_noise_pct", "drift_rms_um"]
    assert v.loc["p_crit", "fired_rules"] == ["critical"]
    assert v.loc["p_pass", "fired_rules"] == [] and v.loc["p_pass", "reasons"] == []
    assert v.loc["p_pass", "fired_severities"] == [] and v.loc["p_pass", "fired_metrics"] == []
    assert v.loc["p_pass", "skipped_rules"] == ["prescreen_line"]  # optional input absent: reported, no block
    assert set(v["rules_version"]) == {"t1"} and set(v["rules_sha256"]) == {RULES.sha256}
    assert list(v.index) == sorted(v.index)


def test_missing_inputs_give_not_set_unless_the_outcome_is_already_decided():
    nan = np.nan
    metrics = table({
        "a_nothing_fired": {"line_noise_pct": nan, "drift_rms_um": 5.0, "alyx_qc_level": 10},
        "b_fail_fired": {"line_noise_pct": nan, "drift_rms_um": 5.0, "alyx_qc_level": 50},
        "c_warn_fired_fail_missing": {"line_noise_pct": nan, "drift_rms_um": 25.0, "alyx_qc_level": 10},
        "d_warn_fired_warn_missing": {"line_noise_pct": 0.5, "drift_rms_um": nan, "alyx_qc_level": 40},
        "e_only_warn_missing": {"line_noise_pct": 0.5, "drift_rms_um": nan, "alyx_qc_level": 10},
    })
    rules = parse_rules({"version": "t2", "rules": [
        *(vars(x) for x in RULES.rules),
        rule("alyx_fail_warn", "alyx_qc_level", "==", 40, "WARNING"),
    ]})
    v = compute_verdicts(metrics, rules).set_index("pid")
    assert v["verdict"].to_dict() == {
        "a_nothing_fired": "NOT_SET",  # the missing line noise could still FAIL it
        "b_fail_fired": "FAIL",  # already FAIL whatever the missing input says
        "c_warn_fired_fail_missing": "NOT_SET",  # WARNING so far, but a FAIL rule could not be checked
        "d_warn_fired_warn_missing": "WARNING",  # the missing input could at worst add another WARNING
        "e_only_warn_missing": "NOT_SET",  # never a silent PASS
    }
    assert v.loc["a_nothing_fired", "missing_rules"] == ["line_warn", "line_fail"]
    assert v.loc["a_nothing_fired", "reasons"][1] == (
        "line_fail (NOT_SET): line_noise_pct is missing, needed for line_noise_pct > 5 (FAIL)")
    assert v.loc["c_warn_fired_fail_missing", "fired_rules"] == ["drift_warn"]
    # a metric column absent from the table is missing for every insertion
    v2 = compute_verdicts(table({"x": {"alyx_qc_level": 10}}), RULES)
    assert v2.loc[0, "verdict"] == "NOT_SET"
    assert v2.loc[0, "missing_rules"] == ["line_warn", "line_fail", "drift_warn"]


def test_default_rules_pass_clean_and_ibl_example_and_fail_planted_defects():
    ibl_example = {**CLEAN, "drift_rms_um": 0.43, "snr_db": 10.23, "power_cv": 1.49, "line_noise_pct": 0.09,
                   "spectral_slope": -2.64, "discontinuity_pct": 0.0}  # reference/qc_metrics_example.png
    metrics = table({
        "clean": CLEAN,
        "ibl_example": ibl_example,
        "line": {**CLEAN, "line_noise_pct": 20.6},
        "burst": {**CLEAN, "cm_burst_pct": 5.0, "coburst_fraction": 1.0, "alyx_qc_level": 40.0,
                  "alignment_resolved": 0.0, "drift_rms_um": 31.0},
        "saturation": {**CLEAN, "saturation_pct": 0.5, "discontinuity_pct": 0.5, "alignment_resolved": np.nan,
                       "drift_rms_um": np.nan},
        "critical": {**CLEAN, "alyx_qc_level": 50.0},
        "bad_channels": {**CLEAN, "n_dead": 60, "n_noisy": 40},
    })
    v = compute_verdicts(metrics).set_index("pid")
    assert v.loc["clean", "verdict"] == "PASS" and v.loc["clean", "reasons"] == []
    assert v.loc["ibl_example", "verdict"] == "PASS"
    assert v.loc["line", "fired_rules"] == ["line_noise_warning", "line_noise_fail"]
    assert v.loc["burst", "verdict"] == "FAIL"
    assert v.loc["burst", "fired_rules"] == ["alyx_qc_fail", "alignment_unresolved", "drift_high",
                                            "coburst_warning", "coburst_fail"]
    assert v.loc["saturation", "verdict"] == "FAIL"  # FAIL beats the NOT_SET of its missing Alyx fields
    assert v.loc["saturation", "fired_rules"] == ["discontinuity_warning", "discontinuity_fail",
                                                 "saturation_warning", "saturation_fail"]
    assert v.loc["saturation", "missing_rules"] == ["alignment_unresolved", "drift_high"]
    assert v.loc["critical", "fired_rules"] == ["alyx_qc_critical"]
    # n_bad is derived as n_dead + n_noisy = 100 > 96
    assert v.loc["bad_channels", "fired_rules"] == ["bad_channels_warning", "bad_channels_fail"]
    assert "n_bad = 100" in v.loc["bad_channels", "reasons"][1]


def test_verdicts_parquet_is_byte_identical_on_rerun(tmp_path):
    rows = {f"pid{i:02d}": {**CLEAN, "line_noise_pct": float(i)} for i in range(12)}
    metrics = table(rows)
    first = write_verdicts(compute_verdicts(metrics), tmp_path / "a" / "verdicts.parquet")
    shuffled = metrics.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = write_verdicts(compute_verdicts(shuffled), tmp_path / "b" / "verdicts.parquet")
    assert first.read_bytes() == second.read_bytes()
    back = read_verdicts(first)
    assert back["verdict"].tolist()[:3] == ["PASS", "PASS", "WARNING"]
    assert back.loc[6, "fired_rules"] == ["line_noise_warning", "line_noise_fail"]
    assert b"time" not in first.read_bytes().lower().replace(b"override_time", b"")
    # all-empty list columns keep their string type: same schema as a run where rules fired
    clean_only = write_verdicts(compute_verdicts(table({"p": CLEAN})), tmp_path / "c.parquet")
    assert pq.read_schema(clean_only) == pq.read_schema(first)


def test_alyx_metrics_from_catalog():
    catalog = pd.DataFrame({
        "pid": ["c", "a", "b", "d"],
        "qc": ["CRITICAL", "PASS", None, "warning"],
        "alignment_resolved": pd.array([True, False, None, True], dtype="boolean"),
        "tracing_exists": pd.array([True, True, None, False], dtype="boolean"),
        "alignment_count": pd.array([3, 1, None, 2], dtype="Int64"),
        "alignment_qc": ["0.93", None, "high", "1.0"],
        "drift_rms_um": [0.43, 25.0, np.nan, 1.0],
        "experimenter_raw_destripe": ["pass", None, "FAIL: noisy reference", "nonsense"],
    })
    m = alyx_metrics(catalog).set_index("pid")
    assert list(m.index) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(m["alyx_qc_level"], [10, np.nan, 50, 30])
    np.testing.assert_array_equal(m["alignment_resolved"], [0, np.nan, 1, 1])
    np.testing.assert_array_equal(m["tracing_exists"], [1, np.nan, 1, 0])
    np.testing.assert_array_equal(m["alignment_count"], [1, np.nan, 3, 2])
    np.testing.assert_array_equal(m["alignment_qc"], [np.nan, np.nan, 0.93, 1.0])
    np.testing.assert_array_equal(m["experimenter_raw_destripe_level"], [np.nan, 40, 10, np.nan])
    assert m["n_units"].isna().all()  # absent column: missing, not zero
    v = compute_verdicts(m.reset_index()).set_index("pid")
    assert v.loc["c", "fired_rules"][0] == "alyx_qc_critical" and v.loc["c", "verdict"] == "FAIL"
    assert "tracing_missing" in v.loc["d", "fired_rules"]
    assert "experimenter_destripe_fail" in v.loc["b", "fired_rules"]


def test_channel_counts_and_usable_flags():
    channels = pd.DataFrame({
        "pid": ["p1"] * 5 + ["p2"] * 2 + ["p3"] * 2,
        "raw_ind": [4, 0, 1, 2, 3, 0, 1, 0, 1],
        "bad_channel_label": pd.array([0, 0, 1, 2, 3, 0, 0, 0, None], dtype="Int8"),
        "acronym": ["CA1", "void", "CA1", "CA1", "root", "PO", "PO", "LP", "LP"],
        "atlas_id": [382, 0, 382, 382, 997, 1020, 1020, 218, 218],
    })
    counts = channel_counts(channels).set_index("pid")
    columns = ["n_channels", "n_dead", "n_noisy", "n_outside", "n_bad"]
    assert counts.loc["p1", columns].tolist() == [5, 1, 1, 1, 2]
    assert counts.loc["p3", ["n_dead", "n_bad"]].isna().all()  # a label still unset: counts missing
    verdicts = pd.DataFrame({"pid": ["p1", "p2"], "verdict": ["PASS", "PASS"],
                             "final_verdict": ["WARNING", "FAIL"]})
    u = channel_usable(channels, verdicts)
    assert list(zip(u["pid"], u["raw_ind"], strict=True))[:5] == [("p1", 0), ("p1", 1), ("p1", 2), ("p1", 3),
                                                                   ("p1", 4)]
    assert u["usable"].tolist() == [False, False, False, False, True, False, False, False, False]
    reasons = u["unusable_reason"].tolist()
    assert reasons[0] == "outside the brain (atlas void)"
    assert reasons[1] == "dead channel (label 1)" and reasons[2] == "noisy channel (label 2)"
    assert reasons[3] == "outside brain channel (label 3)" and reasons[4] == ""
    assert reasons[5] == "insertion verdict FAIL"  # the human's final verdict counts
    assert reasons[7] == "no insertion verdict"
    assert reasons[8] == "no bad-channel label (run the lfp stage); no insertion verdict"


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="duplicated pid"):
        compute_verdicts(table({"a": CLEAN}).pipe(lambda d: pd.concat([d, d])), RULES)
    with pytest.raises(ValueError, match="'pid' column"):
        compute_verdicts(pd.DataFrame({"snr_db": [1.0]}), RULES)
    with pytest.raises(ValueError, match="metrics column 'line_noise_pct' has non-numeric value 'high'"):
        compute_verdicts(table({"a": {"line_noise_pct": "high"}}), RULES)
    with pytest.raises(ValueError, match=r"channels table lacks column\(s\) \['bad_channel_label'\]"):
        channel_usable(pd.DataFrame({"pid": ["a"], "raw_ind": [0]}), pd.DataFrame({"pid": [], "verdict": []}))


def test_update_verdicts_stage_writes_parquet_and_manifest(tmp_path):
    ws = Workspace(tmp_path / "ws").create()
    with pytest.raises(FileNotFoundError, match="metrics.parquet does not exist"):
        update_verdicts(ws)
    write_parquet(table({"p1": CLEAN, "p2": {**CLEAN, "line_noise_pct": 9.0}}), ws.qc_metrics)
    v = update_verdicts(ws)
    assert v["final_verdict"].tolist() == ["PASS", "FAIL"]
    assert read_verdicts(ws.qc_verdicts)["verdict"].tolist() == ["PASS", "FAIL"]
    manifest = json.loads(ws.manifest_path.read_text())
    assert manifest["stages"]["qc_verdicts"]["parameters"]["rules_version"] == "1.1"
    assert manifest["pids"]["p2"]["qc_verdicts"]["verdict"] == "FAIL"
