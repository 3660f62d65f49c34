"""An existing Dask cluster (scheduler + two workers as separate processes, each with its own HOME).

As on a real cluster, the workers share no ONE params or caches with the driver: each opens its own ONE from
the pickled connection, and the credentials reach them in memory only — never on their disks or in their logs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lfp_outputs import assert_same_lfp_groups

from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.run import demo_connection
from ibl_ephys_data.demo.store import DEMO_PASSWORD
from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
from ibl_ephys_data.workspace import Workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALYX_", "ONE_"))}
    procs, homes, logs = [], [], []

    def start(name: str, args: list[str]) -> None:
        home = root / f"home-{name}"
        home.mkdir()
        log = (root / f"{name}.log").open("wb")
        homes.append(home)
        logs.append(Path(log.name))
        procs.append(subprocess.Popen([sys.executable, "-m", *args], env={**env, "HOME": str(home)},
                                      stdout=log, stderr=subprocess.STDOUT, cwd=home))

    start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"])
    for i in range(2):
        start(f"worker{i}", ["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
                             "--host", "127.0.0.1", "--local-directory", str(root / f"home-worker{i}" / "dask")])
    from distributed import Client

    deadline = time.monotonic() + 120
    while True:
        try:
            with Client(address, timeout="5s") as client:
                if len(client.scheduler_info()["workers"]) == 2:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the test cluster did not start"
        time.sleep(1)
    yield address, homes, logs
    for proc in procs[::-1]:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


@pytest.mark.timeout(600)
def test_lfp_on_an_existing_cluster_equals_in_process(cluster, lfp_workspace, alyx_server, tmp_path):
    address, homes, logs = cluster
    src, *_ = lfp_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    pids = [INSERTIONS[0].pid, INSERTIONS[4].pid]
    for pid in pids:
        shutil.rmtree(ws.lfp / pid)
        (ws.parts_dir / "lfp" / f"{pid}.parquet").unlink()
    connection = demo_connection(alyx_server, tmp_path / "one-cache")
    result = run_lfp(ws, None, LfpOptions(windows=((0.0, 24.0),)), pids, connection=connection, scheduler=address,
                     progress=False)
    assert result.counts() == {"done": 2}, result.statuses
    assert_same_lfp_groups(src, ws, pids)
    # no worker wrote or logged the password or the session token
    token = connection.open().alyx._token
    secrets = [DEMO_PASSWORD.encode(), *(str(v).encode() for v in token.values())]
    for place in [*homes, *logs]:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            data = f.read_bytes()
            assert not any(s in data for s in secrets), f"a credential is in {f}"
