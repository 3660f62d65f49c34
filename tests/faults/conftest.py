"""A fault proxy per test in front of the session's loopback Alyx, and a ONE connection through it."""

from __future__ import annotations

import shutil

import pytest

from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER
from ibl_ephys_data.ibl import Connection
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.workspace import Workspace

from .proxy import FaultProxy

# short timeouts and backoffs keep each test's wall time to seconds; 2 retries = 3 tries per request
FAST = NetworkPolicy(connect_timeout=2.0, read_timeout=1.5, retries=2, backoff=0.05, max_backoff=0.2)


@pytest.fixture()
def proxy(alyx_server):
    with FaultProxy(alyx_server.url) as proxy:
        yield proxy


@pytest.fixture()
def proxy_connection(proxy, tmp_path) -> Connection:
    return Connection(alyx_url=proxy.url, cache_dir=tmp_path / "one-cache", http_data_server=proxy.data_url,
                      username=DEMO_USER, password=DEMO_PASSWORD, network=FAST)


@pytest.fixture()
def catalog_only(demo_workspace, tmp_path) -> Workspace:
    """A workspace holding only the clean run's catalog (stage outputs of a test are all its own)."""
    ws = Workspace(tmp_path / "ws").create()
    shutil.copy(demo_workspace[0].catalog, ws.catalog)
    return ws


@pytest.fixture(scope="session")
def s3_alyx(demo_store):
    """The loopback Alyx with its S3 side (moto): ONE downloads datasets from S3 first."""
    from ibl_ephys_data.demo.server import LoopbackAlyx

    with LoopbackAlyx(demo_store, s3=True) as server:
        yield server


@pytest.fixture()
def s3_proxy(s3_alyx, monkeypatch):
    """A fault proxy in front of the S3 side, given to boto3 as its S3 endpoint."""
    with FaultProxy(s3_alyx.s3_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy


@pytest.fixture()
def s3_connection(s3_alyx, s3_proxy, tmp_path):
    """ONE talking to the S3-enabled Alyx through an HTTP fault proxy (for /data fallbacks) and ``s3_proxy``."""
    with FaultProxy(s3_alyx.url) as http_proxy:
        yield Connection(alyx_url=http_proxy.url, cache_dir=tmp_path / "one-cache", username=DEMO_USER,
                         http_data_server=http_proxy.data_url, password=DEMO_PASSWORD, network=FAST), http_proxy
