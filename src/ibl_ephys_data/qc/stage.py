"""Stage 4 — QC: Alyx fields + signal metrics on raw LF snippets (+ IBL's small LF QC datasets) -> verdicts.

``run_qc`` gathers metrics per insertion into ``qc/metrics.parquet`` (and per channel into
``qc/channel_metrics.parquet``), then applies the versioned rules (``update_verdicts``) and human reviews.
With ``prescreen_only`` no raw LF is read: only ``_iblqc_ephysSpectralDensityLF`` / ``_iblqc_ephysTimeRmsLF``
(a few MB per insertion), so all of a release can be triaged before streaming anything.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from one.api import One

from ibl_ephys_data.errors import EmptyResultError, MissingStageError
from ibl_ephys_data.lfp.artifacts import window_flag_metrics
from ibl_ephys_data.lfp.bad_channels import detect_channel_labels
from ibl_ephys_data.lfp.stream import open_lf_reader
from ibl_ephys_data.net import verified_dataset
from ibl_ephys_data.pipeline import InsertionStage, StageResult, run_stage
from ibl_ephys_data.qc.metrics import snippet_qc
from ibl_ephys_data.qc.prescreen import FILES as PRESCREEN_FILES
from ibl_ephys_data.qc.prescreen import RMS_TIMELINE_FILE, prescreen_arrays, rms_timeline
from ibl_ephys_data.qc.reviews import apply_reviews, read_reviews
from ibl_ephys_data.qc.rules import load_rules
from ibl_ephys_data.qc.verdicts import (
    alyx_metrics,
    channel_counts,
    channel_usable,
    compute_verdicts,
    write_verdicts,
)
from ibl_ephys_data.workspace import Workspace, atomic_path, fingerprint, write_parquet

STAGE = "qc"


def prescreen_pid(one: One, pid: str, good: np.ndarray | None = None,
                  timelines: dict[str, pd.DataFrame] | None = None) -> dict[str, float]:
    """Pre-screen one insertion from the four small ``_iblqc_*LF`` datasets, downloaded through ONE.

    ``timelines`` (optional) receives the insertion's whole-recording RMS windows (``prescreen.rms_timeline``).
    """
    eid, probe = one.pid2eid(pid)
    arrays = {}
    for key, name in PRESCREEN_FILES.items():
        path = verified_dataset(one, eid, name, collection=f"raw_ephys_data/{probe}")
        arrays[key] = np.load(path)
    if timelines is not None:  # artifact timeline of the report (viz.timeline)
        fs = 2.0 * float(np.asarray(arrays["freqs"]).ravel()[-1])
        timelines[pid] = rms_timeline(arrays["rms"], arrays["timestamps"], fs, good)
    return prescreen_arrays(**arrays, good=good)


def _labels_for(channels: pd.DataFrame, pid: str) -> np.ndarray | None:
    rows = channels[channels["pid"] == pid].sort_values("raw_ind")
    if "bad_channel_label" not in rows or rows["bad_channel_label"].isna().any() or rows.empty:
        return None
    return rows["bad_channel_label"].to_numpy(dtype=int)


def signal_pid(one: One, pid: str, labels: np.ndarray | None, n_snippets: int, snippet_seconds: float
               ) -> tuple[dict, pd.DataFrame]:
    """Signal metrics on raw LF snippets (streamed); bad channels detected here if the lfp stage has not."""
    reader = open_lf_reader(one, pid)
    if labels is None:
        labels = detect_channel_labels(reader)["bad_channel_label"].to_numpy(dtype=int)
    values, per_channel = snippet_qc(reader, labels, n_snippets=n_snippets, snippet_seconds=snippet_seconds)
    return values, per_channel.assign(pid=pid)


@dataclass(frozen=True)
class QcOptions:
    """What decides an insertion's QC metrics; the rules apply when the tables are assembled."""

    rules: str | None = None  # a qc_rules.yaml path; None = the packaged rules
    prescreen_only: bool = False
    with_prescreen: bool = True
    n_snippets: int = 5
    snippet_seconds: float = 10.0

    def spec(self) -> dict:
        spec = asdict(self)
        spec.pop("rules")
        return spec


def process_qc(one: One, workspace: Workspace, pid: str, options: QcOptions) -> None:
    """One insertion's metrics -> ``parts/qc/<pid>.channels.parquet`` then ``parts/qc/<pid>.parquet`` (the commit)."""
    labels = _labels_for(pd.read_parquet(workspace.channels, filters=[("pid", "==", pid)]), pid)
    row: dict = {"pid": pid}
    stamp = fingerprint(options.spec())
    if options.with_prescreen or options.prescreen_only:
        timelines: dict[str, pd.DataFrame] = {}
        row.update(prescreen_pid(one, pid, labels == 0 if labels is not None else None, timelines))
        workspace.write_part(STAGE, pid, timelines[pid].assign(pid=pid), stamp, name="rms")
    if not options.prescreen_only:
        values, per_channel = signal_pid(one, pid, labels, options.n_snippets, options.snippet_seconds)
        row.update(values)
        workspace.write_part(STAGE, pid, per_channel.reset_index(drop=True), stamp, name="channels")
    workspace.write_part(STAGE, pid, pd.DataFrame([row]), stamp)


def qc_done(workspace: Workspace, pid: str, options: QcOptions) -> bool:
    stamp = fingerprint(options.spec())
    return workspace.has_part(STAGE, pid, stamp) and (
        options.prescreen_only or workspace.has_part(STAGE, pid, stamp, name="channels"))


def assemble_qc(workspace: Workspace, options: QcOptions, force: bool = False) -> pd.DataFrame:
    """Metrics, verdicts, channel metrics and RMS timelines of every insertion QC has run on, committed together.

    Rows: catalog insertions with a QC part, plus those whose QC failed (their metrics are missing, so their
    verdict is NOT_SET, never a silent PASS). The three tables are written into one temporary folder that
    replaces ``qc/`` in one rename (reviews are carried over), so they never disagree after a kill.
    """
    ruleset = load_rules(options.rules)
    catalog = workspace.read_catalog()
    channels = workspace.read_channels()
    catalog_pids = set(catalog["pid"].astype(str))
    parts = workspace.read_parts(STAGE, pids=catalog_pids)
    failed = set(workspace.failed_pids(STAGE)) & catalog_pids
    measured = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"pid": pd.Series(dtype=str)})
    pids = sorted(set(measured["pid"]) | failed)
    metrics = alyx_metrics(catalog[catalog["pid"].isin(pids)]).merge(measured, on="pid", how="left")
    if "bad_channel_label" in channels:
        counts = channel_counts(channels)
        metrics = metrics.merge(counts.drop(columns=[c for c in counts if c in metrics and c != "pid"]),
                                on="pid", how="left")
    if not options.prescreen_only:  # per-window QC: share of the stored (exported) LFP the lfp stage flagged
        metrics = metrics.merge(window_flag_metrics(workspace.lfp, pids), on="pid", how="left")
    metrics = metrics.sort_values("pid").reset_index(drop=True)
    if metrics.empty and not force and workspace.qc_metrics.exists() and len(pd.read_parquet(workspace.qc_metrics)):
        raise EmptyResultError(f"{workspace.qc_metrics}: this run produced no QC rows; the existing tables were "
                               "kept (pass --force to replace them)")
    verdicts = apply_reviews(compute_verdicts(metrics, ruleset), read_reviews(workspace.qc_reviews))
    per_channel = workspace.read_parts(STAGE, name="channels", pids=set(pids))
    channel_metrics = _channel_metrics(channels, per_channel, verdicts)
    with atomic_path(workspace.qc_dir) as tmp:
        tmp.mkdir()
        if workspace.qc_reviews.exists():
            shutil.copy2(workspace.qc_reviews, tmp / workspace.qc_reviews.name)
        write_parquet(metrics, tmp / workspace.qc_metrics.name)
        write_verdicts(verdicts, tmp / workspace.qc_verdicts.name)
        write_parquet(channel_metrics, tmp / workspace.qc_channel_metrics.name)
        rms = workspace.read_parts(STAGE, name="rms", pids=set(pids))
        if rms:  # the whole-recording RMS windows of the pre-screen: the report's artifact timeline
            write_parquet(pd.concat(rms, ignore_index=True).sort_values(["pid", "t_start_s"]).reset_index(drop=True),
                          tmp / RMS_TIMELINE_FILE)
    workspace.record_stage("qc_verdicts", {"rules_version": ruleset.version, "rules_sha256": ruleset.sha256,
                                           "rules_file": ruleset.origin})
    return verdicts


QC = InsertionStage(STAGE, process_qc, qc_done, assemble_qc)


def run_qc(workspace: Workspace, one: One | None = None, options: QcOptions | None = None,
           pids: list[str] | None = None, **execution) -> StageResult:
    """QC metrics of the catalog's insertions (or ``pids``), then verdicts for all -> ``qc/``.

    ``execution``: ``connection``, ``scheduler``, ``retry_failed``, ``force``, ``progress`` of
    :func:`ibl_ephys_data.pipeline.run_stage`.
    """
    options = options or QcOptions()
    load_rules(options.rules)  # a broken rules file is a usage error before anything runs
    if not workspace.channels.exists():
        raise MissingStageError(f"{workspace.channels} does not exist", "channels", workspace)
    return run_stage(QC, workspace, options, pids, one=one, **execution)


def _channel_metrics(channels: pd.DataFrame, per_channel: list[pd.DataFrame], verdicts: pd.DataFrame
                     ) -> pd.DataFrame:
    """Per-channel metrics plus the ``usable`` flag (good label, inside the brain, insertion not FAIL)."""
    if "bad_channel_label" not in channels:
        channels = channels.assign(bad_channel_label=pd.NA)
    usable = channel_usable(channels, verdicts)
    if per_channel:
        values = pd.concat(per_channel, ignore_index=True).drop(columns=["label"], errors="ignore")
        usable = usable.merge(values, on=["pid", "raw_ind"], how="left")
    return usable.sort_values(["pid", "raw_ind"]).reset_index(drop=True)


def summary_tables(verdicts: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Counts per final verdict and per fired rule, for the command line summary."""
    per_verdict = verdicts["final_verdict"].value_counts().sort_index()
    fired = verdicts["fired_rules"].explode().dropna()
    return per_verdict, fired.value_counts().sort_index()
