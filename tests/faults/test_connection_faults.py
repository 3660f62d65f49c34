"""Login and reachability under server errors and stalls."""

from __future__ import annotations

import time

import pytest

from ibl_ephys_data.errors import ConnectionFailed

from .proxy import Fault


def test_5xx_on_login_is_a_server_error_not_refused_credentials(proxy, proxy_connection):
    proxy.plan(Fault("status", r"^/auth-token", status=502, times=100))
    with pytest.raises(ConnectionFailed, match=r"answered 502 \(a server error, not a refused login\)"):
        proxy_connection.open()
    assert proxy.faults[0].fired == proxy_connection.network.tries  # retried, then reported


def test_transient_5xx_on_login_is_retried(proxy, proxy_connection):
    # a fault counts the matching requests that reach it: the reset (listed first) sees both tries
    proxy.plan(Fault("reset", r"^/auth-token", nth=2), Fault("status", r"^/auth-token", status=503))
    one = proxy_connection.open()
    assert one.alyx.is_logged_in and [f.fired for f in proxy.faults] == [1, 1]


def test_hung_alyx_is_reported_within_the_timeout(proxy, proxy_connection):
    policy = proxy_connection.network
    proxy.plan(Fault("hang", r"^/?$", method="HEAD", seconds=policy.read_timeout + 3, times=100))
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot reach Alyx"):
        proxy_connection.open()
    assert time.monotonic() - t0 < policy.tries * (policy.read_timeout + policy.max_backoff) + 3
