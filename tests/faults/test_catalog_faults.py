"""The catalog stage's release cache tables and REST queries under transient faults."""

from __future__ import annotations

import pandas as pd

from ibl_ephys_data.catalog import run_catalog
from ibl_ephys_data.ibl import RELEASES
from ibl_ephys_data.workspace import Workspace

from .proxy import Fault


def test_catalog_under_faults_equals_a_clean_run(demo_workspace, proxy, proxy_connection, tmp_path):
    faults = [Fault("truncate", r"^/cache/.*/cache\.zip", nth=2), Fault("status", r"^/cache/.*/cache\.zip", nth=1),
              Fault("reset", r"^/cache/info/", nth=1), Fault("status", r"^/insertions", nth=1, status=500)]
    ws = Workspace(tmp_path / "ws").create()
    with proxy_connection.session() as one:
        proxy.plan(*faults)
        catalog = run_catalog(ws, one, releases=list(RELEASES))
    assert [f.fired for f in faults] == [1] * len(faults), proxy.requests
    pd.testing.assert_frame_equal(catalog, demo_workspace[0].read_catalog())
