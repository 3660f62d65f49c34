"""The `baseline` command and the report fragment, on the fake workspace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataset"))

from fake_workspace import build_fake_workspace  # noqa: E402

from ibl_ephys_data.baseline.report import baseline_section  # noqa: E402
from ibl_ephys_data.cli import app  # noqa: E402
from ibl_ephys_data.dataset import export_dataset  # noqa: E402

NAMES = ["b_free1", "b_free2", "b_free3", "b_subj1", "r_new", "r_subj"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = build_fake_workspace(tmp_path_factory.mktemp("baseline-cli") / "ws", names=NAMES)
    export_dataset(ws, min_channels=2)
    return ws


def test_command_prints_the_table_and_writes_the_outputs(ws):
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(ws.root), "--no-depth", "--bootstrap", "50",
                                      "--seed", "3"])
    assert result.exit_code == 0, result.output
    stored = json.loads((ws.dataset_dir / "baseline" / "baseline.json").read_text())
    assert stored["parameters"]["depth"] is False and stored["parameters"]["seed"] == 3
    assert "depth_um" not in stored["parameters"]["features"]
    assert f"**{stored['main']['balanced_accuracy']:.3f} [" in result.output
    for row in ("chance: majority class", "(a) training labels permuted", "(b) trained on the pid-level split",
                "(c) depth only", "(c) band powers only", "(d) lab from the same features"):
        assert row in result.output and row in (ws.dataset_dir / "DATA_CARD.md").read_text()


def test_bad_option_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tmp_path / "ws"), "--bootstrap", "0"])
    assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.splitlines()) == 1
    result = CliRunner().invoke(app, ["baseline", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "ibl-ephys-data export" in result.output


def test_report_fragment(ws, tmp_path):
    html = baseline_section(ws, tmp_path)
    for name in ("confusion", "recall"):
        assert (tmp_path / "figures" / "baseline" / f"{name}.png").stat().st_size > 5_000
        assert f'src="figures/baseline/{name}.png"' in html
    assert '<h2 id="baseline">' in html and "<table>" in html and "(d) lab from the same features" in html
    missing = baseline_section(build_fake_workspace(tmp_path / "other", names=NAMES[:2]), tmp_path / "r")
    assert "ibl-ephys-data baseline --workspace" in missing and not (tmp_path / "r").exists()
