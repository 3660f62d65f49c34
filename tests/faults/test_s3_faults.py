"""ONE's S3 path (moto behind a fault proxy): used first, retried, hash-checked, and HTTP as the fallback."""

from __future__ import annotations

import pandas as pd

from ibl_ephys_data.channels import run_channels
from ibl_ephys_data.demo.layout import INSERTIONS

from .proxy import Fault

PID = INSERTIONS[0].pid
MLAPDV = r"electrodeSites\.mlapdv\.[0-9a-f-]{36}\.npy"


def _clean(demo_workspace) -> pd.DataFrame:
    channels = demo_workspace[0].read_channels()
    return channels[channels["pid"] == PID].reset_index(drop=True)


def _data_gets(proxy, pattern: str) -> int:
    import re

    return sum(1 for m, p, _ in proxy.requests if m == "GET" and re.search(pattern, p))


def test_datasets_come_from_s3_and_transient_errors_are_retried(demo_workspace, catalog_only, s3_proxy,
                                                                s3_connection):
    connection, http_proxy = s3_connection
    faults = [Fault("status", MLAPDV, status=503, method="GET"), Fault("reset", r"channels\.rawInd", method="GET")]
    s3_proxy.plan(*faults)
    with connection.session() as one:
        run_channels(catalog_only, one, pids=[PID])
        fresh = catalog_only.read_channels()
    assert [f.fired for f in faults] == [1, 1]  # botocore retried both under the policy's tries
    assert _data_gets(s3_proxy, MLAPDV) == 2 and _data_gets(http_proxy, r"^/data/") == 0
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace))


def test_flipped_byte_on_s3_is_caught_and_fetched_again(demo_workspace, catalog_only, s3_proxy, s3_connection):
    connection, http_proxy = s3_connection
    flip = Fault("flip", MLAPDV, method="GET")
    s3_proxy.plan(flip)
    with connection.session() as one:
        run_channels(catalog_only, one, pids=[PID])
        fresh = catalog_only.read_channels()
    assert flip.fired == 1 and _data_gets(s3_proxy, MLAPDV) == 2
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace))


def test_persistent_flip_on_s3_fails_the_insertion(catalog_only, s3_proxy, s3_connection):
    connection, _ = s3_connection
    s3_proxy.plan(Fault("flip", MLAPDV, method="GET", times=100))
    with connection.session() as one:
        run_channels(catalog_only, one, pids=[PID])
    reason = catalog_only.failed_pids("channels")[PID]
    assert "DataIntegrityError" in reason and "electrodeSites.mlapdv.npy" in reason


def test_missing_on_s3_falls_back_to_http(demo_workspace, catalog_only, s3_proxy, s3_connection):
    connection, http_proxy = s3_connection
    s3_proxy.plan(Fault("status", MLAPDV, status=404, times=100))
    with connection.session() as one:
        run_channels(catalog_only, one, pids=[PID])
        fresh = catalog_only.read_channels()
    assert _data_gets(http_proxy, r"^/data/.*" + MLAPDV) == 1
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace))
