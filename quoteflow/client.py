"""Server-Sent Events client: a spec-exact parser and a reconnecting async client.

Three layers, each usable on its own:

* :class:`SSEParser` turns the bytes of a ``text/event-stream`` body into
  :class:`Event` objects, incrementally and for any chunking, following the WHATWG HTML
  Living Standard §9.2.6 "Interpreting an event stream" to the letter.
* :func:`stream` returns an :class:`EventStream`: an async iterator of events over one
  logical subscription that survives dropped connections (reconnect with exponential
  backoff and full jitter, ``retry:`` honoured, ``Last-Event-ID`` sent, a silent dead
  connection detected by heartbeat timeout), as an ``EventSource`` does (§9.2.3
  "Processing model", "reestablish the connection").
* :func:`iter_events` is the same as a plain iterator for scripts, running the async
  client on a private event loop in a background thread.

The parser and :class:`Event` live in :mod:`quoteflow.wire.parser` (the one place where
SSE framing is read; it is written by :mod:`quoteflow.wire.sse`). This module depends on
nothing in quoteflow but the wire format and the error types.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import sys
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection
from tornado.tcpclient import TCPClient

from quoteflow.errors import StreamError
from quoteflow.wire.parser import Event, SSEParser

__all__ = ["Event", "EventStream", "SSEParser", "build_request", "iter_events", "stream"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------------------

# An event stream is a body without end: tornado's default max_body_size (100 MB) would
# cut a long-lived subscription, so lift it.
_MAX_BODY_SIZE: Final = 2**62

# tornado treats a request_timeout of 0 as "no deadline". The default (20 s) would kill
# every stream after 20 s; liveness is watched by the heartbeat timeout instead.
_NO_REQUEST_TIMEOUT: Final = 0.0

# Error bodies are read for the message only; a misbehaving server cannot make us
# buffer more than this.
_MAX_ERROR_BODY: Final = 64 * 1024

# 4xx statuses worth retrying: request timeout and rate limiting are transient.
_RETRYABLE_4XX: Final = frozenset({408, 429})

_STATUS_HINTS: Final = {
    400: "check the symbols/events parameters and the Last-Event-ID",
    401: "pass a valid token (token=...) or check that it has not expired",
    403: "the token does not allow this subscription (see its 'symbols' claim)",
    404: "check the URL: the stream is served at /stream",
}


def _csv(value: str | Iterable[str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return ",".join(value)


def build_url(
    url: str,
    *,
    symbols: str | Iterable[str] | None = None,
    events: str | Iterable[str] | None = None,
) -> str:
    """Add the ``symbols`` and ``events`` query parameters to a stream URL.

    Parameters
    ----------
    url : str
        Stream URL, e.g. ``http://127.0.0.1:8080/stream``; an existing query is kept
        (``symbols``/``events`` given here replace ones already in it).
    symbols, events : str or iterable of str, optional
        Comma-separated string or sequence (``["AAPL", "MSFT"]`` ->
        ``symbols=AAPL,MSFT``), as the SSE wire contract of DESIGN.md expects.

    Returns
    -------
    str
        The URL with the query parameters, commas left unescaped.
    """
    extra = {"symbols": _csv(symbols), "events": _csv(events)}
    extra = {k: v for k, v in extra.items() if v is not None}
    if not extra:
        return url
    parts = urllib.parse.urlsplit(url)
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in extra
    ]
    query.extend((k, v) for k, v in extra.items() if v is not None)
    encoded = urllib.parse.urlencode(query, safe=",", quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


def build_request(
    url: str,
    *,
    last_event_id: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    streaming_callback: Callable[[bytes], Awaitable[None] | None] | None = None,
    header_callback: Callable[[str], None] | None = None,
) -> HTTPRequest:
    """Build the tornado ``HTTPRequest`` for one connection attempt of an event stream.

    Parameters
    ----------
    url : str
        Full stream URL (see :func:`build_url`).
    last_event_id : str, optional
        Sent as ``Last-Event-ID`` when non-empty (HTML §9.2.3 "reestablish the
        connection" and §9.2.4: the header is set only if the last event ID string is
        not the empty string).
    token : str, optional
        Sent as ``Authorization: Bearer <token>``.
    headers : mapping, optional
        Extra request headers; they override the defaults.
    connect_timeout : float, default 10.0
        Seconds allowed for DNS, TCP and TLS.
    streaming_callback, header_callback : callable, optional
        Passed to tornado (body chunks, header lines).

    Returns
    -------
    tornado.httpclient.HTTPRequest
        ``GET`` with ``Accept: text/event-stream`` and ``Cache-Control: no-cache``
        (as the ``EventSource`` constructor, HTML §9.2.2, sets up its request: that
        Accept header, cache mode "no-store"), and *no overall deadline*:
        tornado's default ``request_timeout`` of 20 s would end every stream after
        20 s; a silent connection is detected by the heartbeat timeout instead.
    """
    hdrs = HTTPHeaders()
    hdrs["Accept"] = "text/event-stream"
    hdrs["Cache-Control"] = "no-cache"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if last_event_id:
        # §9.2.3: the header value is the UTF-8 encoding of the last event ID. tornado
        # writes header strings as latin-1, so pass the UTF-8 bytes as latin-1 text.
        hdrs["Last-Event-ID"] = last_event_id.encode("utf-8").decode("latin-1")
    for name, value in (headers or {}).items():
        hdrs[name] = value
    return HTTPRequest(
        url,
        method="GET",
        headers=hdrs,
        connect_timeout=connect_timeout,
        request_timeout=_NO_REQUEST_TIMEOUT,
        streaming_callback=streaming_callback,
        header_callback=header_callback,
        follow_redirects=True,
    )


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


def _redact(url: str) -> str:
    # Error messages end up in notebooks and logs; a token in the query must not.
    parts = urllib.parse.urlsplit(url)
    if "access_token" not in parts.query:
        return url
    query = [
        (k, "***" if k == "access_token" else v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    encoded = urllib.parse.urlencode(query, safe=",*", quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


def _http_error(url: str, status: int, reason: str, body: bytes) -> StreamError:
    text = body.decode("utf-8", "replace").strip()
    detail = ""
    if text:
        try:
            # Keep the server's JSON (error, known_symbols...) whole, on one line.
            detail = json.dumps(json.loads(text), ensure_ascii=False)
        except ValueError:
            detail = text
        if len(detail) > 1000:
            detail = detail[:1000] + "..."
    msg = f"GET {_redact(url)} failed: HTTP {status} {reason}".rstrip()
    if detail:
        msg += f": {detail}"
    hint = _STATUS_HINTS.get(status)
    if hint:
        msg += f" ({hint})"
    return StreamError(msg)


# ---------------------------------------------------------------------------------------
# Async client
# ---------------------------------------------------------------------------------------


class _TrackingTCPClient(TCPClient):
    """TCPClient that remembers the stream it opened, so that it can be cut.

    tornado's HTTP client has no way to abort a fetch in flight, but a silent dead
    connection (heartbeat timeout) or :meth:`EventStream.close` must end one now, not
    at the next byte. Closing the IOStream makes the fetch fail promptly.
    """

    def __init__(self, resolver: Resolver) -> None:
        super().__init__(resolver=resolver)
        self.current: IOStream | None = None
        self.aborted = False

    async def connect(self, *args: Any, **kwargs: Any) -> IOStream:
        stream = await super().connect(*args, **kwargs)
        if self.aborted:
            # Aborted while connecting: close at once; tornado then fails the fetch.
            stream.close()
        else:
            self.current = stream
        return stream

    def abort(self) -> None:
        self.aborted = True
        if self.current is not None:
            self.current.close()


class _ResetSafeConnection(_HTTPConnection):
    """tornado's HTTP/1 client connection, made to finish its fetch on a TCP reset.

    When the peer resets the connection (RST) while a chunked body is being read,
    tornado 6's ``_HTTPConnection.on_connection_close`` re-raises the stream's
    ``ConnectionResetError`` from inside the HTTP/1 reader, where nothing catches it:
    tornado logs "Uncaught exception" and the fetch future never completes, so a
    streaming client would wait for its heartbeat timeout (or for ever without one).
    A reset is routed here through ``_handle_exception`` like every other connection
    error, which completes the fetch with that error at once.
    """

    def on_connection_close(self) -> None:
        error = self.stream.error
        if self.final_callback is not None and error is not None:
            try:
                raise error
            except BaseException:
                self._handle_exception(*sys.exc_info())
            return
        super().on_connection_close()


class _StreamingHTTPClient(SimpleAsyncHTTPClient):
    """One-connection HTTP client whose TCP connections can be cut (see above)."""

    tracker: _TrackingTCPClient

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.tracker = _TrackingTCPClient(self.resolver)
        self.tcp_client = self.tracker

    def _connection_class(self) -> type:
        return _ResetSafeConnection


class _End:
    """Queue sentinel: the stream ended (HTTP 204, or closed)."""


_END: Final = _End()


@dataclass(slots=True)
class _Attempt:
    """State of one connection attempt, filled by tornado's callbacks."""

    last_activity: float
    status: int | None = None
    reason: str = ""
    content_type: str = ""
    headers_done: bool = False
    ok: bool = False
    delivered: int = 0
    body: bytearray | None = None
    fatal: StreamError | None = None
    paused: bool = False


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
    state : str
        ``"idle"``, ``"connecting"``, ``"connected"``, ``"backoff"`` or ``"closed"``.
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
    url, symbols, events, last_event_id, token, heartbeat_timeout, max_retries, \
    backoff_initial, backoff_max, connect_timeout, headers, on_status, max_queue
        As for :func:`stream`.
    seed : int, optional
        Seed of the backoff jitter (reproducible tests).
    """

    def __init__(
        self,
        url: str,
        *,
        symbols: str | Iterable[str] | None = None,
        events: str | Iterable[str] | None = None,
        last_event_id: str | None = None,
        token: str | None = None,
        heartbeat_timeout: float | None = 45.0,
        max_retries: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        connect_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        on_status: Callable[[EventStream], None] | None = None,
        max_queue: int = 10_000,
        seed: int | None = None,
    ) -> None:
        if heartbeat_timeout is not None and heartbeat_timeout <= 0:
            raise ValueError(f"heartbeat_timeout must be > 0 or None, got {heartbeat_timeout!r}")
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {max_retries!r}")
        if backoff_initial < 0 or backoff_max < 0:
            raise ValueError("backoff_initial and backoff_max must be >= 0 seconds")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.url = build_url(url, symbols=symbols, events=events)
        self.token = token
        self.heartbeat_timeout = heartbeat_timeout
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.headers = dict(headers or {})
        self.on_status = on_status
        self.max_queue = max_queue

        self.state = "idle"
        self.reconnects = 0
        self.events_received = 0
        self.bytes_received = 0
        self.last_event_id: str | None = last_event_id or None
        self.retry: int | None = None
        self.last_error: str | None = None
        self.last_delay: float | None = None
        self.last_activity: float | None = None

        self._rng = random.Random(seed)
        self._queue: asyncio.Queue[Event | _End | BaseException] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._client: _StreamingHTTPClient | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closed = False

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
        self._queue.put_nowait(_END)
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
        if self._client is not None:
            self._client.tracker.abort()
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
        self._queue.put_nowait(_END)
        self._set_state("closed")

    aclose = close

    # -- connection loop --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a 200 event stream is open (``state == "connected"``)."""
        return self.state == "connected"

    def _set_state(self, state: str) -> None:
        if state == "closed" and self.state == "closed":
            # The end is reported once: both the connection loop (HTTP 204, error)
            # and close() (``async with``, iter_events) reach here.
            return
        self.state = state
        if self.on_status is not None:
            try:
                self.on_status(self)
            except Exception:
                # A broken status display must not kill the data feed.
                logger.exception("on_status callback failed")

    async def _run(self) -> None:
        failures = 0
        try:
            while True:
                attempt = await self._connect_once()
                if attempt is None:
                    self._queue.put_nowait(_END)
                    return
                failures = 0 if attempt.delivered else failures + 1
                if self.max_retries is not None and failures > self.max_retries:
                    raise StreamError(
                        f"gave up on {_redact(self.url)} after {failures} failed "
                        f"connection attempts in a row; last error: {self.last_error}"
                    )
                base = self.retry / 1000.0 if self.retry is not None else self.backoff_initial
                delay = backoff_delay(failures, base, self.backoff_max, self._rng)
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

    async def _connect_once(self) -> _Attempt | None:
        """Run one connection attempt to its end.

        Returns ``None`` when the stream must end cleanly (HTTP 204), raises
        StreamError when it must end with an error, and otherwise returns the attempt's
        record so the caller can back off and reconnect.
        """
        loop = asyncio.get_running_loop()
        parser = SSEParser(last_event_id=self.last_event_id, retry=self.retry)
        att = _Attempt(last_activity=loop.time())
        # One client per attempt: its connection tracker then refers to this attempt
        # only, and a late-completing abandoned fetch cannot be confused with it.
        client = _StreamingHTTPClient(force_instance=True, max_body_size=_MAX_BODY_SIZE)

        def on_header(line: str) -> None:
            att.last_activity = loop.time()
            if att.status is None or att.headers_done:
                # Start line (tornado re-assembles "HTTP/1.1 200 OK\r\n").
                _, _, rest = line.strip().partition(" ")
                code, _, reason = rest.partition(" ")
                att.status = int(code) if code.isdigit() else 0
                att.reason = reason
                att.headers_done = False
                return
            if line == "\r\n":
                att.headers_done = True
                self._on_headers(att, client)
                return
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                att.content_type = value.strip()

        def on_chunk(chunk: bytes) -> Awaitable[None] | None:
            att.last_activity = self.last_activity = loop.time()
            self.bytes_received += len(chunk)
            if not att.ok:
                # Error response (or one being aborted): keep a bounded body for the
                # error message.
                if att.body is not None:
                    att.body += chunk[: _MAX_ERROR_BODY - len(att.body)]
                    if len(att.body) >= _MAX_ERROR_BODY:
                        # Enough for the message; an error body need not be read to
                        # its end (it might not have one).
                        client.tracker.abort()
                return None
            events = parser.feed(chunk)
            self.last_event_id = parser.last_event_id
            self.retry = parser.retry
            if events:
                att.delivered += len(events)
                self.events_received += len(events)
                for ev in events:
                    self._queue.put_nowait(ev)
                if self._queue.qsize() > self.max_queue and not self._closed:
                    return self._pause(att)
            return None

        request = build_request(
            self.url,
            last_event_id=self.last_event_id,
            token=self.token,
            headers=self.headers,
            connect_timeout=self.connect_timeout,
            streaming_callback=on_chunk,
            header_callback=on_header,
        )
        self._client = client
        self._set_state("connecting")
        fut = client.fetch(request, raise_error=False)
        response: HTTPResponse | None = None
        try:
            timed_out = await self._watch(fut, att)
            if timed_out:
                self.last_error = (
                    f"no data for {self.heartbeat_timeout:g} s (no heartbeat): "
                    "connection presumed dead"
                )
            else:
                try:
                    response = await fut
                except Exception as exc:
                    self.last_error = str(exc) or repr(exc)
        finally:
            if not fut.done():
                client.tracker.abort()
                # The abandoned fetch fails later; retrieve its error so asyncio does
                # not report "exception was never retrieved".
                fut.add_done_callback(_consume_result)
            client.close()
            self._client = None
            # §9.2.6: at end of stream an unfinished event is discarded.
            parser.finish()

        if att.fatal is not None:
            raise att.fatal
        status = att.status if att.status is not None else (response.code if response else None)
        if status == 204:
            self.last_error = "HTTP 204 No Content: the server ended the stream"
            return None
        if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise _http_error(self.url, status, att.reason, bytes(att.body or b""))
        if status is not None and status != 200:
            self.last_error = str(_http_error(self.url, status, att.reason, bytes(att.body or b"")))
        elif response is not None:
            # A 200 whose body ended: the server closed the stream; reconnect.
            self.last_error = "server closed the stream"
        return att

    def _on_headers(self, att: _Attempt, client: _StreamingHTTPClient) -> None:
        if att.status == 200:
            media_type = att.content_type.split(";", 1)[0].strip().lower()
            if media_type != "text/event-stream":
                # §9.2.3: a 200 whose Content-Type is not text/event-stream must fail
                # the connection (no reconnect); and stop reading a body that may not
                # end.
                att.fatal = StreamError(
                    f"GET {_redact(self.url)} answered 200 with Content-Type "
                    f"{att.content_type or '(none)'!r}, not text/event-stream: "
                    "is this the /stream endpoint?"
                )
                client.tracker.abort()
                return
            att.ok = True
            self.last_error = None
            self._set_state("connected")
        else:
            att.body = bytearray()

    def _pause(self, att: _Attempt) -> Awaitable[None]:
        # Returned to tornado from the streaming callback: it stops reading the socket
        # until this completes, which pushes back on the server through TCP.
        att.paused = True
        loop = asyncio.get_running_loop()
        if self._drain is None or self._drain.done():
            self._drain = loop.create_future()
        drain = self._drain

        async def resume() -> None:
            try:
                await drain
            finally:
                # Captured loop, not get_running_loop(): if the connection dies while
                # paused, this coroutine may be closed later by the garbage collector.
                att.paused = False
                att.last_activity = loop.time()

        return resume()

    async def _watch(self, fut: Awaitable[HTTPResponse], att: _Attempt) -> bool:
        """Wait for the fetch to end; True if it was cut for heartbeat timeout."""
        fut = asyncio.ensure_future(fut)
        loop = asyncio.get_running_loop()
        hb = self.heartbeat_timeout
        while not fut.done():
            if hb is None:
                await asyncio.wait([fut])
                break
            if att.paused:
                # Not reading by our own choice: silence is not a dead connection.
                await asyncio.wait([fut], timeout=hb)
                continue
            remaining = att.last_activity + hb - loop.time()
            if remaining <= 0:
                if self._client is not None:
                    self._client.tracker.abort()
                return True
            await asyncio.wait([fut], timeout=remaining)
        return False


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def stream(
    url: str,
    *,
    symbols: str | Iterable[str] | None = None,
    events: str | Iterable[str] | None = None,
    last_event_id: str | None = None,
    token: str | None = None,
    heartbeat_timeout: float | None = 45.0,
    max_retries: int | None = None,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    connect_timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    on_status: Callable[[EventStream], None] | None = None,
    max_queue: int = 10_000,
) -> EventStream:
    """Subscribe to an SSE endpoint: an async iterator of :class:`Event`, reconnecting.

    Parameters
    ----------
    url : str
        Stream URL, e.g. ``http://127.0.0.1:8080/stream``.
    symbols : str or iterable of str, optional
        Symbols to subscribe to (``symbols=AAPL,MSFT`` query parameter).
    events : str or iterable of str, optional
        Event types (``events=tick,bar`` query parameter).
    last_event_id : str, optional
        Resume after this id: sent as ``Last-Event-ID`` on the first connection.
    token : str, optional
        Bearer token (``Authorization: Bearer <token>``).
    heartbeat_timeout : float or None, default 45.0
        Seconds without any byte (events or ``: keepalive`` comments) after which the
        connection is presumed dead, cut and re-established. Keep it well above the
        server's heartbeat interval (15 s by default). ``None`` disables the watch.
    max_retries : int or None, default None
        Give up (StreamError) after this many consecutive reconnection attempts that
        delivered no event; ``None`` retries forever.
    backoff_initial : float, default 0.5
        First backoff ceiling in seconds, unless the server sent ``retry:``.
    backoff_max : float, default 30.0
        Backoff ceiling in seconds.
    connect_timeout : float, default 10.0
        Seconds allowed to establish each connection.
    headers : mapping, optional
        Extra request headers.
    on_status : callable, optional
        Called with the :class:`EventStream` whenever its ``state`` changes (connecting,
        connected, backoff, closed), on the event loop running the stream, e.g. to
        update a status line.
    max_queue : int, default 10000
        Received events waiting for the consumer beyond which reading pauses.

    Returns
    -------
    EventStream
        Async iterator (and async context manager) with connection statistics.

    Raises
    ------
    StreamError
        While iterating: HTTP 4xx (400/401/403/404...), a non ``text/event-stream``
        response, or ``max_retries`` exceeded. HTTP 204 ends iteration without error.

    Examples
    --------
    >>> async def main():  # doctest: +SKIP
    ...     async with stream("http://127.0.0.1:8080/stream", symbols=["AAPL"]) as s:
    ...         async for ev in s:
    ...             print(ev.event, ev.id, ev.data)
    """
    return EventStream(
        url,
        symbols=symbols,
        events=events,
        last_event_id=last_event_id,
        token=token,
        heartbeat_timeout=heartbeat_timeout,
        max_retries=max_retries,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        connect_timeout=connect_timeout,
        headers=headers,
        on_status=on_status,
        max_queue=max_queue,
    )


# ---------------------------------------------------------------------------------------
# Sync helper
# ---------------------------------------------------------------------------------------


def iter_events(url: str, **kwargs: Any) -> Generator[Event, None, None]:
    """Iterate over a stream from synchronous code.

    The async client (:func:`stream`) runs on a private event loop in a daemon thread
    and hands events over a queue, so this works from scripts and also from a thread
    that is running its own event loop (but it blocks that thread while waiting; in a
    notebook or other async code use :func:`stream` instead).

    Parameters
    ----------
    url : str
        Stream URL.
    **kwargs
        The keyword arguments of :func:`stream`. An ``on_status`` callback runs in
        the background thread.

    Yields
    ------
    Event
        Events in order.

    Raises
    ------
    StreamError
        As :func:`stream`.

    Notes
    -----
    Leaving the loop (``break``, an exception, or ``close()`` on the generator) closes
    the connection and stops the thread. Events arrive in an unbounded queue: a
    consumer slower than the feed accumulates them in memory.
    """
    EventStream(url, **kwargs)  # validate arguments here, in the caller's thread
    return _iter_events(url, kwargs)


def _iter_events(url: str, kwargs: dict[str, Any]) -> Generator[Event, None, None]:
    items: queue.Queue[Event | _End | BaseException] = queue.Queue()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def pump() -> None:
        es = EventStream(url, **kwargs)
        holder["loop"] = asyncio.get_running_loop()
        holder["stream"] = es
        ready.set()
        try:
            async for ev in es:
                items.put(ev)
            items.put(_END)
        except Exception as exc:
            items.put(exc)
        finally:
            await es.close()
            # Set on the loop thread: a close scheduled from the reader after this point
            # must not create a task while asyncio.run() is already shutting down.
            holder["done"] = True

    def run() -> None:
        try:
            asyncio.run(pump())
        except BaseException as exc:  # e.g. loop creation failure: never hang the reader
            items.put(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="quoteflow-sse-client", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, Event):
                yield item
            elif isinstance(item, _End):
                return
            else:
                raise item
    finally:
        ready.wait()
        loop: asyncio.AbstractEventLoop | None = holder.get("loop")
        es: EventStream | None = holder.get("stream")
        if loop is not None and es is not None and thread.is_alive():
            stream_ = es

            def schedule_close() -> None:
                if not holder.get("done"):
                    loop.create_task(stream_.close())

            # call_soon_threadsafe, not run_coroutine_threadsafe: if the loop has just
            # finished it raises before any coroutine exists (none left un-awaited).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(schedule_close)
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - would mean close() hangs
            logger.warning("SSE client thread did not stop within 10 s")
