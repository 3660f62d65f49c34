"""The commands that look at outputs: 3D view, report, coverage, dataset checks, baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ibl_ephys_data.cli._common import (
    DEFAULT_WORKSPACE,
    PidsOpt,
    WorkspaceOpt,
    _existing,
    app,
    console,
    err_console,
    open_workspace,
    user_errors,
)
from ibl_ephys_data.errors import MissingInputError


@app.command()
@user_errors
def viz3d(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    color_by: Annotated[str, typer.Option("--color-by", help="region, release, verdict, lab or source.")] = "region",
    pids: PidsOpt = None,
    regions: Annotated[str | None, typer.Option("--regions", help="Region meshes to show, e.g. CA1,DG,VISa.")] = None,
    screenshot: Annotated[Path | None, typer.Option("--screenshot", help="Write a PNG (works headless).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML scene.")] = None,
    camera: Annotated[str, typer.Option("--camera", help="frontal, top, sagittal or oblique.")] = "frontal",
    style: Annotated[str, typer.Option("--style", help="points (every channel) or lines (one per probe).")] = "points",
    atlas: Annotated[str, typer.Option("--atlas", help="brainglobe atlas name.")] = "allen_mouse_25um",
    brainglobe_dir: Annotated[Path | None, typer.Option("--brainglobe-dir", help="Local atlas folder.")] = None,
) -> None:
    """brainrender 3D scene of the channels: brain outline, region meshes, probes, bregma, legend."""
    from ibl_ephys_data.viz.scene3d import channels_for_scene, render_scene

    ws = _existing(workspace)
    channels = channels_for_scene(ws)
    written = render_scene(channels, color_by=color_by, regions=regions.split(",") if regions else None,
                           atlas_name=atlas, screenshot=screenshot, html=html, pids=pids, camera=camera,
                           style=style, brainglobe_dir=brainglobe_dir)
    for kind, path in written.items():
        console.print(f"{kind}: {path}")


@app.command()
@user_errors
def baseline(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    depth: Annotated[bool, typer.Option("--depth/--no-depth", help="Depth along the probe as a feature.")] = True,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Resamples of test insertions for CIs.")] = 1000,
    max_windows: Annotated[int, typer.Option("--max-windows", help="Windows per side, subsampled above.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Reference baseline on dataset/: balanced accuracy with CI, chance, and leakage/confound controls."""
    from ibl_ephys_data.baseline import BaselineOptions, run_baseline
    from ibl_ephys_data.baseline.card import render_summary

    ws = open_workspace(workspace)
    results = run_baseline(ws, BaselineOptions(depth=depth, n_bootstrap=bootstrap, max_windows=max_windows,
                                               seed=seed))
    console.print(render_summary(results), highlight=False, soft_wrap=True)
    console.print(f"-> {ws.dataset_dir / 'baseline'}")


dataset_app = typer.Typer(help="Inspect and verify an exported dataset.")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("verify")
@user_errors
def dataset_verify(workspace: WorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Re-derive the split from the catalog; exit non-zero naming any leaking pid or subject."""
    from ibl_ephys_data.dataset import verify

    problems = verify(_existing(workspace))
    if problems:
        for line in problems:
            err_console.print(f"[red]leakage:[/red] {line}", highlight=False)
        raise typer.Exit(1)
    console.print("no leakage: splits agree with the catalog")


@dataset_app.command("info")
@user_errors
def dataset_info_cmd(workspace: WorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Counts per split and label, exclusions and the leakage cost of an exported dataset."""
    import json

    from ibl_ephys_data.dataset import dataset_info

    console.print_json(json.dumps(dataset_info(_existing(workspace)), default=str))


@app.command("import-channels")
@user_errors
def import_channels_cmd(
    csv: Annotated[Path, typer.Argument(help="AllenSDK get_channels() CSV or a generic CCF CSV.")],
    source: Annotated[str, typer.Option("--source", help="Name of the dataset, e.g. allen-visual-coding.")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
) -> None:
    """Store another dataset's channels (Allen CCF, never mirrored) beside IBL's, with a source column."""
    from ibl_ephys_data.coverage import import_channels

    ws = open_workspace(workspace)
    df = import_channels(ws, csv, source)
    console.print(f"{source}: {len(df)} channels stored -> {ws.external_channels}")
    for key, value in df.attrs.get("summary", {}).items():
        console.print(f"  {key}: {value}", highlight=False)


@app.command()
@user_errors
def coverage(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    level: Annotated[str, typer.Option("--level", help="allen, beryl or cosmos.")] = "beryl",
    usable_only: Annotated[bool, typer.Option("--usable-only", help="Only QC-usable IBL channels.")] = False,
    train: Annotated[str, typer.Option("--train", help="Training source for the overlap.")] = "bwm",
    test: Annotated[str, typer.Option("--test", help="Test source for the overlap.")] = "repro-ephys",
    top: Annotated[int, typer.Option("--top", help="Regions printed per source.")] = 15,
) -> None:
    """Channels and insertions per region per source -> coverage.parquet; unique regions and overlap."""
    from ibl_ephys_data.coverage import channels_per_region, coverage_table, overlap_summary, regions_in_one_source

    ws = open_workspace(workspace)
    table = coverage_table(ws, level=level, usable_only=usable_only)
    wide = channels_per_region(table, top)
    out = Table(title=f"channels per {level} region (top {top}, void and root left out) -> {ws.coverage}")
    out.add_column("region")
    for col in wide.columns:
        out.add_column(str(col), justify="right")
    for region, row in wide.iterrows():
        out.add_row(str(region), *(str(int(v)) for v in row))
    console.print(out)
    unique = regions_in_one_source(table)
    console.print(f"regions only one source has: {len(unique)}")
    sources = set(table["source"])
    if {train, test} <= sources:
        console.print(f"overlap {train} -> {test}: {overlap_summary(table, train, test)}", highlight=False)


@app.command()
@user_errors
def report(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    svg: Annotated[bool, typer.Option("--svg", help="Also write SVG copies of every figure.")] = False,
) -> None:
    """Static HTML report (insertions table, per-insertion pages, 3D view) -> report/index.html."""
    from ibl_ephys_data.viz.report import write_report

    ws = _existing(workspace)
    if not ws.root.is_dir():
        raise MissingInputError(f"workspace {workspace} does not exist: run the stages first or pass --workspace")
    ws.create().attach_log()  # already up to date: not pulled twice
    index = write_report(ws, formats=("png", "svg") if svg else ("png",))
    console.print(f"report: {index}")
