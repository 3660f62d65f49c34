"""LfpStore: the layout contract, the probe encodings, old-layout detection and `migrate`."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from ibl_ephys_data.cli import app
from ibl_ephys_data.workspace.lfp_store import (
    CHUNK_SAMPLES,
    MAX_FILES,
    MAX_RMS_ERROR,
    Encoding,
    LfpStore,
    ShardReader,
    migrate,
    shard_samples,
)

ATTRS = {"fs": 1250.0, "units": "uV", "raw_ind": list(range(6)), "windows": [{"offset": 0, "n_samples": 9000}],
         "params": {"dtype": "float32", "spec": {"dtype": "float32", "n_snippets": 4}},
         "processing": {"adc_shift": True}}


def _legacy(root, pid, data, **extra):
    group = zarr.open_group(str(root / pid), mode="w", zarr_format=2)
    group.create_array("lfp", data=data, chunks=(1, 2048), compressors=None)
    group.create_array("common_mode", data=data[0] / 2, chunks=(2048,), compressors=None)
    group.attrs.update({**ATTRS, **extra, "complete": True})


@pytest.fixture()
def lfp(tmp_path):
    # LFP-like: 1/f-ish (integrated noise, high-passed by differencing the drift) at tens of µV
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((6, 9000)), axis=1)
    data = (walk - np.convolve(walk[0], np.ones(250) / 250, mode="same")) * 4 + rng.standard_normal((6, 9000)) * 20
    return data.astype(np.float32)


def test_probe_encodings_are_a_fraction_of_the_adc_step():
    np1 = Encoding.for_probe("int16", 1)
    assert np1.scale == pytest.approx(0.6 / 512 / 250 * 1e6 / 20)  # 4.6875 µV / 20
    np2 = Encoding.for_probe("int16", 2.4)
    assert np2.scale == pytest.approx(0.62 / 8192 / 80 * 1e6 / 10)
    assert Encoding.for_probe("int16", 1, step_uv=2.34375).scale == pytest.approx(2.34375 / 20)  # gain 500
    assert Encoding.for_probe("float32", 1) == Encoding("float32", 1.0, 0.0)
    stored, clipped = np1.encode(np.array([0.0, 0.1, -0.2, 1e4, -1e4], dtype=np.float32))
    assert stored.tolist() == [0, 0, -1, 32767, -32767] and clipped == 2


def test_an_insertion_stays_within_max_files_however_long():
    for seconds in (240, 3600, 4 * 3600):
        n = int(seconds * 1250)
        assert -(-n // shard_samples(n)) + 4 <= MAX_FILES
    assert shard_samples(1000) == CHUNK_SAMPLES * 8


def test_old_layout_is_detected_in_one_line_and_counts_as_done(tmp_path, lfp, caplog):
    root = tmp_path / "lfp.zarr"
    _legacy(root, "p", lfp)
    store = LfpStore(root)
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data"):
        assert store.kind("p") == "v2" and store.kind("p") == "v2"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "old layout" in line and "ibl-ephys-data migrate" in line
    # same processing, other storage dtype: read as it is, not silently recomputed
    assert store.is_done("p", {"dtype": "int16", "n_snippets": 4})
    assert not store.is_done("p", {"dtype": "int16", "n_snippets": 5})
    np.testing.assert_array_equal(store.open("p").lfp(rows=slice(1, 3), samples=slice(10, 5000)),
                                  lfp[1:3, 10:5000])


def test_migrate_converts_in_place_with_the_error_recorded(tmp_path, lfp):
    root = tmp_path / "lfp.zarr"
    _legacy(root, "p", lfp)
    _legacy(root, "q", lfp[::-1].copy())
    old_bytes = sum(f.stat().st_size for f in (root / "p").rglob("*") if f.is_file())
    (root / "q" / "lfp" / "3.1").unlink()  # damaged: reported, left as it is
    result = migrate(root)
    assert result["p"]["status"] == "done" and result["q"]["status"] == "failed"
    assert "3.1 is missing" in result["q"]["reason"] and LfpStore(root).kind("q") == "v2"
    store = LfpStore(root)
    assert store.kind("p") == "v3" and store.problems("p") == []
    assert isinstance(store.open("p").reader(), ShardReader)
    attrs = store.attrs("p")
    assert attrs["migrated_from"] == "zarr v2 float32" and attrs["fs"] == 1250.0
    assert attrs["params"]["dtype"] == attrs["params"]["spec"]["dtype"] == "int16"
    assert store.is_done("p", {"dtype": "int16", "n_snippets": 4})
    ins = store.open("p")
    got = ins.lfp()
    scale = ins.encoding()["scale"]
    assert np.abs(got - lfp).max() <= scale / 2 * (1 + 1e-5)  # half a unit; float32 rounding on top
    rel = np.sqrt(np.mean((got.astype(np.float64) - lfp) ** 2) / np.mean(lfp.astype(np.float64) ** 2))
    assert rel <= MAX_RMS_ERROR and ins.encoding()["rms_error_rel"] == pytest.approx(rel, rel=1e-3)
    np.testing.assert_allclose(ins.common_mode(), lfp[0] / 2, atol=scale / 2 * (1 + 1e-5))
    new_bytes = sum(f.stat().st_size for f in (root / "p").rglob("*") if f.is_file())
    assert new_bytes * 2 < old_bytes  # int16 alone halves float32; shuffle + lz4 gain more on real LFP
    assert migrate(root, pids=["p"])["p"]["status"] == "skipped"


def test_migrate_command(tmp_path, lfp):
    ws = tmp_path / "ws"
    _legacy(ws / "lfp.zarr", "p", lfp)
    result = CliRunner().invoke(app, ["migrate", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    assert LfpStore(ws / "lfp.zarr").kind("p") == "v3"
    result = CliRunner().invoke(app, ["migrate", "--workspace", str(ws), "--dtype", "int8"])
    assert result.exit_code == 2 and "int8" in result.output
