"""Shared fixtures: one demo store per test session, served by a loopback Alyx; ONE writes kept in tmp."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
DEMO_SECONDS = 24.0


def pytest_configure(config):
    # ONE keeps its params (and cached tokens) under ~/.one: never touch the real home from tests
    os.environ["HOME"] = tempfile.mkdtemp(prefix="ibl-ephys-data-home-")
    os.environ.pop("ALYX_LOGIN", None)
    os.environ.pop("ALYX_PASSWORD", None)
    os.environ.pop("ALYX_TOKEN", None)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.exists():
        pytest.skip(f"real IBL reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def demo_seconds() -> float:
    return DEMO_SECONDS


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    from ibl_ephys_data.demo.store import generate_store

    return generate_store(tmp_path_factory.mktemp("demo-store"), seconds=DEMO_SECONDS)


@pytest.fixture(scope="session")
def alyx_server(demo_store):
    from ibl_ephys_data.demo.server import LoopbackAlyx

    with LoopbackAlyx(demo_store) as server:
        yield server


@pytest.fixture()
def demo_connection(alyx_server, tmp_path):
    """A fresh ONE cache per test, talking to the session's loopback Alyx with the demo account."""
    from ibl_ephys_data.demo.run import demo_connection

    return demo_connection(alyx_server, tmp_path / "one-cache")


@pytest.fixture(scope="session")
def demo_workspace(alyx_server, tmp_path_factory):
    """A workspace after catalog + channels through ONE remote mode (shared, read-only for tests)."""
    from ibl_ephys_data.catalog import run_catalog
    from ibl_ephys_data.channels import run_channels
    from ibl_ephys_data.demo.run import demo_connection
    from ibl_ephys_data.ibl import RELEASES
    from ibl_ephys_data.workspace import Workspace

    root = tmp_path_factory.mktemp("demo-ws")
    ws = Workspace(root / "ws").create()
    with demo_connection(alyx_server, root / "one-cache").session() as one:
        run_catalog(ws, one, releases=list(RELEASES))
        run_channels(ws, one)
    return ws, root / "one-cache"


@pytest.fixture(scope="session")
def lfp_workspace(demo_workspace, alyx_server, tmp_path_factory):
    """A copy of the demo workspace after the lfp stage (whole recordings, streamed over HTTP)."""
    import shutil

    from ibl_ephys_data.demo.run import demo_connection
    from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
    from ibl_ephys_data.workspace import Workspace

    src, _ = demo_workspace
    root = tmp_path_factory.mktemp("lfp-ws")
    ws = Workspace(root / "ws")
    shutil.copytree(src.root, ws.root)
    one_cache = root / "one-cache"
    before = alyx_server.bytes_served
    with demo_connection(alyx_server, one_cache).session() as one:
        statuses = run_lfp(ws, one, LfpOptions(windows=((0.0, DEMO_SECONDS),))).statuses
    return ws, one_cache, statuses, alyx_server.bytes_served - before


@pytest.fixture(scope="session")
def qc_workspace(lfp_workspace, alyx_server, tmp_path_factory):
    """A copy of the lfp workspace after the qc stage (raw snippets streamed + IBL's LF QC datasets)."""
    import shutil

    from ibl_ephys_data.demo.run import demo_connection
    from ibl_ephys_data.qc.stage import run_qc
    from ibl_ephys_data.workspace import Workspace

    src, one_cache, *_ = lfp_workspace
    ws = Workspace(tmp_path_factory.mktemp("qc-ws") / "ws")
    shutil.copytree(src.root, ws.root)
    with demo_connection(alyx_server, one_cache).session() as one:
        run_qc(ws, one)
    return ws, one_cache


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 server (moto) on 127.0.0.1 for object-store workspaces; its request log silenced."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _new_bucket(endpoint: str, monkeypatch, cache: Path, name: str) -> str:
    """A new, empty bucket on the local S3 server, the AWS variables that reach it and a working-copy cache
    (``IBL_EPHYS_DATA_CACHE``) in ``cache``; returns the bucket's ``s3://`` address."""
    import re

    import boto3
    from s3_env import S3_ENV

    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "IBL_EPHYS_DATA_CACHE": str(cache)}.items():
        monkeypatch.setenv(key, value)
    bucket = re.sub(r"[^a-z0-9-]", "-", name.lower())[:50].strip("-") + f"-{os.getpid()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture()
def s3_bucket(s3_endpoint, monkeypatch, tmp_path, request) -> str:
    return _new_bucket(s3_endpoint, monkeypatch, tmp_path / "s3-cache", request.node.name)


@pytest.fixture(scope="module")
def s3_bucket_module(s3_endpoint, tmp_path_factory, request):
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _new_bucket(s3_endpoint, monkeypatch, tmp_path_factory.mktemp("s3-cache"), request.module.__name__)
