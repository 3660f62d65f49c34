"""Rule-based verdicts per insertion, the per-channel ``usable`` flag, and the Alyx-derived metrics.

A verdict must be reproducible (same metrics + same rules -> byte-identical verdicts.parquet) and
explainable (every fired rule with the value that fired it). A missing input is never read as a pass:
when a missing metric could change the outcome, the verdict is NOT_SET and the reason says which input
is missing. See docs/qc.md ("Rules and thresholds").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from one.alf.spec import QC

from ibl_ephys_data.errors import InputError, MissingStageError
from ibl_ephys_data.qc.reviews import apply_reviews, read_reviews
from ibl_ephys_data.qc.rules import Rule, RuleSet, resolve_rules
from ibl_ephys_data.workspace import Workspace, atomic_path
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_LABELS, SEVERITIES

logger = logging.getLogger(__name__)

#: metrics computed from others when the table lacks them (sum of the listed columns; NaN if any is NaN)
DERIVED_METRICS = {"n_bad": ("n_dead", "n_noisy")}
_RANK = {severity: k + 1 for k, severity in enumerate(SEVERITIES)}

VERDICT_SCHEMA = pa.schema([
    ("pid", pa.string()),
    ("verdict", pa.string()),
    ("fired_rules", pa.list_(pa.string())),
    ("fired_severities", pa.list_(pa.string())),
    ("fired_metrics", pa.list_(pa.string())),
    ("missing_rules", pa.list_(pa.string())),
    ("skipped_rules", pa.list_(pa.string())),
    ("reasons", pa.list_(pa.string())),
    ("rules_version", pa.string()),
    ("rules_sha256", pa.string()),
])
OVERRIDE_FIELDS = [
    ("auto_verdict", pa.string()),
    ("final_verdict", pa.string()),
    ("override_by", pa.string()),
    ("override_time", pa.string()),
    ("override_reason", pa.string()),
]


def compute_verdicts(metrics: pd.DataFrame, rules: RuleSet | str | os.PathLike | None = None) -> pd.DataFrame:
    """Apply the rules to a per-insertion metrics table (one row per pid, one column per metric).

    Returns one row per pid, sorted by pid: ``verdict`` (PASS / WARNING / FAIL / NOT_SET),
    ``fired_rules`` with, element by element, their ``fired_severities`` and ``fired_metrics`` (as data,
    so a view colours a metric by the rules that fired on it without parsing prose), ``missing_rules``
    (NOT_SET rules whose metric is missing), ``skipped_rules`` (optional rules whose metric is missing),
    ``reasons`` (one line per fired or missing rule, with the value), ``rules_version`` and
    ``rules_sha256``. A metric column absent from the table counts as
    missing for every insertion, except DERIVED_METRICS (``n_bad`` = ``n_dead`` + ``n_noisy``).

    Combination: FAIL if any FAIL rule fired; otherwise NOT_SET if a missing metric belongs to a rule
    more severe than anything that fired (it could still change the verdict); otherwise WARNING if a
    WARNING rule fired; otherwise PASS.
    """
    ruleset = resolve_rules(rules)
    table = _validated_metrics(metrics)
    n = len(table)
    fired = [[] for _ in range(n)]
    fired_severities = [[] for _ in range(n)]
    fired_metrics = [[] for _ in range(n)]
    missing = [[] for _ in range(n)]
    skipped = [[] for _ in range(n)]
    reasons = [[] for _ in range(n)]
    worst_fired = np.zeros(n, dtype=int)
    worst_missing = np.zeros(n, dtype=int)
    for rule in ruleset.rules:
        values = _metric_values(table, rule.metric)
        is_missing = np.isnan(values)
        for i in np.flatnonzero(rule.fires(values)):
            fired[i].append(rule.id)
            fired_severities[i].append(rule.severity)
            fired_metrics[i].append(rule.metric)
            reasons[i].append(_fired_reason(rule, values[i]))
            worst_fired[i] = max(worst_fired[i], _RANK[rule.severity])
        for i in np.flatnonzero(is_missing):
            if rule.on_missing == "SKIP":
                skipped[i].append(rule.id)
                continue
            missing[i].append(rule.id)
            reasons[i].append(f"{rule.id} (NOT_SET): {rule.metric} is missing, needed for {rule.condition} "
                              f"({rule.severity})")
            worst_missing[i] = max(worst_missing[i], _RANK[rule.severity])
    verdict = np.where(
        worst_fired == _RANK["FAIL"], "FAIL",
        np.where(worst_missing > worst_fired, "NOT_SET",
                 np.where(worst_fired == _RANK["WARNING"], "WARNING", "PASS")),
    )
    out = pd.DataFrame({
        "pid": table["pid"].to_numpy(dtype=object),
        "verdict": verdict.astype(object),
        "fired_rules": fired,
        "fired_severities": fired_severities,
        "fired_metrics": fired_metrics,
        "missing_rules": missing,
        "skipped_rules": skipped,
        "reasons": reasons,
        "rules_version": ruleset.version,
        "rules_sha256": ruleset.sha256,
    })
    counts = out["verdict"].value_counts().to_dict()
    logger.info("verdicts with rules %s (%s): %s", ruleset.version, ruleset.sha256[:12], counts)
    return out


def write_verdicts(verdicts: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write verdicts.parquet atomically with a fixed schema, so equal inputs give equal bytes.

    A fixed schema matters because pyarrow would otherwise type an all-empty list column as
    ``list<null>`` on one run and ``list<string>`` on the next.
    """
    fields = list(VERDICT_SCHEMA)
    fields += [pa.field(name, typ) for name, typ in OVERRIDE_FIELDS if name in verdicts.columns]
    schema = pa.schema(fields)
    missing = [f.name for f in VERDICT_SCHEMA if f.name not in verdicts.columns]
    if missing:
        raise InputError(f"verdicts table lacks column(s) {missing}: build it with compute_verdicts()")
    df = verdicts.sort_values("pid", kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def update_verdicts(workspace: Workspace | str | os.PathLike,
                    rules: RuleSet | str | os.PathLike | None = None,
                    metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stage entry: metrics -> verdicts -> human reviews applied -> qc/verdicts.parquet (+ manifest).

    ``metrics`` defaults to the workspace's qc/metrics.parquet. Reviews are read from the append-only
    qc/reviews.jsonl every time, so recomputing verdicts never loses an override.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ruleset = resolve_rules(rules)
    if metrics is None:
        if not ws.qc_metrics.exists():
            raise MissingStageError(f"{ws.qc_metrics} does not exist", "qc", ws)
        metrics = pd.read_parquet(ws.qc_metrics)
    verdicts = apply_reviews(compute_verdicts(metrics, ruleset), read_reviews(ws.qc_reviews))
    write_verdicts(verdicts, ws.qc_verdicts)
    statuses = {pid: {"status": "done", "verdict": v}
                for pid, v in zip(verdicts["pid"], verdicts["final_verdict"], strict=True)}
    ws.record_stage("qc_verdicts", {"rules_version": ruleset.version, "rules_sha256": ruleset.sha256,
                                    "rules_file": ruleset.origin}, statuses)
    return verdicts


def alyx_metrics(catalog: pd.DataFrame) -> pd.DataFrame:
    """Numeric QC metrics from the catalog's Alyx fields, one row per pid (sorted), NaN when missing.

    ``qc`` and ``experimenter_raw_destripe`` become one.alf.spec.QC values (``alyx_qc_level``,
    ``experimenter_raw_destripe_level``) so rules compare them numerically; booleans become 0/1.
    """
    if not isinstance(catalog, pd.DataFrame) or "pid" not in catalog.columns:
        raise InputError("catalog must be a DataFrame with a 'pid' column "
                         "(read it with Workspace.read_catalog())")
    cat = catalog.sort_values("pid", kind="stable").reset_index(drop=True)
    absent = [c for c in ("qc", "alignment_resolved", "tracing_exists", "alignment_count", "alignment_qc",
                          "drift_rms_um", "n_units", "ap_rms_p10_raw", "ap_rms_p90_raw",
                          "experimenter_raw_destripe") if c not in cat.columns]
    if absent:
        logger.warning("catalog lacks column(s) %s: their metrics are missing (NaN)", absent)

    def col(name: str) -> pd.Series:
        return cat[name] if name in cat.columns else pd.Series([None] * len(cat), dtype=object)

    out = pd.DataFrame({"pid": cat["pid"].astype(str).to_numpy(dtype=object)})
    out["alyx_qc_level"] = [_qc_level(v, "qc") for v in col("qc")]
    out["alignment_resolved"] = [_boolean(v) for v in col("alignment_resolved")]
    out["tracing_exists"] = [_boolean(v) for v in col("tracing_exists")]
    for name in ("alignment_count", "alignment_qc", "drift_rms_um", "n_units", "ap_rms_p10_raw",
                 "ap_rms_p90_raw"):
        out[name] = pd.to_numeric(col(name), errors="coerce").astype(float).to_numpy()
    out["experimenter_raw_destripe_level"] = [_qc_level(v, "experimenter_raw_destripe")
                                              for v in col("experimenter_raw_destripe")]
    return out


def channel_counts(channels: pd.DataFrame) -> pd.DataFrame:
    """Bad-channel counts per pid from channels.parquet: n_channels, n_dead, n_noisy, n_outside, n_bad.

    Counts are NaN (missing, not zero) for an insertion whose labels are not all set yet (before the lfp
    stage), so a rule on them yields NOT_SET rather than a silent pass.
    """
    _require_columns(channels, ["pid", "bad_channel_label"], "channels")
    labels = pd.to_numeric(channels["bad_channel_label"], errors="coerce")
    df = pd.DataFrame({"pid": channels["pid"].astype(str), "label": labels})
    grouped = df.groupby("pid", sort=True)["label"]
    out = pd.DataFrame({
        "n_channels": grouped.size().astype(float),
        "n_dead": grouped.apply(lambda s: float((s == 1).sum())),
        "n_noisy": grouped.apply(lambda s: float((s == 2).sum())),
        "n_outside": grouped.apply(lambda s: float((s == 3).sum())),
    })
    incomplete = grouped.apply(lambda s: bool(s.isna().any()))
    out.loc[incomplete, ["n_dead", "n_noisy", "n_outside"]] = np.nan
    out["n_bad"] = out["n_dead"] + out["n_noisy"]
    return out.reset_index()


def channel_usable(channels: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per channel: usable = good label (0), inside the brain, and not in a FAIL insertion.

    Returns ``pid, raw_ind, usable, unusable_reason`` sorted by pid and raw_ind; the reason lists every
    cause ("; "-joined) and is empty for usable channels. The insertion verdict is ``final_verdict``
    (after human review) when present. A channel without a label or whose insertion has no verdict is
    not usable: unknown is not good.
    """
    _require_columns(channels, ["pid", "raw_ind", "bad_channel_label"], "channels")
    _require_columns(verdicts, ["pid", "verdict"], "verdicts")
    ch = channels.sort_values(["pid", "raw_ind"], kind="stable").reset_index(drop=True)
    vcol = "final_verdict" if "final_verdict" in verdicts.columns else "verdict"
    verdict_of = dict(zip(verdicts["pid"].astype(str), verdicts[vcol], strict=True))
    pid = ch["pid"].astype(str).to_numpy(dtype=object)
    insertion = np.array([verdict_of.get(p) for p in pid], dtype=object)
    label = pd.to_numeric(ch["bad_channel_label"], errors="coerce").to_numpy(dtype=float)
    causes: list[tuple[np.ndarray, str]] = [(np.isnan(label), "no bad-channel label (run the lfp stage)")]
    causes += [(label == code, f"{name} channel (label {code})") for code, name in BAD_CHANNEL_LABELS.items()
               if code != 0]
    causes.append((~np.isnan(label) & ~np.isin(label, list(BAD_CHANNEL_LABELS)), "unknown bad-channel label"))
    void = np.zeros(len(ch), dtype=bool)
    if "atlas_id" in ch.columns:
        void |= pd.to_numeric(ch["atlas_id"], errors="coerce").to_numpy(dtype=float) == 0
    if "acronym" in ch.columns:
        void |= ch["acronym"].astype(str).str.lower().eq("void").to_numpy()
    causes.append((void & (label != 3), "outside the brain (atlas void)"))
    causes.append((insertion == "FAIL", "insertion verdict FAIL"))
    causes.append((pd.isna(insertion), "no insertion verdict"))
    reason = np.full(len(ch), "", dtype=object)
    for mask, text in causes:
        reason = np.where(mask, np.where(reason == "", text, reason + "; " + text), reason)
    return pd.DataFrame({
        "pid": pid,
        "raw_ind": ch["raw_ind"].astype(int).to_numpy(),
        "usable": reason == "",
        "unusable_reason": reason,
    })


def _validated_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(metrics, pd.DataFrame) or "pid" not in metrics.columns:
        raise InputError("metrics must be a DataFrame with a 'pid' column and one column per metric")
    dup = metrics["pid"][metrics["pid"].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"metrics table has duplicated pid(s) {dup[:3]}: it needs one row per insertion")
    if metrics["pid"].isna().any():
        raise InputError("metrics table has rows without a pid: drop them or fill the pid")
    table = metrics.copy()
    table["pid"] = table["pid"].astype(str)
    return table.sort_values("pid", kind="stable").reset_index(drop=True)


def _metric_values(table: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in table.columns:
        if metric in DERIVED_METRICS and all(c in table.columns for c in DERIVED_METRICS[metric]):
            return np.sum([_metric_values(table, c) for c in DERIVED_METRICS[metric]], axis=0)
        return np.full(len(table), np.nan)
    series = table[metric]
    if series.dtype == object:
        series = series.map(lambda v: float(v) if isinstance(v, bool | np.bool_) else v)
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        raise InputError(f"metrics column '{metric}' has non-numeric value {series[bad].iloc[0]!r}: "
                         "metrics must be numbers (booleans as 0/1)")
    return values.astype(float).to_numpy()


def _fired_reason(rule: Rule, value: float) -> str:
    return f"{rule.id} ({rule.severity}): {rule.metric} = {value:.6g}, rule {rule.condition}"


def _qc_level(value: object, field: str) -> float:
    """QC name ('PASS', 'fail: reason', ...) or number -> one.alf.spec.QC value; missing -> NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return np.nan
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            return float(QC.validate(int(value)).value)
        except ValueError:
            logger.warning("unknown %s value %r: treated as missing", field, value)
            return np.nan
    word = str(value).strip().split(":")[0].split()[0].upper() if str(value).strip() else ""
    try:
        return float(QC.validate(word).value)
    except ValueError:
        logger.warning("unknown %s value %r: treated as missing", field, value)
        return np.nan


def _boolean(value: object) -> float:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, bool | np.bool_ | int | np.integer):
        return float(bool(value))
    text = str(value).strip().lower()
    return {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}.get(text, np.nan)


def _require_columns(df: pd.DataFrame, cols: list[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame")
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise InputError(f"{name} table lacks column(s) {absent}: see docs/workspace.md for the contract")
