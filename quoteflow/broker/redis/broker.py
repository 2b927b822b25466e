"""The Redis broker: a producer and a consumer composed around one connection."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quoteflow.broker.base import Broker, BrokerStats, EventLike, Framing, Subscription
from quoteflow.broker.fanout import LocalFanout
from quoteflow.broker.redis.catalog import RemoteCatalog, StreamSource
from quoteflow.broker.redis.consumer import RedisConsumer
from quoteflow.broker.redis.ids import CATCH_UP_TIMEOUT, DEFAULT_STREAM, format_id, parse_stream_id
from quoteflow.broker.redis.link import RedisLink
from quoteflow.broker.redis.producer import RedisProducer
from quoteflow.broker.replay import ReplayLog
from quoteflow.broker.settings import BufferSettings, RedisSettings
from quoteflow.errors import ConfigError
from quoteflow.sources import Catalog

__all__ = ["RedisBroker"]


class RedisBroker(Broker):
    """Broker on a Redis stream, composed of a producer and a consumer; see the module
    docstring.

    ``produce`` adds a :class:`RedisProducer` (``publish`` writes to the stream),
    ``consume`` a :class:`RedisConsumer` (the stream is read into this instance's
    :class:`~quoteflow.broker.fanout.LocalFanout`, which serves ``subscribe``); both
    share one :class:`RedisLink`. A serving-only instance also has a
    :class:`RemoteCatalog` (:meth:`remote_catalog`).

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    stream : str
        Stream key.
    produce : bool
        Publish events to the stream (exactly one producer per stream).
    consume : bool
        Read the stream and fan out to local subscribers (serving instances).
    maxlen : int
        Approximate cap of the stream (``XADD ... MAXLEN ~ maxlen``).
    outbox_size : int
        Producer: events kept while Redis is unreachable; the oldest are dropped (and
        counted) beyond it.
    block_ms : int
        ``XREAD BLOCK`` timeout.
    buffer_size, buffer_age, max_backlog_bytes, replay_memory_bytes, clock
        As for :class:`~quoteflow.broker.memory.MemoryBroker` (the local replay buffer
        and fan-out).
    backoff_initial, backoff_max : float
        Reconnection backoff bounds in seconds (exponential with jitter). The cap is
        short (2 s) because one reconnect attempt per instance every 2 s costs Redis
        nothing, while every extra second is a second of stalled feed after recovery.
    catch_up_timeout : float
        Seconds a resume whose id is newer than this instance has read (but held by
        Redis) waits for the reader before the stream is ended for the client to retry;
        see the module docstring.

    Raises
    ------
    ConfigError
        Not a Redis URL, neither producing nor consuming, or a bad ``catch_up_timeout``.
    ValueError
        A buffer bound is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        produce: bool = False,
        consume: bool = True,
        maxlen: int = RedisSettings.maxlen,
        outbox_size: int = RedisSettings.outbox_size,
        block_ms: int = 1000,
        buffer_size: int = BufferSettings.buffer_size,
        buffer_age: float = BufferSettings.buffer_age,
        max_backlog_bytes: int = BufferSettings.max_backlog_bytes,
        replay_memory_bytes: int = BufferSettings.replay_memory_bytes,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        catch_up_timeout: float = CATCH_UP_TIMEOUT,
    ) -> None:
        self.stats = BrokerStats()
        # Validated even when not consuming: the same options mean the same everywhere.
        fanout = LocalFanout(
            self.stats,
            format_id,
            buffer_size=buffer_size,
            buffer_age=buffer_age,
            max_backlog_bytes=max_backlog_bytes,
            replay_memory_bytes=replay_memory_bytes,
            clock=clock,
        )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--broker must be a redis:// URL, got {url!r}")
        if not (produce or consume):
            raise ConfigError("a Redis broker must produce, consume or both")
        if not (0 < catch_up_timeout < math.inf):
            raise ConfigError(
                f"catch-up timeout must be a positive number of seconds, got {catch_up_timeout!r}"
            )
        self.url = url
        self.stream = stream
        self.produce = produce
        self.consume = consume
        self.link = RedisLink(
            url,
            stream,
            block_ms=block_ms,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            position=lambda: self.last_id,
        )
        self.producer: RedisProducer | None = None
        if produce:
            self.producer = RedisProducer(
                self.link,
                self.stats,
                maxlen=maxlen,
                outbox_size=outbox_size,
                reports_health=not consume,
            )
        self.remote: RemoteCatalog | None = None if produce else RemoteCatalog(self.link)
        self.consumer: RedisConsumer | None = None
        if consume:
            self.consumer = RedisConsumer(
                self.link,
                fanout,
                catalog=self.remote,
                catch_up_timeout=float(catch_up_timeout),
            )
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def produces(self) -> bool:
        """True for the producer (``--generate``, ``quoteflow generate``)."""
        return self.producer is not None

    def attach_source(self, source: Catalog) -> None:
        """Producer: publish ``source``'s catalog for the serving instances (which have no
        source) and apply the parameter changes they forward."""
        if self.producer is not None:
            self.producer.catalog_provider = source.describe
            self.producer.update_handler = source.update

    def remote_catalog(self) -> Catalog | None:
        """Serving only: the producer's catalog as read from Redis (:class:`StreamSource`)."""
        return None if self.producer is not None else StreamSource(self)

    async def start(self) -> None:
        """Connect, prime the local buffer from the stream, start reader/writer tasks.

        Does not fail when Redis is down: the tasks keep retrying (``healthy`` says so).
        """
        link = self.link
        link.connect()
        try:
            if self.consumer is not None:
                await self.consumer.prime()
            else:
                await link.redis.ping()
            link.set_healthy(True)
        except Exception as exc:  # any connection failure: the tasks retry
            link.set_healthy(False, exc)
        if self.consumer is not None:
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="redis-reader"))
        if self.producer is not None:
            self._tasks += self.producer.start()

    async def aclose(self) -> None:
        """Stop the tasks (flushing what the producer still holds, briefly) and disconnect."""
        if self.producer is not None:
            await self.producer.flush(2.0)
        self.link.stopping = True
        extra = self.consumer.background_tasks() if self.consumer is not None else []
        for task in (*self._tasks, *extra):
            task.cancel()
        tasks, self._tasks = self._tasks, []
        await self.link.disconnect(tasks)
        self.close()

    def close(self) -> None:
        """Close every subscription, held resumes included (idempotent)."""
        if self.producer is not None:
            self.producer.closed = True
        if self.consumer is not None:
            self.consumer.close()

    # -- producer ----------------------------------------------------------------------

    def publish(self, batch: Sequence[EventLike]) -> None:
        """Queue ``batch`` for ``XADD`` (producer only; ids come from Redis)."""
        if self.producer is None:
            raise RuntimeError("this Redis broker does not produce (start it with --generate)")
        self.producer.publish(batch)

    def _producer(self) -> RedisProducer:
        if self.producer is None:
            raise RuntimeError("this Redis broker does not produce (start it with --generate)")
        return self.producer

    @property
    def catalog_provider(self) -> Callable[[], dict[str, dict[str, Any]]] | None:
        """Producer: returns ``source.describe()`` (see :meth:`attach_source`)."""
        return self._producer().catalog_provider

    @catalog_provider.setter
    def catalog_provider(self, value: Callable[[], dict[str, dict[str, Any]]] | None) -> None:
        self._producer().catalog_provider = value

    @property
    def update_handler(self) -> Callable[[str, dict[str, Any]], dict[str, Any]] | None:
        """Producer: applies a forwarded parameter change (see :meth:`attach_source`)."""
        return self._producer().update_handler

    @update_handler.setter
    def update_handler(self, value: Callable[[str, dict[str, Any]], dict[str, Any]] | None) -> None:
        self._producer().update_handler = value

    @property
    def sent(self) -> int:
        """Producer: events written to Redis."""
        return self.producer.sent if self.producer is not None else 0

    @property
    def outbox_size(self) -> int:
        """Producer: events not yet written to Redis."""
        return self.producer.outbox_size if self.producer is not None else 0

    @property
    def catalog_key(self) -> str:
        """Redis key of the symbol catalog (``source.describe()`` of the producer)."""
        return self.link.catalog_key

    @property
    def control_key(self) -> str:
        """Redis list of parameter changes forwarded to the producer."""
        return self.link.control_key

    # -- serving -----------------------------------------------------------------------

    def _consumer(self) -> RedisConsumer:
        if self.consumer is None:
            raise RuntimeError("this Redis broker does not consume: it serves no subscribers")
        return self.consumer

    def parse_id(self, s: str) -> int:
        return parse_stream_id(s)

    def id_before(self, s: str) -> str:
        return format_id(max(parse_stream_id(s) - 1, 0))

    def subscribe(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        last_id: str | None,
        framing: Framing = Framing.SSE,
    ) -> Subscription:
        """As :meth:`MemoryBroker.subscribe`; a resume ahead of this instance is held.

        When ``last_id`` is newer than the newest event this instance has read, the
        returned subscription gets nothing but heartbeats until the reader has read past
        it (then the replay and live data, as usual), ``event: reset`` if Redis does not
        hold an id that new either, or it is closed with reason ``"catch_up_timeout"``
        after :attr:`catch_up_timeout` seconds; see the module docstring.

        Raises
        ------
        EventIdError
            ``last_id`` is malformed.
        RuntimeError
            The broker is closed, or does not consume.
        """
        return self._consumer().subscribe(symbols, events, last_id, framing)

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` from fan-out (idempotent); does not close it."""
        if self.consumer is not None:
            self.consumer.fanout.unsubscribe(sub)

    @property
    def subscriber_count(self) -> int:
        """Number of live subscriptions, held resumes included."""
        return self.consumer.subscriber_count if self.consumer is not None else 0

    @property
    def last_id(self) -> str | None:
        """Newest stream id read (a producer that does not read: newest written)."""
        if self.consumer is not None:
            return self.consumer.last_id
        return self.producer.last_written if self.producer is not None else None

    @property
    def catch_up_timeout(self) -> float:
        """Seconds a resume ahead of this instance waits (see the module docstring)."""
        return self._consumer().catch_up_timeout

    @property
    def duplicates_skipped(self) -> int:
        """Entries of a re-sent pipeline dropped by the reader."""
        return self.consumer.duplicates_skipped if self.consumer is not None else 0

    @property
    def _log(self) -> ReplayLog:
        return self._consumer().fanout.log

    @property
    def _redis(self) -> Any:
        return self.link.redis

    def ticked_symbols(self) -> list[str]:
        """Symbols seen ticking in the stream (without decoding their payloads)."""
        return self.consumer.ticked_symbols() if self.consumer is not None else []

    def snapshot(self, symbols: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
        """Latest tick payload (with ``seq``) per symbol seen ticking in the stream."""
        return self.consumer.snapshot(symbols) if self.consumer is not None else {}

    @property
    def catalog(self) -> dict[str, dict[str, Any]] | None:
        """Serving only: the latest catalog read from Redis (None until the first read)."""
        return self.remote.catalog if self.remote is not None else None

    async def forward_update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Serving only: have the producer apply a parameter change
        (:meth:`RemoteCatalog.forward_update`)."""
        if self.remote is None:
            raise ConfigError("this instance produces: its source takes changes directly")
        return await self.remote.forward_update(symbol, params)

    # -- backend link (BackendLink) ----------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while Redis answers."""
        return self.link.healthy

    @property
    def outages(self) -> int:
        """Times Redis was lost since start."""
        return self.link.outages

    @property
    def last_error(self) -> str | None:
        """The latest connection error, None while healthy."""
        return self.link.last_error

    def health(self) -> dict[str, Any]:
        """State for ``/healthz`` and ``/metrics``."""
        consumer = self.consumer
        return {
            "broker": "redis",
            "redis": "ok" if self.link.healthy else "down",
            "last_error": self.link.last_error,
            "outages": self.link.outages,
            "last_id": self.last_id,
            "outbox": self.outbox_size,
            "catching_up": consumer.held_count if consumer is not None else 0,
            "catch_up_waits": consumer.catch_up_waits if consumer is not None else 0,
            "catch_up_timeouts": consumer.catch_up_timeouts if consumer is not None else 0,
            "gaps": consumer.gaps if consumer is not None else 0,
        }
