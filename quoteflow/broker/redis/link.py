"""The connection to Redis that the parts of a Redis broker share, and its health."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from quoteflow.broker.redis.ids import log

__all__ = ["RedisLink"]


class RedisLink:
    """The connection to Redis that a broker's parts share, and its health.

    Parameters
    ----------
    url, stream, block_ms, backoff_initial, backoff_max
        As for :class:`RedisBroker`.
    position : callable
        The newest id this process has (for the "reachable again" log line).
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        block_ms: int,
        backoff_initial: float,
        backoff_max: float,
        position: Callable[[], str | None],
    ) -> None:
        self.url = url
        self.stream = stream
        self.block_ms = block_ms
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._position = position
        #: The ``redis.asyncio`` client, once :meth:`connect` ran.
        self.redis: Any = None
        self.healthy = False
        self.last_error: str | None = None
        self.outages = 0
        #: Set on shutdown: redis-py may turn a cancel into a ConnectionError (it
        #: disconnects mid-command); the loops check this instead of retrying.
        self.stopping = False

    @property
    def catalog_key(self) -> str:
        """Redis key of the symbol catalog (``source.describe()`` of the producer)."""
        return f"{self.stream}:symbols"

    @property
    def control_key(self) -> str:
        """Redis list of parameter changes forwarded to the producer."""
        return f"{self.stream}:control"

    def connect(self) -> None:
        """Create the client (it connects on its first command)."""
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            # a silent dead connection must fail, not block the reader for ever
            socket_timeout=self.block_ms / 1000 + 5.0,
        )

    async def disconnect(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for the cancelled ``tasks`` (cutting the connections if they linger), then
        close the client."""
        if tasks:
            # redis-py can sit in a blocking XREAD for a while after a cancel (seen here
            # after a Redis restart): give the tasks a moment, then cut the connections.
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            if self.redis is not None and pending:
                await self.redis.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=2.0)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None

    def set_healthy(self, ok: bool, exc: BaseException | None = None) -> None:
        """Record whether Redis answered; log once per outage and once on recovery."""
        if ok and not self.healthy:
            if self.outages:
                log.warning(
                    "redis %s reachable again; resuming after %s", self.url, self._position()
                )
            self.healthy = True
            self.last_error = None
        elif not ok:
            msg = f"{type(exc).__name__}: {exc}" if exc else "unreachable"
            if self.healthy or self.last_error is None:
                self.outages += 1
                log.error(
                    "redis %s unreachable (%s); clients stay connected, retrying", self.url, msg
                )
            self.healthy = False
            self.last_error = msg

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0, 1, 2 ...)."""
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
        cap = min(self.backoff_max, self.backoff_initial * 2**attempt)
        return random.uniform(cap / 2, cap)
