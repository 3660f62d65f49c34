"""Human QC reviews, on record next to the automatic verdict rather than instead of it.

Reviews live in the append-only ``qc/reviews.jsonl`` (one JSON object per line: time, reviewer,
verdict, reason, pid). Nothing rewrites that file, so recomputing verdicts never loses an override; the
latest line for a pid (file order) wins.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ibl_ephys_data.errors import InputError
from ibl_ephys_data.workspace import Workspace, objects
from ibl_ephys_data.workspace.schema import REVIEW_VERDICTS

logger = logging.getLogger(__name__)

REVIEW_COLUMNS = ["time", "reviewer", "verdict", "reason", "pid"]


def add_review(workspace: Workspace | str | os.PathLike, pid: str, verdict: str, reason: str, reviewer: str,
               time: datetime | None = None) -> dict:
    """Append one human review to qc/reviews.jsonl and return it.

    The pid must be in the workspace catalog, so a typo cannot create an override that matches nothing.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    verdict_u = str(verdict).strip().upper()
    if verdict_u not in REVIEW_VERDICTS:
        raise InputError(f"review verdict {verdict!r} is not valid: use one of {', '.join(REVIEW_VERDICTS)}")
    for name, text in (("reason", reason), ("reviewer", reviewer)):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"review {name} is empty: say {'why' if name == 'reason' else 'who'} "
                             f"(--{name} ...)")
    pids = set(ws.read_catalog()["pid"].astype(str))
    if str(pid) not in pids:
        raise InputError(f"pid {pid} is not in the catalog {ws.catalog}: check the pid or add the insertion "
                         "with `ibl-ephys-data catalog` first")
    when = (time or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    record = {"time": when, "reviewer": reviewer.strip(), "verdict": verdict_u,
              "reason": " ".join(reason.split()), "pid": str(pid)}
    # validate everything the review touches before writing anything: a torn reviews file or a corrupt
    # manifest is reported with nothing stored, so a retry cannot duplicate the review
    read_reviews(ws.qc_reviews)
    ws.read_manifest()
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    ws.qc_reviews.parent.mkdir(parents=True, exist_ok=True)
    with objects.committing(ws.qc_reviews):  # an object-store workspace publishes the qc folder after
        fd = os.open(ws.qc_reviews, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut by a kill: start on a line of our own
                line = b"\n" + line
            os.write(fd, line)  # one write of a whole line on an O_APPEND file: never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)
    logger.info("review recorded for %s: %s by %s (%s)", pid, verdict_u, record["reviewer"], record["reason"])
    return record


def read_reviews(source: Workspace | str | os.PathLike) -> pd.DataFrame:
    """All reviews in file order (columns time, reviewer, verdict, reason, pid); empty if no file yet."""
    path = source.qc_reviews if isinstance(source, Workspace) else Path(source)
    if not path.exists():
        return pd.DataFrame(columns=REVIEW_COLUMNS, dtype=object)
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path} line {lineno} is not valid JSON: fix or remove that line") from None
        absent = [c for c in REVIEW_COLUMNS if c not in rec]
        if absent:
            raise InputError(f"{path} line {lineno} lacks {absent}: each review needs "
                             f"{', '.join(REVIEW_COLUMNS)}")
        records.append({c: str(rec[c]) for c in REVIEW_COLUMNS})
    return pd.DataFrame(records, columns=REVIEW_COLUMNS, dtype=object)


def apply_reviews(verdicts: pd.DataFrame, reviews: pd.DataFrame | Workspace | str | os.PathLike | None
                  ) -> pd.DataFrame:
    """Add auto_verdict, final_verdict, override_by, override_time, override_reason to the verdicts.

    ``auto_verdict`` is the rules' verdict, ``final_verdict`` the latest review's verdict if any, else the
    automatic one; ``verdict`` is set to ``final_verdict`` so downstream filters see the effective
    decision. Applying twice is harmless: the automatic verdict is kept in ``auto_verdict``.
    """
    if not isinstance(verdicts, pd.DataFrame) or not {"pid", "verdict"} <= set(verdicts.columns):
        raise InputError("verdicts must be a DataFrame with 'pid' and 'verdict' columns "
                         "(from compute_verdicts)")
    if reviews is None:
        reviews = pd.DataFrame(columns=REVIEW_COLUMNS, dtype=object)
    elif not isinstance(reviews, pd.DataFrame):
        reviews = read_reviews(reviews)
    out = verdicts.copy()
    auto = out["auto_verdict"] if "auto_verdict" in out.columns else out["verdict"]
    out["auto_verdict"] = auto.astype(object)
    latest = reviews.drop_duplicates("pid", keep="last").set_index("pid") if len(reviews) else None
    unknown = sorted(set(reviews["pid"]) - set(out["pid"])) if len(reviews) else []
    if unknown:
        logger.warning("reviews for %d pid(s) without a verdict ignored: %s", len(unknown), unknown[:5])

    def pick(field: str) -> list:
        if latest is None:
            return [None] * len(out)
        return [latest[field].get(p) for p in out["pid"]]

    override = pick("verdict")
    out["final_verdict"] = [o if o is not None else a
                            for o, a in zip(override, out["auto_verdict"], strict=True)]
    out["override_by"] = pick("reviewer")
    out["override_time"] = pick("time")
    out["override_reason"] = pick("reason")
    out["verdict"] = out["final_verdict"]
    return out
