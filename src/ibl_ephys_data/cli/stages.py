"""The pipeline commands: one per stage (catalog, channels, lfp, qc, export), ``run``, ``demo``, ``migrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ibl_ephys_data.cli._common import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKSPACE,
    AlyxUrlOpt,
    DataServerOpt,
    ForceOpt,
    OfflineOpt,
    OneCacheOpt,
    PidCsvOpt,
    PidsOpt,
    RetriesOpt,
    RetryFailedOpt,
    SchedulerOpt,
    TimeoutOpt,
    WorkspaceOpt,
    _existing,
    _finish_run,
    _print_counts,
    _print_series,
    _run_insertion_stage,
    app,
    connection,
    console,
    err_console,
    finish,
    open_workspace,
    requested_pids,
    user_errors,
)
from ibl_ephys_data.errors import MissingStageError


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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    retries: RetriesOpt = DEFAULT_RETRIES,
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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    retries: RetriesOpt = DEFAULT_RETRIES,
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
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    retries: RetriesOpt = DEFAULT_RETRIES,
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
    for path in (ws.qc_metrics, ws.qc_verdicts):
        if not path.exists():
            raise MissingStageError(f"{path} does not exist", "qc", ws)
    metrics = pd.read_parquet(ws.qc_metrics).set_index("pid")
    verdicts = pd.read_parquet(ws.qc_verdicts).set_index("pid")
    if pid not in metrics.index:
        raise MissingStageError(f"pid {pid} has no QC metrics in {ws.qc_metrics}", "qc", ws, [pid])
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
    """The whole job (catalog -> channels -> lfp -> qc -> export -> baseline -> coverage -> report), resumable."""
    from ibl_ephys_data.run import load_config, plan, run_pipeline

    cfg = load_config(config, scheduler=scheduler)
    wanted = requested_pids(pids, pid_csv)
    ws = open_workspace(workspace, cfg.connection.network)
    if dry_run:
        with cfg.connection.connection().session() as one:
            console.print_json(data=plan(ws, cfg, one, pids=wanted))
        return
    _finish_run(run_pipeline(ws, cfg, pids=wanted, retry_failed=retry_failed, force=force))


@app.command()
@user_errors
def demo(
    out: Annotated[str, typer.Option(
        "--out", "--workspace", "-w", help="Workspace to create, a folder or s3://bucket/prefix (the demo "
        "store goes in its folder or working copy).")] = "demo-ws",
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
