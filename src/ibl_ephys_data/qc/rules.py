"""QC rules: a versioned YAML file of thresholds, each with its reason and source.

The rules are data, not code, so that every threshold is written down next to why it was chosen, a
user can swap in their own file, and a verdict can always be traced back to the exact rules (version +
content hash) that produced it. Validation is strict: a typo in a rules file must stop the run with one
line naming the rule, never silently disable a check.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ibl_ephys_data.errors import InputError, MissingInputError
from ibl_ephys_data.workspace.schema import SEVERITIES

logger = logging.getLogger(__name__)

DEFAULT_RULES_NAME = "qc_rules.yaml"
ON_MISSING = ("NOT_SET", "SKIP")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=", "in", "not in")
REQUIRED_KEYS = ("id", "metric", "comparison", "threshold", "severity", "rationale", "source")
OPTIONAL_KEYS = ("on_missing",)
WINDOW_FLAGS_KEY = "window_flags"  # per-window artifact thresholds, read by the lfp stage (lfp.artifacts)

#: Every metric a rule may name, with its meaning and units (docs/qc.md ("Rules and thresholds") lists the same).
KNOWN_METRICS: dict[str, str] = {
    # insertion metadata from the catalog (Alyx insertion json), see verdicts.alyx_metrics
    "alyx_qc_level": "Alyx insertion qc as one.alf.spec.QC value (NOT_SET 0, PASS 10, WARNING 30, FAIL 40, "
    "CRITICAL 50)",
    "alignment_resolved": "histology alignment resolved (1) or not (0)",
    "alignment_count": "number of histology alignments stored",
    "alignment_qc": "maximum similarity between alignments (ibllib alignment_qc, 0-1)",
    "tracing_exists": "histology track traced (1) or not (0)",
    "drift_rms_um": "RMS of the spike-sorting drift estimate (um)",
    "n_units": "number of units found by the spike sorter",
    "ap_rms_p10_raw": "10th percentile over channels of raw AP-band RMS (as stored by ibllib)",
    "ap_rms_p90_raw": "90th percentile over channels of raw AP-band RMS (as stored by ibllib)",
    "experimenter_raw_destripe_level": "experimenter's raw/destriped-data review as QC value (0-50)",
    # signal metrics on raw LF (qc.metrics)
    "snr_db": "mean SNR over good channels (dB)",
    "power_cv": "median over channels of the CV of 1-100 Hz band power over 1-s windows",
    "line_noise_pct": "line-noise power / 1-300 Hz power (%)",
    "line_f0_hz": "detected mains frequency (50 or 60 Hz)",
    "spectral_slope": "log-log PSD slope over 2-100 Hz",
    "discontinuity_pct": "samples flagged by saturation, common-mode jumps or flat runs (%)",
    # whole-probe artifacts on raw LF (qc.artifacts)
    "cm_burst_pct": "1-s windows whose common-mode trace bursts above median + 5 MAD (%)",
    "striping_ratio": "rms(common mode) / median channel rms",
    "coburst_fraction": "fraction of channels whose 1-s band power exceeds 5x their median together",
    "saturation_pct": "samples saturated on > 20% of channels (%)",
    # per-window artifact intervals of the stored LFP (lfp.artifacts, from the lfp store attrs)
    "flagged_window_pct": "(3-s window, 32-channel block) pairs of the stored LFP touched by an artifact "
    "interval (%)",
    # bad-channel counts from the lfp stage (verdicts.channel_counts)
    "n_channels": "number of channels of the insertion",
    "n_dead": "channels labelled dead (1)",
    "n_noisy": "channels labelled noisy (2)",
    "n_outside": "channels labelled outside the brain (3)",
    "n_bad": "dead + noisy channels, interpolated by destriping (n_dead + n_noisy when absent)",
    # pre-screen from IBL's small QC datasets, no raw data (qc.prescreen)
    "prescreen_snr_db": "SNR (dB) from _iblqc_ephysSpectralDensityLF",
    "prescreen_line_noise_pct": "line-noise ratio (%) from _iblqc_ephysSpectralDensityLF",
    "prescreen_line_f0_hz": "mains frequency (Hz) from _iblqc_ephysSpectralDensityLF",
    "prescreen_spectral_slope": "log-log PSD slope over 2-100 Hz from _iblqc_ephysSpectralDensityLF",
    "prescreen_power_cv": "power-CV proxy from _iblqc_ephysTimeRmsLF",
}

_OPS = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}


@dataclass(frozen=True)
class Rule:
    """One threshold on one metric; ``fires`` says where the metric crosses it."""

    id: str
    metric: str
    comparison: str
    threshold: float | tuple[float, ...]
    severity: str
    rationale: str
    source: str
    on_missing: str = "NOT_SET"

    def fires(self, values: Any) -> np.ndarray:
        """Boolean per value; missing (NaN) values never fire, the caller reports them separately."""
        x = np.asarray(values, dtype=float)
        if self.comparison in ("in", "not in"):
            inside = np.isin(x, np.asarray(self.threshold, dtype=float))
            out = inside if self.comparison == "in" else ~inside
        else:
            with np.errstate(invalid="ignore"):
                out = _OPS[self.comparison](x, float(self.threshold))
        return out & ~np.isnan(x)

    @property
    def condition(self) -> str:
        """Human-readable condition, e.g. ``line_noise_pct > 5``."""
        return f"{self.metric} {self.comparison} {_fmt_threshold(self.threshold)}"


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file: its version, its rules in file order, and where it came from."""

    version: str
    rules: tuple[Rule, ...]
    origin: str = ""

    @property
    def sha256(self) -> str:
        """Hash of the rules' content (not their comments), so two runs can prove they used the same rules."""
        payload = {"version": self.version, "rules": [asdict(r) for r in self.rules]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def metrics(self) -> list[str]:
        """Metrics the rules need, in first-use order."""
        return list(dict.fromkeys(r.metric for r in self.rules))

    def to_frame(self) -> pd.DataFrame:
        """One row per rule, for tables in docs, reports and the CLI."""
        rows = [{**asdict(r), "condition": r.condition, "threshold": _fmt_threshold(r.threshold)}
                for r in self.rules]
        return pd.DataFrame(rows, columns=[*REQUIRED_KEYS, *OPTIONAL_KEYS, "condition"])


def default_rules_path() -> Path:
    """Path of the rules file shipped with the package."""
    return Path(str(resources.files("ibl_ephys_data.qc").joinpath(DEFAULT_RULES_NAME)))


def load_rules(path: str | os.PathLike | None = None) -> RuleSet:
    """Read and validate a rules file; ``None`` gives the package's default rules."""
    path = default_rules_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"rules file {path} does not exist: pass an existing YAML file or omit it "
                                "to use the default rules")
    try:
        obj = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())
        raise InputError(f"rules file {path}: not valid YAML ({first})") from None
    ruleset = parse_rules(obj, origin=str(path))
    logger.info("loaded %d QC rules version %s from %s", len(ruleset.rules), ruleset.version, path)
    return ruleset


def read_window_flags(path: str | os.PathLike | None = None) -> tuple[dict[str, float], str]:
    """The ``window_flags`` mapping of a rules file (default: the package's) and the file's path.

    Why here: the per-window thresholds sit beside the insertion rules in one file, so one file says
    what "bad data" means; ``lfp.artifacts.ArtifactThresholds`` validates the names.
    """
    path = default_rules_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"rules file {path} does not exist: pass an existing YAML file or omit it "
                                "to use the default rules")
    obj = yaml.safe_load(path.read_text())
    values = obj.get(WINDOW_FLAGS_KEY) if isinstance(obj, dict) else None
    if not isinstance(values, dict):
        raise InputError(f"rules file {path}: no '{WINDOW_FLAGS_KEY}' mapping of per-window thresholds: copy "
                         f"the one of {default_rules_path()}")
    return {str(k): _number(v, f"rules file {path}: {WINDOW_FLAGS_KEY}.{k}") for k, v in values.items()}, str(path)


def resolve_rules(rules: RuleSet | str | os.PathLike | None) -> RuleSet:
    """Accept a RuleSet, a path to a rules file, or None (defaults): what public functions take."""
    return rules if isinstance(rules, RuleSet) else load_rules(rules)


def parse_rules(obj: Any, origin: str = "<rules>") -> RuleSet:
    """Validate a parsed rules document (``{'version': ..., 'rules': [...]}``) into a RuleSet."""
    if not isinstance(obj, dict):
        raise InputError(f"rules file {origin}: expected a mapping with 'version' and 'rules' keys")
    version = obj.get("version")
    if version is None or str(version).strip() == "":
        raise InputError(f"rules file {origin}: missing 'version' key: add e.g. `version: \"1.0\"`")
    raw_rules = obj.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise InputError(f"rules file {origin}: 'rules' must be a non-empty list of rules")
    unknown_top = sorted(set(obj) - {"version", "rules", WINDOW_FLAGS_KEY})
    if unknown_top:
        raise InputError(f"rules file {origin}: unknown top-level key(s) {unknown_top}: only 'version', "
                         f"'{WINDOW_FLAGS_KEY}' and "
                         "'rules' are allowed")
    rules, seen = [], set()
    for i, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, i, origin)
        if rule.id in seen:
            raise InputError(f"rules file {origin}: rule '{rule.id}': duplicate id, rule ids must be unique")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(version=str(version), rules=tuple(rules), origin=origin)


def _parse_rule(raw: Any, index: int, origin: str) -> Rule:
    if not isinstance(raw, dict):
        raise InputError(f"rules file {origin}: rule #{index}: expected a mapping of rule keys")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise InputError(f"rules file {origin}: rule #{index}: missing or empty 'id'")
    where = f"rules file {origin}: rule '{rid}'"
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing}")
    extra = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if extra:
        raise InputError(f"{where}: unknown key(s) {extra}; allowed: "
                         f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    metric = raw["metric"]
    if metric not in KNOWN_METRICS:
        close = difflib.get_close_matches(str(metric), list(KNOWN_METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"{where}: unknown metric '{metric}'{hint}; known metrics: "
                         f"{', '.join(KNOWN_METRICS)}")
    comparison = str(raw["comparison"]).strip()
    if comparison not in COMPARISONS:
        raise InputError(f"{where}: bad comparison '{raw['comparison']}'; use one of {' '.join(COMPARISONS)}")
    threshold = _parse_threshold(raw["threshold"], comparison, where)
    severity = str(raw["severity"]).upper()
    if severity not in SEVERITIES:
        raise InputError(f"{where}: bad severity '{raw['severity']}'; use FAIL or WARNING")
    on_missing = str(raw.get("on_missing", "NOT_SET")).upper()
    if on_missing not in ON_MISSING:
        raise InputError(f"{where}: bad on_missing '{raw['on_missing']}'; use NOT_SET or SKIP")
    texts = {}
    for key in ("rationale", "source"):
        text = raw[key]
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: '{key}' must be a non-empty text")
        texts[key] = " ".join(text.split())
    return Rule(id=rid.strip(), metric=metric, comparison=comparison, threshold=threshold, severity=severity,
                on_missing=on_missing, **texts)


def _parse_threshold(value: Any, comparison: str, where: str) -> float | tuple[float, ...]:
    if comparison in ("in", "not in"):
        if not isinstance(value, list) or not value:
            raise InputError(f"{where}: comparison '{comparison}' needs a non-empty list threshold, "
                             f"got {value!r}")
        return tuple(_number(v, where) for v in value)
    if isinstance(value, list):
        raise InputError(f"{where}: comparison '{comparison}' needs a single number threshold, got {value!r}")
    return _number(value, where)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool | int | float) and not isinstance(value, str):
        number = float(value)
        if math.isfinite(number):
            return number
    raise InputError(f"{where}: non-numeric threshold {value!r}; thresholds are numbers (booleans as 0/1, "
                     "Alyx qc as one.alf.spec.QC values)")


def _fmt_threshold(threshold: float | tuple[float, ...]) -> str:
    if isinstance(threshold, tuple):
        return "[" + ", ".join(f"{t:g}" for t in threshold) + "]"
    return f"{threshold:g}"
