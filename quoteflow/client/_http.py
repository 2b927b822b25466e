"""The HTTP side of the client: requests, errors, and one connection of an event stream.

Everything here speaks HTTP and nothing SSE: :class:`Connection` runs one ``GET`` to its
end and hands the body bytes of a ``200 text/event-stream`` response to its owner
(:class:`quoteflow.client.stream.EventStream` parses them). A plain JSON ``GET`` of
another endpoint (``/history``) belongs here too, failing with :func:`http_error`.

The tornado seam
----------------
tornado's HTTP client cannot abort a fetch in flight, and tornado 6 loses the fetch on a
TCP reset (see :class:`_StreamConnection`). tornado has no public hook for either, so
both are fixed at the narrowest seam it has: ``SimpleAsyncHTTPClient._connection_class()``,
the method tornado itself provides for a subclass to choose the class of its HTTP/1
connections, returns :class:`_StreamConnection`, which overrides two methods of
tornado's ``_HTTPConnection`` (``_create_connection``, handed the connected socket, and
``on_connection_close``): a cut closes the socket and a reset is passed on, and either
way tornado fails the fetch through its own error path (``_handle_exception``). Nothing
else of tornado's is replaced (an earlier version also swapped the client's
``tcp_client`` attribute to find the socket). These names are private to tornado, so
the tests are the guard: ``tests/integration/test_client_reset.py`` (reset),
``test_client_cut.py`` (a cut while connecting) and the heartbeat, close and error-body
tests of ``test_client.py`` fail if a tornado release changes them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tornado.http1connection import HTTP1Connection
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection

from quoteflow.client.options import StreamOptions
from quoteflow.errors import StreamError

__all__ = [
    "Connection",
    "Ending",
    "aget_json",
    "build_request",
    "build_url",
    "get_json",
    "http_error",
    "redact",
]

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

# ---------------------------------------------------------------------------------------
# Requests and errors
# ---------------------------------------------------------------------------------------


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


def redact(url: str) -> str:
    """``url`` with every ``access_token`` query value replaced by ``***``."""
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


def http_error(url: str, status: int, reason: str, body: bytes) -> StreamError:
    """A StreamError for a failed ``GET``: status, the server's JSON error, a hint."""
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
    msg = f"GET {redact(url)} failed: HTTP {status} {reason}".rstrip()
    if detail:
        msg += f": {detail}"
    hint = _STATUS_HINTS.get(status)
    if hint:
        msg += f" ({hint})"
    return StreamError(msg)


# A JSON answer (``/history``) is bounded too: 10,000 bars are ~1.5 MB.
_MAX_JSON_BODY: Final = 64 << 20


def _json_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def get_json(url: str, *, token: str | None = None, timeout: float = 10.0) -> Any:
    """One blocking JSON ``GET`` (no event loop needed); errors as :func:`http_error`."""
    request = urllib.request.Request(url, headers=_json_headers(token))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(_MAX_JSON_BODY)
    except urllib.error.HTTPError as exc:
        with exc:
            raise http_error(url, exc.code, exc.reason or "", exc.read(_MAX_ERROR_BODY)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StreamError(f"GET {redact(url)} failed: {exc}") from None
    return _decode_json(url, body)


async def aget_json(url: str, *, token: str | None = None, timeout: float = 10.0) -> Any:
    """:func:`get_json` for a running event loop (tornado's client, not a thread)."""
    request = HTTPRequest(
        url,
        headers=_json_headers(token),
        request_timeout=timeout,
        connect_timeout=timeout,
    )  # tornado's client bounds the body at its default max_body_size (100 MB)
    try:
        response = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as exc:
        body = exc.response.body if exc.response is not None else b""
        raise http_error(
            url, exc.code, exc.message or "", (body or b"")[:_MAX_ERROR_BODY]
        ) from None
    except OSError as exc:
        raise StreamError(f"GET {redact(url)} failed: {exc}") from None
    return _decode_json(url, response.body)


def _decode_json(url: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise StreamError(f"GET {redact(url)} answered 200 but not JSON: {body[:200]!r}") from None


# ---------------------------------------------------------------------------------------
# The tornado seam (see the module docstring)
# ---------------------------------------------------------------------------------------


class _StreamConnection(_HTTPConnection):
    """tornado's HTTP/1 client connection, made cuttable and safe on a TCP reset.

    * :meth:`cut` ends the fetch now by closing its socket; tornado then fails the
      fetch as for any closed connection. Cut while the socket is still being
      connected, the socket is closed as soon as tornado hands it over
      (``_create_connection``, the one method it calls with the connected socket), so
      writing the request fails the fetch. tornado's HTTP client has no way to abort a
      fetch in flight, but a silent dead connection (heartbeat timeout) or
      :meth:`EventStream.close` must end one now, not at the next byte.
    * A reset: when the peer resets the connection (RST) while a chunked body is being
      read, tornado 6's ``on_connection_close`` re-raises the stream's
      ``ConnectionResetError`` from inside the HTTP/1 reader, where nothing catches it:
      tornado logs "Uncaught exception" and the fetch future never completes, so a
      streaming client would wait for its heartbeat timeout (or for ever without one).
      A reset is routed here through ``_handle_exception`` like every other
      connection error, which completes the fetch with that error at once (issue 18,
      pinned by ``tests/integration/test_client_reset.py``).
    """

    def __init__(self, client: SimpleAsyncHTTPClient | None, *args: Any) -> None:
        self._socket: IOStream | None = None
        self._cut = False
        super().__init__(client, *args)
        if isinstance(client, _StreamingHTTPClient):
            client.opened(self)

    def cut(self) -> None:
        """Close the connection's socket, now or as soon as it is connected."""
        self._cut = True
        if self._socket is not None:
            self._socket.close()

    def _create_connection(self, stream: IOStream) -> HTTP1Connection:
        self._socket = stream
        if self._cut:
            stream.close()
        return super()._create_connection(stream)

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
    """A one-fetch HTTP client whose connection can be cut (see :class:`_StreamConnection`)."""

    _current: _StreamConnection | None = None
    _cut = False

    def _connection_class(self) -> type:
        # The hook tornado's SimpleAsyncHTTPClient defines for choosing this class.
        return _StreamConnection

    def opened(self, connection: _StreamConnection) -> None:
        # A redirect opens a second connection on the same client: it becomes current.
        self._current = connection
        if self._cut:
            connection.cut()

    def cut(self) -> None:
        """Cut the fetch of this client, now or as soon as its connection exists."""
        self._cut = True
        if self._current is not None:
            self._current.cut()


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# ---------------------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ending:
    """How one connection ended, when the subscription may go on.

    Attributes
    ----------
    why : str
        What ended it, for a status line (``EventStream.last_error``).
    stop : bool
        HTTP 204: the server asks the client not to reconnect (HTML §9.2).
    """

    why: str
    stop: bool = False


class Connection:
    """One ``GET`` of an event stream, run to its end by :meth:`run`.

    The owner hears of the response through three callables: ``on_open()`` once a
    ``200 text/event-stream`` response has its headers, ``on_bytes(n, now)`` for every
    body chunk received (error bodies and heartbeats included), and ``on_body(chunk)``
    for every chunk of the event stream itself. ``on_body`` may return an awaitable:
    reading stops until it completes (TCP backpressure), and silence while paused is
    not taken for a dead connection.

    Parameters
    ----------
    url : str
        Full stream URL.
    options : StreamOptions
        Token, headers, connect and heartbeat timeouts.
    last_event_id : str, optional
        Sent as ``Last-Event-ID``.
    on_open, on_bytes, on_body : callable
        See above.
    """

    def __init__(
        self,
        url: str,
        options: StreamOptions,
        last_event_id: str | None,
        *,
        on_open: Callable[[], None],
        on_bytes: Callable[[int, float], None],
        on_body: Callable[[bytes], Awaitable[None] | None],
    ) -> None:
        self.url = url
        self._options = options
        self._last_event_id = last_event_id
        self._on_open = on_open
        self._on_bytes = on_bytes
        self._on_body = on_body
        self._loop = asyncio.get_running_loop()
        # One client per connection: what it cuts is this connection only, and a
        # late-completing abandoned fetch cannot be confused with the next one.
        self._client = _StreamingHTTPClient(force_instance=True, max_body_size=_MAX_BODY_SIZE)
        self.status: int | None = None
        self.reason = ""
        self._content_type = ""
        self._headers_done = False
        self._ok = False
        self._error_body: bytearray | None = None
        self._fatal: StreamError | None = None
        self._paused = False
        self._last_activity = self._loop.time()

    def cut(self) -> None:
        """End the connection now (:meth:`run` then returns)."""
        self._client.cut()

    async def run(self) -> Ending:
        """Fetch until the response ends, the connection fails or goes silent, or a cut.

        Returns
        -------
        Ending
            Why the connection ended; the subscription reconnects unless ``stop``.

        Raises
        ------
        StreamError
            The subscription must end with an error (HTML §9.2.3 "fail the
            connection"): HTTP 4xx other than 408/429, or a 200 that is not
            ``text/event-stream``.
        """
        request = build_request(
            self.url,
            last_event_id=self._last_event_id,
            token=self._options.token,
            headers=self._options.headers,
            connect_timeout=self._options.connect_timeout,
            streaming_callback=self._chunk,
            header_callback=self._header_line,
        )
        fut = asyncio.ensure_future(self._client.fetch(request, raise_error=False))
        response: HTTPResponse | None = None
        why = ""
        try:
            if await self._went_silent(fut):
                why = (
                    f"no data for {self._options.heartbeat_timeout:g} s (no heartbeat): "
                    "connection presumed dead"
                )
            else:
                try:
                    response = await fut
                except Exception as exc:
                    why = str(exc) or repr(exc)
        finally:
            if not fut.done():
                self._client.cut()
                # The abandoned fetch fails later; retrieve its error so asyncio does
                # not report "exception was never retrieved".
                fut.add_done_callback(_consume_result)
            self._client.close()
        return self._ending(why, response)

    def _ending(self, why: str, response: HTTPResponse | None) -> Ending:
        if self._fatal is not None:
            raise self._fatal
        status = self.status if self.status is not None else (response.code if response else None)
        if status == 204:
            return Ending("HTTP 204 No Content: the server ended the stream", stop=True)
        body = bytes(self._error_body or b"")
        if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise http_error(self.url, status, self.reason, body)
        if status is not None and status != 200:
            return Ending(str(http_error(self.url, status, self.reason, body)))
        if response is not None:
            # A 200 whose body ended: the server closed the stream; reconnect.
            return Ending("server closed the stream")
        return Ending(why)

    # -- tornado's callbacks ------------------------------------------------------------

    def _header_line(self, line: str) -> None:
        self._last_activity = self._loop.time()
        if self.status is None or self._headers_done:
            # Start line (tornado re-assembles "HTTP/1.1 200 OK\r\n"); after a
            # redirect, the next response's.
            _, _, rest = line.strip().partition(" ")
            code, _, reason = rest.partition(" ")
            self.status = int(code) if code.isdigit() else 0
            self.reason = reason
            self._headers_done = False
            return
        if line == "\r\n":
            self._headers_done = True
            self._headers_complete()
            return
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            self._content_type = value.strip()

    def _headers_complete(self) -> None:
        if self.status != 200:
            self._error_body = bytearray()
            return
        media_type = self._content_type.split(";", 1)[0].strip().lower()
        if media_type != "text/event-stream":
            # §9.2.3: a 200 whose Content-Type is not text/event-stream must fail the
            # connection (no reconnect); and stop reading a body that may not end.
            self._fatal = StreamError(
                f"GET {redact(self.url)} answered 200 with Content-Type "
                f"{self._content_type or '(none)'!r}, not text/event-stream: "
                "is this the /stream endpoint?"
            )
            self._client.cut()
            return
        self._ok = True
        self._on_open()

    def _chunk(self, chunk: bytes) -> Awaitable[None] | None:
        now = self._last_activity = self._loop.time()
        self._on_bytes(len(chunk), now)
        if not self._ok:
            # Error response (or one being cut): keep a bounded body for the message.
            if self._error_body is not None:
                self._error_body += chunk[: _MAX_ERROR_BODY - len(self._error_body)]
                if len(self._error_body) >= _MAX_ERROR_BODY:
                    # Enough for the message; an error body need not be read to its
                    # end (it might not have one).
                    self._client.cut()
            return None
        pending = self._on_body(chunk)
        if pending is None:
            return None
        # Returned to tornado from the streaming callback: it stops reading the socket
        # until this completes, which pushes back on the server through TCP.
        self._paused = True
        return self._resume_after(pending)

    async def _resume_after(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            # self._loop, not get_running_loop(): if the connection dies while paused,
            # this coroutine may be closed later by the garbage collector.
            self._paused = False
            self._last_activity = self._loop.time()

    async def _went_silent(self, fut: asyncio.Future[HTTPResponse]) -> bool:
        """Wait for the fetch to end; True if it was cut for heartbeat timeout."""
        hb = self._options.heartbeat_timeout
        while not fut.done():
            if hb is None:
                await asyncio.wait([fut])
                break
            if self._paused:
                # Not reading by our own choice: silence is not a dead connection.
                await asyncio.wait([fut], timeout=hb)
                continue
            remaining = self._last_activity + hb - self._loop.time()
            if remaining <= 0:
                self._client.cut()
                return True
            await asyncio.wait([fut], timeout=remaining)
        return False
