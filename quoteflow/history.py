"""The history behind ``GET /history``: a bounded per-symbol store of bars and ticks.

The store is fed like any client: one broker subscription to every symbol and event type
(:meth:`Broker.subscribe`, no resume id), whose SSE bytes it reads with the one parser
(:class:`quoteflow.wire.parser.SSEParser`). So it holds exactly the events, with exactly
the ids, that a client connected since the server started received, on every broker: the
memory broker's integer ids or the Redis stream ids. It depends on nothing but the
:class:`~quoteflow.broker.base.Broker` interface.

With a Redis broker (``archive_url``), completed base bars also go to Redis, one sorted
set per symbol (``<archive_key>:<symbol>``, score = bar start in ms, member = the bar and
its event id as canonical JSON, bounded to ``max_bars``), and bars are answered from
there: every serving instance writes the bars it reads (``ZADD NX``: the same member from
every instance, so writing twice changes nothing) and reads the same sets, so every
instance answers the same, one started later included (:class:`RedisBarArchive`).

Per symbol it keeps the newest ``max_bars`` base bars (the market's ``event: bar``) and
the newest ``max_ticks`` ticks, each with its event id. Longer intervals are rolled up
from the base bars when asked (:func:`quoteflow.wire.bars.roll_up`, the rule every client
uses too), so no interval costs memory of its own.

The subscription's writer consumes every chunk synchronously inside the broker's
fan-out (:class:`~quoteflow.broker.base.SubscriptionWriter`), so the store is never
behind the broker at an ``await`` point: a history answer's ``last_event_id`` is always
an id the stream can resume from.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quoteflow.broker.base import ALL_EVENTS, Broker, Subscription
from quoteflow.wire.bars import BASE, Bar, interval_ms, iso_ms, roll_up
from quoteflow.wire.parser import SSEParser

__all__ = ["HistorySettings", "HistoryStore", "RedisBarArchive"]

log = logging.getLogger(__name__)

#: Base-bar spacings observed before an unknown bar interval is inferred from them.
_INFER_AFTER = 5


@dataclass(frozen=True)
class HistorySettings:
    """Bounds of the history store (the ``quoteflow serve`` flags of the same names).

    Attributes
    ----------
    max_bars : int
        Base bars kept per symbol (at 5 s bars, 2000 is 2 h 47 min); 0 keeps none.
    max_ticks : int
        Ticks kept per symbol; 0 keeps none (the store then does not read ticks at all).
    max_symbol_bytes : int
        The most payload text kept per symbol, for its ticks and for its bars each
        (512 KiB: ~2000 ticks of the market's ~230 bytes, so the counts bind first);
        a feed of large payloads (a relay) keeps fewer rather than growing memory.
    archive_url : str or None
        Redis URL where completed base bars are kept for every instance (set by
        ``quoteflow serve --broker redis://...``); None: in this process only.
    archive_key : str
        Prefix of the archive's keys (one sorted set per symbol).
    """

    max_bars: int = 2000
    max_ticks: int = 1000
    max_symbol_bytes: int = 512 * 1024
    archive_url: str | None = None
    archive_key: str = "quoteflow:history"

    def __post_init__(self) -> None:
        if self.max_bars < 0:
            raise ValueError(f"history max_bars must be >= 0, got {self.max_bars}")
        if self.max_ticks < 0:
            raise ValueError(f"history max_ticks must be >= 0, got {self.max_ticks}")
        if self.max_symbol_bytes < 1:
            raise ValueError(f"history max_symbol_bytes must be >= 1, got {self.max_symbol_bytes}")


def _base_of(spacings: Sequence[int]) -> float | None:
    """The base bar interval in ms from the spacings of consecutive base bars: their
    median (a skipped tick only makes one spacing longer), to 10 ms (the pacing's jitter
    is a few ms) when it is longer than that. A fast replay closes bars milliseconds
    apart: then the median as it is (rounding made it 0, and every roll-up divided by
    zero: a 500 for ``/history`` under ``--replay AAPL``). None when it is not positive.
    """
    median = float(statistics.median(spacings))
    rounded = float(round(median, -1))
    if rounded > 0:
        return rounded
    return median if median > 0 else None


class _SymbolHistory:
    """One symbol's events as parallel deques of strings and ints, the payloads as the
    JSON text received (decoded when asked): no object per event, so nothing here is
    tracked by the garbage collector (see ``broker.memory.ReplayLog``), and a tick costs
    no JSON decoding on the hot path."""

    __slots__ = (
        "bar_bytes",
        "bar_ids",
        "bar_starts",
        "bars",
        "max_bytes",
        "tick_bytes",
        "tick_ids",
        "ticks",
        "truncated",
    )

    def __init__(self, max_bars: int, max_ticks: int, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.tick_bytes = 0
        self.bar_bytes = 0
        self.bars: deque[str] = deque(maxlen=max_bars)
        self.bar_ids: deque[str | None] = deque(maxlen=max_bars)
        self.bar_starts: deque[int] = deque(maxlen=max_bars)
        self.ticks: deque[str] = deque(maxlen=max_ticks)
        self.tick_ids: deque[str | None] = deque(maxlen=max_ticks)
        #: True once a bar was evicted: the oldest rolled-up bucket may be incomplete.
        self.truncated = False

    def add_tick(self, text: str, event_id: str | None) -> None:
        """Keep one tick: the newest ``max_ticks`` of them within ``max_bytes``."""
        ticks = self.ticks
        if len(ticks) == ticks.maxlen:
            self.tick_bytes -= len(ticks[0])
        ticks.append(text)
        self.tick_ids.append(event_id)
        self.tick_bytes += len(text)
        while self.tick_bytes > self.max_bytes and len(ticks) > 1:
            self.tick_bytes -= len(ticks.popleft())
            self.tick_ids.popleft()

    def add_bar(self, text: str, event_id: str | None, start: int) -> None:
        """Keep one base bar: the newest ``max_bars`` of them within ``max_bytes``."""
        bars = self.bars
        if len(bars) == bars.maxlen:
            self.truncated = True
            self.bar_bytes -= len(bars[0])
        bars.append(text)
        self.bar_ids.append(event_id)
        self.bar_starts.append(start)
        self.bar_bytes += len(text)
        while self.bar_bytes > self.max_bytes and len(bars) > 1:
            self.truncated = True
            self.bar_bytes -= len(bars.popleft())
            self.bar_ids.popleft()
            self.bar_starts.popleft()

    def bar_pairs(self) -> list[tuple[Bar, str | None]]:
        out = []
        for text, event_id in zip(self.bars, self.bar_ids, strict=True):
            out.append((Bar.from_payload(json.loads(text)), event_id))
        return out


class HistoryStore:
    """Completed bars and recent ticks per symbol, fed by a broker subscription.

    Parameters
    ----------
    bar_interval : float, optional
        The market's bar interval in seconds. None (a relay, a serving-only cluster
        member): inferred from the spacing of the first base bars seen.
    settings : HistorySettings, optional
        Bounds.
    """

    def __init__(
        self, bar_interval: float | None = None, settings: HistorySettings | None = None
    ) -> None:
        self.settings = settings or HistorySettings()
        self._declared_ms = bar_interval * 1000 if bar_interval else None
        self._inferred_ms: float | None = None
        self._spacings: list[int] = []
        self._symbols: dict[str, _SymbolHistory] = {}
        self._parser = SSEParser()
        self._sub: Subscription | None = None
        #: The broker's id arithmetic (:meth:`Broker.id_before`), once attached.
        self._id_before: Callable[[str], str] | None = None
        #: Events read from the subscription (ticks and bars).
        self.events_seen = 0
        s = self.settings
        self.archive = (
            RedisBarArchive(s.archive_url, s.archive_key, s.max_bars)
            if s.archive_url and s.max_bars
            else None
        )

    async def start(self) -> None:
        """Connect the archive, if any (called once the server runs)."""
        if self.archive is not None:
            await self.archive.start()

    async def aclose(self) -> None:
        """Stop reading and close the archive."""
        self.detach()
        if self.archive is not None:
            await self.archive.aclose()

    # -- feeding -----------------------------------------------------------------------

    def attach(self, broker: Broker) -> None:
        """Subscribe to every symbol of ``broker`` (fresh, no resume id) and start reading."""
        if self._sub is not None:
            return
        self._id_before = broker.id_before
        s = self.settings
        if not (s.max_bars or s.max_ticks):
            return
        events = ALL_EVENTS if s.max_ticks else frozenset({"bar"})
        sub = broker.subscribe(None, events, None)
        sub.set_writer(self)
        self._sub = sub

    def detach(self) -> None:
        """Stop reading (the broker's own close also ends the subscription)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.set_writer(None)
            sub.close("shutdown")

    def try_write(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        """:class:`~quoteflow.broker.base.SubscriptionWriter`: read ``chunk`` now."""
        self.feed(chunk)
        return True

    def wake(self) -> None:
        """:class:`~quoteflow.broker.base.SubscriptionWriter`: read whatever was queued."""
        sub = self._sub
        if sub is None or sub.closed:
            return
        while sub.has_pending():
            delivery = sub.take()
            self.feed(delivery.data)
            sub.written()

    def feed(self, data: bytes) -> None:
        """Read SSE bytes (any chunking) and store the ticks and bars they complete."""
        keep_ticks = self.settings.max_ticks > 0
        for ev in self._parser.feed(data):
            kind = ev.event
            try:
                if kind == "tick":
                    if keep_ticks:
                        self._history(_symbol_of(ev.data)).add_tick(ev.data, ev.id)
                elif kind == "bar":
                    payload = json.loads(ev.data)
                    symbol = payload["symbol"]
                    if not isinstance(symbol, str):
                        raise TypeError("symbol is not a string")
                    self._add_bar(symbol, Bar.from_payload(payload), ev.data, ev.id)
                else:
                    continue  # (a fresh subscription gets no reset; nothing else is kept)
            except (ValueError, KeyError, TypeError) as exc:
                log.debug("history: skipping a %s event %s: %s", kind, ev.id, exc)
                continue
            self.events_seen += 1

    def _history(self, symbol: str) -> _SymbolHistory:
        h = self._symbols.get(symbol)
        if h is None:
            s = self.settings
            h = self._symbols[symbol] = _SymbolHistory(s.max_bars, s.max_ticks, s.max_symbol_bytes)
        return h

    def _add_bar(self, symbol: str, bar: Bar, text: str, event_id: str | None) -> None:
        if not self.settings.max_bars:
            return
        start = iso_ms(bar.start)
        h = self._history(symbol)
        if h.bar_starts:
            if start <= h.bar_starts[-1]:
                return  # not after the newest: a source restart rewound its clock
            if self.base_ms is None:
                self._spacings.append(start - h.bar_starts[-1])
        h.add_bar(text, event_id, start)
        if self.archive is not None:
            self.archive.add(symbol, bar, start, event_id)

    # -- reading -----------------------------------------------------------------------

    @property
    def base_ms(self) -> float | None:
        """The base bar interval in ms: declared, else inferred once bars were seen."""
        if self._declared_ms is not None:
            return self._declared_ms
        if self._inferred_ms is None and len(self._spacings) >= _INFER_AFTER:
            # The median spacing of consecutive base bars (a skipped tick only makes one
            # spacing longer), to 10 ms: the pacing's jitter is a few ms.
            self._inferred_ms = _base_of(self._spacings)
        return self._inferred_ms

    def bars(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[list[Bar], str | None]:
        """The newest ``limit`` complete bars of ``interval`` starting in ``[start_ms, end_ms)``,
        from this process's own bars (:meth:`abars` asks the archive when there is one).

        Returns
        -------
        bars, last_event_id
            Oldest first; the id of the last event the bars include (None when there
            are no bars).

        Raises
        ------
        ValueError
            ``interval`` is unknown or not a multiple of the base interval.
        LookupError
            The base interval is not known yet (fewer bars seen than it takes to infer it).
        """
        h = self._symbols.get(symbol)
        pairs = h.bar_pairs() if h is not None else []
        truncated = h is not None and h.truncated
        return self._select(pairs, truncated, self.base_ms, interval, start_ms, end_ms, limit)

    async def abars(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[list[Bar], str | None]:
        """:meth:`bars`, from the archive when there is one (the same on every instance).

        Raises
        ------
        ValueError, LookupError
            As :meth:`bars`.
        ConnectionError
            The archive (Redis) cannot be read.
        """
        if self.archive is None:
            return self.bars(symbol, interval, start_ms, end_ms, limit)
        pairs = await self.archive.fetch(symbol)
        truncated = len(pairs) >= self.settings.max_bars
        base = self.base_ms
        if base is None and len(pairs) > _INFER_AFTER:
            # An instance started later: infer from the archived bars.
            starts = [iso_ms(b.start) for b, _ in pairs[-_INFER_AFTER - 1 :]]
            base = self._inferred_ms = _base_of(_gaps(starts))
        return self._select(pairs, truncated, base, interval, start_ms, end_ms, limit)

    def _select(
        self,
        pairs: Sequence[tuple[Bar, str | None]],
        truncated: bool,
        base: float | None,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
    ) -> tuple[list[Bar], str | None]:
        if base is None and interval == BASE:
            base = 1.0  # the base bars as they are: their length does not matter
        if base is None:
            if not pairs:
                return [], None
            raise LookupError("the market's bar interval is not known yet; retry in a few bars")
        done = roll_up(pairs, interval, base)  # (also validates the interval)
        if truncated and interval != BASE and interval_ms(interval) > base * 1.5:
            done = done[1:]  # the oldest bucket's first base bars may have been evicted
        lo = 0 if start_ms is None else bisect.bisect_left(done, start_ms, key=_start_of)
        hi = len(done) if end_ms is None else bisect.bisect_left(done, end_ms, key=_start_of)
        chosen = done[max(lo, hi - limit) : hi]
        if chosen:
            return [bar for bar, _ in chosen], chosen[-1][1]
        if end_ms is None:
            return [], self._resume_before_open_bucket(pairs, done)
        return [], None

    def _resume_before_open_bucket(
        self, pairs: Sequence[tuple[Bar, str | None]], done: Sequence[tuple[Bar, str | None]]
    ) -> str | None:
        """Where to stream from when no complete bar is in the answer: just before the
        first base bar of the bucket still open (so the client builds it whole), else
        after the last complete bar, else None (no bars yet: stream live)."""
        last_done = done[-1][1] if done else None
        if last_done is None:
            first_open = pairs[0][1] if pairs else None
        else:
            ids = [event_id for _, event_id in pairs]
            after = ids.index(last_done) + 1 if last_done in ids else len(ids)
            first_open = ids[after] if after < len(ids) else None
        if first_open is not None and self._id_before is not None:
            try:
                return self._id_before(first_open)
            except ValueError:  # an id not of the broker's form (EventIdError)
                return last_done
        return last_done

    def ticks(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The newest ``limit`` ticks with ``ts`` in ``[start_ms, end_ms)``.

        Returns
        -------
        ticks, last_event_id
            Payloads oldest first, each with its event ``"id"``; the last one's id.
        """
        h = self._symbols.get(symbol)
        if h is None or not h.ticks:
            return [], None
        ticks: list[dict[str, Any]] = []
        times: list[int] = []
        for text, event_id in zip(h.ticks, h.tick_ids, strict=True):
            try:
                payload = json.loads(text)
                ts = iso_ms(payload["ts"])
            except (ValueError, KeyError, TypeError):
                continue  # not a tick payload: nothing to show
            ticks.append({"id": event_id, **payload})
            times.append(ts)
        lo = 0 if start_ms is None else bisect.bisect_left(times, start_ms)
        hi = len(ticks) if end_ms is None else bisect.bisect_left(times, end_ms)
        chosen = ticks[max(lo, hi - limit) : hi]
        if not chosen:
            return [], None
        return chosen, chosen[-1]["id"]

    def symbols(self) -> Mapping[str, int]:
        """Base bars held per symbol (for tests and ``/healthz``-style summaries)."""
        return {s: len(h.bars) for s, h in self._symbols.items()}


def _gaps(starts: Sequence[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(starts)]


def _start_of(item: tuple[Bar, str | None]) -> int:
    return iso_ms(item[0].start)


_SYMBOL_PREFIX = '{"symbol":"'


def _symbol_of(text: str) -> str:
    """The ``symbol`` of a payload; without decoding it when it starts with it (as
    quoteflow's own encoder writes it), else by decoding."""
    if text.startswith(_SYMBOL_PREFIX):
        end = text.find('"', len(_SYMBOL_PREFIX))
        name = text[len(_SYMBOL_PREFIX) : end]
        if end > 0 and "\\" not in name:
            return name
    symbol = json.loads(text)["symbol"]
    if not isinstance(symbol, str):
        raise TypeError("symbol is not a string")
    return symbol


class RedisBarArchive:
    """Completed base bars in Redis, shared by every instance of a cluster.

    One sorted set per symbol, ``<key>:<symbol>``: score = the bar's start in Unix ms
    (exact in a double), member = ``{"id", "start", "end", "open", ...}`` as canonical
    JSON, so every instance writes the very same member for the same bar and ``ZADD NX``
    makes a second write a no-op. Each set is trimmed to the newest ``max_bars``
    (``ZREMRANGEBYRANK``). Writes are queued (bounded) and sent in pipelines by a
    background task; while Redis is down they wait, and the oldest are dropped past the
    bound (another instance has usually written them). Redis commands: ZADD, ZRANGE,
    ZREMRANGEBYRANK (https://redis.io/docs/latest/develop/data-types/sorted-sets/).

    Parameters
    ----------
    url : str
        ``redis://`` (or ``rediss://``, ``unix://``) URL.
    key : str
        Key prefix.
    max_bars : int
        Bars kept per symbol.
    """

    #: Bars waiting to be written, beyond which the oldest are dropped.
    MAX_PENDING = 100_000

    def __init__(self, url: str, key: str, max_bars: int) -> None:
        self.url = url
        self.key = key
        self.max_bars = max_bars
        self._pending: deque[tuple[str, str, int]] = deque(maxlen=self.MAX_PENDING)
        self._wake = asyncio.Event()
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None
        #: Write failures since start (Redis unreachable).
        self.write_errors = 0

    def symbol_key(self, symbol: str) -> str:
        """The sorted set of ``symbol``."""
        return f"{self.key}:{symbol}"

    async def start(self) -> None:
        """Create the client and the writer task (connections are made on first use)."""
        if self._task is not None:
            return
        import redis.asyncio

        self._redis = redis.asyncio.Redis.from_url(self.url)
        self._task = asyncio.get_running_loop().create_task(self._writer())

    def add(self, symbol: str, bar: Bar, start_ms: int, event_id: str | None) -> None:
        """Queue one completed base bar for writing."""
        member = json.dumps(
            {"id": event_id, **bar.to_dict()}, separators=(",", ":"), sort_keys=True
        )
        self._pending.append((symbol, member, start_ms))
        self._wake.set()

    async def _writer(self) -> None:
        failing = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = list(self._pending)
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for symbol, member, score in batch:
                        pipe.zadd(self.symbol_key(symbol), {member: score}, nx=True)
                    for symbol in {b[0] for b in batch}:
                        pipe.zremrangebyrank(self.symbol_key(symbol), 0, -self.max_bars - 1)
                    await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis down: keep the bars, retry
                    self.write_errors += 1
                    if not failing:
                        log.warning("history: cannot write bars to Redis (%s); retrying", exc)
                    failing = True
                    await asyncio.sleep(0.5)
                    continue
                failing = False
                for _ in range(len(batch)):
                    if self._pending:
                        self._pending.popleft()

    async def fetch(self, symbol: str) -> list[tuple[Bar, str | None]]:
        """The archived bars of ``symbol``, oldest first, with their event ids.

        Raises
        ------
        ConnectionError
            Redis cannot be reached.
        """
        if self._redis is None:
            raise ConnectionError("the history archive is not started")
        try:
            rows = await self._redis.zrange(self.symbol_key(symbol), -self.max_bars, -1)
        except Exception as exc:
            raise ConnectionError(f"history archive (Redis) unreachable: {exc}") from None
        out: list[tuple[Bar, str | None]] = []
        for raw in rows:
            try:
                d = json.loads(raw)
                out.append((Bar.from_payload(d), d.get("id")))
            except (ValueError, KeyError, TypeError):
                log.warning("history: skipping a malformed archived bar of %r", symbol)
        return out

    async def aclose(self) -> None:
        """Stop the writer (after one last attempt at what is queued) and close."""
        task, self._task = self._task, None
        if task is not None:
            if self._pending:
                self._wake.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._drained()), 1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def _drained(self) -> None:
        while self._pending:
            await asyncio.sleep(0.01)  # polling a condition: the writer empties the queue
