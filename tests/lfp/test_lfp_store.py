import json

import numpy as np
import pytest
import zarr

from ibl_ephys_data.errors import InputError, MissingStageError
from ibl_ephys_data.lfp.destripe import preprocess_window
from ibl_ephys_data.lfp.store import lfp_params, process_insertion
from ibl_ephys_data.lfp.windows import explicit_windows
from ibl_ephys_data.workspace.lfp_store import CHUNK_SAMPLES, MAX_FILES, MAX_RMS_ERROR, LfpStore

PID = "3c0a4b7e-0000-4000-8000-000000000001"


def session_clock(t):
    return 100.0 + 1.0001 * np.asarray(t)


@pytest.fixture(scope="module")
def windows():
    return explicit_windows([(2.0, 6.0), (20.0, 12.5)], duration_s=40.0, time_fn=session_clock)


def test_insertion_group_layout_and_values(lf_reader, planted, windows, tmp_path):
    root = tmp_path / "lfp.zarr"
    path = process_insertion(lf_reader, root, PID, windows, planted, time_fn=session_clock,
                             chunk_seconds=5.0)
    assert path == root / PID
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    attrs = group.attrs.asdict()
    assert attrs["complete"] is True and attrs["units"] == "uV" and attrs["fs"] == 1250.0
    assert attrs["raw_ind"] == list(range(384))
    assert attrs["bad_channel_label"] == planted.tolist()
    assert attrs["params"] == lfp_params(windows, chunk_seconds=5.0)
    assert attrs["processing"]["decimation"] == 2 and attrs["processing"]["band_hz"] == [0.5, 300.0]
    assert attrs["versions"]["ibl-neuropixel"] != "not installed"
    approx = pytest.approx
    assert attrs["windows"] == [
        {"start_s": 2.0, "stop_s": 8.0, "session_start_s": approx(102.0002),
         "session_stop_s": approx(108.0008), "offset": 0, "n_samples": 7500},
        {"start_s": 20.0, "stop_s": 32.5, "session_start_s": approx(120.002),
         "session_stop_s": approx(132.50325), "offset": 7500, "n_samples": 15625},
    ]
    lfp, cm = group["lfp"], group["common_mode"]
    assert lfp.shape == (384, 23125) and lfp.dtype == np.int16 and cm.shape == (23125,) and cm.dtype == np.int16
    assert lfp.chunks == (1, CHUNK_SAMPLES) and lfp.shards[0] == 384
    # NP1 LF step (0.6 V / 512 / gain 250 = 4.6875 uV) / 20
    assert lfp.attrs["scale"] == approx(4.6875 / 20) and lfp.attrs["offset"] == 0.0
    assert cm.attrs["scale"] == lfp.attrs["scale"]
    n_files = sum(1 for p in path.rglob("*") if p.is_file())
    assert n_files <= MAX_FILES
    ins = LfpStore(root).open(PID)
    err2 = sig2 = 0.0
    for w, rec in zip(windows, attrs["windows"], strict=True):
        expected, expected_cm = preprocess_window(lf_reader, w.start_s, w.stop_s, planted, chunk_seconds=5.0)
        sl = slice(rec["offset"], rec["offset"] + rec["n_samples"])
        got = ins.lfp(samples=sl)
        # rounding to the int16 grid: every sample within half a unit (float32 rounding adds ~1e-7 relative)
        assert np.abs(got - expected).max() <= lfp.attrs["scale"] * 0.5 * (1 + 1e-5)
        assert np.abs(ins.common_mode(sl) - expected_cm).max() <= lfp.attrs["scale"] * 0.5 * (1 + 1e-5)
        err2 += float(np.square(got - expected, dtype=np.float64).sum())
        sig2 += float(np.square(expected, dtype=np.float64).sum())
    rel = np.sqrt(err2 / sig2)
    assert rel <= MAX_RMS_ERROR
    # the recorded error is the one measured here (same samples; float64 sums of float32 terms)
    assert lfp.attrs["rms_error_rel"] == approx(rel, rel=1e-3)
    store = LfpStore(root)
    assert store.is_done(PID, lfp_params(windows, chunk_seconds=5.0)) and store.problems(PID) == []
    assert store.pids() == [PID]


def test_same_inputs_write_the_same_bytes(lf_reader, planted, windows, tmp_path):
    paths = [process_insertion(lf_reader, tmp_path / f"run{i}", PID, windows[:1], planted) for i in range(2)]
    files = [sorted(p.rglob("*")) for p in paths]
    assert [f.relative_to(paths[0]) for f in files[0]] == [f.relative_to(paths[1]) for f in files[1]]
    for a, b in zip(*files, strict=True):
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), a


def test_changed_params_are_not_complete(lf_reader, planted, windows, tmp_path):
    root = tmp_path / "lfp.zarr"
    store = LfpStore(root)
    assert not store.is_done(PID, lfp_params(windows))
    process_insertion(lf_reader, root, PID, windows[:1], planted, dtype="float16")
    same = lfp_params(windows[:1], dtype="float16")
    assert store.is_done(PID, same)
    assert zarr.open_group(str(root / PID), mode="r")["lfp"].dtype == np.float16
    assert not store.is_done(PID, lfp_params(windows[:1], dtype="int16"))
    assert not store.is_done(PID, lfp_params(windows, dtype="float16"))
    assert not store.is_done(PID, lfp_params(windows[:1], fs_out=625.0, dtype="float16"))
    assert not store.is_done(PID, {**same, "bad_channels": {"n_batches": 12}})
    # recomputing with new parameters replaces the group
    process_insertion(lf_reader, root, PID, windows[:1], planted, fs_out=625.0)
    assert store.is_done(PID, lfp_params(windows[:1], fs_out=625.0))
    assert zarr.open_group(str(root / PID), mode="r")["lfp"].shape == (384, 3750)


class FailingReader:
    """A reader that breaks after ``n_reads`` reads, like a download dying mid-window."""

    def __init__(self, reader, n_reads):
        self._reader, self.n_reads = reader, n_reads

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __getitem__(self, item):
        self.n_reads -= 1
        if self.n_reads < 0:
            raise OSError("connection reset")
        return self._reader[item]


def test_failure_mid_write_leaves_no_complete_group(lf_reader, planted, windows, tmp_path):
    root = tmp_path / "lfp.zarr"
    with pytest.raises(ValueError, match="connection reset"):
        process_insertion(FailingReader(lf_reader, 3), root, PID, windows, planted, chunk_seconds=5.0)
    assert not (root / PID).exists()
    assert not list(root.glob(f".{PID}*"))  # temporaries cleaned up
    assert not LfpStore(root).is_done(PID, lfp_params(windows, chunk_seconds=5.0))
    with pytest.raises(MissingStageError, match="missing or incomplete"):
        LfpStore(root).open(PID)
    # a finished group survives a failed re-run with other parameters
    process_insertion(lf_reader, root, PID, windows[:1], planted)
    with pytest.raises(ValueError):
        process_insertion(FailingReader(lf_reader, 2), root, PID, windows, planted)
    assert LfpStore(root).is_done(PID, lfp_params(windows[:1]))


def test_killed_run_leftovers_are_ignored_and_removed(lf_reader, planted, windows, tmp_path):
    root = tmp_path / "lfp.zarr"
    stale = root / f".{PID}.k1ll3d.tmp" / PID
    zarr.open_group(str(stale), mode="w").attrs["complete"] = False
    assert not LfpStore(root).is_done(PID, lfp_params(windows[:1]))
    process_insertion(lf_reader, root, PID, windows[:1], planted)
    assert not stale.parent.exists()
    assert sorted(p.name for p in root.iterdir()) == [PID, "zarr.json"]
    assert json.loads((root / PID / "zarr.json").read_text())["attributes"]["complete"] is True


def test_bad_input(lf_reader, planted, tmp_path):
    with pytest.raises(ValueError, match="no window"):
        process_insertion(lf_reader, tmp_path, PID, [], planted)
    with pytest.raises(InputError, match="dtype"):
        lfp_params(explicit_windows([(0, 1)], 40.0), dtype="int8")
