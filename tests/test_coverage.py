"""Coverage across datasets: external channel imports, the coverage table, 2D / 3D overlays, the report."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ibl_ephys_data import coverage as C
from ibl_ephys_data.atlas import NON_REGIONS, region_table, xyz_to_ccf_um
from ibl_ephys_data.viz import figures as F
from ibl_ephys_data.workspace import Workspace, write_parquet

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
REPRO_CHANNELS = REFERENCE / "repro_ephys_channels.csv"
MIDLINE = 5739.0
#: IBL insertions (all in the left hemisphere): pid -> (releases, [(Allen id, channels), ...])
IBL = {
    "pid-bwm": ("bwm", [(382, 20), (218, 10), (312782562, 5), (997, 3), (0, 2)]),  # CA1 LP VISa5 root void
    "pid-both": ("bwm,repro-ephys", [(10703, 12), (1020, 10), (382, 8)]),  # DG-mo PO CA1
    "pid-rs": ("repro-ephys", [(218, 10), (312782562, 10)]),  # LP VISa5
    "pid-orphan": (None, [(128, 6)]),  # MRN, not in the catalog
}
SOURCE = "allen-vc"


def _ibl_channels(pid: str, k: int, regions: list[tuple[int, int]]) -> pd.DataFrame:
    ids = np.concatenate([np.full(n, rid) for rid, n in regions])
    n = len(ids)
    axial = 20.0 * np.arange(n)
    xyz = np.c_[np.full(n, -0.002 - 0.0003 * k), np.full(n, -0.002), -0.004 + axial / 1e6]
    ccf = xyz_to_ccf_um(xyz)
    rt = region_table(ids, xyz[:, 0])
    return pd.DataFrame({"pid": pid, "eid": f"eid-{k}", "raw_ind": np.arange(n), "axial_um": axial,
                         "lateral_um": 11.0, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                         "ccf_ap_um": ccf[:, 0], "ccf_dv_um": ccf[:, 1], "ccf_ml_um": ccf[:, 2],
                         **{c: rt[c].to_numpy() for c in rt.columns}})


def make_ibl_workspace(root: Path) -> Workspace:
    ws = Workspace(root).create()
    channels = pd.concat([_ibl_channels(pid, k, regions)
                          for k, (pid, (_, regions)) in enumerate(IBL.items())], ignore_index=True)
    write_parquet(channels, ws.channels)
    catalog = pd.DataFrame({"pid": [p for p, (r, _) in IBL.items() if r], "lab": "lab",
                            "releases": [r for r, _ in IBL.values() if r]})
    write_parquet(catalog, ws.catalog)
    return ws


def allensdk_csv(path: Path) -> pd.DataFrame:
    """Two probes of one session: 1001 left (VISp, LGd), 1002 right (VISp, CA1) with 3 unlabelled rows,
    one row with only an acronym (LP) and one row without coordinates."""
    rows = []

    def add(probe: int, ml: float, n: int, sid: float, acronym: object) -> None:
        for _ in range(n):
            k = len(rows)
            rows.append({"id": 850000 + k, "ecephys_probe_id": probe, "local_index": k,
                         "probe_vertical_position": 20.0 * k, "probe_horizontal_position": 43.0,
                         "anterior_posterior_ccf_coordinate": 8500.0 + 10 * k,
                         "dorsal_ventral_ccf_coordinate": 1500.0 + 40 * k,
                         "left_right_ccf_coordinate": ml + k, "ecephys_structure_id": sid,
                         "ecephys_structure_acronym": acronym, "ecephys_session_id": 9001})

    add(1001, 3000.0, 6, 385, "VISp")
    add(1001, 3000.0, 4, 170, "LGd")
    add(1002, 8000.0, 5, 385, "VISp")
    add(1002, 8000.0, 5, 382, "CA1")
    add(1002, 8000.0, 3, np.nan, np.nan)  # no structure
    add(1002, 8000.0, 1, np.nan, "LP")  # acronym only
    add(1002, 8000.0, 1, 385, "VISp")
    rows[-1]["anterior_posterior_ccf_coordinate"] = np.nan  # no coordinate
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = make_ibl_workspace(tmp_path / "ws")
    allensdk_csv(tmp_path / "allen.csv")
    C.import_channels(ws, tmp_path / "allen.csv", SOURCE)
    return ws


# import -------------------------------------------------------------------------------------------
def test_allensdk_import_stores_coordinates_as_given_and_counts_unplaced_rows(tmp_path, caplog):
    ws = make_ibl_workspace(tmp_path / "ws")
    raw = allensdk_csv(tmp_path / "allen.csv")
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.coverage"):
        stored = C.import_channels(ws, tmp_path / "allen.csv", SOURCE)
    summary = stored.attrs["summary"]
    assert {k: summary[k] for k in ("layout", "n_rows", "n_stored", "n_no_coordinates", "n_outside_volume",
                                    "n_no_region", "n_unknown_region")} == {
        "layout": "allensdk", "n_rows": 25, "n_stored": 21, "n_no_coordinates": 1, "n_outside_volume": 0,
        "n_no_region": 3, "n_unknown_region": 0}
    assert "3 without a region" in caplog.text and "1 rows without coordinates" in caplog.text

    kept = raw[raw["anterior_posterior_ccf_coordinate"].notna()
               & (raw["ecephys_structure_id"].notna() | raw["ecephys_structure_acronym"].notna())]
    on_disk = pd.read_parquet(ws.external_channels)
    pd.testing.assert_frame_equal(on_disk, stored, check_like=False)
    np.testing.assert_array_equal(stored[["ccf_ap_um", "ccf_dv_um", "ccf_ml_um"]].to_numpy(),
                                  kept[["anterior_posterior_ccf_coordinate", "dorsal_ventral_ccf_coordinate",
                                        "left_right_ccf_coordinate"]].to_numpy())
    # IBL xyz (m from bregma): x = (ml - 5739) / 1e6, y = (5400 - ap) / 1e6, z = (332 - dv) / 1e6
    np.testing.assert_allclose(stored["x"], (kept["left_right_ccf_coordinate"].to_numpy() - 5739) / 1e6)
    ap = kept["anterior_posterior_ccf_coordinate"].to_numpy()
    np.testing.assert_allclose(stored["y"], (5400 - ap) / 1e6)
    np.testing.assert_allclose(stored["z"], (332 - kept["dorsal_ventral_ccf_coordinate"].to_numpy()) / 1e6)
    assert stored["acronym"].tolist() == ["VISp"] * 6 + ["LGd"] * 4 + ["VISp"] * 5 + ["CA1"] * 5 + ["LP"]
    left = stored["probe_id"] == "1001"
    assert (stored.loc[left, "lateralized_id"] < 0).all() and (stored.loc[~left, "lateralized_id"] > 0).all()
    assert stored["lateralized_id"].abs().tolist() == stored["atlas_id"].tolist()
    assert set(zip(stored["acronym"], stored["cosmos_acronym"], strict=True)) == {
        ("VISp", "Isocortex"), ("LGd", "TH"), ("CA1", "HPF"), ("LP", "TH")}
    assert stored["probe_id"].unique().tolist() == ["1001", "1002"]  # ids as written, not "1001.0"
    assert set(stored["session_id"]) == {"9001"} and stored["channel_id"].iloc[0] == "850000"
    np.testing.assert_array_equal(stored["axial_um"], kept["probe_vertical_position"])
    assert (stored["source"] == SOURCE).all()

    row = C.import_summary(ws).iloc[0]
    assert (row["source"], row["n_no_region"], row["n_no_coordinates"], row["n_stored"]) == (SOURCE, 3, 1, 21)


def test_reimport_replaces_the_rows_of_that_source_only(ws, tmp_path):
    generic = pd.DataFrame({"ccf_ap_um": [7000.0, 7100.0], "ccf_dv_um": [3000.0, 3100.0],
                            "ccf_ml_um": [4000.0, 4000.0], "acronym": ["CA1", "DG-mo"], "probe_id": "g1"})
    generic.to_csv(tmp_path / "g.csv", index=False)
    C.import_channels(ws, tmp_path / "g.csv", "generic-set")
    C.import_channels(ws, tmp_path / "allen.csv", SOURCE)
    stored = pd.read_parquet(ws.external_channels)
    assert stored["source"].value_counts().to_dict() == {SOURCE: 21, "generic-set": 2}
    assert stored.loc[stored["source"] == "generic-set", "atlas_id"].tolist() == [382, 10703]
    assert C.import_summary(ws)["source"].tolist() == [SOURCE, "generic-set"]


def test_bad_inputs_fail_in_one_clear_line(ws, tmp_path, caplog):
    neither = tmp_path / "neither.csv"
    pd.DataFrame({"x": [1.0], "y": [2.0], "region": ["CA1"]}).to_csv(neither, index=False)
    expected = (r"neither channel-table layout: expected AllenSDK columns "
                r"anterior_posterior_ccf_coordinate.*ccf_ap_um, ccf_dv_um, ccf_ml_um")
    with pytest.raises(ValueError, match=expected):
        C.import_channels(ws, neither, "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.import_channels(ws, tmp_path / "absent.csv", "x")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        C.import_channels(ws, tmp_path / "empty.csv", "x")
    for reserved in ("bwm", "repro-ephys", "IBL", "", "a,b"):
        with pytest.raises(ValueError, match="source name"):
            C.import_channels(ws, tmp_path / "allen.csv", reserved)
    with pytest.raises(ValueError, match="level='voxel' is not one of allen, beryl, cosmos"):
        C.coverage_table(ws, level="voxel")
    with pytest.raises(FileNotFoundError, match="run `ibl-ephys-data qc"):
        C.coverage_table(ws, usable_only=True)
    with pytest.raises(ValueError, match="test source 'nope' is not in the coverage table"):
        C.overlap(C.coverage_table(ws), train="bwm", test="nope")


def test_coordinates_outside_the_atlas_are_counted_and_excluded_with_a_warning(ws, tmp_path, caplog):
    rows = pd.DataFrame({"ccf_ap_um": [-50.0, 7000.0, 7000.0, 13200.0, 7000.0],
                         "ccf_dv_um": [3000.0, 3000.0, 8000.0, 3000.0, 3000.0],
                         "ccf_ml_um": [4000.0, 11500.0, 4000.0, 4000.0, 4000.0],
                         "atlas_id": [382, 382, 382, 382, 999999999], "probe_id": "p"})
    rows.to_csv(tmp_path / "out.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.coverage"):
        stored = C.import_channels(ws, tmp_path / "out.csv", "edges")
    summary = stored.attrs["summary"]
    assert (summary["n_outside_volume"], summary["n_unknown_region"], summary["n_stored"]) == (2, 1, 2)
    assert summary["unknown_regions"] == ["999999999"]
    assert "2 of 5 rows lie outside the Allen CCF volume" in caplog.text
    # the volume edges (dv 8000, ap 13200) are inside
    np.testing.assert_array_equal(stored[["ccf_ap_um", "ccf_dv_um"]].to_numpy(),
                                  [[7000, 8000], [13200, 3000]])
    # metres instead of µm: every row is outside, nothing is stored, and the summary still says so
    rows.assign(ccf_ap_um=-0.007).to_csv(tmp_path / "metres.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.coverage"):
        assert C.import_channels(ws, tmp_path / "metres.csv", "metres").empty
    summary = C.import_summary(ws).set_index("source")
    assert summary.loc["metres", ["n_rows", "n_stored", "n_outside_volume"]].tolist() == [5, 0, 5]
    assert "no row could be placed" in caplog.text


# coverage -----------------------------------------------------------------------------------------
def _direct(ws: Workspace, level: str) -> pd.DataFrame:
    """Channels and insertions per (source, region) counted straight from the workspace files."""
    id_col, acronym_col = C.LEVELS[level]
    channels = pd.read_parquet(ws.channels)
    catalog = pd.read_parquet(ws.catalog)
    frames = []
    for release in ("bwm", "repro-ephys"):
        pids = catalog.loc[catalog["releases"].str.split(",").apply(lambda r, rel=release: rel in r), "pid"]
        frames.append(channels[channels["pid"].isin(pids)].assign(source=release, ins=lambda d: d["pid"]))
    orphans = channels[~channels["pid"].isin(catalog["pid"])]
    frames.append(orphans.assign(source="ibl", ins=orphans["pid"]))
    ext = pd.read_parquet(ws.external_channels)
    frames.append(ext.assign(ins=ext["probe_id"]))
    rows = pd.concat(frames, ignore_index=True)
    counts = rows.groupby(["source", acronym_col]).agg(n_channels=("ins", "size"),
                                                       n_insertions=("ins", "nunique"))
    return (counts.reset_index().rename(columns={acronym_col: "region"}).sort_values(["source", "region"])
            .reset_index(drop=True))


@pytest.mark.parametrize("level", ["allen", "beryl", "cosmos"])
def test_coverage_counts_match_direct_counts_and_roll_up(ws, level):
    table = C.coverage_table(ws, level=level)
    pd.testing.assert_frame_equal(pd.read_parquet(ws.coverage), table)
    got = table[["source", "region", "n_channels", "n_insertions"]].sort_values(["source", "region"])
    got = got.reset_index(drop=True).astype({"n_insertions": np.int64})
    pd.testing.assert_frame_equal(got, _direct(ws, level))
    totals = table.groupby("source")["n_channels"].sum().to_dict()
    assert totals == {"allen-vc": 21, "bwm": 70, "ibl": 6, "repro-ephys": 50}  # same at every level
    np.testing.assert_allclose(table.groupby("source")["channel_fraction"].sum(), 1.0)
    assert (table["level"] == level).all() and not table["usable_only"].any()


def test_coverage_values_by_hand(ws):
    allen = C.coverage_table(ws, "allen").set_index(["source", "region"])
    assert allen.loc[("bwm", "CA1"), ["n_channels", "n_insertions"]].tolist() == [28, 2]
    assert allen.loc[("repro-ephys", "CA1"), ["n_channels", "n_insertions"]].tolist() == [8, 1]
    assert allen.loc[("allen-vc", "VISp"), ["n_channels", "n_insertions"]].tolist() == [11, 2]
    assert allen.loc[("bwm", "void"), "n_channels"] == 2 and allen.loc[("bwm", "root"), "n_channels"] == 3
    beryl = C.coverage_table(ws, "beryl").set_index(["source", "region"])
    assert beryl.loc[("repro-ephys", "VISa"), "n_channels"] == 10
    assert beryl.loc[("bwm", "DG"), "n_channels"] == 12
    cosmos = C.coverage_table(ws, "cosmos").set_index(["source", "region"])
    assert cosmos.loc[("allen-vc", "TH"), ["n_channels", "n_insertions"]].tolist() == [5, 2]  # LGd 4 + LP 1
    assert cosmos.loc[("bwm", "HPF"), "n_channels"] == 40  # CA1 28 + DG-mo 12

    only = C.regions_in_one_source(C.coverage_table(ws, "allen"))
    assert only[["region", "source", "n_channels"]].values.tolist() == [
        ["VISp", "allen-vc", 11], ["LGd", "allen-vc", 4], ["MRN", "ibl", 6]]
    both = C.overlap(C.coverage_table(ws, "allen"), train="bwm", test="allen-vc")
    assert both.loc[both["shared"], "region"].tolist() == ["CA1", "LP"]
    assert both.set_index("region").loc["CA1", ["train_channels", "test_channels"]].tolist() == [28, 5]
    assert "void" not in set(both["region"]) and "root" not in set(both["region"])
    summary = C.overlap_summary(C.coverage_table(ws, "allen"), train="bwm", test="allen-vc")
    assert (summary["test_regions"], summary["shared_regions"], summary["train_regions"]) == (4, 2, 5)
    assert summary["test_channel_fraction_shared"] == pytest.approx(6 / 21)


def test_usable_only_counts_the_channels_qc_marks_usable(ws, caplog):
    channels = pd.read_parquet(ws.channels)
    qc = channels.loc[channels["pid"] != "pid-rs", ["pid", "raw_ind"]]
    qc = qc.assign(usable=qc["raw_ind"] % 2 == 0)
    ws.qc_dir.mkdir()
    write_parquet(qc, ws.qc_channel_metrics)
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.coverage"):
        table = C.coverage_table(ws, "allen", usable_only=True).set_index(["source", "region"])
    assert "20 channels have no QC row" in caplog.text
    usable = channels.merge(qc[qc["usable"]], on=["pid", "raw_ind"])
    assert table.loc[("bwm", "CA1"), "n_channels"] == int((usable["acronym"] == "CA1").sum()) == 14
    assert ("repro-ephys", "LP") not in table.index  # pid-rs has no QC rows
    assert table.loc[("allen-vc", "VISp"), "n_channels"] == 11  # external channels have no QC: all kept
    assert table["usable_only"].all()


def test_repro_ephys_reference_is_concentrated_in_the_repeated_site(tmp_path):
    if not REPRO_CHANNELS.exists():
        pytest.skip(f"{REPRO_CHANNELS} is absent (real IBL reference data, not shipped with the repository)")
    ref = pd.read_csv(REPRO_CHANNELS)
    generic = pd.DataFrame({"ccf_ap_um": 5400 - ref["y"] * 1e6, "ccf_dv_um": 332 - ref["z"] * 1e6,
                            "ccf_ml_um": 5739 + ref["x"] * 1e6, "atlas_id": ref["atlas_id"],
                            "pid": ref["pid"]})
    generic.to_csv(tmp_path / "repro.csv", index=False)
    ws = make_ibl_workspace(tmp_path / "ws")
    stored = C.import_channels(ws, tmp_path / "repro.csv", "repro-reference")
    assert stored.attrs["summary"]["n_stored"] == len(ref) == 24576
    table = C.coverage_table(ws, "beryl")
    repro = table[table["source"] == "repro-reference"]
    regions = repro[~repro["region"].isin(NON_REGIONS)]
    top5 = regions.head(5)
    fraction = top5["n_channels"].sum() / repro["n_channels"].sum()
    # measured: DG, CA1, VISa, LP, PO (the repeated-site targets) hold 54.7 % of all 24,576 channels
    # (62.2 % of those in a region other than void / root), while the source covers 36 regions
    assert set(top5["region"]) == {"DG", "CA1", "VISa", "LP", "PO"}
    assert fraction == pytest.approx(0.547, abs=0.005) and fraction > 0.5
    assert len(regions) == 36
    assert repro["n_insertions"].max() <= 64 and top5.set_index("region").loc["CA1", "n_insertions"] == 61


# overlays and report ------------------------------------------------------------------------------
def _k3d_objects(html: Path) -> dict:
    """The objects (name -> dict) of the k3d plot embedded in a self-contained page."""
    import base64
    import zlib

    import msgpack

    data = re.search(r"var data = '([^']+)'", html.read_text()).group(1)
    return {o["name"]: o for o in msgpack.unpackb(zlib.decompress(base64.b64decode(data)))["objects"]}


def _array(field: dict) -> np.ndarray:
    return np.frombuffer(field["data"], dtype=field["dtype"]).reshape(field["shape"])


def test_2d_top_view_puts_right_hemisphere_rows_across_the_midline_from_ibl(ws):
    both = C.overlay_channels(pd.read_parquet(ws.channels), pd.read_parquet(ws.catalog),
                              pd.read_parquet(ws.external_channels))
    assert both["source"].value_counts().to_dict() == {"bwm": 40, "bwm,repro-ephys": 30, "allen-vc": 21,
                                                       "repro-ephys": 20, "ibl": 6}
    top = F.projection_coordinates(both, "top")
    ext = both["source"] == SOURCE
    right = ext & (both["pid"] == "allen-vc:1002")
    assert (top.loc[~ext, "h"] < MIDLINE).all()  # IBL: left hemisphere
    assert (top.loc[right, "h"] > MIDLINE).all() and right.sum() == 11
    assert (top.loc[ext & ~right, "h"] < MIDLINE).all()
    fig = F.projection_figure(both, "top", "source")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["allen-vc (21)", "bwm (40)", "bwm,repro-ephys (30)", "ibl (6)", "repro-ephys (20)",
                      "bregma"]
    plotted = fig.axes[0].collections[0].get_offsets()  # the first category: allen-vc
    np.testing.assert_allclose(plotted, top.loc[ext, ["h", "v"]].to_numpy())
    colours = {tuple(c.get_facecolors()[0]) for c in fig.axes[0].collections}
    assert len(colours) == 5

    overview = F.write_overview_figures(ws, ws.root / "out", formats=("png",))
    assert [p.name for p in overview.paths["ccf_source"]] == [
        "ccf_coronal_source.png", "ccf_sagittal_source.png", "ccf_top_source.png"]


def test_3d_scene_colours_every_source(ws, tmp_path):
    pytest.importorskip("k3d")
    from ibl_ephys_data.atlas import ccf_to_display
    from ibl_ephys_data.demo import synthetic_atlas as sa
    from ibl_ephys_data.viz.atlas3d import open_atlas
    from ibl_ephys_data.viz.scene3d import channels_for_scene, render_scene

    channels = channels_for_scene(ws)
    assert len(channels) == 96 + 21
    assert channels.loc[channels["source"] == SOURCE, "pid"].unique().tolist() == ["allen-vc:1001",
                                                                                   "allen-vc:1002"]
    assert len(channels_for_scene(ws, external=False)) == 96
    home = sa.build_synthetic_atlas(tmp_path / "brainglobe")
    out = render_scene(channels, color_by="source", atlas_name=sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home,
                       html=tmp_path / "scene.html")
    points = {name: o for name, o in _k3d_objects(out["html"]).items()
              if o["type"] == "Points" and name != "bregma"}
    assert {name: len(_array(o["positions"])) for name, o in points.items()} == {
        "bwm": 40, "bwm,repro-ephys": 30, "allen-vc": 21, "repro-ephys": 20, "ibl": 6}
    assert len({int(_array(o["colors"])[0]) for o in points.values()}) == 5
    # stored CCF go through the one display mirror (and brainrender's z flip), nothing else
    atlas = open_atlas(sa.SYNTHETIC_ATLAS_NAME, home)
    ext = channels.loc[channels["source"] == SOURCE, ["ccf_ap_um", "ccf_dv_um", "ccf_ml_um"]].to_numpy()
    expected = ccf_to_display(ext, int(atlas.shape[2]), float(atlas.resolution[2])) * [1, 1, -1]
    np.testing.assert_allclose(_array(points["allen-vc"]["positions"]), expected, rtol=1e-6)


def test_report_shows_the_import_summary_and_the_coverage_chart(ws):
    from ibl_ephys_data.viz.report import write_report

    C.coverage_table(ws, "beryl")
    index = write_report(ws).read_text()
    row = re.search(r"<tr><td>allen-vc</td><td>[^<]*allen\.csv</td><td>allensdk</td>((?:<td>[^<]*</td>){6})",
                    index)
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(1)) == ["25", "21", "1", "0", "3", "0"]
    assert (ws.report_dir / "figures" / "overview" / "coverage.png").exists()
    assert "<td>LGd</td>" in index and "regions only one source has" in index
    assert "channels per source: allen-vc: 21, bwm: 70, ibl: 6, repro-ephys: 50" in index
    for view in ("coronal", "sagittal", "top"):
        assert (ws.report_dir / "figures" / "overview" / f"ccf_{view}_source.png").exists()


def test_channels_per_region_is_the_one_pivot_without_void_and_root():
    """The command line's table and the report's chart both come from this pivot, so they agree."""
    table = pd.DataFrame({
        "region": ["root", "CA1", "LP", "void", "CA1", "DG", "LP"],
        "region_id": [997, 382, 218, 0, 382, 10703, 218],
        "source": ["bwm", "bwm", "bwm", "bwm", "allen", "allen", "allen"],
        "n_channels": [900, 40, 10, 500, 25, 30, 10],
        "n_insertions": [3, 2, 1, 3, 1, 1, 1],
    })
    wide = C.channels_per_region(table)
    assert list(wide.index) == ["CA1", "DG", "LP"]  # 65, 30, 20 channels: most first; void / root left out
    assert list(wide.columns) == ["allen", "bwm"]
    assert wide.loc["CA1"].tolist() == [25, 40] and wide.loc["DG"].tolist() == [30, 0]
    assert list(C.channels_per_region(table, top=2).index) == ["CA1", "DG"]
    assert C.channels_per_region(table[table["region"].isin(["void", "root"])]).empty
