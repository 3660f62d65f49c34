"""Reading qc/verdicts.parquet back in tests, list columns as Python lists (for == comparisons)."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq

LIST_COLUMNS = ("fired_rules", "fired_severities", "fired_metrics", "missing_rules", "skipped_rules", "reasons")


def read_verdicts(path: str | os.PathLike) -> pd.DataFrame:
    """verdicts.parquet as written, its list columns as lists."""
    df = pq.read_table(path).to_pandas()
    for col in LIST_COLUMNS:
        df[col] = [list(v) for v in df[col]]
    return df
