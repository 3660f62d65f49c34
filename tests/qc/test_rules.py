"""QC rules file: the shipped defaults, a user's own file, and one-line validation errors naming the rule."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from one.alf.spec import QC

from ibl_ephys_data.qc.rules import (
    COMPARISONS,
    KNOWN_METRICS,
    Rule,
    default_rules_path,
    load_rules,
    parse_rules,
    resolve_rules,
)

GOOD_RULE = {
    "id": "r1", "metric": "snr_db", "comparison": "<", "threshold": 3, "severity": "WARNING",
    "rationale": "low SNR", "source": "test",
}


def write_rules(tmp_path, body: str):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_default_rules_are_versioned_complete_and_reasoned():
    rules = load_rules()
    assert default_rules_path().name == "qc_rules.yaml" and default_rules_path().is_file()
    assert rules.version == "1.1"
    ids = [r.id for r in rules.rules]
    assert len(ids) == len(set(ids))
    for rule in rules.rules:
        assert rule.metric in KNOWN_METRICS
        assert rule.comparison in COMPARISONS
        assert rule.severity in ("FAIL", "WARNING")
        assert len(rule.rationale) > 20 and rule.source
    by_id = {r.id: r for r in rules.rules}
    # Alyx qc compared numerically through one.alf.spec.QC values
    critical = by_id["alyx_qc_critical"]
    assert (critical.condition, critical.severity) == ("alyx_qc_level >= 50", "FAIL")
    assert by_id["alyx_qc_critical"].threshold == QC.CRITICAL.value
    assert (by_id["alyx_qc_fail"].threshold, by_id["alyx_qc_fail"].severity) == (QC.FAIL.value, "WARNING")
    assert by_id["alignment_unresolved"].severity == "WARNING"
    assert by_id["drift_high"].severity == "WARNING"
    # the topics the scientists asked for each have a FAIL rule
    for metric in ("line_noise_pct", "cm_burst_pct", "coburst_fraction", "saturation_pct",
                   "discontinuity_pct", "snr_db", "n_bad"):
        assert any(r.metric == metric and r.severity == "FAIL" for r in rules.rules), metric
    # thresholds far from what clean synthetic 1/f LFP gives (line ~0 %, discontinuity 0 %, bursts 0 %)
    for rule in rules.rules:
        if rule.metric in ("line_noise_pct", "discontinuity_pct", "cm_burst_pct", "saturation_pct"):
            assert rule.comparison == ">" and rule.threshold >= 0.01
    # the same content gives the same hash; the hash changes with any threshold
    assert load_rules().sha256 == rules.sha256
    edited = [{**vars_of(r), "threshold": r.threshold + 1} if r.id == "snr_fail" else vars_of(r)
              for r in rules.rules]
    changed = parse_rules({"version": rules.version, "rules": edited})
    assert changed.sha256 != rules.sha256


def vars_of(rule: Rule) -> dict:
    return {k: getattr(rule, k) for k in ("id", "metric", "comparison", "threshold", "severity", "rationale",
                                          "source", "on_missing")}


def test_user_rules_file_is_used(tmp_path):
    path = write_rules(tmp_path, """
        version: 2.1
        rules:
          - id: strict_line
            metric: line_noise_pct
            comparison: ">="
            threshold: 0.5
            severity: fail
            rationale: stricter lab policy
            source: our lab
          - id: resolved_only
            metric: alignment_resolved
            comparison: "in"
            threshold: [0]
            severity: WARNING
            rationale: want resolved alignments
            source: our lab
            on_missing: skip
    """)
    rules = resolve_rules(path)
    assert rules.version == "2.1" and rules.origin == str(path)
    strict, resolved = rules.rules
    assert (strict.severity, strict.threshold, strict.on_missing) == ("FAIL", 0.5, "NOT_SET")
    assert (resolved.threshold, resolved.on_missing) == ((0.0,), "SKIP")
    assert resolve_rules(rules) is rules
    assert rules.metrics == ["line_noise_pct", "alignment_resolved"]


def test_rule_fires_only_on_present_values():
    rule = Rule(**{**GOOD_RULE, "threshold": 3.0})
    np.testing.assert_array_equal(rule.fires([2.9, 3.0, np.nan, -1.0]), [True, False, False, True])
    member = Rule(**{**GOOD_RULE, "comparison": "not in", "threshold": (10.0, 30.0)})
    np.testing.assert_array_equal(member.fires([10, 20, np.nan]), [False, True, False])
    boolean = parse_rules({"version": 1, "rules": [{**GOOD_RULE, "metric": "tracing_exists",
                                                     "comparison": "==", "threshold": False}]}).rules[0]
    assert boolean.threshold == 0.0
    np.testing.assert_array_equal(boolean.fires([0.0, 1.0]), [True, False])


@pytest.mark.parametrize("change, message", [
    ({"metric": "snr"}, r"rule 'r1': unknown metric 'snr' \(did you mean 'snr_db'\?\)"),
    ({"comparison": "=>"}, r"rule 'r1': bad comparison '=>'"),
    ({"threshold": "high"}, r"rule 'r1': non-numeric threshold 'high'"),
    ({"threshold": None}, r"rule 'r1': non-numeric threshold None"),
    ({"threshold": [1, 2]}, r"rule 'r1': comparison '<' needs a single number threshold"),
    ({"comparison": "in", "threshold": 3}, r"rule 'r1': comparison 'in' needs a non-empty list threshold"),
    ({"comparison": "in", "threshold": [1, "x"]}, r"rule 'r1': non-numeric threshold 'x'"),
    ({"severity": "ERROR"}, r"rule 'r1': bad severity 'ERROR'; use FAIL or WARNING"),
    ({"on_missing": "ignore"}, r"rule 'r1': bad on_missing 'ignore'"),
    ({"thresold": 3}, r"rule 'r1': unknown key\(s\) \['thresold'\]"),
    ({"rationale": " "}, r"rule 'r1': 'rationale' must be a non-empty text"),
])
def test_validation_error_is_one_line_naming_the_rule(tmp_path, change, message):
    rule = {**GOOD_RULE, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"version": "1", "rules": [{**GOOD_RULE, "id": "ok"}, rule]}))
    with pytest.raises(ValueError, match=message) as err:
        load_rules(path)
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_missing_key_duplicate_id_and_file_level_errors(tmp_path):
    without_source = {k: v for k, v in GOOD_RULE.items() if k != "source"}
    cases = [
        ({"version": "1", "rules": [without_source]}, r"rule 'r1': missing key\(s\) \['source'\]"),
        ({"version": "1", "rules": [GOOD_RULE, GOOD_RULE]}, r"rule 'r1': duplicate id"),
        ({"version": "1", "rules": [{**GOOD_RULE, "id": ""}]}, r"rule #1: missing or empty 'id'"),
        ({"rules": [GOOD_RULE]}, r"missing 'version' key"),
        ({"version": "1", "rules": []}, r"'rules' must be a non-empty list"),
        ({"version": "1", "rules": [GOOD_RULE], "extra": 1}, r"unknown top-level key\(s\) \['extra'\]"),
    ]
    for doc, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            parse_rules(doc, origin="x.yaml")
        assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")
    broken = write_rules(tmp_path, "version: 1\nrules: [\n")
    with pytest.raises(ValueError, match="not valid YAML") as err:
        load_rules(broken)
    assert "\n" not in str(err.value)


def test_every_default_threshold_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "qc.md").read_text()
    for r in load_rules().rules:
        if r.id.startswith("prescreen_"):  # paired rules share one row: `metric > 1` / `> 5`
            rows = [line for line in doc.splitlines() if line.startswith("| `prescreen")]
            row = next(line for line in rows if r.metric in line)
            assert f"{r.comparison} {r.threshold:g}`" in row and r.severity in row, r.id
        else:
            assert f"| `{r.id}` | `{r.condition}` | {r.severity} | {r.on_missing} |" in doc, r.id


# ---- per-window artifact flags: thresholds beside the rules, rules on the flagged share ------------------------
def test_window_flags_sit_beside_the_rules_and_are_validated(tmp_path):
    from ibl_ephys_data.lfp.artifacts import default_thresholds
    from ibl_ephys_data.qc.rules import read_window_flags

    values, origin = read_window_flags()
    assert origin == str(default_rules_path()) and values["saturation_level"] == 0.96
    assert {r.metric for r in load_rules().rules} >= {"flagged_window_pct"}
    with_flags = write_rules(tmp_path, f"""
        version: "1"
        rules: [{json.dumps(GOOD_RULE)}]
        window_flags: {json.dumps({**values, "step_mads": 6})}
        """)
    assert load_rules(with_flags).rules[0].id == "r1"  # the rules parser accepts the window_flags mapping
    assert default_thresholds(str(with_flags)).step_mads == 6.0
    without = write_rules(tmp_path, f"""
        version: "1"
        rules: [{json.dumps(GOOD_RULE)}]
        """)
    with pytest.raises(ValueError, match="no 'window_flags' mapping"):
        read_window_flags(without)
    broken = write_rules(tmp_path, f"""
        version: "1"
        rules: [{json.dumps(GOOD_RULE)}]
        window_flags: {json.dumps({**values, "flat_seconds": "ten ms"})}
        """)
    with pytest.raises(ValueError, match=r"window_flags.flat_seconds: non-numeric threshold 'ten ms'"):
        read_window_flags(broken)


def test_verdicts_change_when_planted_events_fall_in_exported_windows(qc_workspace, demo_store):
    """The demo's seeded events are judged by the flagged share of the stored LFP, wherever QC's snippets are.

    Without the lfp stage's intervals (flagged_window_pct missing, as before per-window QC), an insertion
    is judged on its snippets only; with them, every insertion whose events fall in the stored windows gains
    flagged_windows_fail, and a clean insertion given the same flagged share turns FAIL.
    """
    from ibl_ephys_data.demo.layout import INSERTIONS
    from ibl_ephys_data.demo.store import GROUND_TRUTH
    from ibl_ephys_data.qc.verdicts import compute_verdicts

    ws, _ = qc_workspace
    metrics = pd.read_parquet(ws.qc_metrics)
    events = json.loads((demo_store / GROUND_TRUTH).read_text())["events"]
    planted = {e["pid"] for e in events}
    assert planted == {i.pid for i in INSERTIONS if i.artifact or i.defects}
    with_flags = compute_verdicts(metrics).set_index("pid")
    without = compute_verdicts(metrics.assign(flagged_window_pct=np.nan)).set_index("pid")
    for pid in metrics["pid"]:
        fired = set(with_flags.loc[pid, "fired_rules"])
        assert ("flagged_windows_fail" in fired) == (pid in planted), (pid, fired)
        assert "flagged_windows_fail" not in set(without.loc[pid, "fired_rules"])
    clean = [i.pid for i in INSERTIONS if not (i.artifact or i.defects) and i.alyx_json["qc"] == "PASS"]
    assert (with_flags.loc[clean, "verdict"] == "PASS").all()
    share = metrics.set_index("pid").loc[sorted(planted), "flagged_window_pct"].min()
    moved = compute_verdicts(metrics[metrics["pid"].isin(clean)].assign(flagged_window_pct=share))
    assert (moved["verdict"] == "FAIL").all() and moved["fired_rules"].map(set).eq(
        {"flagged_windows_warning", "flagged_windows_fail"}).all()
