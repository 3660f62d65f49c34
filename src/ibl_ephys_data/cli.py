"""``ibl-ephys-data``: a thin command line over the Python API (one sub-command per stage, plus ``run``, ``demo``).

Commands parse options, call the stage function and print. Exit codes: 0 when every requested insertion is
done (or was already), 1 when any failed (a table names each failed pid with a one-line reason, also in the
log), 2 for usage errors (one red line naming the input and the fix). Imports are lazy so ``--help`` is fast.
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

from ibl_ephys_data.errors import IblEphysDataError, MissingInputError, MissingStageError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Quality-controlled, region-labelled, ML-ready LFP datasets from IBL releases.")
console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger("ibl_ephys_data")

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder (created if missing).")]
AlyxUrlOpt = Annotated[str | None, typer.Option(
    "--alyx-url", help="Alyx database URL (default: the public IBL Alyx).", show_default=False)]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use the ONE cache only, no network.")]
OneCacheOpt = Annotated[Path | None, typer.Option("--one-cache", help="ONE cache folder (default: ONE's own).")]
DataServerOpt = Annotated[str | None, typer.Option("--http-data-server", help="Override ONE's HTTP data server.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Read timeout of every HTTP request (s).")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries of a failed request (5xx, reset, short body).")]
PidsOpt = Annotated[list[str] | None, typer.Option("--pids", help="Only these insertion UUIDs (repeatable).")]
PidCsvOpt = Annotated[Path | None, typer.Option(
    "--pid-csv", help="CSV with a 'pid' column (optional 'eid', 'release').")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Run insertions on Dask: 'local' (a local cluster) or tcp://HOST:PORT.")]
RetryFailedOpt = Annotated[bool, typer.Option("--retry-failed", help="Only the insertions whose last run failed.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Let an empty result replace a non-empty output.")]
DEFAULT_WORKSPACE = Path("ibl-workspace")
USER_ERRORS = (IblEphysDataError, ValueError, FileNotFoundError, LookupError)


def user_errors(func):
    """Turn the errors a user can fix into one clear line and exit code 2 (tracebacks go to the log)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as ex:
            logger.debug("error", exc_info=True)
            logger.error("%s", ex)
            err_console.print(f"[red]error:[/red] {ex}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception:  # a bug: the traceback belongs in the log, and on screen
            logger.exception("unexpected error")
            raise

    return wrapper


def open_workspace(path: Path):
    from ibl_ephys_data.workspace import Workspace

    ws = Workspace(path).create()
    ws.attach_log()
    return ws


def _existing(path: Path):
    """A workspace to read (nothing is created)."""
    from ibl_ephys_data.workspace import Workspace

    return Workspace(path)


def connection(alyx_url: str | None, offline: bool, one_cache: Path | None, http_data_server: str | None,
               timeout: float = 60.0, retries: int = 4):
    from ibl_ephys_data.run import ConnectionOptions

    return ConnectionOptions(alyx_url=alyx_url, offline=offline, one_cache=str(one_cache) if one_cache else None,
                             http_data_server=http_data_server, read_timeout=timeout, retries=retries).connection()


def requested_pids(pids: list[str] | None, pid_csv: Path | None) -> list[str] | None:
    """``--pids`` and ``--pid-csv`` together; non-UUIDs are rejected before anything runs."""
    from ibl_ephys_data.pipeline import validate_pids

    out = list(pids or [])
    if pid_csv is not None:
        from ibl_ephys_data.catalog import read_pid_csv

        out += list(read_pid_csv(pid_csv)["pid"])
    return validate_pids(out) if out else None


def finish(result, title: str) -> None:
    """Print the statuses and the failed insertions; exit 1 if any insertion failed."""
    table = Table(title=title)
    table.add_column("status")
    table.add_column("insertions", justify="right")
    for status, count in result.counts().items():
        table.add_row(status, str(count))
    console.print(table)
    if result.failed:
        failed = Table(title=f"{result.stage}: {len(result.failed)} insertion(s) failed", title_style="red")
        failed.add_column("pid")
        failed.add_column("reason")
        for pid, reason in result.failed.items():
            failed.add_row(pid, reason)
        err_console.print(failed)
        raise typer.Exit(1)


@app.command()
@user_errors
def catalog(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    release: Annotated[list[str] | None, typer.Option("--release", help="repro-ephys or bwm (repeatable).")] = None,
    pid_csv: PidCsvOpt = None,
    alyx_url: AlyxUrlOpt = None,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
    force: ForceOpt = False,
) -> None:
    """List the insertions of a release (or of a pid CSV) with their Alyx QC -> catalog.parquet."""
    from ibl_ephys_data.catalog import read_pid_csv, run_catalog
    from ibl_ephys_data.ibl import release_tags

    for name in release or []:
        release_tags(name)
    if pid_csv is not None:
        read_pid_csv(pid_csv)
    ws = open_workspace(workspace)
    with ws.lock(), connection(alyx_url, offline, one_cache, http_data_server).session() as one:
        df = run_catalog(ws, one, releases=release, pid_file=pid_csv, force=force)
    _print_counts(df, "releases", f"{len(df)} insertions -> {ws.catalog}")
    failed = ws.failed_pids("catalog")
    for pid, reason in failed.items():
        err_console.print(f"[yellow]catalog failed for {pid}:[/yellow] {reason}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _run_insertion_stage(stage: str, workspace: Path, options, pids, pid_csv, scheduler, retry_failed, force,
                         alyx_url, offline, one_cache, http_data_server, timeout, retries) -> None:
    """The shared body of ``channels``, ``lfp`` and ``qc``: lock, ONE, the pipeline runner, honest exit."""
    from ibl_ephys_data.run import _per_insertion

    wanted = requested_pids(pids, pid_csv)
    ws = open_workspace(workspace)
    conn = connection(alyx_url, offline, one_cache, http_data_server, timeout, retries)
    run = _per_insertion(stage)
    with ws.lock():
        if scheduler:
            result = run(ws, None, options, wanted, connection=conn, scheduler=scheduler, retry_failed=retry_failed,
                         force=force)
        else:
            with conn.session() as one:
                result = run(ws, one, options, wanted, connection=conn, retry_failed=retry_failed, force=force)
    finish(result, f"{stage} -> {ws.root}")


@app.command()
@user_errors
def channels(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    pid_csv: PidCsvOpt = None,
    scheduler: SchedulerOpt = None,
    retry_failed: RetryFailedOpt = False,
    force: ForceOpt = False,
    alyx_url: AlyxUrlOpt = None,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 4,
) -> None:
    """Channel locations (xyz, CCF, Allen/Beryl/Cosmos) of the catalog's insertions -> channels.parquet."""
    from ibl_ephys_data.channels import ChannelsOptions

    _run_insertion_stage("channels", workspace, ChannelsOptions(), pids, pid_csv, scheduler, retry_failed, force,
                         alyx_url, offline, one_cache, http_data_server, timeout, retries)


@app.command()
@user_errors
def lfp(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    pid_csv: PidCsvOpt = None,
    window: Annotated[list[str] | None, typer.Option("--window", help="START:SECONDS (repeatable).")] = None,
    snippets: Annotated[int, typer.Option("--snippets", help="IBL snippet scheme: number of snippets.")] = 4,
    snippet_seconds: Annotated[float, typer.Option("--snippet-seconds", help="Length of each snippet.")] = 60.0,
    fs: Annotated[float, typer.Option("--fs", help="Output sampling rate (Hz).")] = 1250.0,
    dtype: Annotated[str, typer.Option("--dtype", help="int16 (scaled, compact), float32 or float16.")] = "int16",
    full_download: Annotated[bool, typer.Option("--full-download", help="Download whole .cbin files.")] = False,
    clean_cache: Annotated[bool, typer.Option("--clean-cache", help="Delete streamed chunks afterwards.")] = False,
    scheduler: SchedulerOpt = None,
    retry_failed: RetryFailedOpt = False,
    force: ForceOpt = False,
    alyx_url: AlyxUrlOpt = None,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 4,
) -> None:
    """Stream raw LF, detect bad channels, destripe and decimate -> lfp.zarr/<pid>/."""
    from ibl_ephys_data.errors import check_option
    from ibl_ephys_data.lfp.stage import LfpOptions, parse_window
    from ibl_ephys_data.workspace.lfp_store import DTYPES

    check_option("--dtype", dtype, DTYPES)
    options = LfpOptions(windows=tuple(parse_window(w) for w in window or []), n_snippets=snippets,
                         snippet_seconds=snippet_seconds, fs_out=fs, dtype=dtype, full_download=full_download)
    try:
        _run_insertion_stage("lfp", workspace, options, pids, pid_csv, scheduler, retry_failed, force, alyx_url,
                             offline, one_cache, http_data_server, timeout, retries)
    finally:
        if clean_cache and not offline:
            from ibl_ephys_data.lfp.stream import clear_stream_cache

            with connection(alyx_url, offline, one_cache, http_data_server).session() as one:
                console.print(f"freed {clear_stream_cache(one) / 1e6:.1f} MB of streamed chunks")


qc_app = typer.Typer(help="Automated QC: metrics, rule-based verdicts with reasons, human reviews.")
app.add_typer(qc_app, name="qc")


@qc_app.callback(invoke_without_command=True)
@user_errors
def qc(
    ctx: typer.Context,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    pid_csv: PidCsvOpt = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Your own qc_rules.yaml.")] = None,
    prescreen: Annotated[bool, typer.Option("--prescreen", help="Only IBL's small LF QC datasets, no raw LF.")] = False,
    snippets: Annotated[int, typer.Option("--snippets", help="Raw LF snippets per insertion.")] = 5,
    snippet_seconds: Annotated[float, typer.Option("--snippet-seconds")] = 10.0,
    scheduler: SchedulerOpt = None,
    retry_failed: RetryFailedOpt = False,
    force: ForceOpt = False,
    alyx_url: AlyxUrlOpt = None,
    offline: OfflineOpt = False,
    one_cache: OneCacheOpt = None,
    http_data_server: DataServerOpt = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 4,
) -> None:
    """Compute QC metrics and verdicts -> qc/metrics.parquet, qc/verdicts.parquet; print a summary."""
    if ctx.invoked_subcommand is not None:
        return
    import pandas as pd

    from ibl_ephys_data.qc.rules import load_rules
    from ibl_ephys_data.qc.stage import QcOptions, summary_tables

    ruleset = load_rules(rules)
    options = QcOptions(rules=str(rules) if rules else None, prescreen_only=prescreen, n_snippets=snippets,
                        snippet_seconds=snippet_seconds)
    try:
        _run_insertion_stage("qc", workspace, options, pids, pid_csv, scheduler, retry_failed, force, alyx_url,
                             offline, one_cache, http_data_server, timeout, retries)
    finally:
        verdicts_path = open_workspace(workspace).qc_verdicts
        if verdicts_path.exists():
            verdicts = pd.read_parquet(verdicts_path)
            per_verdict, per_rule = summary_tables(verdicts)
            _print_series(per_verdict, "verdict", f"QC verdicts ({len(verdicts)} insertions, rules v{ruleset.version})")
            _print_series(per_rule, "fired rule", "rules fired")


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
    with ws.lock():
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

    ws = _existing(workspace)
    metrics = pd.read_parquet(ws.qc_metrics).set_index("pid")
    verdicts = pd.read_parquet(ws.qc_verdicts).set_index("pid")
    if pid not in metrics.index:
        raise MissingStageError(f"pid {pid} has no QC metrics in {ws.qc_metrics}", "qc", ws.root, [pid])
    verdict = verdicts.loc[pid] if pid in verdicts.index else None
    table = Table(title=f"QC {pid}", show_header=False)
    table.add_column("metric")
    table.add_column("value")
    catalog = ws.read_catalog().set_index("pid")
    alyx = catalog.loc[pid] if pid in catalog.index else None
    for column, text, colour in qc_panel_lines(metrics.loc[pid], verdict, alyx):
        table.add_row(column, f"[{colour}]{text}[/]" if colour else text)
    console.print(table)
    if verdict is not None:
        for reason in verdict["reasons"]:
            console.print(f"  - {reason}", highlight=False)
    if png is not None:
        qc_panel_figure(metrics.loc[pid], verdict, title=pid, alyx=alyx).savefig(png)
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

    ws = _existing(workspace)
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
    force: ForceOpt = False,
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
    with ws.lock():
        out = export_dataset(ws, regions=regions, level=level, window_seconds=window_seconds,
                             stride_seconds=stride_seconds, neighbours=neighbours, min_channels=min_channels,
                             leakage=leakage, train_release=train_release, test_release=test_release, mode=mode,
                             k=k, strict=strict, force=force, keep_flagged=keep_flagged)
    info = dataset_info(ws)
    flagged = info.get("flagged_windows") or {}
    console.print(f"dataset: {info.get('n_windows', '?')} windows, verified -> {out}; flagged by per-window QC: "
                  f"{flagged.get('windows', 0)} ({'kept' if keep_flagged else 'excluded'})")


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

    if not Path(workspace).is_dir():
        raise MissingInputError(f"workspace {workspace} does not exist: run the stages first or pass --workspace")
    ws = open_workspace(workspace)
    index = write_report(ws, formats=("png", "svg") if svg else ("png",))
    console.print(f"report: {index}")


def _print_counts(df, column: str, title: str) -> None:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("insertions", justify="right")
    if len(df):
        for value, count in df[column].value_counts().sort_index().items():
            table.add_row(str(value), str(count))
    console.print(table)


@app.command()
@user_errors
def run(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config (every stage's options).")] = None,
    pids: PidsOpt = None,
    pid_csv: PidCsvOpt = None,
    scheduler: SchedulerOpt = None,
    retry_failed: RetryFailedOpt = False,
    force: ForceOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (insertions, bytes, time) only.")] = False,
) -> None:
    """The whole job (catalog -> channels -> lfp -> qc -> export -> coverage -> report), resumable."""
    from ibl_ephys_data.run import load_config, plan, run_pipeline

    cfg = load_config(config, scheduler=scheduler)
    wanted = requested_pids(pids, pid_csv)
    ws = open_workspace(workspace)
    if dry_run:
        with cfg.connection.connection().session() as one:
            console.print_json(data=plan(ws, cfg, one, pids=wanted))
        return
    _finish_run(run_pipeline(ws, cfg, pids=wanted, retry_failed=retry_failed, force=force))


def _finish_run(result) -> None:
    for line in result.lines:
        console.print(line, highlight=False)
    if result.failed:
        failed = Table(title="failed insertions", title_style="red")
        for column in ("stage", "pid", "reason"):
            failed.add_column(column)
        for stage, pids in result.failed.items():
            for pid, reason in pids.items():
                failed.add_row(stage, pid, reason)
        err_console.print(failed)
        raise typer.Exit(1)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Workspace to create (the demo store goes inside).")] = Path(
        "demo-ws"),
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each demo recording (s).")] = 40.0,
    store_only: Annotated[bool, typer.Option("--store-only", help="Only write the demo store.")] = False,
    scheduler: SchedulerOpt = None,
) -> None:
    """Run the whole job on the embedded demo store, served by a loopback Alyx (no internet needed)."""
    from ibl_ephys_data.demo.run import run_demo

    ws = open_workspace(out)
    result = run_demo(ws, seconds=seconds, store_only=store_only, console=console, scheduler=scheduler)
    _finish_run(result)


@app.command()
@user_errors
def migrate(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    pids: PidsOpt = None,
    dtype: Annotated[str, typer.Option("--dtype", help="int16 (scaled, compact), float32 or float16.")] = "int16",
) -> None:
    """Convert lfp.zarr insertions of the old layout (zarr v2, float32) to the current one, in place."""
    from ibl_ephys_data.errors import check_option
    from ibl_ephys_data.workspace.lfp_store import DTYPES
    from ibl_ephys_data.workspace.lfp_store import migrate as migrate_store

    check_option("--dtype", dtype, DTYPES)
    from ibl_ephys_data.pipeline import StageResult, validate_pids

    ws = open_workspace(workspace)
    with ws.lock():
        statuses = migrate_store(ws.lfp, pids=validate_pids(pids) or None, dtype=dtype)
    finish(StageResult("migrate", statuses), f"migrate -> {ws.lfp}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ibl-ephys-data")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
