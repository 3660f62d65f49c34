"""3D view of where the probes went: a brainrender scene of channel positions, headless or interactive.

Channels (``channels.parquet``: ``ccf_ap_um, ccf_dv_um, ccf_ml_um`` and friends) are drawn as points (or
each probe as a polyline) inside the atlas' brain outline, with chosen region meshes, a bregma marker at its
true place and a legend. Coordinates go through :func:`ibl_ephys_data.viz.display.ccf_to_display`, the one
display-side mirror, so left-hemisphere channels sit in brainglobe's left hemisphere. Named cameras follow
the 2D figures' convention: ``frontal`` looks at the coronal plane from behind and ``top`` from above
(anterior up), both with the animal's left on the viewer's left; ``sagittal`` looks at the left side with
anterior on the left. (brainrender's own "frontal" camera faces the animal: there its left is on the right.)

Outputs: a PNG rendered offscreen (no display needed: VTK's EGL or OSMesa backends), a self-contained HTML
page (k3d, its JavaScript embedded, channels subsampled to ``max_points``), or an interactive window when
a display exists. The atlas is brainrender's ``allen_mouse_25um`` by default, downloaded once by brainglobe
(logged before it happens; one clear error when offline). ``brainglobe_dir`` points at atlases elsewhere,
e.g. the offline synthetic one of :mod:`ibl_ephys_data.viz.synthetic_atlas`.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ibl_ephys_data.atlas import BREGMA_CCF_APDVML_UM, brain_regions, ccf_to_display
from ibl_ephys_data.coverage import overlay_channels
from ibl_ephys_data.workspace import Workspace, atomic_path, write_text

logger = logging.getLogger(__name__)

DEFAULT_ATLAS = "allen_mouse_25um"
CCF_COLUMNS = ("ccf_ap_um", "ccf_dv_um", "ccf_ml_um")
COLOR_BY = ("region", "release", "verdict", "lab", "source")
STYLES = ("points", "lines")
#: Camera direction (from the focal point towards the camera) and view-up in brainrender's display frame:
#: x = AP (posterior +), y = DV (ventral +), z = the animal's right + (brainrender negates brainglobe's z).
CAMERAS = {
    "frontal": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "top": ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0)),
    "sagittal": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "oblique": ((0.55, -0.55, -0.63), (0.0, -1.0, 0.0)),
}
CAMERA_CAPTIONS = {
    "frontal": "frontal view from behind: the animal's left is on the left",
    "top": "top view, anterior up: the animal's left is on the left",
    "sagittal": "sagittal view of the left side: anterior is on the left",
    "oblique": "oblique view from behind, above and left",
}
VERDICT_COLORS = {
    "PASS": "#2ca02c", "WARNING": "#ff7f0e", "FAIL": "#d62728", "CRITICAL": "#7f0000", "NOT_SET": "#9e9e9e",
}
MISSING_COLOR = "#9e9e9e"
BREGMA_COLOR = "#000000"
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
)
#: Columns each ``color_by`` reads (the first present) and how to get one when none is.
COLOR_COLUMNS = {
    "region": (("acronym",), "it comes with channels.parquet (`ibl-ephys-data channels`)"),
    "release": (("release", "releases"), "merge catalog.parquet's `releases` on pid (channels_for_scene)"),
    "verdict": (("final_verdict", "verdict"), "run `ibl-ephys-data qc`, merge qc/verdicts.parquet on pid"),
    "lab": (("lab",), "merge catalog.parquet's `lab` on pid (channels_for_scene)"),
    "source": (("source", "histology"), "add a `source` column (or keep channels.parquet's `histology`)"),
}
LEGEND_ENTRIES = 16
ROOT_ALPHA, REGION_ALPHA = 0.15, 0.35
CAMERA_DISTANCE = 2.0  # in units of the brain's largest extent, for VTK's and k3d's 30° field of view


@dataclass
class _Channels:
    """Channels to draw, in display µm (brainglobe asr), with their colour category."""

    points: np.ndarray
    pids: np.ndarray
    depth: np.ndarray  # position along the probe, to join channels into a line
    labels: np.ndarray
    colors: dict[str, str]

    def groups(self) -> list[tuple[str, str, np.ndarray]]:
        """(label, colour, row indices) per category: the legend entries, biggest first, ties by name."""
        names, codes, counts = np.unique(self.labels.astype(str), return_inverse=True, return_counts=True)
        rows = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
        order = sorted(range(len(names)), key=lambda k: (-counts[k], names[k]))
        return [(str(names[k]), self.colors[names[k]], rows[k]) for k in order]

    def batches(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """What to draw as one object: (name, rows, n x 3 uint8 colours), one per legend entry and one for
        all the categories beyond the legend (drawing hundreds of objects is slow in VTK and k3d)."""
        groups = self.groups()
        batches = [(label, rows, np.tile(_rgb(color), (len(rows), 1))) for label, color, rows in
                   groups[:LEGEND_ENTRIES]]
        if len(groups) > LEGEND_ENTRIES:
            rest = groups[LEGEND_ENTRIES:]
            rows = np.concatenate([r for *_, r in rest])
            colors = np.concatenate([np.tile(_rgb(color), (len(r), 1)) for _, color, r in rest])
            batches.append((f"+ {len(rest)} more", rows, colors))
        return batches

    def _probes(self) -> list[np.ndarray]:
        """Row indices of each probe's channels, in depth order."""
        codes, _ = pd.factorize(self.pids, sort=True)
        order = np.lexsort((self.depth, codes))
        return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)

    def next_down(self) -> np.ndarray:
        """Row index of the next channel along the same probe (-1 for a probe's last channel)."""
        nxt = np.full(len(self.pids), -1)
        for idx in self._probes():
            nxt[idx[:-1]] = idx[1:]
        return nxt

    def subsample(self, max_points: int) -> _Channels:
        """Every k-th channel of each probe, the smallest k keeping at most ``max_points`` channels.

        Deterministic and shape-preserving; every probe keeps at least its first channel.
        """
        probes = self._probes()
        step = max(1, int(np.ceil(len(self.pids) / max_points)))
        while sum(-(-len(idx) // step) for idx in probes) > max_points and step < max(map(len, probes)):
            step += 1
        if step == 1:
            return self
        keep = np.concatenate([idx[::step] for idx in probes])
        keep.sort()
        return _Channels(self.points[keep], self.pids[keep], self.depth[keep], self.labels[keep], self.colors)


def has_display() -> bool:
    """Whether an interactive window can open (macOS / Windows always; Linux needs X11 or Wayland)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def brainglobe_home(brainglobe_dir: str | Path | None = None) -> Path:
    """The folder brainglobe keeps atlases in: ``brainglobe_dir`` or the one of brainglobe's config."""
    if brainglobe_dir is not None:
        return Path(brainglobe_dir).expanduser().absolute()
    from brainglobe_atlasapi import config

    return Path(config.read_config()["default_dirs"]["brainglobe_dir"]).expanduser()


def atlas_available_locally(atlas_name: str = DEFAULT_ATLAS,
                            brainglobe_dir: str | Path | None = None) -> bool:
    """Whether brainglobe has ``atlas_name`` on disk (so opening it needs no download).

    Looks for brainglobe-atlasapi 3's manifest and for version 2's ``<name>_v<version>`` folder.
    """
    home = brainglobe_home(brainglobe_dir)
    v3 = home / "brainglobe-atlasapi" / "atlases" / atlas_name
    return any(v3.glob("*/manifest.json")) or any(p.is_dir() for p in home.glob(f"{atlas_name}_v*"))


def _atlas_server_reachable() -> bool:
    """Whether brainglobe's atlas bucket answers (a HEAD request, 5 s timeout)."""
    from brainglobe_atlasapi.utils import check_s3_status

    try:
        return bool(check_s3_status(timeout=5, raise_error=True))
    except ConnectionError:
        return False


def _require_download(what: str, atlas_name: str, home: Path) -> None:
    """Say a download is coming, or fail in one line when it cannot happen."""
    logger.warning("brainglobe atlas %s (%s) is not in %s: downloading it now from brainglobe's server, once",
                   atlas_name, what, home)
    if not _atlas_server_reachable():
        raise RuntimeError(
            f"brainglobe atlas {atlas_name} ({what}) is not in {home} and brainglobe's server cannot be "
            "reached (offline?): connect to the internet once to download it, or pass brainglobe_dir= a "
            "folder that has it (build_synthetic_atlas() writes an offline test atlas)"
        )


@contextlib.contextmanager
def _brainglobe_config(brainglobe_dir: str | Path | None) -> Iterator[None]:
    """Point brainglobe (hence brainrender's ``Scene``, which takes no folder) at ``brainglobe_dir``.

    brainglobe reads its folder from the config file at ``brainglobe_atlasapi.config.CONFIG_PATH`` (set
    once from ``BRAINGLOBE_CONFIG_DIR`` at import); within the block it reads a temporary one.
    """
    if brainglobe_dir is None:
        yield
        return
    from brainglobe_atlasapi import config

    home = str(brainglobe_home(brainglobe_dir))
    with tempfile.TemporaryDirectory(prefix="bg-config-") as tmp:
        path = Path(tmp) / config.CONFIG_FILENAME
        config.write_default_config(path, {"default_dirs": {"brainglobe_dir": home,
                                                            "interm_download_dir": home}})
        previous = config.CONFIG_PATH
        config.CONFIG_PATH = path
        try:
            yield
        finally:
            config.CONFIG_PATH = previous


def open_atlas(atlas_name: str = DEFAULT_ATLAS, brainglobe_dir: str | Path | None = None,
               regions: Sequence[str] = ()) -> Any:
    """Open a brainglobe atlas without surprises: announce downloads, fail in one line when impossible.

    Checks that ``regions`` (acronyms) exist and that their meshes (and the root's) are local, downloading
    them when the server is reachable. Returns a ``brainglobe_atlasapi.BrainGlobeAtlas``.
    """
    home = brainglobe_home(brainglobe_dir)
    if not atlas_available_locally(atlas_name, home):
        _require_download("the atlas", atlas_name, home)
    from brainglobe_atlasapi import BrainGlobeAtlas

    try:
        atlas = BrainGlobeAtlas(atlas_name, brainglobe_dir=home, check_latest=False)
    except ValueError as err:
        if "Zarr" not in str(err):
            raise
        import zarr

        raise RuntimeError(
            f"brainglobe atlas {atlas_name} in {home} is stored as zarr v3, which the installed zarr "
            f"{zarr.__version__} cannot read: install zarr>=3, or brainglobe-atlasapi<3 and its atlases"
        ) from err
    acronyms = atlas.lookup_df["acronym"].to_numpy()
    unknown = [r for r in regions if r not in acronyms]
    if unknown:
        raise ValueError(f"regions {unknown} are not in atlas {atlas_name}: pass Allen acronyms such as "
                         f"{', '.join(acronyms[:6])}")
    missing = [r for r in ("root", *regions) if not Path(atlas.meshfile_from_structure(r)).exists()]
    if missing:
        _require_download(f"the meshes of {', '.join(missing)}", atlas_name, home)
    return atlas


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def _rgb_to_int(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _hex_to_int(color: str) -> int:
    return int(color.lstrip("#"), 16)


def _rgb_hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(c)):02x}" for c in rgb)


def _region_colors(channels: pd.DataFrame, labels: np.ndarray) -> dict[str, str]:
    """Allen colour of each acronym from iblatlas' structure tree (via atlas_id, else the acronym).

    Allen's root is white, invisible on a white background: it is drawn grey.
    """
    br = brain_regions()
    by_id = {int(i): _rgb_hex(c) for i, c in zip(br.id, br.rgb, strict=True)}
    by_acronym = {str(a): _rgb_hex(c) for a, c in zip(br.acronym, br.rgb, strict=True)}
    ids = (pd.to_numeric(channels["atlas_id"], errors="coerce") if "atlas_id" in channels
           else pd.Series(np.nan, index=channels.index))
    first_id = pd.Series(ids.to_numpy(dtype=float)).groupby(labels).first()  # first non-missing id
    colors = {}
    for label in np.unique(labels):
        rid = first_id.get(label, np.nan)
        color = by_id.get(abs(int(rid))) if not np.isnan(rid) else by_acronym.get(label)
        colors[label] = MISSING_COLOR if color in (None, "#ffffff") else color
    return colors


def _labels(channels: pd.DataFrame, color_by: str) -> tuple[np.ndarray, dict[str, str]]:
    """Per-channel category and a colour per category."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by={color_by!r} is not one of {', '.join(COLOR_BY)}")
    candidates, hint = COLOR_COLUMNS[color_by]
    column = next((c for c in candidates if c in channels.columns), None)
    if column is None:
        raise ValueError(f"color_by={color_by!r} needs a {candidates[0]!r} column in channels: {hint}")
    missing = "NOT_SET" if color_by == "verdict" else "unknown"
    values = channels[column].astype(object).where(channels[column].notna(), missing)
    labels = values.astype(str).str.strip().replace("", missing).to_numpy(dtype=object)
    if color_by == "verdict":
        labels = np.array([label.upper() for label in labels], dtype=object)
        return labels, {label: VERDICT_COLORS.get(label, MISSING_COLOR) for label in np.unique(labels)}
    if color_by == "region":
        return labels, _region_colors(channels, labels)
    names = sorted(set(labels) - {missing})
    colors = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(names)}
    colors[missing] = MISSING_COLOR
    return labels, colors


def _channels(channels: pd.DataFrame, color_by: str, ml_voxels: int, ml_res_um: float) -> _Channels:
    labels, colors = _labels(channels, color_by)
    points = ccf_to_display(channels.loc[:, list(CCF_COLUMNS)].to_numpy(dtype=float), ml_voxels, ml_res_um)
    depth = (pd.to_numeric(channels["axial_um"], errors="coerce").to_numpy(dtype=float)
             if "axial_um" in channels else -points[:, 1])
    return _Channels(points, channels["pid"].astype(str).to_numpy(dtype=object), depth, labels, colors)


def _segments(chans: _Channels, rows: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Segments (n x 2 x 3) from each channel in ``rows`` (none a probe's last) to the next one down."""
    return np.stack([chans.points[rows], chans.points[nxt[rows]]], axis=1)


def _flip(points: np.ndarray) -> np.ndarray:
    """brainglobe asr -> brainrender's right-handed display frame (its ``Render`` negates z)."""
    return points * np.array([1.0, 1.0, -1.0])


def _camera(name: str, centre: np.ndarray, extent: float) -> dict:
    towards, up = CAMERAS[name]
    towards = np.asarray(towards) / np.linalg.norm(towards)
    distance = CAMERA_DISTANCE * extent
    return {"pos": tuple(centre + towards * distance), "focal_point": tuple(centre), "viewup": up,
            "clipping_range": (distance * 0.1, distance * 3)}


def _prepare_offscreen() -> None:
    """Without a display VTK tries X11 first and warns; go straight to EGL (or OSMesa) when usable.

    EGL counts only with a glvnd vendor (e.g. Debian's libegl-mesa0), else it would fail where VTK's own
    fallback (X11, EGL, OSMesa) still finds OSMesa; with neither, VTK's fallback is left to decide.
    """
    if has_display() or "VTK_DEFAULT_OPENGL_WINDOW" in os.environ:
        return
    vendors = [p for d in ("/usr/share/glvnd/egl_vendor.d", "/etc/glvnd/egl_vendor.d")
               for p in Path(d).glob("*.json")]
    if ctypes.util.find_library("EGL") and vendors:
        window = "vtkEGLRenderWindow"
    elif ctypes.util.find_library("OSMesa"):
        window = "vtkOSOpenGLRenderWindow"
    else:
        return
    os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = window
    logger.debug("no display: VTK renders offscreen with %s", window)


def _lines_mesh(segments: np.ndarray, colors: np.ndarray) -> Any:
    """One vedo mesh of n line segments (n x 2 x 3, one uint8 RGB per vertex), built in bulk
    (``vedo.Lines`` loops in Python: minutes for a brain-wide map)."""
    from vedo import Mesh
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    vertices = np.ascontiguousarray(segments.reshape(-1, 3), dtype=float)
    points = vtkPoints()
    points.SetData(numpy_to_vtk(vertices, deep=True))
    cells = vtkCellArray()
    cells.SetData(numpy_to_vtkIdTypeArray(np.arange(0, len(vertices) + 1, 2, dtype=np.int64), deep=True),
                  numpy_to_vtkIdTypeArray(np.arange(len(vertices), dtype=np.int64), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetLines(cells)
    mesh = Mesh(poly).lw(4)
    mesh.pointcolors = colors
    return mesh


def _render_vtk(atlas_name: str, brainglobe_dir: str | Path | None, chans: _Channels,
                regions: Sequence[str], bregma: np.ndarray, style: str, camera: str, caption: str,
                screenshot: Path | None, interactive: bool, size: tuple[int, int]) -> None:
    """Draw the scene with brainrender; save a PNG and/or open a window."""
    if not interactive:
        _prepare_offscreen()
    import brainrender
    from brainrender.actor import Actor
    from vedo import LegendBox, Plotter, Points, Sphere, Text2D
    from vedo import settings as vedo_settings

    saved = {k: getattr(brainrender.settings, k) for k in ("OFFSCREEN", "SHOW_AXES", "INTERACTIVE")}
    saved_vedo = {k: getattr(vedo_settings, k) for k in ("multi_samples", "default_backend")}
    brainrender.settings.OFFSCREEN = not interactive
    brainrender.settings.SHOW_AXES = False  # its ticks would read brainglobe's mirrored ML, not CCF
    brainrender.settings.INTERACTIVE = interactive
    vedo_settings.default_backend = "vtk"
    if not interactive:
        vedo_settings.multi_samples = 0  # with depth peeling it drops translucent meshes offscreen
    scene = None
    try:
        plotter = Plotter(offscreen=not interactive, size=size, bg="white", title="ibl-ephys-data viz3d")
        with _brainglobe_config(brainglobe_dir):
            scene = brainrender.Scene(atlas_name=atlas_name, check_latest=False, inset=False, plotter=plotter)
        scene.root.alpha(ROOT_ALPHA)
        if regions:
            scene.add_brain_region(*regions, alpha=REGION_ALPHA)
        nxt = chans.next_down()
        legend = []
        for k, (name, rows, colors) in enumerate(chans.batches()):
            if style == "lines":
                keep = nxt[rows] >= 0
                if not keep.any():
                    continue
                obj = _lines_mesh(_segments(chans, rows[keep], nxt), colors[keep].repeat(2, axis=0))
            else:
                obj = Points(chans.points[rows], r=6).render_points_as_spheres(True)
                obj.pointcolors = colors
            scene.add(Actor(obj, name=name, br_class="channels"))
            swatch = _rgb_hex(colors[0]) if k < LEGEND_ENTRIES else MISSING_COLOR  # the rest: mixed
            legend.append(Points(bregma[None, :], c=swatch).legend(name))
        marker = Sphere(tuple(bregma), r=120, c=BREGMA_COLOR).legend("bregma")
        scene.add(Actor(marker, name="bregma", br_class="bregma"))
        legend.insert(min(len(legend), LEGEND_ENTRIES), marker)
        root = scene.root._mesh
        centre = np.asarray(root.bounds()).reshape(3, 2).mean(axis=1)
        extent = float(np.ptp(root.vertices, axis=0).max())
        scene.render(interactive=False, camera=_camera(camera, centre, extent), zoom=1.0)
        height = min(0.035 * len(legend), 0.9)
        scene.plotter.add(LegendBox(legend, nmax=len(legend), width=0.16, height=height, pos="top-left",
                                    font="Arial", markers="o", alpha=0.1))
        scene.plotter.add(Text2D(caption, pos="bottom-left", s=0.8 * size[0] / 1600, c="k", font="Arial"))
        if screenshot is not None:
            with atomic_path(screenshot) as tmp:
                scene.plotter.screenshot(str(tmp))
            logger.info("wrote %s", screenshot)
        if interactive:
            scene.plotter.show(interactive=True, resetcam=False)
    finally:
        if scene is not None:
            scene.plotter.close()
        for k, v in saved.items():
            setattr(brainrender.settings, k, v)
        for k, v in saved_vedo.items():
            setattr(vedo_settings, k, v)


def _html_legend(batches: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    dot = '<span style="color:{}">&#9679;</span> {}'
    rows = [dot.format(_rgb_hex(colors[0]), escape(name)) for name, _, colors in batches[:LEGEND_ENTRIES]]
    rows.append(dot.format(BREGMA_COLOR, "bregma"))
    rows += [escape(name) for name, *_ in batches[LEGEND_ENTRIES:]]
    return "<br>".join(rows)


def _write_html(path: Path, atlas: Any, regions: Sequence[str], chans: _Channels, bregma: np.ndarray,
                style: str, camera: str, caption: str, max_points: int, title: str) -> None:
    """Self-contained k3d page (its JavaScript embedded): meshes, subsampled channels, bregma, legend."""
    import k3d

    small = chans.subsample(max_points)
    plot = k3d.plot(grid_visible=False, axes_helper=0, menu_visibility=True, camera_auto_fit=False,
                    camera_fov=30.0, background_color=0xFFFFFF, height=800)
    for acronym in ("root", *regions):
        mesh = atlas.mesh_from_structure(acronym)
        rgb = atlas.structures[acronym]["rgb_triplet"]
        plot += k3d.mesh(_flip(mesh.points).astype(np.float32), mesh.cells[0].data.astype(np.uint32),
                         color=0xAAAAAA if acronym == "root" else _hex_to_int(_rgb_hex(rgb)),
                         opacity=ROOT_ALPHA if acronym == "root" else REGION_ALPHA, side="double",
                         name="brain outline" if acronym == "root" else f"{acronym} mesh")
    nxt = small.next_down()
    batches = small.batches()
    for name, rows, colors in batches:
        if style == "lines":
            keep = nxt[rows] >= 0
            if not keep.any():
                continue
            vertices = _flip(_segments(small, rows[keep], nxt).reshape(-1, 3)).astype(np.float32)
            plot += k3d.lines(vertices, np.arange(len(vertices), dtype=np.uint32).reshape(-1, 2),
                              indices_type="segment", colors=_rgb_to_int(colors[keep].repeat(2, axis=0)),
                              width=40.0, shader="simple", name=name)
        else:
            plot += k3d.points(_flip(small.points[rows]).astype(np.float32), colors=_rgb_to_int(colors),
                               point_size=80.0, shader="3d", name=name)
    plot += k3d.points(_flip(bregma[None, :]).astype(np.float32), color=_hex_to_int(BREGMA_COLOR),
                       point_size=240.0, shader="3d", name="bregma")
    plot += k3d.text2d(_html_legend(batches), position=(0.01, 0.01), color=0x222222, size=0.8, is_html=True,
                       label_box=True, name="legend")
    plot += k3d.text2d(f"{escape(title)}<br>{caption}", position=(0.01, 0.99), reference_point="lb",
                       color=0x222222, size=0.7, is_html=True, label_box=False, name="caption")
    root = _flip(atlas.mesh_from_structure("root").points)
    cam = _camera(camera, (root.min(axis=0) + root.max(axis=0)) / 2, float(np.ptp(root, axis=0).max()))
    plot.camera = [*cam["pos"], *cam["focal_point"], *cam["viewup"]]
    plot.snapshot_type = "full"
    write_text(plot.get_snapshot(), path)
    logger.info("wrote %s (%d of %d channels)", path, len(small.pids), len(chans.pids))


def _select(channels: pd.DataFrame, pids: Sequence[str] | None) -> pd.DataFrame:
    """The channels to draw: those of ``pids`` (all if None) that have CCF coordinates."""
    if not isinstance(channels, pd.DataFrame):
        raise ValueError(f"channels must be a DataFrame (channels.parquet), got {type(channels).__name__}")
    missing = [c for c in ("pid", *CCF_COLUMNS) if c not in channels.columns]
    if missing:
        raise ValueError(f"channels lacks columns {missing}: pass the table of channels.parquet")
    if pids is not None:
        pids = [str(p) for p in pids]
        absent = sorted(set(pids) - set(channels["pid"].astype(str)))
        if absent:
            raise ValueError(f"pids not in the channels table: {', '.join(absent)} "
                             "(run `ibl-ephys-data channels` for them, or drop them from --pids)")
        channels = channels[channels["pid"].astype(str).isin(pids)]
    ccf = channels.loc[:, list(CCF_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    located = ccf.notna().all(axis=1).to_numpy()
    if not located.any():
        raise ValueError("no channel has CCF coordinates (ccf_ap_um, ccf_dv_um, ccf_ml_um): nothing to draw")
    if (~located).any():
        logger.warning("%d channels without CCF coordinates are not drawn", int((~located).sum()))
    if np.nanmax(np.abs(ccf.to_numpy())) < 50:
        raise ValueError("ccf_*_um values are all below 50 µm: they look like metres, pass Allen CCF µm")
    return channels[located].reset_index(drop=True)


def render_scene(
    channels: pd.DataFrame,
    color_by: str = "region",
    regions: Sequence[str] | None = None,
    atlas_name: str = DEFAULT_ATLAS,
    screenshot: str | Path | None = None,
    html: str | Path | None = None,
    interactive: bool | None = None,
    max_points: int = 20_000,
    pids: Sequence[str] | None = None,
    style: str = "points",
    camera: str = "frontal",
    brainglobe_dir: str | Path | None = None,
    size: tuple[int, int] = (1600, 1200),
    title: str | None = None,
) -> dict[str, Path]:
    """Draw channels (rows of ``channels.parquet``, optionally with lab / release / verdict columns) in 3D.

    ``color_by`` picks the colouring (region = Allen colours of ``acronym``); ``regions`` are acronyms whose
    meshes are drawn; ``style`` draws every channel as a point or each probe as a line; ``camera`` is one of
    ``CAMERAS``. ``screenshot`` (PNG, every channel) and ``html`` (self-contained, at most ``max_points``
    channels) are written headless; ``interactive`` opens a window (default: only when a display exists and
    no file is asked for). Returns the written paths under the keys ``"screenshot"`` and ``"html"``.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {', '.join(STYLES)}")
    if camera not in CAMERAS:
        raise ValueError(f"camera={camera!r} is not one of {', '.join(CAMERAS)}")
    if max_points < 1:
        raise ValueError(f"max_points={max_points} must be at least 1")
    display = has_display()
    if interactive is None:
        interactive = display and screenshot is None and html is None
    if interactive and not display:
        raise ValueError("interactive=True needs a display ($DISPLAY is not set): "
                         "pass --screenshot out.png or --html out.html instead")
    if not interactive and screenshot is None and html is None:
        raise ValueError("no display ($DISPLAY is not set) and no output asked for: "
                         "pass --screenshot out.png or --html out.html (screenshot= / html=)")
    screenshot = Path(screenshot).expanduser().absolute() if screenshot is not None else None
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise ValueError(f"screenshot {screenshot} must end in .png")
    html = Path(html).expanduser().absolute() if html is not None else None
    if html is not None and html.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"html {html} must end in .html")
    channels = _select(channels, pids)
    regions = [str(r) for r in (regions or [])]

    atlas = open_atlas(atlas_name, brainglobe_dir, regions)
    ml_voxels, ml_res = int(atlas.shape[2]), float(atlas.resolution[2])
    chans = _channels(channels, color_by, ml_voxels, ml_res)
    bregma = ccf_to_display(BREGMA_CCF_APDVML_UM[None, :], ml_voxels, ml_res)[0]
    title = title or f"{channels['pid'].nunique()} insertions, {len(channels)} channels, colour: {color_by}"
    caption = CAMERA_CAPTIONS[camera]
    written: dict[str, Path] = {}
    if screenshot is not None or interactive:
        _render_vtk(atlas_name, brainglobe_dir, chans, regions, bregma, style, camera,
                    f"{title}  |  {caption}", screenshot, interactive, size)
        if screenshot is not None:
            written["screenshot"] = screenshot
    if html is not None:
        _write_html(html, atlas, regions, chans, bregma, style, camera, caption, max_points, title)
        written["html"] = html
    return written


def channels_for_scene(workspace: Workspace | str | Path, external: bool = True) -> pd.DataFrame:
    """``channels.parquet`` with the catalog's ``lab`` / ``releases`` and the QC verdict merged on pid.

    What the CLI passes to :func:`render_scene`; columns of stages that have not run are simply absent.
    Every row has a ``source`` (IBL rows: their releases) and, with ``external``, the channels of
    ``external_channels.parquet`` are appended (pid ``<source>:<probe_id>``), so ``color_by="source"``
    overlays every dataset (see :func:`ibl_ephys_data.coverage.overlay_channels`).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    channels = ws.read_channels()
    for path, columns in ((ws.catalog, ("lab", "releases")), (ws.qc_verdicts, ("verdict", "final_verdict"))):
        if not path.exists():
            continue
        table = pd.read_parquet(path)
        extra = [c for c in columns if c in table.columns and c not in channels.columns]
        if extra:
            table = table.assign(pid=table["pid"].astype(str))[["pid", *extra]].drop_duplicates("pid")
            channels = channels.assign(pid=channels["pid"].astype(str)).merge(table, on="pid", how="left")
    extra_channels = (pd.read_parquet(ws.external_channels) if external and ws.external_channels.exists()
                      else None)
    return overlay_channels(channels, external=extra_channels)
