"""Redis Streams broker: one feed and one id space shared by many server instances.

Scale-out (DESIGN.md, "Scale-out"): exactly one process *produces* (``quoteflow generate
--broker URL`` or ``quoteflow serve --broker URL --generate``): it ``XADD``\\ s every event to
one capped stream (``MAXLEN ~``). Every serving instance *consumes*: a background task
reads the stream with blocking ``XREAD`` and fans the events out locally with the same
grouped, encode-once machinery as :class:`~quoteflow.broker.memory.MemoryBroker`.

The event id on the wire is the Redis stream id (``"1764212345678-0"``), so a client can
resume with ``Last-Event-ID`` on any instance. Each instance keeps a local replay buffer
(primed from the stream at start with ``XREVRANGE``), so ``subscribe`` stays synchronous
and gap-free exactly as in the memory broker.

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
import bisect
import contextlib
import itertools
import json
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from quoteflow.broker.base import EventIdError, EventLike, Subscription
from quoteflow.broker.memory import MemoryBroker, _Entry
from quoteflow.errors import ConfigError
from quoteflow.server.sse import encode_event

__all__ = ["RedisBroker", "parse_stream_id"]

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


class RedisBroker(MemoryBroker):
    """Broker on a Redis stream; see the module docstring.

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
    buffer_size, buffer_age, max_backlog_bytes, clock
        As for :class:`MemoryBroker` (the local replay buffer and fan-out).
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "quoteflow:events",
        produce: bool = False,
        consume: bool = True,
        maxlen: int = 100_000,
        outbox_size: int = 100_000,
        block_ms: int = 1000,
        buffer_size: int = 100_000,
        buffer_age: float = 300.0,
        max_backlog_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__(
            buffer_size=buffer_size,
            buffer_age=buffer_age,
            max_backlog_bytes=max_backlog_bytes,
            clock=clock,
        )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--broker must be a redis:// URL, got {url!r}")
        if not (produce or consume):
            raise ConfigError("a Redis broker must produce, consume or both")
        self.url = url
        self.stream = stream
        self.produce = produce
        self.consume = consume
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._outbox: deque[tuple[str, str, bytes]] = deque(maxlen=outbox_size)
        self._outbox_event = asyncio.Event()
        self._keys: deque[int] = deque(maxlen=buffer_size)  # sort keys parallel to _buffer
        self._last_sid: str | None = None  # newest stream id ingested
        self._read_from = "$"
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None
        self.healthy = False
        self.last_error: str | None = None
        self.outages = 0
        self.dropped_unsent = 0
        self.sent = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, prime the local buffer from the stream, start reader/writer tasks.

        Does not fail when Redis is down: the tasks keep retrying (``healthy`` says so).
        """
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            # a silent dead connection must fail, not block the reader for ever
            socket_timeout=self.block_ms / 1000 + 5.0,
        )
        if self.consume:
            try:
                await self._prime()
                self._set_healthy(True)
            except Exception as exc:  # any connection failure: retry
                self._set_healthy(False, exc)
            self._tasks.append(asyncio.create_task(self._reader(), name="redis-reader"))
        if self.produce:
            self._tasks.append(asyncio.create_task(self._writer(), name="redis-writer"))

    async def aclose(self) -> None:
        """Stop the tasks (flushing what the producer still holds, briefly) and disconnect."""
        if self.produce and self._outbox and self.healthy:
            self._outbox_event.set()
            deadline = time.monotonic() + 2.0
            while self._outbox and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # redis-py can sit in a blocking XREAD for a while after a cancel (seen here
            # after a Redis restart): give the tasks a moment, then cut the connections.
            _, pending = await asyncio.wait(self._tasks, timeout=1.0)
            if self._redis is not None and pending:
                await self._redis.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=2.0)
        self._tasks.clear()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        self.close()

    def _set_healthy(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok and not self.healthy:
            if self.outages:
                log.warning("redis %s reachable again; resuming after %s", self.url, self._last_sid)
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

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
        cap = min(self.backoff_max, self.backoff_initial * 2**attempt)
        return random.uniform(cap / 2, cap)

    # -- producer ----------------------------------------------------------------------

    def publish(self, batch: Sequence[EventLike]) -> None:
        """Queue ``batch`` for ``XADD`` (producer only; ids come from Redis)."""
        if not self.produce:
            raise RuntimeError("this Redis broker does not produce (start it with --generate)")
        if not batch or self._closed:
            return
        published = self.stats.published
        outbox = self._outbox
        for ev in batch:
            data = json.dumps(dict(ev.data), separators=(",", ":"), allow_nan=False)
            if len(outbox) == outbox.maxlen:
                self.dropped_unsent += 1
            outbox.append((ev.event, ev.symbol, data.encode()))
            published[ev.event] = published.get(ev.event, 0) + 1
        self._outbox_event.set()

    async def _writer(self) -> None:
        attempt = 0
        while True:
            await self._outbox_event.wait()
            self._outbox_event.clear()
            while self._outbox:
                n = min(len(self._outbox), 1000)
                items = [self._outbox[i] for i in range(n)]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for event, symbol, data in items:
                            pipe.xadd(
                                self.stream,
                                {"e": event, "s": symbol, "d": data},
                                maxlen=self.maxlen,
                                approximate=True,
                            )
                        await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any connection failure: retry
                    if not self.consume:
                        self._set_healthy(False, exc)
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                if not self.consume:
                    self._set_healthy(True)
                for _ in range(n):
                    self._outbox.popleft()
                self.sent += n

    # -- consumer ----------------------------------------------------------------------

    async def _prime(self) -> None:
        """Fill the local replay buffer with the newest entries of the stream."""
        rows = await self._redis.xrevrange(self.stream, "+", "-", count=self.buffer_size)
        if rows:
            self._ingest(list(reversed(rows)), prime=True)
        else:
            self._read_from = "0-0"

    async def _reader(self) -> None:
        attempt = 0
        while True:
            try:
                reply = await self._redis.xread(
                    {self.stream: self._read_from}, count=10_000, block=self.block_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any connection failure: retry
                self._set_healthy(False, exc)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            self._set_healthy(True)
            for _name, rows in reply or ():
                if rows:
                    self._ingest(rows)

    def _ingest(self, rows: list[tuple[bytes, dict[bytes, bytes]]], *, prime: bool = False) -> None:
        now = self._clock()
        entries: list[_Entry] = []
        for raw_id, fields in rows:
            sid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                key = parse_stream_id(sid)
                event = fields[b"e"].decode()
                symbol = fields[b"s"].decode()
                body = fields[b"d"].decode()
            except (KeyError, UnicodeDecodeError, EventIdError):
                log.warning("skipping malformed stream entry %s", sid)
                continue
            if self._keys and key <= self._keys[-1]:
                continue  # already have it (e.g. re-read after a reconnect)
            # '"seq"' is the stream id; appended without re-parsing the JSON object.
            data = body[:-1] + ',"seq":"' + sid + '"}' if body.endswith("}") else body
            entries.append(_Entry(key, event, symbol, encode_event(data, id=sid, event=event), now))
            self._keys.append(key)
            if event == "tick":
                payload = json.loads(data)
                self._latest[symbol] = payload
            self._last_sid = sid
            self._read_from = sid
        if not entries:
            return
        if not prime:
            self._evict_old(now)
        self._buffer.extend(entries)
        if not prime and self._groups:
            self._fan_out(entries, now)

    def _evict_old(self, now: float) -> None:
        horizon = now - self.buffer_age
        buf = self._buffer
        while buf and buf[0].time < horizon:
            buf.popleft()
            self._keys.popleft()

    # -- ids and replay ----------------------------------------------------------------

    def parse_id(self, s: str) -> int:
        return parse_stream_id(s)

    @property
    def last_id(self) -> str | None:
        return self._last_sid

    def _replay_into(self, sub: Subscription, after: int) -> None:
        keys = self._keys
        if not keys or after < keys[0]:
            # Stream ids are not contiguous: with nothing at or before ``after`` held here
            # we cannot prove that nothing was missed, so say so (reset with a snapshot).
            self._send_reset_str(sub, after, "evicted")
            return
        newest = keys[-1]
        if after == newest:
            return
        if after > newest:
            self._send_reset_str(sub, after, "unknown_id")
            return
        start = bisect.bisect_right(keys, after)
        symbols, events = sub.symbols, sub.events
        parts = [
            e.data
            for e in itertools.islice(self._buffer, start, None)
            if e.event in events and (symbols is None or e.symbol in symbols)
        ]
        self.stats.replays += 1
        self.stats.replayed_events += len(parts)
        if parts:
            sub.push_preamble(b"".join(parts), len(parts))

    def _send_reset_str(self, sub: Subscription, after: int, reason: str) -> None:
        self.stats.resets += 1
        ms, seq = after >> _SEQ_BITS, after & ((1 << _SEQ_BITS) - 1)
        payload = {
            "reason": reason,
            "last_id": f"{ms}-{seq}",
            "snapshot": self.snapshot(sub.symbols),
        }
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        sub.push_preamble(encode_event(data, id=self._last_sid, event="reset"), 1)

    def health(self) -> dict[str, Any]:
        """State for ``/healthz`` and ``/metrics``."""
        return {
            "broker": "redis",
            "redis": "ok" if self.healthy else "down",
            "last_error": self.last_error,
            "outages": self.outages,
            "last_id": self._last_sid,
            "outbox": len(self._outbox),
        }
