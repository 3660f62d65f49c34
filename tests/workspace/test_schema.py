"""docs/workspace.md shows exactly the table contracts of workspace/schema.py, and the stages write them."""

from pathlib import Path

import pandas as pd

from ibl_ephys_data.workspace import schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "workspace.md"


def test_docs_tables_match_the_schema():
    text = DOC.read_text()
    for name, table in schema.TABLES.items():
        assert f"## {name}\n{schema.markdown_table(table)}\n" in text, f"docs/workspace.md: {name} is out of date"


def test_stage_outputs_follow_the_schema(demo_workspace):
    ws, _ = demo_workspace
    for path, table in ((ws.catalog, schema.CATALOG), (ws.channels, schema.CHANNELS)):
        df = pd.read_parquet(path)
        assert list(df.columns) == schema.columns(table), path
