"""An existing Dask cluster (scheduler + two workers as separate processes, each with its own HOME).

As on a real cluster, the workers share no ONE params, caches or files with the driver: each opens its own ONE
from the pickled connection (the credentials reach them in memory only — never on their disks or in their
logs), and the workspace is an object store (a local S3 server) that each worker writes its insertions into
from a working copy of its own.
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
from s3_env import S3_ENV

from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.run import demo_connection
from ibl_ephys_data.demo.store import DEMO_PASSWORD
from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
from ibl_ephys_data.workspace import Workspace, atomic_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint):
    root = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALYX_", "ONE_", "IBL_EPHYS_DATA_CACHE"))}
    env.update(S3_ENV, AWS_ENDPOINT_URL=s3_endpoint)  # the workers' working copies: in their own HOMEs
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
def test_lfp_on_an_existing_cluster_into_an_object_store_equals_in_process(cluster, lfp_workspace, alyx_server,
                                                                           s3_bucket, tmp_path):
    address, homes, logs = cluster
    src, *_ = lfp_workspace
    ws = Workspace(f"{s3_bucket}/ws").create()
    pids = [INSERTIONS[0].pid, INSERTIONS[4].pid]
    # the bucket after catalog, channels and the lfp stage of the other insertions
    lfp_done = [p for p in (src.parts_dir / "lfp").iterdir() if p.name.split(".")[0] not in pids]
    for path in [src.catalog, src.channels, *(src.parts_dir / "channels").iterdir(), *lfp_done]:
        with atomic_path(ws.root / path.relative_to(src.root)) as tmp:
            shutil.copy(path, tmp)
    connection = demo_connection(alyx_server, tmp_path / "one-cache")
    result = run_lfp(ws, None, LfpOptions(windows=((0.0, 24.0),)), pids, connection=connection, scheduler=address,
                     progress=False)
    assert result.counts() == {"done": 2}, result.statuses
    # the workers wrote the groups in their own working copies and published them; the driver never held them
    copies = [p for home in homes[1:] for p in home.glob(".cache/ibl-ephys-data/s3/*/ws/lfp.zarr/*/lfp/c")]
    assert sorted(p.parent.parent.name for p in copies) == sorted(pids)
    assert not any((ws.lfp / pid / "lfp" / "c").exists() for pid in pids)
    for pid in pids:
        assert ws.mirror.problems(f"lfp.zarr/{pid}") == []
        ws.mirror.fetch(f"lfp.zarr/{pid}")
    assert_same_lfp_groups(src, ws, pids)  # bit-identical to the in-process run into a folder
    # no worker wrote or logged the password or the session token
    token = connection.open().alyx._token
    secrets = [DEMO_PASSWORD.encode(), *(str(v).encode() for v in token.values())]
    for place in [*homes, *logs]:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            data = f.read_bytes()
            assert not any(s in data for s in secrets), f"a credential is in {f}"
