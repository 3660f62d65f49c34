"""Faults on raw LF streaming and on the small downloads of the lfp and qc stages."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest
import spikeglx

from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.errors import ConnectionFailed, DataIntegrityError
from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
from ibl_ephys_data.lfp.stream import ChunkCachedStreamer, open_lf_reader
from ibl_ephys_data.qc.stage import prescreen_pid
from ibl_ephys_data.workspace import Workspace

from .proxy import Fault

INS = INSERTIONS[0]
CBIN = r"\.lf\.[0-9a-f-]{36}\.cbin"
# three separate runs of chunks (2500-sample chunks): 0-1, 8-9, 16-17
READS = [(0, 5000), (20000, 25000), (40000, 45000)]


def _local_reader(demo_store):
    return spikeglx.Reader(next((demo_store / INS.session_rel).rglob(f"raw_ephys_data/{INS.probe}/*.lf.cbin")))


def _cached_runs(reader: ChunkCachedStreamer) -> dict[str, int]:
    """Stream-cache folder name -> size of its .cbin, for every run kept on disk."""
    return {f.parent.name: f.stat().st_size for f in reader.streamer.cache_folder.rglob("*.stream.cbin")}


def _run_size(reader: ChunkCachedStreamer, first: int, last: int) -> int:
    offsets = reader.streamer.chunks["chunk_offsets"]
    return offsets[last + 1] - offsets[first]


def test_broken_chunks_are_fetched_again_and_never_cached(demo_store, proxy, proxy_connection):
    one = proxy_connection.open()
    reader = open_lf_reader(one, INS.pid)
    faults = [Fault("truncate", CBIN, nth=1), Fault("ignore_range", CBIN, nth=2), Fault("flip", CBIN, nth=3)]
    proxy.plan(*faults)
    local = _local_reader(demo_store)
    for a, b in READS:
        np.testing.assert_array_equal(reader[a:b, :-1], local[a:b, :-1])
    assert [f.fired for f in faults] == [1, 1, 1]
    # truncated and Range-ignored answers are retried by the downloader; the flipped run is decoded, found
    # broken, deleted and fetched again by the streamer: 3 runs + 2 download retries + 1 refetch
    assert sum(1 for m, p, _ in proxy.requests if m == "GET" and "lf." in p and p.endswith(".cbin")) == 6
    expected = {f"chunk_{a:06d}_to_{b:06d}": _run_size(reader, a, b) for a, b in [(0, 1), (8, 9), (16, 17)]}
    assert _cached_runs(reader) == expected


def test_persistent_broken_chunk_names_pid_and_chunks(proxy, proxy_connection):
    one = proxy_connection.open()
    reader = open_lf_reader(one, INS.pid)
    proxy.plan(Fault("flip", CBIN, times=100))
    with pytest.raises(DataIntegrityError, match=rf"pid {INS.pid}, LF chunks 8-9: .*after two downloads"):
        reader[20000:25000]
    assert _cached_runs(reader) == {}


def test_hung_range_read_ends_within_its_timeout(proxy, proxy_connection):
    policy = proxy_connection.network
    one = proxy_connection.open()
    reader = open_lf_reader(one, INS.pid)
    proxy.plan(Fault("hang", CBIN, seconds=policy.read_timeout + 3, times=100))
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailed, match="3 tries"):
        reader[0:5000]
    # 3 tries of at most the read timeout each, plus backoffs; generous slack for a busy machine
    assert time.monotonic() - t0 < policy.tries * (policy.read_timeout + policy.max_backoff) + 5
    assert _cached_runs(reader) == {}


def _group_files(root, pid) -> dict[str, bytes]:
    """Every file of the insertion's lfp.zarr group, by path: equal dicts mean bit-identical outputs."""
    return {str(p.relative_to(root / pid)): p.read_bytes() for p in sorted((root / pid).rglob("*")) if p.is_file()}


def _lfp_copy(demo_workspace, path) -> Workspace:
    ws = Workspace(path)
    shutil.copytree(demo_workspace[0].root, ws.root)
    return ws


def test_lfp_stage_under_faults_equals_a_clean_run(demo_workspace, alyx_server, proxy, proxy_connection, tmp_path):
    from ibl_ephys_data.demo.run import demo_connection

    options = LfpOptions(windows=((2.0, 6.0),), n_batches=2, batch_seconds=2.0)
    clean = _lfp_copy(demo_workspace, tmp_path / "clean")
    with demo_connection(alyx_server, tmp_path / "clean-cache").session() as one:
        assert run_lfp(clean, one, options, pids=[INS.pid]).statuses[INS.pid]["status"] == "done"
    faulty = _lfp_copy(demo_workspace, tmp_path / "faulty")
    faults = [Fault("status", CBIN, nth=1, status=503), Fault("reset", r"\.lf\.[0-9a-f-]{36}\.ch$", nth=1),
              Fault("truncate", CBIN, nth=3), Fault("flip", CBIN, nth=5),
              Fault("flip", r"timestamps\.[0-9a-f-]{36}\.npy", nth=1)]
    with proxy_connection.session() as one:
        proxy.plan(*faults)
        assert run_lfp(faulty, one, options, pids=[INS.pid]).statuses[INS.pid]["status"] == "done"
    assert [f.fired for f in faults] == [1] * len(faults)
    a, b = _group_files(clean.lfp, INS.pid), _group_files(faulty.lfp, INS.pid)
    assert a and sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []  # the same bytes through the same code
    pd.testing.assert_frame_equal(clean.read_channels(), faulty.read_channels())


def test_prescreen_files_are_verified(alyx_server, proxy, proxy_connection, tmp_path):
    from ibl_ephys_data.demo.run import demo_connection

    clean = prescreen_pid(demo_connection(alyx_server, tmp_path / "clean-cache").open(), INS.pid)
    faults = [Fault("flip", r"_iblqc_ephysSpectralDensityLF\.power", nth=1),
              Fault("truncate", r"_iblqc_ephysTimeRmsLF\.rms", nth=1)]
    proxy.plan(*faults)
    assert prescreen_pid(proxy_connection.open(), INS.pid) == clean
    assert [f.fired for f in faults] == [1, 1]
