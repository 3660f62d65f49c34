"""How long to wait for a server and how often to try again: one policy for every request the tool makes.

It covers Alyx's REST calls, ONE's downloads, range reads of raw LFP and an object-store workspace's bucket.
Why a module of its own: the command line shows these defaults in ``--help`` without importing ``requests``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ibl_ephys_data.errors import InputError


@dataclass(frozen=True)
class NetworkPolicy:
    """How long to wait for a server and how often to try again (picklable: it travels to Dask workers).

    A request that stalls costs at most ``connect_timeout + read_timeout`` per try (the read timeout bounds
    each wait for bytes, not the whole transfer) and ``retries + 1`` tries, plus the backoff sleeps.
    """

    connect_timeout: float = 10
    read_timeout: float = 60
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30

    def __post_init__(self):
        for name in ("connect_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"network policy {name}={getattr(self, name)!r}: must be > 0 seconds")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise InputError(f"network policy {self}: retries, backoff and max_backoff must be >= 0")

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` timeout pair ``requests`` takes."""
        return self.connect_timeout, self.read_timeout

    @property
    def tries(self) -> int:
        return self.retries + 1

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to sleep after failed try ``attempt`` (0-based): exponential, capped, half of it jittered.

        The jitter spreads the retries of many workers hit by the same outage; a server's ``Retry-After``
        (in seconds) is honoured up to ``max_backoff``.
        """
        ceiling = min(self.max_backoff, self.backoff * 2 ** attempt)
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after:
            try:
                wait = max(wait, min(float(retry_after), self.max_backoff))
            except ValueError:  # an HTTP date: rare, and the exponential wait is a fine substitute
                pass
        return wait
