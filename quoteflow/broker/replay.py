"""The replay log: the events kept for ``Last-Event-ID`` resume, and how a resume is
streamed out of it.

- :class:`ReplayLog` is tornado's chat-demo idea (a capped message list, "messages since
  cursor") as parallel deques bounded by count and by age, with no object per event (see
  its docstring: the garbage collector's view of it is what keeps the stream free of
  stalls);
- a resume is streamed out of that log by a :class:`ReplayCursor`, one chunk per write,
  never copied whole: 100 clients resuming from the oldest of 100,000 events would
  otherwise each hold a private copy of the buffer (14 MB each, issue 10), and the bytes
  of all replays in flight together are bounded by a :class:`ReplayBudget`.

Used by :class:`quoteflow.broker.fanout.LocalFanout`, the local fan-out of every broker.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Callable

from quoteflow.broker.base import BrokerStats, CloseReason, Subscription
from quoteflow.broker.settings import BufferSettings

__all__ = [
    "DEFAULT_REPLAY_MEMORY",
    "REPLAY_CHUNK",
    "REPLAY_SCAN_ROWS",
    "Reframe",
    "ReplayBudget",
    "ReplayCursor",
    "ReplayLog",
]

#: Turns a stored SSE frame into another framing's bytes: ``(key, event type, frame)``.
Reframe = Callable[[int, str, bytes], bytes]

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
        reframe: Reframe | None = None,
    ) -> tuple[list[bytes], int]:
        """Frames after key ``after`` up to key ``until`` that pass the filter.

        Stops after about ``max_bytes`` of frames (at least one frame) or ``max_rows``
        rows scanned. Returns the frames (passed through ``reframe`` when given: a
        subscription in another framing than SSE) and the key of the last row scanned
        (``after`` when none was).
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
                if reframe is not None:
                    frame = reframe(key, kind, frame)
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
    reframe : callable, optional
        Turns each stored SSE frame into the subscription's framing (see
        :data:`Reframe`); None for an SSE subscription.
    """

    __slots__ = (
        "_budget",
        "_log",
        "_reframe",
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
        reframe: Reframe | None = None,
    ) -> None:
        self._log = log
        self._reframe = reframe
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
                self.after,
                self.until,
                sub.symbols,
                sub.events,
                limit - size,
                reframe=self._reframe,
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
            self.after,
            self.until,
            sub.symbols,
            sub.events,
            max_bytes=1 << 62,
            max_rows=n,
            reframe=self._reframe,
        )
        self.after = last
        self._rescued.extend(parts)
        self._rescued_bytes += sum(map(len, parts))
        if self._rescued_bytes > sub.max_backlog_bytes:
            # The client reads more slowly than the buffer turns over.
            sub.close(CloseReason.SLOW_CONSUMER)
