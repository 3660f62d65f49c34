"""Display-side mirroring: stored CCF -> brainglobe 'asr' display coordinates, checked against brainglobe."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from iblatlas.atlas import ALLEN_CCF_LANDMARKS_MLAPDV_UM

from ibl_ephys_data.atlas import BREGMA_CCF_APDVML_UM, ccf_to_display
from ibl_ephys_data.demo import synthetic_atlas as sa

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"


def ibl_to_ccf(x_um: float, y_um: float = -2000.0, z_um: float = -2000.0) -> np.ndarray:
    """DESIGN §4: ml = 5739 + x, ap = 5400 - y, dv = 332 - z (µm), as an (ap, dv, ml) row."""
    return np.array([[5400.0 - y_um, 332.0 - z_um, 5739.0 + x_um]])


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    from brainglobe_atlasapi import BrainGlobeAtlas

    home = sa.build_synthetic_atlas(tmp_path_factory.mktemp("brainglobe"))
    return BrainGlobeAtlas(sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home, check_latest=False)


def test_mirror_is_11375_minus_ml_for_the_25um_allen_atlas():
    rows = [[5400, 332, 5739], [7000, 3000, 3500], [0, 0, 0], [13175, 7975, 11375]]
    ccf = np.array(rows, dtype=float)
    display = ccf_to_display(ccf)
    np.testing.assert_array_equal(display[:, :2], ccf[:, :2])
    np.testing.assert_array_equal(display[:, 2], [5636.0, 7875.0, 11375.0, 0.0])
    np.testing.assert_array_equal(ccf_to_display(display), ccf)  # an involution: mirroring twice is identity
    np.testing.assert_array_equal(ccf, rows)  # stored values are never mirrored in place


def test_mirror_follows_the_drawn_atlas_voxel_grid():
    """Voxel i <-> n - 1 - i: the 100 µm atlas (114 voxels wide) mirrors as 11300 - ml."""
    display = ccf_to_display(np.array([[1.0, 2.0, 300.0]]), ml_voxels=114, ml_resolution_um=100.0)
    np.testing.assert_array_equal(display, [[1.0, 2.0, 11000.0]])


def test_bregma_is_iblatlas_landmark_in_apdvml_order():
    ml, ap, dv = ALLEN_CCF_LANDMARKS_MLAPDV_UM["bregma"]
    np.testing.assert_array_equal(BREGMA_CCF_APDVML_UM, [ap, dv, ml])
    np.testing.assert_array_equal(BREGMA_CCF_APDVML_UM, [5400.0, 332.0, 5739.0])
    np.testing.assert_array_equal(ibl_to_ccf(0.0, 0.0, 0.0)[0], BREGMA_CCF_APDVML_UM)  # IBL origin is bregma


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((4, 2)), np.zeros((2, 3, 1))])
def test_bad_shapes_raise_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"\(n, 3\) array of \(ap, dv, ml\)"):
        ccf_to_display(bad)
    with pytest.raises(ValueError, match="must be positive"):
        ccf_to_display(np.zeros((1, 3)), ml_voxels=0)


def test_left_channel_lands_in_brainglobe_left_hemisphere(atlas):
    """x < 0 (IBL left) must land where brainglobe's own hemisphere map says 'left', and x > 0 'right'."""
    assert atlas.shape == sa.SHAPE and atlas.resolution == (sa.RESOLUTION_UM,) * 3
    assert atlas.shape_um == (13200.0, 8000.0, 11400.0)  # the Allen CCF extents
    for x_um, side in [(-2000.0, "left"), (-1000.0, "left"), (1000.0, "right"), (2500.0, "right")]:
        ccf = ibl_to_ccf(x_um)
        display = ccf_to_display(ccf, ml_voxels=atlas.shape[2], ml_resolution_um=atlas.resolution[2])
        assert atlas.hemisphere_from_coords(display[0], microns=True, as_string=True) == side
        # drawing stored CCF unmirrored (the bug this module exists for) puts it in the other hemisphere
        wrong = atlas.hemisphere_from_coords(ccf[0], microns=True, as_string=True)
        assert wrong == {"left": "right", "right": "left"}[side]


def test_left_channel_reaches_the_left_copy_of_its_region(atlas):
    """A channel at the synthetic CA1 of the IBL-left hemisphere is labelled CA1 in the left hemisphere."""
    ml_mid = (sa.SHAPE[2] - 1) * sa.RESOLUTION_UM / 2
    display_ml = ml_mid + 2100.0  # synthetic CA1 centre, brainglobe-left side (asr z grows to the left)
    ccf = np.array([[7400.0, 1600.0, (sa.SHAPE[2] - 1) * sa.RESOLUTION_UM - display_ml]])
    assert ccf[0, 2] < 5739.0  # IBL: left of bregma
    display = ccf_to_display(ccf, ml_voxels=sa.SHAPE[2], ml_resolution_um=sa.RESOLUTION_UM)
    assert atlas.structure_from_coords(display[0], microns=True, as_acronym=True) == "CA1"
    assert atlas.hemisphere_from_coords(display[0], microns=True, as_string=True) == "left"


@pytest.mark.skipif(not (REFERENCE / "repro_ephys_channels.csv").exists(), reason="shared/reference absent")
def test_all_reference_repeated_site_channels_are_drawn_in_the_left_hemisphere(atlas):
    """All 64 real repeated-site insertions (x < 0) are drawn in brainglobe's left hemisphere."""
    columns = ["x", "y", "z", "pid", "region_acronym"]
    ref = pd.read_csv(REFERENCE / "repro_ephys_channels.csv", usecols=columns)
    assert ref["pid"].nunique() == 64 and (ref["x"] < 0).all()
    ccf = np.c_[5400.0 - ref["y"] * 1e6, 332.0 - ref["z"] * 1e6, 5739.0 + ref["x"] * 1e6]
    allen_25um = np.floor(ccf_to_display(ccf) / 25.0).astype(int)
    assert (allen_25um[:, 2] >= 456 // 2).all()  # brainglobe's symmetric split: ML index >= n / 2 is left
    display = ccf_to_display(ccf, ml_voxels=sa.SHAPE[2], ml_resolution_um=sa.RESOLUTION_UM)
    index = np.floor(display / sa.RESOLUTION_UM).astype(int)
    assert ((index >= 0) & (index < sa.SHAPE)).all()
    assert (atlas.hemispheres[tuple(index.T)] == atlas.left_hemisphere_value).all()
    in_brain = ~ref["region_acronym"].isin(["void", "root"]).to_numpy()
    assert (atlas.annotation[tuple(index[in_brain].T)] > 0).mean() > 0.97  # the synthetic brain holds them
