"""The producing part of a Redis broker: the outbox, the writer and the control task."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from quoteflow.broker.base import BrokerStats, EventLike
from quoteflow.broker.redis.ids import CATALOG_PERIOD, log
from quoteflow.broker.redis.link import RedisLink
from quoteflow.errors import ConfigError
from quoteflow.wire.payload import encode_payload, pre_encoded, with_seq

__all__ = ["WRITE_BATCH", "XADD_BATCH_LUA", "RedisProducer", "pack_xadd_batch"]

#: Events per round trip to Redis (one script call): a batch blocks Redis for about
#: 1,000 x 3 us, far below the serving instances' ``XREAD`` latency budget.
WRITE_BATCH = 1000

#: ``XADD``\ s every event of a batch, in order: ``KEYS[1]`` the stream, ``ARGV`` the
#: ``MAXLEN ~`` cap, the producer id, then ``event, symbol, data, n`` per event; returns
#: the id of the last entry. Each entry has the fields a pipeline of ``XADD`` wrote
#: (``e s d p n``), so consumers see no difference. ``replicate_commands`` (Redis 3.2-6:
#: replicate the effects, as ``XADD *`` is not deterministic) is a no-op on Redis 7.
#: Commands: EVAL, XADD (https://redis.io/docs/latest/develop/interact/programmability/).
XADD_BATCH_LUA = b"""\
if redis.replicate_commands then redis.replicate_commands() end
local key, cap, producer = KEYS[1], ARGV[1], ARGV[2]
local last = false
for i = 3, #ARGV, 4 do
  last = redis.call('XADD', key, 'MAXLEN', '~', cap, '*',
    'e', ARGV[i], 's', ARGV[i + 1], 'd', ARGV[i + 2], 'p', producer, 'n', ARGV[i + 3])
end
return last
"""


def _bulk(value: bytes) -> bytes:
    """``value`` as a RESP bulk string (https://redis.io/docs/latest/develop/reference/protocol-spec/)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_xadd_batch(
    stream: str, maxlen: int, producer_id: str, items: Sequence[tuple[str, str, bytes, int]]
) -> bytes:
    """The RESP request ``EVAL XADD_BATCH_LUA 1 stream maxlen producer_id e s d n ...``.

    Packed with one ``%`` format per event instead of redis-py's generic per-argument
    encoder (the cost that capped the pipeline writer, see ``RedisProducer._writer``).
    """
    head = [
        b"*%d\r\n" % (6 + 4 * len(items)),
        _bulk(b"EVAL"),
        _bulk(XADD_BATCH_LUA),
        _bulk(b"1"),
        _bulk(stream.encode()),
        _bulk(b"%d" % maxlen),
        _bulk(producer_id.encode()),
    ]
    fmt = b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n"
    body = []
    for event, symbol, data, seq in items:
        e, s = event.encode(), symbol.encode()
        body.append(fmt % (len(e), e, len(s), s, len(data), data, len(str(seq)), seq))
    return b"".join(head) + b"".join(body)


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
        """Send the outbox, up to :data:`WRITE_BATCH` events per round trip.

        The events go in one ``EVAL`` of :data:`XADD_BATCH_LUA` per batch, packed here
        (:func:`pack_xadd_batch`) and sent on a connection of the writer's own: a
        redis-py pipeline of one ``XADD`` per event packed and parsed every command in
        Python and used 0.5 core for 9,000 events/s, short of a 100,000 ticks/s
        market; the script writes the same entries (one per event, same fields) with
        one reply per batch (benchmarks/README.md, "Redis broker").
        """
        link = self.link
        attempt = 0
        conn: Any = None
        try:
            while True:
                await self._outbox_event.wait()
                self._outbox_event.clear()
                while self._outbox:
                    n = min(len(self._outbox), WRITE_BATCH)
                    items = list(itertools.islice(self._outbox, n))
                    now = time.monotonic()
                    catalog = self._catalog_json(now)
                    try:
                        if catalog is not None:
                            # Written before the events: a serving instance that sees a new
                            # symbol in the stream can already describe it.
                            await link.redis.set(link.catalog_key, catalog)
                        if conn is None:
                            conn = link.redis.connection_pool.make_connection()
                        await conn.send_packed_command(
                            pack_xadd_batch(link.stream, self.maxlen, self.producer_id, items)
                        )
                        last = await conn.read_response()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # any connection failure: retry
                        if conn is not None:
                            with contextlib.suppress(Exception):
                                await conn.disconnect(nowait=True)
                            conn = None
                        if link.stopping:
                            return
                        if self.reports_health:
                            link.set_healthy(False, exc)
                        await asyncio.sleep(link.backoff(attempt))
                        attempt += 1
                        continue
                    attempt = 0
                    if last is not None:
                        self.last_written = last.decode() if isinstance(last, bytes) else str(last)
                    if catalog is not None:
                        self._catalog_at = now
                    if self.reports_health:
                        link.set_healthy(True)
                    for _ in range(n):
                        self._outbox.popleft()
                    self.sent += n
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)

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
