"""Stage 4 — QC: Alyx fields + signal metrics on raw LF snippets (+ IBL's small LF QC datasets) -> verdicts.

``run_qc`` gathers metrics per insertion into ``qc/metrics.parquet`` (and per channel into
``qc/channel_metrics.parquet``), then applies the versioned rules (``update_verdicts``) and human reviews.
With ``prescreen_only`` no raw LF is read: only ``_iblqc_ephysSpectralDensityLF`` / ``_iblqc_ephysTimeRmsLF``
(a few MB per insertion), so all of a release can be triaged before streaming anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from one.api import One

from ibl_ephys_data.lfp.artifacts import window_flag_metrics
from ibl_ephys_data.lfp.bad_channels import detect_channel_labels
from ibl_ephys_data.lfp.stream import open_lf_reader
from ibl_ephys_data.qc.metrics import snippet_qc
from ibl_ephys_data.qc.prescreen import FILES as PRESCREEN_FILES
from ibl_ephys_data.qc.prescreen import RMS_TIMELINE_FILE, prescreen_arrays, rms_timeline
from ibl_ephys_data.qc.rules import RuleSet, load_rules
from ibl_ephys_data.qc.verdicts import alyx_metrics, channel_counts, channel_usable, update_verdicts
from ibl_ephys_data.workspace import Workspace, run_per_pid, write_parquet


def prescreen_pid(one: One, pid: str, good: np.ndarray | None = None,
                  timelines: dict[str, pd.DataFrame] | None = None) -> dict[str, float]:
    """Pre-screen one insertion from the four small ``_iblqc_*LF`` datasets, downloaded through ONE.

    ``timelines`` (optional) receives the insertion's whole-recording RMS windows (``prescreen.rms_timeline``).
    """
    eid, probe = one.pid2eid(pid)
    arrays = {}
    for key, name in PRESCREEN_FILES.items():
        path = one.load_dataset(eid, name, collection=f"raw_ephys_data/{probe}", download_only=True)
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


def run_qc(workspace: Workspace, one: One | None, rules: RuleSet | str | Path | None = None,
           prescreen_only: bool = False, with_prescreen: bool = True, n_snippets: int = 5,
           snippet_seconds: float = 10.0, pids: list[str] | None = None) -> pd.DataFrame:
    """Compute metrics and verdicts for the catalog's insertions; returns the verdicts table."""
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    catalog = workspace.read_catalog()
    channels = workspace.read_channels()
    wanted = list(catalog["pid"]) if not pids else [p for p in catalog["pid"] if p in set(pids)]
    params = {"prescreen_only": prescreen_only, "with_prescreen": with_prescreen, "n_snippets": n_snippets,
              "snippet_seconds": snippet_seconds}

    timelines: dict[str, pd.DataFrame] = {}

    def work(pid: str) -> tuple[dict, pd.DataFrame | None]:
        labels = _labels_for(channels, pid)
        row: dict = {}
        if with_prescreen or prescreen_only:
            row.update(prescreen_pid(one, pid, labels == 0 if labels is not None else None, timelines))
        if prescreen_only:
            return row, None
        values, chans = signal_pid(one, pid, labels, n_snippets, snippet_seconds)
        return {**row, **values}, chans

    # a failing insertion keeps missing metrics (its verdict is NOT_SET), never a silent PASS
    results, statuses = run_per_pid("qc", wanted, work)
    rows = [{"pid": pid, **results.get(pid, ({}, None))[0]} for pid in wanted]
    per_channel = [chans for _, chans in results.values() if chans is not None]
    metrics = alyx_metrics(catalog[catalog["pid"].isin(wanted)]).merge(pd.DataFrame(rows), on="pid", how="left")
    if "bad_channel_label" in channels:
        counts = channel_counts(channels)
        metrics = metrics.merge(counts.drop(columns=[c for c in counts if c in metrics and c != "pid"]),
                                on="pid", how="left")
    if not prescreen_only:  # per-window QC: share of the stored (exported) LFP flagged by the lfp stage
        metrics = metrics.merge(window_flag_metrics(workspace.lfp, wanted), on="pid", how="left")
    metrics = metrics.sort_values("pid").reset_index(drop=True)
    write_parquet(metrics, workspace.qc_metrics)
    _write_rms_timeline(workspace, timelines)
    workspace.record_stage("qc", {**params, "rules_version": ruleset.version}, statuses)
    verdicts = update_verdicts(workspace, ruleset, metrics)
    _write_channel_metrics(workspace, channels, per_channel, verdicts)
    return verdicts


def _write_rms_timeline(workspace: Workspace, timelines: dict[str, pd.DataFrame]) -> None:
    """``qc/rms_timeline.parquet``: these insertions' RMS windows replace theirs, the others' are kept."""
    if not timelines:
        return
    path = workspace.qc_metrics.with_name(RMS_TIMELINE_FILE)
    new = pd.concat([t.assign(pid=pid) for pid, t in timelines.items()], ignore_index=True)
    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["pid"].isin(list(timelines))], new], ignore_index=True)
    write_parquet(new.sort_values(["pid", "t_start_s"]).reset_index(drop=True), path)


def _write_channel_metrics(workspace: Workspace, channels: pd.DataFrame, per_channel: list[pd.DataFrame],
                           verdicts: pd.DataFrame) -> None:
    """Per-channel metrics plus the ``usable`` flag (good label, inside the brain, insertion not FAIL)."""
    if "bad_channel_label" not in channels:
        channels = channels.assign(bad_channel_label=pd.NA)
    usable = channel_usable(channels, verdicts)
    if per_channel:
        values = pd.concat(per_channel, ignore_index=True).drop(columns=["label"], errors="ignore")
        usable = usable.merge(values, on=["pid", "raw_ind"], how="left")
    write_parquet(usable.sort_values(["pid", "raw_ind"]).reset_index(drop=True), workspace.qc_channel_metrics)


def summary_tables(verdicts: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Counts per final verdict and per fired rule, for the command line summary."""
    per_verdict = verdicts["final_verdict"].value_counts().sort_index()
    fired = verdicts["fired_rules"].explode().dropna()
    return per_verdict, fired.value_counts().sort_index()
