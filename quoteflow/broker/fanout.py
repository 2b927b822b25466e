"""The local fan-out every broker is built around: replay log, groups, subscriptions.

:class:`LocalFanout` is the part of a broker that lives in one process (mercure's local
transport): the :class:`~quoteflow.broker.replay.ReplayLog`, the subscriber groups with
their encode-once, join-once fan-out and slow-consumer cut-off, the bookkeeping of
subscriptions, and the replay or reset that starts a resumed one. It does not assign
ids or decide what a ``Last-Event-ID`` means; its owner does:

- :class:`~quoteflow.broker.memory.MemoryBroker`: ``publish`` gives each event its id
  and SSE frame and calls :meth:`LocalFanout.append`;
- the Redis consumer (:mod:`quoteflow.broker.redis`): its reader frames what it reads
  from the stream and calls :meth:`LocalFanout.append`; the Redis producer is a separate
  part that writes to the stream and has no fan-out.

Hot-path design (the benchmark is 100 clients x 100 symbols x 10 ticks/s, and 10,000
connections):

- every event arrives here SSE-framed once (the log keeps those frames for replay);
- subscribers with the same filter ``(symbols, events)`` and framing form one group; for
  each batch a group's matching bytes are joined once and that single bytes object is
  pushed to every member: no per-event, per-client Python work;
- a WebSocket frame is built per event from its parts (id, type, payload text) only
  when a WebSocket group exists, once per batch, and joined per group like SSE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quoteflow.broker.base import ALL_EVENTS, BrokerStats, CloseReason, Framing, Subscription
from quoteflow.broker.replay import Reframe, ReplayBudget, ReplayCursor, ReplayLog
from quoteflow.broker.settings import BufferSettings
from quoteflow.wire.payload import encode_payload
from quoteflow.wire.sse import encode_event, event_data
from quoteflow.wire.ws import WsFramer, ws_event

__all__ = ["LocalFanout"]

_GroupKey = tuple[frozenset[str] | None, frozenset[str], Framing]


@dataclass(eq=False)
class _Group:
    symbols: frozenset[str] | None
    events: frozenset[str]
    framing: Framing
    members: set[Subscription] = field(default_factory=set)


class LocalFanout:
    """Replay log, fan-out groups and subscriptions of one process.

    Parameters
    ----------
    stats : BrokerStats
        The owner's counters (replays, resets, slow-consumer drops, replay budget).
    format_id : callable
        The wire form of an internal id key (``str`` for the memory broker's integers,
        ``"<ms>-<seq>"`` for Redis stream ids): the id of a WebSocket message.
    buffer_size : int
        Maximum number of events kept for replay.
    buffer_age : float
        Maximum age of a replayable event, in seconds.
    max_backlog_bytes : int
        Per-subscriber bound on unsent live bytes before it is dropped as a slow
        consumer.
    replay_memory_bytes : int
        Bound on replay bytes in flight to all resuming subscribers together
        (:class:`~quoteflow.broker.replay.ReplayBudget`).
    clock : callable
        Monotonic seconds, for buffer ages and latency stamps.

    Raises
    ------
    ValueError
        A bound is not positive.
    """

    def __init__(
        self,
        stats: BrokerStats,
        format_id: Callable[[int], str],
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
        self.stats = stats
        self.replay_budget = ReplayBudget(replay_memory_bytes, stats)
        self.clock = clock
        #: The events kept for replay (SSE frames; other framings are derived from them).
        self.log = ReplayLog(buffer_size)
        self.format_id = format_id
        self._groups: dict[_GroupKey, _Group] = {}
        self._n_subs = 0
        self._ws = WsFramer()
        self._reframes: dict[Framing, Reframe | None] = {
            Framing.SSE: None,
            Framing.WEBSOCKET: self._ws_frame,
        }
        self.closed = False

    # -- state -------------------------------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        """Number of subscriptions in the fan-out."""
        return self._n_subs

    @property
    def group_count(self) -> int:
        """Number of distinct (filter, framing) groups."""
        return len(self._groups)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription in the fan-out."""
        return [s for g in self._groups.values() for s in g.members]

    # -- events in ---------------------------------------------------------------------

    def evict_old(self, now: float) -> None:
        """Drop the events older than ``buffer_age``."""
        self.log.evict_before(now - self.buffer_age)

    def append(
        self,
        keys: list[int],
        kinds: list[str],
        symbols: list[str],
        frames: list[bytes],
        now: float,
        *,
        live: bool = True,
    ) -> None:
        """Store one batch for replay and, when ``live``, fan it out to every group.

        Parameters
        ----------
        keys, kinds, symbols, frames : list
            Parallel lists (see :class:`~quoteflow.broker.replay.ReplayLog`): id keys
            (increasing), event types, symbols and SSE frames with one line of data.
        now : float
            Monotonic time of the publish.
        live : bool
            False to store only (a Redis consumer priming its log from the stream: no
            subscriber could be owed those events, and nothing ages out of a fresh log).
        """
        if live:
            self.evict_old(now)
        self.log.extend(keys, kinds, symbols, frames, now)
        if live and self._groups:
            self._fan_out(keys, kinds, symbols, frames, now)

    def _ws_frame(self, key: int, kind: str, frame: bytes) -> bytes:
        """The WebSocket frame of a stored event, from its parts (id, type, payload)."""
        return self._ws.frame(self.format_id(key), kind, event_data(frame))

    def _fan_out(
        self,
        keys: list[int],
        kinds: list[str],
        symbols: list[str],
        frames: list[bytes],
        now: float,
    ) -> None:
        """Send one batch (parallel lists, as in :class:`ReplayLog`) to every group."""
        # Indexes by symbol are built lazily: only filtered groups need them.
        by_symbol: dict[str, list[int]] | None = None
        by_events: dict[tuple[Framing, frozenset[str]], tuple[bytes, int]] = {}
        framed: dict[Framing, list[bytes]] = {Framing.SSE: frames}
        for group in list(self._groups.values()):
            per_event = framed.get(group.framing)
            if per_event is None:
                # The first group of another framing in this batch: frame every event
                # once for all of them (only while such subscribers exist).
                reframe = self._reframes[group.framing]
                assert reframe is not None
                per_event = framed[group.framing] = [
                    reframe(k, t, f) for k, t, f in zip(keys, kinds, frames, strict=True)
                ]
            if group.symbols is None:
                cache_key = (group.framing, group.events)
                cached = by_events.get(cache_key)
                if cached is None:
                    if group.events >= ALL_EVENTS:
                        parts = per_event
                    else:
                        want = group.events
                        parts = [f for k, f in zip(kinds, per_event, strict=True) if k in want]
                    cached = (b"".join(parts), len(parts))
                    by_events[cache_key] = cached
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
                parts = [per_event[i] for i in idx if kinds[i] in group.events]
                n = len(parts)
                chunk = b"".join(parts)
            if n == 0:
                continue
            # Copy: a member crossing its backlog bound unsubscribes during the loop.
            for sub in tuple(group.members):
                sub.push(chunk, n, now)

    # -- subscriptions -----------------------------------------------------------------

    def open(
        self, symbols: frozenset[str] | None, events: frozenset[str], framing: Framing
    ) -> Subscription:
        """A new subscription, not yet in the fan-out (see :meth:`add`).

        Raises
        ------
        RuntimeError
            The fan-out is closed.
        """
        if self.closed:
            raise RuntimeError("broker is closed")
        return Subscription(
            symbols, events, self.max_backlog_bytes, on_close=self._on_closed, framing=framing
        )

    def add(self, sub: Subscription) -> None:
        """Put ``sub`` into the fan-out: every later batch reaches it.

        Called after its replay was attached (or its reset queued) with no ``await`` in
        between, so the first live chunk follows the last replayed event: no gap, no
        duplicate.
        """
        key = sub.key
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(sub.symbols, sub.events, sub.framing)
        group.members.add(sub)
        self._n_subs += 1

    def replay_after(self, sub: Subscription, after: int) -> None:
        """Replay to ``sub`` the stored events with keys above ``after`` that match its
        filter, up to the newest: streamed by a
        :class:`~quoteflow.broker.replay.ReplayCursor`, a chunk per take, in its framing."""
        self.stats.replays += 1
        keys = self.log.keys
        start = self.log.position_after(after)
        if start >= len(keys):
            return
        first = keys[start - 1] if start > 0 else keys[0] - 1
        sub.attach_replay(
            ReplayCursor(
                self.log,
                self.replay_budget,
                self.stats,
                sub,
                first,
                keys[-1],
                reframe=self._reframes[sub.framing],
            )
        )

    def send_reset(
        self,
        sub: Subscription,
        reason: str,
        last_id: str,
        snapshot: dict[str, dict[str, Any]],
        event_id: str | None,
    ) -> None:
        """Queue ``event: reset`` (``{"reason", "last_id", "snapshot"}``) before live data.

        Parameters
        ----------
        sub : Subscription
            The resuming subscription.
        reason : str
            ``"evicted"``, ``"unknown_id"``, ``"gap"``.
        last_id : str
            The client's id.
        snapshot : dict
            Latest tick per symbol of the subscription.
        event_id : str or None
            Id the reset carries (the newest: a reconnect after it resumes from there).
        """
        self.stats.resets += 1
        data = encode_payload({"reason": reason, "last_id": last_id, "snapshot": snapshot})
        if sub.framing is Framing.WEBSOCKET:
            chunk = ws_event(event_id, "reset", data.encode())
        else:
            chunk = encode_event(data, id=event_id, event="reset")
        sub.push_preamble(chunk, 1)

    def _on_closed(self, sub: Subscription) -> None:
        # Counted here, not at the push, so a heartbeat that tips the backlog counts too.
        if sub.close_reason == CloseReason.SLOW_CONSUMER:
            self.stats.slow_consumer_disconnects += 1
        self.unsubscribe(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` from the fan-out (idempotent); does not close it."""
        group = self._groups.get(sub.key)
        if group is None or sub not in group.members:
            return
        group.members.discard(sub)
        self._n_subs -= 1
        if not group.members:
            del self._groups[sub.key]

    def close(self) -> None:
        """Close every subscription (``broker_closed``) and drop the log (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for sub in self.subscriptions():
            sub.close(CloseReason.BROKER_CLOSED)
        self._groups.clear()
        self._n_subs = 0
        self.log.clear()
