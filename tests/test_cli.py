"""The command line: one clear line and exit code 2 for bad input; no credential ever written down."""

import pandas as pd
from typer.testing import CliRunner

from ibl_ephys_data.cli import app
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.store import DEMO_PASSWORD

runner = CliRunner()


def _run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


def test_bad_pid_files(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("probe\nabc\n")
    line = _one_error_line(_run("catalog", "-w", str(tmp_path / "ws"), "--pid-csv", str(csv), "--offline"))
    assert "no 'pid' column" in line
    csv.write_text("pid\nabc\n")
    assert "not UUIDs" in _one_error_line(_run("catalog", "-w", str(tmp_path / "ws"), "--pid-csv", str(csv)))
    assert not (tmp_path / "ws" / "catalog.parquet").exists()


def test_unknown_release(tmp_path):
    line = _one_error_line(_run("catalog", "-w", str(tmp_path / "ws"), "--release", "brainwide"))
    assert "release='brainwide' is not one of" in line and "bwm" in line


def test_unreachable_and_wrong_credentials(tmp_path, alyx_server):
    env = {"ALYX_LOGIN": "demo", "ALYX_PASSWORD": "wrong-password-123"}
    args = ["catalog", "-w", str(tmp_path / "ws"), "--release", "bwm", "--one-cache", str(tmp_path / "c")]
    assert "cannot reach Alyx" in _one_error_line(_run(*args, "--alyx-url", "http://127.0.0.1:9", env=env))
    line = _one_error_line(_run(*args, "--alyx-url", alyx_server.url, env=env))
    assert "refused the credentials" in line and "wrong-password-123" not in line
    assert not (tmp_path / "ws" / "catalog.parquet").exists()


def test_unknown_pid_is_reported_and_credentials_never_written(tmp_path, alyx_server):
    ws = tmp_path / "ws"
    csv = tmp_path / "pids.csv"
    unknown = "11111111-2222-4333-8444-555555555555"
    pd.DataFrame({"pid": [INSERTIONS[2].pid, unknown]}).to_csv(csv, index=False)
    env = {"ALYX_LOGIN": "demo", "ALYX_PASSWORD": DEMO_PASSWORD}
    common = ["-w", str(ws), "--alyx-url", alyx_server.url, "--one-cache", str(tmp_path / "one"),
              "--http-data-server", alyx_server.data_url]
    result = _run("catalog", "--pid-csv", str(csv), *common, env=env)
    assert result.exit_code == 1, result.output  # one requested insertion failed: the exit code says so
    assert unknown in result.output and "not found" in result.output
    assert _run("channels", *common, env=env).exit_code == 0
    assert pd.read_parquet(ws / "channels.parquet")["pid"].unique().tolist() == [INSERTIONS[2].pid]
    tokens = list(alyx_server.tokens)
    assert tokens
    for f in [*ws.rglob("*"), *(tmp_path / "one").rglob("*")]:
        if f.is_file():
            data = f.read_bytes()
            assert DEMO_PASSWORD.encode() not in data, f
            assert not any(t.encode() in data for t in tokens), f


def test_import_channels_and_coverage_commands(demo_workspace, tmp_path):
    import shutil

    src, _ = demo_workspace
    ws = tmp_path / "ws"
    shutil.copytree(src.root, ws)
    csv = tmp_path / "allen.csv"
    pd.DataFrame({
        "id": [1, 2, 3], "ecephys_probe_id": [10, 10, 10], "ecephys_session_id": [7, 7, 7],
        "anterior_posterior_ccf_coordinate": [8000.0, 8100.0, 8200.0],
        "dorsal_ventral_ccf_coordinate": [2000.0, 2100.0, 2200.0],
        "left_right_ccf_coordinate": [8000.0, 8000.0, 8000.0],
        "ecephys_structure_id": [382, 382, None], "ecephys_structure_acronym": ["CA1", "CA1", None],
    }).to_csv(csv, index=False)
    result = _run("import-channels", str(csv), "--source", "allen-vc", "-w", str(ws))
    assert result.exit_code == 0, result.output
    stored = pd.read_parquet(ws / "external_channels.parquet")
    assert len(stored) == 2 and (stored["ccf_ml_um"] == 8000.0).all()
    result = _run("coverage", "-w", str(ws), "--level", "beryl")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(ws / "coverage.parquet")
    assert table.loc[(table["source"] == "allen-vc") & (table["region"] == "CA1"), "n_channels"].item() == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    line = _one_error_line(_run("import-channels", str(bad), "--source", "x", "-w", str(ws)))
    assert "ccf_ap_um" in line
