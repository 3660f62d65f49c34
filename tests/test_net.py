"""Requests under the network policy: redaction, the downloader's contract, its retries."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ibl_ephys_data.errors import ConnectionFailed
from ibl_ephys_data.net import PolicyHttp, redact_text, redact_url
from ibl_ephys_data.network_policy import NetworkPolicy

BODY = bytes(range(256)) * 40


def test_redaction():
    assert redact_url("https://u:p@host:8000/x?y=1") == "https://***@host:8000/x?y=1"
    assert redact_url("https://host/x") == "https://host/x"
    assert redact_text("GET http://user:pw@h/a failed, see https://h2/b") == "GET http://***@h/a failed, see https://h2/b"


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first request, then serves BODY (honouring Range)."""

    protocol_version = "HTTP/1.1"
    count = 0

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        type(self).count += 1
        if type(self).count == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, status = BODY, 200
        if rng := self.headers.get("Range"):
            a, b = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            body, status = BODY[a:b + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def flaky_url():
    _Flaky.count = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_retries_and_keeps_one_download_file_contract(flaky_url, tmp_path):
    http = PolicyHttp(NetworkPolicy(retries=1, backoff=0.01))
    path, md5 = http.download(f"{flaky_url}/a/file.bin", tmp_path, return_md5=True)
    assert path == tmp_path / "file.bin" and path.read_bytes() == BODY and md5 == hashlib.md5(BODY).hexdigest()
    assert http.retried == 1 and not list(tmp_path.glob("*.part"))
    part = http.download(f"{flaky_url}/a/part.bin", tmp_path, chunks=(100, 50), clobber=True)
    assert part.read_bytes() == BODY[100:150]
    # an existing file is kept unless clobber, as ONE's http_download_file does
    part.write_bytes(b"x")
    assert http.download(f"{flaky_url}/a/part.bin", tmp_path).read_bytes() == b"x"


def test_download_gives_up_after_its_tries(flaky_url, tmp_path):
    http = PolicyHttp(NetworkPolicy(retries=0))
    with pytest.raises(ConnectionFailed, match=r"answered 503 \(1 tries\)"):
        http.download(f"{flaky_url}/a/file.bin", tmp_path)
    assert not list(tmp_path.iterdir())
