import hashlib
import json
from pathlib import Path

import mtscomp
import numpy as np
import pytest
import scipy.signal
import spikeglx
from ibldsp.voltage import detect_bad_channels

from ibl_ephys_data.demo import signals

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
FS = 2500.0


def test_deterministic_and_prefix_stable():
    a = signals.synthetic_lfp(3.0, seed=3)
    b = signals.synthetic_lfp(6.0, seed=3)
    assert a.shape == (7500, 384) and a.dtype == np.float32
    # the first 3 s of a 6-s recording are the 3-s recording: equal up to float32 rounding, not bit for bit,
    # because BLAS sums in blocks whose shape depends on the array length (the last bits differ between
    # lengths and CPUs). A few float32 ulps of the peak is ~1e-7 of it; 1e-5 of the peak is far above that
    # rounding and far below a real difference (another seed differs by the order of the peak itself).
    np.testing.assert_allclose(a, b[:7500], rtol=0, atol=1e-5 * float(np.abs(b).max()))
    assert not np.allclose(a, signals.synthetic_lfp(3.0, seed=4))


def test_planted_channels_are_detected_by_ibl():
    dead, noisy, n_outside = (12, 201), (55,), 64
    x = signals.synthetic_lfp(8.0, seed=1, dead=dead, noisy=noisy, n_outside=n_outside)
    expected = signals.planted_labels(dead, noisy, n_outside)
    assert (np.bincount(expected, minlength=4) == [384 - 64 - 3, 2, 1, 64]).all()
    for first in (0, 10000):  # two 4-s batches, as detect_bad_channels_cbin reads them
        labels, _ = detect_bad_channels(x[first:first + 10000].T, fs=FS, psd_hf_threshold=1.4)
        np.testing.assert_array_equal(labels, expected)


def test_theta_band_depth_power_and_units():
    x = signals.synthetic_lfp(8.0, seed=2, theta_channels=(100, 180), line_noise_uv=20.0, line_freq=50.0)
    f, p = scipy.signal.welch(x.T - x.mean(axis=0)[:, None], fs=FS, nperseg=5000)
    theta = (f > 6.5) & (f < 8.5)
    flank = ((f > 3) & (f < 5)) | ((f > 11) & (f < 13))
    contrast = p[:, theta].mean(axis=1) / p[:, flank].mean(axis=1)
    good = signals.planted_labels() == 0  # default plants: a dead channel sits in the theta band
    assert contrast[120:160][good[120:160]].min() > 3 * contrast[20:60].max()
    # line noise: a 20 µV rms sinusoid at 50 Hz on every connected channel
    df = f[1] - f[0]
    peak, flanks = (f > 48.4) & (f < 51.6), ((f > 45) & (f < 47)) | ((f > 53) & (f < 55))
    line = (p[:, peak].sum(axis=1) - peak.sum() * p[:, flanks].mean(axis=1)) * df
    np.testing.assert_allclose(np.sqrt(np.median(line)) * 1e6, 20.0, rtol=0.05)
    # LFP-like amplitudes in volts: tens of µV, more power near the surface than at the tip
    rms = x.std(axis=0)
    assert 20e-6 < np.median(rms) < 200e-6
    sos = scipy.signal.butter(3, [1, 4], "bandpass", fs=FS, output="sos")
    band = scipy.signal.sosfiltfilt(sos, x, axis=0)
    assert band[:, 300:340].std() > 1.2 * band[:, 0:40].std()


def test_quantise_at_np1_lf_gain():
    assert signals.NP1_LF_VOLTS_PER_BIT == pytest.approx(4.6875e-6)
    q = signals.quantise(np.array([0.0, 4.6875e-6, -2.4e-6, 1.0, -1.0]))
    assert q.dtype == np.int16 and q.tolist() == [0, 1, -1, 511, -512]


def test_write_lf_cbin_round_trip(tmp_path):
    x = signals.synthetic_lfp(3.3, seed=5)
    blocks = (x[i:i + 777] for i in range(0, len(x), 777))  # odd block sizes, re-chunked into 1-s chunks
    cbin = signals.write_lf_cbin(blocks, tmp_path, fs=FS, stem="probe.lf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.lf.cbin", "probe.lf.ch", "probe.lf.meta"]
    cmeta = json.loads(cbin.with_suffix(".ch").read_text())
    assert cmeta["chunk_bounds"] == [0, 2500, 5000, 7500, 8250] and cmeta["shape"] == [8250, 385]
    sr = spikeglx.Reader(cbin)
    assert (sr.fs, sr.ns, sr.nc, sr.nsync, sr.type, sr.major_version) == (FS, 8250, 385, 1, "lf", 1)
    assert int(sr.meta["fileSizeBytes"]) == 8250 * 385 * 2
    np.testing.assert_allclose(sr.sample2volts[:384], signals.NP1_LF_VOLTS_PER_BIT)
    volts = sr[:, :-1]
    assert np.abs(volts - x).max() <= signals.NP1_LF_VOLTS_PER_BIT / 2 + 1e-9
    sync = mtscomp.decompress(cbin, cbin.with_suffix(".ch"))[:, -1]
    assert set(np.unique(sync)) == {0, 64} and sync[0] == 64 and sync[1250] == 0 and sync[2500] == 64
    raw = mtscomp.decompress(cbin, cbin.with_suffix(".ch"))[:]
    assert sr.meta["fileSHA1"] == hashlib.sha1(raw.tobytes()).hexdigest().upper()


def test_write_demo_lf_with_block_transform(tmp_path):
    seen = []

    def plant(block, first):
        seen.append((first, len(block)))
        block[:, 7] = (first + np.arange(len(block))) * 1e-7  # a ramp in absolute samples
        return block

    cbin = signals.write_demo_lf(tmp_path, n_seconds=5.0, seed=0, transform=plant)
    assert seen == [(0, 10000), (10000, 2500)]
    ramp = spikeglx.Reader(cbin)[:, 7]
    np.testing.assert_allclose(ramp, np.arange(12500) * 1e-7, atol=signals.NP1_LF_VOLTS_PER_BIT / 2 + 1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="outside 0..383"):
        signals.synthetic_lfp(1.0, dead=(400,))
    with pytest.raises(ValueError, match="n_outside"):
        signals.synthetic_lfp(1.0, n_outside=380)
    with pytest.raises(ValueError, match="positive"):
        signals.synthetic_lfp(0.0)
    with pytest.raises(ValueError, match=r"\(n_samples, 384\)"):
        signals.write_lf_cbin(np.zeros((100, 10)), "/nonexistent-never-created")


def test_embedded_meta_template_is_the_reference():
    ref = REFERENCE / "spikeglx" / "sample3B_g0_t0.imec1.lf.meta"
    if not ref.exists():
        pytest.skip(f"reference data not found at {ref}")
    assert signals.np1_lf_meta_template() == ref.read_text()


def test_generated_meta_carries_the_np1_shank_map(reference_dir):
    """spikeglx reads the probe geometry from ~snsShankMap; ours is SpikeGLX's own (site 191 unused)."""
    from ibl_ephys_data.demo.signals import np1_shank_map

    ap_meta = (reference_dir / "spikeglx" / "sample3B_g0_t0.imec1.ap.meta").read_text().splitlines()
    assert np1_shank_map() == next(line.strip() for line in ap_meta if line.startswith("~snsShankMap="))


def test_region_signatures_follow_the_table_and_keep_the_planted_labels():
    from ibl_ephys_data.atlas import acronym_to_id

    ids = acronym_to_id()
    # tip to top: 120 channels of PO (steep, weak theta), 120 of CA1 (strong theta), 104 of VISa (flat)
    region_ids = np.r_[np.full(120, ids["PO"]), np.full(120, ids["CA1"]), np.full(104, ids["VISa5"]), np.zeros(40)]
    dead, noisy = (37,), (80, 263)
    x = signals.synthetic_lfp(8.0, seed=4, dead=dead, noisy=noisy, n_outside=40,
                              region_ids=tuple(region_ids.astype(int)))
    for first in (0, 10000):  # regional cross-fades must not look like bad channels to IBL's detector
        labels, _ = detect_bad_channels(x[first:first + 10000].T, fs=FS, psd_hf_threshold=1.4)
        np.testing.assert_array_equal(labels, signals.planted_labels(dead, noisy, 40))
    f, p = scipy.signal.welch((x - np.median(x, axis=1, keepdims=True)).T, fs=FS, nperseg=2500)  # CAR

    def band(lo: float, hi: float, channels: slice) -> float:
        good = np.setdiff1d(np.arange(384)[channels], [*dead, *noisy])
        return float(np.median(p[good][:, (f >= lo) & (f < hi)].sum(axis=1)))

    po, ca1, visa = slice(20, 100), slice(140, 220), slice(250, 330)  # away from the 100-µm cross-fades
    sig = signals.REGION_SIGNATURES
    assert sig["CA1"].theta_uv > sig["PO"].theta_uv and sig["VISa"].flatness > sig["PO"].flatness
    assert band(6, 9, ca1) > 3 * band(6, 9, po)  # theta 80 µV vs 15 µV
    # 1/f slope: the flat VISa background holds more 30-80 Hz power per 1-4 Hz power than steep PO
    assert band(30, 80, visa) / band(1, 4, visa) > 2 * band(30, 80, po) / band(1, 4, po)
    with pytest.raises(ValueError, match="one Allen id per channel"):
        signals.synthetic_lfp(1.0, region_ids=(1, 2))
