"""HTTP handlers: the SSE stream, snapshot, symbols, metrics, health and the dashboard.

Every error leaves as JSON ``{"error": "..."}`` (plus context such as ``known_symbols``)
with a 4xx/5xx status. An exception in one request never touches another request's
stream: each stream only ever writes its own subscription's bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.httputil
import tornado.log
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError

from quoteflow.broker.base import BackendLink, CloseReason
from quoteflow.errors import ConfigError
from quoteflow.server.logs import access_log, request_summary
from quoteflow.server.metrics import CONTENT_TYPE
from quoteflow.server.request import (
    ApiError,
    allowed_symbols,
    authorize,
    parse_symbols,
    symbols_error,
)
from quoteflow.server.streams import OpenStream, open_subscription
from quoteflow.wire.sse import encode_retry

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState
    from quoteflow.server.writer import SocketWriter

__all__ = [
    "ApiError",
    "DashboardHandler",
    "HealthHandler",
    "JSONHandler",
    "LiveHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "QuoteflowHandler",
    "SnapshotHandler",
    "StaticHandler",
    "StreamHandler",
    "SymbolHandler",
    "SymbolsHandler",
]


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
        # The reason phrase tornado has just set for this status (send_error ->
        # set_status, custom reasons included). A private attribute, read only here:
        # RequestHandler has get_status() but no public getter for the phrase.
        reason = self._reason
        if isinstance(exc, ApiError):
            payload = exc.payload
            for name, value in exc.headers.items():
                self.set_header(name, value)
            if exc.quiet_log:
                self.quiet_log = True
        elif status_code >= 500:
            payload = {"error": "internal server error; see the server log"}
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            # tornado's own 4xx (bad unicode in an argument, missing argument...): its
            # message names the culprit and holds nothing secret.
            message = exc.log_message % exc.args if exc.args else exc.log_message
            payload = {"error": f"{reason}: {message}"}
        else:
            payload = {"error": reason}
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
    """Base of the API handlers: JSON responses, CORS, the header-size check (the request
    validation they share is in :mod:`quoteflow.server.request`)."""

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


class StreamHandler(JSONHandler):
    """``GET /stream``: the SSE feed (see docs/server.md and DESIGN.md "SSE wire contract").

    Admission is :func:`~quoteflow.server.streams.open_subscription` (shared with
    ``/ws``); the body is written by a :class:`~quoteflow.server.writer.SocketWriter`.
    """

    lists_symbols = True
    #: The admitted stream (None until admitted, or when refused).
    stream: OpenStream | None = None
    #: Set by on_finish: the response has ended (tornado's own flag is private).
    _response_ended = False

    async def get(self) -> None:
        """Validate, subscribe (resuming after ``Last-Event-ID``), then stream until closed."""
        state = self.state
        stream = self.stream = open_subscription(self, state)
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
        try:
            # WHATWG HTML §9.2.6: "retry" sets the reconnection time; sent first so the
            # client knows it before anything can go wrong. Flushing also sends headers.
            first = encode_retry(state.faults.retry_ms(state.settings.retry_ms))
            self.write(first)
            await self.flush()
        except StreamClosedError:
            stream.close(CloseReason.CLIENT_GONE)  # the client left already
            return
        state.metrics.bytes_sent += len(first)
        iostream = stream.iostream
        if iostream is None or iostream.closed():
            stream.close(CloseReason.CLIENT_GONE)
            return
        # Small writes must leave at once: Nagle would hold one back until the previous
        # one is acknowledged (up to a delayed-ACK timeout, 40 ms).
        iostream.set_nodelay(True)
        # From here on the writer puts live data on the socket from the publish call
        # itself (see SocketWriter), and the connection leaves tornado's HTTP layer:
        # HTTP1Connection.detach (public, what WebSocket upgrades use) ends tornado's
        # request loop, which frees its coroutine, tasks and futures, the connection
        # object, and (no callback refers to it any more) this handler with its request
        # and headers (benchmarks/README.md, "S3 at the machine's limit"). LiveResponse
        # ends the response. get() returns without finishing it; tornado 6 has no
        # public way to say so (the old @asynchronous decorator set this private flag).
        self._auto_finish = False
        conn = self.request.connection
        if isinstance(conn, HTTP1Connection):
            conn.detach()
        writer = state.writers.http(iostream, stream.sub, chunked=chunked)
        LiveResponse(stream, iostream, chunked, self.request).attach(writer)
        writer.start()

    def on_finish(self) -> None:
        """Note that the response has ended (before the stream went live)."""
        self._response_ended = True

    def on_connection_close(self) -> None:
        """The client went away: stop the subscription (tornado chat demo's habit)."""
        if self.stream is not None:
            self.stream.close(CloseReason.CLIENT_GONE)


class LiveResponse:
    """The end of a live SSE response once its connection has left tornado's HTTP layer.

    Watches the connection for the client going away (``IOStream.set_close_callback``)
    and, when the writer is done (shutdown, broker close, token expiry, slow consumer,
    client gone), ends the body: the last chunk ``0 CRLF CRLF`` on HTTP/1.1 (RFC 9112
    §7.1), so the client sees a clean end of stream and reconnects with Last-Event-ID,
    then the connection is closed (a server may close an idle persistent connection,
    RFC 9112 §9.6); an HTTP/1.0 body simply ends at close. Writes the access-log line
    tornado would have written at ``finish()``. Small on purpose: it is what a live
    stream keeps besides its writer and subscription.
    """

    __slots__ = ("_chunked", "_iostream", "_log", "_stream")

    def __init__(
        self,
        stream: OpenStream,
        iostream: IOStream,
        chunked: bool,
        request: tornado.httputil.HTTPServerRequest,
    ) -> None:
        self._stream = stream
        self._iostream = iostream
        self._chunked = chunked
        # (summary, start in time.time()) only if the access log would print the line.
        self._log: tuple[str, float] | None = None
        if access_log.isEnabledFor(logging.INFO):
            self._log = (request_summary(request), time.time() - request.request_time())

    def attach(self, writer: SocketWriter) -> None:
        """End the response when ``writer`` is done; stop the stream if the client leaves."""
        self._iostream.set_close_callback(self._client_gone)
        writer.done.add_done_callback(self._done)

    def _client_gone(self) -> None:
        self._stream.close(CloseReason.CLIENT_GONE)

    def _done(self, _: asyncio.Future[None]) -> None:
        self._stream.close(CloseReason.CLIENT_GONE)
        if self._log is not None:
            summary, start = self._log
            access_log.info("200 %s %.2fms", summary, 1000.0 * (time.time() - start))
        iostream = self._iostream
        if iostream.closed():
            return
        if not self._chunked:
            iostream.close()
            return
        try:
            ended = iostream.write(b"0\r\n\r\n")
        except StreamClosedError:
            return
        ended.add_done_callback(lambda _: iostream.close())


class SnapshotHandler(JSONHandler):
    """``GET /snapshot?symbols=...``: the latest tick per symbol (the polling baseline)."""

    lists_symbols = True

    def get(self) -> None:
        """Respond ``{"last_id": ..., "quotes": {symbol: tick}}``."""
        state = self.state
        claims = authorize(self, state)
        symbols = allowed_symbols(state, claims, parse_symbols(self, state))
        broker = state.broker
        self.write_json({"last_id": broker.last_id, "quotes": broker.snapshot(symbols)})


class SymbolsHandler(JSONHandler):
    """``GET /symbols``: every symbol with its model, parameters and last price."""

    def get(self) -> None:
        """Respond with ``source.describe()``."""
        authorize(self, self.state)
        self.write_json(self.state.source.describe())


class SymbolHandler(JSONHandler):
    """``GET``/``PUT /symbols/{symbol}``: one symbol's description / change its parameters."""

    cors_methods = "GET, PUT, OPTIONS"

    def _symbol(self, name: str) -> str:
        def not_found(message: str) -> ApiError:
            return symbols_error(self.state, message, status=404)

        (symbol,) = self.state.resolve_symbols([name], not_found)
        return symbol

    def get(self, name: str) -> None:
        """Respond with the symbol's entry of ``source.describe()``."""
        authorize(self, self.state)
        symbol = self._symbol(name)
        self.write_json(self.state.source.describe().get(symbol, {}))

    async def put(self, name: str) -> None:
        """Apply a JSON object of parameters; respond with the new parameters.

        On a serving-only Redis instance the change is forwarded to the producer
        (``StreamSource.aupdate``); 503 when no producer answers.
        """
        authorize(self, self.state, admin=True)
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

    async def get(self) -> None:
        """Render this app's registry (401/403 without a fit token for ``token``; 404 on
        the main port for ``listener``). ``?aggregate=1``: every worker's metrics summed
        (``quoteflow serve --workers N``; a single server is its own aggregate)."""
        policy = self.state.settings.metrics_policy
        if policy == "listener" and not self.listener:
            raise ApiError(404, "/metrics is served on the metrics listener only (--metrics-port)")
        if policy == "token":
            authorize(self, self.state, metrics=True)
        text = self.state.metrics.render()
        aggregate = self.state.metrics_aggregate
        if aggregate is not None and self.get_query_argument("aggregate", "0") in ("1", "true"):
            try:
                text = (await aggregate()).encode()
            except ConnectionError as exc:
                raise ApiError(503, f"aggregate metrics unavailable: {exc}") from None
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(text)


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
