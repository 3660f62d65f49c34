"""The ONE connection: remote (any Alyx, the public IBL one by default) or offline (the ONE cache only).

Credentials come from ONE's own params or from the environment (``ALYX_LOGIN``, ``ALYX_PASSWORD``,
``ALYX_TOKEN``); they are handed to ONE and never logged or written to the workspace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
from one.api import One, OneAlyx

from ibl_ephys_data.errors import ConnectionFailed, check_option
from ibl_ephys_data.net import PolicyHttp, install, redact_url
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.workspace.schema import RELEASES

logger = logging.getLogger(__name__)

PUBLIC_ALYX_URL = "https://openalyx.internationalbrainlab.org"


def release_tags(release: str) -> tuple[str, ...]:
    """Alyx dataset tags whose union makes a release (DESIGN §2)."""
    return RELEASES[check_option("release", release, sorted(RELEASES))]


@dataclass(frozen=True)
class Connection:
    """How to reach ONE. Build it from CLI options; ``open()`` gives the ONE instance.

    ``network`` (timeouts, retries) is installed on the ONE instance it opens. Credentials written into
    ``alyx_url`` (``https://user:pass@host``) are taken out of it before anything sees the URL: they are
    used as login/password, and never echoed, logged nor written to ONE's params.
    """

    alyx_url: str = PUBLIC_ALYX_URL
    cache_dir: Path | None = None
    offline: bool = False
    http_data_server: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    token: str | None = field(default=None, repr=False)
    remember_token: bool = True  # False on Dask workers: the token stays in memory, never in ~/.one
    cache_rest: bool = True  # False on Dask workers: see for_workers

    def __repr__(self) -> str:
        return (f"Connection(alyx_url={redact_url(self.alyx_url)!r}, cache_dir={self.cache_dir!r}, "
                f"offline={self.offline}, http_data_server={redact_url(self.http_data_server or '')!r}, "
                f"username={self.username!r}, network={self.network!r})")

    @property
    def base_url(self) -> str:
        """``alyx_url`` without credentials: the URL ONE, messages and cache paths see."""
        return _split_credentials(self.alyx_url)[0]

    def for_workers(self) -> Connection:
        """A copy to pickle to Dask workers: a session token (logged in here, once) instead of a password.

        Why: workers on other machines have neither this machine's ONE params nor its environment; the token
        travels in memory with the task, and the workers' ONE is told not to cache it (``remember_token``),
        so no credential is written on a worker's disk or logged.

        Workers also keep Alyx's answers in memory only (no ``.rest`` folder in the ONE cache): the tasks of
        one cluster share that folder, and ONE creates it and writes its files without guarding against a
        sibling doing the same at once (a task failed with ``FileExistsError`` on ``.rest``).
        """
        if self.offline:
            return self
        url, url_user, url_password = _split_credentials(self.alyx_url)
        username = self.username or url_user or os.environ.get("ALYX_LOGIN")
        password = self.password or url_password or os.environ.get("ALYX_PASSWORD")
        token = self.token or os.environ.get("ALYX_TOKEN")
        if username and password:
            token = _login(PolicyHttp(self.network), url, username, password)
        return replace(self, alyx_url=url, username=username, password=None, token=token, remember_token=False,
                       cache_rest=False)

    def open(self) -> One:
        if self.offline:
            return self._open_offline()
        return self._open_remote()

    @contextlib.contextmanager
    def session(self) -> Iterator[One]:
        """Open ONE and, when done, persist what remote queries taught it (for a later ``--offline``)."""
        one = self.open()
        try:
            yield one
        finally:
            save_one_cache(one)

    def _open_offline(self) -> One:
        cache_dir = self.cache_dir or _default_cache_dir(self.base_url)
        if not (Path(cache_dir) / "datasets.pqt").exists():
            raise ConnectionFailed(
                f"no ONE cache tables in {cache_dir}: run once without --offline (or pass --one-cache DIR)"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # OneAlyx in local mode: the same vocabulary as remote (pid2eid ...) from the cache tables only
            return OneAlyx(base_url=self.base_url, cache_dir=str(cache_dir), mode="local", silent=True)

    def _open_remote(self) -> OneAlyx:
        url, url_user, url_password = _split_credentials(self.alyx_url)
        username = self.username or url_user or os.environ.get("ALYX_LOGIN")
        password = self.password or url_password or os.environ.get("ALYX_PASSWORD")
        token = self.token or os.environ.get("ALYX_TOKEN")
        http = PolicyHttp(self.network)
        kwargs = {"base_url": url, "silent": True, "mode": "remote"}
        if self.cache_dir:
            kwargs["cache_dir"] = str(self.cache_dir)
        if not self.cache_rest:
            kwargs["cache_rest"] = None
        if username:
            kwargs["username"] = username
        _check_reachable(http, url)
        if username and password:
            token = _login(http, url, username, password)
        if token and self.remember_token:
            kwargs["token"] = token
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.remember_token or not token:
                    one = OneAlyx(**kwargs)
                else:  # ONE's public authenticate(), told not to cache the token in its params file
                    kwargs.pop("username", None)
                    one = OneAlyx(**kwargs)
                    one.alyx.authenticate(username=username, token=token, cache_token=False)
        except requests.HTTPError as ex:
            raise ConnectionFailed(
                f"Alyx at {url} refused the credentials: set ALYX_LOGIN/ALYX_PASSWORD "
                "(or ALYX_TOKEN) or run `ONE.setup` for that URL"
            ) from ex
        except ValueError as ex:
            raise ConnectionFailed(
                f"no Alyx username for {url}: set ALYX_LOGIN and ALYX_PASSWORD or ALYX_TOKEN"
            ) from ex
        install(one, self.network)
        if self.http_data_server:
            one.alyx._par = one.alyx._par.set("HTTP_DATA_SERVER", self.http_data_server.rstrip("/"))
        if not getattr(one.alyx, "_token", None):
            raise ConnectionFailed(
                f"not logged in to {url}: set ALYX_LOGIN and ALYX_PASSWORD (or ALYX_TOKEN)"
            )
        _verify_login(one, url)
        return one


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:pass@host/x`` -> (``https://host/x``, user, pass); a URL without them is unchanged."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), unquote(user) or None, unquote(password) or None


def _default_cache_dir(alyx_url: str) -> Path:
    from one.params import get_cache_dir

    return Path(get_cache_dir()) if alyx_url == PUBLIC_ALYX_URL else Path(get_cache_dir()) / _host(alyx_url)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].replace(":", "_")


def _check_reachable(http: PolicyHttp, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ConnectionFailed(f"--alyx-url {url!r} is not an http(s) URL")
    try:
        http.request("HEAD", url)
    except ConnectionFailed as ex:
        raise ConnectionFailed(
            f"cannot reach Alyx at {url}: check the URL and the network, or use --offline with a ONE cache"
        ) from ex


def _login(http: PolicyHttp, url: str, username: str, password: str) -> str:
    """A token for ``username`` from ``/auth-token``, under the network policy (ONE's own login has no timeout).

    A 5xx is the server's failure, reported as such: only a 400/401/403 means the credentials were refused.
    """
    try:
        rep = http.request("POST", f"{url}/auth-token", data={"username": username, "password": password},
                           retry_all=True)  # asking for a token twice is harmless
    except ConnectionFailed as ex:
        raise ConnectionFailed(
            f"cannot reach Alyx at {url} to log in: check the URL and the network, or use --offline"
        ) from ex
    if rep.status_code >= 500:
        raise ConnectionFailed(f"Alyx at {url} answered {rep.status_code} (a server error, not a refused login) "
                               "on /auth-token: try again later or ask the database administrators")
    if rep.status_code in (400, 401, 403):
        raise ConnectionFailed(f"Alyx at {url} refused the credentials of user {username!r}: check "
                               "ALYX_LOGIN/ALYX_PASSWORD (or use ALYX_TOKEN)")
    try:
        rep.raise_for_status()
        return rep.json()["token"]
    except (requests.HTTPError, ValueError, KeyError) as ex:
        raise ConnectionFailed(f"Alyx at {url} gave no token on /auth-token (status {rep.status_code}): "
                               "check --alyx-url points at an Alyx database") from ex


def _verify_login(one: OneAlyx, url: str) -> None:
    """A cached token may be stale: ask once, so a 401 becomes a clear message rather than a traceback."""
    try:
        one.alyx.rest("insertions", "list", django="pk,00000000-0000-0000-0000-000000000000", no_cache=True)
    except requests.HTTPError as ex:
        status = ex.response.status_code if ex.response is not None else None
        if status in (401, 403):
            raise ConnectionFailed(
                f"Alyx at {url} answered {status} (bad or expired token): set ALYX_LOGIN/ALYX_PASSWORD or ALYX_TOKEN"
            ) from ex
        if status is not None and status >= 500:
            raise ConnectionFailed(f"Alyx at {url} answered {status} (a server error, not your credentials): "
                                   "try again later or ask the database administrators") from ex
        raise


def save_one_cache(one: One) -> None:
    """Persist what remote queries taught ONE (sessions, datasets, insertions) so ``--offline`` works later.

    Call it once, when done with ``one``: ONE's in-memory cache cannot take new records after a save.

    ONE merges into the tables already on disk, and cannot merge an insertions table into a cache that has
    none yet; in that case the disk tables are merged into memory first and the union written whole.
    """
    if one.offline:
        return
    from one.alf.cache import load_tables, merge_tables

    on_disk = load_tables(Path(one.cache_dir))
    if "insertions" in one._cache and "insertions" not in on_disk:
        merge_tables(one._cache, sessions=on_disk["sessions"], datasets=on_disk["datasets"])
        one.save_cache(clobber=True)
    else:
        one.save_cache()
