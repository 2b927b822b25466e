"""Live writes: a subscription's bytes straight onto its client socket.

This is the transport under ``/stream`` and ``/ws``; the handlers only choose the framing
and hand over the connection. :class:`LiveWriters` (one per app, ``ServerState.writers``)
makes each stream's :class:`SocketWriter` and owns what the writers share: the counters
they add to, the delivery-latency samples (:class:`LatencySamples`) and the chunk-framing
cache (:class:`FrameCache`).

The one place that reaches under tornado's HTTP layer for the socket is
:func:`connection_stream`; it uses no private attribute.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Protocol

from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream, StreamClosedError

from quoteflow.broker.base import Subscription

__all__ = [
    "DeliveryCounters",
    "FrameCache",
    "LatencySamples",
    "LiveWriters",
    "SocketWriter",
    "connection_stream",
    "frame_chunk",
    "unframed",
]

#: Turns a subscription's bytes into wire bytes.
Framer = Callable[[bytes], bytes]


class DeliveryCounters(Protocol):
    """What a writer counts into (:class:`~quoteflow.server.metrics.ServerMetrics` has it)."""

    bytes_sent: int
    events_delivered: int


def connection_stream(request: HTTPServerRequest) -> IOStream | None:
    """The socket stream under ``request``, or None if there is none (any more).

    tornado's ``HTTPServer`` serves every request over an ``HTTP1Connection``, whose
    ``stream`` attribute is public (but not part of the abstract ``HTTPConnection``
    that ``request.connection`` is typed as). It is None once a WebSocket upgrade has
    taken the stream (``HTTP1Connection.detach``); the WebSocket handler then has the
    same ``IOStream`` object as ``ws_connection.stream``.
    """
    conn = request.connection
    if not isinstance(conn, HTTP1Connection):
        return None
    stream: IOStream | None = conn.stream
    return stream


def frame_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of the chunked transfer coding (RFC 9112 §7.1)."""
    # chunk = chunk-size (hex) CRLF chunk-data CRLF
    return b"%x\r\n%b\r\n" % (len(data), data)


def unframed(data: bytes) -> bytes:
    """``data`` as it is (an HTTP/1.0 body, which simply ends at close)."""
    return data


class FrameCache:
    """A framer that remembers its last input and output (a one-entry cache).

    Every member of a fan-out group receives the same bytes object in a row, so with one
    cache per app the framing (and its copy) happens once per group and batch instead of
    once per client. The key is the object's identity: the cache holds the object, so
    its id cannot be reused while it is the key.

    Parameters
    ----------
    frame : callable
        The framing function, ``bytes -> bytes``.
    """

    __slots__ = ("_frame", "framed", "last")

    def __init__(self, frame: Framer) -> None:
        self._frame = frame
        #: The last input and its framing (read inline by :meth:`SocketWriter.try_write`).
        self.last = b""
        self.framed = frame(b"")

    def __call__(self, data: bytes) -> bytes:
        """``frame(data)``, computed only when ``data`` is not the previous object."""
        if data is not self.last:
            self.framed = self._frame(data)
            self.last = data
        return self.framed


class LatencySamples:
    """Delivery latencies taken during a fan-out, folded into the histogram just after it.

    ``Histogram.observe`` takes a lock and scans the buckets (about 1 us): at 10,000
    writes per publish that would delay the last client by 10 ms. Appending to a list
    costs 50 ns; the histogram gets every sample one event-loop iteration later.

    Parameters
    ----------
    observe : callable
        The histogram's ``observe`` (seconds).
    observe_many : callable, optional
        Takes the whole list at once instead
        (:meth:`~quoteflow.server.metrics.LatencyHistogram.observe_many`).
    """

    __slots__ = ("_observe", "_observe_many", "samples")

    def __init__(
        self,
        observe: Callable[[float], None],
        observe_many: Callable[[list[float]], None] | None = None,
    ) -> None:
        self._observe = observe
        self._observe_many = observe_many
        #: Samples not observed yet; non-empty means a flush is scheduled (a writer
        #: appends to it directly when it is, see :meth:`SocketWriter.try_write`).
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        """Record one delivery latency, in seconds."""
        if not self.samples:
            asyncio.get_running_loop().call_soon(self.flush)
        self.samples.append(seconds)

    def flush(self) -> None:
        """Observe every recorded sample now."""
        samples, self.samples = self.samples, []
        if self._observe_many is not None:
            self._observe_many(samples)
            return
        observe = self._observe
        for seconds in samples:
            observe(seconds)


class SocketWriter:
    """Writes a subscription's data straight to its client socket, from the publish call.

    The :class:`~quoteflow.broker.base.SubscriptionWriter` of live streams. When the
    socket has nothing in flight, a pushed chunk goes out with one non-blocking
    ``send()`` inside the broker's fan-out loop: no queue, no coroutine wake-up, no
    future (profile in benchmarks/README.md, "Fan-out"). When the kernel takes only part
    of it (the client reads slowly), tornado's ``IOStream.write`` keeps the rest and
    sends it when the socket is writable; until that completes, pushes queue in the
    subscription and count as its backlog, so the slow-consumer bound works as with
    :meth:`Subscription.wait`. Then everything queued leaves in one write.

    Parameters
    ----------
    stream : IOStream
        The connection, after the response headers have been flushed.
    sub : Subscription
        The stream's subscription.
    metrics : DeliveryCounters
        Counts bytes and events delivered.
    latency : LatencySamples
        Collects the delivery latency of each write.
    frame : callable
        Turns the subscription's bytes into wire bytes (chunked framing, WebSocket
        frames, or identity). Called with the same bytes object for every member of a
        group in a row, so it can cache (:class:`FrameCache`).
    shared : bool
        Other code writes to ``stream`` as well (tornado's WebSocket pings and close
        frames): only write directly when tornado's own buffer is empty, so the bytes
        stay in order.

    Attributes
    ----------
    done : asyncio.Future
        Resolved once the subscription has closed and everything taken was written (or
        the connection is gone): the handler then ends the response.
    """

    __slots__ = (
        "_busy",
        "_cache",
        "_frame",
        "_latency",
        "_metrics",
        "_pending_at",
        "_shared",
        "_sock",
        "_stream",
        "_sub",
        "done",
    )

    def __init__(
        self,
        stream: IOStream,
        sub: Subscription,
        metrics: DeliveryCounters,
        latency: LatencySamples,
        *,
        frame: Framer = unframed,
        shared: bool = False,
    ) -> None:
        self._stream = stream
        self._sock: socket.socket = stream.socket
        self._sub = sub
        self._metrics = metrics
        self._latency = latency
        self._frame = frame
        self._cache = frame if isinstance(frame, FrameCache) else None
        self._shared = shared
        self._busy = False
        self._pending_at: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """Attach to the subscription and write whatever it already holds (replay)."""
        self._sub.set_writer(self)
        self.wake()

    def try_write(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        """Write ``chunk`` now unless a write is in flight (then False: queue it).

        The fan-out's per-client step, so the common case (the framing cached for this
        chunk, the kernel takes all of it, a latency flush already scheduled) is inlined
        here: one Python call per client instead of four (profile in
        benchmarks/README.md, "S3 at the machine's limit"); anything else goes through
        :meth:`_write`.
        """
        if self._busy or (self._shared and self._stream.writing()):
            return False
        cache = self._cache
        if cache is None or chunk is not cache.last:
            self._write(chunk, n_events, published_at)
            return True
        out = cache.framed
        try:
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._gone()
            return True
        if sent != len(out):
            self._sent(chunk, out, sent, n_events, published_at)
            return True
        m = self._metrics
        m.bytes_sent += len(chunk)
        m.events_delivered += n_events
        samples = self._latency.samples
        if samples:
            samples.append(time.monotonic() - published_at)
        else:
            self._latency.add(time.monotonic() - published_at)
        return True

    def wake(self) -> None:
        """Write what is queued, or finish once the subscription has closed."""
        if self._busy:
            return
        sub = self._sub
        if sub.has_pending():
            if self._shared and self._stream.writing():
                # Behind tornado's own bytes: write after them, in order.
                self._write(b"", 0, None)
                return
            delivery = sub.take()
            if not delivery.data:
                # A replay step that found nothing to send yet (a narrow filter over a
                # long buffer): go on in the next loop iteration.
                if sub.replaying:
                    asyncio.get_running_loop().call_soon(self.wake)
                return
            self._write(delivery.data, delivery.events, delivery.published_at)
            if not self._busy:
                sub.written()  # all of it went out at once
        elif sub.closed:
            self._finish()

    def _write(self, data: bytes, n_events: int, published_at: float | None) -> None:
        out = self._frame(data) if data else b""
        sent = 0
        if out and not (self._shared and self._stream.writing()):
            try:
                sent = self._sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._gone()
                return
        self._sent(data, out, sent, n_events, published_at)

    def _gone(self) -> None:
        # The peer is gone (EPIPE, ECONNRESET) or tornado closed the socket.
        self._stream.close()
        self._finish()

    def _sent(
        self, data: bytes, out: bytes, sent: int, n_events: int, published_at: float | None
    ) -> None:
        """Count a write of ``data`` (framed: ``out``) whose first ``sent`` bytes left;
        hand the rest to tornado."""
        m = self._metrics
        m.bytes_sent += len(data)
        m.events_delivered += n_events
        if out and sent == len(out):
            if published_at is not None:
                self._latency.add(time.monotonic() - published_at)
            return
        # The kernel buffer is full (or tornado has bytes of its own queued): tornado
        # keeps the rest and finishes when the socket is writable. Until then pushes
        # queue in the subscription, where they count as backlog.
        self._busy = True
        self._pending_at = published_at
        try:
            future = self._stream.write(out[sent:])
        except StreamClosedError:
            self._finish()
            return
        future.add_done_callback(self._drained)

    def _drained(self, future: asyncio.Future[None]) -> None:
        self._busy = False
        self._sub.written()
        if future.cancelled() or future.exception() is not None:
            self._finish()
            return
        if self._pending_at is not None:
            self._latency.add(time.monotonic() - self._pending_at)
            self._pending_at = None
        self.wake()

    def _finish(self) -> None:
        self._sub.set_writer(None)
        if not self.done.done():
            self.done.set_result(None)


class LiveWriters:
    """Makes the :class:`SocketWriter` of every live stream of one app.

    Owns what those writers share: the counters, the latency samples and the HTTP/1.1
    chunk-framing cache (one per app: the members of a fan-out group are written one
    after another with the same chunk).

    Parameters
    ----------
    metrics : DeliveryCounters
        Where bytes and events delivered are counted.
    observe : callable
        The delivery-latency histogram's ``observe`` (seconds).
    observe_many : callable, optional
        Its bulk form, given the samples of a fan-out at once.
    """

    __slots__ = ("chunked", "latency", "metrics")

    def __init__(
        self,
        metrics: DeliveryCounters,
        observe: Callable[[float], None],
        observe_many: Callable[[list[float]], None] | None = None,
    ) -> None:
        self.metrics = metrics
        #: Delivery latencies of live writes, observed after each fan-out.
        self.latency = LatencySamples(observe, observe_many)
        #: Chunked transfer coding, framed once per group and batch.
        self.chunked = FrameCache(frame_chunk)

    def http(self, stream: IOStream, sub: Subscription, *, chunked: bool) -> SocketWriter:
        """The writer of an SSE response body (chunked on HTTP/1.1, as is on HTTP/1.0)."""
        frame = self.chunked if chunked else unframed
        return SocketWriter(stream, sub, self.metrics, self.latency, frame=frame)

    def websocket(self, stream: IOStream, sub: Subscription) -> SocketWriter:
        """The writer of a WebSocket connection, whose pings and close frames tornado
        writes on the same stream (so the writer yields to tornado's buffer). The broker
        delivers WebSocket frames already (``Framing.WEBSOCKET``): written as they are."""
        return SocketWriter(stream, sub, self.metrics, self.latency, shared=True)
