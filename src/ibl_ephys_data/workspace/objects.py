"""Object-store workspaces (``--workspace s3://bucket/prefix``): the bucket is the data of record.

Why a working copy: every stage reads and writes the workspace contract as local files (atomic renames,
parquet footers, zarr shards). Rewriting each stage against an object-store API would spread storage into
all of them. Instead a local folder (``IBL_EPHYS_DATA_CACHE``, default ``~/.cache/ibl-ephys-data/s3``, then
``<bucket>/<prefix>``) is the working copy of the bucket: `atomic_path` publishes what it commits, and
`Mirror.pull` brings the working copy up to date. Several machines (Dask workers that share no file
system) each keep their own working copy of the same bucket.

Units: what a stage replaces at once is published at once.

- A file (``catalog.parquet``, ``manifest.json``, ``parts/<stage>/<pid>.parquet``, ...) is one PUT, which
  the store makes atomic.
- A folder (``lfp.zarr/<pid>``, ``qc``, ``dataset``, ``report``) is its files, then a commit record
  ``.commits/<unit>.json`` naming each file with its size, MD5 and ETag (the version stored). The record
  is set to ``writing`` before the first upload, so a writer killed midway leaves a unit that readers treat
  as absent (the next run recomputes it), never a mix of old and new files.

Checks: uploads carry Content-MD5 (the store refuses a damaged body) and the MD5 in the object's metadata;
downloads are compared with the expected size and MD5 before they enter the working copy, and a mismatch is
retried a bounded number of times. Every request has connect/read timeouts and bounded retries with backoff
(botocore's ``standard`` mode). Credentials and the endpoint come from the standard AWS variables or files
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ...); they are never logged or written.

boto3 rather than fsspec or obstore: it is already installed (ONE's own S3 access uses it), so no new
dependency, and its client exposes the timeouts, retries, conditional writes and Content-MD5 used here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ibl_ephys_data.errors import ConnectionFailed, DataIntegrityError, InputError
from ibl_ephys_data.network_policy import NetworkPolicy

logger = logging.getLogger(__name__)

SCHEME = "s3://"
COMMITS = ".commits"  # <prefix>/.commits/<unit>.json: the commit record of a folder unit
STATE = ".mirror"  # <working copy>/.mirror/<unit>.json: which remote version the local unit holds
CACHE_ENV = "IBL_EPHYS_DATA_CACHE"
# how the workspace's top-level entries are published (given by `Workspace.published`)
FILE, FOLDER, FILES, GROUPS = "file", "folder", "files", "groups"

_MIRRORS: dict[Path, Mirror] = {}  # working-copy root -> its mirror, in this process
_MIRRORS_LOCK = threading.Lock()


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


def working_copy(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder that holds the working copy of ``url``."""
    base = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ibl-ephys-data" / "s3")
    bucket, prefix = split_url(url)
    return (base.expanduser() / bucket / prefix).absolute()


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b"); one clear line for anything else."""
    rest = url[len(SCHEME):].strip("/") if is_url(url) else ""
    bucket, _, prefix = rest.partition("/")
    if not bucket or ".." in prefix.split("/"):
        raise InputError(f"workspace {url!r} is not an object-store location: use s3://bucket/prefix")
    return bucket, prefix.strip("/")


class ObjectStore:
    """The bucket's side: keys under ``prefix``, every transfer with a timeout, retries and an MD5 check.

    ``network`` gives the timeouts and the number of tries (botocore's ``standard`` retries: exponential
    backoff with jitter), as for every other request of the tool (``--timeout``, ``--retries``).
    """

    def __init__(self, url: str, network: NetworkPolicy | None = None):
        import boto3
        from botocore.config import Config

        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_url(url)
        self.network = network = network or NetworkPolicy()
        config = Config(connect_timeout=network.connect_timeout, read_timeout=network.read_timeout,
                        retries={"max_attempts": network.tries, "mode": "standard"}, max_pool_connections=32)
        self.client = boto3.session.Session().client("s3", config=config)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def check(self) -> None:
        """One line naming the bucket if it cannot be used (missing, unreachable, refused)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as ex:
            code = ex.response.get("Error", {}).get("Code", "?")
            raise InputError(f"workspace {self.url}: the bucket answered {code} (create it, or check "
                             "AWS_ENDPOINT_URL and the AWS credentials)") from None
        except BotoCoreError as ex:
            raise ConnectionFailed(f"workspace {self.url}: the object store is not reachable ({ex}); check "
                                   "AWS_ENDPOINT_URL and the network") from None

    def list(self, rel_prefix: str = "") -> dict[str, tuple[int, str]]:
        """{relative key: (size, etag)} of every object under ``rel_prefix``."""
        prefix = self.key(rel_prefix) if rel_prefix else (self.prefix + "/" if self.prefix else "")
        out, cut = {}, len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"][cut:]] = (int(obj["Size"]), obj["ETag"].strip('"'))
        return out

    def put(self, rel: str, data: bytes, if_absent: bool = False) -> str | None:
        """Upload ``data``; returns the object's ETag (None if ``if_absent`` and the key exists).

        The ETag names this version of the object in listings; it is the MD5 only for some encryptions,
        so the MD5 is also kept in the object's metadata.
        """
        digest = hashlib.md5(data)
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data,
                                           ContentMD5=base64.b64encode(digest.digest()).decode(),
                                           Metadata={"md5": digest.hexdigest()}, **extra)
        except self.client.exceptions.ClientError as ex:
            if if_absent and ex.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return None
            raise
        return reply["ETag"].strip('"')

    def upload(self, path: Path, rel: str) -> str:
        return self.put(rel, Path(path).read_bytes())

    def get(self, rel: str, size: int | None = None, md5: str | None = None) -> bytes:
        """The object's bytes, checked against ``size``/``md5`` (else its stored MD5) before they are used."""
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import (
            FlexibleChecksumError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        problem = ""
        for _ in range(self.network.tries):
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))  # botocore retries this
            try:  # ... but not a body cut, stalled or damaged (botocore's own CRC check) after the headers
                data = reply["Body"].read()
            except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError, BotoConnectionError,
                    FlexibleChecksumError) as ex:
                problem = f"download broken off ({type(ex).__name__})"
                logger.warning("%s/%s: %s; downloading again", self.url, rel, problem)
                continue
            expected = md5 or reply.get("Metadata", {}).get("md5")
            if size is not None and len(data) != size:
                problem = f"{len(data)} bytes, not {size}"
            elif len(data) != int(reply.get("ContentLength", len(data))):
                problem = f"{len(data)} bytes, not the announced {reply['ContentLength']}"
            elif expected and hashlib.md5(data).hexdigest() != expected:
                problem = "MD5 mismatch"
            else:
                return data
            logger.warning("%s/%s: %s; downloading again", self.url, rel, problem)
        raise DataIntegrityError(f"{self.url}/{rel}: {problem} after {self.network.tries} downloads")

    def get_range(self, rel: str, offset: int, n: int) -> bytes:
        reply = self.client.get_object(Bucket=self.bucket, Key=self.key(rel), Range=f"bytes={offset}-{offset + n - 1}")
        data = reply["Body"].read()
        if len(data) != n:
            raise DataIntegrityError(f"{self.url}/{rel}: {len(data)} bytes at {offset}, not {n}")
        return data

    def delete(self, rels: list[str]) -> None:
        for i in range(0, len(rels), 1000):
            batch = [{"Key": self.key(r)} for r in rels[i:i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


class RemoteFile:
    """``size`` and ``pread`` of one object, by HTTP range requests (the shape `ShardReader` reads)."""

    def __init__(self, store: ObjectStore, rel: str, size: int):
        self.store, self.rel, self.size = store, rel, size

    def pread(self, n: int, offset: int) -> bytes:
        return self.store.get_range(self.rel, offset, n)

    def close(self) -> None:
        pass


class Mirror:
    """A working copy (``root``) of an object-store workspace, and the rules that keep the two in step.

    ``published`` maps each top-level name the workspace publishes to how it is replaced: ``FILE`` (one
    object), ``FOLDER`` (one folder unit), ``FILES`` (a folder of file units: parts) or ``GROUPS`` (a folder
    of folder units plus files: lfp.zarr, whose shards are fetched only when an insertion is opened).
    """

    def __init__(self, root: Path, store: ObjectStore, published: dict[str, str]):
        self.root, self.store, self.published = Path(root), store, dict(published)
        self._listing: dict[str, tuple[int, str]] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Mirror({self.store.url!r} -> {str(self.root)!r})"

    # units ------------------------------------------------------------------------------------
    def unit_of(self, rel: str, folder: bool | None = None) -> tuple[str, bool] | None:
        """(unit, is a folder unit) of a workspace-relative path, or None if it is not published.

        ``folder`` tells whether a two-level ``GROUPS`` path (``lfp.zarr/<x>``) is a folder (default: look
        at the working copy).
        """
        parts = rel.split("/")
        if not rel or any(p.startswith(".") for p in parts):  # temporaries, the lock, this module's state
            return None
        kind = self.published.get(parts[0])
        if kind == FILE and len(parts) == 1:
            return rel, False
        if kind == FOLDER:
            return parts[0], True
        if kind == FILES and len(parts) > 1:
            return None if folder is None and (self.root / rel).is_dir() else (rel, False)
        if kind == GROUPS and len(parts) > 1:
            if len(parts) > 2:
                return "/".join(parts[:2]), True
            is_folder = (self.root / rel).is_dir() if folder is None else folder
            return rel, is_folder
        return None

    def unit_of_path(self, path: Path) -> tuple[str, bool] | None:
        try:
            rel = Path(path).absolute().relative_to(self.root).as_posix()
        except ValueError:
            return None
        return self.unit_of(rel)

    # local state --------------------------------------------------------------------------------
    def _state_path(self, unit: str) -> Path:
        return self.root / STATE / f"{unit}.json"

    def _state(self, unit: str) -> dict:
        try:
            return json.loads(self._state_path(unit).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _set_state(self, unit: str, state: dict | None) -> None:
        path = self._state_path(unit)
        if state is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_local(path, json.dumps(state, sort_keys=True).encode())

    # publishing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def committing(self, path: Path) -> Iterator[None]:
        """Around a local commit of ``path``: forget which version the unit held, then publish it.

        ``path`` may also be a folder of units (``lfp.zarr``, ``parts``, ``parts/<stage>``): each unit in it
        is published.
        """
        unit = self.unit_of_path(path)
        if unit is not None:
            self._set_state(unit[0], None)  # killed before the publish ends: the next pull resyncs this unit
        yield
        unit = self.unit_of_path(path)  # now that it exists: a file, a folder unit or a folder of units
        if unit is not None:
            self.publish(*unit)
            return
        inside = {self.unit_of_path(p) for p in Path(path).rglob("*") if p.is_file()} if Path(path).is_dir() else ()
        for each in sorted(u for u in inside if u is not None):
            self.publish(*each)

    def publish(self, unit: str, folder: bool) -> None:
        if folder:
            self._publish_folder(unit)
            return
        path = self.root / unit
        if not path.exists():
            return
        etag = self.store.upload(path, unit)
        self._update_listing({unit: (path.stat().st_size, etag)})
        self._set_state(unit, {"etag": etag})

    def _publish_folder(self, unit: str) -> None:
        from ibl_ephys_data.net import md5_file

        folder = self.root / unit
        files = {p.relative_to(self.root).as_posix(): p for p in sorted(folder.rglob("*"))
                 if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)}
        record = {"state": "committed",
                  "files": {rel: {"size": p.stat().st_size, "md5": md5_file(p)} for rel, p in files.items()}}
        previous = self._remote_record(unit)
        old = previous.get("files", {}) if previous.get("state") == "committed" else {}
        self.store.put(_record_key(unit), json.dumps({"state": "writing"}).encode())
        remote = self.store.list(unit + "/")
        for rel, meta in record["files"].items():
            before = old.get(rel, {})
            same = {k: before.get(k) for k in meta} == meta and remote.get(rel, (0, None))[1] == before.get("etag")
            meta["etag"] = before["etag"] if same else self.store.upload(files[rel], rel)
        stale = sorted(set(remote) - set(record["files"]))
        if stale:
            self.store.delete(stale)
        etag = self.store.put(_record_key(unit), _dump(record))
        with self._lock:
            if self._listing is not None:
                for rel in [r for r in self._listing if r.startswith(unit + "/")]:
                    del self._listing[rel]
        self._update_listing({rel: (m["size"], m["etag"]) for rel, m in record["files"].items()}
                             | {_record_key(unit): (0, etag)})
        self._set_state(unit, {"etag": etag, "files": record["files"], "local": sorted(record["files"])})

    def _update_listing(self, entries: dict[str, tuple[int, str]]) -> None:
        with self._lock:
            if self._listing is not None:
                self._listing.update(entries)

    def _remote_record(self, unit: str, etag: str | None = None) -> dict:
        """The commit record of a folder unit ({} if none); the local state's copy if its etag matches."""
        state = self._state(unit)
        if etag is not None and state.get("etag") == etag and "files" in state:
            return {"state": "committed", "files": state["files"]}
        try:
            return json.loads(self.store.get(_record_key(unit)))
        except self.store.client.exceptions.NoSuchKey:
            return {}

    # pulling ------------------------------------------------------------------------------------
    def listing(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            if self._listing is None:
                self._listing = self.store.list()
            return self._listing

    def pull(self, prune: bool = False) -> None:
        """Bring the working copy up to the bucket's committed state.

        Files and folder units whose remote version differs from the local state are downloaded (lfp.zarr
        groups: only their ``zarr.json``; `fetch` brings the shards). ``prune`` (only while holding the
        lock: no writer is running) also removes local units the bucket does not have, or has only half
        written: what a killed run left behind is recomputed, not trusted.
        """
        listing = self.store.list()
        with self._lock:
            self._listing = dict(listing)
        folders, files = {}, {}
        for rel, (_, etag) in listing.items():
            if rel.startswith(COMMITS + "/") and rel.endswith(".json"):
                folders[rel[len(COMMITS) + 1:-len(".json")]] = etag
            else:
                unit = self.unit_of(rel, folder=False)
                if unit is not None and not unit[1]:
                    files[rel] = etag
        committed = set()
        for unit, etag in sorted(folders.items()):
            record = self._remote_record(unit, etag)
            if record.get("state") == "committed":
                committed.add(unit)
                self._sync_folder(unit, record, etag)
        for rel, etag in sorted(files.items()):
            if self._state(rel).get("etag") != etag or not (self.root / rel).is_file():
                size = listing[rel][0]
                _write_local(self.root / rel, self.store.get(rel, size=size))
                self._set_state(rel, {"etag": etag})
        if prune:
            self._prune(committed, set(files))

    def _sync_folder(self, unit: str, record: dict, etag: str, whole: bool = False) -> None:
        state = self._state(unit)
        if state.get("etag") == etag and not whole:
            return
        files = record["files"]
        known = state.get("files", {})
        local = {f for f in state.get("local", []) if known.get(f) == files.get(f) and (self.root / f).is_file()}
        folder = self.root / unit
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and rel not in local:
                path.unlink()
        lazy = self.published.get(unit.split("/")[0]) == GROUPS and not whole
        for rel, meta in files.items():
            if rel not in local and not (lazy and not rel.endswith("zarr.json")):
                _write_local(self.root / rel, self.store.get(rel, size=meta["size"], md5=meta["md5"]))
                local.add(rel)
        self._set_state(unit, {"etag": etag, "files": files, "local": sorted(local)})

    def _prune(self, folders: set[str], files: set[str]) -> None:
        import shutil

        removed = []
        for name, kind in self.published.items():
            top = self.root / name
            if kind == FILE and top.is_file() and name not in files:
                removed.append(top)
                top.unlink()
            elif kind == FOLDER and top.is_dir() and name not in folders:
                removed.append(top)
                shutil.rmtree(top)
            elif kind in (FILES, GROUPS) and top.is_dir():
                for path in sorted(top.rglob("*")) if kind == FILES else sorted(top.iterdir()):
                    unit = self.unit_of_path(path)
                    if unit is None or (path.is_dir() and not unit[1]):
                        continue
                    if unit[0] not in (folders if unit[1] else files):
                        removed.append(path)
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in removed:
            self._set_state(path.relative_to(self.root).as_posix(), None)
        if removed:
            logger.info("%s: removed %d local outputs the bucket does not hold (a killed run's; recomputed)",
                        self.root, len(removed))

    def fetch(self, unit: str) -> None:
        """Every file of a folder unit in the working copy (an lfp.zarr group before it is read)."""
        record_key = _record_key(unit)
        etag = self.listing().get(record_key, (0, None))[1]
        if etag is None:
            return
        state = self._state(unit)
        files = state.get("files") if state.get("etag") == etag else None
        if files is not None and set(state.get("local", [])) >= set(files):
            return
        record = self._remote_record(unit, etag)
        if record.get("state") == "committed":
            self._sync_folder(unit, record, etag, whole=True)

    def problems(self, unit: str) -> list[str]:
        """What is wrong with a folder unit in the bucket: not committed, or a file missing or not the
        version its commit record names (size and ETag). Empty: intact."""
        listing = self.listing()
        etag = listing.get(_record_key(unit), (0, None))[1]
        where = f"{self.store.url}/{unit}"
        if etag is None:
            return [f"{where} is not in the bucket"]
        record = self._remote_record(unit, etag)
        if record.get("state") != "committed":
            return [f"{where} was not completely written (its commit record says {record.get('state')!r})"]
        found = []
        for rel, meta in record["files"].items():
            size, etag = listing.get(rel, (None, None))
            if size is None:
                found.append(f"{self.store.url}/{rel} is missing")
            elif size != meta["size"] or etag != meta.get("etag"):
                found.append(f"{self.store.url}/{rel} differs from its commit record")
        return found

    def open_remote(self, path: Path) -> RemoteFile:
        """Positioned reads of a published file without a local copy (`FileNotFoundError` if not published)."""
        rel = Path(path).absolute().relative_to(self.root).as_posix()
        size = self.listing().get(rel, (None, None))[0]
        if size is None:
            raise FileNotFoundError(f"{self.store.url}/{rel}")
        return RemoteFile(self.store, rel, size)

    # the lock -----------------------------------------------------------------------------------
    def lock_backend(self) -> tuple[Callable[[bytes], bool], Callable[[], dict | None], Callable[[], None]]:
        """(create if absent, read holder, remove) of the bucket's ``.lock`` object."""
        def create(data: bytes) -> bool:
            return self.store.put(".lock", data, if_absent=True) is not None

        def read() -> dict | None:
            try:
                return json.loads(self.store.get(".lock"))
            except (self.store.client.exceptions.NoSuchKey, json.JSONDecodeError):
                return None

        return create, read, lambda: self.store.delete([".lock"])


def open_mirror(url: str, root: Path, published: dict[str, str], network: NetworkPolicy | None = None) -> Mirror:
    """The mirror of ``url`` in ``root`` (one per process: its listing and client are reused, so the first
    opener's ``network`` policy holds for the process)."""
    with _MIRRORS_LOCK:
        mirror = _MIRRORS.get(root)
        if mirror is None or mirror.store.url != url.rstrip("/"):
            mirror = _MIRRORS[root] = Mirror(root, ObjectStore(url, network), published)
        return mirror


def mirror_for(path: str | os.PathLike) -> Mirror | None:
    """The mirror whose working copy holds ``path`` (None for local workspaces: the common case is free)."""
    if not _MIRRORS:
        return None
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        mirror = _MIRRORS.get(folder)
        if mirror is not None:
            return mirror
    return None


@contextlib.contextmanager
def committing(path: Path) -> Iterator[None]:
    """Wrap a local commit of ``path``: publishes it if ``path`` is in an object-store working copy."""
    mirror = mirror_for(path)
    if mirror is None:
        yield
        return
    with mirror.committing(path):
        yield


def _record_key(unit: str) -> str:
    return f"{COMMITS}/{unit}.json"


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1).encode()


def _write_local(path: Path, data: bytes) -> None:
    """Write a working-copy file atomically (not through `atomic_path`: a download is not published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.dl.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
