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
from dataclasses import dataclass, field
from pathlib import Path

import requests
from one.api import One, OneAlyx

from ibl_ephys_data.errors import ConnectionFailed, check_option
from ibl_ephys_data.workspace.schema import RELEASES

_logger = logging.getLogger(__name__)

PUBLIC_ALYX_URL = "https://openalyx.internationalbrainlab.org"


def release_tags(release: str) -> tuple[str, ...]:
    """Alyx dataset tags whose union makes a release (DESIGN §2)."""
    return RELEASES[check_option("release", release, sorted(RELEASES))]


@dataclass(frozen=True)
class Connection:
    """How to reach ONE. Build it from CLI options; ``open()`` gives the ONE instance."""

    alyx_url: str = PUBLIC_ALYX_URL
    cache_dir: Path | None = None
    offline: bool = False
    http_data_server: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

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
        cache_dir = self.cache_dir or _default_cache_dir(self.alyx_url)
        if not (Path(cache_dir) / "datasets.pqt").exists():
            raise ConnectionFailed(
                f"no ONE cache tables in {cache_dir}: run once without --offline (or pass --one-cache DIR)"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # OneAlyx in local mode: the same vocabulary as remote (pid2eid ...) from the cache tables only
            return OneAlyx(base_url=self.alyx_url, cache_dir=str(cache_dir), mode="local", silent=True)

    def _open_remote(self) -> OneAlyx:
        username = self.username or os.environ.get("ALYX_LOGIN")
        password = self.password or os.environ.get("ALYX_PASSWORD")
        token = os.environ.get("ALYX_TOKEN")
        kwargs = {"base_url": self.alyx_url, "silent": True, "mode": "remote"}
        if self.cache_dir:
            kwargs["cache_dir"] = str(self.cache_dir)
        if username:
            kwargs["username"] = username
        if password:
            kwargs["password"] = password
        elif token:
            kwargs["token"] = token
        try:
            _check_reachable(self.alyx_url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                one = OneAlyx(**kwargs)
        except requests.HTTPError as ex:
            raise ConnectionFailed(
                f"Alyx at {self.alyx_url} refused the credentials: set ALYX_LOGIN/ALYX_PASSWORD "
                "(or ALYX_TOKEN) or run `ONE.setup` for that URL"
            ) from ex
        except ValueError as ex:
            raise ConnectionFailed(
                f"no Alyx username for {self.alyx_url}: set ALYX_LOGIN and ALYX_PASSWORD or ALYX_TOKEN"
            ) from ex
        if self.http_data_server:
            one.alyx._par = one.alyx._par.set("HTTP_DATA_SERVER", self.http_data_server.rstrip("/"))
        if not getattr(one.alyx, "_token", None):
            raise ConnectionFailed(
                f"not logged in to {self.alyx_url}: set ALYX_LOGIN and ALYX_PASSWORD (or ALYX_TOKEN)"
            )
        _verify_login(one, self.alyx_url)
        return one


def _default_cache_dir(alyx_url: str) -> Path:
    from one.params import get_cache_dir

    return Path(get_cache_dir()) if alyx_url == PUBLIC_ALYX_URL else Path(get_cache_dir()) / _host(alyx_url)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].replace(":", "_")


def _check_reachable(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ConnectionFailed(f"--alyx-url {url!r} is not an http(s) URL")
    try:
        requests.head(url, timeout=10)
    except requests.RequestException as ex:
        raise ConnectionFailed(
            f"cannot reach Alyx at {url}: check the URL and the network, or use --offline with a ONE cache"
        ) from ex


def _verify_login(one: OneAlyx, url: str) -> None:
    """A cached token may be stale: ask once, so a 401 becomes a clear message rather than a traceback."""
    try:
        one.alyx.rest("insertions", "list", django="pk,00000000-0000-0000-0000-000000000000", no_cache=True)
    except requests.HTTPError as ex:
        if ex.response is not None and ex.response.status_code in (401, 403):
            raise ConnectionFailed(
                f"Alyx at {url} answered 401 (bad or expired token): set ALYX_LOGIN/ALYX_PASSWORD or ALYX_TOKEN"
            ) from ex
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
