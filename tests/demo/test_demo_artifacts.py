"""Planted artifacts are exactly what they claim: place, size, frequency and power, input left untouched."""

from __future__ import annotations

import numpy as np
import pytest

from ibl_ephys_data.demo import artifacts as art
from ibl_ephys_data.demo.artifacts import NP1_LF_RANGE_VOLTS

FS = 2500.0


@pytest.fixture
def volts() -> np.ndarray:
    return (20e-6 * np.random.default_rng(0).standard_normal((int(10 * FS), 8))).astype(np.float32)


def test_line_noise_has_the_amplitude_and_frequency_asked(volts):
    out = art.add_line_noise(volts, FS, 60.0, [40e-6, 10e-6])
    added = (out - volts)[:, 3].astype(float)
    spectrum = np.abs(np.fft.rfft(added)) * 2 / added.size
    freqs = np.fft.rfftfreq(added.size, 1 / FS)
    assert freqs[np.argsort(spectrum)[-2:]].tolist() == [120.0, 60.0]
    assert spectrum[freqs == 60.0][0] == pytest.approx(40e-6, rel=1e-3)
    assert spectrum[freqs == 120.0][0] == pytest.approx(10e-6, rel=1e-2)
    assert np.allclose(out - volts, (out - volts)[:, :1], atol=1e-9)  # common to all channels
    assert out.dtype == volts.dtype


def test_white_noise_rms(volts):
    added = art.add_white_noise(volts, 10e-6, seed=1) - volts
    assert added.std() == pytest.approx(10e-6, rel=0.01)
    assert abs(np.corrcoef(added[:, 0], added[:, 1])[0, 1]) < 0.02


def test_saturation_pins_the_span_at_full_scale(volts):
    out = art.plant_saturation(volts, FS, 2.0, 0.2, channels=[1, 4])
    assert NP1_LF_RANGE_VOLTS == pytest.approx(2.4e-3)
    assert (out[5000:5500, [1, 4]] == np.float32(NP1_LF_RANGE_VOLTS)).all()
    changed = np.argwhere(out != volts)
    assert set(changed[:, 0]) == set(range(5000, 5500)) and set(changed[:, 1]) == {1, 4}
    assert (art.plant_saturation(volts, FS, 2.0, 0.2, sign=-1)[5000:5500] < 0).all()


def test_dropout_is_flat_on_all_channels(volts):
    out = art.plant_dropout(volts, FS, 1.0, 0.1)
    assert (out[2500:2750] == 0).all()
    assert (out[:2500] == volts[:2500]).all() and (out[2750:] == volts[2750:]).all()


def test_probe_burst_is_smooth_common_and_confined(volts):
    out = art.add_probe_burst(volts, FS, 4.0, 0.5, 1e-3, freq_hz=8.0)
    added = (out - volts).astype(float)
    assert np.allclose(added, added[:, :1], atol=1e-9)
    assert np.abs(added[:10_000]).max() < 1e-9 and np.abs(added[11_250:]).max() < 1e-9
    assert 0.9e-3 < np.abs(added).max() <= 1e-3
    assert np.abs(np.diff(added[:, 0])).max() < 2 * np.pi * 8.0 / FS * 1e-3 * 1.5  # no sample jumps


def test_power_bursts_multiply_power_by_the_gain_in_alternate_blocks(volts):
    out = art.add_power_bursts(volts, FS, gain=4.0, block_s=1.0, seed=3)
    ratio = (out.astype(float) ** 2).reshape(10, 2500, 8).mean(1) / (volts.astype(float) ** 2).reshape(
        10, 2500, 8).mean(1)
    up = ratio > 2
    assert np.all(np.abs(ratio[up] - 4) < 0.2) and np.all(np.abs(ratio[~up] - 1) < 0.2)
    assert (up[1:] != up[:-1]).all()  # alternating blocks
    assert 0 < up[0].sum() < 8  # channels do not all start together
    assert (up.sum(axis=0) == 5).all()


def test_input_is_left_untouched(volts):
    before = volts.copy()
    art.add_probe_burst(volts, FS, 1.0)
    art.plant_saturation(volts, FS, 1.0)
    art.plant_dropout(volts, FS, 1.0)
    art.add_power_bursts(volts, FS)
    assert (volts == before).all()


@pytest.mark.parametrize("start_s, duration_s", [(9.9, 0.2), (-1.0, 0.1), (1.0, 0.0)])
def test_artifact_outside_the_recording_is_rejected(volts, start_s, duration_s):
    with pytest.raises(ValueError, match="does not fit"):
        art.plant_dropout(volts, FS, start_s, duration_s)


# ---- seeded defects of the demo store, independent of QC -------------------------------------------------------
def test_demo_never_imports_qc_to_plant():
    """Nothing in the demo package imports ibl_ephys_data.qc: planting never knows where QC looks."""
    import ast
    from pathlib import Path

    import ibl_ephys_data.demo as demo

    for path in sorted(Path(demo.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n.startswith("ibl_ephys_data.qc")], path.name


def test_events_come_from_the_seed_and_never_overlap():
    pickup = np.arange(20, 350)
    a = art.draw_events("saturation", 24.0, 5, pickup, extras=("flat", "line_noise", "step"))
    assert a == art.draw_events("saturation", 24.0, 5, pickup, extras=("flat", "line_noise", "step"))
    assert a != art.draw_events("saturation", 24.0, 6, pickup, extras=("flat", "line_noise", "step"))
    assert sorted(e.kind for e in a) == ["flat", "line_noise", "saturation", "saturation", "step"]
    spans = sorted((e.start_s, e.stop_s) for e in a)
    assert all(b0 <= a1 for (_, b0), (a1, _) in zip(spans, spans[1:], strict=False))
    assert spans[0][0] >= 0.5 and spans[-1][1] <= 24.0
    flat = next(e for e in a if e.kind == "flat")
    assert len(flat.channels) == 96 and set(flat.channels) <= set(pickup.tolist())
    assert next(e for e in a if e.kind == "saturation").channels == tuple(range(384))
    whole = art.draw_events("line_noise", 24.0, 0, pickup)
    assert [(e.kind, e.start_s, e.stop_s) for e in whole] == [("line_noise", 0.0, 24.0)]
    with pytest.raises(ValueError, match="unknown demo artifact 'hum'"):
        art.draw_events("hum", 24.0, 0, pickup)


def test_events_transform_plants_what_the_ground_truth_says():
    fs = 2500.0
    events = [art.DemoEvent("saturation", 1.0, 1.2, (0, 1)), art.DemoEvent("flat", 2.0, 2.5, (2,)),
              art.DemoEvent("step", 3.0, 3.02, (3,)), art.DemoEvent("cm_burst", 4.0, 5.0, (4,))]
    block = np.full((int(6 * fs), 6), 1e-5, dtype=np.float32)
    transform = art.events_transform(events, fs)
    # planted block by block at absolute times, as signals.write_demo_lf streams them
    out = np.concatenate([transform(block[i:i + 4000], i) for i in range(0, block.shape[0], 4000)])
    t = np.arange(block.shape[0]) / fs
    sat = (t >= 1.0) & (t < 1.2)
    assert np.all(out[sat, :2] == np.float32(NP1_LF_RANGE_VOLTS)) and np.all(out[~sat, :2] == np.float32(1e-5))
    assert np.all(out[(t >= 2.0) & (t < 2.5), 2] == 0) and np.all(out[t < 2.0, 2] == np.float32(1e-5))
    # a step persists: the offset stays after the event's instant
    assert np.allclose(out[t >= 3.0, 3] - 1e-5, art.STEP_V) and np.allclose(out[t < 3.0, 3], 1e-5)
    burst = out[(t >= 4.0) & (t < 5.0), 4] - 1e-5
    assert np.abs(burst).max() == pytest.approx(art.BURST_V, rel=1e-3)
    assert np.allclose(out[(t < 4.0) | (t >= 5.0), 4], 1e-5) and np.all(out[:, 5] == np.float32(1e-5))


def test_store_ground_truth_places_events_outside_qc_snippets(demo_store, demo_seconds):
    """Some seeded seconds miss the snippets signal QC reads: QC must not find the events by construction."""
    import json

    from ibl_ephys_data.demo.store import GROUND_TRUTH
    from ibl_ephys_data.qc.metrics import snippet_windows

    truth = json.loads((demo_store / GROUND_TRUTH).read_text())
    assert truth["seconds"] == demo_seconds and {e["kind"] for e in truth["events"]} == set(art.EVENT_KINDS)
    snippets = [(a / 1000, b / 1000) for a, b in snippet_windows(int(demo_seconds * 1000), 1000.0)]
    outside = 0
    for e in truth["events"]:
        inside = sum(max(0.0, min(e["stop_s"], b) - max(e["start_s"], a)) for a, b in snippets)
        outside += (e["stop_s"] - e["start_s"]) - inside > 0.1
    assert outside >= 3
    lengths = [e["stop_s"] - e["start_s"] for e in truth["events"]]
    assert min(lengths) < 0.1 and max(lengths) >= demo_seconds - 1e-9  # some brief, some long
