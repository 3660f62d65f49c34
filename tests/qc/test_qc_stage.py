"""The qc stage on the demo store: planted problems FAIL for the right reasons, clean insertions PASS."""

import shutil

import pandas as pd
from typer.testing import CliRunner

from ibl_ephys_data.cli import app
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.run import demo_connection
from ibl_ephys_data.qc.reviews import add_review
from ibl_ephys_data.qc.stage import run_qc
from ibl_ephys_data.workspace import Workspace

EXPECTED_FAIL_RULES = {"line_noise": "line_noise_fail", "burst": "coburst_fail", "saturation": "saturation_fail"}


def test_planted_problems_fail_with_the_right_rules(qc_workspace):
    ws, _ = qc_workspace
    verdicts = pd.read_parquet(ws.qc_verdicts).set_index("pid")
    for ins in INSERTIONS:
        row = verdicts.loc[ins.pid]
        fired = set(row["fired_rules"])
        if ins.artifact:
            assert row["final_verdict"] == "FAIL" and EXPECTED_FAIL_RULES[ins.artifact] in fired, (ins, fired)
        elif ins.alyx_json["qc"] == "CRITICAL":
            assert row["final_verdict"] == "FAIL" and "alyx_qc_critical" in fired, fired
        if ins.artifact or ins.defects:  # the demo's seeded defects lie in the stored (exported) LFP
            assert "flagged_windows_fail" in fired, (ins.pid, fired)
        if not (ins.artifact or ins.defects or ins.alyx_json["qc"] == "CRITICAL"):
            assert row["final_verdict"] == "PASS" and not fired, (ins.pid, fired, list(row["reasons"]))
    # the reasons carry the values that fired the rules
    line = next(i for i in INSERTIONS if i.artifact == "line_noise")
    assert any("line_noise_pct" in r for r in verdicts.loc[line.pid, "reasons"])


def test_metrics_and_usable_channels(qc_workspace):
    ws, _ = qc_workspace
    metrics = pd.read_parquet(ws.qc_metrics).set_index("pid")
    line = next(i for i in INSERTIONS if i.artifact == "line_noise")
    assert metrics.loc[line.pid, "line_f0_hz"] == 60.0
    clean = [i.pid for i in INSERTIONS if not i.artifact and i.alyx_json["qc"] == "PASS"]
    assert (metrics.loc[clean, "line_noise_pct"] < 1).all()
    # pre-screen from IBL's small LF QC datasets agrees with the raw-LF metrics on clean recordings
    # (reached: SNR within ~1 dB, slope within 0.1, line-noise ratio within ~5 %)
    assert (metrics.loc[clean, "prescreen_snr_db"] - metrics.loc[clean, "snr_db"]).abs().max() < 1.5
    assert (metrics.loc[clean, "prescreen_spectral_slope"] - metrics.loc[clean, "spectral_slope"]).abs().max() < 0.15
    assert abs(metrics.loc[line.pid, "prescreen_line_noise_pct"] / metrics.loc[line.pid, "line_noise_pct"] - 1) < 0.15
    channels = pd.read_parquet(ws.qc_channel_metrics)
    verdicts = pd.read_parquet(ws.qc_verdicts).set_index("pid")
    failed = verdicts.index[verdicts["final_verdict"] == "FAIL"]
    assert not channels.loc[channels["pid"].isin(failed), "usable"].any()
    labels = ws.read_channels().set_index(["pid", "raw_ind"])["bad_channel_label"]
    ok = channels.set_index(["pid", "raw_ind"])
    passed = ok[~ok.index.get_level_values("pid").isin(failed)]
    assert (passed["usable"] == (labels.loc[passed.index] == 0)).all()


def test_rerun_is_byte_identical_and_reviews_survive(qc_workspace, alyx_server, tmp_path):
    src, one_cache = qc_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    first = ws.qc_verdicts.read_bytes()
    with demo_connection(alyx_server, one_cache).session() as one:
        run_qc(ws, one)
    assert ws.qc_verdicts.read_bytes() == first
    pid = next(i.pid for i in INSERTIONS if i.alyx_json["qc"] == "CRITICAL")
    add_review(ws, pid, "PASS", "critical flag was a data-entry error", "reviewer@lab")
    with demo_connection(alyx_server, one_cache).session() as one:
        run_qc(ws, one)
    row = pd.read_parquet(ws.qc_verdicts).set_index("pid").loc[pid]
    assert (row["auto_verdict"], row["final_verdict"], row["override_by"]) == ("FAIL", "PASS", "reviewer@lab")
    assert "data-entry" in row["override_reason"]


def test_cli_review_show_and_bad_rules(qc_workspace, tmp_path):
    src, _ = qc_workspace
    ws = tmp_path / "ws"
    shutil.copytree(src.root, ws)
    runner = CliRunner()
    result = runner.invoke(app, ["qc", "review", "11111111-2222-4333-8444-555555555555", "--verdict", "PASS",
                                 "--reason", "x", "--reviewer", "me", "-w", str(ws)])
    assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.splitlines()) == 1
    pid = INSERTIONS[1].pid
    result = runner.invoke(app, ["qc", "show", pid, "-w", str(ws), "--png", str(tmp_path / "panel.png")])
    assert result.exit_code == 0, result.output
    assert "line_noise_fail" in result.output and (tmp_path / "panel.png").stat().st_size > 10_000
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - {id: r1, metric: snr_db, comparison: '=>', threshold: 3, "
                     "severity: FAIL, rationale: x, source: y}\n")
    result = runner.invoke(app, ["qc", "--rules", str(rules), "-w", str(ws), "--offline"])
    assert result.exit_code == 2 and "r1" in result.output and len(result.output.splitlines()) == 1
