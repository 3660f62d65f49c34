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
