"""In-process broker: integer ids, a bounded replay buffer, grouped fan-out.

Hot-path design (the later benchmark is 100 clients x 100 symbols x 10 ticks/s and
10,000 connections):

- every event is JSON-encoded and SSE-framed exactly once, at publish;
- subscribers with the same filter ``(symbols, events)`` form one group; for each
  published batch a group's matching bytes are joined once and that single bytes object
  is appended to every member: no per-event, per-client Python work;
- the replay buffer is tornado's chat-demo idea (a capped message list, "messages since
  cursor") as a ``deque`` bounded by count and by age;
- a resume is streamed out of that buffer by a :class:`ReplayCursor`, one chunk per
  write, never copied whole: 100 clients resuming from the oldest of 100,000 events
  would otherwise each hold a private copy of the buffer (14 MB each, issue 10), and the
  bytes of all replays in flight together are bounded by a :class:`ReplayBudget`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quoteflow.broker.base import (
    ALL_EVENTS,
    Broker,
    BrokerStats,
    CloseReason,
    EventIdError,
    EventLike,
    Subscription,
)
from quoteflow.broker.settings import BufferSettings
from quoteflow.wire.payload import EventFramer, encode_payload, pre_encoded
from quoteflow.wire.sse import encode_event

__all__ = ["DEFAULT_REPLAY_MEMORY", "REPLAY_CHUNK", "MemoryBroker", "ReplayBudget", "ReplayCursor"]

log = logging.getLogger(__name__)

# Ids are non-negative decimal integers that fit an int64 (what a JavaScript client can
# also hold exactly up to 2**53; we will never get near either). Anything else - signs,
# spaces, non-ASCII digits, 50 nines - is not an id this broker issued.
_ID_RE = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1

#: Default bound on replay bytes in flight to all resuming clients together (bytes).
DEFAULT_REPLAY_MEMORY = BufferSettings.replay_memory_bytes
#: Largest replay chunk taken in one write (bytes); ``--max-backlog`` lowers it.
REPLAY_CHUNK = 256 << 10
#: Buffer rows one chunk may scan: a narrow filter over a long buffer is searched in
#: steps of this many rows, each its own loop iteration (about 2 ms each).
REPLAY_SCAN_ROWS = 16_384


class ReplayLog:
    """The events kept for replay: parallel deques of ids, types, symbols, frames, times.

    No object is created per event. A per-event record (a tuple, or a NamedTuple) is a
    GC-tracked container, and with a full buffer each new one is balanced by an evicted
    one, so CPython's young-generation count stays flat and no collection runs while
    tens of thousands of fresh records pile up in generation 0. The pass that finally
    runs walks all of them: measured in ``quoteflow serve`` at 830,000 events/s with a
    100,000-event buffer, young passes of 101,000 objects took 40-45 ms and held every
    stream that long, and (tuple subclasses are never untracked) full passes took
    60-80 ms (``benchmarks/fanout/stall_probe.py``). ints, strs, bytes and floats are
    not GC-tracked, so deques of them cost the collector nothing, and 100,000 events
    take 4.1 MB here against 8.8 MB as a deque of tuples (tracemalloc).

    The deques share one ``maxlen`` and are always appended and popped together, so
    position ``i`` of each describes the same event.
    """

    __slots__ = ("cursors", "frames", "keys", "kinds", "symbols", "times")

    def __init__(self, maxlen: int) -> None:
        #: Replays in progress: before rows are dropped, each takes the frames it still
        #: owes among them (:meth:`ReplayCursor.rescue`), so eviction never opens a gap.
        self.cursors: set[ReplayCursor] = set()
        #: Sort keys (MemoryBroker: the ids; RedisBroker: packed stream ids), increasing.
        self.keys: deque[int] = deque(maxlen=maxlen)
        self.kinds: deque[str] = deque(maxlen=maxlen)
        self.symbols: deque[str] = deque(maxlen=maxlen)
        self.frames: deque[bytes] = deque(maxlen=maxlen)
        self.times: deque[float] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self.keys)

    def extend(
        self, keys: list[int], kinds: list[str], symbols: list[str], frames: list[bytes], now: float
    ) -> None:
        """Append one batch (the lists are parallel), published at ``now``."""
        maxlen = self.keys.maxlen
        if self.cursors and maxlen is not None:
            # The deques will drop this many held rows from the left.
            self._evicting(min(len(self.keys) + len(keys) - maxlen, len(self.keys)))
        self.keys.extend(keys)
        self.kinds.extend(kinds)
        self.symbols.extend(symbols)
        self.frames.extend(frames)
        self.times.extend(itertools.repeat(now, len(keys)))

    def evict_before(self, horizon: float) -> None:
        """Drop the events published before ``horizon``."""
        times = self.times
        if self.cursors and times and times[0] < horizon:
            self._evicting(bisect.bisect_left(times, horizon))
        while times and times[0] < horizon:
            times.popleft()
            self.keys.popleft()
            self.kinds.popleft()
            self.symbols.popleft()
            self.frames.popleft()

    def position_after(self, key: int) -> int:
        """Position of the first event whose key is above ``key``."""
        return bisect.bisect_right(self.keys, key)

    def scan(
        self,
        after: int,
        until: int,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        max_bytes: int,
        max_rows: int = REPLAY_SCAN_ROWS,
    ) -> tuple[list[bytes], int]:
        """Frames after key ``after`` up to key ``until`` that pass the filter.

        Stops after about ``max_bytes`` of frames (at least one frame) or ``max_rows``
        rows scanned. Returns the frames and the key of the last row scanned (``after``
        when none was).
        """
        start = self.position_after(after)
        stop = start + max_rows
        rows = zip(
            itertools.islice(self.keys, start, stop),
            itertools.islice(self.kinds, start, stop),
            itertools.islice(self.symbols, start, stop),
            itertools.islice(self.frames, start, stop),
            strict=True,
        )
        out: list[bytes] = []
        size = 0
        last = after
        for key, kind, sym, frame in rows:
            if key > until:
                break
            last = key
            if kind in events and (symbols is None or sym in symbols):
                out.append(frame)
                size += len(frame)
                if size >= max_bytes:
                    break
        return out, last

    def _evicting(self, n: int) -> None:
        """Rows ``[0, n)`` are about to be dropped: replays take what they still owe."""
        if n <= 0:
            return
        last = self.keys[n - 1]
        for cursor in list(self.cursors):
            if cursor.after < last:
                cursor.rescue(n)

    def clear(self) -> None:
        self.cursors.clear()
        for d in (self.keys, self.kinds, self.symbols, self.frames, self.times):
            d.clear()


class ReplayBudget:
    """Bound on the replay bytes in flight to all subscriptions of a broker together.

    A replay chunk is charged when taken and released when written (or when its
    subscription closes). When the budget is spent, resuming subscriptions wait (in
    arrival order) and are woken as bytes are released; live streams are not affected.

    Parameters
    ----------
    limit : int
        Bytes; one chunk may overshoot it (a chunk holds at least one event).
    stats : BrokerStats
        ``replay_bytes_in_flight`` and ``replay_waits`` are kept there.
    """

    def __init__(self, limit: int, stats: BrokerStats) -> None:
        if limit < 1:
            raise ValueError(f"replay memory must be >= 1 byte, got {limit}")
        self.limit = limit
        self._stats = stats
        self._waiting: dict[Subscription, None] = {}  # insertion-ordered set

    @property
    def in_flight(self) -> int:
        """Bytes charged and not released."""
        return self._stats.replay_bytes_in_flight

    def available(self) -> int:
        """Bytes that may be charged now (<= 0: wait)."""
        return self.limit - self._stats.replay_bytes_in_flight

    def charge(self, n_bytes: int) -> None:
        """Count ``n_bytes`` as in flight."""
        self._stats.replay_bytes_in_flight += n_bytes

    def release(self, n_bytes: int) -> None:
        """``n_bytes`` were written: wake the waiting subscriptions if there is room."""
        self._stats.replay_bytes_in_flight -= n_bytes
        if self._waiting and self.available() > 0:
            waiting = list(self._waiting)
            self._waiting.clear()
            try:
                call_soon = asyncio.get_running_loop().call_soon
            except RuntimeError:  # no loop (tests of the broker alone): they take again
                return
            for sub in waiting:
                call_soon(sub.wake)

    def wait(self, sub: Subscription) -> None:
        """Wake ``sub`` once bytes are released."""
        if sub not in self._waiting:
            self._stats.replay_waits += 1
            self._waiting[sub] = None

    def forget(self, sub: Subscription) -> None:
        """``sub`` no longer waits (it closed)."""
        self._waiting.pop(sub, None)


class ReplayCursor:
    """A resuming subscription's replay, read out of the buffer a chunk at a time.

    It covers the events after ``after`` up to ``until`` (the newest event when the
    subscription was made; later ones reach the subscription live), so a resume still
    has no gap and no duplicate. Before the buffer evicts events the cursor has not
    sent yet, the cursor keeps references to them (:meth:`rescue`; the bytes are not
    copied) and counts their size as the subscription's backlog: past
    ``max_backlog_bytes`` the subscription is closed as a slow consumer, like a live one
    that does not read.

    Parameters
    ----------
    log : ReplayLog
        The broker's buffer.
    budget : ReplayBudget
        The broker's replay memory budget.
    stats : BrokerStats
        ``replayed_events`` is counted there.
    sub : Subscription
        The resuming subscription.
    after, until : int
        Keys bounding the replay: ``after`` < key <= ``until``.
    """

    __slots__ = (
        "_budget",
        "_log",
        "_rescued",
        "_rescued_bytes",
        "_stats",
        "_sub",
        "after",
        "until",
    )

    def __init__(
        self,
        log: ReplayLog,
        budget: ReplayBudget,
        stats: BrokerStats,
        sub: Subscription,
        after: int,
        until: int,
    ) -> None:
        self._log = log
        self._budget = budget
        self._stats = stats
        self._sub = sub
        #: Key of the last buffer row read (sent, or rescued before its eviction).
        self.after = after
        self.until = until
        self._rescued: deque[bytes] = deque()
        self._rescued_bytes = 0
        log.cursors.add(self)

    def ready(self) -> bool:
        """True if the budget has room; else the subscription waits for it."""
        if self._budget.available() > 0:
            return True
        self._budget.wait(self._sub)
        return False

    def pull(self, max_bytes: int) -> tuple[bytes, int, bool]:
        """The next chunk, at most about ``min(max_bytes, REPLAY_CHUNK, budget)`` bytes."""
        sub = self._sub
        limit = max(1, min(max_bytes, REPLAY_CHUNK, self._budget.available()))
        parts: list[bytes] = []
        size = 0
        rescued = self._rescued
        while rescued and size < limit:
            frame = rescued.popleft()
            parts.append(frame)
            size += len(frame)
        self._rescued_bytes -= size
        finished = False
        if size < limit and not rescued:
            more, last = self._log.scan(
                self.after, self.until, sub.symbols, sub.events, limit - size
            )
            parts += more
            # Done once the scan reached ``until``, or nothing after ``after`` is held.
            finished = last >= self.until or last == self.after
            self.after = last
        if finished:
            self._log.cursors.discard(self)
        data = b"".join(parts)
        self._budget.charge(len(data))
        self._stats.replayed_events += len(parts)
        return data, len(parts), finished

    def release(self, n_bytes: int) -> None:
        """Give ``n_bytes`` back to the budget."""
        self._budget.release(n_bytes)

    def cancel(self) -> None:
        """Stop: forget the wait for the budget and the rescued frames."""
        self._budget.forget(self._sub)
        self._log.cursors.discard(self)
        self._rescued.clear()
        self._rescued_bytes = 0

    def rescue(self, n: int) -> None:
        """Keep the frames this replay owes among buffer rows ``[0, n)``, about to go."""
        sub = self._sub
        parts, last = self._log.scan(
            self.after, self.until, sub.symbols, sub.events, max_bytes=1 << 62, max_rows=n
        )
        self.after = last
        self._rescued.extend(parts)
        self._rescued_bytes += sum(map(len, parts))
        if self._rescued_bytes > sub.max_backlog_bytes:
            # The client reads more slowly than the buffer turns over.
            sub.close(CloseReason.SLOW_CONSUMER)


@dataclass(eq=False)
class _Group:
    symbols: frozenset[str] | None
    events: frozenset[str]
    members: set[Subscription] = field(default_factory=set)


class MemoryBroker(Broker):
    """Single-process broker with ids ``1, 2, 3 ...`` shared by all events.

    Parameters
    ----------
    buffer_size : int
        Maximum number of events kept for replay.
    buffer_age : float
        Maximum age of a replayable event, in seconds.
    max_backlog_bytes : int
        Per-subscriber bound on unsent live bytes before it is dropped as a slow
        consumer.
    replay_memory_bytes : int
        Bound on replay bytes in flight to all resuming subscribers together
        (:class:`ReplayBudget`); resumes beyond it wait their turn.
    clock : callable
        Monotonic seconds, for buffer ages and latency stamps (injectable for tests).

    Raises
    ------
    ValueError
        A bound is not positive.
    """

    def __init__(
        self,
        *,
        buffer_size: int = BufferSettings.buffer_size,
        buffer_age: float = BufferSettings.buffer_age,
        max_backlog_bytes: int = BufferSettings.max_backlog_bytes,
        replay_memory_bytes: int = BufferSettings.replay_memory_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if not buffer_age > 0:
            raise ValueError(f"buffer_age must be > 0 seconds, got {buffer_age}")
        if max_backlog_bytes < 1:
            raise ValueError(f"max_backlog_bytes must be >= 1, got {max_backlog_bytes}")
        self.buffer_size = buffer_size
        self.buffer_age = float(buffer_age)
        self.max_backlog_bytes = max_backlog_bytes
        self.stats = BrokerStats()
        self.replay_budget = ReplayBudget(replay_memory_bytes, self.stats)
        self._clock = clock
        self._log = ReplayLog(buffer_size)
        self._next_id = 1
        self._groups: dict[tuple[frozenset[str] | None, frozenset[str]], _Group] = {}
        self._n_subs = 0
        # Latest tick payload per symbol (the source's dict, without "seq") and its id;
        # snapshot() merges them, so publishing does not copy every payload.
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._latest_seq: dict[str, int] = {}
        # Payload + seq + SSE framing, once per event (quoteflow.wire).
        self._framer = EventFramer()
        self._closed = False

    # -- ids ---------------------------------------------------------------------------

    def parse_id(self, s: str) -> int:
        """Parse a decimal event id.

        Parameters
        ----------
        s : str
            The id as sent by a client (``Last-Event-ID``).

        Returns
        -------
        int

        Raises
        ------
        EventIdError
            ``s`` is not 1 to 19 ASCII digits within int64.
        """
        if not _ID_RE.fullmatch(s) or int(s) > _MAX_ID:
            shown = s if len(s) <= 40 else s[:40] + "..."
            raise EventIdError(
                f"malformed event id {shown!r}: ids on this server are non-negative "
                "decimal integers; reconnect without Last-Event-ID to start fresh"
            )
        return int(s)

    @property
    def last_id(self) -> str | None:
        """Id of the newest published event, None before the first."""
        return str(self._next_id - 1) if self._next_id > 1 else None

    @property
    def oldest_id(self) -> int | None:
        """Id of the oldest event still in the replay buffer."""
        return self._log.keys[0] if self._log else None

    @property
    def buffered(self) -> int:
        """Number of events in the replay buffer."""
        return len(self._log)

    @property
    def subscriber_count(self) -> int:
        """Number of live subscriptions."""
        return self._n_subs

    @property
    def group_count(self) -> int:
        """Number of distinct subscription filters (fan-out groups)."""
        return len(self._groups)

    # -- publish -----------------------------------------------------------------------

    def _evict_old(self, now: float) -> None:
        self._log.evict_before(now - self.buffer_age)

    def publish(self, batch: Sequence[EventLike]) -> None:
        """Assign ids, encode once, store for replay and fan out to every group.

        Parameters
        ----------
        batch : sequence of MarketEvent
            One tick round. Payload dicts are not modified; the latest tick of each
            symbol is kept by reference for :meth:`snapshot` (sources hand over fresh
            dicts every round). An :class:`~quoteflow.wire.payload.EncodedBatch` brings
            its payloads' JSON along, which is used instead of encoding them again.
        """
        if not batch or self._closed:
            return
        now = self._clock()
        encoded = pre_encoded(batch)
        n_encoded = len(encoded)
        # The batch as parallel lists (see ReplayLog): id, type, symbol, SSE frame.
        keys: list[int] = []
        kinds: list[str] = []
        syms: list[str] = []
        frames_out: list[bytes] = []
        latest, latest_seq = self._latest, self._latest_seq
        frame = self._framer.frame
        counts: dict[str, int] = {}
        next_id = self._next_id
        for i, ev in enumerate(batch):
            data = ev.data
            kind = ev.event
            text: str | None = None
            if i < n_encoded:
                pair = encoded[i]
                # The pre-encoded text is trusted only for the very payload it was made
                # from.
                if pair[0] is data:
                    text = pair[1]
            try:
                encoded_event = frame(kind, data, text, next_id, next_id)
            except (TypeError, ValueError) as exc:
                # One bad event (a NaN price, an unserialisable value, a newline in the
                # type) must not stop the feed for everyone: drop it, keep ids contiguous.
                self.stats.dropped += 1
                log.warning("dropping unencodable %s event for %r: %s", kind, ev.symbol, exc)
                continue
            keys.append(next_id)
            kinds.append(kind)
            syms.append(ev.symbol)
            frames_out.append(encoded_event)
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "tick":
                latest[ev.symbol] = data
                latest_seq[ev.symbol] = next_id
            next_id += 1
        self._next_id = next_id
        published = self.stats.published
        for kind, n in counts.items():
            published[kind] = published.get(kind, 0) + n
        self._evict_old(now)
        self._log.extend(keys, kinds, syms, frames_out, now)
        if self._groups:
            self._fan_out(kinds, syms, frames_out, now)

    def _fan_out(
        self, kinds: list[str], symbols: list[str], frames: list[bytes], now: float
    ) -> None:
        """Send one batch (parallel lists, as in :class:`ReplayLog`) to every group."""
        # Indexes by symbol are built lazily: only filtered groups need them.
        by_symbol: dict[str, list[int]] | None = None
        by_events: dict[frozenset[str], tuple[bytes, int]] = {}
        for group in list(self._groups.values()):
            if group.symbols is None:
                cached = by_events.get(group.events)
                if cached is None:
                    if group.events >= ALL_EVENTS:
                        parts = frames
                    else:
                        want = group.events
                        parts = [f for k, f in zip(kinds, frames, strict=True) if k in want]
                    cached = (b"".join(parts), len(parts))
                    by_events[group.events] = cached
                chunk, n = cached
            else:
                if by_symbol is None:
                    by_symbol = {}
                    for i, sym in enumerate(symbols):
                        by_symbol.setdefault(sym, []).append(i)
                # Gather by symbol then sort by position: ids must strictly increase on
                # a stream, and a small filter should not scan the whole batch.
                idx: list[int] = []
                for s in group.symbols:
                    hit = by_symbol.get(s)
                    if hit is not None:
                        idx.extend(hit)
                if len(group.symbols) > 1:
                    idx.sort()
                parts = [frames[i] for i in idx if kinds[i] in group.events]
                n = len(parts)
                chunk = b"".join(parts)
            if n == 0:
                continue
            # Copy: a member crossing its backlog bound unsubscribes during the loop.
            for sub in tuple(group.members):
                sub.push(chunk, n, now)

    # -- subscribe ---------------------------------------------------------------------

    def subscribe(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        last_id: str | None,
    ) -> Subscription:
        """Register a subscriber; replay what it missed after ``last_id`` first.

        The replay and the registration happen with no ``await`` in between, so the
        first live chunk follows the last replayed event: no gap, no duplicate.

        A reset (``event: reset`` carrying a snapshot, id = newest id) is sent instead
        of a replay when ``last_id`` is older than the buffer holds (events evicted) or
        newer than any id issued (an id from another server run, or made up).

        Parameters
        ----------
        symbols : frozenset of str or None
            Symbols wanted; None for all.
        events : frozenset of str
            Event types wanted.
        last_id : str or None
            The client's ``Last-Event-ID``; None or ``""`` for a fresh subscription.

        Returns
        -------
        Subscription

        Raises
        ------
        EventIdError
            ``last_id`` is malformed.
        RuntimeError
            The broker is closed.
        """
        if self._closed:
            raise RuntimeError("broker is closed")
        # Parse before touching any state so a bad id has no side effects.
        after = self.parse_id(last_id) if last_id else None
        sub = Subscription(symbols, events, self.max_backlog_bytes, on_close=self._on_closed)
        if after is not None:
            self._evict_old(self._clock())
            self._replay_into(sub, after)
        key = sub.key
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(symbols, events)
        group.members.add(sub)
        self._n_subs += 1
        return sub

    def _replay_into(self, sub: Subscription, after: int) -> None:
        newest = self._next_id - 1
        if after == newest:
            return  # up to date: nothing missed
        oldest = self._log.keys[0] if self._log else self._next_id
        if after > newest:
            self._send_reset(sub, after, "unknown_id")
            return
        if after < oldest - 1:
            self._send_reset(sub, after, "evicted")
            return
        self._replay_from(sub, after + 1 - oldest)

    def _replay_from(self, sub: Subscription, start: int) -> None:
        """Replay to ``sub`` the buffered events from position ``start`` on that match its
        filter, up to the newest: streamed by a :class:`ReplayCursor`, a chunk per take."""
        self.stats.replays += 1
        keys = self._log.keys
        if start >= len(keys):
            return
        after = keys[start - 1] if start > 0 else keys[0] - 1
        sub.attach_replay(
            ReplayCursor(self._log, self.replay_budget, self.stats, sub, after, keys[-1])
        )

    def _format_id(self, key: int) -> str:
        """The wire form of an internal id key (decimal here)."""
        return str(key)

    def _reset_event_id(self) -> str | None:
        """Id carried by a reset: the newest, so a reconnect after it resumes from there."""
        return str(self._next_id - 1)

    def _send_reset(self, sub: Subscription, after: int, reason: str) -> None:
        self.stats.resets += 1
        payload = {
            "reason": reason,
            "last_id": self._format_id(after),
            "snapshot": self.snapshot(sub.symbols),
        }
        data = encode_payload(payload)
        sub.push_preamble(encode_event(data, id=self._reset_event_id(), event="reset"), 1)

    def _on_closed(self, sub: Subscription) -> None:
        # Counted here, not at the push, so a heartbeat that tips the backlog counts too.
        if sub.close_reason == CloseReason.SLOW_CONSUMER:
            self.stats.slow_consumer_disconnects += 1
        self.unsubscribe(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` from fan-out (idempotent); does not close it."""
        group = self._groups.get(sub.key)
        if group is None or sub not in group.members:
            return
        group.members.discard(sub)
        self._n_subs -= 1
        if not group.members:
            del self._groups[sub.key]

    def subscriptions(self) -> list[Subscription]:
        """Every live subscription (for heartbeats and shutdown)."""
        return [s for g in self._groups.values() for s in g.members]

    # -- snapshot / close --------------------------------------------------------------

    def snapshot(self, symbols: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
        """Latest tick payload (with ``seq``) per symbol that has ticked.

        Parameters
        ----------
        symbols : frozenset of str, optional
            Restrict to these symbols.

        Returns
        -------
        dict
            ``{symbol: payload}``, sorted by symbol.
        """
        latest, seqs = self._latest, self._latest_seq
        names = sorted(latest if symbols is None else (s for s in symbols if s in latest))
        out: dict[str, dict[str, Any]] = {}
        for s in names:
            payload = dict(latest[s])
            seq = seqs.get(s)
            if seq is not None:  # (a Redis broker stores payloads with "seq" already)
                payload["seq"] = seq
            out[s] = payload
        return out

    def close(self) -> None:
        """Close every subscription and drop the buffer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for sub in self.subscriptions():
            sub.close(CloseReason.BROKER_CLOSED)
        self._groups.clear()
        self._n_subs = 0
        self._log.clear()
