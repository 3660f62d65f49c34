"""Probe-wide artifact detection on arrays with planted events of known position, size and extent."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from ibl_ephys_data.demo import artifacts as art
from ibl_ephys_data.qc.artifacts import (
    NP1_LF_RANGE_VOLTS,
    discontinuity_masks,
    prepare_snippet,
    probe_artifacts,
)

FS = 2500.0


def runs_s(mask: np.ndarray) -> list[list[float]]:
    """[start_s, stop_s] of each run of True samples."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return [[a / FS, b / FS] for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]


def lfp(seconds: float, nc: int, rms: float = 50e-6, seed: int = 0) -> np.ndarray:
    """Independent channels of low-passed (AR(1), pole 0.98) Gaussian noise, ``rms`` volts each."""
    w = np.random.default_rng(seed).standard_normal((int(seconds * FS), nc))
    x = scipy.signal.lfilter([1.0], [1.0, -0.98], w, axis=0)
    return (x / x.std() * rms).astype(np.float32)


def test_saturation_mask_is_the_planted_stretch_when_enough_channels_clip():
    x = lfp(4, 32)
    masks = discontinuity_masks(art.plant_saturation(x, FS, 1.0, 0.2, channels=range(10)), FS)  # 31 %
    assert np.flatnonzero(masks["saturation"]).tolist() == list(range(2500, 3000))
    few = discontinuity_masks(art.plant_saturation(x, FS, 1.0, 0.2, channels=range(6)), FS)  # 19 %
    assert not few["saturation"].any()
    negative = art.plant_saturation(x, FS, 1.0, 0.2, sign=-1)
    assert discontinuity_masks(negative, FS)["saturation"].sum() == 500


def test_saturation_agrees_with_ibldsp():
    from ibldsp.voltage import saturation

    x = lfp(4, 32)
    for n_clipped in (5, 6, 7, 12, 32):
        planted = art.plant_saturation(x, FS, 1.0, 0.2, channels=range(n_clipped))
        expected, _ = saturation(planted.T, NP1_LF_RANGE_VOLTS, v_per_sec=None, fs=FS, proportion=0.2)
        assert (discontinuity_masks(planted, FS)["saturation"] == expected).all()


def test_saturation_follows_the_range_given():
    x = art.plant_saturation(lfp(4, 8), FS, 1.0, 0.2, range_volts=1e-3)
    assert not discontinuity_masks(x, FS)["saturation"].any()  # 1 mV is far below NP1's 2.4 mV rail
    assert discontinuity_masks(x, FS, range_volts=1e-3)["saturation"].sum() == 500
    per_channel = np.full(8, 1e-3)
    assert discontinuity_masks(x, FS, range_volts=per_channel)["saturation"].sum() == 500


def test_a_common_step_is_one_jump_at_the_sample_after_it():
    x = lfp(4, 16)
    x[5000:] += 500e-6
    masks = discontinuity_masks(x, FS)
    assert np.flatnonzero(masks["jump"]).tolist() == [5000]
    assert not masks["flat"].any() and not masks["saturation"].any()


def test_flat_runs_count_from_10_ms_on_more_than_a_fifth_of_channels():
    x = lfp(4, 16)
    long = discontinuity_masks(art.plant_dropout(x, FS, 2.0, 0.1), FS)["flat"]
    assert np.flatnonzero(long).tolist() == list(range(5000, 5250))
    short = discontinuity_masks(art.plant_dropout(x, FS, 2.0, 0.008), FS)["flat"]  # 20 samples < 25
    assert not short.any()
    few = discontinuity_masks(art.plant_dropout(x, FS, 2.0, 0.1, channels=[0, 1, 2]), FS)["flat"]  # 19 %
    assert not few.any()
    held = discontinuity_masks(art.plant_dropout(x, FS, 0.0, 0.1, value=1e-4), FS)["flat"]  # at the start
    assert np.flatnonzero(held).tolist() == list(range(250))


def test_saturation_pct_is_the_saturated_fraction():
    x = art.plant_saturation(lfp(10, 16), FS, 3.0, 0.2)
    assert probe_artifacts(x, FS)["saturation_pct"] == pytest.approx(2.0)


def test_striping_ratio_of_a_known_common_signal():
    """x_c = s + n_c: the median over N channels is s + median(n), whose variance is (pi/2) σn² / N."""
    nc, sigma_s, sigma_n = 64, 0.5, 1.0
    common = lfp(20, 1, rms=sigma_s * 50e-6, seed=1)
    x = lfp(20, nc, rms=sigma_n * 50e-6, seed=2) + common
    expected = np.sqrt(sigma_s**2 + np.pi / 2 * sigma_n**2 / nc) / np.hypot(sigma_s, sigma_n)
    assert probe_artifacts(x, FS)["striping_ratio"] == pytest.approx(expected, rel=0.05)


def test_stationary_line_noise_is_not_common_mode_artifact():
    x = lfp(10, 32)
    clean = probe_artifacts(x, FS)
    hum = probe_artifacts(art.add_line_noise(x, FS, 50.0, 100e-6, phase=0.3), FS)
    assert hum["striping_ratio"] == pytest.approx(clean["striping_ratio"], rel=0.02)
    assert hum["cm_burst_pct"] == clean["cm_burst_pct"] == 0


def test_probe_burst_is_one_common_mode_window_and_all_channels_together():
    x = art.add_probe_burst(lfp(20, 32), FS, 7.25, 0.5, 1e-3)
    out = probe_artifacts(x, FS)
    assert out["cm_burst_pct"] == pytest.approx(100 / 20)
    assert out["coburst_fraction"] == pytest.approx(1.0)
    assert out["saturation_pct"] == 0
    snip = prepare_snippet(x, FS)
    # the burst (7.25-7.75 s) lies in the 1-s window 7: the only window whose common mode stands out
    assert np.argmax(snip.cm_rms) == 7 and np.sort(snip.cm_rms)[-2] < snip.cm_rms[7] / 5


def test_coburst_fraction_is_the_fraction_of_channels_bursting():
    x = art.add_probe_burst(lfp(20, 40), FS, 3.25, 0.5, 1e-3, channels=range(10))
    assert probe_artifacts(x, FS)["coburst_fraction"] == pytest.approx(0.25)


def test_good_mask_limits_the_vote_to_good_channels():
    x = art.plant_dropout(lfp(4, 20), FS, 1.0, 0.2, channels=range(10))
    good = np.r_[np.zeros(8, bool), np.ones(12, bool)]  # 2 of the 12 good channels are flat: 17 %
    assert discontinuity_masks(x, FS)["flat"].sum() == 500
    assert not discontinuity_masks(x, FS, good)["flat"].any()


def test_runs_of_planted_discontinuities():
    x = art.plant_saturation(lfp(10, 16), FS, 2.0, 0.2)
    x = art.plant_dropout(x, FS, 5.0, 0.1)
    masks = discontinuity_masks(x, FS)
    assert runs_s(masks["saturation"]) == [[2.0, 2.2]]
    assert runs_s(masks["flat"]) == [[5.0, 5.1]]
    # the 2.4-mV step back from the rail is a one-sample jump right after the stretch; the step back from
    # a 0-V dropout is the signal itself (rms 5x that of dx here), under the 10-MAD jump threshold;
    # sample times are k / 2500 s, exact to 1e-12 s whatever the float rounding
    np.testing.assert_allclose(runs_s(masks["jump"]), [[2.2, 2.2 + 1 / FS]], rtol=0, atol=1e-12)


def test_clean_signal_has_no_discontinuity():
    masks = discontinuity_masks(lfp(10, 16), FS)
    assert not any(m.any() for m in masks.values())


@pytest.mark.parametrize("order", ["F", "C"])
def test_caller_array_is_never_written(order):
    """A spikeglx slice is float32 and column-ordered: lfp_metrics then probe_artifacts on it must agree."""
    from ibl_ephys_data.qc.metrics import lfp_metrics

    x = np.array(art.plant_saturation(lfp(4, 32), FS, 1.0, 0.2), dtype=np.float32, order=order)
    before = x.copy()
    first = probe_artifacts(x, FS)
    lfp_metrics(x, FS)
    prepare_snippet(x, FS)
    np.testing.assert_array_equal(x, before)  # bit-equal: nothing may write into the caller's array
    assert probe_artifacts(x, FS) == first
    assert first["saturation_pct"] == pytest.approx(100 * 0.2 / 4)


def test_default_range_is_np1_lf_full_scale():
    assert NP1_LF_RANGE_VOLTS == pytest.approx(0.6 / 512 / 250 * 512)


def test_bad_range_shape_is_rejected():
    with pytest.raises(ValueError, match="range_volts"):
        discontinuity_masks(lfp(2, 4), FS, range_volts=np.ones(3))
