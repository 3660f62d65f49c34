"""The whole job from one YAML config: catalog -> channels -> lfp -> qc -> export -> coverage -> report.

Why one entry: a brain-wide-map run is hours long and gets interrupted; ``run`` holds the workspace lock,
resumes every stage (finished insertions are skipped by their fingerprints), keeps going past a failed
insertion, stores the resolved config in the manifest, and reports one honest result at the end.
``plan`` answers "how much, how long" before anything is fetched (``run --dry-run``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ibl_ephys_data.errors import InputError, check_option
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.workspace import Workspace

logger = logging.getLogger(__name__)

STAGES = ("catalog", "channels", "lfp", "qc", "export", "baseline", "coverage", "report")
PER_INSERTION = ("channels", "lfp", "qc")
# seconds per insertion per stage when the workspace has no measured cost yet (bench_scale on 2 cores,
# a 4 x 60-s snippet insertion streamed over a fast link)
DEFAULT_SECONDS = {"channels": 2.0, "lfp": 60.0, "qc": 15.0}


@dataclass(frozen=True)
class CatalogOptions:
    releases: tuple[str, ...] = ("bwm", "repro-ephys")
    pid_csv: str | None = None


@dataclass(frozen=True)
class ExportOptions:
    regions: str | None = None
    level: str = "beryl"
    window_seconds: float = 3.0
    stride_seconds: float | None = None
    neighbours: int = 0
    min_channels: int = 10
    leakage: str = "subject"
    train_release: str = "bwm"
    test_release: str = "repro-ephys"
    mode: str = "zero-shot"
    k: int = 5
    strict: bool = False
    keep_flagged: bool = False


@dataclass(frozen=True)
class CoverageOptions:
    level: str = "beryl"
    usable_only: bool = False


@dataclass(frozen=True)
class ReportOptions:
    svg: bool = False


@dataclass(frozen=True)
class ConnectionOptions:
    alyx_url: str | None = None  # None: the public IBL Alyx
    offline: bool = False
    one_cache: str | None = None
    http_data_server: str | None = None
    # seconds and tries of every request (REST, downloads, range reads, an object-store workspace's bucket)
    connect_timeout: float = NetworkPolicy.connect_timeout
    read_timeout: float = NetworkPolicy.read_timeout
    retries: int = NetworkPolicy.retries  # on 5xx, 429, resets and short bodies, with backoff and jitter

    @property
    def network(self) -> NetworkPolicy:
        return NetworkPolicy(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                             retries=self.retries)

    def connection(self):
        """The ``ibl.Connection`` these options describe (credentials from ONE's params or the environment)."""
        from ibl_ephys_data.ibl import Connection

        return Connection(alyx_url=self.alyx_url or Connection.alyx_url, offline=self.offline,
                          cache_dir=Path(self.one_cache) if self.one_cache else None,
                          http_data_server=self.http_data_server, network=self.network)


@dataclass(frozen=True)
class RunConfig:
    """Every stage's options; a YAML file with any subset of these sections (unknown keys are errors)."""

    stages: tuple[str, ...] = STAGES
    scheduler: str | None = None
    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    catalog: CatalogOptions = field(default_factory=CatalogOptions)
    channels: Any = None
    lfp: Any = None
    qc: Any = None
    export: ExportOptions = field(default_factory=ExportOptions)
    baseline: Any = None
    coverage: CoverageOptions = field(default_factory=CoverageOptions)
    report: ReportOptions = field(default_factory=ReportOptions)

    def __post_init__(self):
        from ibl_ephys_data.baseline import BaselineOptions
        from ibl_ephys_data.channels import ChannelsOptions
        from ibl_ephys_data.lfp.stage import LfpOptions
        from ibl_ephys_data.qc.stage import QcOptions

        for name, cls in (("channels", ChannelsOptions), ("lfp", LfpOptions), ("qc", QcOptions),
                          ("baseline", BaselineOptions)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, cls())
        for stage in self.stages:
            check_option("stages", stage, STAGES)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _section(cls, values: dict | None, where: str):
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    for f in fields(cls):  # YAML lists -> tuples for frozen, hashable options
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(tuple(v) if isinstance(v, list) else v for v in values[f.name])
    return cls(**values)


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a run config (YAML), fill every default, apply ``overrides`` (top-level fields)."""
    from ibl_ephys_data.baseline import BaselineOptions
    from ibl_ephys_data.channels import ChannelsOptions
    from ibl_ephys_data.lfp.stage import LfpOptions
    from ibl_ephys_data.qc.stage import QcOptions

    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"--config {path}: no such file; pass a YAML run config (see docs/run.md)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as ex:
            raise InputError(f"--config {path}: not valid YAML ({' '.join(str(ex).split())})") from None
        if not isinstance(raw, dict):
            raise InputError(f"--config {path}: expected a mapping of sections, got {type(raw).__name__}")
    where = str(path) if path else "config"
    sections = {"connection": ConnectionOptions, "catalog": CatalogOptions, "channels": ChannelsOptions,
                "lfp": LfpOptions, "qc": QcOptions, "export": ExportOptions, "baseline": BaselineOptions,
                "coverage": CoverageOptions, "report": ReportOptions}
    unknown = sorted(set(raw) - set(sections) - {"stages", "scheduler"})
    if unknown:
        raise InputError(f"{where}: unknown section(s) {', '.join(unknown)}; allowed: stages, scheduler, "
                         f"{', '.join(sections)}")
    kwargs: dict[str, Any] = {name: _section(cls, raw.get(name), f"{where} [{name}]")
                              for name, cls in sections.items()}
    if "stages" in raw:
        kwargs["stages"] = tuple(raw["stages"])
    kwargs["scheduler"] = raw.get("scheduler")
    config = RunConfig(**kwargs)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class RunResult:
    """Per stage: the per-insertion result (or a one-line summary for the whole-workspace stages)."""

    stages: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        return {name: r.failed for name, r in self.stages.items() if getattr(r, "failed", None)}

    @property
    def ok(self) -> bool:
        return not self.failed


def run_pipeline(workspace: Workspace, config: RunConfig, connection=None, pids: list[str] | None = None,
                 retry_failed: bool = False, force: bool = False, progress: bool | None = None) -> RunResult:
    """Every configured stage in order, resumable; per-insertion failures are collected, not fatal.

    ``connection`` (an ``ibl.Connection``) defaults to the config's connection section. ``pids`` restricts
    the per-insertion stages; the shared tables keep every other insertion.
    """
    connection = connection or config.connection.connection()
    result = RunResult()
    with workspace.lock():
        manifest_run = {"config": config.to_dict(), "pids": pids, "retry_failed": retry_failed}
        workspace.record_stage("run", manifest_run)
        execution = {"connection": connection, "scheduler": config.scheduler, "retry_failed": retry_failed,
                     "force": force, "progress": progress}
        catalog_runs = "catalog" in config.stages and not pids and not retry_failed
        needs_one = catalog_runs or (any(s in config.stages for s in PER_INSERTION) and not config.scheduler)
        with _maybe_session(connection, needs_one) as one, _maybe_cluster(config.scheduler) as client:
            execution["scheduler"] = client
            if catalog_runs:
                from ibl_ephys_data.catalog import run_catalog

                o = config.catalog
                catalog = run_catalog(workspace, one, releases=list(o.releases) if not o.pid_csv else None,
                                      pid_file=o.pid_csv, force=force)
                result.lines.append(f"catalog: {len(catalog)} insertions -> {workspace.where(workspace.catalog)}")
            for name in PER_INSERTION:
                if name in config.stages:
                    stage_result = _per_insertion(name)(workspace, one if not config.scheduler else None,
                                                        getattr(config, name), pids, **execution)
                    result.stages[name] = stage_result
                    result.lines.append(f"{name}: {stage_result.counts()}")
        if "export" in config.stages:
            from ibl_ephys_data.dataset import export_dataset

            out = export_dataset(workspace, **asdict(config.export), force=force)
            result.lines.append(f"dataset: {workspace.where(out)}")
        if "baseline" in config.stages:
            from ibl_ephys_data.baseline import run_baseline

            numbers = run_baseline(workspace, config.baseline)
            main = numbers.get("main", {}).get("balanced_accuracy") if isinstance(numbers, dict) else None
            where = workspace.where(workspace.dataset_dir / "baseline")
            result.lines.append(f"baseline: balanced accuracy {main} -> {where}")
        if "coverage" in config.stages:
            from ibl_ephys_data.coverage import coverage_table

            table = coverage_table(workspace, level=config.coverage.level, usable_only=config.coverage.usable_only)
            where = workspace.where(workspace.coverage)
            result.lines.append(f"coverage: {table['region'].nunique()} regions -> {where}")
        if "report" in config.stages:
            from ibl_ephys_data.viz.report import write_report

            index = write_report(workspace, formats=("png", "svg") if config.report.svg else ("png",))
            result.lines.append(f"report: {workspace.where(index)}")
    return result


def _per_insertion(name: str):
    if name == "channels":
        from ibl_ephys_data.channels import run_channels as fn
    elif name == "lfp":
        from ibl_ephys_data.lfp.stage import run_lfp as fn
    else:
        from ibl_ephys_data.qc.stage import run_qc as fn
    return fn


@contextlib.contextmanager
def _maybe_cluster(scheduler: str | None):
    """One Dask client for all the per-insertion stages of a run (a LocalCluster starts once, not per stage)."""
    if not scheduler:
        yield None
        return
    from ibl_ephys_data.pipeline import dask_client

    with dask_client(scheduler) as client:
        yield client


class _maybe_session:
    """ONE opened once for the in-process stages (and its cache saved at the end), or nothing on Dask."""

    def __init__(self, connection, needed: bool):
        self.connection, self.needed, self._cm = connection, needed, None

    def __enter__(self):
        if not self.needed:
            return None
        self._cm = self.connection.session()
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc) if self._cm is not None else False


# dry run ----------------------------------------------------------------------------------------
def plan(workspace: Workspace, config: RunConfig, one=None, pids: list[str] | None = None) -> dict:
    """What ``run`` would do: insertions per release, bytes to fetch, estimated time (nothing is written).

    Bytes come from ONE's dataset sizes (the channel, QC and timestamps files) and, for the raw LF, from the
    ``.ch`` chunk tables when they are in ONE's cache (exactly the chunks covering the windows), else the
    ``.cbin`` size scaled by the fraction of the recording the windows cover. Time uses the seconds per
    insertion measured by earlier runs in this workspace (manifest), or bench defaults.
    """
    import pandas as pd

    if workspace.catalog.exists():
        catalog = workspace.read_catalog()
    elif one is not None:
        from ibl_ephys_data.catalog import build_catalog, read_pid_csv

        o = config.catalog
        catalog, _ = build_catalog(one, releases=None if o.pid_csv else list(o.releases),
                                   pids=read_pid_csv(o.pid_csv) if o.pid_csv else None)
    else:
        catalog = pd.DataFrame(columns=["pid", "eid", "probe_name", "releases"])
    if pids:
        catalog = catalog[catalog["pid"].isin(pids)]
    per_release: dict[str, int] = {}
    for releases in catalog["releases"].fillna(""):
        for r in (str(releases).split(",") if releases else ["(none)"]):
            per_release[r] = per_release.get(r, 0) + 1
    todo = {name: _todo(workspace, config, name, list(catalog["pid"])) for name in PER_INSERTION
            if name in config.stages}
    fetch = _bytes_to_fetch(one, catalog, config, todo) if one is not None else None
    seconds = _measured_seconds(workspace)
    estimate = {name: len(pids_) * seconds.get(name, DEFAULT_SECONDS[name]) for name, pids_ in todo.items()}
    return {"insertions": len(catalog), "per_release": dict(sorted(per_release.items())),
            "to_run": {k: len(v) for k, v in todo.items()}, "bytes_to_fetch": fetch,
            "seconds_per_insertion": {k: seconds.get(k, DEFAULT_SECONDS[k]) for k in todo},
            "seconds_measured": sorted(seconds), "estimated_seconds": estimate,
            "estimated_total_seconds": sum(estimate.values())}


def _todo(workspace: Workspace, config: RunConfig, name: str, pids: list[str]) -> list[str]:
    from ibl_ephys_data.channels import CHANNELS
    from ibl_ephys_data.lfp.stage import LFP
    from ibl_ephys_data.qc.stage import QC

    stage = {"channels": CHANNELS, "lfp": LFP, "qc": QC}[name]
    return [p for p in pids if not stage.is_done(workspace, p, getattr(config, name))]


def _measured_seconds(workspace: Workspace) -> dict[str, float]:
    """Median seconds per insertion of each stage, from the statuses earlier runs recorded."""
    import numpy as np

    if not workspace.manifest_path.exists():
        return {}
    per_stage: dict[str, list[float]] = {}
    for stages in workspace.read_manifest().get("pids", {}).values():
        for name, status in stages.items():
            if status.get("status") == "done" and "seconds" in status:
                per_stage.setdefault(name, []).append(float(status["seconds"]))
    return {k: float(np.median(v)) for k, v in per_stage.items() if k in PER_INSERTION}


def _bytes_to_fetch(one, catalog, config: RunConfig, todo: dict[str, list[str]]) -> dict[str, int]:
    """Bytes per kind of download for the insertions still to run (ONE's dataset sizes, .ch tables)."""
    out = {"channels": 0, "qc": 0, "lfp": 0}
    eid_of = dict(zip(catalog["pid"], catalog["eid"], strict=True))
    probe_of = dict(zip(catalog["pid"], catalog["probe_name"], strict=True))
    for name, pids in todo.items():
        for pid in pids:
            try:
                datasets = one.list_datasets(eid_of[pid], details=True)
            except Exception as ex:  # a plan never fails on one insertion: it says what it could not size
                logger.warning("dry run: no dataset list for %s (%s)", pid, ex)
                continue
            probe = probe_of[pid]
            names = datasets["rel_path"].astype(str)
            sizes = datasets["file_size"].fillna(0).astype(float)
            if name == "channels":
                mask = names.str.startswith(f"alf/{probe}/") & names.str.contains("channels|electrodeSites")
                out["channels"] += int(sizes[mask].sum())
            elif name == "qc":
                mask = names.str.startswith(f"raw_ephys_data/{probe}/_iblqc_")
                out["qc"] += int(sizes[mask].sum())
            else:
                mask = names.str.startswith(f"raw_ephys_data/{probe}/") & names.str.contains(r"\.lf\.")
                out["lfp"] += _lf_bytes(one, eid_of[pid], probe, sizes[mask & names.str.endswith("bin")].sum(),
                                        config.lfp)
    return out


def _lf_bytes(one, eid: str, probe: str, cbin_bytes: float, options) -> int:
    """Raw LF bytes the lfp stage reads: the windows' chunks from a cached .ch table, else a proportion."""
    import json

    import numpy as np

    from ibl_ephys_data.lfp.windows import snippet_windows

    session = one.eid2path(eid)
    ch = sorted((session / "raw_ephys_data" / probe).glob("*.lf*.ch")) if session is not None else []
    if not ch:
        share = 1.0 if options.full_download else min(1.0, options.n_snippets * options.snippet_seconds / 5400.0)
        return int(cbin_bytes * share)
    table = json.loads(ch[0].read_text())
    offsets = np.asarray(table["chunk_offsets"], dtype=np.int64)
    bounds = np.asarray(table["chunk_bounds"], dtype=np.int64)
    fs = float(table["sample_rate"])
    duration = bounds[-1] / fs
    windows = ([(s, s + d) for s, d in options.windows] if options.windows else
               [(w.start_s, w.stop_s) for w in snippet_windows(duration, options.n_snippets, options.snippet_seconds)])
    chunks: set[int] = set()
    for start, stop in windows:
        a = int(np.searchsorted(bounds, start * fs, side="right") - 1)
        b = int(np.searchsorted(bounds, min(stop * fs, bounds[-1]) - 1, side="right") - 1)
        chunks.update(range(max(a, 0), b + 1))
    return int(sum(offsets[c + 1] - offsets[c] for c in chunks))
