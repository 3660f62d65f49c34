"""What the workspace tables mean: the words every stage and every view share.

Why one module: a verdict name, its colour or the meaning of a bad-channel label written in two places
drifts apart (a report colouring WARNING one way and the 3D view another). Stages write these words,
viz reads them; both import them from here.
"""

from __future__ import annotations

# vocabulary ---------------------------------------------------------------------------------------
#: Automatic verdicts ``qc/verdicts.parquet`` holds (``verdict``).
VERDICTS = ("PASS", "WARNING", "FAIL", "NOT_SET")
#: Verdicts a human review may set (``qc/reviews.jsonl``).
REVIEW_VERDICTS = ("PASS", "WARNING", "FAIL")
#: Severities a rule may have, mildest first; a fired rule's severity is stored in ``fired_severities``.
SEVERITIES = ("WARNING", "FAIL")
#: Display order of verdicts and Alyx QC values, best first (CRITICAL is an Alyx level, not a verdict).
VERDICT_ORDER = ("PASS", "WARNING", "FAIL", "CRITICAL", "NOT_SET")
#: Colour of each verdict / Alyx QC value in every figure, page and 3D view.
VERDICT_COLORS = {
    "PASS": "#2ca02c",
    "WARNING": "#ff7f0e",
    "FAIL": "#d62728",
    "CRITICAL": "#7f0000",
    "NOT_SET": "#9e9e9e",
}
#: Colour of anything unknown or not computed.
MISSING_COLOR = "#9e9e9e"
#: ``bad_channel_label`` values (ibl-neuropixel's ``detect_bad_channels``) and their names.
BAD_CHANNEL_LABELS = {0: "good", 1: "dead", 2: "noisy", 3: "outside brain"}
#: Colour of each bad label on probe maps.
BAD_CHANNEL_COLORS = {1: "#1f77b4", 2: "#d62728", 3: "#9467bd"}
#: Alyx insertion QC levels, best to worst after NOT_SET (``catalog.qc``; DESIGN §3).
QC_LEVELS = ("NOT_SET", "PASS", "WARNING", "FAIL", "CRITICAL")
#: Region label levels of the channels and the dataset.
LABEL_LEVELS = ("allen", "beryl", "cosmos")
#: Releases and the Alyx dataset tags whose union makes each (DESIGN §2; the 2024 repeated-site tag holds
#: only datasets not already in the 2022 one, so both are queried).
RELEASES: dict[str, tuple[str, ...]] = {
    "repro-ephys": ("2022_Q2_IBL_et_al_RepeatedSite", "2024_Q2_IBL_et_al_RepeatedSite"),
    "bwm": ("2022_Q4_IBL_et_al_BWM", "2023_Q4_IBL_et_al_BWM_2"),
}

#: IBL's small LF QC datasets (ibllib's ``extract_rmsmap``) in ``raw_ephys_data/probeXX``: the pre-screen reads them.
IBLQC_LF_FILES = {
    "power": "_iblqc_ephysSpectralDensityLF.power.npy",
    "freqs": "_iblqc_ephysSpectralDensityLF.freqs.npy",
    "rms": "_iblqc_ephysTimeRmsLF.rms.npy",
    "timestamps": "_iblqc_ephysTimeRmsLF.timestamps.npy",
}

# tables -------------------------------------------------------------------------------------------
# Each table is (column, dtype, meaning) rows; stages select and order columns from here, and
# docs/workspace.md's tables are generated from here (tests/workspace/test_schema.py checks they match).
Table = tuple[tuple[str, str, str], ...]

CATALOG: Table = (
    ("pid", "str", "insertion UUID"),
    ("eid", "str", "session UUID"),
    ("subject", "str", ""),
    ("lab", "str", ""),
    ("date", "str", "session date, ISO `YYYY-MM-DD`"),
    ("session_number", "int64", ""),
    ("probe_name", "str", "`probe00` ..."),
    ("probe_model", "str", "`3B2`, `NP2.1`, ..."),
    ("releases", "str", "comma-joined sorted release names, e.g. `bwm,repro-ephys`"),
    ("qc", "str", "Alyx QC: " + " < ".join(QC_LEVELS)),
    ("drift_rms_um", "float64", "NaN if missing"),
    ("ap_rms_p10_raw", "float64", "NaN if missing"),
    ("ap_rms_p90_raw", "float64", "NaN if missing"),
    ("n_units", "Int64", "nullable"),
    ("alignment_count", "Int64", "nullable"),
    ("tracing_exists", "boolean", "nullable"),
    ("alignment_resolved", "boolean", "nullable"),
    ("alignment_stored", "string", "null if missing"),
    ("alignment_resolved_by", "string", "null if missing"),
    ("alignment_qc", "string", "null if missing"),
    ("experimenter_raw_destripe", "string", "null if missing"),
)

CHANNELS: Table = (
    ("pid", "str", "insertion UUID"),
    ("eid", "str", "session UUID"),
    ("raw_ind", "int64", "raw channel index in the binary file (0..383)"),
    ("axial_um", "float64", "probe geometry"),
    ("lateral_um", "float64", "probe geometry"),
    ("x", "float64", "IBL space, metres from bregma, ML (right +)"),
    ("y", "float64", "IBL space, metres from bregma, AP (anterior +)"),
    ("z", "float64", "IBL space, metres from bregma, DV (dorsal +)"),
    ("ccf_ap_um", "float64", "Allen CCF µm: 5400 − y_um"),
    ("ccf_dv_um", "float64", "Allen CCF µm: 332 − z_um"),
    ("ccf_ml_um", "float64", "Allen CCF µm: 5739 + x_um (never mirrored)"),
    ("atlas_id", "int64", "Allen id (positive)"),
    ("lateralized_id", "int64", "negative in the left hemisphere (x < 0)"),
    ("acronym", "str", "Allen acronym"),
    ("beryl_id", "int64", ""),
    ("beryl_acronym", "str", ""),
    ("cosmos_id", "int64", ""),
    ("cosmos_acronym", "str", ""),
    ("histology", "str", "source of the localisation (`alf`, `resolved`, ...)"),
    ("bad_channel_label", "Int8", "nullable until the lfp stage: "
     + ", ".join(f"{k} {v}" for k, v in BAD_CHANNEL_LABELS.items())),
    ("bad_channel_xcor_hf", "float64", "bad-channel detection feature"),
    ("bad_channel_xcor_lf", "float64", "bad-channel detection feature"),
    ("bad_channel_psd_hf", "float64", "bad-channel detection feature"),
)
#: The columns the lfp stage adds to channels.parquet (its per-insertion parts carry pid + these).
BAD_CHANNEL_COLUMNS = ["raw_ind", "bad_channel_label", "bad_channel_xcor_hf", "bad_channel_xcor_lf",
                       "bad_channel_psd_hf"]
TABLES: dict[str, Table] = {"catalog.parquet": CATALOG, "channels.parquet": CHANNELS}


def columns(table: Table) -> list[str]:
    return [name for name, _, _ in table]


def markdown_table(table: Table) -> str:
    """The table's contract as the Markdown docs/workspace.md shows."""
    rows = ["| column | type | meaning |", "|---|---|---|"]
    rows += [f"| {name} | {dtype} | {meaning} |" for name, dtype, meaning in table]
    return "\n".join(rows)
