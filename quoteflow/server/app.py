"""The Tornado application: routes, shared state, the publish pump and heartbeats.

``make_app(source, broker)`` builds an application (tornado's ``make_app()`` factory
habit); :class:`ServerState` (``app.settings["quoteflow"]``) holds what the handlers
share. ``await state.start()`` runs the pump (``async for batch in source.batches():
broker.publish(batch)``) and the heartbeat timer on the current loop; ``await
state.shutdown()`` ends every stream cleanly. :class:`quoteflow.server.runner.QuoteServer`
does both around an ``HTTPServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.web
from tornado.ioloop import PeriodicCallback

from quoteflow.broker.base import Broker
from quoteflow.broker.factory import broker_from_url
from quoteflow.errors import ConfigError
from quoteflow.history import HistorySettings, HistoryStore
from quoteflow.server.auth import check_secret, symbol_key
from quoteflow.server.cors import RefusedOriginLog
from quoteflow.server.faults import ScenarioHandler, ScenarioHost, StreamFaults
from quoteflow.server.handlers import (
    DashboardHandler,
    HealthHandler,
    LiveHandler,
    MetricsHandler,
    NotFoundHandler,
    SnapshotHandler,
    StaticHandler,
    StreamHandler,
    SymbolHandler,
    SymbolsHandler,
)
from quoteflow.server.history import HistoryHandler
from quoteflow.server.logs import log_request
from quoteflow.server.metrics import ServerMetrics
from quoteflow.server.openapi import OpenAPIHandler
from quoteflow.server.replay import ReplayHandler
from quoteflow.server.request import ApiError
from quoteflow.server.streams import OpenStream, refusal_logs
from quoteflow.server.writer import LiveWriters
from quoteflow.server.ws import WebSocketStreamHandler
from quoteflow.sources import Catalog, Source
from quoteflow.wire.sse import encode_comment

__all__ = [
    "METRICS_ACCESS",
    "METRICS_ROUTE",
    "ROUTES",
    "STATIC_PATH",
    "GcGovernor",
    "Route",
    "ServerSettings",
    "ServerState",
    "default_instance_id",
    "log_request",
    "make_app",
    "make_metrics_app",
]

log = logging.getLogger(__name__)

#: The dashboard's folder (index.html, dashboard.js, dashboard.css).
STATIC_PATH = Path(__file__).resolve().parent / "static"

_HEARTBEAT = encode_comment("keepalive")

#: Who may read ``/metrics``: anyone (``open``), a token with the ``metrics`` or ``admin``
#: claim (``token``), or anyone reaching a separate listener (``listener``, on
#: ``metrics_port``; the main port then answers 404 for it).
METRICS_ACCESS = ("open", "token", "listener")


def default_instance_id() -> str:
    """``host:pid``: names this process in ``X-Quoteflow-Instance`` and ``/healthz``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class GcGovernor:
    """Keeps the cyclic garbage collector's full passes off the live streams' objects.

    Each open stream owns ~100 GC-tracked objects (handler, request, connection, stream,
    futures). At 10,000 streams a full (generation 2) collection walks a million objects
    and stops the event loop for 0.3-0.5 s, and CPython runs one whenever long-lived
    objects have grown by 25 %, i.e. repeatedly while clients connect. The governor
    calls ``gc.freeze()`` (Python docs, ``gc.freeze``) whenever the number of streams
    has grown by a quarter since the last freeze, so full passes only walk what is newer.
    Frozen objects are still freed by reference counting when a stream closes; only
    reference cycles among them wait, until the stream count halves and
    ``gc.unfreeze()`` hands them back to the collector. Each freeze is preceded by a
    collection of what is not frozen yet, so no dead cycle is frozen.

    Process-wide, so only the main-program server (``quoteflow serve``) uses it, never a
    server inside a notebook kernel.
    """

    def __init__(self) -> None:
        self.frozen_at = 0
        self.freezes = 0

    def start(self) -> None:
        """Freeze what start-up allocated (modules, the market, the app)."""
        gc.collect()
        gc.freeze()
        self.freezes += 1

    def check(self, streams: int) -> None:
        """Freeze after growth, unfreeze after a large drop (called about once a second)."""
        if streams >= self.frozen_at + max(500, self.frozen_at // 4):
            # Collect first, or the garbage of the latest requests is frozen with the
            # live streams: a stream's handler, request and tornado's connection die in
            # reference cycles once the stream goes live (StreamHandler detaches it), and
            # frozen cycles are never freed. The pass walks only what is not frozen yet.
            gc.collect()
            gc.freeze()
            self.frozen_at = streams
            self.freezes += 1
        elif streams < self.frozen_at // 2:
            gc.unfreeze()
            self.frozen_at = streams


def _bokeh_static() -> Path | None:
    try:
        from bokeh.util.paths import bokehjs_path

        return Path(bokehjs_path())
    except Exception:  # bokeh missing or broken: the dashboard says so, the feed still runs
        return None


@dataclass(frozen=True)
class ServerSettings:
    """Per-server limits and timings (the ``quoteflow serve`` flags of the same names).

    Attributes
    ----------
    heartbeat : float
        Seconds of silence after which a stream gets a ``: keepalive`` comment.
    retry_ms : int
        Reconnection time sent as the first line of every stream (``retry:``).
    max_connections : int
        Open streams beyond which ``/stream`` answers 503.
    max_symbols : int
        Symbols one stream may name.
    static_path : Path
        Folder of the dashboard page.
    auth_secret : str or None
        HS256 secret; when set, ``/stream``, ``/snapshot`` and ``/symbols`` need a
        token (``PUT /symbols/...`` an admin token). None: auth off.
    cors_origins : tuple of str
        Origins allowed to call the API from a browser page of another origin
        (``Access-Control-Allow-Origin``); ``"*"`` allows any (without credentials).
        Empty: no CORS headers at all (same-origin only).
    max_connections_per_ip : int
        Open streams one client address may hold; more are refused with 429.
    trust_proxy : bool
        Take the client address from ``X-Real-IP`` / ``X-Forwarded-For`` (set by the
        reverse proxy). Only behind a proxy that sets them: a direct client could forge
        them and escape the per-address limit.
    instance : str
        Name of this server in ``/healthz`` (and the ``X-Quoteflow-Instance`` header).
    instance_header : bool
        Send ``X-Quoteflow-Instance: <instance>`` on every response. Off by default: the
        default name is ``host:pid``, which nobody needs to learn without auth.
    metrics_access : {"open", "token", "listener"} or None
        Who may read ``/metrics`` (see :data:`METRICS_ACCESS`). None: ``token`` when auth
        is on (fail closed), ``open`` when it is off; :attr:`metrics_policy` is the
        value in force.
    metrics_port : int or None
        Port of the metrics listener (``metrics_access="listener"`` only; 0 picks one).
    metrics_host : str or None
        Interface of the metrics listener (None: the server's own host).
    ws_max_message_size : int
        Largest message (bytes, all fragments) a WebSocket client may send; a bigger one
        closes the connection with 1009. The client never needs to send more than a
        pong, so the bound is small.
    ws_frame_timeout : float
        Seconds within which a WebSocket client must answer a ping (and so finish any
        frame it has started); otherwise the connection is closed with 1008.
    """

    heartbeat: float = 15.0
    retry_ms: int = 2000
    max_connections: int = 10_000
    max_symbols: int = 100
    static_path: Path = field(default=STATIC_PATH)
    auth_secret: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_connections_per_ip: int = 100
    trust_proxy: bool = False
    instance: str = field(default_factory=default_instance_id)
    instance_header: bool = False
    metrics_access: str | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    ws_max_message_size: int = 4096
    ws_frame_timeout: float = 10.0

    @property
    def metrics_policy(self) -> str:
        """The ``/metrics`` access in force: ``metrics_access`` or its default."""
        if self.metrics_access is not None:
            return self.metrics_access
        return "token" if self.auth_secret is not None else "open"

    def __post_init__(self) -> None:
        if not self.heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {self.heartbeat}")
        if self.retry_ms < 0:
            raise ValueError(f"retry_ms must be >= 0, got {self.retry_ms}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.max_symbols < 1:
            raise ValueError(f"max_symbols must be >= 1, got {self.max_symbols}")
        if self.max_connections_per_ip < 1:
            raise ValueError(
                f"max_connections_per_ip must be >= 1, got {self.max_connections_per_ip}"
            )
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"CORS origin {origin!r} must be '*' or scheme://host[:port], "
                    "e.g. https://app.example.com"
                )
        if self.auth_secret is not None:
            check_secret(self.auth_secret)
        self._check_metrics()
        if self.ws_max_message_size < 126:
            raise ValueError(
                f"ws_max_message_size must be >= 126 bytes, got {self.ws_max_message_size}"
            )
        if not 0 < self.ws_frame_timeout < float("inf"):
            raise ValueError(f"ws_frame_timeout must be > 0 seconds, got {self.ws_frame_timeout}")

    def _check_metrics(self) -> None:
        access = self.metrics_access
        if access is not None and access not in METRICS_ACCESS:
            raise ValueError(f"metrics access {access!r}: choose from {', '.join(METRICS_ACCESS)}")
        if access == "token" and self.auth_secret is None:
            raise ValueError(
                "metrics access 'token' needs auth on (--auth-secret / QUOTEFLOW_AUTH_SECRET)"
            )
        if (access == "listener") != (self.metrics_port is not None):
            raise ValueError(
                "--metrics-port and --metrics-access listener go together: the listener "
                "needs a port (0 picks one), and a port is only used by the listener"
            )
        if self.metrics_host is not None and access != "listener":
            raise ValueError("--metrics-host only applies with --metrics-access listener")


class ServerState:
    """What the handlers of one app share.

    Parameters
    ----------
    source : Catalog
        The symbols; a :class:`~quoteflow.sources.Source` also produces the events
        (required when ``broker.produces``).
    broker : Broker
        Fans them out.
    settings : ServerSettings
        Limits and timings.
    """

    def __init__(
        self,
        source: Catalog,
        broker: Broker,
        settings: ServerSettings,
        history: HistorySettings | None = None,
    ) -> None:
        self.source = source
        self.broker = broker
        self.settings = settings
        #: Bars and ticks for ``GET /history``, read from the broker like a client.
        self.history = HistoryStore(source.bar_interval, history)
        #: The open streams of ``/stream`` and ``/ws`` (see streams.open_subscription).
        self.streams: set[OpenStream] = set()
        #: Open streams per client address (the per-IP limit).
        self.streams_by_ip: dict[str, int] = {}
        self.metrics = ServerMetrics(broker, source, lambda: len(self.streams))
        #: Summaries of streams refused by a connection limit (see refusal_logs).
        self.refusals = refusal_logs()
        #: Makes the live streams' socket writers; owns their latency samples and
        #: framing cache.
        latency = self.metrics.delivery_latency
        self.writers = LiveWriters(self.metrics, latency.observe, latency.observe_many)
        self.started = time.monotonic()
        self.closing = False
        self.source_error: str | None = None
        self.source_done = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._running = False
        self._heartbeat: PeriodicCallback | None = None
        #: Set by ``quoteflow serve`` (:func:`~quoteflow.server.runner.run_server`) only.
        self.gc_governor: GcGovernor | None = None
        #: Refused cross-origin requests, logged once per origin per minute.
        self.refused_origins = RefusedOriginLog()
        #: A scenario's transport faults (drop, stall, retry, refuse, restart).
        self.faults = StreamFaults(self)
        #: ``/metrics?aggregate=1`` of a worker of ``quoteflow serve --workers N``: every
        #: worker's metrics summed (set by :mod:`quoteflow.cli.workers`); None: this
        #: server alone is the aggregate.
        self.metrics_aggregate: Callable[[], Awaitable[str]] | None = None

    # -- symbols -----------------------------------------------------------------------

    def known_symbols(self) -> list[str]:
        """The source's symbols, sorted."""
        return sorted(self.source.symbols)

    def resolve_symbols(
        self, names: Iterable[str], error: Callable[[str], ApiError]
    ) -> frozenset[str]:
        """Map requested names to the source's symbols (case-insensitive).

        Parameters
        ----------
        names : iterable of str
            Requested names.
        error : callable
            Builds the exception to raise with a message.

        Raises
        ------
        ApiError
            Via ``error``, naming the unknown symbols.
        """
        known = {symbol_key(s): s for s in self.source.symbols}
        if not known and not self.source.symbols_known:
            # A serving-only instance that has not reached Redis yet cannot tell an
            # unknown symbol from one it has not heard of: say so instead of a 400.
            raise ApiError(503, "symbols not known yet: the broker is unreachable; retry")
        out: set[str] = set()
        unknown: list[str] = []
        for name in names:
            symbol = known.get(symbol_key(name))
            if symbol is None:
                unknown.append(name)
            else:
                out.add(symbol)
        if unknown:
            shown = ", ".join(repr(u[:40]) for u in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise error(f"unknown symbol(s) {shown}{more}; see known_symbols")
        return frozenset(out)

    # -- running -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the publish pump and the heartbeat timer on the running loop."""
        if self._running:
            return
        self._running = True
        self.started = time.monotonic()
        # A producer on Redis publishes the catalog for the serving instances (which
        # have no source) and applies the parameter changes they forward.
        self.broker.attach_source(self.source)
        if isinstance(self.source, ScenarioHost):
            self.source.attach_transport(self.faults)
        # Brokers with I/O (Redis) connect here; the memory broker has nothing to start.
        await self.broker.start()
        self.history.attach(self.broker)
        await self.history.start()
        # A consuming-only instance (Redis, no --generate) serves what another process
        # produces: it runs no pump.
        if self.broker.produces:
            source = self.source
            if not isinstance(source, Source):
                raise ConfigError(
                    f"{type(source).__name__} produces no events; a producing broker "
                    "needs a Source (a Market, Replay or Relay)"
                )
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(source))
        # One timer for every stream (not one per connection: 10k timers would cost more
        # than one pass over 10k objects). Checking 4x per heartbeat period bounds the
        # extra silence to a quarter period.
        interval = min(max(self.settings.heartbeat / 4, 0.05), 1.0)
        self._heartbeat = PeriodicCallback(self._send_heartbeats, interval * 1000)
        self._heartbeat.start()
        if self.gc_governor is not None:
            self.gc_governor.start()

    async def _run_pump(self, source: Source) -> None:
        try:
            async for batch in source.batches():
                self.broker.publish(batch)
            log.info("source ended; streams stay open (heartbeats only)")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken source must not take the server down
            self.source_error = f"{type(exc).__name__}: {exc}"
            log.exception("source failed; streams stay open but no new events arrive")
        finally:
            self.source_done.set()

    def _send_heartbeats(self) -> None:
        now = time.monotonic()
        idle = self.settings.heartbeat
        sent = 0
        for stream in list(self.streams):
            if stream.heartbeat(now, idle, _HEARTBEAT):
                sent += 1
        if sent:
            self.metrics.heartbeats.inc(sent)
        if self.gc_governor is not None:
            self.gc_governor.check(len(self.streams))

    async def shutdown(self, timeout: float = 5.0) -> None:
        """End every stream cleanly, stop heartbeats and the source.

        Parameters
        ----------
        timeout : float
            Seconds to wait for streams to finish writing what they had pending.
        """
        self.closing = True
        self.faults.release()
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            self._pump = None
        for stream in list(self.streams):
            stream.end()
        deadline = time.monotonic() + timeout
        while self.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # polling a condition: streams leave as they finish
        for stream in list(self.streams):  # stuck writers (client not reading): cut off
            stream.cut()
        await self.history.aclose()
        await self.source.aclose()

    async def close_broker(self) -> None:
        """Close the broker (its ``aclose()``: background work stopped, then ``close()``)."""
        await self.broker.aclose()


@dataclass(frozen=True)
class Route:
    """One HTTP route of the app: the one place a path is written.

    Attributes
    ----------
    path : str
        The public path, as listed by the JSON 404 and ``/openapi.json``.
    pattern : str
        Tornado's URL regex.
    handler : type
        The request handler.
    streams : bool
        Only on an app that serves streams (not on ``quoteflow generate --port``).
    listed : bool
        Named in the 404's list of endpoints.
    """

    path: str
    pattern: str
    handler: type[tornado.web.RequestHandler]
    streams: bool = True
    listed: bool = True


#: ``/metrics``: a route of the main app, and the only one of the metrics listener.
METRICS_ROUTE = Route("/metrics", r"/metrics", MetricsHandler, streams=False)

#: Every route of the main app, in the order the 404 lists them (static files are added
#: by make_app: their directories are settings).
ROUTES: tuple[Route, ...] = (
    Route("/", r"/", DashboardHandler),
    Route("/stream", r"/stream", StreamHandler),
    Route("/ws", r"/ws", WebSocketStreamHandler),
    Route("/snapshot", r"/snapshot", SnapshotHandler),
    Route("/history", r"/history", HistoryHandler),
    Route("/symbols", r"/symbols", SymbolsHandler),
    Route("/symbols/{symbol}", r"/symbols/([^/]+)", SymbolHandler, listed=False),
    Route("/replay", r"/replay", ReplayHandler),
    METRICS_ROUTE,
    Route("/healthz", r"/healthz", HealthHandler, streams=False),
    Route("/livez", r"/livez", LiveHandler, streams=False),
    Route("/scenario", r"/scenario", ScenarioHandler),
    Route("/openapi.json", r"/openapi\.json", OpenAPIHandler),
)


def make_app(
    source: Catalog,
    broker: Broker | None = None,
    *,
    settings: ServerSettings | None = None,
    streams: bool = True,
    history: HistorySettings | None = None,
    **tornado_settings: object,
) -> tornado.web.Application:
    """Build the Tornado application serving ``source`` through ``broker``.

    Parameters
    ----------
    source : Catalog
        The event source (Market, Replay, Relay...), or the catalog of a serving-only
        cluster member (``broker.remote_catalog()``).
    broker : Broker, optional
        Defaults to a :class:`~quoteflow.broker.memory.MemoryBroker` with default bounds.
    settings : ServerSettings, optional
        Limits and timings.
    streams : bool
        False for a producer-only process (``quoteflow generate --port``): only
        ``/healthz``, ``/livez`` and ``/metrics``.
    history : HistorySettings, optional
        Bounds of the ``/history`` store.
    **tornado_settings
        Extra ``tornado.web.Application`` settings.

    Returns
    -------
    tornado.web.Application
        With the shared :class:`ServerState` in ``app.settings["quoteflow"]``; call
        ``await state.start()`` once serving (``QuoteServer`` does).
    """
    settings = settings or ServerSettings()
    if not streams:
        # A producer-only process serves no /history (and may not consume at all).
        history = HistorySettings(max_bars=0, max_ticks=0)
    state = ServerState(source, broker or broker_from_url(None), settings, history)
    routes = [r for r in ROUTES if streams or not r.streams]
    handlers: list[Any] = [(r.pattern, r.handler) for r in routes]
    if streams:
        bokeh_dir = _bokeh_static()
        if bokeh_dir is not None:
            # BokehJS from the installed package: the dashboard works offline (no CDN).
            handlers.append((r"/static/bokeh/(.*)", StaticHandler, {"path": str(bokeh_dir)}))
        handlers.append((r"/static/(.*)", StaticHandler, {"path": str(settings.static_path)}))
    app_settings = _app_settings(state, [r.path for r in routes if r.listed])
    # A client has nothing to send on /ws but pongs (see ws.py): tiny messages only.
    app_settings["websocket_max_message_size"] = settings.ws_max_message_size
    app_settings.update(tornado_settings)
    return tornado.web.Application(handlers, **app_settings)  # type: ignore[arg-type]


def _app_settings(state: ServerState, endpoints: list[str]) -> dict[str, object]:
    return {
        "quoteflow": state,
        # SSE must not be gzip-buffered, and JSON answers are small.
        "compress_response": False,
        "default_handler_class": NotFoundHandler,
        # The 404's list of endpoints: derived from the routes, never written twice.
        "default_handler_args": {"endpoints": endpoints},
        "xsrf_cookies": False,
        # The access log without ?access_token= values, and without a line per request
        # refused by a connection limit (quoteflow.server.logs).
        "log_function": log_request,
    }


def make_metrics_app(state: ServerState) -> tornado.web.Application:
    """The application of the metrics listener (``metrics_access="listener"``).

    Only ``/metrics`` (and JSON 404s), rendering the registry of ``state`` (the main
    app's state: same numbers). No token: what protects it is who can reach its port.
    """
    route = METRICS_ROUTE
    handlers: list[Any] = [(route.pattern, route.handler, {"listener": True})]
    app_settings = _app_settings(state, [route.path])
    return tornado.web.Application(handlers, **app_settings)  # type: ignore[arg-type]
