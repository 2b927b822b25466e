"""Redis Streams broker: one feed and one id space shared by many server instances.

Scale-out (DESIGN.md, "Scale-out"): exactly one process *produces* (``quoteflow generate
--broker URL`` or ``quoteflow serve --broker URL --generate``): it ``XADD``\\ s every event to
one capped stream (``MAXLEN ~``). Every serving instance *consumes*: a background task
reads the stream with blocking ``XREAD`` and fans the events out locally through the
same :class:`~quoteflow.broker.fanout.LocalFanout` as
:class:`~quoteflow.broker.memory.MemoryBroker` (mercure's clustered transport around its
local one).

:class:`RedisBroker` is composed of parts, not switched by flags: a
:class:`RedisProducer` (outbox, writer and control tasks, catalog) when it produces, a
:class:`RedisConsumer` (reader into the local fan-out, held resumes, snapshot) when it
consumes, a :class:`RemoteCatalog` when it only serves, and one :class:`RedisLink` (the
connection and its health) that they share.

The event id on the wire is the Redis stream id (``"1764212345678-0"``), so a client can
resume with ``Last-Event-ID`` on any instance. Each instance keeps a local replay buffer
(primed from the stream at start with ``XREVRANGE``), so ``subscribe`` stays synchronous
and gap-free exactly as in the memory broker.

Instances read the stream independently, so the one a client resumes on may not have read
as far as the one it left (it was paused, busy, or reconnecting to Redis). An id newer than
this instance's newest is therefore not "unknown": the subscription is *held* (heartbeats
only, not in the fan-out) until the reader has ingested that id, then replayed from the
local buffer and made live, so nothing at or below the client's id is ever sent. Meanwhile
one ``XREVRANGE + - COUNT 1`` asks Redis for its newest id: when even Redis holds nothing
that new, the id was never issued by this stream (made up, another deployment's, or a
stream lost by a Redis restart without persistence) and the client gets ``event: reset``
at once, as on a single server. When the instance has not caught up within
``catch_up_timeout`` (Redis unreachable, say) the stream ends cleanly and the client comes
back with the same id: neither a false reset nor a duplicate.

Entries carry the producer's run id and a counter (``p``, ``n``). A repeated counter is a
re-sent pipeline (dropped); a jump is a hole, events this instance will never read (a
Redis restart without persistence, an overflowing producer outbox): a replay across it
is answered with ``event: reset`` (``reason: gap``) instead of being silently incomplete.

Failures: when Redis is down or restarting the reader and the writer retry with
exponential backoff, log once per outage, report ``healthy = False`` (``/healthz``,
``/metrics``), keep every client connected (heartbeats continue), and resume from the
last id when Redis is back. The producer keeps unsent events in a bounded outbox and
sends them, in order, once Redis answers again.

Redis command semantics used: XADD, XREAD BLOCK, XREVRANGE (https://redis.io/docs/latest/
develop/data-types/streams/). Stream ids are ``<milliseconds>-<sequence>``, strictly
increasing within a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quoteflow.broker.base import (
    Broker,
    BrokerStats,
    CloseReason,
    EventIdError,
    EventLike,
    Framing,
    Subscription,
)
from quoteflow.broker.fanout import LocalFanout
from quoteflow.broker.replay import ReplayLog
from quoteflow.broker.settings import BufferSettings, RedisSettings
from quoteflow.errors import ConfigError
from quoteflow.sources import Catalog
from quoteflow.wire.payload import encode_payload, pre_encoded, with_seq
from quoteflow.wire.sse import encode_event

__all__ = [
    "RedisBroker",
    "RedisConsumer",
    "RedisLink",
    "RedisProducer",
    "RemoteCatalog",
    "StreamSource",
    "parse_stream_id",
]

#: The stream key every instance uses unless told otherwise.
DEFAULT_STREAM = "quoteflow:events"
#: Seconds between refreshes of the symbol catalog (producer writes, consumers read):
#: ``GET /symbols`` on a serving instance shows parameters at most this old.
CATALOG_PERIOD = 2.0
#: Seconds a serving instance waits for the producer to apply a forwarded parameter change.
UPDATE_TIMEOUT = 5.0
#: Default seconds a resume with an id this instance has not read yet waits for its reader
#: (``--catch-up-timeout``).
CATCH_UP_TIMEOUT = RedisSettings.catch_up_timeout

log = logging.getLogger("quoteflow.broker.redis")

_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
# Internal sort key of a stream id: the sequence part stays far below 2**32 in practice
# (it counts entries added within one millisecond).
_SEQ_BITS = 32


def parse_stream_id(s: str) -> int:
    """Sort key of a Redis stream id ``"<ms>-<seq>"``.

    Raises
    ------
    EventIdError
        ``s`` is not of that form.
    """
    m = _ID_RE.fullmatch(s)
    if m is None or int(m.group(2)) >= 1 << _SEQ_BITS:
        shown = s if len(s) <= 40 else s[:40] + "..."
        raise EventIdError(
            f"malformed event id {shown!r}: ids on this server are Redis stream ids like "
            "'1764212345678-0'; reconnect without Last-Event-ID to start fresh"
        )
    return (int(m.group(1)) << _SEQ_BITS) | int(m.group(2))


def _format_id(key: int) -> str:
    """The stream id of a sort key (the inverse of :func:`parse_stream_id`)."""
    return f"{key >> _SEQ_BITS}-{key & ((1 << _SEQ_BITS) - 1)}"


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


class RedisProducer:
    """The producing part: events to the stream, the catalog, forwarded changes.

    ``publish`` encodes each payload once with its ``seq`` (the producer's event
    counter) into a bounded outbox; the writer task ``XADD``\\ s the outbox in pipelines
    (with the catalog, every :data:`CATALOG_PERIOD`); the control task applies the
    parameter changes serving instances forward. No fan-out: the events reach
    subscribers (this process's too) through a :class:`RedisConsumer`.

    Parameters
    ----------
    link : RedisLink
        The shared connection.
    stats : BrokerStats
        ``published`` and ``dropped`` are counted there.
    maxlen, outbox_size
        As for :class:`RedisBroker`.
    reports_health : bool
        The writer reports the link's health (when no reader of this process does).
    """

    def __init__(
        self,
        link: RedisLink,
        stats: BrokerStats,
        *,
        maxlen: int,
        outbox_size: int,
        reports_health: bool,
    ) -> None:
        self.link = link
        self.stats = stats
        self.maxlen = maxlen
        self.reports_health = reports_health
        self._outbox: deque[tuple[str, str, bytes, int]] = deque(maxlen=outbox_size)
        self._outbox_event = asyncio.Event()
        # Producer run id and per-event counter, stored with every entry: a pipeline
        # whose reply was lost (Redis killed or the link cut after XADD ran) is re-sent,
        # and consumers drop what they already have by (producer, n): exactly once.
        self.producer_id = uuid.uuid4().hex[:16]
        self._n = 0
        #: Returns ``source.describe()``; written to ``<stream>:symbols`` so that serving
        #: instances (which have no local source) know the symbols and models.
        self.catalog_provider: Callable[[], dict[str, dict[str, Any]]] | None = None
        #: Applies a parameter change forwarded by a serving instance.
        self.update_handler: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self._catalog_at = -math.inf
        #: Stream id of the newest entry written.
        self.last_written: str | None = None
        self.dropped_unsent = 0
        self.sent = 0
        self.closed = False

    @property
    def outbox_size(self) -> int:
        """Events not yet written to Redis."""
        return len(self._outbox)

    def start(self) -> list[asyncio.Task[None]]:
        """Start the writer and control tasks (on the running loop)."""
        return [
            asyncio.create_task(self._writer(), name="redis-writer"),
            asyncio.create_task(self._control(), name="redis-control"),
        ]

    async def flush(self, timeout: float) -> None:
        """Give the writer up to ``timeout`` seconds to send the outbox (if Redis is up)."""
        if self._outbox and self.link.healthy:
            self._outbox_event.set()
            deadline = time.monotonic() + timeout
            while self._outbox and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    def publish(self, batch: Sequence[EventLike]) -> None:
        """Queue ``batch`` for ``XADD`` (ids come from Redis)."""
        if not batch or self.closed:
            return
        published = self.stats.published
        outbox = self._outbox
        encoded = pre_encoded(batch)
        n_encoded = len(encoded)
        for i, ev in enumerate(batch):
            data = ev.data
            # The payload is encoded once, here, with its "seq" (the producer's event
            # counter): consumers frame the text as it comes, without decoding it.
            text: str | None = None
            if i < n_encoded and encoded[i][0] is data and "seq" not in data and data:
                text = encoded[i][1]
            n = self._n + 1
            try:
                if text is None:
                    payload = dict(data)
                    payload["seq"] = n
                    text = encode_payload(payload)
                else:
                    text = with_seq(text, n)
            except (TypeError, ValueError) as exc:
                # As on the memory broker: one bad event must not stop the feed.
                self.stats.dropped += 1
                log.warning("dropping unencodable %s event for %r: %s", ev.event, ev.symbol, exc)
                continue
            if len(outbox) == outbox.maxlen:
                self.dropped_unsent += 1
            self._n = n
            outbox.append((ev.event, ev.symbol, text.encode(), n))
            published[ev.event] = published.get(ev.event, 0) + 1
        self._outbox_event.set()

    def _catalog_json(self, now: float) -> str | None:
        """The producer's catalog as JSON when a refresh is due, else None."""
        if self.catalog_provider is None or now - self._catalog_at < CATALOG_PERIOD:
            return None
        try:
            return json.dumps(self.catalog_provider(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            log.warning("cannot encode the symbol catalog: %s", exc)
            return None

    async def _writer(self) -> None:
        link = self.link
        attempt = 0
        while True:
            await self._outbox_event.wait()
            self._outbox_event.clear()
            while self._outbox:
                n = min(len(self._outbox), 1000)
                items = [self._outbox[i] for i in range(n)]
                now = time.monotonic()
                catalog = self._catalog_json(now)
                try:
                    async with link.redis.pipeline(transaction=False) as pipe:
                        if catalog is not None:
                            # Written before the events: a serving instance that sees a new
                            # symbol in the stream can already describe it.
                            pipe.set(link.catalog_key, catalog)
                        for event, symbol, data, seq in items:
                            pipe.xadd(
                                link.stream,
                                {
                                    "e": event,
                                    "s": symbol,
                                    "d": data,
                                    "p": self.producer_id,
                                    "n": seq,
                                },
                                maxlen=self.maxlen,
                                approximate=True,
                            )
                        results = await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any connection failure: retry
                    if link.stopping:
                        return
                    if self.reports_health:
                        link.set_healthy(False, exc)
                    await asyncio.sleep(link.backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                if results:
                    last = results[-1]
                    self.last_written = last.decode() if isinstance(last, bytes) else str(last)
                if catalog is not None:
                    self._catalog_at = now
                if self.reports_health:
                    link.set_healthy(True)
                for _ in range(n):
                    self._outbox.popleft()
                self.sent += n

    async def _control(self) -> None:
        """Apply parameter changes forwarded by serving instances.

        A serving instance has no market of its own, so ``PUT /symbols/{symbol}`` there
        pushes ``{"reply": key, "symbol": ..., "params": {...}}`` onto a Redis list; this
        task applies it to the real source and pushes the answer onto ``reply`` (a
        one-shot list with a short expiry), ``{"params": ...}`` or ``{"error": ...}``.
        """
        link = self.link
        attempt = 0
        while True:
            try:
                item = await link.redis.blpop([link.control_key], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis down: the writer reports it; just retry
                if link.stopping:
                    return
                await asyncio.sleep(link.backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if item is None:
                continue
            reply_to, answer = self._answer_control(item[1])
            if reply_to is None:
                continue
            with contextlib.suppress(Exception):  # the requester times out on its own
                async with link.redis.pipeline(transaction=False) as pipe:
                    pipe.rpush(reply_to, answer)
                    pipe.expire(reply_to, 30)
                    await pipe.execute()

    def _answer_control(self, raw: bytes) -> tuple[str | None, str]:
        """Apply one forwarded change; return ``(reply key, JSON answer)``.

        Never raises: a request that cannot be decoded is logged and dropped (no reply
        key, the requester times out), a refused change is answered with the refusal's
        message (the requester answers 400 with it) and logged on one line, and an
        unexpected failure is answered as an internal error and logged with its traceback.
        Either way the control task lives on.
        """
        try:
            request = json.loads(raw)
            reply = str(request["reply"])
            symbol, params = str(request["symbol"]), dict(request["params"])
        except (ValueError, KeyError, TypeError, RecursionError):
            log.warning("ignoring malformed parameter change %r", raw[:200])
            return None, ""
        answer: dict[str, Any]
        if self.update_handler is None:
            answer = {"error": "the producer does not accept parameter changes"}
        else:
            try:
                answer = {"params": self.update_handler(symbol, params)}
                self._catalog_at = -math.inf  # publish the new parameters soon
                log.info("applied parameter change for %s: %s", symbol, answer["params"])
            except (ConfigError, ValueError, TypeError) as exc:
                log.warning("refused parameter change for %s: %s", symbol, exc)
                answer = {"error": str(exc)}
            except Exception:
                log.exception("parameter change for %s failed", symbol)
                answer = {"error": "internal error applying the change; see the producer log"}
        try:
            return reply, json.dumps(answer, allow_nan=False)
        except (TypeError, ValueError) as exc:
            log.warning("cannot encode the answer to a parameter change for %s: %s", symbol, exc)
            return reply, json.dumps({"error": f"the producer cannot encode its answer: {exc}"})


class RemoteCatalog:
    """A serving-only instance's copy of the producer's catalog, and the way back to it.

    The producer writes its catalog to ``<stream>:symbols``; this part reads it (every
    :data:`CATALOG_PERIOD`, and before ingesting a symbol it does not describe yet) and
    forwards ``PUT /symbols`` changes to the producer's control task.

    Parameters
    ----------
    link : RedisLink
        The shared connection.
    """

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        #: The latest catalog read from Redis (None until the first read).
        self.catalog: dict[str, dict[str, Any]] | None = None
        self._catalog_at = -math.inf
        # Symbols (as read from the stream) the catalog describes, and those a fresh
        # read still did not describe (not looked up again until the next refresh).
        self._described: set[bytes] = set()
        self._undescribed: set[bytes] = set()

    def due(self) -> bool:
        """True when a periodic refresh is due (soon, until a catalog was seen)."""
        period = CATALOG_PERIOD if self.catalog is not None else 0.2
        return time.monotonic() - self._catalog_at >= period

    async def read(self) -> None:
        """Read the catalog from Redis."""
        link = self.link
        raw = await link.redis.get(link.catalog_key)
        self._catalog_at = time.monotonic()
        if raw is None:
            return
        try:
            catalog = json.loads(raw)
        except ValueError:
            log.warning("ignoring malformed symbol catalog at %s", link.catalog_key)
            return
        if isinstance(catalog, dict):
            self.catalog = catalog
            self._described = {str(name).encode() for name in catalog}
            self._undescribed.clear()

    async def describe_new_symbols(self, rows: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Read the catalog again before ingesting a symbol it lacks.

        The producer writes its catalog before the events of the same pipeline, so a fresh
        read describes every symbol of ``rows``: ``/symbols`` never shows a symbol that
        ticks here without its model and parameters (defect: a serving instance answered
        ``{"model": null, "params": {}}`` for a symbol seen in the stream before its first
        catalog read). A symbol still missing after the read is not looked up again
        until the next periodic refresh.
        """
        known, missing = self._described, self._undescribed
        fresh = {
            name
            for _, fields in rows
            if (name := fields.get(b"s")) is not None and name not in known and name not in missing
        }
        if not fresh:
            return
        with contextlib.suppress(Exception):  # the next XREAD reports an outage
            await self.read()
        self._undescribed |= fresh - self._described

    async def forward_update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Have the producer apply a parameter change (see :meth:`RedisProducer._control`).

        Returns
        -------
        dict
            The new parameters.

        Raises
        ------
        ConfigError
            The producer refused the change (bad parameter or value).
        ConnectionError
            Redis is unreachable or no producer answered within :data:`UPDATE_TIMEOUT`.
        """
        link = self.link
        if link.redis is None:
            raise ConnectionError("the Redis broker is not started")
        reply = f"{link.stream}:reply:{uuid.uuid4().hex}"
        request = {"reply": reply, "symbol": symbol, "params": dict(params)}
        try:
            await link.redis.rpush(link.control_key, json.dumps(request, allow_nan=False))
            item = await link.redis.blpop([reply], timeout=UPDATE_TIMEOUT)
        except Exception as exc:  # redis-py's connection errors are not OSErrors
            raise ConnectionError(f"cannot reach Redis to forward the change: {exc}") from None
        if item is None:
            # Nobody consumed it: take the request back so it is not applied much later.
            with contextlib.suppress(Exception):
                await link.redis.lrem(link.control_key, 1, json.dumps(request, allow_nan=False))
            raise ConnectionError(
                f"no producer answered within {UPDATE_TIMEOUT:g} s "
                "(is `quoteflow generate` running on this Redis?)"
            )
        answer = json.loads(item[1])
        if "error" in answer:
            raise ConfigError(str(answer["error"]))
        new: dict[str, Any] = answer["params"]
        # Read-your-writes: this instance shows the new parameters at once (the producer
        # publishes its catalog again soon; the next read confirms them).
        if self.catalog is not None and symbol in self.catalog:
            self.catalog[symbol] = {**self.catalog[symbol], "params": dict(new)}
        self._catalog_at = -math.inf
        return new


class RedisConsumer:
    """The consuming part: the stream read into a :class:`LocalFanout`.

    The reader task ``XREAD``\\ s the stream, frames every entry for SSE with its stream id
    (the payload text as the producer wrote it, ``seq`` included) and appends the batch to
    the fan-out, which stores it for replay and sends it to the local subscribers. It
    also keeps what only a reader of a shared stream needs: the producer counters that
    detect re-sent pipelines and holes, and resumes held until the reader has caught up
    with the client's id (see the module docstring).

    Parameters
    ----------
    link : RedisLink
        The shared connection.
    fanout : LocalFanout
        Replay log, groups and subscriptions of this instance.
    catalog : RemoteCatalog or None
        Read before new symbols are ingested (a serving-only instance); None when this
        process produces (its catalog is its own source).
    catch_up_timeout : float
        As for :class:`RedisBroker`.
    """

    def __init__(
        self,
        link: RedisLink,
        fanout: LocalFanout,
        *,
        catalog: RemoteCatalog | None,
        catch_up_timeout: float,
    ) -> None:
        self.link = link
        self.fanout = fanout
        self.catalog = catalog
        self.catch_up_timeout = catch_up_timeout
        self._producer_seen: dict[str, int] = {}
        self.duplicates_skipped = 0
        # Key of the first entry read after the latest gap in the producer's counter
        # (events this instance will never get): no replay may cross it.
        self._gap_before = -1
        #: Gaps seen in the producer's counter (see _note_gap).
        self.gaps = 0
        # The JSON text of the latest tick per symbol (see snapshot()).
        self._latest_text: dict[str, str] = {}
        #: Newest stream id ingested.
        self.last_id: str | None = None
        self._read_from = "$"
        self._primed = False
        # Resumes ahead of what this instance has read: subscription -> (id key, future
        # set when it is released). They are not in the fan-out until released.
        self._held: dict[Subscription, tuple[int, asyncio.Future[None]]] = {}
        self._catch_up_tasks: set[asyncio.Task[None]] = set()
        # Callers waiting for the next "newest id in Redis" query (see _stream_top).
        self._top_pending: list[asyncio.Future[tuple[bool, int | None]]] = []
        self._top_task: asyncio.Task[None] | None = None
        #: Resumes that had to wait for this instance to catch up with the stream.
        self.catch_up_waits = 0
        #: Of those, the ones ended because the instance did not catch up in time.
        self.catch_up_timeouts = 0

    @property
    def held_count(self) -> int:
        """Resumes waiting for the reader to catch up."""
        return len(self._held)

    @property
    def subscriber_count(self) -> int:
        """Number of live subscriptions, held resumes included."""
        return self.fanout.subscriber_count + len(self._held)

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """Tasks of held resumes still running (cancelled at shutdown)."""
        top = [self._top_task] if self._top_task is not None else []
        return [*self._catch_up_tasks, *top]

    # -- reading -----------------------------------------------------------------------

    async def prime(self) -> None:
        """Fill the local replay log with the newest entries of the stream."""
        link = self.link
        if self.catalog is not None:
            await self.catalog.read()
        rows = await link.redis.xrevrange(link.stream, "+", "-", count=self.fanout.buffer_size)
        if rows:
            rows = list(reversed(rows))
            if self.catalog is not None:
                await self.catalog.describe_new_symbols(rows)
            self._ingest(rows, prime=True)
        elif self._read_from == "$":
            self._read_from = "0-0"
        self._primed = True

    async def run(self) -> None:
        """The reader task: ``XREAD`` for ever, retrying with backoff through outages."""
        link = self.link
        catalog = self.catalog
        attempt = 0
        while True:
            try:
                if not self._primed:
                    # Redis was down at start: prime now, or the reader would begin at
                    # "$" and this instance would lack what the stream already holds
                    # (and answer resumes from it with a false reset).
                    await self.prime()
                reply = await link.redis.xread(
                    {link.stream: self._read_from}, count=10_000, block=link.block_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any connection failure: retry
                if link.stopping:
                    return
                link.set_healthy(False, exc)
                await asyncio.sleep(link.backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            link.set_healthy(True)
            for _name, rows in reply or ():
                if rows:
                    if catalog is not None:
                        await catalog.describe_new_symbols(rows)
                    self._ingest(rows)
            # Until the producer's catalog has been seen (it is written with the first
            # events), look again soon; after that every CATALOG_PERIOD.
            if catalog is not None and catalog.due():
                with contextlib.suppress(Exception):  # the next XREAD reports an outage
                    await catalog.read()

    def _ingest(self, rows: list[tuple[bytes, dict[bytes, bytes]]], *, prime: bool = False) -> None:
        fanout = self.fanout
        now = fanout.clock()
        # The new entries as parallel lists (see ReplayLog): key, type, symbol, SSE frame.
        keys: list[int] = []
        kinds: list[str] = []
        syms: list[str] = []
        frames: list[bytes] = []
        log_keys = fanout.log.keys
        newest = log_keys[-1] if log_keys else -1
        for raw_id, fields in rows:
            sid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            # Past this entry whatever happens below: a skipped or malformed entry must
            # not be read again by the next XREAD (and logged again, for ever).
            self._read_from = sid
            try:
                key = parse_stream_id(sid)
                event = fields[b"e"].decode()
                symbol = fields[b"s"].decode()
                body = fields[b"d"].decode()
                producer = fields.get(b"p", b"").decode()
                n = int(fields.get(b"n", b"0"))
                # The producer wrote the payload with its "seq": framed as it is, not
                # decoded (the snapshot decodes the latest tick per symbol when asked).
                # One line of JSON, as every producer writes it: the fan-out derives the
                # WebSocket message from the SSE frame (wire.sse.event_data).
                if not body.endswith("}"):
                    raise ValueError("payload is not a JSON object")
                if "\n" in body or "\r" in body:
                    raise ValueError("payload is not one line of JSON")
                frame = encode_event(body, id=sid, event=event)
            except (KeyError, UnicodeDecodeError, ValueError, EventIdError) as exc:
                log.warning("skipping malformed stream entry %s: %s", sid, exc)
                continue
            if key <= newest:
                continue  # already have it (e.g. re-read after a reconnect)
            if producer:
                seen = self._producer_seen.get(producer, 0)
                if n <= seen:
                    # The producer re-sent a pipeline whose reply it never got.
                    self.duplicates_skipped += 1
                    continue
                if seen and n != seen + 1:
                    self._note_gap(key, sid, n - seen - 1)
                self._producer_seen[producer] = n
            keys.append(key)
            kinds.append(event)
            syms.append(symbol)
            frames.append(frame)
            newest = key
            if event == "tick":
                self._latest_text[symbol] = body
            self.last_id = sid
        if not keys:
            return
        fanout.append(keys, kinds, syms, frames, now, live=not prime)
        if self._held:
            # After the fan-out: a released subscription gets this batch by replay.
            for sub, (after, _) in list(self._held.items()):
                if after <= newest:
                    self._release(sub, None)

    def _note_gap(self, key: int, sid: str, missing: int) -> None:
        """Entries of one producer run are numbered 1, 2, 3...: a jump means events that
        this instance will never read (a Redis restart without persistence lost them, or
        the producer's outbox overflowed). A replay across it could not be gap-free."""
        self._gap_before = key
        self.gaps += 1
        log.warning(
            "%d events missing from the stream before %s (a Redis restart without "
            "persistence, or the producer's outbox overflowed); resumes from before it "
            "get a reset",
            missing,
            sid,
        )

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        last_id: str | None,
        framing: Framing,
    ) -> Subscription:
        """See :meth:`RedisBroker.subscribe`."""
        fanout = self.fanout
        if fanout.closed:
            raise RuntimeError("broker is closed")
        # Parse before touching any state so a bad id has no side effects.
        after = parse_stream_id(last_id) if last_id else None
        keys = fanout.log.keys
        sub = fanout.open(symbols, events, framing)
        if after is None or (keys and after <= keys[-1]):
            if after is not None:
                fanout.evict_old(fanout.clock())
                self._replay_into(sub, after)
            fanout.add(sub)
            return sub
        loop = asyncio.get_running_loop()
        self._held[sub] = (after, loop.create_future())
        self.catch_up_waits += 1
        sub.add_close_callback(self._unhold)
        task = loop.create_task(self._catch_up(sub, after), name="redis-catch-up")
        self._catch_up_tasks.add(task)
        task.add_done_callback(self._catch_up_tasks.discard)
        return sub

    async def _catch_up(self, sub: Subscription, after: int) -> None:
        """Decide a held resume: reset when Redis holds no such id, end it when too late."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.catch_up_timeout
        known, top = False, None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.catch_up_timeout):
                known, top = await self._stream_top()
        held = self._held.get(sub)
        if held is None:
            return  # released (the reader got there first) or closed
        if known and (top is None or top < after):
            # Redis holds nothing that new: not an id of this stream (see module docstring).
            self._release(sub, "unknown_id")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(held[1]), max(deadline - loop.time(), 0.0))
        if sub in self._held:
            # Redis has the id (or cannot be asked) and this instance has not read up to
            # it: a reset would be false and older events duplicates. End the stream; the
            # client resumes with the same id, here or on an instance that is not behind.
            self.catch_up_timeouts += 1
            log.warning(
                "resume after %s: this instance has read only up to %s after %g s; "
                "ending the stream so that the client retries",
                _format_id(after),
                self.last_id,
                self.catch_up_timeout,
            )
            sub.close(CloseReason.CATCH_UP_TIMEOUT)

    async def _stream_top(self) -> tuple[bool, int | None]:
        """``(True, key of the newest entry in Redis or None)``; ``(False, None)`` if unknown.

        Coalesced: callers that arrive while a query is in flight share the *next* one
        (the one in flight may have been sent before their id existed), so a thousand
        clients resuming at once on a lagging instance cost two queries, not a thousand
        connections.
        """
        fut: asyncio.Future[tuple[bool, int | None]] = asyncio.get_running_loop().create_future()
        self._top_pending.append(fut)
        if self._top_task is None:
            self._top_task = asyncio.create_task(self._query_top(), name="redis-stream-top")
        return await fut

    async def _query_top(self) -> None:
        try:
            while self._top_pending:
                batch, self._top_pending = self._top_pending, []
                answer: tuple[bool, int | None] = (False, None)
                try:
                    rows = await self.link.redis.xrevrange(self.link.stream, "+", "-", count=1)
                    top = None
                    if rows:
                        raw = rows[0][0]
                        top = parse_stream_id(raw.decode() if isinstance(raw, bytes) else str(raw))
                    answer = (True, top)
                except asyncio.CancelledError:
                    raise
                except Exception:  # unreachable or not started: the reader decides, in time
                    pass
                for f in batch:
                    if not f.done():
                        f.set_result(answer)
        finally:
            self._top_task = None

    def _release(self, sub: Subscription, reset_reason: str | None) -> None:
        """Make a held subscription live: replay after its id (or reset), then fan out."""
        after, fut = self._held.pop(sub)
        if not fut.done():
            fut.set_result(None)
        if reset_reason is None:
            self._replay_into(sub, after)
        else:
            self._send_reset(sub, after, reset_reason)
        # After the replay with no await in between: the next fan-out follows the last
        # replayed event.
        self.fanout.add(sub)

    def _unhold(self, sub: Subscription) -> None:
        held = self._held.pop(sub, None)
        if held is not None and not held[1].done():
            held[1].set_result(None)

    def _replay_into(self, sub: Subscription, after: int) -> None:
        keys = self.fanout.log.keys
        if not keys or after < keys[0]:
            # Stream ids are not contiguous: with nothing at or before ``after`` held here
            # we cannot prove that nothing was missed, so say so (reset with a snapshot).
            self._send_reset(sub, after, "evicted")
            return
        newest = keys[-1]
        if after == newest:
            return
        if after > newest:
            self._send_reset(sub, after, "unknown_id")
            return
        if after < self._gap_before:
            # Events after ``after`` are missing here: say so. The reset carries the newest
            # id, which is greater than the client's.
            self._send_reset(sub, after, "gap")
            return
        self.fanout.replay_after(sub, after)

    def _send_reset(self, sub: Subscription, after: int, reason: str) -> None:
        self.fanout.send_reset(
            sub, reason, _format_id(after), self.snapshot(sub.symbols), self.last_id
        )

    def ticked_symbols(self) -> list[str]:
        """Symbols seen ticking in the stream (without decoding their payloads)."""
        return list(self._latest_text)

    def snapshot(self, symbols: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
        """Latest tick payload (with ``seq``) per symbol seen ticking in the stream.

        The payloads are kept as the JSON text read from Redis and decoded here, for the
        symbols asked only: the reader never decodes a payload.
        """
        latest = self._latest_text
        names = sorted(latest if symbols is None else (s for s in symbols if s in latest))
        out: dict[str, dict[str, Any]] = {}
        for s in names:
            try:
                payload = json.loads(latest[s])
            except ValueError:
                continue
            if isinstance(payload, dict):
                out[s] = payload
        return out

    def close(self) -> None:
        """Close every subscription, held resumes included (idempotent)."""
        for sub in list(self._held):
            sub.close(CloseReason.BROKER_CLOSED)
        self.fanout.close()


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
            _format_id,
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


class StreamSource(Catalog):
    """The source of a serving-only instance: what another process publishes to Redis.

    A serving instance (``quoteflow serve --broker redis://...`` without ``--generate``)
    has no market of its own, hence no events to produce: it is a
    :class:`~quoteflow.sources.Catalog`, not a ``Source`` (the events reach the broker's
    reader from Redis). Its symbols are those of the producer's catalog (refreshed every
    :data:`CATALOG_PERIOD` seconds) plus any symbol seen ticking in the stream, so
    ``/symbols``, ``/snapshot`` and the 400 for an unknown symbol work as on the producer.
    ``PUT /symbols/{symbol}`` is forwarded to the producer (:meth:`aupdate`).

    Parameters
    ----------
    broker : RedisBroker
        The consuming broker.
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    @property
    def symbols(self) -> list[str]:
        """Catalog symbols plus symbols seen in the stream."""
        names = set(self.broker.catalog or ())
        names.update(self.broker.ticked_symbols())
        return sorted(names)

    @property
    def symbols_known(self) -> bool:
        """False until the catalog or a tick has been read (Redis unreachable at start)."""
        return self.broker.catalog is not None or self.broker.last_id is not None

    def describe(self) -> dict[str, dict[str, Any]]:
        """The producer's catalog, with prices from the latest ticks seen here."""
        out = {s: dict(d) for s, d in (self.broker.catalog or {}).items()}
        for symbol, tick in self.broker.snapshot().items():
            entry = out.setdefault(symbol, {"model": None, "params": {}})
            if "price" in tick:
                entry["price"] = tick["price"]
        return dict(sorted(out.items()))

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Refuse synchronously: changes go through :meth:`aupdate` (an await on Redis)."""
        raise ConfigError(
            "this instance only serves: change parameters through its HTTP API, which "
            "forwards them to the producer"
        )

    async def aupdate(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Forward a parameter change to the producer; see :meth:`RedisBroker.forward_update`."""
        return await self.broker.forward_update(symbol, params)
