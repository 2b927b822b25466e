"""The broker interface: publish, subscribe-from-id, latest snapshot.

A broker sits between a :class:`~quoteflow.sources.Source` and the HTTP layer. It gives
every event an id, encodes it to SSE bytes once, keeps a replay buffer for resume with
``Last-Event-ID`` and fans the bytes out to subscribers. Two implementations share this
interface (the shape follows mercure's ``Transport``): :mod:`quoteflow.broker.memory`
(one process, integer ids) and :mod:`quoteflow.broker.redis` (Redis Streams, shared by
several server instances; ids such as ``"1712345678901-0"``). Ids therefore cross the
interface as strings. :func:`quoteflow.broker.broker_from_url` turns a ``--broker`` URL
into one of them; nothing else names a concrete broker.

What the server needs from every broker is declared on :class:`Broker` (``start``,
``aclose``, :attr:`Broker.produces`, :meth:`Broker.attach_source`,
:meth:`Broker.remote_catalog`); what only some brokers have is a small
``runtime_checkable`` protocol (:class:`BackendLink`: a backend that can be down).

The subscriber side is the :class:`Subscription` defined here, shared by every broker:
the broker pushes ready-made byte chunks, the HTTP handler awaits :meth:`Subscription.wait`
and writes everything pending with one :meth:`Subscription.take` (coalescing). A
subscription whose unsent backlog exceeds its bound is closed with reason
``"slow_consumer"`` instead of growing memory or stalling the publisher.

A handler may instead register a :class:`SubscriptionWriter` (:meth:`Subscription.set_writer`),
which the broker's push offers each chunk synchronously and which writes it to the socket
at once when no write is in flight. At 10,000 streams this saves a queue, a join and a
coroutine wake-up (a future, a loop callback, a task step) per stream per batch, which
were most of the cost of a small write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from quoteflow.errors import QuoteflowError
from quoteflow.sources import Catalog
from quoteflow.wire.payload import EVENT_TYPES
from quoteflow.wire.sse import encode_comment
from quoteflow.wire.ws import PING_FRAME

__all__ = [
    "ALL_EVENTS",
    "BackendLink",
    "Broker",
    "BrokerStats",
    "CloseReason",
    "Delivery",
    "EventIdError",
    "EventLike",
    "Framing",
    "ReplayFeed",
    "Subscription",
    "SubscriptionWriter",
]

log = logging.getLogger(__name__)

#: Event types a client may subscribe to (``events=`` query parameter).
ALL_EVENTS: frozenset[str] = EVENT_TYPES


class CloseReason:
    """Why a subscription ended (the string values are used in logs and metrics)."""

    SLOW_CONSUMER = "slow_consumer"
    SHUTDOWN = "shutdown"
    CLIENT_GONE = "client_gone"
    BROKER_CLOSED = "broker_closed"
    TOKEN_EXPIRED = "token_expired"
    #: A clustered broker could not read up to the client's id in time (the client
    #: comes back with the same id; see ``RedisBroker``).
    CATCH_UP_TIMEOUT = "catch_up_timeout"


class Framing(enum.Enum):
    """How a subscription's events are put on the wire; chosen when it is opened.

    The broker fans out per framing: each event is framed once per framing that has a
    subscriber (SSE always, for the replay log; a WebSocket frame only while a
    WebSocket subscription exists), and joined once per group and batch.
    """

    #: ``text/event-stream`` (:mod:`quoteflow.wire.sse`), ``/stream``.
    SSE = "sse"
    #: One WebSocket text frame per event (:mod:`quoteflow.wire.ws`), ``/ws``.
    WEBSOCKET = "websocket"

    @property
    def heartbeat(self) -> bytes:
        """What an idle stream of this framing is sent: ``: keepalive``, or a ping frame."""
        return _HEARTBEATS[self]


_HEARTBEATS = {Framing.SSE: encode_comment("keepalive"), Framing.WEBSOCKET: PING_FRAME}


class EventIdError(QuoteflowError, ValueError):
    """A ``Last-Event-ID`` that is not an id this broker could ever have issued."""


class EventLike(Protocol):
    """What the broker needs from an event (:class:`quoteflow.sources.MarketEvent`)."""

    @property
    def event(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


class SubscriptionWriter(Protocol):
    """Writes a subscription's data to its socket as it arrives (see
    :meth:`Subscription.set_writer`)."""

    def try_write(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        """Write ``chunk`` now if no write is in flight; True if it was consumed."""
        ...

    def wake(self) -> None:
        """Data was queued or the subscription closed: take and write when possible."""
        ...


class ReplayFeed(Protocol):
    """Where a resuming subscription's replay comes from, a chunk at a time.

    A replay is never materialised whole: :meth:`Subscription.take` pulls the next chunk
    only when the previous one has been written, so a client that does not read holds
    one chunk, not the whole buffer (:class:`quoteflow.broker.replay.ReplayCursor`).
    """

    def ready(self) -> bool:
        """True when a chunk may be pulled now (else the subscription is woken later)."""
        ...

    def pull(self, max_bytes: int) -> tuple[bytes, int, bool]:
        """The next chunk: ``(data, n_events, finished)``; about ``max_bytes`` at most."""
        ...

    def release(self, n_bytes: int) -> None:
        """``n_bytes`` pulled earlier have been written (or dropped)."""
        ...

    def cancel(self) -> None:
        """The subscription closed: stop (release any wait)."""
        ...


class Delivery(NamedTuple):
    """Everything pending for one subscriber, taken at once and written with one write.

    Attributes
    ----------
    data : bytes
        SSE bytes, ready for the socket.
    events : int
        Number of events in ``data`` (heartbeats and the ``retry`` line not counted).
    published_at : float or None
        ``time.monotonic()`` at which the oldest chunk in ``data`` was published, for the
        delivery-latency histogram; None when ``data`` holds no published event.
    """

    data: bytes
    events: int
    published_at: float | None


# tuple.__new__ skips the NamedTuple's Python-level __new__ on the per-write path.
_new_delivery = tuple.__new__


@dataclass
class BrokerStats:
    """Plain counters a broker keeps; the server exports them as Prometheus metrics.

    Kept as ints (not Prometheus objects) so that the broker does not depend on the
    server layer and the hot path pays one integer add.
    """

    published: dict[str, int] = field(default_factory=dict)
    slow_consumer_disconnects: int = 0
    replays: int = 0
    replayed_events: int = 0
    #: Replay bytes pulled from the buffer and not yet written, over all subscriptions.
    replay_bytes_in_flight: int = 0
    #: Times a replay waited for the global replay memory budget.
    replay_waits: int = 0
    resets: int = 0
    dropped: int = 0


class Subscription:
    """One subscriber's pending bytes, filled by the broker and drained by a handler.

    Parameters
    ----------
    symbols : frozenset of str or None
        Symbols this subscriber wants; None means every symbol.
    events : frozenset of str
        Event types this subscriber wants (subset of :data:`ALL_EVENTS`).
    max_backlog_bytes : int
        Bound on bytes queued here while the handler is still writing the previous
        take; beyond it the subscription is closed as a slow consumer.
    on_close : callable, optional
        Called once with the subscription when it closes (the broker unregisters it).
    framing : Framing
        How its bytes are framed (the broker pushes them ready for the socket).

    Notes
    -----
    Everything runs on the event loop thread; there is no lock. The handler must take
    again only after its previous flush completed: while a flush is outstanding (the
    client is not reading, the socket buffers are full) new chunks pile up here, which
    is exactly the backlog the bound measures.
    """

    __slots__ = (
        "_backlog",
        "_chunks",
        "_close_callbacks",
        "_events_pending",
        "_in_flight",
        "_oldest",
        "_preamble",
        "_preamble_events",
        "_replay",
        "_replay_from",
        "_waiter",
        "_writer",
        "close_reason",
        "events",
        "framing",
        "last_activity",
        "max_backlog_bytes",
        "symbols",
    )

    def __init__(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        max_backlog_bytes: int,
        on_close: Callable[[Subscription], None] | None = None,
        framing: Framing = Framing.SSE,
    ) -> None:
        self.symbols = symbols
        self.events = events
        self.framing = framing
        self.max_backlog_bytes = max_backlog_bytes
        self.close_reason: str | None = None
        #: ``time.monotonic()`` of the last chunk queued (heartbeats are sent when idle).
        self.last_activity = time.monotonic()
        self._chunks: list[bytes] = []
        self._preamble: list[bytes] = []
        self._preamble_events = 0
        self._backlog = 0
        self._events_pending = 0
        self._oldest: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: SubscriptionWriter | None = None
        #: The replay still to send (resume), pulled a chunk per take; then None.
        self._replay: ReplayFeed | None = None
        #: The feed of the last replay chunk taken, and its size, until it is written.
        self._replay_from: ReplayFeed | None = None
        self._in_flight = 0
        self._close_callbacks: list[Callable[[Subscription], None]] = []
        if on_close is not None:
            self._close_callbacks.append(on_close)

    @property
    def key(self) -> tuple[frozenset[str] | None, frozenset[str], Framing]:
        """The filter and framing; subscribers with equal keys share one fan-out group."""
        return (self.symbols, self.events, self.framing)

    @property
    def closed(self) -> bool:
        """True once the subscription has ended (see :attr:`close_reason`)."""
        return self.close_reason is not None

    @property
    def backlog_bytes(self) -> int:
        """Bytes of live data queued and not yet taken."""
        return self._backlog

    @property
    def writer(self) -> SubscriptionWriter | None:
        """The writer set by :meth:`set_writer`, if any."""
        return self._writer

    @property
    def replaying(self) -> bool:
        """True while part of a replay is still to be taken (live data waits behind it)."""
        return self._replay is not None

    def add_close_callback(self, callback: Callable[[Subscription], None]) -> None:
        """Call ``callback(self)`` when the subscription closes (now, if it already has)."""
        if self.closed:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    # -- broker side -------------------------------------------------------------------

    def push(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        """Queue ``chunk`` (``n_events`` published events); False if now closed as slow.

        Parameters
        ----------
        chunk : bytes
            Encoded SSE events, shared with every other member of the group.
        n_events : int
            How many events ``chunk`` holds.
        published_at : float
            ``time.monotonic()`` of the publish.

        Returns
        -------
        bool
            False when the backlog bound was crossed and the subscription closed.
        """
        if self.close_reason is not None:
            return False
        writer = self._writer
        if writer is not None and not self._chunks and not self._preamble and not self._replay:
            # Nothing queued: the writer may put the chunk on the socket right away, the
            # cheapest path there is (no queue, no join, no wake-up).
            try:
                taken = writer.try_write(chunk, n_events, published_at)
            except Exception:
                self._writer_failed()
                return False
            if taken:
                self.last_activity = published_at
                return True
        self._backlog += len(chunk)
        if self._backlog > self.max_backlog_bytes:
            # The client does not drain its socket: cut it off (mercure's rule) rather
            # than buffer without bound or slow the publisher down for everyone.
            self.close(CloseReason.SLOW_CONSUMER)
            return False
        self._chunks.append(chunk)
        self._events_pending += n_events
        if self._oldest is None:
            self._oldest = published_at
        self.last_activity = published_at
        if self._replay is None:
            # (During a replay the writer is driven by the replay's own steps: waking it
            # here would build a replay chunk inside the publisher's fan-out loop.)
            self._wake()
        return True

    def push_preamble(self, chunk: bytes, n_events: int = 0) -> None:
        """Queue bytes sent before live data (retry line, reset event).

        Not counted against the backlog bound: these are small, one per subscription.
        A replay goes through :meth:`attach_replay` instead, a chunk at a time.
        """
        if self.close_reason is not None:
            return
        self._preamble.append(chunk)
        self._preamble_events += n_events
        self.last_activity = time.monotonic()
        self._wake()

    def attach_replay(self, feed: ReplayFeed) -> None:
        """Send ``feed``'s chunks, one per :meth:`take`, before any live data.

        Live chunks pushed meanwhile queue behind the replay and count as backlog, so a
        client that reads too slowly to finish its replay is dropped as a slow consumer
        like any other; the replay itself occupies one chunk in flight.
        """
        if self.close_reason is not None:
            feed.cancel()
            return
        self._replay = feed
        self._wake()

    def push_heartbeat(self, chunk: bytes | None = None) -> None:
        """Queue a heartbeat (counted as backlog: a stalled client fills up).

        Parameters
        ----------
        chunk : bytes, optional
            SSE heartbeat bytes (the server's ``: keepalive``). A subscription in another
            framing always sends its framing's own heartbeat (a WebSocket ping), and so
            does an SSE one when ``chunk`` is None (:attr:`Framing.heartbeat`).
        """
        if self.close_reason is not None:
            return
        if chunk is None or self.framing is not Framing.SSE:
            chunk = self.framing.heartbeat
        self._backlog += len(chunk)
        if self._backlog > self.max_backlog_bytes:
            self.close(CloseReason.SLOW_CONSUMER)
            return
        self._chunks.append(chunk)
        self.last_activity = time.monotonic()
        if self._replay is None:
            self._wake()

    def close(self, reason: str) -> None:
        """End the subscription (idempotent); wakes the handler so it can finish."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        if self._replay is not None:
            self._replay.cancel()
            self._replay = None
        self._release()
        if reason == CloseReason.SLOW_CONSUMER:
            # Nothing more will be written; release the memory right away.
            self._chunks.clear()
            self._preamble.clear()
            self._preamble_events = 0
            self._backlog = 0
        self._wake()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback(self)

    def wake(self) -> None:
        """Wake the writer (or :meth:`wait`): something may be ready to take."""
        self._wake()

    def _wake(self) -> None:
        writer = self._writer
        if writer is not None:
            try:
                writer.wake()
            except Exception:
                self._writer_failed()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _writer_failed(self) -> None:
        # A failing writer must not break the publisher's fan-out loop (nor reach the
        # subscribers after this one): log it and end this subscription.
        log.exception("subscription writer failed; closing the subscription")
        self._writer = None
        self.close(CloseReason.CLIENT_GONE)

    def set_writer(self, writer: SubscriptionWriter | None) -> None:
        """Hand live data to ``writer`` as it is pushed, instead of waking :meth:`wait`.

        On every :meth:`push` into an empty subscription, ``writer.try_write(chunk,
        n_events, published_at)`` is offered the chunk; when it returns True the chunk is
        consumed (written, or handed to the writer's own buffer) and nothing is queued.
        Otherwise (a write is still in flight) the chunk is queued here and counts as
        backlog, exactly as with :meth:`wait`, and ``writer.wake()`` is called, as it is
        for preamble bytes, heartbeats and :meth:`close`. The writer calls :meth:`take`
        when its socket is free again.

        Both run synchronously inside the broker's publish: they must not block, and
        should not raise (an exception is logged and closes the subscription).

        Parameters
        ----------
        writer : SubscriptionWriter or None
            The writer; None returns to :meth:`wait`.
        """
        self._writer = writer

    # -- handler side ------------------------------------------------------------------

    def has_pending(self) -> bool:
        """True when a :meth:`take` would return data.

        Like :meth:`take`, asked once the previous take has been written: a replay chunk
        still counted in flight is released first (so it does not block its own next).
        """
        self._release()
        if self._preamble:
            return True
        replay = self._replay
        if replay is None:
            return bool(self._chunks)
        return replay.ready()

    async def wait(self) -> None:
        """Return once data is pending or the subscription is closed."""
        while not self.has_pending() and self.close_reason is None:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def written(self) -> None:
        """The data of the last :meth:`take` has been written: release its replay bytes.

        A writer calls this when its write completed; taking again implies it.
        """
        if self._release() and self._replay is not None and self._writer is not None:
            # Continue the replay on the next loop iteration, not inside this one:
            # other clients' writes and the publisher run in between.
            with contextlib.suppress(RuntimeError):  # no loop: the next take pulls
                asyncio.get_running_loop().call_soon(self._wake)

    def _release(self) -> bool:
        """Return the last replay chunk's bytes to its feed; True if there was one."""
        feed = self._replay_from
        if feed is None:
            return False
        self._replay_from = None
        feed.release(self._in_flight)
        self._in_flight = 0
        return True

    def take(self) -> Delivery:
        """Everything pending, joined into one bytes object (one write, one flush).

        While a replay is attached, that is the preamble and the replay's next chunk;
        live chunks follow once the replay is finished.
        """
        self._release()
        parts = self._preamble
        events = self._preamble_events
        if parts:
            self._preamble = []
            self._preamble_events = 0
        feed = self._replay
        if feed is not None:
            parts = [*parts]
            if not feed.ready():
                return self._delivery(parts, events, None)
            data, n, finished = feed.pull(self.max_backlog_bytes)
            if self.close_reason is not None:  # the replay found it was overtaken
                return _new_delivery(Delivery, (b"", 0, None))
            if data:
                parts.append(data)
                events += n
                self._replay_from = feed
                self._in_flight = len(data)
                self.last_activity = time.monotonic()
            if not finished:
                return self._delivery(parts, events, None)
            self._replay = None
        # Live chunks (and heartbeats), after whatever preceded them.
        parts = parts + self._chunks if parts else self._chunks
        delivery = self._delivery(parts, events + self._events_pending, self._oldest)
        self._chunks = []
        self._backlog = 0
        self._events_pending = 0
        self._oldest = None
        return delivery

    @staticmethod
    def _delivery(parts: list[bytes], events: int, published_at: float | None) -> Delivery:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return _new_delivery(Delivery, (data, events, published_at))


@runtime_checkable
class BackendLink(Protocol):
    """Capability of a broker whose fan-out depends on a backend that can be down (Redis).

    The server reports it on ``/healthz`` (503 "degraded" while down) and ``/metrics``
    (``quoteflow_broker_up``, ``_outages``, ``_outbox_events``).
    """

    @property
    def healthy(self) -> bool:
        """True while the backend answers."""
        ...

    @property
    def outages(self) -> int:
        """Times the backend was lost since start."""
        ...

    @property
    def outbox_size(self) -> int:
        """Events waiting to be written to the backend (a producer during an outage)."""
        ...

    def health(self) -> dict[str, Any]:
        """State of the link for ``/healthz``."""
        ...


class Broker(ABC):
    """Fan-out and replay of market events (memory or Redis Streams).

    All methods are called on the event loop thread. Besides the abstract methods, the
    server uses the lifecycle below; its defaults suit a broker without I/O.
    """

    stats: BrokerStats

    @property
    def produces(self) -> bool:
        """True when this process's source feeds this broker (the server runs its pump).

        False for a serving-only member of a cluster: its events are published by
        another process and reach it through the backend.
        """
        return True

    async def start(self) -> None:
        """Connect and start background work (called once by the server's start)."""
        return None

    async def aclose(self) -> None:
        """Stop background work and :meth:`close` (called once at server shutdown)."""
        self.close()

    def attach_source(self, source: Catalog) -> None:
        """The server's source, told before :meth:`start` (a producer may publish its
        catalog and accept forwarded changes); nothing by default."""
        return None

    def remote_catalog(self) -> Catalog | None:
        """The catalog of a broker that does not produce (see :attr:`produces`): the
        symbols and models of the process that does. None for a producing broker."""
        return None

    def restart_ids(self, gap: int) -> None:
        """Act out a restart for a scripted scenario: forget the replay buffer and go on
        ``gap`` ids higher, so that every resume gets ``event: reset``.

        Raises
        ------
        NotImplementedError
            This broker's ids are not its own to move (Redis stream ids).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot restart its ids (scenario 'restart' needs "
            "the memory broker)"
        )

    @abstractmethod
    def publish(self, batch: Sequence[EventLike]) -> None:
        """Assign ids to ``batch``, store it for replay and queue it for subscribers.

        Parameters
        ----------
        batch : sequence of MarketEvent
            One tick round; payloads must be JSON-serialisable and are not modified.
        """

    @abstractmethod
    def subscribe(
        self,
        symbols: frozenset[str] | None,
        events: frozenset[str],
        last_id: str | None,
        framing: Framing = Framing.SSE,
    ) -> Subscription:
        """Register a subscriber, first replaying what it missed after ``last_id``.

        Parameters
        ----------
        symbols : frozenset of str or None
            Symbols wanted; None for all.
        events : frozenset of str
            Event types wanted.
        last_id : str or None
            The client's ``Last-Event-ID``; None for a fresh subscription.
        framing : Framing
            How the subscription's bytes are framed (SSE, or WebSocket frames for
            ``/ws``): replay, reset and live data all arrive in it, ready for the socket.

        Returns
        -------
        Subscription
            With the replay attached (streamed a chunk per take, see
            :class:`ReplayFeed`) or an ``event: reset`` with a snapshot queued when the
            id cannot be resumed from, then live.

        Raises
        ------
        EventIdError
            ``last_id`` is malformed.
        """

    @abstractmethod
    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` from fan-out (idempotent)."""

    @abstractmethod
    def snapshot(self, symbols: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
        """Latest tick payload (with ``seq``) per symbol; only symbols that ticked."""

    @abstractmethod
    def parse_id(self, s: str) -> Any:
        """Parse an event id issued by this broker.

        Raises
        ------
        EventIdError
            ``s`` is not an id of this broker's form.
        """

    def id_before(self, s: str) -> str:
        """The id just before ``s``: resuming from it replays ``s`` first.

        ``GET /history`` answers this for a bar bucket that is not complete yet, so the
        client's stream starts with that bucket's first base bar. The default is for
        decimal ids (the memory broker's).

        Raises
        ------
        EventIdError
            ``s`` is not an id of this broker's form.
        """
        return str(max(int(self.parse_id(s)) - 1, 0))

    @property
    @abstractmethod
    def last_id(self) -> str | None:
        """Id of the newest published event, None before the first."""

    @property
    @abstractmethod
    def subscriber_count(self) -> int:
        """Number of live subscriptions."""

    @abstractmethod
    def close(self) -> None:
        """Close every subscription (reason ``"broker_closed"``) and release buffers."""
