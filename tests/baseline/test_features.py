"""Band powers against signals whose power per band is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from ibl_ephys_data.baseline.features import BANDS, band_powers, usable_bands, welch_nperseg

FS = 1250.0


def test_bands_stop_below_the_nyquist_of_the_stored_rate():
    assert [b[0] for b in usable_bands(FS)] == [b[0] for b in BANDS]  # 500 Hz <= 0.8 x 625 Hz
    assert [b[0] for b in usable_bands(250.0)] == ["delta", "theta", "alpha", "beta", "gamma_low"]  # <= 100 Hz
    with pytest.raises(ValueError, match="too low"):
        usable_bands(2.0)
    assert welch_nperseg(FS, 3750) == 1250 and welch_nperseg(FS, 600) == 600


def test_sine_power_lands_in_its_band():
    t = np.arange(int(3 * FS)) / FS
    amplitude = 80.0
    x = np.stack([amplitude * np.sin(2 * np.pi * 6.0 * t), amplitude * np.sin(2 * np.pi * 20.0 * t)])
    bands = usable_bands(FS)
    p = band_powers(x, FS, bands)
    names = [b[0] for b in bands]
    # a sine of amplitude A carries A²/2; a Hann main lobe (±2 bins at 1 Hz) stays inside a band whose
    # edges are >= 2 Hz away, so the band holds all but a few 1e-4 of it (0.5 % margin)
    assert p[0, names.index("theta")] == pytest.approx(np.log10(amplitude**2 / 2), abs=np.log10(1.005))
    assert p[1, names.index("beta")] == pytest.approx(np.log10(amplitude**2 / 2), abs=np.log10(1.005))
    assert p[0, names.index("theta")] - np.delete(p[0], names.index("theta")).max() > 5


def test_white_noise_power_grows_with_bandwidth():
    rng = np.random.default_rng(0)
    sigma = 10.0
    x = rng.normal(0, sigma, (400, int(3 * FS)))
    bands = usable_bands(FS)
    p = band_powers(x, FS, bands).mean(axis=0)
    expected = np.log10([sigma**2 / (FS / 2) * (hi - lo) for _, lo, hi in bands])
    # 400 windows x 5 Welch segments: the mean log power of even the 3-bin delta band is within ~0.02
    # of the truth (log of a chi-square mean is biased low by ~1/(n ln 10) per window, ~0.03 for 15 dof)
    np.testing.assert_allclose(p, expected, atol=0.05)
