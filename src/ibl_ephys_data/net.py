"""Network policy: timeouts and bounded retries for every HTTP request, and downloads checked against Alyx.

Why: neither ONE's REST calls, ONE's file downloads nor ``brainbox``'s ``Streamer`` range reads set a timeout,
so one stalled response hangs a whole run; and ONE does not check a download against the dataset record, so
a flipped byte in ``electrodeSites.mlapdv.npy`` silently gives wrong brain regions.

:class:`~ibl_ephys_data.network_policy.NetworkPolicy` says how long to wait and how often to try again.
:func:`install` applies it to a ONE instance through the two doors every request of ONE (and of ``Streamer``,
which downloads through ONE's web client) goes through: the REST request function
(``AlyxClient._generic_request`` receives the ``requests`` function to call) and the file download method
(``AlyxClient.download_file``). Both are replaced on that instance only, by equivalents that call the same URLs
with the same headers and return the same values, with timeouts and retries added. :func:`verified_datasets`
downloads through ONE and checks size and md5 against ONE's dataset record.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
from one.alf.exceptions import ALFObjectNotFound

from ibl_ephys_data.errors import ConnectionFailed, DataIntegrityError
from ibl_ephys_data.network_policy import NetworkPolicy

logger = logging.getLogger(__name__)

# statuses that say "not now" rather than "no": retried
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# a non-idempotent request (POST, PATCH) is retried only when the server says it did not process it
NOT_PROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
DOWNLOAD_BLOCK = 1 << 20


class _Retry(Exception):
    """One try failed in a way worth another try; ``response`` is kept when the server did answer."""

    def __init__(self, reason: str, response: requests.Response | None = None, retry_after: str | None = None):
        super().__init__(reason)
        self.response = response
        self.retry_after = retry_after


def redact_url(url: str) -> str:
    """``https://user:pass@host/x`` -> ``https://***@host/x``: credentials never reach a message or a log."""
    parts = urllib.parse.urlsplit(str(url))
    if "@" not in parts.netloc:
        return str(url)
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def redact_text(text: str) -> str:
    """Every URL's credentials in a free text (e.g. an exception message) replaced by ``***``."""
    return re.sub(r"(\w+://)[^/\s@]+@", r"\1***@", str(text))


class PolicyHttp:
    """Requests made under a :class:`NetworkPolicy`: one ``requests.Session`` per thread, timeouts, retries."""

    def __init__(self, policy: NetworkPolicy):
        self.policy = policy
        self._local = threading.local()
        self.retried = 0  # tries that failed and were retried (for logs and tests)

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _with_retries(self, what: str, attempt_fn: Callable[[], Any], last_response_ok: bool = False) -> Any:
        """Run ``attempt_fn`` up to ``policy.tries`` times while it raises :class:`_Retry` or a network error.

        With ``last_response_ok`` a final retryable HTTP answer is returned (the caller reports it the way
        it always did) instead of raising ``ConnectionFailed``.
        """
        for attempt in range(self.policy.tries):
            try:
                return attempt_fn()
            except (_Retry, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as ex:
                response = getattr(ex, "response", None) if isinstance(ex, _Retry) else None
                if attempt == self.policy.tries - 1:
                    if last_response_ok and response is not None:
                        return response
                    raise ConnectionFailed(
                        f"{redact_text(what)}: {redact_text(ex)} ({self.policy.tries} tries); check the network "
                        "or the server, or raise the timeouts/retries of the network policy") from None
                wait = self.policy.delay(attempt, getattr(ex, "retry_after", None))
                self.retried += 1
                logger.warning("%s: %s; try %d/%d again in %.1f s", redact_text(what), redact_text(ex),
                               attempt + 2, self.policy.tries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable: the last try returns or raises")

    def request(self, method: str, url: str, *, retry_all: bool = False, **kwargs) -> requests.Response:
        """One HTTP request with the policy's timeouts, the body read inside the retry loop.

        5xx/429, resets, timeouts and short bodies are tried again (non-idempotent methods only on 429/503
        unless ``retry_all``). The last answer is returned as it came, so callers report HTTP errors as before.
        """
        method = method.upper()
        kwargs.pop("timeout", None)
        retry_on = RETRY_STATUSES if retry_all or method in IDEMPOTENT_METHODS else NOT_PROCESSED_STATUSES

        def attempt() -> requests.Response:
            r = self.session.request(method, url, timeout=self.policy.timeout, **kwargs)
            if r.status_code in retry_on:
                r.close()
                raise _Retry(f"server answered {r.status_code}", r, r.headers.get("Retry-After"))
            _ = r.content  # a reset or short body surfaces here, inside the retry loop
            return r

        return self._with_retries(f"{method} {url}", attempt, last_response_ok=True)

    def requests_function(self, reqfunction: Callable) -> Callable:
        """``requests.get`` (etc.) -> the same call under the policy; anything else is returned unchanged.

        The name is kept: ONE's REST cache decides from ``reqfunction.__name__`` whether to cache.
        """
        name = getattr(reqfunction, "__name__", "")
        if getattr(reqfunction, "__module__", "") != "requests.api" or name not in {"get", "post", "put", "patch",
                                                                                   "delete", "head", "options"}:
            return reqfunction
        bound = functools.partial(self.request, name)
        functools.update_wrapper(bound, reqfunction)
        return bound

    def download(self, url: str, target_dir: str | Path, chunks: tuple[int, int] | None = None,
                 clobber: bool = False, return_md5: bool = False, auth: tuple[str, str] | None = None,
                 headers: dict | None = None):
        """Download ``url`` (or its byte range ``chunks=(first_byte, n_bytes)``) into ``target_dir``.

        The same contract as ONE's ``http_download_file`` (file name = the URL's last part, an existing file
        kept unless ``clobber``, ``(path, md5)`` with ``return_md5``), plus: the body goes to a ``.part`` file
        renamed only when complete, and a short body (bytes != Content-Length) or a server that ignores the
        ``Range`` header (200 instead of 206) is a failed try, never a result.
        """
        split = urllib.parse.urlsplit(url, allow_fragments=False)
        url = split._replace(path=urllib.parse.quote(split.path)).geturl()
        file = Path(target_dir, url.rsplit("/", 1)[1])
        if not clobber and file.exists():
            return (file, md5_file(file)) if return_md5 else file
        # the bytes as stored (as ONE's urllib download gets them): a gzipped answer would not match its record
        headers = {"Accept-Encoding": "identity", **(headers or {})}
        if chunks is not None:
            headers["Range"] = f"bytes={chunks[0]}-{chunks[0] + chunks[1] - 1}"
        file.parent.mkdir(parents=True, exist_ok=True)
        part = file.with_name(file.name + ".part")

        def attempt() -> str:
            md5 = hashlib.md5()
            with self.session.get(url, headers=headers, auth=auth, stream=True, timeout=self.policy.timeout) as r:
                if r.status_code in RETRY_STATUSES:
                    raise _Retry(f"data server answered {r.status_code}", retry_after=r.headers.get("Retry-After"))
                if r.status_code >= 400:
                    raise ConnectionFailed(f"{redact_url(url)}: the data server answered {r.status_code}; check "
                                           "the dataset exists and HTTP_DATA_SERVER_LOGIN/PWD in ONE's params")
                if chunks is not None and r.status_code != 206:
                    raise _Retry(f"asked for bytes {headers['Range']} but got status {r.status_code} (Range ignored)")
                expected = r.headers.get("Content-Length")
                received = 0
                with open(part, "wb") as f:
                    for block in r.iter_content(DOWNLOAD_BLOCK):
                        f.write(block)
                        md5.update(block)
                        received += len(block)
            if expected is not None and received != int(expected):
                raise _Retry(f"short body: {received} of {expected} bytes")
            part.replace(file)
            return md5.hexdigest()

        try:
            digest = self._with_retries(f"GET {url}", attempt)
        finally:
            part.unlink(missing_ok=True)
        return (file, digest) if return_md5 else file


def md5_file(path: Path) -> str:
    """MD5 hex digest of a file, read in ``DOWNLOAD_BLOCK`` blocks (iblutil's ``hashfile.md5`` allocates a
    256-MB buffer per call: ~0.3 s for each small file)."""
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(DOWNLOAD_BLOCK), b""):
            md5.update(block)
    return md5.hexdigest()


def install(one: Any, policy: NetworkPolicy) -> PolicyHttp:
    """Apply ``policy`` to every request this ONE instance (and a ``Streamer`` built on it) makes.

    REST calls, dataset and range downloads and the release cache tables (``download_cache_tables``) go
    through the policy; ONE's re-login after an expired token (rare) and its S3 path keep their own settings.

    ONE offers no timeout setting; its own hooks are the retry attributes, which are set to 0 because the
    policy retries here, once. The REST path keeps ONE's request code (headers, REST cache, token refresh,
    error messages) and only swaps the ``requests`` function it is handed; the download path keeps ONE's
    URL validation and data-server login. Returns the :class:`PolicyHttp`, also kept as ``one.network_http``
    (its ``retried`` counts the tries that were retried).
    """
    client = one.alyx
    http = PolicyHttp(policy)
    original_request = type(client)._generic_request

    def generic_request(reqfunction, *args, **kwargs):
        return original_request(client, http.requests_function(reqfunction), *args, **kwargs)

    # ONE re-enters with ``unwrap(self._generic_request)(self, ...)`` after a token refresh: point it at its own
    generic_request.__wrapped__ = original_request

    def download_file(url, **kwargs):
        urls = [url] if isinstance(url, str) else list(url)
        targets = kwargs.pop("target_dir", None) or client._par.CACHE_DIR
        targets = [targets] * len(urls) if isinstance(targets, (str, Path)) else list(targets)
        login, pwd = client._par.HTTP_DATA_SERVER_LOGIN, client._par.HTTP_DATA_SERVER_PWD
        get = functools.partial(http.download, chunks=kwargs.get("chunks"), clobber=kwargs.get("clobber", False),
                                return_md5=kwargs.get("return_md5", False), headers=kwargs.get("headers"),
                                auth=(login, pwd) if login and pwd else None)
        if isinstance(url, str):
            return get(client._validate_file_url(url), targets[0])
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            out = list(pool.map(lambda u, t: get(client._validate_file_url(u), t), urls, targets))
        return list(zip(*out, strict=True)) if kwargs.get("return_md5") else out

    def download_cache_tables(source=None, destination=None):
        # ONE's version, with the zip fetched under the policy (the catalog stage loads release tables so)
        source = str(source or f"{client.base_url}/cache.zip")
        destination = Path(destination or client.cache_dir)
        destination.mkdir(parents=True, exist_ok=True)
        headers = None
        if source.startswith(client.base_url):
            if not client.is_logged_in:
                client.authenticate()
            headers = client._headers
        with tempfile.TemporaryDirectory(dir=destination) as tmp:
            with zipfile.ZipFile(http.download(source, tmp, clobber=True, headers=headers)) as zipped:
                tables = zipped.namelist()
                zipped.extractall(destination)
        return [destination / table for table in tables]

    client._generic_request = generic_request
    client.download_file = download_file
    client.download_cache_tables = download_cache_tables
    # ONE's S3 path builds its own boto3 session per download batch, out of reach of this instance; botocore
    # reads its retry policy from the environment (exponential backoff with jitter on 5xx, throttling and
    # resets), so the policy's tries go there unless the user set them. Its timeouts are botocore's own
    # (60 s); a failed S3 download falls back to ONE's HTTP path, which is under the policy.
    os.environ.setdefault("AWS_RETRY_MODE", "standard")
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(policy.tries))
    client.max_retry_attempts = 0
    client.token_verify_timeout = policy.connect_timeout + policy.read_timeout
    one.network_http = http
    return http


def verified_datasets(one: Any, eid: str, names: Iterable[str] | str, collection: str | None = None) -> list[Path]:
    """Download (through ONE) every dataset of ``eid`` matching ``names`` in ``collection``, checked.

    Each file is compared with ONE's dataset record (``file_size``, md5 ``hash``). On a mismatch the file is
    deleted and fetched once more; a second mismatch deletes it again and raises ``DataIntegrityError``
    naming the file, so nothing broken stays in ONE's cache. Wildcards follow ONE (``*.lf.ch``).
    Returns the paths in record order; an empty list when nothing matches.
    """
    names = [names] if isinstance(names, str) else list(names)
    paths = []
    for name in names:
        recs = one.list_datasets(eid, filename=name, collection=collection, details=True)
        if "default_revision" in recs and recs["default_revision"].eq(True).any():
            recs = recs[recs["default_revision"].eq(True)]  # what ONE loads; tables without the flag keep all
        paths += [_verified(one, eid, rec) for _, rec in recs.iterrows()]
    return paths


def verified_dataset(one: Any, eid: str, name: str, collection: str | None = None) -> Path:
    """The one dataset ``name`` of ``eid`` in ``collection``, downloaded and checked (see ``verified_datasets``)."""
    paths = verified_datasets(one, eid, name, collection)
    if len(paths) != 1:
        raise ALFObjectNotFound(f"{collection}/{name} of session {eid}: {len(paths)} datasets match, expected 1")
    return paths[0]


def _verified(one: Any, eid: str, rec: Any) -> Path:
    rel = rec["rel_path"]
    folder, _, filename = rel.rpartition("/")
    revision = None
    if m := re.fullmatch(r"(.*?)/?#([^#]+)#", folder):
        folder, revision = m[1], m[2]
    for attempt in range(2):
        # ONE's own hash check is skipped (``check_hash=False``; it still compares sizes): _mismatch below
        # hashes the file anyway, and ONE's hasher (iblutil) allocates 256 MB per file, 0.27 s each
        path = one.load_dataset(eid, filename, collection=folder or None, revision=revision, download_only=True,
                                check_hash=False)
        if path is None or not Path(path).exists():
            raise ALFObjectNotFound(f"{rel} of session {eid}: not downloaded (offline, or missing on the server)")
        path = Path(path)
        problem = _mismatch(path, rec)
        if problem is None:
            return path
        if one.offline:  # nothing to fetch it from: keep the user's file, say what is wrong and how to fix it
            raise DataIntegrityError(f"{rel} of session {eid} is corrupt ({problem}): {path}; run without "
                                     "--offline to download it again")
        path.unlink(missing_ok=True)
        if attempt == 0:
            logger.warning("%s of session %s: %s; deleted, downloading it again", rel, eid, problem)
    raise DataIntegrityError(f"{rel} of session {eid} is corrupt ({problem}) after two downloads; the server's "
                             "copy or the network corrupts it (the broken file was deleted, nothing else is affected)")


def _mismatch(path: Path, rec: Any) -> str | None:
    """Why ``path`` does not match its dataset record, or None."""
    size = rec.get("file_size")
    if size is not None and size == size and path.stat().st_size != int(size):
        return f"size {path.stat().st_size} != {int(size)} in Alyx's record"
    expected = rec.get("hash")
    if isinstance(expected, str) and expected and md5_file(path) != expected:
        return "md5 differs from Alyx's record"
    return None
