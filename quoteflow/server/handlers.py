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
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado.iostream import StreamClosedError

from quoteflow.broker.base import ALL_EVENTS, CloseReason, EventIdError, Subscription
from quoteflow.errors import ConfigError
from quoteflow.server.auth import AuthError, Claims, extract_token, verify_token
from quoteflow.server.metrics import CONTENT_TYPE
from quoteflow.server.sse import encode_retry

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState

__all__ = [
    "ApiError",
    "DashboardHandler",
    "HealthHandler",
    "JSONHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "SnapshotHandler",
    "StaticHandler",
    "StreamHandler",
    "SymbolHandler",
    "SymbolsHandler",
]

log = logging.getLogger(__name__)


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose JSON body is ``{"error": message, **extra}``.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        What was wrong and what to do; becomes ``"error"``.
    **extra
        More JSON fields (e.g. ``known_symbols``).
    """

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(status, log_message=None)
        self.payload: dict[str, Any] = {"error": message, **extra}


class JSONHandler(tornado.web.RequestHandler):
    """Base handler: shared state, JSON responses and JSON errors."""

    #: Add ``known_symbols`` to every 400 (subscription endpoints).
    lists_symbols = False

    @property
    def state(self) -> ServerState:
        """The app's :class:`~quoteflow.server.app.ServerState`."""
        state: ServerState = self.application.settings["quoteflow"]
        return state

    def write_json(self, obj: Any, status: int = 200) -> None:
        """Finish the response with ``obj`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(obj, separators=(",", ":"), allow_nan=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is JSON; 500s hide the exception (it is logged by tornado)."""
        payload: dict[str, Any]
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ApiError):
            payload = exc.payload
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

    def symbols_error(self, message: str, status: int = 400) -> ApiError:
        """An :class:`ApiError` that lists the known symbols (the wire contract's 400)."""
        return ApiError(status, message, known_symbols=self.state.known_symbols())

    def authorize(self, *, admin: bool = False) -> Claims | None:
        """Verify the request's token when auth is on; None when auth is off.

        The token comes from ``Authorization: Bearer``, the ``access_token`` query
        parameter (EventSource cannot set headers) or the ``access_token`` cookie.

        Raises
        ------
        ApiError
            401 (missing, bad or expired token) or 403 (``admin`` needed).
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
            if exc.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="quoteflow"')
            raise ApiError(exc.status, str(exc)) from None
        if admin and not claims.admin:
            raise ApiError(403, "this token may not change parameters (needs the admin claim)")
        return claims

    def allowed_symbols(
        self, claims: Claims | None, symbols: frozenset[str] | None
    ) -> frozenset[str] | None:
        """``symbols`` limited by the token: 403 for named symbols it does not allow;
        "all symbols" becomes the token's symbols."""
        if claims is None or claims.symbols is None:
            return symbols
        if symbols is None:
            return frozenset(s for s in self.state.source.symbols if s in claims.symbols)
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


class StreamHandler(JSONHandler):
    """``GET /stream``: the SSE feed (see docs/server.md and DESIGN.md "SSE wire contract")."""

    lists_symbols = True
    sub: Subscription | None = None
    _counted = False
    _expiry: asyncio.TimerHandle | None = None

    async def get(self) -> None:
        """Validate, subscribe (resuming after ``Last-Event-ID``), then stream until closed."""
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
            state.metrics.streams_rejected.labels("max_connections").inc()
            raise ApiError(
                503,
                f"too many connections ({state.settings.max_connections}); retry later",
            )
        try:
            sub = state.broker.subscribe(symbols, events, last_id or None)
        except EventIdError as exc:
            raise self.symbols_error(str(exc)) from None
        self.sub = sub
        state.streams.add(self)
        self._counted = True
        state.metrics.streams_opened.inc()
        sub.add_close_callback(self._on_sub_closed)
        if claims is not None:
            # "exp" is honoured during the stream too: it ends cleanly at expiry and the
            # reconnect is refused with 401 until the client has a fresh token.
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(
                max(claims.seconds_left(), 0.0), sub.close, CloseReason.TOKEN_EXPIRED
            )

        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        # nginx would otherwise buffer the response and the stream would arrive in lumps
        # (seed notes, nginx chapter; deploy/nginx.conf sets the same).
        self.set_header("X-Accel-Buffering", "no")
        if self.request.version == "HTTP/1.1":
            # (HTTP/1.0 bodies without a length end at close, so no keep-alive there.)
            self.set_header("Connection", "keep-alive")
        metrics = state.metrics
        try:
            # WHATWG HTML §9.2.6: "retry" sets the reconnection time; sent first so the
            # client knows it before anything can go wrong. Flushing also sends headers.
            first = encode_retry(state.settings.retry_ms)
            self.write(first)
            await self.flush()
            metrics.bytes_sent += len(first)
            while True:
                await sub.wait()
                if sub.has_pending():
                    delivery = sub.take()
                    self.write(delivery.data)
                    # Take again only once this flush is done: what arrives meanwhile is
                    # the backlog that the slow-consumer bound measures.
                    await self.flush()
                    metrics.bytes_sent += len(delivery.data)
                    metrics.events_delivered += delivery.events
                    if delivery.published_at is not None:
                        metrics.delivery_latency.observe(time.monotonic() - delivery.published_at)
                elif sub.closed:
                    break
        except StreamClosedError:
            pass  # the client left, or a slow consumer was cut off: nothing more to say
        finally:
            self._cleanup(CloseReason.CLIENT_GONE)
        # On shutdown, broker close or token expiry, returning lets tornado finish() the
        # chunked response: the client sees a clean end of stream (not a reset) and
        # reconnects with Last-Event-ID. On a closed connection finish() is a no-op.

    def _on_sub_closed(self, sub: Subscription) -> None:
        if sub.close_reason != CloseReason.SLOW_CONSUMER:
            return
        log.info("closing slow consumer %s (backlog over bound)", self.request.remote_ip)
        # The handler may be parked in flush() on a socket the client does not read;
        # closing the stream fails that flush and ends the handler.
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
            self.state.streams.discard(self)
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

    def put(self, name: str) -> None:
        """Apply a JSON object of parameters; respond with the new parameters."""
        self.authorize(admin=True)
        symbol = self._symbol(name)
        try:
            params = json.loads(self.request.body or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from None
        if not isinstance(params, dict) or not params:
            raise ApiError(
                400,
                'body must be a non-empty JSON object of parameters, e.g. {"sigma": 0.3}',
            )
        try:
            new = self.state.source.update(symbol, params)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ApiError(400, str(exc), symbol=symbol) from None
        self.write_json({"symbol": symbol, "params": new})


class MetricsHandler(JSONHandler):
    """``GET /metrics``: Prometheus text format."""

    def get(self) -> None:
        """Render this app's registry."""
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.state.metrics.render())


class HealthHandler(JSONHandler):
    """``GET /healthz``: liveness and a few numbers."""

    def get(self) -> None:
        """Respond ``{"status", "uptime", "connections", "last_event_id", ...}``."""
        state = self.state
        status = "shutting_down" if state.closing else "ok"
        body: dict[str, Any] = {
            "status": status,
            "uptime": round(time.monotonic() - state.started, 3),
            "connections": len(state.streams),
            "last_event_id": state.broker.last_id,
            "symbols": len(state.known_symbols()),
        }
        if state.source_error is not None:
            body["source_error"] = state.source_error
        health = getattr(state.broker, "health", None)
        if health is not None:  # brokers with I/O (Redis) report their link
            body["broker"] = health()
        self.write_json(body, status=503 if state.closing else 200)


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


class StaticHandler(tornado.web.StaticFileHandler):
    """Static files (dashboard assets, BokehJS) with JSON errors like every endpoint."""

    write_error = JSONHandler.write_error
    state = JSONHandler.state


class NotFoundHandler(JSONHandler):
    """Any other path: JSON 404 listing the endpoints."""

    def prepare(self) -> None:
        """Refuse every method with 404."""
        raise ApiError(
            404,
            f"no such endpoint: {self.request.path}",
            endpoints=["/", "/stream", "/snapshot", "/symbols", "/metrics", "/healthz"],
        )
