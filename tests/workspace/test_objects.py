"""Object-store workspaces against a local S3 server (moto): publication units, commit records, pulls into
another working copy, a publisher killed midway, damaged or broken downloads, the bucket lock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import boto3
import pandas as pd
import pytest
from s3_env import bucket_objects

from ibl_ephys_data.errors import DataIntegrityError, InputError, WorkspaceLocked
from ibl_ephys_data.workspace import Workspace, atomic_path, write_parquet
from ibl_ephys_data.workspace.lfp_store import LfpStore

PID = "2fa8c131-22ae-4362-a2f0-cf4f8dba5e3c"


def _write_folder(path, files: dict[str, bytes]) -> None:
    with atomic_path(path) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)


def _group(n: int) -> dict[str, bytes]:
    """A small stand-in for an lfp.zarr group: metadata files and one 'shard'."""
    attrs = {"attributes": {"complete": True, "params": {"spec": {"n": n}}}, "zarr_format": 3}
    return {"zarr.json": json.dumps(attrs).encode(), "lfp/zarr.json": b"{}", "lfp/c/0/0": os.urandom(5000 + n)}


@pytest.fixture()
def workspace(s3_bucket) -> Workspace:
    return Workspace(f"{s3_bucket}/team/ws").create()


def test_units_are_published_and_pulled_into_another_working_copy(workspace, tmp_path):
    url = workspace.url
    write_parquet(pd.DataFrame({"pid": [PID], "n": [1]}), workspace.catalog)
    _write_folder(workspace.qc_dir, {"metrics.parquet": b"m1", "verdicts.parquet": b"v1"})
    _write_folder(workspace.lfp / PID, _group(1))
    _write_folder(workspace.parts_dir / "qc", {f"{PID}.parquet": b"p", f"{PID}.rms.parquet": b"r"})  # 2 units
    (workspace.root / "demo-store").mkdir()  # local scratch: never published
    (workspace.root / "demo-store" / "x.bin").write_bytes(b"local")
    stored = bucket_objects(url)
    assert {"catalog.parquet", "qc/metrics.parquet", "qc/verdicts.parquet", f"lfp.zarr/{PID}/lfp/c/0/0",
            ".commits/qc.json", f".commits/lfp.zarr/{PID}.json", f"parts/qc/{PID}.parquet",
            f"parts/qc/{PID}.rms.parquet"} <= set(stored)
    assert not any(k.startswith(".commits/parts") for k in stored)  # parts are file units: one PUT each
    assert not any(k.startswith(("demo-store", ".lock", ".mirror")) or k.endswith(".tmp") for k in stored)
    record = json.loads(stored[".commits/qc.json"])
    etags = workspace.mirror.store.list("qc/")
    assert record == {"state": "committed", "files": {
        "qc/metrics.parquet": {"size": 2, "md5": hashlib.md5(b"m1").hexdigest(),
                               "etag": etags["qc/metrics.parquet"][1]},
        "qc/verdicts.parquet": {"size": 2, "md5": hashlib.md5(b"v1").hexdigest(),
                                "etag": etags["qc/verdicts.parquet"][1]}}}

    other = Workspace(url, cache_dir=tmp_path / "machine-b").create().refresh()
    assert other.catalog.read_bytes() == workspace.catalog.read_bytes()
    assert (other.qc_dir / "verdicts.parquet").read_bytes() == b"v1"
    assert not (other.root / "demo-store").exists()
    # lfp.zarr groups: metadata at once (is_done, attributes), shards only when the insertion is opened
    store = LfpStore(other.lfp)
    assert store.attrs(PID)["complete"] is True and store.problems(PID) == []
    assert not (other.lfp / PID / "lfp" / "c" / "0" / "0").exists()
    other.mirror.fetch(f"lfp.zarr/{PID}")
    assert (other.lfp / PID / "lfp" / "c" / "0" / "0").read_bytes() == stored[f"lfp.zarr/{PID}/lfp/c/0/0"]

    # a replace with fewer files removes the stale ones from the bucket, and from the other working copy
    _write_folder(workspace.qc_dir, {"metrics.parquet": b"m2"})
    assert "qc/verdicts.parquet" not in bucket_objects(url)
    other.refresh()
    assert sorted(p.name for p in other.qc_dir.iterdir()) == ["metrics.parquet"]
    assert (other.qc_dir / "metrics.parquet").read_bytes() == b"m2"


KILLED_WRITER = """
import sys, time
from ibl_ephys_data.workspace import Workspace, atomic_path, objects

ws = Workspace(sys.argv[1]).create()
real, calls = objects.ObjectStore.upload, []
def upload(self, path, rel):
    calls.append(rel)
    if len(calls) == 2:  # after the first file of the group: stall until killed
        print("stalled", flush=True)
        time.sleep(600)
    return real(self, path, rel)
objects.ObjectStore.upload = upload
with atomic_path(ws.lfp / sys.argv[2]) as tmp:
    for name, data in {"zarr.json": b'{"attributes": {"complete": true}, "zarr_format": 3}', "lfp/zarr.json": b"{}",
                       "lfp/c/0/0": b"new" * 1000}.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
"""


@pytest.mark.timeout(120)
def test_a_publisher_killed_midway_leaves_the_unit_absent_and_the_rerun_completes(workspace, tmp_path):
    url, unit = workspace.url, f"lfp.zarr/{PID}"
    _write_folder(workspace.lfp / PID, _group(1))  # a good, older version in the bucket
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), url, PID],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "stalled"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # the bucket says the group was not completely written: nobody reads it as done
    stored = bucket_objects(url)
    assert json.loads(stored[f".commits/{unit}.json"]) == {"state": "writing"}
    fresh = Workspace(url, cache_dir=tmp_path / "machine-b").create().refresh()
    assert not (fresh.lfp / PID).exists()
    assert "not completely written" in workspace.mirror.problems(unit)[0]
    # the killed writer's own working copy holds the unpublished group: taking the lock drops it
    with workspace.lock():
        assert not (workspace.lfp / PID).exists()
        _write_folder(workspace.lfp / PID, _group(2))  # the rerun
    assert workspace.mirror.problems(unit) == []
    stored = bucket_objects(url)
    assert stored[f"lfp.zarr/{PID}/lfp/c/0/0"] == (workspace.lfp / PID / "lfp" / "c" / "0" / "0").read_bytes()
    assert json.loads(stored[f".commits/{unit}.json"])["state"] == "committed"
    assert ".lock" not in stored


def test_damaged_objects_are_refused_and_never_cached(workspace, tmp_path):
    url = workspace.url
    bucket, _, prefix = url[len("s3://"):].partition("/")
    write_parquet(pd.DataFrame({"pid": [PID]}), workspace.catalog)
    _write_folder(workspace.lfp / PID, _group(1))
    client = boto3.client("s3")
    good = client.get_object(Bucket=bucket, Key=f"{prefix}/catalog.parquet")
    # the same size, one byte changed, the stored MD5 kept: as a bit flip on the disk of the store
    body = bytearray(good["Body"].read())
    body[len(body) // 2] ^= 1
    client.put_object(Bucket=bucket, Key=f"{prefix}/catalog.parquet", Body=bytes(body), Metadata=good["Metadata"])
    client.put_object(Bucket=bucket, Key=f"{prefix}/lfp.zarr/{PID}/lfp/c/0/0", Body=b"short")
    other = Workspace(url, cache_dir=tmp_path / "machine-b").create()
    with pytest.raises(DataIntegrityError, match="catalog.parquet: MD5 mismatch after 5 downloads"):
        other.refresh()
    assert not other.catalog.exists()
    shard = f"{url}/lfp.zarr/{PID}/lfp/c/0/0"
    assert other.mirror.problems(f"lfp.zarr/{PID}") == [f"{shard} differs from its commit record"]
    with pytest.raises(DataIntegrityError, match="5 bytes, not"):
        other.mirror.fetch(f"lfp.zarr/{PID}")
    assert not (other.lfp / PID / "lfp" / "c" / "0" / "0").exists()


def test_broken_downloads_are_fetched_again(workspace, tmp_path, monkeypatch):
    from faults.proxy import Fault, FaultProxy

    write_parquet(pd.DataFrame({"pid": [PID] * 500, "x": range(500)}), workspace.catalog)
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # machine B reads through the fault proxy
        proxy.plan(Fault("flip", "catalog.parquet$", method="GET"), Fault("truncate", "catalog.parquet$",
                   method="GET"), Fault("status", "catalog.parquet$", method="GET", status=503),
                   Fault("reset", "catalog.parquet$", method="GET"))
        other = Workspace(workspace.url, cache_dir=tmp_path / "machine-b").create().refresh()
        fired = [f.fired for f in proxy.faults]
    assert fired == [1, 1, 1, 1]
    assert other.catalog.read_bytes() == workspace.catalog.read_bytes()


def test_a_hung_download_ends_within_the_workspace_timeout(workspace, tmp_path):
    """The network policy (``--timeout``/``--retries``) reaches the bucket's client through ``Workspace``."""
    from faults.proxy import Fault, FaultProxy

    from ibl_ephys_data.network_policy import NetworkPolicy

    write_parquet(pd.DataFrame({"pid": [PID]}), workspace.catalog)
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        os.environ["AWS_ENDPOINT_URL"], upstream = proxy.url, os.environ["AWS_ENDPOINT_URL"]
        try:
            other = Workspace(workspace.url, cache_dir=tmp_path / "machine-b",
                              network=NetworkPolicy(connect_timeout=1.0, read_timeout=1.0, retries=2))
        finally:
            os.environ["AWS_ENDPOINT_URL"] = upstream
        proxy.plan(Fault("hang", "catalog.parquet$", method="GET", seconds=5))
        t0 = time.monotonic()
        other.refresh()
        assert time.monotonic() - t0 < 5
    assert other.catalog.read_bytes() == workspace.catalog.read_bytes()


def test_the_bucket_lock_refuses_a_second_machine_and_takes_over_a_dead_holder(workspace, tmp_path):
    bucket, _, prefix = workspace.url[len("s3://"):].partition("/")
    other = Workspace(workspace.url, cache_dir=tmp_path / "machine-b")
    with workspace.lock():
        with pytest.raises(WorkspaceLocked, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}.*"
                                                  rf"delete {workspace.url}/\.lock"):
            with other.lock():
                pass
    # a holder on this host whose process is gone (a kill -9): its lock is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/.lock", Body=json.dumps(holder).encode())
    with other.lock():
        assert json.loads(bucket_objects(workspace.url)[".lock"])["pid"] == os.getpid()
    assert ".lock" not in bucket_objects(workspace.url)


def test_bad_locations_are_one_line(s3_bucket):
    with pytest.raises(InputError, match="use s3://bucket/prefix"):
        Workspace("s3://")
    with pytest.raises(InputError, match="no-such-bucket.*answered 404.*AWS_ENDPOINT_URL"):
        Workspace("s3://no-such-bucket/ws").create()
