"""REST and download faults during the channels stage: retried, or detected, never silently wrong."""

from __future__ import annotations

import time

import pandas as pd

from ibl_ephys_data.channels import run_channels
from ibl_ephys_data.demo.layout import INSERTIONS

from .proxy import Fault

PIDS = [INSERTIONS[0].pid, INSERTIONS[1].pid]


def _clean(demo_workspace, pids) -> pd.DataFrame:
    channels = demo_workspace[0].read_channels()
    return channels[channels["pid"].isin(pids)].reset_index(drop=True)


def test_transient_faults_are_retried_and_outputs_are_bit_identical(demo_workspace, catalog_only, proxy,
                                                                    proxy_connection):
    # disjoint patterns, except the first pid's detail call: 503, then a reset on its retry, then served
    faults = [
        Fault("reset", rf"^/insertions/{PIDS[0]}", nth=2),
        Fault("status", rf"^/insertions/{PIDS[0]}", nth=1, status=503),
        Fault("truncate", rf"^/insertions/{PIDS[1]}", nth=1),
        Fault("status", r"^/sessions", nth=1, status=429),
        Fault("status", r"electrodeSites\.mlapdv", nth=1, status=502),
        Fault("truncate", r"channels\.localCoordinates", nth=1),
        Fault("reset", r"electrodeSites\.brainLocationIds", nth=1),
    ]
    with proxy_connection.session() as one:
        proxy.plan(*faults)
        run_channels(catalog_only, one, pids=PIDS)
        fresh = catalog_only.read_channels()
        retried = one.network_http.retried
    assert [f.fired for f in faults] == [1] * len(faults), proxy.requests
    assert retried >= len(faults)
    assert set(catalog_only.failed_pids("channels")) == set()
    # the same bytes reach the same code: exact equality, not a tolerance
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace, PIDS))


def test_flipped_byte_is_caught_by_the_hash_and_fetched_again(demo_workspace, catalog_only, proxy,
                                                             proxy_connection):
    flip = Fault("flip", r"electrodeSites\.mlapdv", nth=1)
    with proxy_connection.session() as one:
        proxy.plan(flip)
        run_channels(catalog_only, one, pids=PIDS[:1])
        fresh = catalog_only.read_channels()
    assert flip.fired == 1 and flip.seen == 2  # the flipped copy and a clean second download
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace, PIDS[:1]))


def test_persistent_flip_fails_that_insertion_only(demo_workspace, catalog_only, proxy, proxy_connection):
    bad = INSERTIONS[0]
    flip = Fault("flip", rf"{bad.session_rel}/alf/{bad.probe}/electrodeSites\.mlapdv", times=100)
    with proxy_connection.session() as one:
        proxy.plan(flip)
        run_channels(catalog_only, one, pids=PIDS)
        fresh = catalog_only.read_channels()
        cache = one.cache_dir
    failed = catalog_only.failed_pids("channels")
    assert list(failed) == [bad.pid]
    assert "DataIntegrityError" in failed[bad.pid] and "electrodeSites.mlapdv.npy" in failed[bad.pid]
    assert flip.fired == 2
    assert not list(cache.rglob(f"{bad.session_rel}/alf/{bad.probe}/electrodeSites.mlapdv*"))  # nothing broken kept
    pd.testing.assert_frame_equal(fresh, _clean(demo_workspace, PIDS[1:]))


def test_hung_rest_call_ends_within_its_timeout(catalog_only, proxy, proxy_connection):
    policy = proxy_connection.network
    with proxy_connection.session() as one:
        # every insertions detail call of the first pid hangs longer than the read timeout; the second is served
        proxy.plan(Fault("hang", rf"^/insertions.*{PIDS[0]}", seconds=policy.read_timeout + 2, times=100))
        t0 = time.monotonic()
        run_channels(catalog_only, one, pids=PIDS)
        elapsed = time.monotonic() - t0
    failed = catalog_only.failed_pids("channels")
    assert list(failed) == [PIDS[0]] and "ConnectionFailed" in failed[PIDS[0]]
    # tries x (timeout + backoff) for the hung pid, plus a few seconds for the healthy one on a busy machine
    assert elapsed < policy.tries * (policy.read_timeout + policy.max_backoff) + 20
