"""A loopback Alyx + HTTP data server over a demo store, answering in real Alyx shapes.

Only what sits across the network is faked here: ONE, ibllib and ibl-neuropixel run unmodified against it.
REST records are modelled on the fixtures ONE ships (``one/tests/fixtures/rest_responses``) and the schema
is ONE's own copy of the Alyx OpenAPI schema. Files are served with the dataset UUID in the file name and
honour HTTP ``Range`` requests (206), which is what ``brainbox.io.spikeglx.Streamer`` relies on.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import threading
import zipfile
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
from iblutil.io import parquet

_logger = logging.getLogger(__name__)
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PAGE_SIZE = 5
# the S3 side (``LoopbackAlyx(s3=True)``): ONE looks up this data repository and, with no keys in its record
# and "public" in the bucket name, reads the bucket unsigned, as it does IBL's public bucket
S3_REPOSITORY = "aws_cortexlab"
S3_BUCKET = "ibl-demo-public"
S3_REGION = "us-east-1"
S3_PREFIX = "data"


class AlyxStore:
    """The demo store seen as an Alyx database: records built from the cache tables and alyx.json."""

    def __init__(self, root: Path, s3: bool = False):
        self.root = Path(root)
        self.s3 = s3
        meta = json.loads((self.root / "alyx.json").read_text())
        self.users: dict[str, str] = meta["users"]
        self.dataset_tags: dict[str, list[str]] = meta["dataset_tags"]
        self.sessions, _ = parquet.load(self.root / "sessions.pqt")
        self.datasets, _ = parquet.load(self.root / "datasets.pqt")
        self.insertions, _ = parquet.load(self.root / "insertions.pqt")
        self.datasets = self.datasets.reset_index()
        self.insertions = self.insertions.reset_index()

    def session_rel(self, eid: str) -> str:
        s = self.sessions.loc[eid]
        return f"{s['lab']}/Subjects/{s['subject']}/{s['date']}/{int(s['number']):03d}"

    def data_url(self, base: str, eid: str, rel_path: str, did: str) -> str:
        stem, dot, ext = rel_path.rpartition(".")
        return f"{base}/data/{self.session_rel(eid)}/{stem}.{did}.{ext}"

    def session_info(self, eid: str) -> dict:
        s = self.sessions.loc[eid]
        return {
            "subject": s["subject"], "start_time": f"{s['date']}T10:00:00", "number": int(s["number"]),
            "lab": s["lab"], "id": eid, "projects": s["projects"].split(","), "task_protocol": s["task_protocol"],
        }

    def session_record(self, base: str, eid: str, related: bool) -> dict:
        rec = {"url": f"{base}/sessions/{eid}", **self.session_info(eid)}
        if related:
            dsets = self.datasets[self.datasets["eid"] == eid]
            rec["data_dataset_session_related"] = [self.dataset_brief(base, d) for _, d in dsets.iterrows()]
        return rec

    def dataset_brief(self, base: str, d: pd.Series) -> dict:
        rel = d["rel_path"]
        collection, _, name = rel.rpartition("/")
        return {
            "id": d["id"], "name": name, "dataset_type": ".".join(name.split(".")[:2]),
            "data_url": self.data_url(base, d["eid"], rel, d["id"]), "url": f"{base}/datasets/{d['id']}",
            "file_size": int(d["file_size"]), "hash": d["hash"], "version": "1.0.0", "collection": collection,
            "revision": None, "default_revision": "True", "qc": str(d["qc"]),
        }

    def dataset_record(self, base: str, d: pd.Series) -> dict:
        rel = d["rel_path"]
        collection, _, name = rel.rpartition("/")
        return {
            "url": f"{base}/datasets/{d['id']}", "name": name, "created_by": "demo",
            "dataset_type": ".".join(name.split(".")[:2]), "data_format": name.rsplit(".", 1)[-1],
            "collection": collection, "session": f"{base}/sessions/{d['eid']}",
            "file_size": int(d["file_size"]), "hash": d["hash"], "version": "1.0.0",
            "file_records": [{
                "id": d["id"], "data_repository": "flatiron_demo", "data_repository_path": "/data/",
                "relative_path": f"{self.session_rel(d['eid'])}/{rel}",
                "data_url": self.data_url(base, d["eid"], rel, d["id"]), "exists": True,
            }, *([{
                "id": d["id"], "data_repository": S3_REPOSITORY, "data_repository_path": f"{S3_PREFIX}/",
                "relative_path": f"{self.session_rel(d['eid'])}/{rel}", "data_url": None, "exists": True,
            }] if self.s3 else [])],
            "revision": None, "default_dataset": True, "qc": str(d["qc"]), "tags": self.dataset_tags.get(d["id"], []),
        }

    def insertion_record(self, base: str, row: pd.Series) -> dict:
        pid, eid = row["id"], row["eid"]
        dsets = self.datasets[(self.datasets["eid"] == eid)
                              & self.datasets["rel_path"].str.contains(f"/{row['name']}/|/{row['name']}$")]
        return {
            "id": pid, "session": eid, "model": row["model"], "name": row["name"],
            "json": json.loads(row["json"]), "serial": row["serial"], "chronic_insertion": None,
            "session_info": self.session_info(eid),
            "datasets": [self.dataset_brief(base, d) for _, d in dsets.iterrows()],
        }

    def insertion_tags(self, row: pd.Series) -> set[str]:
        rec = self.insertion_record("", row)
        return {t for d in rec["datasets"] for t in self.dataset_tags.get(d["id"], [])}

    def s3_key(self, d: pd.Series) -> str:
        """Where the S3 side holds a dataset: ``data/<session>/<collection>/<name>.<uuid>.<ext>``."""
        stem, _, ext = f"{self.session_rel(d['eid'])}/{d['rel_path']}".rpartition(".")
        return f"{S3_PREFIX}/{stem}.{d['id']}.{ext}"

    def file_for(self, url_path: str) -> Path | None:
        """Map ``/data/<session>/<name>.<uuid>.<ext>`` to the store file, checking the UUID is that file's."""
        rel = url_path.removeprefix("/data/")
        match = UUID_RE.search(Path(rel).name)
        if not match:
            return None
        did = match.group(0)
        clean = rel.replace(f".{did}", "")
        path = self.root / clean
        rows = self.datasets[self.datasets["id"] == did]
        if rows.empty or not path.is_file():
            return None
        return path


class AlyxHandler(BaseHTTPRequestHandler):
    server: LoopbackAlyx
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        _logger.debug("%s " + format, self.address_string(), *args)

    @cached_property
    def base(self) -> str:
        return self.server.url

    # helpers ----------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200):
        self._send(status, json.dumps(obj).encode())

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        return header.startswith("Token ") and header[6:] in self.server.tokens

    # verbs ------------------------------------------------------------------------------------
    def do_POST(self):  # noqa: N802 - http.server naming
        path = urlsplit(self.path).path.rstrip("/")
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if path == "/auth-token":
            user, password = form.get("username"), form.get("password")
            if user in self.server.store.users and self.server.store.users[user] == password:
                token = secrets.token_hex(20)
                self.server.tokens[token] = user
                return self._json({"token": token})
            return self._json({"non_field_errors": ["Unable to log in with provided credentials."]}, 400)
        return self._json({"detail": "Method not allowed."}, 405)

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if path.startswith("/data/"):
            return self._file(path)
        if path == "/api/schema":
            return self._send(200, self.server.schema, "application/vnd.oai.openapi+json")
        if not self._authorised():
            return self._json({"detail": "Invalid token."}, 401)
        if path.startswith("/data-repository"):
            if self.server.store.s3 and path == f"/data-repository/{S3_REPOSITORY}":
                return self._json({"name": S3_REPOSITORY, "json": {"bucket_name": S3_BUCKET,
                                                                   "region_name": S3_REGION}})
            return self._json({"detail": "Not found."}, 404)
        if m := re.fullmatch(r"/cache/info/(?P<tag>[\w.-]+)", path):
            return self._cache_info(m["tag"])
        if m := re.fullmatch(r"/cache/(?P<tag>[\w.-]+)/cache\.zip", path):
            return self._send(200, self.server.tag_cache_zip(m["tag"]), "application/zip")
        if m := re.fullmatch(r"/(?P<endpoint>insertions|sessions|datasets)(?:/(?P<id>[0-9a-f-]{36}))?", path):
            return self._rest(m["endpoint"], m["id"], query)
        if path in ("/me", "/users/me") or path.startswith("/users"):  # /me names a token's owner
            user = self.server.tokens[self.headers["Authorization"][6:]]
            return self._json({"username": user})
        return self._json({"detail": "Not found."}, 404)

    def _cache_info(self, tag: str):
        known = {t for tags in self.server.store.dataset_tags.values() for t in tags}
        if tag not in known:
            return self._json({"detail": "Not found."}, 404)
        return self._json({
            "date_created": "2026-01-01T00:00:00", "min_api_version": "2.0.0", "origin": "alyx",
            "database_tags": [tag], "location": f"{self.base}/cache/{tag}/cache.zip",
        })

    def _rest(self, endpoint: str, rid: str | None, query: dict):
        store = self.server.store
        if endpoint == "insertions":
            rows = store.insertions
            if rid:
                return self._detail(rows, rid, store.insertion_record)
            for key, value in _django(query.get("django", "")):
                if key == "datasets__tags__name":
                    rows = rows[[value in store.insertion_tags(r) for _, r in rows.iterrows()]]
                elif key in ("pk", "id"):
                    rows = rows[rows["id"] == value]
                elif key in ("session", "session__id"):
                    rows = rows[rows["eid"] == value]
                else:
                    return self._json({"detail": f"unsupported django filter {key}"}, 400)
            if "session" in query:
                rows = rows[rows["eid"] == query["session"]]
            if "name" in query:
                rows = rows[rows["name"] == query["name"]]
            records = [store.insertion_record(self.base, r) for _, r in rows.sort_values("id").iterrows()]
            return self._paginate(records, query)
        if endpoint == "sessions":
            eids = list(store.sessions.index)
            if rid:
                if rid not in eids:
                    return self._json({"detail": "Not found."}, 404)
                return self._json(store.session_record(self.base, rid, related=True))
            filters = dict(_django(query.get("django", "")))
            wanted_id = query.get("id") or filters.get("pk") or filters.get("id")
            if wanted_id:
                eids = [e for e in eids if e == wanted_id]
            for key in ("subject", "lab"):
                if key in query:
                    eids = [e for e in eids if store.sessions.loc[e, key] == query[key]]
            return self._paginate([store.session_record(self.base, e, related=False) for e in sorted(eids)], query)
        rows = store.datasets
        if rid:
            return self._detail(rows, rid, store.dataset_record)
        if "session" in query:
            rows = rows[rows["eid"] == query["session"]]
        if "name" in query:
            rows = rows[rows["rel_path"].str.rsplit("/", n=1).str[-1] == query["name"]]
        if "collection" in query:
            rows = rows[rows["rel_path"].str.rpartition("/")[0] == query["collection"]]
        for key, value in _django(query.get("django", "")):
            if key == "id__in":
                rows = rows[rows["id"].isin(re.findall(UUID_RE, value))]
            elif key == "tags__name":
                rows = rows[[value in store.dataset_tags.get(d, []) for d in rows["id"]]]
        return self._paginate([store.dataset_record(self.base, d) for _, d in rows.iterrows()], query)

    def _detail(self, rows: pd.DataFrame, rid: str, to_record):
        """One record by id (``/<endpoint>/<uuid>``), or Alyx's 404."""
        match = rows[rows["id"] == rid]
        if match.empty:
            return self._json({"detail": "Not found."}, 404)
        return self._json(to_record(self.base, match.iloc[0]))

    def _paginate(self, records: list, query: dict):
        limit = int(query.get("limit", PAGE_SIZE))
        offset = int(query.get("offset", 0))
        page = records[offset:offset + limit]
        params = "&".join(f"{k}={v}" for k, v in query.items() if k not in ("limit", "offset"))
        nxt = (f"{self.base}{urlsplit(self.path).path}?{params}&limit={limit}&offset={offset + limit}"
               if offset + limit < len(records) else None)
        return self._json({"count": len(records), "next": nxt, "previous": None, "results": page})

    def _file(self, path: str):
        file = self.server.store.file_for(path)
        if file is None:
            return self._send(404, b"Not found", "text/plain")
        size = file.stat().st_size
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m[1])
            stop = min(int(m[2]) if m[2] else size - 1, size - 1)
            if start >= size:
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            with open(file, "rb") as f:
                f.seek(start)
                body = f.read(stop - start + 1)
            self.server.count_bytes(len(body))
            return self._send(206, body, "application/octet-stream",
                              {"Content-Range": f"bytes {start}-{stop}/{size}", "Accept-Ranges": "bytes"})
        body = file.read_bytes()
        self.server.count_bytes(len(body))
        return self._send(200, body, "application/octet-stream", {"Accept-Ranges": "bytes"})


def _django(expr: str) -> list[tuple[str, str]]:
    """Alyx's ``django=key,value,key,value`` filter string as pairs."""
    items = [x for x in expr.split(",") if x != ""]
    return list(zip(items[::2], items[1::2], strict=False))


class LoopbackAlyx(ThreadingHTTPServer):
    """``with LoopbackAlyx(store) as alyx: ...`` serves on 127.0.0.1 at a free port until the block ends.

    With ``s3=True`` a moto S3 server (a dev dependency) on 127.0.0.1 also holds the store's files, and Alyx
    answers the ``aws_cortexlab`` data-repository record and lists an S3 file record per dataset, so real
    ONE downloads datasets from S3 first (falling back to HTTP as it does with IBL). boto3 finds the
    endpoint in ``AWS_ENDPOINT_URL_S3`` (see :attr:`s3_url`), which the caller sets.
    """

    daemon_threads = True

    def __init__(self, store_root: str | Path, host: str = "127.0.0.1", port: int = 0, s3: bool = False):
        super().__init__((host, port), AlyxHandler)
        self.store = AlyxStore(Path(store_root), s3=s3)
        self._s3_server = None
        self.tokens: dict[str, str] = {}
        self.bytes_served = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.schema = (resources.files("one.tests.fixtures.rest_responses") / "openapiv3.json").read_bytes()
        self._zips: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def data_url(self) -> str:
        return f"{self.url}/data"

    def count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def tag_cache_zip(self, tag: str) -> bytes:
        """Cache tables restricted to one tag's datasets, as Alyx publishes for data releases."""
        if tag not in self._zips:
            store = self.store
            dids = [d for d, tags in store.dataset_tags.items() if tag in tags]
            dsets = store.datasets[store.datasets["id"].isin(dids)]
            eids = sorted(set(dsets["eid"]))
            ins = store.insertions[[tag in store.insertion_tags(r) for _, r in store.insertions.iterrows()]]
            meta = {"date_created": "2026-01-01 00:00", "origin": "alyx", "database_tags": tag}
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for name, df, index in (("sessions", store.sessions.loc[eids], None),
                                        ("datasets", dsets, ["eid", "id"]),
                                        ("insertions", ins, ["eid", "id"])):
                    tmp = io.BytesIO()
                    parquet.save(tmp, df.set_index(index) if index else df, meta)
                    z.writestr(f"{name}.pqt", tmp.getvalue())
            self._zips[tag] = buf.getvalue()
        return self._zips[tag]

    @property
    def s3_url(self) -> str | None:
        """The S3 endpoint (for ``AWS_ENDPOINT_URL_S3``), or None without the S3 side."""
        if self._s3_server is None:
            return None
        host, port = self._s3_server.get_host_and_port()
        return f"http://{host}:{port}"

    def _start_s3(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        self._s3_server = ThreadedMotoServer(ip_address=self.server_address[0], port=0, verbose=False)
        self._s3_server.start()
        from botocore.config import Config

        # moto accepts any key pair; these only sign the uploads to the local fake. No per-object checksums:
        # like the objects of IBL's bucket, so only ONE's caller can catch a corrupted download
        client = boto3.client("s3", endpoint_url=self.s3_url, region_name=S3_REGION,
                              aws_access_key_id="demo", aws_secret_access_key="demo",
                              config=Config(request_checksum_calculation="when_required"))
        client.create_bucket(Bucket=S3_BUCKET)
        for _, d in self.store.datasets.iterrows():
            path = self.store.root / self.store.session_rel(d["eid"]) / d["rel_path"]
            # public-read: ONE reads a public bucket unsigned, and moto refuses anonymous reads of private objects
            client.upload_file(str(path), S3_BUCKET, self.store.s3_key(d), ExtraArgs={"ACL": "public-read"})

    def start(self) -> LoopbackAlyx:
        if self.store.s3:
            self._start_s3()
        self._thread = threading.Thread(target=self.serve_forever, name="loopback-alyx", daemon=True)
        self._thread.start()
        _logger.info("loopback Alyx serving %s at %s", self.store.root, self.url)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._s3_server is not None:
            self._s3_server.stop()

    def __enter__(self) -> LoopbackAlyx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
