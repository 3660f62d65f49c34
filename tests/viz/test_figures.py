"""2D figures: analytic content, orientation on the pixels, determinism, the real repeated-site channels."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ibl_ephys_data.atlas import BREGMA_CCF_UM
from ibl_ephys_data.viz import figures as F
from ibl_ephys_data.workspace.schema import MISSING_COLOR, VERDICT_COLORS

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
REPRO_CHANNELS = REFERENCE / "repro_ephys_channels.csv"
TAB_BLUE, TAB_ORANGE = np.array([31, 119, 180]), np.array([255, 127, 14])
QC_EXAMPLE = {  # the values of reference/qc_metrics_example.png
    "qc": "PASS", "drift_rms_um": 0.43, "alignment_qc": "1.0", "experimenter_raw_destripe": "pass",
    "snr_db": 10.23, "power_cv": 1.49, "line_noise_pct": 0.09, "spectral_slope": -2.64,
    "discontinuity_pct": 0.0,
}


def _pixels(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def _colour_pixels(fig: Figure, rgb: np.ndarray, tol: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Display coordinates (x right, y up) of the pixels of ``rgb`` inside the projection's axes."""
    image = _pixels(fig)
    ax = fig.axes[0]
    box = ax.get_window_extent()
    rows, cols = np.nonzero(np.abs(image - rgb).max(axis=2) < tol)
    y = image.shape[0] - rows
    inside = (cols > box.x0) & (cols < box.x1) & (y > box.y0) & (y < box.y1)
    return cols[inside].astype(float), y[inside].astype(float)


def _to_display(fig: Figure, h: float, v: float) -> np.ndarray:
    return fig.axes[0].transData.transform((h, v))


def _two_sided_channels(n: int = 60) -> pd.DataFrame:
    """A left-anterior-dorsal cluster and a right-posterior-ventral cluster, labelled by source."""
    rng = np.random.default_rng(1)
    left = pd.DataFrame({"ccf_ml_um": 2000 + rng.normal(0, 60, n), "ccf_ap_um": 3000 + rng.normal(0, 60, n),
                         "ccf_dv_um": 1500 + rng.normal(0, 60, n), "source": "left", "pid": "a"})
    right = pd.DataFrame({"ccf_ml_um": 9000 + rng.normal(0, 60, n), "ccf_ap_um": 10000 + rng.normal(0, 60, n),
                          "ccf_dv_um": 6000 + rng.normal(0, 60, n), "source": "right", "pid": "b"})
    return pd.concat([left, right], ignore_index=True)


def _probe_channels() -> pd.DataFrame:
    depth = np.repeat(np.arange(100) * 20.0, 2)
    ids = np.where(depth < 800, 218, np.where(depth < 1400, 382, 312782562))  # LP, CA1, VISa5
    labels = np.zeros(200, dtype="int8")
    labels[[3, 4, 5]] = 1
    labels[50] = 2
    labels[-4:] = 3
    return pd.DataFrame({"pid": "p", "raw_ind": np.arange(200), "axial_um": depth,
                         "lateral_um": np.tile([11.0, 43.0], 100), "atlas_id": ids,
                         "bad_channel_label": pd.array(labels, dtype="Int8")})


def test_projection_orientation_on_the_pixels():
    channels = _two_sided_channels()
    midline_x = {}
    for view in ("top", "coronal", "sagittal"):
        fig = F.projection_figure(channels, view=view, color_by="source")
        lx, ly = _colour_pixels(fig, TAB_BLUE)
        rx, ry = _colour_pixels(fig, TAB_ORANGE)
        assert lx.size > 50 and rx.size > 50, view
        assert lx.max() < rx.min(), f"{view}: left/anterior cluster must be left of the other"
        if view == "top":
            assert ly.min() > ry.max(), "top view: anterior must be up"
        else:
            assert ly.min() > ry.max(), f"{view}: dorsal must be up"
        if view != "sagittal":
            midline_x[view] = _to_display(fig, BREGMA_CCF_UM["ml"], 0)[0]
            assert lx.max() < midline_x[view] < rx.min()
    coords = F.projection_coordinates(channels, "top")
    np.testing.assert_array_equal(coords["h"], channels["ccf_ml_um"])
    np.testing.assert_array_equal(coords["v"], channels["ccf_ap_um"])


def test_projection_from_ibl_xyz_matches_ccf_formula():
    xyz = pd.DataFrame({"x": [-0.002], "y": [-0.0015], "z": [-0.003], "pid": ["a"], "atlas_id": [382]})
    ccf = F.ccf_coordinates(xyz)
    assert ccf.loc[0, "ml"] == pytest.approx(5739 - 2000)
    assert ccf.loc[0, "ap"] == pytest.approx(5400 + 1500)
    assert ccf.loc[0, "dv"] == pytest.approx(332 + 3000)


def test_projection_colours_and_legends():
    channels = _probe_channels().assign(ccf_ml_um=3000.0, ccf_ap_um=7000.0,
                                        ccf_dv_um=np.linspace(1000, 4000, 200))
    fig = F.projection_figure(channels, "coronal", "region")
    last_colour = fig.axes[0].collections[0].get_facecolors()[-1][:3]
    np.testing.assert_allclose(last_colour, np.array([0, 159, 172]) / 255)  # VISa5
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["LP (80)", "CA1 (60)", "VISa5 (60)", "bregma"]
    verdicts = pd.DataFrame({"pid": ["p"], "verdict": ["WARNING"], "final_verdict": ["FAIL"]})
    fig = F.projection_figure(channels, "top", "verdict", verdicts=verdicts)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["FAIL (200)", "bregma"]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_facecolors()[0][:3],
                               mcolors.to_rgb(VERDICT_COLORS["FAIL"]))


def test_projection_bad_input_is_a_clear_error():
    channels = _two_sided_channels(2)
    with pytest.raises(ValueError, match="unknown view"):
        F.projection_figure(channels, view="front")
    with pytest.raises(ValueError, match="no 'lab' column"):
        F.projection_figure(channels, color_by="lab")
    with pytest.raises(ValueError, match="verdicts table"):
        F.projection_figure(channels, color_by="verdict")
    with pytest.raises(ValueError, match="ccf_ap_um"):
        F.projection_figure(pd.DataFrame({"pid": ["a"]}))


def test_region_strip_segments_colours_and_bad_labels():
    fig = F.region_strip_figure(_probe_channels(), title="p")
    ax_regions, ax_probe = fig.axes
    rects = sorted((p for p in ax_regions.patches if isinstance(p, Rectangle)), key=lambda r: r.get_y())
    assert len(rects) == 3
    expected = [(218, [255, 144, 159], -10, 790), (382, [126, 208, 75], 790, 1390),
                (312782562, [0, 159, 172], 1390, 1990)]
    for rect, (_, rgb, lo, hi) in zip(rects, expected, strict=True):
        np.testing.assert_allclose(rect.get_facecolor()[:3], np.array(rgb) / 255)
        assert rect.get_y() == pytest.approx(lo) and rect.get_y() + rect.get_height() == pytest.approx(hi)
    assert [t.get_text() for t in ax_regions.texts] == ["LP", "CA1", "VISa5"]
    legend = [t.get_text() for t in ax_probe.get_legend().get_texts()]
    assert legend == ["dead (3)", "noisy (1)", "outside brain (4)"]


def test_region_strip_without_labels_says_so():
    channels = _probe_channels().drop(columns="bad_channel_label")
    fig = F.region_strip_figure(channels)
    assert "not computed yet" in fig.axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="axial_um"):
        F.region_strip_figure(channels.drop(columns="axial_um"))


def test_lfp_snapshot_shades_intervals_in_view():
    fs, t0 = 1000.0, 10.0
    rng = np.random.default_rng(0)
    destriped = rng.normal(0, 10, (32, 2000))
    raw = destriped + 50
    intervals = pd.DataFrame({"start_s": [10.5, 11.9, 20.0], "stop_s": [10.6, 12.5, 21.0],
                              "kind": ["jump", "cm_burst", "jump"]})
    fig = F.lfp_snapshot_figure(raw, destriped, fs, intervals, t0=t0)
    for ax, data in zip(fig.axes[:2], (raw, destriped), strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), data)
        assert ax.images[0].get_extent() == [10.0, 12.0, -0.5, 31.5]
        spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches)
        assert spans == [pytest.approx((10.5, 10.6)), pytest.approx((11.9, 12.0))]
    assert fig.axes[1].get_legend().get_title().get_text() == "2 artifact interval(s) in view"
    with pytest.raises(ValueError, match="same shape"):
        F.lfp_snapshot_figure(raw[:, :10], destriped, fs)
    with pytest.raises(ValueError, match="stop_s"):
        F.lfp_snapshot_figure(raw, destriped, fs, pd.DataFrame({"start_s": [1.0]}))


def test_channel_psd_and_heatmap_by_depth():
    fs, n = 1000.0, 20000
    t = np.arange(n) / fs
    rng = np.random.default_rng(2)
    lfp = rng.normal(0, 0.1, (4, n))
    lfp[0] += 3.0 * np.sin(2 * np.pi * 50 * t)
    freqs, psd = F.channel_psd(lfp, fs)
    assert freqs[np.argmax(psd[0])] == pytest.approx(50.0)
    df = freqs[1] - freqs[0]
    band = (freqs > 45) & (freqs < 55)
    assert psd[0, band].sum() * df == pytest.approx(3.0**2 / 2, rel=0.03)  # sine power A²/2
    fig = F.psd_heatmap_figure(lfp, fs, depth_um=np.array([300.0, 200.0, 100.0, 0.0]), fmax=100)
    image = np.asarray(fig.axes[0].images[0].get_array())
    assert image.shape[0] == 4 and np.argmax(image[:, np.argmin(np.abs(freqs[freqs <= 100] - 50))]) == 3
    with pytest.raises(ValueError, match="one per channel"):
        F.psd_heatmap_figure(lfp, fs, depth_um=[1.0])


def test_qc_panel_matches_the_example_and_colours_blamed_metrics():
    verdict = {"verdict": "WARNING", "final_verdict": "FAIL",
               "fired_rules": np.array(["line_noise_fail", "slope_steep", "prescreen_snr_fail"]),
               "fired_severities": np.array(["FAIL", "WARNING", "FAIL"]),
               "fired_metrics": np.array(["line_noise_pct", "spectral_slope", "prescreen_snr_db"]),
               "reasons": ["prose the panel never parses"]}
    lines = {column: (text, colour) for column, text, colour in F.qc_panel_lines(QC_EXAMPLE, verdict)}
    assert [text for text, _ in lines.values()] == [
        "qc: PASS", "drift_rms_um: 0.43", "alignment_qc: 1.0", "experimenter_raw_destripe: pass",
        "Mean SNR: 10.23 dB", "LFP Power Coefficient of Variation: 1.49", "Line Noise Ratio: 0.09%",
        "Spectral Slope: -2.64", "Discontinuity Percentage: 0.00%",
        "verdict: FAIL (rules: line_noise_fail, slope_steep, prescreen_snr_fail)",
    ]
    assert lines["line_noise_pct"][1] == VERDICT_COLORS["FAIL"]
    assert lines["spectral_slope"][1] == VERDICT_COLORS["WARNING"]
    assert lines["snr_db"][1] == VERDICT_COLORS["PASS"]  # the prescreen's SNR is another metric
    two = dict(verdict, fired_severities=["WARNING", "FAIL"], fired_metrics=["power_cv", "power_cv"],
               fired_rules=["power_cv_warn", "power_cv_fail"])
    worst = {column: colour for column, _, colour in F.qc_panel_lines(QC_EXAMPLE, two)}
    assert worst["power_cv"] == VERDICT_COLORS["FAIL"]  # the worst of the rules fired on it
    old_file = {column: colour for column, _, colour in F.qc_panel_lines(
        QC_EXAMPLE, {"verdict": "WARNING", "fired_rules": ["power_cv_high"], "reasons": []})}
    assert old_file["power_cv"] == "black"  # verdicts written before the severity columns: not coloured
    assert lines["qc"][1] == VERDICT_COLORS["PASS"]
    missing = dict(QC_EXAMPLE, snr_db=np.nan, qc=None)
    lines = {column: (text, colour) for column, text, colour in F.qc_panel_lines(missing)}
    assert lines["snr_db"] == ("Mean SNR: not computed", MISSING_COLOR)
    assert lines["qc"][0] == "qc: NOT_SET" and lines["verdict"][0] == "verdict: NOT_SET"
    fig = F.qc_panel_figure(QC_EXAMPLE, verdict)
    assert "Mean SNR: 10.23 dB" in [t.get_text() for t in fig.texts]


def test_qc_panel_shows_the_catalogs_alyx_fields():
    """The qc stage's metrics hold Alyx fields as numbers for the rules: the panel shows the catalog's own."""
    metrics = {"alyx_qc_level": 10.0, "alignment_qc": np.nan, "snr_db": 10.23}
    catalog = {"qc": "PASS", "alignment_qc": "high", "drift_rms_um": 0.43, "experimenter_raw_destripe": None}
    text = [t for _, t, _ in F.qc_panel_lines(metrics, None, alyx=catalog)]
    assert text[:4] == ["qc: PASS", "drift_rms_um: 0.43", "alignment_qc: high", "experimenter_raw_destripe: null"]
    assert text[4] == "Mean SNR: 10.23 dB"


def test_common_mode_bursts_finds_the_injected_burst():
    fs, t0 = 500.0, 100.0
    cm = np.random.default_rng(3).normal(0, 1, 5000)
    cm[1000:1200] += 100
    bursts = F.common_mode_bursts(cm, fs, t0=t0)
    assert len(bursts) == 1
    assert bursts.loc[0, "start_s"] == pytest.approx(t0 + 1000 / fs)
    assert bursts.loc[0, "stop_s"] == pytest.approx(t0 + 1200 / fs)
    assert F.common_mode_bursts(np.zeros(100), fs).empty


def _hashes(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _all_figures(out: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    lfp = rng.normal(0, 10, (16, 1500))
    paths = F.save_figure(F.qc_panel_figure(QC_EXAMPLE), out / "qc")
    paths += F.save_figure(F.region_strip_figure(_probe_channels()), out / "strip")
    intervals = pd.DataFrame({"start_s": [1.0], "stop_s": [1.2]})
    paths += F.save_figure(F.lfp_snapshot_figure(lfp + 5, lfp, 500.0, intervals), out / "snap")
    paths += F.save_figure(F.psd_heatmap_figure(lfp, 500.0), out / "psd")
    paths += F.ccf_projection_figures(_two_sided_channels(), out, color_by="source")
    return paths


def _few_figures(out: Path) -> list[Path]:
    paths = F.save_figure(F.qc_panel_figure(QC_EXAMPLE), out / "qc")
    return paths + F.save_figure(F.projection_figure(_two_sided_channels(), "top", "source"),
                                 out / "ccf_top_source")


def test_figures_are_byte_stable(tmp_path):
    first = _hashes(_all_figures(tmp_path / "a"))
    second = _hashes(_all_figures(tmp_path / "b"))
    assert len(first) == 14 and first == second
    assert b"<dc:date>" not in (tmp_path / "a" / "qc.svg").read_bytes()
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import test_figures as t; "
        "[print(n, h) for n, h in t._hashes(t._few_figures(Path(sys.argv[2]))).items()]"
    )
    env_out = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "c")],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    other = dict(line.split() for line in env_out.splitlines())
    assert len(other) == 4 and other == {name: first[name] for name in other}, (
        "a fresh process with another hash seed must give the same bytes")
    changed = dict(QC_EXAMPLE, snr_db=10.24)
    changed_paths = F.save_figure(F.qc_panel_figure(changed), tmp_path / "d" / "qc")
    assert _hashes(changed_paths)["qc.png"] != first["qc.png"]


def test_save_figure_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="png"):
        F.save_figure(Figure(), tmp_path / "x", formats=("jpg",))


def test_workspace_wrappers_degrade_on_an_empty_workspace(tmp_path):
    result = F.write_insertion_figures(tmp_path, "some-pid", tmp_path / "out")
    assert result.paths == {}
    assert result.missing == {
        "region_strip": "channels.parquet is missing",
        "lfp_snapshot": "lfp.zarr is missing: run `ibl-ephys-data lfp`",
        "psd_heatmap": "lfp.zarr is missing: run `ibl-ephys-data lfp`",
        "qc_panel": "neither qc/metrics.parquet nor catalog.parquet has this insertion",
    }
    overview = F.write_overview_figures(tmp_path, tmp_path / "out")
    assert overview.paths == {} and set(overview.missing) == {"ccf_region", "ccf_verdict", "ccf_source"}
    assert not (tmp_path / "out").exists()


def test_overview_overlays_external_channels_by_source(tmp_path):
    ours = _two_sided_channels().drop(columns="source").assign(atlas_id=382)
    ours.to_parquet(tmp_path / "channels.parquet")
    theirs = ours.head(10).assign(source="Allen Visual Coding", pid="allen-1")
    theirs.to_parquet(tmp_path / "external_channels.parquet")
    result = F.write_overview_figures(tmp_path, tmp_path / "out", formats=("png",))
    assert [p.name for p in result.paths["ccf_source"]] == [
        "ccf_coronal_source.png", "ccf_sagittal_source.png", "ccf_top_source.png"]
    assert "qc/verdicts.parquet is missing" in result.missing["ccf_verdict"]
    fig = F.projection_figure(pd.concat([ours.assign(source="IBL"), theirs]), "top", "source")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "Allen Visual Coding (10)", "IBL (120)", "bregma"]


@pytest.fixture(scope="module")
def repro_channels() -> pd.DataFrame:
    if not REPRO_CHANNELS.exists():
        pytest.skip(f"{REPRO_CHANNELS} is absent (real IBL reference data, not shipped with the repository)")
    df = pd.read_csv(REPRO_CHANNELS)
    return df.assign(ccf_ap_um=5400 - df["y"] * 1e6, ccf_dv_um=332 - df["z"] * 1e6,
                     ccf_ml_um=5739 + df["x"] * 1e6, acronym=df["region_acronym"], source="repeated site")


def test_top_view_of_the_repeated_site(repro_channels):
    fig = F.projection_figure(repro_channels, view="top", color_by="source")
    ax = fig.axes[0]
    plotted = np.vstack([c.get_offsets() for c in ax.collections])
    coords = F.projection_coordinates(repro_channels, "top")
    np.testing.assert_allclose(plotted, coords[["h", "v"]].to_numpy())
    assert repro_channels["pid"].nunique() == 64 and len(plotted) == len(repro_channels)
    assert (plotted[:, 0] < 5739).all(), "every channel of the repeated site is in the left hemisphere"
    mean_ap = coords.groupby(repro_channels["pid"])["v"].mean()
    assert mean_ap.between(6900, 8600).all() and len(mean_ap) == 64

    x, y = _colour_pixels(fig, TAB_BLUE)
    midline = _to_display(fig, BREGMA_CCF_UM["ml"], 0)[0]
    left_edge = ax.get_window_extent().x0
    assert x.size > 500 and (x < midline).all() and (x > left_edge).all()
    top_ap, bottom_ap = _to_display(fig, 0, 6000)[1], _to_display(fig, 0, 9500)[1]
    assert (y < top_ap).all() and (y > bottom_ap).all(), "points sit around AP 6900-8600 µm (anterior up)"
