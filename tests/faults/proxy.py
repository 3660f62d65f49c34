"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the loopback Alyx + file server.

Every request is forwarded to the upstream server unless a :class:`Fault` of the current plan claims it:
the Nth request (1-based) whose method and path match the fault's pattern, and the ``times - 1`` matching
requests after it, get the fault instead of (or on top of) the upstream answer. Faults are asked in
plan order and the first to claim a request takes it, so a fault only counts the requests that reach it.
Upstream URLs inside JSON answers are rewritten to the proxy's, so ONE follows pagination links back through the proxy.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

KINDS = ("status", "reset", "truncate", "flip", "ignore_range", "hang")


@dataclass
class Fault:
    """``kind`` is one of KINDS; ``pattern`` a regex searched in the request path (query included)."""

    kind: str
    pattern: str
    nth: int = 1
    times: int = 1
    status: int = 503
    seconds: float = 0.0
    method: str | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    def claims(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or not re.search(self.pattern, path):
            return False
        self.seen += 1
        if self.nth <= self.seen < self.nth + self.times:
            self.fired += 1
            return True
        return False


class ProxyHandler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        logger.debug("proxy: " + format, *args)

    def do_GET(self):  # noqa: N802 - http.server naming
        self._handle()

    def do_HEAD(self):  # noqa: N802
        self._handle()

    def do_POST(self):  # noqa: N802
        self._handle()

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        fault = self.server.fault_for(self.command, self.path)
        if fault and fault.kind == "status":
            return self._send(fault.status, b'{"detail": "injected"}', {"Content-Type": "application/json",
                                                                        "Retry-After": "0"})
        if fault and fault.kind == "reset":
            return self._reset()
        if fault and fault.kind == "hang":
            time.sleep(fault.seconds)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if fault and fault.kind == "ignore_range":
            headers.pop("Range", None)
        status, up_headers, payload = self.server.forward(self.command, self.path, headers, body)
        if fault and fault.kind == "flip" and payload:
            i = len(payload) // 2
            payload = payload[:i] + bytes([payload[i] ^ 0x01]) + payload[i + 1:]
        if fault and fault.kind == "truncate":
            return self._send(status, payload, up_headers, cut=max(1, len(payload) // 2))
        return self._send(status, payload, up_headers)

    def _send(self, status: int, payload: bytes, headers: dict, cut: int | None = None):
        try:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                    self.send_header(k, v)
            length = headers.get("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload if cut is None else payload[:cut])
            if cut is not None:
                self.wfile.flush()
                self._reset()
        except OSError:  # the client gave up (e.g. timed out on a hang): nothing to answer
            self.close_connection = True

    def _reset(self):
        """Close the connection abruptly (RST), as a crashed server or a dropped link does."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy(ThreadingHTTPServer):
    """``with FaultProxy(upstream_url) as proxy: proxy.plan(Fault(...)); ...``; ``proxy.url``, ``proxy.data_url``."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, upstream_url: str):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream_url.rstrip("/")
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, fault kind)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def data_url(self) -> str:
        return f"{self.url}/data"

    def plan(self, *faults: Fault) -> FaultProxy:
        """Replace the fault plan (counters start again from zero)."""
        with self._lock:
            self.faults = list(faults)
        return self

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            fault = next((f for f in self.faults if f.claims(method, path)), None)
            self.requests.append((method, path, fault.kind if fault else None))
        return fault

    def forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            rep = conn.getresponse()
            payload = rep.read()
            out = dict(rep.getheaders())
        finally:
            conn.close()
        if out.get("Content-Type", "").startswith("application/json"):
            payload = payload.replace(self.upstream.encode(), self.url.encode())
        return rep.status, out, payload

    def start(self) -> FaultProxy:
        threading.Thread(target=self.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
