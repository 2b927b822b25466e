"""The reconnecting subscription: :class:`EventStream` and :func:`stream`.

The state machine of HTML §9.2.3 "Processing model" ("reestablish the connection"),
with the additions a long-lived data feed needs: connect, read events, and when the
connection ends back off (exponential, full jitter, ``retry:`` honoured) and reconnect
with ``Last-Event-ID``; stop cleanly on HTTP 204, with a StreamError on a 4xx. One
connection is :class:`quoteflow.client._http.Connection` (HTTP only); this module owns
what outlives a connection: the parser state (last event id, retry), the event queue
and its backpressure, the counters and the ``state`` a status line shows.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Final, Literal

from quoteflow.client._http import Connection, build_url, redact
from quoteflow.client.options import StreamOptions, keyword_signature, resolve_options
from quoteflow.errors import StreamError
from quoteflow.wire.parser import Event, SSEParser

__all__ = ["EventStream", "StreamState", "backoff_delay", "stream"]

logger = logging.getLogger(__name__)

#: Where a stream is: before its first connection, opening one, reading a 200 event
#: stream, waiting to reconnect, or ended (for good).
StreamState = Literal["idle", "connecting", "connected", "backoff", "closed"]


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before the next connection attempt: exponential backoff, full jitter.

    Parameters
    ----------
    failures : int
        Consecutive attempts that delivered no event (0 after one that did).
    base : float
        First backoff ceiling in seconds: the server's ``retry:`` value when it sent one
        (HTML §9.2.3, "reconnection time"), else ``backoff_initial``.
    cap : float
        Upper bound in seconds (``backoff_max``).
    rng : random.Random
        Source of jitter.

    Returns
    -------
    float
        Uniform in ``[0, min(cap, base * 2**(failures - 1))]`` ("full jitter"), so that
        many clients dropped at once do not reconnect in lockstep.
    """
    ceiling = min(cap, base * 2.0 ** min(max(failures - 1, 0), 62))
    return rng.uniform(0.0, ceiling)


class _End:
    """Queue sentinel: the stream ended (HTTP 204, or closed)."""


END: Final = _End()


class EventStream:
    """A reconnecting subscription to an SSE endpoint: an async iterator of events.

    Create it with :func:`stream`. Iterating starts the connection (lazily, on the
    running loop); ``break`` does not close it, :meth:`close` (or ``async with``) does.

    Behaviour (HTML §9.2.3 "Processing model", with the additions a long-lived data
    feed needs):

    * HTTP 200 with ``Content-Type: text/event-stream``: events are parsed by
      :class:`SSEParser` and yielded in order.
    * Connection closed, reset or refused, end of body, HTTP 5xx/408/429, or no byte
      at all for ``heartbeat_timeout`` seconds (a silent dead connection; the server
      sends ``: keepalive`` comments): reconnect after a backoff, sending
      ``Last-Event-ID`` so the server resumes without gap or duplicate.
    * Backoff: full jitter in ``[0, min(backoff_max, base * 2**(n-1))]`` after the
      n-th consecutive attempt that delivered no event, ``base`` being the server's
      ``retry:`` time if it sent one, else ``backoff_initial``. An attempt that
      delivered an event resets ``n``.
    * HTTP 204: the server asks the client to stop (HTML §9.2: "a client can be told
      to stop reconnecting using the HTTP 204 No Content response code"); iteration
      ends cleanly, without an error.
    * HTTP 400/401/403/404 (and any other 4xx): :class:`~quoteflow.errors.StreamError`
      naming the status and quoting the server's JSON error body. A 200 with another
      content type is a StreamError too (§9.2.3 "fail the connection").
    * ``max_retries`` consecutive failed reconnections: StreamError with the last error.

    Events are queued as they arrive. When more than ``max_queue`` wait for the
    consumer, reading from the socket pauses (TCP backpressure), so memory stays
    bounded; the server may then drop this slow consumer, and the client resumes with
    ``Last-Event-ID`` once the consumer catches up. The heartbeat watch is suspended
    while paused.

    Attributes
    ----------
    url : str
        The stream URL including ``symbols``/``events`` query parameters.
    options : StreamOptions
        The options the stream was created with.
    state : str
        ``"idle"``, ``"connecting"``, ``"connected"``, ``"backoff"`` or ``"closed"``
        (:data:`StreamState`); the one record of where the stream is.
    connected : bool
        True while a 200 event stream is open (derived from ``state``).
    reconnects : int
        Connection attempts made after the first one.
    events_received : int
        Events parsed from the network (including any not consumed yet).
    bytes_received : int
        Body bytes received, heartbeats included.
    last_event_id : str or None
        The id sent as ``Last-Event-ID`` on the next reconnection.
    retry : int or None
        The server's reconnection time in ms, if it sent one.
    last_error : str or None
        Why the last connection ended (or failed), for a status line.
    last_delay : float or None
        The latest backoff delay in seconds.
    last_activity : float or None
        Event-loop time (``loop.time()``) of the last body byte received, heartbeats
        included, e.g. for "last data 3 s ago".

    Parameters
    ----------
    url, options, **kwargs
        As for :func:`stream`.
    """

    @keyword_signature
    def __init__(self, url: str, options: StreamOptions | None = None, **kwargs: Any) -> None:
        self.options = opts = resolve_options("EventStream", options, kwargs)
        self.url = build_url(url, symbols=opts.symbols, events=opts.events)

        self.state: StreamState = "idle"
        self.reconnects = 0
        self.events_received = 0
        self.bytes_received = 0
        self.last_event_id: str | None = opts.last_event_id
        self.retry: int | None = None
        self.last_error: str | None = None
        self.last_delay: float | None = None
        self.last_activity: float | None = None

        self._rng = random.Random(opts.seed)
        self._queue: asyncio.Queue[Event | _End | BaseException] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def max_queue(self) -> int:
        """Events waiting for the consumer beyond which reading pauses."""
        return self.options.max_queue

    @property
    def connected(self) -> bool:
        """True while a 200 event stream is open (``state == "connected"``)."""
        return self.state == "connected"

    # -- async iterator protocol ---------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._task is None:
            if self._closed:
                raise StopAsyncIteration
            self._task = asyncio.get_running_loop().create_task(self._run())
        item = await self._queue.get()
        drain = self._drain
        if drain is not None and self._queue.qsize() <= self.max_queue // 2:
            # Hysteresis: resume reading only once half the backlog is consumed.
            self._drain = None
            if not drain.done():
                drain.set_result(None)
        if isinstance(item, Event):
            return item
        # Terminal item: leave an end marker so later calls stop too.
        self._queue.put_nowait(END)
        if isinstance(item, _End):
            raise StopAsyncIteration
        raise item

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: cut the connection, stop reconnecting, end iteration.

        Events received but not consumed yet are discarded. Safe to call more than
        once and from another task than the one iterating (which then sees the end of
        iteration).
        """
        self._closed = True
        if self._connection is not None:
            self._connection.cut()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait, not await task: our own cancellation must still propagate,
            # while the task's CancelledError is expected and not ours.
            await asyncio.wait([task])
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(END)
        self._set_state("closed")

    aclose = close

    # -- the state machine ------------------------------------------------------------

    def _set_state(self, state: StreamState) -> None:
        if state == "closed" and self.state == "closed":
            # The end is reported once: both the connection loop (HTTP 204, error)
            # and close() (``async with``, iter_events) reach here.
            return
        self.state = state
        on_status = self.options.on_status
        if on_status is not None:
            try:
                on_status(self)
            except Exception:
                # A broken status display must not kill the data feed.
                logger.exception("on_status callback failed")

    async def _run(self) -> None:
        opts = self.options
        failures = 0
        try:
            while True:
                delivered = await self._connect_once()
                if delivered is None:
                    self._queue.put_nowait(END)
                    return
                failures = 0 if delivered else failures + 1
                if opts.max_retries is not None and failures > opts.max_retries:
                    raise StreamError(
                        f"gave up on {redact(self.url)} after {failures} failed "
                        f"connection attempts in a row; last error: {self.last_error}"
                    )
                base = self.retry / 1000.0 if self.retry is not None else opts.backoff_initial
                delay = backoff_delay(failures, base, opts.backoff_max, self._rng)
                self.last_delay = delay
                self._set_state("backoff")
                await asyncio.sleep(delay)
                self.reconnects += 1
        except StreamError as exc:
            self.last_error = str(exc)
            self._queue.put_nowait(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug must surface to the consumer, not leave it waiting forever.
            self.last_error = repr(exc)
            self._queue.put_nowait(exc)
        finally:
            # When close() ended the loop, it reports "closed" itself once the task is
            # done; setting the state here would make its _set_state("closed") a repeat,
            # and it would never be reported at all.
            if not self._closed:
                self._set_state("closed")

    async def _connect_once(self) -> int | None:
        """Run one connection to its end.

        Returns ``None`` when the stream must end cleanly (HTTP 204), raises
        StreamError when it must end with an error, and otherwise returns how many
        events the connection delivered, so the caller can back off and reconnect.
        """
        # A parser per connection: §9.2.6 starts each stream afresh (BOM, partial line,
        # pending event), while the id and retry in force carry over.
        parser = SSEParser(last_event_id=self.last_event_id, retry=self.retry)
        before = self.events_received
        self._connection = connection = Connection(
            self.url,
            self.options,
            self.last_event_id,
            on_open=self._opened,
            on_bytes=self._received,
            on_body=functools.partial(self._feed, parser),
        )
        self._set_state("connecting")
        try:
            ending = await connection.run()
        finally:
            self._connection = None
            # §9.2.6: at end of stream an unfinished event is discarded.
            parser.finish()
        self.last_error = ending.why
        return None if ending.stop else self.events_received - before

    # -- what one connection reports ------------------------------------------------

    def _opened(self) -> None:
        self.last_error = None
        self._set_state("connected")

    def _received(self, nbytes: int, now: float) -> None:
        self.bytes_received += nbytes
        self.last_activity = now

    def _feed(self, parser: SSEParser, chunk: bytes) -> Awaitable[None] | None:
        events = parser.feed(chunk)
        self.last_event_id = parser.last_event_id
        self.retry = parser.retry
        if events:
            self.events_received += len(events)
            for ev in events:
                self._queue.put_nowait(ev)
            if self._queue.qsize() > self.max_queue and not self._closed:
                return self._pause()
        return None

    def _pause(self) -> asyncio.Future[None]:
        # The connection stops reading its socket until this completes (__anext__ or
        # close() resolves it), which pushes back on the server through TCP.
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()
        return self._drain


@keyword_signature
def stream(url: str, options: StreamOptions | None = None, **kwargs: Any) -> EventStream:
    """Subscribe to an SSE endpoint: an async iterator of :class:`Event`, reconnecting.

    Parameters
    ----------
    url : str
        Stream URL, e.g. ``http://127.0.0.1:8080/stream``.
    options : StreamOptions, optional
        The options as one value; keyword arguments override its fields.
    **kwargs
        The fields of :class:`~quoteflow.client.StreamOptions`, documented there:
        ``symbols``, ``events``, ``last_event_id``, ``token``, ``heartbeat_timeout``
        (default 45 s), ``max_retries``, ``backoff_initial``, ``backoff_max``,
        ``connect_timeout``, ``headers``, ``on_status``, ``max_queue``, ``seed``.

    Returns
    -------
    EventStream
        Async iterator (and async context manager) with connection statistics.

    Raises
    ------
    StreamError
        While iterating: HTTP 4xx (400/401/403/404...), a non ``text/event-stream``
        response, or ``max_retries`` exceeded. HTTP 204 ends iteration without error.
    TypeError, ValueError
        At once: an unknown option, or one out of range.

    Examples
    --------
    >>> async def main():  # doctest: +SKIP
    ...     async with stream("http://127.0.0.1:8080/stream", symbols=["AAPL"]) as s:
    ...         async for ev in s:
    ...             print(ev.event, ev.id, ev.data)
    """
    return EventStream(url, resolve_options("stream", options, kwargs))
