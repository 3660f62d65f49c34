"""3D scene: headless renders against the synthetic atlas, handedness at pixel level, HTML export, errors."""

import base64
import logging
import re
import shutil
import sys
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
from brainglobe_server import AtlasServer, atlas_archive
from matplotlib.image import imread

from ibl_ephys_data.demo import synthetic_atlas as sa
from ibl_ephys_data.errors import AtlasUnavailable, MissingStageError
from ibl_ephys_data.viz import atlas3d
from ibl_ephys_data.viz.scene3d import channels_for_scene, render_scene
from ibl_ephys_data.workspace import Workspace, write_parquet

SIZE = (480, 360)
LAB_COLOR = np.array([0x1F, 0x77, 0xB4])  # scene3d.PALETTE[0]: the colour of the only lab
CA1_RGB = np.array([126, 208, 75])  # Allen's CA1 colour
REPEATED_SITE = {"CA1": 382, "LP": 218, "PO": 1020, "VISa5": 312782562}  # Allen ids


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The synthetic brainglobe atlas, built once for this module."""
    return sa.build_synthetic_atlas(tmp_path_factory.mktemp("brainglobe"))


def probe(pid: str, x_um: float, y_um: float = -2000.0, lab: str = "lab_a", n: int = 384) -> pd.DataFrame:
    """A vertical Neuropixels-like probe at IBL (x, y) µm from bregma, 3.84 mm long, tip at 4.4 mm depth."""
    axial = 20.0 * (np.arange(n) // 2)
    z_um = -600.0 - (axial.max() - axial)
    depth = np.digitize(axial, [960, 1920, 2880])  # four regions along the probe, PO deepest
    acronym = np.array(["PO", "LP", "CA1", "VISa5"])[depth]
    return pd.DataFrame({
        "pid": pid, "raw_ind": np.arange(n), "axial_um": axial, "ccf_ap_um": 5400.0 - y_um,
        "ccf_dv_um": 332.0 - z_um, "ccf_ml_um": 5739.0 + x_um, "lab": lab, "acronym": acronym,
        "atlas_id": [REPEATED_SITE[a] for a in acronym],
    })


def rgb(path: Path) -> np.ndarray:
    return (imread(path)[..., :3] * 255).round().astype(int)


def near(img: np.ndarray, color: np.ndarray, tol: int = 40) -> np.ndarray:
    return np.abs(img - color).sum(axis=-1) < tol


def brain_centre_x(img: np.ndarray) -> float:
    """Midline of the picture: halfway between the brain outline's dark edges on the middle row."""
    row = img[img.shape[0] // 2]
    (xs,) = np.nonzero(row.sum(axis=-1) < 200)
    return (xs.min() + xs.max()) / 2


def snapshot(html: Path) -> dict:
    """The k3d plot embedded in a self-contained page: objects (name -> dict) and camera."""
    data = re.search(r"var data = '([^']+)'", html.read_text()).group(1)
    plot = msgpack.unpackb(zlib.decompress(base64.b64decode(data)))
    return {"objects": {o["name"]: o for o in plot["objects"]}, "camera": np.array(plot["plot"]["camera"])}


def array(field: dict) -> np.ndarray:
    return np.frombuffer(field["data"], dtype=field["dtype"]).reshape(field["shape"])


def test_synthetic_atlas_is_a_valid_brainglobe_atlas_in_the_ccf_frame(home):
    from brainglobe_atlasapi import BrainGlobeAtlas
    from brainglobe_atlasapi.atlas_generation import validate_atlases as v

    atlas = BrainGlobeAtlas(sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home, check_latest=False)
    checks = [f for f in v.get_all_validation_functions() if f is not v.validate_atlas_name_listed]
    for check in [*checks, v.validate_metadata]:  # brainglobe's own validators (the name is not in its list)
        assert check(atlas), check.__name__
    assert atlas.shape_um == (13200.0, 8000.0, 11400.0)
    assert set(sa.LEAF_REGIONS) <= set(atlas.lookup_df["acronym"])
    assert atlas.structures["CA1"]["rgb_triplet"] == list(CA1_RGB)
    assert atlas.structures["CA1"]["structure_id_path"][:2] == [997, 8]  # Allen's root > grey > ...
    root = atlas.mesh_from_structure("root").points
    np.testing.assert_allclose(root.min(axis=0), [800, 100, 950], atol=1)  # the BRAIN ellipsoid, in µm
    np.testing.assert_allclose(root.max(axis=0), [12000, 7100, 10350], atol=1)
    (ap, dv, off), _ = sa.LEAF_REGIONS["LP"]
    for side in (-1, 1):  # symmetric: each leaf region on both sides of the volume midline
        centre = (ap, dv, (sa.SHAPE[2] - 1) * sa.RESOLUTION_UM / 2 + side * off)
        assert atlas.structure_from_coords(centre, microns=True, as_acronym=True) == "LP"
    assert sa.build_synthetic_atlas(home) == home  # kept, not rebuilt


def test_screenshot_renders_headless_and_is_not_blank(home, tmp_path):
    channels = pd.concat([probe("p1", -2000.0), probe("p2", -1500.0, y_um=-2300.0)])
    out = render_scene(channels, color_by="region", regions=["CA1", "LP"], atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                       brainglobe_dir=home, screenshot=tmp_path / "scene.png", size=SIZE)
    assert out == {"screenshot": tmp_path / "scene.png"}
    img = rgb(out["screenshot"])
    assert img.shape == (SIZE[1], SIZE[0], 3)
    white = (img == 255).all(axis=-1)
    assert 0.15 < 1 - white.mean() < 0.8  # a brain on a white background, not a blank or saturated frame
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # shading, meshes, points, text
    assert near(img, CA1_RGB, 60).sum() > 100  # CA1 channels in Allen green (shaded spheres)
    lp = near(img, np.array([255, 144, 159]), 30) | near(img, np.array([242, 185, 193]), 30)
    assert lp.sum() > 30  # the LP mesh (translucent pink) is drawn too
    assert (img.std(axis=(0, 1)) > 20).all()


@pytest.mark.parametrize(("camera", "style", "left", "right"), [
    ("frontal", "points", {"x_um": -2000.0}, {"x_um": 2000.0}),  # IBL x < 0 is the animal's left
    ("top", "lines", {"x_um": -2000.0}, {"x_um": 2000.0}),
    ("sagittal", "points", {"x_um": -2000.0, "y_um": 1000.0}, {"x_um": -2000.0, "y_um": -3000.0}),  # anterior
])
def test_left_hemisphere_probe_is_drawn_on_the_viewers_left(home, tmp_path, camera, style, left, right):
    """One probe, then its mirror image: pixels on either side of the brain outline's centre.

    frontal / top: x = -2 mm (left) vs +2 mm; sagittal: 2 mm anterior vs posterior of the brain's centre.
    """
    images = {}
    for side, where in (("left", left), ("right", right)):
        path = tmp_path / f"{side}.png"
        render_scene(probe("p1", **where), color_by="lab", atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                     brainglobe_dir=home, screenshot=path, camera=camera, style=style, size=SIZE)
        images[side] = rgb(path)
    on_left, on_right = (near(images[s], LAB_COLOR, 80) for s in ("left", "right"))
    only_left, only_right = on_left & ~on_right, on_right & ~on_left  # the legend is in both and cancels
    assert only_left.sum() > 20 and only_right.sum() > 20
    centre = brain_centre_x(images["left"])
    assert abs(centre - SIZE[0] / 2) < 0.1 * SIZE[0]
    _, xs_left = np.nonzero(only_left)
    _, xs_right = np.nonzero(only_right)
    assert xs_left.max() < centre - 20
    assert xs_right.min() > centre + 20
    # mirror images: both probes ~2 mm from the centre
    assert abs((centre - xs_left.mean()) - (xs_right.mean() - centre)) < 0.05 * SIZE[0]


def test_html_is_self_contained_subsampled_and_left_is_left(home, tmp_path):
    channels = pd.concat([probe("p1", -2000.0), probe("p2", -1000.0), probe("p3", 1500.0, lab="lab_b")])
    out = render_scene(channels, color_by="region", regions=["CA1"], atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                       brainglobe_dir=home, html=tmp_path / "scene.html", max_points=500)
    html = out["html"]
    text = html.read_text()
    assert re.search(r"<script[^>]+src=", text) is None and "<link" not in text  # nothing fetched
    assert html.stat().st_size < 3e6
    plot = snapshot(html)
    objects = plot["objects"]
    assert {"brain outline", "CA1 mesh", "bregma", "legend", "CA1", "PO", "LP", "VISa5"} <= set(objects)
    assert objects["CA1 mesh"]["type"] == "Mesh" and objects["brain outline"]["type"] == "Mesh"
    assert objects["CA1 mesh"]["color"] == 0x7ED04B  # Allen's CA1 green, for the mesh and its channels
    assert set(array(objects["CA1"]["colors"])) == {0x7ED04B}
    assert set(array(objects["VISa5"]["colors"])) == {0x009FAC}  # found by atlas_id
    points = {k: array(o["positions"]) for k, o in objects.items() if o["type"] == "Points" and k != "bregma"}
    # 1152 channels, at most 500: every 3rd channel of each probe (ceil(384 / 3) = 128 each)
    assert sum(len(p) for p in points.values()) == 3 * 128
    # k3d frame = brainrender's display frame: (ap, dv, -(11300 - ml)) for the 114-voxel-wide 100 µm atlas
    np.testing.assert_allclose(array(objects["bregma"]["positions"]), [[5400, 332, -(11300 - 5739)]])
    legend = objects["legend"]["text"]
    assert legend.index("VISa5") < legend.index("bregma") and "#7ed04b" in legend
    # project every channel with the page's camera: screen x = (p - target) . (view direction x view-up)
    pos, target, up = plot["camera"][:3], plot["camera"][3:6], plot["camera"][6:]
    xyz = np.vstack(list(points.values()))
    screen_x = (xyz - target) @ np.cross(target - pos, up)
    ccf_ml = xyz[:, 2] + 11300
    assert (ccf_ml < 5739).sum() == 2 * 128
    np.testing.assert_array_equal(screen_x < 0, ccf_ml < 5739)


def test_no_display_and_no_output_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(ValueError, match=r"no display .* pass --screenshot out\.png or --html out\.html"):
        render_scene(probe("p1", -2000.0))
    with pytest.raises(ValueError, match=r"interactive=True needs a display.*--screenshot"):
        render_scene(probe("p1", -2000.0), interactive=True)


def _network(monkeypatch, proxy: str, ca: Path | None = None) -> None:
    """Send every HTTP(S) request of this test through ``proxy`` (requests honours these variables)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if ca is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))


def test_first_use_downloads_the_atlas_through_brainglobe(monkeypatch, home, tmp_path, caplog):
    """A first-time user: the atlas is not on disk, brainglobe downloads it (from a loopback stand-in)."""
    archive = atlas_archive(next(home.glob(f"{sa.SYNTHETIC_ATLAS_NAME}_v*")), tmp_path / "atlas.tar.gz")
    files = {"last_versions.conf": f"[atlases]\n{sa.SYNTHETIC_ATLAS_NAME} = {sa.VERSION}\n".encode(),
             f"{sa.SYNTHETIC_ATLAS_NAME}_v{sa.VERSION}.tar.gz": archive.read_bytes()}
    fresh = tmp_path / "new_user"
    with AtlasServer(tmp_path, files) as server:
        _network(monkeypatch, server.url, server.ca)
        with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.viz.atlas3d"):
            written = render_scene(probe("p1", -2000.0), regions=["CA1"], atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                                   brainglobe_dir=fresh, html=tmp_path / "scene.html")
    assert [r.getMessage() for r in caplog.records] == [
        f"brainglobe atlas {sa.SYNTHETIC_ATLAS_NAME} is not in {fresh}: downloading it now from brainglobe's "
        "server, once"]
    archive_path = f"/brainglobe/atlases/raw/master/{sa.SYNTHETIC_ATLAS_NAME}_v{sa.VERSION}.tar.gz"
    assert ("gin.g-node.org", archive_path) in server.requests  # brainglobe's own download ran
    assert atlas3d.atlas_available_locally(sa.SYNTHETIC_ATLAS_NAME, fresh)
    assert written["html"].stat().st_size > 10_000 and "CA1 mesh" in snapshot(written["html"])["objects"]


def test_offline_without_the_atlas_announces_the_download_then_fails_in_one_line(monkeypatch, tmp_path,
                                                                                   caplog):
    _network(monkeypatch, "http://127.0.0.1:9")  # the discard port: nothing listens, every request fails
    with caplog.at_level(logging.WARNING, logger="ibl_ephys_data.viz.atlas3d"):
        with pytest.raises(AtlasUnavailable) as err:
            render_scene(probe("p1", -2000.0), atlas_name="allen_mouse_25um", brainglobe_dir=tmp_path,
                         screenshot=tmp_path / "x.png")
    message = str(err.value)
    assert "\n" not in message and "allen_mouse_25um" in message and "could not be downloaded" in message
    assert "brainglobe_dir=" in message
    assert [r.getMessage() for r in caplog.records] == [
        f"brainglobe atlas allen_mouse_25um is not in {tmp_path}: downloading it now from brainglobe's server, once"]
    assert not (tmp_path / "x.png").exists()
    assert not atlas3d.atlas_available_locally("allen_mouse_25um", tmp_path)


def test_a_missing_mesh_fails_in_one_line(home, tmp_path):
    from brainglobe_atlasapi import BrainGlobeAtlas

    copy = shutil.copytree(home, tmp_path / "bg")
    atlas = BrainGlobeAtlas(sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=copy, check_latest=False)
    Path(atlas.meshfile_from_structure("CA1")).unlink()
    with pytest.raises(AtlasUnavailable, match=r"lacks the meshes of CA1: delete that folder"):
        render_scene(probe("p1", -2000.0), regions=["CA1"], atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                     brainglobe_dir=copy, html=tmp_path / "x.html")


def test_bad_inputs_name_the_input_and_the_fix(home, tmp_path):
    ch = probe("p1", -2000.0)
    kwargs = {"atlas_name": sa.SYNTHETIC_ATLAS_NAME, "brainglobe_dir": home, "html": tmp_path / "x.html"}
    with pytest.raises(MissingStageError, match=r"pids not in the channels table: nope .*channels --pids nope"):
        render_scene(ch, pids=["p1", "nope"], **kwargs)
    with pytest.raises(ValueError, match=r"regions \['XYZ'\] are not in atlas"):
        render_scene(ch, regions=["XYZ"], **kwargs)
    with pytest.raises(ValueError, match=r"color_by='verdict' needs a 'final_verdict' column.*qc"):
        render_scene(ch, color_by="verdict", **kwargs)
    with pytest.raises(ValueError, match="is not one of region"):
        render_scene(ch, color_by="depth", **kwargs)
    with pytest.raises(ValueError, match="look like metres"):
        render_scene(ch.assign(ccf_ap_um=0.007, ccf_dv_um=0.003, ccf_ml_um=0.004), **kwargs)
    with pytest.raises(ValueError, match=r"lacks columns \['ccf_ml_um'\]"):
        render_scene(ch.drop(columns="ccf_ml_um"), **kwargs)
    with pytest.raises(ValueError, match="camera='side' is not one of frontal"):
        render_scene(ch, camera="side", **kwargs)
    with pytest.raises(ValueError, match=r"must end in \.png"):
        render_scene(ch, screenshot=tmp_path / "x.jpg", atlas_name=sa.SYNTHETIC_ATLAS_NAME,
                     brainglobe_dir=home)
    assert not (tmp_path / "x.html").exists()


def test_verdict_colours_and_channels_for_scene_merge(home, tmp_path):
    ws = Workspace(tmp_path / "ws").create()
    channels = pd.concat([probe(p, x) for p, x in (("p1", -2000.0), ("p2", -1000.0), ("p3", -500.0))])
    channels = channels.drop(columns="lab")
    write_parquet(channels, ws.channels)
    write_parquet(pd.DataFrame({"pid": ["p1", "p2", "p3"], "lab": ["a", "b", "a"],
                                "releases": ["bwm", "bwm,repro-ephys", "repro-ephys"]}), ws.catalog)
    write_parquet(pd.DataFrame({"pid": ["p1", "p2"], "verdict": ["PASS", "FAIL"]}), ws.qc_verdicts)
    merged = channels_for_scene(ws.root)
    assert len(merged) == 3 * 384
    per_pid = merged.groupby("pid")[["lab", "releases", "verdict"]].first()
    assert per_pid.loc["p2"].tolist() == ["b", "bwm,repro-ephys", "FAIL"]
    assert pd.isna(per_pid.loc["p3", "verdict"])
    out = render_scene(merged, color_by="verdict", atlas_name=sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home,
                       html=tmp_path / "v.html", max_points=10_000, style="lines")
    objects = snapshot(out["html"])["objects"]
    assert {k: set(array(o["colors"])) for k, o in objects.items() if o["type"] == "Lines"} == {
        "PASS": {0x2CA02C}, "FAIL": {0xD62728}, "NOT_SET": {0x9E9E9E}}
    # lines: one segment per pair of consecutive channels of a probe, 383 per probe
    assert {k: len(array(o["vertices"])) // 2 for k, o in objects.items() if o["type"] == "Lines"} == {
        "PASS": 383, "FAIL": 383, "NOT_SET": 383}
    with pytest.raises(FileNotFoundError, match="run `ibl-ephys-data channels"):
        channels_for_scene(tmp_path / "empty")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_opens_offline_in_headless_chromium_with_left_on_the_left(home, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    channels = pd.concat([probe("p1", -2000.0), probe("p2", 2000.0, lab="lab_b")])
    html = render_scene(channels, color_by="lab", atlas_name=sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home,
                        html=tmp_path / "scene.html")["html"]
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        args = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=args)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        for _ in range(40):  # k3d decodes and draws asynchronously
            page.wait_for_timeout(500)
            page.screenshot(path=tmp_path / "page.png")
            img = rgb(tmp_path / "page.png")
            if near(img, LAB_COLOR, 80).sum() > 20 and near(img, np.array([0xFF, 0x7F, 0x0E]), 80).sum() > 20:
                break
        browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "blob:", "data:")) for url in requests)  # works offline
    canvas = img[:, 200:]  # right of the legend
    _, xs_left = np.nonzero(near(canvas, LAB_COLOR, 80))  # lab_a = the probe at x = -2 mm
    _, xs_right = np.nonzero(near(canvas, np.array([0xFF, 0x7F, 0x0E]), 80))  # lab_b, x = +2 mm
    assert len(xs_left) > 20 and len(xs_right) > 20
    assert xs_left.max() < xs_right.min()


def test_categories_beyond_the_legend_share_one_object_with_their_own_colours(home, tmp_path):
    """20 regions: the 16 biggest are legend entries (biggest first), the 4 others one '+ 4 more' object."""
    from ibl_ephys_data.atlas import brain_regions

    br = brain_regions()
    acronyms = ["CA1", "CA3", "DG-mo", "LP", "PO", "VPM", "APN", "MRN", "SCm", "CP", "MOs", "ACAd5", "PL5",
                "VISp4", "SSp-bfd4", "RSPv5", "GPe", "ZI", "TH", "MB"]
    probes = [probe(f"p{k:02d}", -3000.0 + 150 * k, n=400 - 10 * k) for k in range(len(acronyms))]
    channels = pd.concat([p.assign(acronym=a, atlas_id=np.nan)
                          for p, a in zip(probes, acronyms, strict=True)])
    out = render_scene(channels, color_by="region", atlas_name=sa.SYNTHETIC_ATLAS_NAME, brainglobe_dir=home,
                       html=tmp_path / "many.html")
    objects = snapshot(out["html"])["objects"]
    point_objects = [k for k, o in objects.items() if o["type"] == "Points" and k != "bregma"]
    assert point_objects == [*acronyms[:16], "+ 4 more"]  # the order of the legend: biggest first
    rest = array(objects["+ 4 more"]["colors"])
    assert len(rest) == sum(400 - 10 * k for k in range(16, 20))
    expected = {int("".join(f"{c:02x}" for c in br.rgb[br.acronym == a][0]), 16) for a in acronyms[16:]}
    assert set(rest) == expected  # each region keeps its Allen colour (by acronym: no atlas_id)
    assert objects["legend"]["text"].endswith("bregma<br>+ 4 more")
