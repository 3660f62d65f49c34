"""``ibl-ephys-data``: a thin command line over the Python API (one sub-command per stage, plus ``demo``).

Commands parse options, call the stage function and print; errors a user can fix become one red line and
exit code 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ibl_ephys_data.errors import IblEphysDataError
from ibl_ephys_data.ibl import PUBLIC_ALYX_URL, Connection
from ibl_ephys_data.workspace import Workspace

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Quality-controlled, region-labelled, ML-ready LFP datasets from IBL releases.")
console = Console()
err_console = Console(stderr=True)
_logger = logging.getLogger("ibl_ephys_data")

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder (created if missing).")]
AlyxUrlOpt = Annotated[str, typer.Option("--alyx-url", help="Alyx database URL.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use the ONE cache only, no network.")]
OneCacheOpt = Annotated[Path | None, typer.Option("--one-cache", help="ONE cache folder (default: ONE's own).")]
DataServerOpt = Annotated[str | None, typer.Option("--http-data-server", help="Override ONE's HTTP data server.")]
PidsOpt = Annotated[list[str] | None, typer.Option("--pids", help="Restrict to these pids (repeatable).")]
DEFAULT_WORKSPACE = Path("ibl-workspace")
USER_ERRORS = (IblEphysDataError, ValueError, FileNotFoundError, LookupError)


def user_errors(func):
    """Turn the errors a user can fix into one clear line and exit code 2 (tracebacks stay in the log)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as ex:
            _logger.debug("error", exc_info=True)
            err_console.print(f"[red]error:[/red] {ex}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def open_workspace(path: Path) -> Workspace:
    ws = Workspace(path).create()
    ws.attach_log()
    return ws


def connection(alyx_url: str, offline: bool, one_cache: Path | None, http_data_server: str | None) -> Connection:
    return Connection(alyx_url=alyx_url, offline=offline, cache_dir=one_cache, http_data_server=http_data_server)


@app.command()
@user_errors
def catalog(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    release: Annotated[list[str] | None, typer.Option("--release", help="repro-ephys or bwm (repeatable).")] = None,
    pids: Annotated[Path | None, typer.Option("--pids", help="CSV with a 'pid' column (optional 'eid').")] = None,
    alyx_url: AlyxUrlOpt = PUBLIC_ALYX_URL,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
) -> None:
    """List the insertions of a release (or of a pid CSV) with their Alyx QC -> catalog.parquet."""
    from ibl_ephys_data.catalog import read_pid_csv, run_catalog
    from ibl_ephys_data.ibl import release_tags

    for name in release or []:
        release_tags(name)
    if pids is not None:
        read_pid_csv(pids)
    ws = open_workspace(workspace)
    with connection(alyx_url, offline, one_cache, http_data_server).session() as one:
        df = run_catalog(ws, one, releases=release, pid_file=pids)
    _print_counts(df, "releases", f"{len(df)} insertions -> {ws.catalog}")
    _report_failures(ws, "catalog")


@app.command()
@user_errors
def channels(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    alyx_url: AlyxUrlOpt = PUBLIC_ALYX_URL,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
) -> None:
    """Channel locations (xyz, CCF, Allen/Beryl/Cosmos) of the catalog's insertions -> channels.parquet."""
    from ibl_ephys_data.channels import run_channels

    ws = open_workspace(workspace)
    with connection(alyx_url, offline, one_cache, http_data_server).session() as one:
        df = run_channels(ws, one, pids=pids)
    console.print(f"{df['pid'].nunique()} insertions, {len(df)} channels -> {ws.channels}")
    _report_failures(ws, "channels")


@app.command()
@user_errors
def lfp(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    window: Annotated[list[str] | None, typer.Option("--window", help="START:SECONDS (repeatable).")] = None,
    snippets: Annotated[int, typer.Option("--snippets", help="IBL snippet scheme: number of snippets.")] = 4,
    snippet_seconds: Annotated[float, typer.Option("--snippet-seconds", help="Length of each snippet.")] = 60.0,
    fs: Annotated[float, typer.Option("--fs", help="Output sampling rate (Hz).")] = 1250.0,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float16.")] = "float32",
    full_download: Annotated[bool, typer.Option("--full-download", help="Download whole .cbin files.")] = False,
    clean_cache: Annotated[bool, typer.Option("--clean-cache", help="Delete streamed chunks afterwards.")] = False,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Run insertions on Dask: 'local' (a local cluster) or a scheduler address.")] = None,
    alyx_url: AlyxUrlOpt = PUBLIC_ALYX_URL,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
) -> None:
    """Stream raw LF, detect bad channels, destripe and decimate -> lfp.zarr/<pid>/."""
    from ibl_ephys_data.lfp.stage import LfpOptions, parse_window, run_lfp
    from ibl_ephys_data.lfp.stream import clear_stream_cache

    if dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype {dtype!r}: use float32 or float16")
    options = LfpOptions(windows=tuple(parse_window(w) for w in window or []), n_snippets=snippets,
                         snippet_seconds=snippet_seconds, fs_out=fs, dtype=dtype, full_download=full_download)
    ws = open_workspace(workspace)
    conn = connection(alyx_url, offline, one_cache, http_data_server)
    with conn.session() as one:
        statuses = run_lfp(ws, one, options, pids=pids, scheduler=scheduler, connection=conn)
        if clean_cache and not one.offline:
            console.print(f"freed {clear_stream_cache(one) / 1e6:.1f} MB of streamed chunks")
    _print_statuses(statuses, f"lfp -> {ws.lfp}")
    _report_failures(ws, "lfp")


qc_app = typer.Typer(help="Automated QC: metrics, rule-based verdicts with reasons, human reviews.")
app.add_typer(qc_app, name="qc")


@qc_app.callback(invoke_without_command=True)
@user_errors
def qc(
    ctx: typer.Context,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Your own qc_rules.yaml.")] = None,
    prescreen: Annotated[bool, typer.Option("--prescreen", help="Only IBL's small LF QC datasets, no raw LF.")] = False,
    snippets: Annotated[int, typer.Option("--snippets", help="Raw LF snippets per insertion.")] = 5,
    snippet_seconds: Annotated[float, typer.Option("--snippet-seconds")] = 10.0,
    alyx_url: AlyxUrlOpt = PUBLIC_ALYX_URL,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
) -> None:
    """Compute QC metrics and verdicts -> qc/metrics.parquet, qc/verdicts.parquet; print a summary."""
    if ctx.invoked_subcommand is not None:
        return
    from ibl_ephys_data.qc.rules import load_rules
    from ibl_ephys_data.qc.stage import run_qc, summary_tables

    ruleset = load_rules(rules)
    ws = open_workspace(workspace)
    with connection(alyx_url, offline, one_cache, http_data_server).session() as one:
        verdicts = run_qc(ws, one, ruleset, prescreen_only=prescreen, n_snippets=snippets,
                          snippet_seconds=snippet_seconds, pids=pids)
    per_verdict, per_rule = summary_tables(verdicts)
    _print_series(per_verdict, "verdict", f"QC verdicts ({len(verdicts)} insertions, rules v{ruleset.version})")
    _print_series(per_rule, "fired rule", "rules fired")
    _report_failures(ws, "qc")


@qc_app.command("review")
@user_errors
def qc_review(
    pid: Annotated[str, typer.Argument(help="Insertion to review.")],
    verdict: Annotated[str, typer.Option("--verdict", help="PASS, WARNING or FAIL.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept on record).")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who decides.")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
) -> None:
    """Record a human override next to the automatic verdict (append-only qc/reviews.jsonl)."""
    from ibl_ephys_data.qc.reviews import add_review
    from ibl_ephys_data.qc.verdicts import update_verdicts

    ws = open_workspace(workspace)
    record = add_review(ws, pid, verdict, reason, reviewer)
    if ws.qc_metrics.exists():
        update_verdicts(ws)
    console.print(f"review recorded: {record['pid']} -> {record['verdict']} by {record['reviewer']}")


@qc_app.command("show")
@user_errors
def qc_show(
    pid: Annotated[str, typer.Argument(help="Insertion to show.")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    png: Annotated[Path | None, typer.Option("--png", help="Also save the panel as a PNG.")] = None,
) -> None:
    """Print the QC panel of one insertion (Alyx fields, five LFP metrics, verdict and reasons)."""
    import pandas as pd

    from ibl_ephys_data.viz.figures import qc_panel_figure, qc_panel_lines

    ws = Workspace(workspace)
    metrics = pd.read_parquet(ws.qc_metrics).set_index("pid")
    verdicts = pd.read_parquet(ws.qc_verdicts).set_index("pid")
    if pid not in metrics.index:
        raise LookupError(f"pid {pid} has no QC metrics in {ws.qc_metrics}: run `ibl-ephys-data qc` first")
    verdict = verdicts.loc[pid] if pid in verdicts.index else None
    table = Table(title=f"QC {pid}", show_header=False)
    table.add_column("metric")
    table.add_column("value")
    for column, text, colour in qc_panel_lines(metrics.loc[pid], verdict):
        table.add_row(column, f"[{colour}]{text}[/]" if colour else text)
    console.print(table)
    if verdict is not None:
        for reason in verdict["reasons"]:
            console.print(f"  - {reason}", highlight=False)
    if png is not None:
        qc_panel_figure(metrics.loc[pid], verdict, title=pid).savefig(png)
        console.print(f"panel: {png}")


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

    ws = Workspace(workspace)
    channels = channels_for_scene(ws)
    written = render_scene(channels, color_by=color_by, regions=regions.split(",") if regions else None,
                           atlas_name=atlas, screenshot=screenshot, html=html, pids=pids, camera=camera,
                           style=style, brainglobe_dir=brainglobe_dir)
    for kind, path in written.items():
        console.print(f"{kind}: {path}")


def _print_series(series, label: str, title: str) -> None:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("insertions", justify="right")
    for key, count in series.items():
        table.add_row(str(key), str(count))
    console.print(table)


@app.command()
@user_errors
def export(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    regions: Annotated[str | None, typer.Option("--regions", help="Target regions, e.g. CA1,DG,VIS.")] = None,
    level: Annotated[str, typer.Option("--level", help="allen, beryl or cosmos labels.")] = "beryl",
    window_seconds: Annotated[float, typer.Option("--window-seconds")] = 3.0,
    stride_seconds: Annotated[float | None, typer.Option("--stride-seconds")] = None,
    neighbours: Annotated[int, typer.Option("--neighbours", help="Adjacent channels on each side.")] = 0,
    min_channels: Annotated[int, typer.Option("--min-channels", help="Smallest class kept.")] = 10,
    mode: Annotated[str, typer.Option("--mode", help="zero-shot or kfold.")] = "zero-shot",
    train_release: Annotated[str, typer.Option("--train-release")] = "bwm",
    test_release: Annotated[str, typer.Option("--test-release")] = "repro-ephys",
    leakage: Annotated[str, typer.Option("--leakage", help="pid, session or subject.")] = "subject",
    k: Annotated[int, typer.Option("--k", help="Folds (kfold mode).")] = 5,
    strict: Annotated[bool, typer.Option("--strict", help="Error on too-small classes instead of dropping.")] = False,
    keep_flagged: Annotated[bool, typer.Option("--keep-flagged", help="Keep windows flagged by per-window QC "
                                               "(with their flag columns) instead of excluding them.")] = False,
) -> None:
    """Windows index, leakage-free splits (verified) and data card -> dataset/."""
    from ibl_ephys_data.dataset import dataset_info, export_dataset, plan_zero_shot

    ws = open_workspace(workspace)
    if mode == "zero-shot":
        cost = plan_zero_shot(ws.read_catalog(), train_release, test_release)
        console.print("training insertions removed per leakage level: "
                      + ", ".join(f"{lvl} {n}" for lvl, n in cost.items()))
    out = export_dataset(ws, regions=regions, level=level, window_seconds=window_seconds,
                         stride_seconds=stride_seconds, neighbours=neighbours, min_channels=min_channels,
                         leakage=leakage, train_release=train_release, test_release=test_release, mode=mode, k=k,
                         strict=strict, keep_flagged=keep_flagged)
    info = dataset_info(ws)
    flagged = info.get("flagged_windows") or {}
    console.print(f"dataset: {info.get('n_windows', '?')} windows, verified -> {out}; flagged by per-window QC: "
                  f"{flagged.get('windows', 0)} ({'kept' if keep_flagged else 'excluded'})")


dataset_app = typer.Typer(help="Inspect and verify an exported dataset.")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("verify")
@user_errors
def dataset_verify(workspace: WorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Re-derive the split from the catalog; exit non-zero naming any leaking pid or subject."""
    from ibl_ephys_data.dataset import verify

    problems = verify(Workspace(workspace))
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

    console.print_json(json.dumps(dataset_info(Workspace(workspace)), default=str))


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
    from ibl_ephys_data.coverage import coverage_table, overlap_summary, regions_in_one_source

    ws = open_workspace(workspace)
    table = coverage_table(ws, level=level, usable_only=usable_only)
    wide = table.pivot_table(index="region", columns="source", values="n_channels", aggfunc="sum", fill_value=0)
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index[:top]]
    out = Table(title=f"channels per {level} region (top {top}) -> {ws.coverage}")
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

    if not Path(workspace).is_dir():
        raise FileNotFoundError(f"workspace {workspace} does not exist: run the stages first or pass --workspace")
    ws = open_workspace(workspace)
    index = write_report(ws, formats=("png", "svg") if svg else ("png",))
    console.print(f"report: {index}")


def _print_statuses(statuses: dict[str, dict], title: str) -> None:
    table = Table(title=title)
    table.add_column("status")
    table.add_column("insertions", justify="right")
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status["status"]] = counts.get(status["status"], 0) + 1
    for status, count in sorted(counts.items()):
        table.add_row(status, str(count))
    console.print(table)


def _print_counts(df, column: str, title: str) -> None:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("insertions", justify="right")
    if len(df):
        for value, count in df[column].value_counts().sort_index().items():
            table.add_row(str(value), str(count))
    console.print(table)


def _report_failures(ws: Workspace, stage: str) -> None:
    failed = ws.failed_pids(stage)
    for pid, reason in failed.items():
        err_console.print(f"[yellow]{stage} failed for {pid}:[/yellow] {reason}", highlight=False)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Workspace to create (the demo store goes inside).")] = Path(
        "demo-ws"),
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each demo recording (s).")] = 40.0,
    store_only: Annotated[bool, typer.Option("--store-only", help="Only write the demo store.")] = False,
) -> None:
    """Run the whole job on the embedded demo store, served by a loopback Alyx (no internet needed)."""
    from ibl_ephys_data.demo.run import run_demo

    ws = open_workspace(out)
    summary = run_demo(ws, seconds=seconds, store_only=store_only, console=console)
    for line in summary:
        console.print(line)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ibl-ephys-data")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
