"""Per-client limits: a request rate (token buckets) and a count of open streams.

Clients are named by the id the access middleware gives them (an API key's id, or the client
address without keys). Both tables are bounded, so no stream of new names can grow them.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000


class TokenBuckets:
    """One bucket of ``burst`` tokens per client, refilled at ``per_minute / 60`` tokens a second;
    each request takes one token.

    The table keeps the ``max_clients`` most recently seen clients. The one dropped to make room
    is the least recently seen, whose bucket has had the longest to refill: usually full, so
    dropping it (it comes back full) forgives nothing.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 if it had one, else the seconds until it will."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))


class StreamCounts:
    """Open streams per client, with a cap (0: none). Only clients with a stream open are kept,
    so the table never holds more entries than there are open connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, client: str) -> bool:
        """Count a new stream of ``client``; False (and not counted) if it holds its limit."""
        count = self._open.get(client, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[client] = count + 1
        return True

    def close(self, client: str) -> None:
        count = self._open.pop(client, 0) - 1
        if count > 0:
            self._open[client] = count

    def __getitem__(self, client: str) -> int:
        return self._open.get(client, 0)
