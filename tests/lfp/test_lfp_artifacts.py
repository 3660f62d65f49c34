"""Per-window QC of the lfp stage: planted artifacts are found wherever they fall, clean data stays clean."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr

from ibl_ephys_data.demo import artifacts as art
from ibl_ephys_data.demo import signals
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.store import GROUND_TRUTH
from ibl_ephys_data.lfp.artifacts import (
    BLOCK_ROWS,
    ArtifactScanner,
    ArtifactThresholds,
    default_thresholds,
    flag_windows,
    flagged_fraction,
    merge_intervals,
)

FS = 2500.0
Q = 2  # stored at 1250 Hz, as the lfp stage's default


@pytest.fixture(scope="module")
def planted_raw() -> tuple[np.ndarray, np.ndarray]:
    """12 s of synthetic NP1 LF on ADC codes, a 0.4-s rail on every channel and a 1-s dropout of rows 64-159."""
    volts = signals.synthetic_lfp(12.0, fs=FS, seed=3)
    volts = art.plant_saturation(volts, FS, 3.0, 0.4, range_volts=art.NP1_LF_RANGE_VOLTS)
    volts = art.plant_dropout(volts, FS, 7.0, 1.0, channels=np.arange(64, 160))
    # whole ADC codes: identical consecutive codes then happen on clean data too, as on real recordings
    bit = signals.NP1_LF_VOLTS_PER_BIT
    volts = (np.clip(np.round(volts / bit), -512, 511) * bit).astype(np.float32)
    return volts, signals.planted_labels()


def scan(volts: np.ndarray, labels: np.ndarray, chunk_seconds: float) -> list[dict]:
    scanner = ArtifactScanner(labels, FS, Q, art.NP1_LF_RANGE_VOLTS, default_thresholds())
    scanner.start_window(0)
    step = int(chunk_seconds * FS) // Q * Q
    for a in range(0, volts.shape[0], step):
        raw = volts[a:a + step]
        scanner.feed_raw(raw)
        out = raw[::Q].T * 1e6  # stands in for the destriped output: these kinds are read on raw samples
        scanner.feed(out, np.median(out[labels != 3], axis=0))
    return scanner.finish()


def test_saturation_and_dropout_are_found_on_their_rows_and_seconds(planted_raw):
    volts, labels = planted_raw
    intervals = pd.DataFrame(scan(volts, labels, chunk_seconds=2.0))
    fs_out = FS / Q
    pad = default_thresholds().pad_seconds
    sat = intervals[intervals["kind"] == "saturation"]
    # every block with good channels, exactly the planted seconds widened by the pad (one stored sample of
    # rounding at each end)
    assert set(sat["row_start"]) == set(np.flatnonzero(labels == 0) // BLOCK_ROWS * BLOCK_ROWS)
    assert np.allclose(sat["start"] / fs_out, 3.0 - pad, atol=2 / fs_out)
    assert np.allclose(sat["stop"] / fs_out, 3.4 + pad, atol=2 / fs_out)
    flat = intervals[(intervals["kind"] == "flat") & (intervals["start"] / fs_out > 5)]
    assert sorted(flat["row_start"]) == [64, 96, 128]  # rows 64-159, three whole blocks
    assert np.allclose(flat["start"] / fs_out, 7.0 - pad, atol=2 / fs_out)
    assert np.allclose(flat["stop"] / fs_out, 8.0 + pad, atol=2 / fs_out)
    # nothing anywhere else: every interval touches a planted event widened by the 1-s burst segments
    near = ((intervals["stop"] / fs_out > 2.0) & (intervals["start"] / fs_out < 4.4)) | (
        (intervals["stop"] / fs_out > 6.0) & (intervals["start"] / fs_out < 9.0))
    assert near.all(), intervals[~near]


def test_intervals_do_not_depend_on_the_chunking(planted_raw):
    volts, labels = planted_raw
    assert scan(volts, labels, chunk_seconds=2.0) == scan(volts, labels, chunk_seconds=0.7)


def test_clean_recording_has_no_interval():
    volts = signals.synthetic_lfp(8.0, fs=FS, seed=5)
    bit = signals.NP1_LF_VOLTS_PER_BIT
    volts = (np.round(volts / bit) * bit).astype(np.float32)
    assert scan(volts, signals.planted_labels(), chunk_seconds=3.0) == []


def test_flag_windows_maps_intervals_onto_samples_and_rows():
    intervals = [{"kind": "flat", "start": 100, "stop": 200, "row_start": 32, "row_stop": 64, "value": 1.0},
                 {"kind": "step", "start": 500, "stop": 510, "row_start": 0, "row_stop": 384, "value": 20.0}]
    start = np.array([50, 0, 200, 400, 480])
    rows0, rows1 = np.array([40, 0, 40, 10, 300]), np.array([41, 1, 41, 11, 301])
    flags = flag_windows(intervals, start, 100, rows0, rows1)
    # [0, 100) ends where the flat interval starts and [200, 300) starts where it stops: no overlap;
    # [400, 500) ends where the step starts
    assert flags["flat"].tolist() == [True, False, False, False, False]
    assert flags["step"].tolist() == [False, False, False, False, True]
    assert not flags[["saturation", "cm_burst", "line_noise"]].to_numpy().any()
    # 3 back-to-back windows x 12 blocks; the flat interval touches 1 pair, the step one window's 12 blocks
    frac = flagged_fraction(intervals, 250, [{"offset": 0, "n_samples": 750}], 384)
    assert frac == pytest.approx((1 + 12) / 36)


def test_merge_keeps_kinds_and_rows_apart():
    rows = [{"kind": "flat", "start": 0, "stop": 10, "row_start": 0, "row_stop": 32, "value": 0.6},
            {"kind": "flat", "start": 12, "stop": 20, "row_start": 0, "row_stop": 32, "value": 0.9},
            {"kind": "flat", "start": 12, "stop": 20, "row_start": 32, "row_stop": 64, "value": 0.7},
            {"kind": "step", "start": 5, "stop": 6, "row_start": 0, "row_stop": 32, "value": 30.0}]
    merged = merge_intervals(rows, gap=2)
    assert [(r["kind"], r["start"], r["stop"], r["row_start"], r["value"]) for r in merged] == [
        ("flat", 0, 20, 0, 0.9), ("step", 5, 6, 0, 30.0), ("flat", 12, 20, 32, 0.7)]


def test_thresholds_come_from_the_rules_file_and_are_validated():
    t = default_thresholds()
    assert t.saturation_level == 0.96 and t.saturation_proportion == 0.2
    assert len(t.fingerprint) == 16 and t.fingerprint != ArtifactThresholds(
        **{**t.__dict__, "step_mads": t.step_mads + 1}).fingerprint
    with pytest.raises(ValueError, match=r"missing \['step_mads'\], unknown \['step_mad'\]"):
        ArtifactThresholds.from_mapping({**{k: v for k, v in t.__dict__.items() if k != "step_mads"},
                                         "step_mad": 1.0})


# ---- the demo store through the real lfp stage (ONE + HTTP range streaming) --------------------------------
def test_demo_ground_truth_is_flagged_wherever_it_falls(lfp_workspace, demo_store):
    """Recall >= 95 % of planted artifact seconds, <= 1 % of clean windows flagged, on 1-s windows."""
    ws, *_ = lfp_workspace
    truth = pd.DataFrame(json.loads((demo_store / GROUND_TRUTH).read_text())["events"])
    assert set(truth["kind"]) == set(art.EVENT_KINDS)
    planted_sum = flagged_planted = 0.0
    clean = flagged_clean = 0
    for ins in INSERTIONS:
        group = zarr.open_group(str(ws.lfp / ins.pid), mode="r")
        attrs = group.attrs.asdict()
        fs, (segment,) = attrs["fs"], attrs["windows"]
        good_rows = np.flatnonzero(np.asarray(attrs["bad_channel_label"]) == 0)
        raw_ind = np.asarray(attrs["raw_ind"])
        n = int(fs)  # 1-s windows
        starts = segment["offset"] + np.arange(0, segment["n_samples"] - n + 1, n)
        w_start = np.repeat(starts, good_rows.size)
        w_row = np.tile(good_rows, starts.size)
        hit = flag_windows(attrs["artifacts"], w_start, n, w_row, w_row + 1).any(axis=1).to_numpy()
        t0 = segment["start_s"] + (w_start - segment["offset"]) / fs
        near_event = np.zeros(w_start.size, dtype=bool)
        for ev in truth[truth["pid"] == ins.pid].itertuples():
            on_channel = np.isin(raw_ind[w_row], ev.channels)
            overlap = np.clip(np.minimum(t0 + 1, ev.stop_s) - np.maximum(t0, ev.start_s), 0, None) * on_channel
            planted_sum += overlap.sum()
            flagged_planted += overlap[hit].sum()
            # the 0.5-Hz high-pass of destriping rings for about a second around a probe-wide event
            near_event |= (t0 < ev.stop_s + 1.0) & (t0 + 1 > ev.start_s - 1.0)
        clean += int((~near_event).sum())
        flagged_clean += int((hit & ~near_event).sum())
    assert clean > 30_000 and planted_sum > 10_000  # channel-seconds: the measure is not vacuous
    assert flagged_planted / planted_sum >= 0.95, (flagged_planted / planted_sum, flagged_clean / clean)
    assert flagged_clean / clean <= 0.01, (flagged_planted / planted_sum, flagged_clean / clean)
