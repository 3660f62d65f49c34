"""3D view of where the probes went: a brainrender scene of channel positions, headless or interactive.

Channels (``channels.parquet``: ``ccf_ap_um, ccf_dv_um, ccf_ml_um`` and friends) are drawn as points (or
each probe as a polyline) inside the atlas' brain outline, with chosen region meshes, a bregma marker at its
true place and a legend. Coordinates go through :func:`ibl_ephys_data.atlas.ccf_to_display`, the one
display-side mirror, so left-hemisphere channels sit in brainglobe's left hemisphere. Named cameras follow
the 2D figures' convention: ``frontal`` looks at the coronal plane from behind and ``top`` from above
(anterior up), both with the animal's left on the viewer's left; ``sagittal`` looks at the left side with
anterior on the left. (brainrender's own "frontal" camera faces the animal: there its left is on the right.)

Outputs: a PNG rendered offscreen (no display needed: VTK's EGL or OSMesa backends), a self-contained HTML
page (k3d, its JavaScript embedded, channels subsampled to ``max_points``), or an interactive window when
a display exists (:mod:`ibl_ephys_data.viz.scene_render`). The atlas is opened by
:mod:`ibl_ephys_data.viz.atlas3d` (brainrender's ``allen_mouse_25um`` by default, downloaded once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ibl_ephys_data.atlas import BREGMA_CCF_APDVML_UM, ccf_to_display, channel_atlas_ids, region_colors
from ibl_ephys_data.coverage import overlay_channels
from ibl_ephys_data.errors import InputError, MissingStageError, check_option, command_hint
from ibl_ephys_data.viz.atlas3d import DEFAULT_ATLAS, open_atlas
from ibl_ephys_data.viz.scene_channels import SceneChannels, rgb_hex
from ibl_ephys_data.viz.scene_render import CAMERAS, has_display, render_vtk, write_html
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.schema import MISSING_COLOR, VERDICT_COLORS

logger = logging.getLogger(__name__)

CCF_COLUMNS = ("ccf_ap_um", "ccf_dv_um", "ccf_ml_um")

COLOR_BY = ("region", "release", "verdict", "lab", "source")

STYLES = ("points", "lines")

CAMERA_CAPTIONS = {
    "frontal": "frontal view from behind: the animal's left is on the left",
    "top": "top view, anterior up: the animal's left is on the left",
    "sagittal": "sagittal view of the left side: anterior is on the left",
    "oblique": "oblique view from behind, above and left",
}

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
)

#: Columns each ``color_by`` reads (the first present) and how to get one when none is.
COLOR_COLUMNS = {
    "region": (("acronym",), f"it comes with channels.parquet (`{command_hint('channels')}`)"),
    "release": (("release", "releases"), "merge catalog.parquet's `releases` on pid (channels_for_scene)"),
    "verdict": (("final_verdict", "verdict"), f"run `{command_hint('qc')}`, merge qc/verdicts.parquet on pid"),
    "lab": (("lab",), "merge catalog.parquet's `lab` on pid (channels_for_scene)"),
    "source": (("source", "histology"), "add a `source` column (or keep channels.parquet's `histology`)"),
}


def _region_colors(channels: pd.DataFrame, labels: np.ndarray) -> dict[str, str]:
    """Allen colour of each acronym (via the first atlas_id of its channels, else the acronym).

    Allen's root is white, invisible on a white background: it is drawn grey.
    """
    ids = pd.Series(channel_atlas_ids(channels)).groupby(labels).first()
    colors = {}
    for label, rid in ids.items():
        color = rgb_hex(region_colors([rid])[0] * 255)
        colors[label] = MISSING_COLOR if color == "#ffffff" else color
    return colors


def _labels(channels: pd.DataFrame, color_by: str) -> tuple[np.ndarray, dict[str, str]]:
    """Per-channel category and a colour per category."""
    check_option("color_by", color_by, COLOR_BY)
    candidates, hint = COLOR_COLUMNS[color_by]
    column = next((c for c in candidates if c in channels.columns), None)
    if column is None:
        raise InputError(f"color_by={color_by!r} needs a {candidates[0]!r} column in channels: {hint}")
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


def _channels(channels: pd.DataFrame, color_by: str, ml_voxels: int, ml_res_um: float) -> SceneChannels:
    """The channels to draw, in display µm, with their category and colours."""
    labels, colors = _labels(channels, color_by)
    points = ccf_to_display(channels.loc[:, list(CCF_COLUMNS)].to_numpy(dtype=float), ml_voxels, ml_res_um)
    depth = (pd.to_numeric(channels["axial_um"], errors="coerce").to_numpy(dtype=float)
             if "axial_um" in channels else -points[:, 1])
    return SceneChannels(points, channels["pid"].astype(str).to_numpy(dtype=object), depth, labels, colors)


def _select(channels: pd.DataFrame, pids: Sequence[str] | None) -> pd.DataFrame:
    """The channels to draw: those of ``pids`` (all if None) that have CCF coordinates."""
    if not isinstance(channels, pd.DataFrame):
        raise InputError(f"channels must be a DataFrame (channels.parquet), got {type(channels).__name__}")
    missing = [c for c in ("pid", *CCF_COLUMNS) if c not in channels.columns]
    if missing:
        raise InputError(f"channels lacks columns {missing}: pass the table of channels.parquet")
    if pids is not None:
        pids = [str(p) for p in pids]
        absent = sorted(set(pids) - set(channels["pid"].astype(str)))
        if absent:
            raise MissingStageError(f"pids not in the channels table: {', '.join(absent)} (or drop them from "
                                    "--pids)", "channels", pids=absent)
        channels = channels[channels["pid"].astype(str).isin(pids)]
    ccf = channels.loc[:, list(CCF_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    located = ccf.notna().all(axis=1).to_numpy()
    if not located.any():
        raise InputError("no channel has CCF coordinates (ccf_ap_um, ccf_dv_um, ccf_ml_um): nothing to draw")
    if (~located).any():
        logger.warning("%d channels without CCF coordinates are not drawn", int((~located).sum()))
    if np.nanmax(np.abs(ccf.to_numpy())) < 50:
        raise InputError("ccf_*_um values are all below 50 µm: they look like metres, pass Allen CCF µm")
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
    check_option("style", style, STYLES)
    check_option("camera", camera, CAMERAS)
    if max_points < 1:
        raise InputError(f"max_points={max_points} must be at least 1")
    display = has_display()
    if interactive is None:
        interactive = display and screenshot is None and html is None
    if interactive and not display:
        raise InputError("interactive=True needs a display ($DISPLAY is not set): "
                         "pass --screenshot out.png or --html out.html instead")
    if not interactive and screenshot is None and html is None:
        raise InputError("no display ($DISPLAY is not set) and no output asked for: "
                         "pass --screenshot out.png or --html out.html (screenshot= / html=)")
    screenshot = Path(screenshot).expanduser().absolute() if screenshot is not None else None
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise InputError(f"screenshot {screenshot} must end in .png")
    html = Path(html).expanduser().absolute() if html is not None else None
    if html is not None and html.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"html {html} must end in .html")
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
        render_vtk(atlas_name, brainglobe_dir, chans, regions, bregma, style, camera,
                    f"{title}  |  {caption}", screenshot, interactive, size)
        if screenshot is not None:
            written["screenshot"] = screenshot
    if html is not None:
        write_html(html, atlas, regions, chans, bregma, style, camera, caption, max_points, title)
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
