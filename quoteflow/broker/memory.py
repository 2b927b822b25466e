"""In-process broker: integer ids ``1, 2, 3 ...``, publish straight into the local fan-out.

:class:`MemoryBroker` assigns ids, adds ``seq`` and frames each event for SSE exactly
once (:class:`~quoteflow.wire.payload.EventFramer`), then hands the batch to its
:class:`~quoteflow.broker.fanout.LocalFanout` (replay log, grouped fan-out, slow-consumer
cut-off, replay). What is specific to this broker is what an id means: ids increase
(contiguous, except a replay publishing its recording's own ids, which may have gaps:
:meth:`MemoryBroker._publish_given`), so a ``Last-Event-ID`` is either replayable,
evicted, or never issued; the replay position is looked up by key in the log
(:meth:`~quoteflow.broker.fanout.LocalFanout.replay_after`), never computed from it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quoteflow.broker.base import (
    Broker,
    BrokerStats,
    EventIdError,
    EventLike,
    Framing,
    Subscription,
)
from quoteflow.broker.fanout import LocalFanout
from quoteflow.broker.replay import DEFAULT_REPLAY_MEMORY, REPLAY_CHUNK, ReplayBudget, ReplayCursor
from quoteflow.broker.settings import BufferSettings
from quoteflow.wire.payload import EncodedBatch, EventFramer, given_ids, pre_encoded

__all__ = ["DEFAULT_REPLAY_MEMORY", "REPLAY_CHUNK", "MemoryBroker", "ReplayBudget", "ReplayCursor"]

log = logging.getLogger(__name__)

# Ids are non-negative decimal integers that fit an int64 (what a JavaScript client can
# also hold exactly up to 2**53; we will never get near either). Anything else - signs,
# spaces, non-ASCII digits, 50 nines - is not an id this broker issued.
_ID_RE = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1


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
        self.stats = BrokerStats()
        #: Replay log, groups and subscriptions (shared with the Redis consumer).
        self.fanout = LocalFanout(
            self.stats,
            str,
            buffer_size=buffer_size,
            buffer_age=buffer_age,
            max_backlog_bytes=max_backlog_bytes,
            replay_memory_bytes=replay_memory_bytes,
            clock=clock,
        )
        self.buffer_size = buffer_size
        self.buffer_age = self.fanout.buffer_age
        self.max_backlog_bytes = max_backlog_bytes
        self.replay_budget = self.fanout.replay_budget
        self._clock = clock
        self._log = self.fanout.log
        self._next_id = 1
        # Latest tick payload per symbol (the source's dict, without "seq") and its id;
        # snapshot() merges them, so publishing does not copy every payload.
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._latest_seq: dict[str, int] = {}
        # Payload + seq + SSE framing, once per event (quoteflow.wire).
        self._framer = EventFramer()

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
        return self.fanout.subscriber_count

    @property
    def group_count(self) -> int:
        """Number of distinct subscription filters and framings (fan-out groups)."""
        return self.fanout.group_count

    def restart_ids(self, gap: int) -> None:
        """Forget the replay buffer and continue ``gap`` ids higher (scenario ``restart``).

        What a restarted server with a persisted id counter looks like: a resume from any
        earlier id finds nothing to replay and gets ``event: reset`` ("evicted").
        """
        if gap < 1:
            raise ValueError(f"gap must be >= 1, got {gap}")
        self._log.clear()
        self._next_id = min(self._next_id + gap, _MAX_ID)

    # -- publish -----------------------------------------------------------------------

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
        if not batch or self.fanout.closed:
            return
        ids = given_ids(batch)
        if ids is not None:
            self._publish_given(batch, ids)
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
        self.fanout.append(keys, kinds, syms, frames_out, now)

    def _publish_given(self, batch: Sequence[EventLike], ids: list[int]) -> None:
        """Publish ``batch`` with the ids it brings (a replay with its original ids).

        Each run of consecutive ids is published as usual with the id counter set to the
        run's first id, so the replay log, the fan-out and ``seq`` are those of any other
        batch. An id not above the newest one issued would break "ids strictly increase"
        for every client: that event is dropped and counted (``stats.dropped``).
        """
        encoded = list(pre_encoded(batch))
        n = min(len(batch), len(ids))
        start = 0
        while start < n:
            if ids[start] < self._next_id:
                self.stats.dropped += 1
                log.warning(
                    "dropping replayed event with id %d: not above the newest id %d",
                    ids[start],
                    self._next_id - 1,
                )
                start += 1
                continue
            stop = start + 1
            while stop < n and ids[stop] == ids[stop - 1] + 1:
                stop += 1
            self._next_id = ids[start]
            self.publish(EncodedBatch(list(batch[start:stop]), encoded[start:stop]))
            start = stop

    # -- subscribe ---------------------------------------------------------------------

    def subscribe(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        last_id: str | None,
        framing: Framing = Framing.SSE,
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
        framing : Framing
            SSE (default) or WebSocket frames (``/ws``).

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
        fanout = self.fanout
        if fanout.closed:
            raise RuntimeError("broker is closed")
        # Parse before touching any state so a bad id has no side effects.
        after = self.parse_id(last_id) if last_id else None
        sub = fanout.open(symbols, events, framing)
        if after is not None:
            fanout.evict_old(self._clock())
            self._replay_into(sub, after)
        fanout.add(sub)
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
        self.fanout.replay_after(sub, after)

    def _send_reset(self, sub: Subscription, after: int, reason: str) -> None:
        # The reset carries the newest id, so a reconnect after it resumes from there.
        self.fanout.send_reset(
            sub, reason, str(after), self.snapshot(sub.symbols), str(self._next_id - 1)
        )

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` from fan-out (idempotent); does not close it."""
        self.fanout.unsubscribe(sub)

    def subscriptions(self) -> list[Subscription]:
        """Every live subscription (for heartbeats and shutdown)."""
        return self.fanout.subscriptions()

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
            payload["seq"] = seqs[s]
            out[s] = payload
        return out

    def close(self) -> None:
        """Close every subscription and drop the buffer (idempotent)."""
        self.fanout.close()
