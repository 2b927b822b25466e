"""The consuming part of a Redis broker: the stream read into the local fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from quoteflow.broker.base import CloseReason, EventIdError, Framing, Subscription
from quoteflow.broker.fanout import LocalFanout
from quoteflow.broker.redis.catalog import RemoteCatalog
from quoteflow.broker.redis.ids import format_id, log, parse_stream_id
from quoteflow.broker.redis.link import RedisLink
from quoteflow.wire.sse import encode_event

__all__ = ["RedisConsumer"]


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
                format_id(after),
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
            sub, reason, format_id(after), self.snapshot(sub.symbols), self.last_id
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
