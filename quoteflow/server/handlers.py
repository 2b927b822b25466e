"""HTTP handlers: the SSE stream, snapshot, symbols, metrics, health and the dashboard.

Every error leaves as JSON ``{"error": "..."}`` (plus context such as ``known_symbols``)
with a 4xx/5xx status. An exception in one request never touches another request's
stream: each stream only ever writes its own subscription's bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.log
import tornado.web
from tornado.iostream import IOStream, StreamClosedError

from quoteflow.broker.base import (
    ALL_EVENTS,
    BackendLink,
    CloseReason,
    EventIdError,
    Framing,
    Subscription,
)
from quoteflow.errors import ConfigError
from quoteflow.server.auth import AuthError, Claims, extract_token, verify_token
from quoteflow.server.logs import request_summary, track_connection
from quoteflow.server.metrics import CONTENT_TYPE
from quoteflow.server.overload import IntervalLog
from quoteflow.wire.sse import encode_retry

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState

__all__ = [
    "ApiError",
    "DashboardHandler",
    "HealthHandler",
    "JSONHandler",
    "LatencySamples",
    "LiveHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "QuoteflowHandler",
    "SnapshotHandler",
    "SocketWriter",
    "StaticHandler",
    "StreamHandler",
    "SymbolHandler",
    "SymbolsHandler",
    "refusal_logs",
]

log = logging.getLogger(__name__)


def refusal_logs() -> dict[str, IntervalLog]:
    """One summary line per interval for streams refused by each connection limit.

    Not one line per refusal: a flood would write thousands (``/metrics`` counts each
    one in ``quoteflow_streams_rejected``). One set per app (``ServerState.refusals``).
    """
    return {
        reason: IntervalLog(log, f"%d stream(s) refused since the last report: {what}")
        for reason, what in (
            ("max_connections", "the server is at --max-connections (%d open streams)"),
            ("max_connections_per_ip", "a client address is at --max-connections-per-ip (%d)"),
        )
    }


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose JSON body is ``{"error": message, **extra}``.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        What was wrong and what to do; becomes ``"error"``.
    headers : dict, optional
        Response headers to send with the error (e.g. ``WWW-Authenticate``).
    **extra
        More JSON fields (e.g. ``known_symbols``).
    """

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(status, log_message=None)
        self.payload: dict[str, Any] = {"error": message, **extra}
        #: Response headers of the error (set in write_error: tornado clears the headers
        #: set before the exception when it starts the error response).
        self.headers: dict[str, str] = dict(headers or {})


#: Request headers a cross-origin page may send (CORS preflight answer): the token,
#: a JSON body, and the resume id an EventSource polyfill sets on reconnect.
_CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, Cache-Control"

#: Request header fields (names and values, request line excluded) beyond this get a JSON
#: 431 (RFC 6585 §5). The transport limit (runner.MAX_HEADER_SIZE) is larger, so that
#: oversized headers reach this check and get an answer rather than a bare close.
HEADER_FIELDS_LIMIT = 64 * 1024


class QuoteflowHandler(tornado.web.RequestHandler):
    """What every handler of the app has, static files included: the shared state, the
    one JSON error path, and logs without secrets.

    ``write_error`` only uses what this class defines, so it works for any handler that
    derives from it, whatever else that handler is (a ``StaticFileHandler``, a
    ``WebSocketHandler``).
    """

    #: Add ``known_symbols`` to every 400 (subscription endpoints set it).
    lists_symbols = False
    #: Set on a request refused by a connection limit: no access-log line of its own
    #: (see :func:`quoteflow.server.logs.log_request`).
    quiet_log = False

    @property
    def state(self) -> ServerState:
        """The app's :class:`~quoteflow.server.app.ServerState`."""
        state: ServerState = self.application.settings["quoteflow"]
        return state

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is JSON; 500s hide the exception (it is logged by tornado)."""
        payload: dict[str, Any]
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ApiError):
            payload = exc.payload
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif status_code >= 500:
            payload = {"error": "internal server error; see the server log"}
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            # tornado's own 4xx (bad unicode in an argument, missing argument...): its
            # message names the culprit and holds nothing secret.
            message = exc.log_message % exc.args if exc.args else exc.log_message
            payload = {"error": f"{self._reason}: {message}"}
        else:
            payload = {"error": self._reason}
        if status_code == 400 and self.lists_symbols and "known_symbols" not in payload:
            # The wire contract: every 400 of a subscription endpoint names the symbols.
            payload = {**payload, "known_symbols": self.state.known_symbols()}
        self.state.metrics.http_errors.labels(str(status_code)).inc()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(payload, separators=(",", ":"), allow_nan=False))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """tornado's exception log, with the request named by :func:`request_summary`
        (tornado's own prints the URI, ``?access_token=`` included)."""
        if isinstance(value, tornado.web.HTTPError):
            message = value.get_message()
            if message:
                tornado.log.gen_log.warning(
                    "%d %s: %s", value.status_code, request_summary(self.request), message
                )
        else:
            tornado.log.app_log.error(
                "Uncaught exception %s",
                request_summary(self.request),
                exc_info=(typ, value, tb),  # type: ignore[arg-type]
            )


class JSONHandler(QuoteflowHandler):
    """Base of the API handlers: JSON responses, CORS, auth, symbol parameters."""

    #: Methods announced to a CORS preflight.
    cors_methods = "GET, OPTIONS"

    def set_default_headers(self) -> None:
        """Name the instance (which server behind a load balancer answered) and CORS."""
        settings = self.state.settings
        if settings.instance_header:
            self.set_header("X-Quoteflow-Instance", settings.instance)
        allowed = self._cors_origin()
        if allowed is not None:
            self.set_header("Access-Control-Allow-Origin", allowed)
            if settings.instance_header:
                self.set_header("Access-Control-Expose-Headers", "X-Quoteflow-Instance")
            if allowed != "*":
                # The answer depends on the Origin header: caches must key on it. Cookies
                # (access_token) are only allowed for named origins (Fetch §3.2.5 forbids
                # credentials with "*").
                self.set_header("Vary", "Origin")
                self.set_header("Access-Control-Allow-Credentials", "true")

    def _cors_origin(self) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for this request, None for none.

        A request from another origin that is refused is noted in the log (once per
        origin per minute) with the flag that would allow it.
        """
        origins = self.state.settings.cors_origins
        if "*" in origins:
            return "*"
        origin = self.request.headers.get("Origin")
        if origin is None:
            return None
        if origin in origins:
            return origin
        if origin != f"{self.request.protocol}://{self.request.host}":
            self.state.refused_origins.refused(
                origin, self.request.path, cors_enabled=bool(origins)
            )
        return None

    def prepare(self) -> None:
        """Refuse oversized header fields with a JSON 431 before any work is done."""
        size = sum(len(k) + len(v) + 4 for k, v in self.request.headers.get_all())
        if size > HEADER_FIELDS_LIMIT:
            raise ApiError(
                431,
                f"request header fields too large: {size} bytes, limit {HEADER_FIELDS_LIMIT}",
            )

    def options(self, *args: str) -> None:
        """CORS preflight (e.g. before a cross-origin ``PUT /symbols/...``)."""
        if self._cors_origin() is None:
            if not self.state.settings.cors_origins:
                raise ApiError(403, "cross-origin requests are not enabled on this server")
            shown = (self.request.headers.get("Origin") or "")[:100]
            raise ApiError(403, f"origin {shown!r} is not allowed (see --cors-origin)")
        self.set_header("Access-Control-Allow-Methods", self.cors_methods)
        self.set_header("Access-Control-Allow-Headers", _CORS_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def write_json(self, obj: Any, status: int = 200) -> None:
        """Finish the response with ``obj`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(obj, separators=(",", ":"), allow_nan=False))

    def symbols_error(self, message: str, status: int = 400) -> ApiError:
        """An :class:`ApiError` that lists the known symbols (the wire contract's 400)."""
        return ApiError(status, message, known_symbols=self.state.known_symbols())

    def authorize(self, *, admin: bool = False, metrics: bool = False) -> Claims | None:
        """Verify the request's token when auth is on; None when auth is off.

        The token comes from ``Authorization: Bearer``, the ``access_token`` query
        parameter (EventSource cannot set headers) or the ``access_token`` cookie.

        Parameters
        ----------
        admin : bool
            The token must carry ``"admin": true``.
        metrics : bool
            The token must carry ``"metrics": true`` or ``"admin": true``.

        Raises
        ------
        ApiError
            401 (missing, bad or expired token) or 403 (claim needed).
        """
        secret = self.state.settings.auth_secret
        if secret is None:
            return None
        try:
            token = extract_token(
                self.request.headers,
                self.get_argument("access_token", None),
                self.get_cookie("access_token"),
            )
            claims = verify_token(token, secret)
        except AuthError as exc:
            # RFC 6750 §3: a 401 names the scheme the client should use.
            challenge = (
                {"WWW-Authenticate": 'Bearer realm="quoteflow"'} if exc.status == 401 else {}
            )
            raise ApiError(exc.status, str(exc), headers=challenge) from None
        if admin and not claims.admin:
            raise ApiError(403, "this token may not change parameters (needs the admin claim)")
        if metrics and not (claims.metrics or claims.admin):
            raise ApiError(
                403, "this token may not read /metrics (needs the metrics or admin claim)"
            )
        return claims

    def allowed_symbols(
        self, claims: Claims | None, symbols: frozenset[str] | None
    ) -> frozenset[str] | None:
        """``symbols`` limited by the token: 403 for named symbols it does not allow;
        "all symbols" becomes the token's symbols."""
        if claims is None or claims.symbols is None:
            return symbols
        if symbols is None:
            return frozenset(s for s in self.state.source.symbols if claims.allows(s))
        try:
            claims.check_symbols(symbols)
        except AuthError as exc:
            raise ApiError(exc.status, str(exc)) from None
        return symbols

    def parse_symbols(self) -> frozenset[str] | None:
        """The ``symbols`` query parameter(s), validated; None means all symbols.

        Accepts ``symbols=A,B`` and repeated ``symbols=A&symbols=B``; names are matched
        case-insensitively; an empty value means all symbols.

        Raises
        ------
        ApiError
            400 for too many or unknown symbols.
        """
        raw = self.get_arguments("symbols")
        names: list[str] = []
        for value in raw:
            names.extend(n.strip() for n in value.split(",") if n.strip())
        if not names:
            return None
        limit = self.state.settings.max_symbols
        if len(names) > limit:
            raise self.symbols_error(
                f"too many symbols: {len(names)} requested, at most {limit} per stream "
                "(omit 'symbols' to receive every symbol)"
            )
        return self.state.resolve_symbols(names, self.symbols_error)

    def parse_events(self) -> frozenset[str]:
        """The ``events`` query parameter (``tick``, ``bar``; default both).

        Raises
        ------
        ApiError
            400 naming the unknown event types.
        """
        names: list[str] = []
        for value in self.get_arguments("events"):
            names.extend(n.strip().lower() for n in value.split(",") if n.strip())
        if not names:
            return ALL_EVENTS
        bad = sorted(set(names) - ALL_EVENTS)
        if bad:
            shown = ", ".join(repr(b[:40]) for b in bad[:5])
            raise self.symbols_error(
                f"bad events value {shown}: choose from {', '.join(sorted(ALL_EVENTS))}"
            )
        return frozenset(names)


# ----------------------------------------------------------------------- live writes


class LatencySamples:
    """Delivery latencies taken during a fan-out, folded into the histogram just after it.

    ``Histogram.observe`` takes a lock and scans the buckets (about 1 us): at 10,000
    writes per publish that would delay the last client by 10 ms. Appending to a list
    costs 50 ns; the histogram gets every sample one event-loop iteration later.

    Parameters
    ----------
    observe : callable
        The histogram's ``observe`` (seconds).
    """

    __slots__ = ("_observe", "_samples")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._samples: list[float] = []

    def add(self, seconds: float) -> None:
        """Record one delivery latency, in seconds."""
        if not self._samples:
            asyncio.get_running_loop().call_soon(self.flush)
        self._samples.append(seconds)

    def flush(self) -> None:
        """Observe every recorded sample now."""
        samples, self._samples = self._samples, []
        observe = self._observe
        for seconds in samples:
            observe(seconds)


# One-entry cache of the last chunk framed for HTTP/1.1 chunked transfer coding. Every
# member of a fan-out group receives the same bytes object in a row, so framing (and its
# copy) happens once per group and batch instead of once per client.
_framed: tuple[bytes, bytes] = (b"", b"")


def frame_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of the chunked transfer coding (RFC 9112 §7.1)."""
    global _framed
    last, framed = _framed
    if data is not last:
        # chunk = chunk-size (hex) CRLF chunk-data CRLF
        framed = b"%x\r\n%b\r\n" % (len(data), data)
        _framed = (data, framed)
    return framed


def _unframed(data: bytes) -> bytes:
    return data


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
    metrics : ServerMetrics
        Counts bytes and events delivered.
    latency : LatencySamples
        Collects the delivery latency of each write.
    frame : callable
        Turns the subscription's bytes into wire bytes (chunked framing, WebSocket
        frames, or identity). Called with the same bytes object for every member of a
        group in a row, so it can cache.
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
        metrics: Any,
        latency: LatencySamples,
        *,
        frame: Callable[[bytes], bytes] = _unframed,
        shared: bool = False,
    ) -> None:
        self._stream = stream
        self._sock: socket.socket = stream.socket
        self._sub = sub
        self._metrics = metrics
        self._latency = latency
        self._frame = frame
        self._shared = shared
        self._busy = False
        self._pending_at: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """Attach to the subscription and write whatever it already holds (replay)."""
        self._sub.set_writer(self)
        self.wake()

    def try_write(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        """Write ``chunk`` now unless a write is in flight (then False: queue it)."""
        if self._busy or (self._shared and self._stream.writing()):
            return False
        self._write(chunk, n_events, published_at)
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
                # The peer is gone (EPIPE, ECONNRESET) or tornado closed the socket.
                self._stream.close()
                self._finish()
                return
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


class StreamHandler(JSONHandler):
    """``GET /stream``: the SSE feed (see docs/server.md and DESIGN.md "SSE wire contract")."""

    lists_symbols = True
    #: How the broker frames this endpoint's subscription (``/ws``: WebSocket frames).
    framing = Framing.SSE
    sub: Subscription | None = None
    _counted = False
    _ip: str | None = None
    _expiry: asyncio.TimerHandle | None = None

    async def get(self) -> None:
        """Validate, subscribe (resuming after ``Last-Event-ID``), then stream until closed."""
        sub = self.open_subscription()
        state = self.state
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        # nginx would otherwise buffer the response and the stream would arrive in lumps
        # (seed notes, nginx chapter; deploy/nginx.conf sets the same).
        self.set_header("X-Accel-Buffering", "no")
        # tornado frames a response without Content-Length as chunked on HTTP/1.1 (and the
        # live writes below do the same); an HTTP/1.0 body simply ends at close.
        chunked = self.request.version == "HTTP/1.1"
        if chunked:
            self.set_header("Connection", "keep-alive")
        metrics = state.metrics
        try:
            # WHATWG HTML §9.2.6: "retry" sets the reconnection time; sent first so the
            # client knows it before anything can go wrong. Flushing also sends headers.
            first = encode_retry(state.settings.retry_ms)
            self.write(first)
            await self.flush()
        except StreamClosedError:
            self._cleanup(CloseReason.CLIENT_GONE)  # the client left already
            return
        metrics.bytes_sent += len(first)
        stream: IOStream | None = getattr(self.request.connection, "stream", None)
        if stream is None or stream.closed():
            self._cleanup(CloseReason.CLIENT_GONE)
            return
        # Small writes must leave at once: Nagle would hold one back until the previous
        # one is acknowledged (up to a delayed-ACK timeout, 40 ms).
        stream.set_nodelay(True)
        # From here on the writer puts live data on the socket from the publish call
        # itself (see SocketWriter). get() returns without finishing the response, which
        # frees this coroutine, tornado's _execute coroutine and their tasks (about 1.5 KB
        # per stream at 10,000 streams); the writer's done callback finishes it.
        writer = SocketWriter(
            stream,
            sub,
            metrics,
            state.latency_samples,
            frame=frame_chunk if chunked else _unframed,
        )
        self._auto_finish = False
        writer.done.add_done_callback(self._live_done)
        writer.start()

    def _live_done(self, _: asyncio.Future[None]) -> None:
        self._cleanup(CloseReason.CLIENT_GONE)
        if not self._finished:
            # On shutdown, broker close or token expiry this ends the chunked response
            # cleanly: the client sees an end of stream (not a reset) and reconnects with
            # Last-Event-ID. On a closed connection finish() writes nothing.
            self.finish()

    def open_subscription(self) -> Subscription:
        """Validate the request, apply the limits and subscribe; register the stream.

        Shared by ``/stream`` and ``/ws``: query ``symbols``, ``events``,
        ``lastEventId`` (the ``Last-Event-ID`` header wins), auth, the connection limits.

        Returns
        -------
        Subscription
            With the replay (streamed) or reset for the resume point attached.

        Raises
        ------
        ApiError
            400 bad parameters, 401/403 auth, 429 per-address limit, 503 limit or
            shutting down.
        """
        state = self.state
        if state.closing:
            raise ApiError(503, "server is shutting down; reconnect to another instance")
        claims = self.authorize()
        symbols = self.allowed_symbols(claims, self.parse_symbols())
        events = self.parse_events()
        # The header is what an EventSource sends on reconnect, so it is newer than a
        # lastEventId query parameter baked into the URL: the header wins.
        last_id = self.request.headers.get("Last-Event-ID") or self.get_argument(
            "lastEventId", None
        )
        if len(state.streams) >= state.settings.max_connections:
            self._refused("max_connections", len(state.streams))
            raise ApiError(
                503,
                f"too many connections ({state.settings.max_connections}); retry later",
            )
        # remote_ip is the proxy's X-Real-IP only with --trust-proxy (tornado xheaders).
        ip = self.request.remote_ip or "?"
        per_ip = state.settings.max_connections_per_ip
        if state.streams_by_ip.get(ip, 0) >= per_ip:
            self._refused("max_connections_per_ip", per_ip)
            raise ApiError(
                429,
                f"too many streams from {ip} ({per_ip}); close some or subscribe to "
                "several symbols on one stream",
            )
        try:
            sub = state.broker.subscribe(symbols, events, last_id or None, self.framing)
        except EventIdError as exc:
            raise self.symbols_error(str(exc)) from None
        self.sub = sub
        state.streams.add(self)
        state.streams_by_ip[ip] = state.streams_by_ip.get(ip, 0) + 1
        self._ip = ip
        self._counted = True
        state.metrics.streams_opened.inc()
        sub.add_close_callback(self._on_sub_closed)
        track_connection(sub, path=self.request.path, remote=ip, last_event_id=last_id or None)
        if claims is not None:
            # "exp" is honoured during the stream too: it ends cleanly at expiry and the
            # reconnect is refused with 401 until the client has a fresh token.
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(
                max(claims.seconds_left(), 0.0), sub.close, CloseReason.TOKEN_EXPIRED
            )
        return sub

    def _refused(self, reason: str, figure: int) -> None:
        """Count a refusal by a connection limit; log a summary at most once per interval."""
        self.state.metrics.streams_rejected.labels(reason).inc()
        self.quiet_log = True
        self.state.refusals[reason].hit(figure)

    def _on_sub_closed(self, sub: Subscription) -> None:
        if sub.close_reason != CloseReason.SLOW_CONSUMER:
            return
        log.info("closing slow consumer %s (backlog over bound)", self.request.remote_ip)
        # The writer may have bytes parked in tornado's buffer for a socket the client
        # does not read; closing the stream fails that write and ends the handler.
        self.cut()

    def cut(self) -> None:
        """Close the connection at once (slow consumer; shutdown of a stuck writer)."""
        conn = self.request.connection
        stream = getattr(conn, "stream", None)
        if stream is not None:
            stream.close()

    def _cleanup(self, reason: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._counted:
            self._counted = False
            state = self.state
            state.streams.discard(self)
            if self._ip is not None:
                left = state.streams_by_ip.get(self._ip, 1) - 1
                if left > 0:
                    state.streams_by_ip[self._ip] = left
                else:
                    state.streams_by_ip.pop(self._ip, None)
        if self.sub is not None:
            self.sub.close(reason)

    def on_connection_close(self) -> None:
        """The client went away: stop the subscription (tornado chat demo's habit)."""
        self._cleanup(CloseReason.CLIENT_GONE)

    def heartbeat(self, now: float, idle: float, chunk: bytes) -> bool:
        """Queue ``chunk`` if the stream has been idle ``idle`` seconds; True if sent."""
        sub = self.sub
        if sub is None or sub.closed or now - sub.last_activity < idle:
            return False
        sub.push_heartbeat(chunk)
        return True

    def end(self) -> None:
        """End the stream cleanly (graceful shutdown)."""
        if self.sub is not None:
            self.sub.close(CloseReason.SHUTDOWN)


class SnapshotHandler(JSONHandler):
    """``GET /snapshot?symbols=...``: the latest tick per symbol (the polling baseline)."""

    lists_symbols = True

    def get(self) -> None:
        """Respond ``{"last_id": ..., "quotes": {symbol: tick}}``."""
        claims = self.authorize()
        symbols = self.allowed_symbols(claims, self.parse_symbols())
        broker = self.state.broker
        self.write_json({"last_id": broker.last_id, "quotes": broker.snapshot(symbols)})


class SymbolsHandler(JSONHandler):
    """``GET /symbols``: every symbol with its model, parameters and last price."""

    def get(self) -> None:
        """Respond with ``source.describe()``."""
        self.authorize()
        self.write_json(self.state.source.describe())


class SymbolHandler(JSONHandler):
    """``GET``/``PUT /symbols/{symbol}``: one symbol's description / change its parameters."""

    cors_methods = "GET, PUT, OPTIONS"

    def _symbol(self, name: str) -> str:
        def not_found(message: str) -> ApiError:
            return self.symbols_error(message, status=404)

        (symbol,) = self.state.resolve_symbols([name], not_found)
        return symbol

    def get(self, name: str) -> None:
        """Respond with the symbol's entry of ``source.describe()``."""
        self.authorize()
        symbol = self._symbol(name)
        self.write_json(self.state.source.describe().get(symbol, {}))

    async def put(self, name: str) -> None:
        """Apply a JSON object of parameters; respond with the new parameters.

        On a serving-only Redis instance the change is forwarded to the producer
        (``StreamSource.aupdate``); 503 when no producer answers.
        """
        self.authorize(admin=True)
        symbol = self._symbol(name)
        params = parse_params_body(self.request.body)
        if not isinstance(params, dict) or not params:
            raise ApiError(
                400,
                'body must be a non-empty JSON object of parameters, e.g. {"sigma": 0.3}',
            )
        try:
            new = await self.state.source.aupdate(symbol, params)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ApiError(400, str(exc), symbol=symbol) from None
        except ConnectionError as exc:
            raise ApiError(503, str(exc), symbol=symbol) from None
        self.write_json({"symbol": symbol, "params": new})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6); parameters must be finite numbers")


def parse_params_body(body: bytes) -> Any:
    """The JSON value of a ``PUT /symbols/{symbol}`` body, or a 400 naming what is wrong.

    Python's parser accepts ``NaN`` and ``Infinity`` and raises ``RecursionError`` on deep
    nesting; both are refused here as invalid JSON. Shape and values (a flat object of
    finite numbers, strings for categorical options) are the market's to check.

    Raises
    ------
    ApiError
        400: not UTF-8, not JSON, a non-standard constant, or nested too deeply.
    """
    try:
        return json.loads(body or b"", parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(
            400,
            "invalid JSON body: nested too deeply; send a flat object of parameters, "
            'e.g. {"sigma": 0.3}',
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON body: {exc}") from None


class MetricsHandler(JSONHandler):
    """``GET /metrics``: Prometheus text format, for whom ``metrics_access`` allows.

    Parameters (tornado ``initialize``)
    -----------------------------------
    listener : bool
        True on the metrics listener's app (``make_metrics_app``).
    """

    listener = False

    def initialize(self, listener: bool = False) -> None:
        """Note whether this is the metrics listener."""
        self.listener = listener

    def get(self) -> None:
        """Render this app's registry (401/403 without a fit token for ``token``; 404 on
        the main port for ``listener``)."""
        policy = self.state.settings.metrics_policy
        if policy == "listener" and not self.listener:
            raise ApiError(404, "/metrics is served on the metrics listener only (--metrics-port)")
        if policy == "token":
            self.authorize(metrics=True)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.state.metrics.render())


class HealthHandler(JSONHandler):
    """``GET /healthz``: readiness and a few numbers.

    200 ``"ok"``; 503 ``"shutting_down"`` during a graceful shutdown and 503
    ``"degraded"`` while the broker's Redis is unreachable. A 503 takes the instance out
    of a load balancer's (or Kubernetes Service's) rotation so new clients go to a
    healthy instance; streams already open stay open (heartbeats continue) and resume
    once Redis is back. Liveness is ``/livez``: an outage must not restart the process.
    """

    def get(self) -> None:
        """Respond ``{"status", "uptime", "connections", "last_event_id", ...}``."""
        state = self.state
        broker = state.broker
        link = broker if isinstance(broker, BackendLink) else None
        healthy = link is None or link.healthy
        if state.closing:
            status = "shutting_down"
        elif not healthy:
            status = "degraded"
        else:
            status = "ok"
        body: dict[str, Any] = {
            "status": status,
            "instance": state.settings.instance,
            "uptime": round(time.monotonic() - state.started, 3),
            "connections": len(state.streams),
            "last_event_id": state.broker.last_id,
            "symbols": len(state.known_symbols()),
        }
        if state.source_error is not None:
            body["source_error"] = state.source_error
        if link is not None:  # brokers with I/O (Redis) report their link
            body["broker"] = link.health()
        self.write_json(body, status=200 if status == "ok" else 503)


class LiveHandler(JSONHandler):
    """``GET /livez``: liveness only (the event loop answers); 200 even when degraded."""

    def get(self) -> None:
        """Respond ``{"status": "alive"}``."""
        self.write_json({"status": "alive", "instance": self.state.settings.instance})


class DashboardHandler(JSONHandler):
    """``GET /``: the dashboard page (static/index.html)."""

    def get(self) -> None:
        """Serve index.html, or a JSON 404 naming the missing file."""
        path = self.state.settings.static_path / "index.html"
        try:
            page = path.read_bytes()
        except OSError:
            raise ApiError(404, f"dashboard page not installed: {path}") from None
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(page)


class StaticHandler(QuoteflowHandler, tornado.web.StaticFileHandler):
    """Static files (dashboard assets, BokehJS) with JSON errors like every endpoint."""

    def parse_url_path(self, url_path: str) -> str:
        """Refuse control characters before the path reaches the file system.

        A NUL byte (``/static/index.html%00.js``) makes ``os.stat`` raise ``ValueError``;
        no file name the server ships contains a control character anyway.

        Raises
        ------
        ApiError
            400 naming the problem.
        """
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url_path):
            raise ApiError(400, "static file path must not contain control characters (NUL...)")
        return super().parse_url_path(url_path)


class NotFoundHandler(JSONHandler):
    """Any other path: JSON 404 listing the endpoints (the app's routes, see app.ROUTES)."""

    endpoints: tuple[str, ...] = ()

    def initialize(self, endpoints: Sequence[str] = ()) -> None:
        """The public paths of the app's routes (``default_handler_args``)."""
        self.endpoints = tuple(endpoints)

    def prepare(self) -> None:
        """Refuse every method with 404."""
        super().prepare()
        raise ApiError(
            404,
            f"no such endpoint: {self.request.path}",
            endpoints=list(self.endpoints),
        )
