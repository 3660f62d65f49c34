"""A fault proxy per test in front of the session's loopback Alyx, and a ONE connection through it."""

from __future__ import annotations

import shutil

import pytest

from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER
from ibl_ephys_data.ibl import Connection
from ibl_ephys_data.net import NetworkPolicy
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
