"""The two backends of a 3D scene: brainrender / VTK (PNG offscreen, or a window) and k3d (an HTML page).

Both draw :class:`ibl_ephys_data.viz.scene_channels.SceneChannels` batches in brainrender's display frame,
with the same named cameras, region meshes, bregma marker and legend.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ibl_ephys_data.viz.atlas3d import brainglobe_config
from ibl_ephys_data.viz.scene_channels import LEGEND_ENTRIES, SceneChannels, hex_to_int, rgb_hex, rgb_to_int
from ibl_ephys_data.workspace import atomic_path, write_text
from ibl_ephys_data.workspace.schema import MISSING_COLOR

logger = logging.getLogger(__name__)

#: Camera direction (from the focal point towards the camera) and view-up in brainrender's display frame:
#: x = AP (posterior +), y = DV (ventral +), z = the animal's right + (brainrender negates brainglobe's z).
CAMERAS = {
    "frontal": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "top": ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0)),
    "sagittal": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "oblique": ((0.55, -0.55, -0.63), (0.0, -1.0, 0.0)),
}

ROOT_ALPHA, REGION_ALPHA = 0.15, 0.35

CAMERA_DISTANCE = 2.0  # in units of the brain's largest extent, for VTK's and k3d's 30° field of view

BREGMA_COLOR = "#000000"


def has_display() -> bool:
    """Whether an interactive window can open (macOS / Windows always; Linux needs X11 or Wayland)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def segments(chans: SceneChannels, rows: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Segments (n x 2 x 3) from each channel in ``rows`` (none a probe's last) to the next one down."""
    return np.stack([chans.points[rows], chans.points[nxt[rows]]], axis=1)


def _flip(points: np.ndarray) -> np.ndarray:
    """brainglobe asr -> brainrender's right-handed display frame (its ``Render`` negates z)."""
    return points * np.array([1.0, 1.0, -1.0])


def _camera(name: str, centre: np.ndarray, extent: float) -> dict:
    """Camera position, focal point and view-up of a named camera around ``centre``."""
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


def render_vtk(atlas_name: str, brainglobe_dir: str | Path | None, chans: SceneChannels,
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
        with brainglobe_config(brainglobe_dir):
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
                obj = _lines_mesh(segments(chans, rows[keep], nxt), colors[keep].repeat(2, axis=0))
            else:
                obj = Points(chans.points[rows], r=6).render_points_as_spheres(True)
                obj.pointcolors = colors
            scene.add(Actor(obj, name=name, br_class="channels"))
            swatch = rgb_hex(colors[0]) if k < LEGEND_ENTRIES else MISSING_COLOR  # the rest: mixed
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
    """The k3d page's legend as HTML: one coloured dot per batch, then bregma."""
    dot = '<span style="color:{}">&#9679;</span> {}'
    rows = [dot.format(rgb_hex(colors[0]), escape(name)) for name, _, colors in batches[:LEGEND_ENTRIES]]
    rows.append(dot.format(BREGMA_COLOR, "bregma"))
    rows += [escape(name) for name, *_ in batches[LEGEND_ENTRIES:]]
    return "<br>".join(rows)


def write_html(path: Path, atlas: Any, regions: Sequence[str], chans: SceneChannels, bregma: np.ndarray,
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
                         color=0xAAAAAA if acronym == "root" else hex_to_int(rgb_hex(rgb)),
                         opacity=ROOT_ALPHA if acronym == "root" else REGION_ALPHA, side="double",
                         name="brain outline" if acronym == "root" else f"{acronym} mesh")
    nxt = small.next_down()
    batches = small.batches()
    for name, rows, colors in batches:
        if style == "lines":
            keep = nxt[rows] >= 0
            if not keep.any():
                continue
            vertices = _flip(segments(small, rows[keep], nxt).reshape(-1, 3)).astype(np.float32)
            plot += k3d.lines(vertices, np.arange(len(vertices), dtype=np.uint32).reshape(-1, 2),
                              indices_type="segment", colors=rgb_to_int(colors[keep].repeat(2, axis=0)),
                              width=40.0, shader="simple", name=name)
        else:
            plot += k3d.points(_flip(small.points[rows]).astype(np.float32), colors=rgb_to_int(colors),
                               point_size=80.0, shader="3d", name=name)
    plot += k3d.points(_flip(bregma[None, :]).astype(np.float32), color=hex_to_int(BREGMA_COLOR),
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
