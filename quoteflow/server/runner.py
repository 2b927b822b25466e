"""Running the quote server: programmatically (:class:`QuoteServer`) or as ``quoteflow serve``.

:class:`QuoteServer` binds an ``HTTPServer`` around :func:`quoteflow.server.app.make_app`,
either on the running event loop (``await start()`` / ``await stop()``, e.g. inside a
Jupyter kernel) or in a background thread with its own loop (``start_in_thread()`` /
``stop_in_thread()`` or ``with QuoteServer(...)``). ``port=0`` binds a free port, known
as :attr:`QuoteServer.port` after start.

:func:`run_server` is the main-program form: it installs SIGTERM/SIGINT handlers and
shuts down gracefully (stop accepting, end every stream with a clean EOF so clients
resume elsewhere with ``Last-Event-ID``, stop the source, exit 0). Signal handlers are
only installed there, never in the notebook/thread forms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from quoteflow.broker.base import Broker
from quoteflow.broker.memory import DEFAULT_REPLAY_MEMORY, MemoryBroker
from quoteflow.broker.redis import CATCH_UP_TIMEOUT, RedisBroker, StreamSource
from quoteflow.errors import ConfigError
from quoteflow.server.app import (
    METRICS_ACCESS,
    GcGovernor,
    ServerSettings,
    ServerState,
    make_app,
    make_metrics_app,
)
from quoteflow.server.logs import LOG_FORMATS, configure_logging
from quoteflow.server.overload import Acceptor, connection_cap, fd_reserve, raise_open_file_limit

if TYPE_CHECKING:
    from quoteflow.sources import Source

__all__ = [
    "QuoteServer",
    "add_generate_arguments",
    "add_serve_arguments",
    "build_source",
    "run_generate",
    "run_serve",
    "run_server",
]

log = logging.getLogger(__name__)

# Request line + headers above this size are refused by tornado before any handler runs
# (it closes the connection), so a client cannot make the server buffer arbitrary
# headers. 256 KiB (tornado's default is 64) lets an over-long symbol list, e.g. 10,000
# symbols, reach the handler and get a JSON 400 "too many symbols", and lets header fields
# over handlers.HEADER_FIELDS_LIMIT (64 KiB) get a JSON 431 instead of a bare close.
MAX_HEADER_SIZE = 256 * 1024
# Request bodies only exist for PUT /symbols (a small JSON object).
MAX_BODY_SIZE = 64 * 1024
#: Default seconds a connection may take to send its request line and headers, which is
#: also how long an idle keep-alive connection stays open (tornado's header timeout is
#: its idle_connection_timeout). Slow or never-finished headers (slowloris) end there.
HEADER_TIMEOUT = 20.0
#: Default seconds a request body (PUT /symbols, at most MAX_BODY_SIZE) may take to
#: arrive: a never-finished body must not hold its connection (and fd) for ever.
BODY_TIMEOUT = 10.0


# Listen backlog. tornado's default (128) overflows when thousands of EventSource clients
# (re)connect at once, e.g. after a restart: the kernel then drops SYNs and clients wait
# 1-3 s for the retransmit, or time out. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = max(socket.SOMAXCONN, 4096)


def _bind(host: str, port: int) -> list[socket.socket]:
    """``tornado.netutil.bind_sockets`` with a clear error, and no leaked socket."""
    try:
        return tornado.netutil.bind_sockets(port, host, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        # bind_sockets does not close the socket whose bind() failed; close it here
        # rather than leave it to the garbage collector (a ResourceWarning).
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            leaked = frame.f_locals.get("sock")
            if isinstance(leaked, socket.socket):
                leaked.close()
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None


class _HTTPServer(tornado.httpserver.HTTPServer):
    """tornado's HTTPServer, accepting through :class:`~quoteflow.server.overload.Acceptor`.

    tornado's accept handler retries a failing ``accept()`` at once, which at the
    open-file limit is a busy loop; the acceptor answers with 503 and backs off instead.
    """

    acceptor: Acceptor

    def add_sockets(self, sockets: Any) -> None:
        """Listen on ``sockets`` (as tornado's, with the acceptor's accept handler)."""
        for sock in sockets:
            # TCPServer.stop() unregisters and closes through these two tables.
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self.acceptor.add(sock)

    def stop(self) -> None:
        """Stop listening and release the acceptor's spare descriptor."""
        super().stop()
        self.acceptor.close()


class QuoteServer:
    """A quote server for one source: HTTP server, app, broker, publish pump.

    Parameters
    ----------
    source : Source
        Where events come from.
    host : str
        Interface to bind (default loopback).
    port : int
        TCP port; 0 picks a free one (see :attr:`port` after start).
    broker : Broker, optional
        Default: a :class:`MemoryBroker` with ``buffer_size``, ``buffer_age`` and
        ``max_backlog``.
    settings : ServerSettings, optional
        Heartbeat, retry, connection and symbol limits.
    buffer_size, buffer_age, max_backlog, replay_memory : optional
        Bounds of the default broker (events, seconds, bytes, bytes).
    idle_connection_timeout : float
        Seconds a connection may take to send a request's line and headers; also how
        long an idle keep-alive connection (not a stream) stays open.
    body_timeout : float
        Seconds a request body may take to arrive.
    heartbeat, retry_ms, max_connections, max_symbols, auth_secret : optional
        Shortcuts for the :class:`ServerSettings` fields of the same names (they
        override ``settings``).
    """

    def __init__(
        self,
        source: Source,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        broker: Broker | None = None,
        settings: ServerSettings | None = None,
        buffer_size: int = 100_000,
        buffer_age: float = 300.0,
        max_backlog: int = 1 << 20,
        replay_memory: int = DEFAULT_REPLAY_MEMORY,
        idle_connection_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        heartbeat: float | None = None,
        retry_ms: int | None = None,
        max_connections: int | None = None,
        max_symbols: int | None = None,
        auth_secret: str | None = None,
    ) -> None:
        overrides: dict[str, Any] = {
            k: v
            for k, v in (
                ("heartbeat", heartbeat),
                ("retry_ms", retry_ms),
                ("max_connections", max_connections),
                ("max_symbols", max_symbols),
                ("auth_secret", auth_secret),
            )
            if v is not None
        }
        settings = dataclasses.replace(settings or ServerSettings(), **overrides)
        self.source = source
        self.host = host
        self.requested_port = port
        self.broker: Broker = broker or MemoryBroker(
            buffer_size=buffer_size,
            buffer_age=buffer_age,
            max_backlog_bytes=max_backlog,
            replay_memory_bytes=replay_memory,
        )
        self.settings = settings
        self.idle_connection_timeout = idle_connection_timeout
        self.body_timeout = body_timeout
        self.app: tornado.web.Application = make_app(source, self.broker, settings=self.settings)
        self.state: ServerState = self.app.settings["quoteflow"]
        self.port: int | None = None
        #: Port of the metrics listener (``metrics_access="listener"``), after start.
        self.metrics_port: int | None = None
        self._metrics_http: tornado.httpserver.HTTPServer | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped = False

    # -- URLs --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080/`` (after start)."""
        if self.port is None:
            raise RuntimeError("server not started: call start() first")
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # a wildcard bind is reachable on loopback
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def stream_url(self) -> str:
        """The ``/stream`` URL."""
        return self.url + "stream"

    # -- on the running loop -----------------------------------------------------------

    async def start(self) -> None:
        """Bind, start serving and start the source, on the running event loop.

        Raises
        ------
        OSError
            The address cannot be bound (port in use, bad host).
        """
        if self._http is not None:
            return
        sockets = _bind(self.host, self.requested_port)
        # X-Real-IP / X-Forwarded-For become remote_ip (per-IP limit) only when told.
        http = self._http_server(self.app, xheaders=self.settings.trust_proxy)
        http.add_sockets(sockets)
        self._http = http
        self.port = int(sockets[0].getsockname()[1])
        self._start_metrics_listener()
        await self.state.start()
        # what was bound (a wildcard is every interface, not loopback) and a URL that works
        bound = ", ".join(
            dict.fromkeys(
                f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
                for a in (s.getsockname() for s in sockets)
            )
        )
        wildcard = self.host in ("0.0.0.0", "::", "")
        where = "all interfaces; from this host " if wildcard else ""
        log.info("listening on %s (%s%s)", bound, where, self.url)

    def _http_server(
        self, app: tornado.web.Application, *, xheaders: bool = False
    ) -> _HTTPServer:
        """An ``HTTPServer`` for ``app`` with this server's transport limits."""
        http = _HTTPServer(
            app,
            xheaders=xheaders,
            max_header_size=MAX_HEADER_SIZE,
            max_body_size=MAX_BODY_SIZE,
            idle_connection_timeout=self.idle_connection_timeout,
            body_timeout=self.body_timeout,
        )
        http.acceptor = Acceptor(
            http._handle_connection,
            on_refused=self.state.metrics.connections_refused.labels("open_files").inc,
        )
        return http

    def _start_metrics_listener(self) -> None:
        """Bind ``/metrics`` on its own port when ``metrics_access`` is ``listener``."""
        settings = self.settings
        if settings.metrics_policy != "listener" or settings.metrics_port is None:
            return
        sockets = _bind(settings.metrics_host or self.host, settings.metrics_port)
        http = self._http_server(make_metrics_app(self.state))
        http.add_sockets(sockets)
        self._metrics_http = http
        self.metrics_port = int(sockets[0].getsockname()[1])

    async def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: refuse new connections, end streams cleanly, stop the source.

        Parameters
        ----------
        timeout : float
            Seconds to let streams finish writing before they are cut off.
        """
        if self._stopped or self._http is None:
            return
        self._stopped = True
        http = self._http
        http.stop()  # stop accepting: a reconnect goes to another instance
        if self._metrics_http is not None:
            self._metrics_http.stop()
        await self.state.shutdown(timeout)
        # Idle keep-alive connections (finished streams included) are closed now.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(http.close_all_connections(), timeout)
        if self._metrics_http is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._metrics_http.close_all_connections(), timeout)
        await self.state.close_broker()

    # -- in a background thread --------------------------------------------------------

    def start_in_thread(self, timeout: float = 30.0) -> None:
        """Run the server on its own event loop in a daemon thread; return once bound.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the server to be listening.

        Raises
        ------
        OSError
            Binding failed (re-raised from the thread).
        RuntimeError
            The server did not start in time.
        """
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_requested = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop_requested.wait()
            await self.stop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="quoteflow-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"quote server did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            raise failure[0]

    def stop_in_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and join its thread."""
        thread, loop, event = self._thread, self._loop, self._stop_requested
        if thread is None or loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> QuoteServer:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_in_thread()


def run_server(
    source: Source,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    install_signal_handlers: bool = True,
    on_ready: Callable[[QuoteServer], None] | None = None,
    **options: Any,
) -> int:
    """Serve ``source`` until SIGTERM/SIGINT, then shut down gracefully (main program).

    Parameters
    ----------
    source : Source
        Where events come from.
    host, port
        Address to bind; ``port=0`` picks a free port.
    install_signal_handlers : bool
        Handle SIGTERM and SIGINT (only possible in the main thread).
    on_ready : callable, optional
        Called with the :class:`QuoteServer` once it listens (e.g. to print the URL).
    **options
        More :class:`QuoteServer` arguments (``settings``, ``buffer_size``...).

    Returns
    -------
    int
        Exit status: 0 after a graceful shutdown.
    """

    async def main() -> int:
        server = QuoteServer(source, host=host, port=port, **options)
        # This process is the server: keep GC pauses off the live streams (GcGovernor).
        server.state.gc_governor = GcGovernor()
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
            log.info("signal received: shutting down")
        finally:
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await server.stop()
        return 0

    return asyncio.run(main())


# ----------------------------------------------------------------- quoteflow serve


def _positive(
    kind: Callable[[str], Any], what: str, allow_zero: bool = False
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: must be finite")
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: must be {'>= 0' if allow_zero else '> 0'}"
            )
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 0..65535")
    return value


def _add_source_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The market/source options shared by ``serve`` and ``generate``."""
    what = parser.add_argument_group(title)
    src = what.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="MARKET.toml", help="market from a TOML file")
    src.add_argument(
        "--universe",
        type=_positive(int, "universe size"),
        metavar="N",
        help="N synthetic GBM symbols SYM0000... (load tests)",
    )
    src.add_argument(
        "--replay",
        metavar="TICKER|CSV",
        help="replay real history: a shipped ticker (AAPL, GOOG, IBM, MSFT), 'all', or a CSV",
    )
    src.add_argument(
        "--relay", metavar="URL", help="re-publish an upstream SSE feed (e.g. http://h:8080/stream)"
    )
    what.add_argument("--seed", type=int, default=None, help="random seed (reproducible feed)")
    what.add_argument(
        "--tick-interval",
        type=_positive(float, "tick interval"),
        default=None,
        metavar="SECONDS",
        help="wall seconds between ticks (market default 0.25; replay: seconds per row)",
    )
    what.add_argument(
        "--speed",
        type=_positive(float, "speed"),
        default=None,
        metavar="YEARS_PER_S",
        help="simulated years per wall second (default 1/252: a trading day per second); "
        "replay: historical years per second (252 rows/s per 1.0)",
    )
    what.add_argument(
        "--bar-interval",
        type=_positive(float, "bar interval"),
        default=None,
        metavar="SECONDS",
        help="wall seconds per OHLCV bar (market default 5)",
    )


def _add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` (serve and generate)."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging level (default info)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="stderr log lines: text (default) or json (one object per line, with a "
        "stream_open/stream_close record per stream; docs/observability.md)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``quoteflow serve`` options on ``parser`` (sets ``func``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``serve`` subparser.
    """
    _add_source_arguments(parser, "what to serve (default: the shipped calibrated market)")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    net.add_argument(
        "--port", type=_port, default=8080, help="TCP port (default 8080; 0 picks a free port)"
    )
    net.add_argument(
        "--broker",
        default="memory",
        metavar="URL",
        help="'memory' (default) or redis://host:port/db for several instances",
    )
    net.add_argument(
        "--generate",
        action="store_true",
        help="with --broker redis://: this instance also produces the feed into Redis "
        "(exactly one instance per stream); without it the instance only serves",
    )
    net.add_argument(
        "--catch-up-timeout",
        type=_positive(float, "catch-up timeout"),
        default=CATCH_UP_TIMEOUT,
        metavar="SECONDS",
        help="with --broker redis://: how long a resume whose id this instance has not "
        "read yet waits for it before the stream ends for the client to retry "
        f"(default {CATCH_UP_TIMEOUT:g})",
    )
    net.add_argument(
        "--auth-secret",
        default=None,
        metavar="SECRET",
        help="require HS256 JWTs signed with SECRET (>= 32 bytes; default: env "
        "QUOTEFLOW_AUTH_SECRET, else auth off; an empty value is an error, not 'off'); "
        "prefer the env var: argv is visible in ps",
    )
    net.add_argument(
        "--metrics-access",
        choices=METRICS_ACCESS,
        default=None,
        help="who may read /metrics: open (anyone), token (a token with the metrics or "
        "admin claim), listener (only on --metrics-port, not the main port); default: "
        "token when auth is on, else open",
    )
    net.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="port of the /metrics listener (with --metrics-access listener; 0 picks one)",
    )
    net.add_argument(
        "--metrics-host",
        default=None,
        metavar="HOST",
        help="interface of the /metrics listener (default: --host)",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages of ORIGIN (https://host[:port], or '*') to use the API; "
        "repeatable or comma-separated (default: none, no CORS headers)",
    )
    net.add_argument(
        "--trust-proxy",
        action="store_true",
        help="behind a reverse proxy: take the client address from X-Real-IP / "
        "X-Forwarded-For (for the per-IP limit and logs); never when clients connect directly",
    )
    net.add_argument(
        "--instance-id",
        default=None,
        metavar="NAME",
        help="name of this instance in /healthz and, with --instance-header, in the "
        "X-Quoteflow-Instance response header (default host:pid)",
    )
    net.add_argument(
        "--instance-header",
        action="store_true",
        help="send X-Quoteflow-Instance: NAME on every response (off by default: it "
        "names the host and pid to anyone, without auth)",
    )
    lim = parser.add_argument_group("stream behaviour and limits")
    lim.add_argument(
        "--heartbeat",
        type=_positive(float, "heartbeat"),
        default=15.0,
        metavar="SECONDS",
        help="send ': keepalive' after this many idle seconds (default 15)",
    )
    lim.add_argument(
        "--retry-ms",
        type=_positive(int, "retry", allow_zero=True),
        default=2000,
        metavar="MS",
        help="client reconnection delay sent as 'retry:' (default 2000)",
    )
    lim.add_argument(
        "--max-connections",
        type=_positive(int, "connection limit"),
        default=10_000,
        metavar="N",
        help="open streams beyond which /stream answers 503 (default 10000; lowered to "
        "what the open-file limit can hold, with a reserve, and said so at start-up)",
    )
    lim.add_argument(
        "--header-timeout",
        type=_positive(float, "header timeout"),
        default=HEADER_TIMEOUT,
        metavar="SECONDS",
        help="a request's line and headers must arrive within this; also the idle "
        f"keep-alive timeout (default {HEADER_TIMEOUT:g})",
    )
    lim.add_argument(
        "--body-timeout",
        type=_positive(float, "body timeout"),
        default=BODY_TIMEOUT,
        metavar="SECONDS",
        help=f"a request body (PUT) must arrive within this (default {BODY_TIMEOUT:g})",
    )
    lim.add_argument(
        "--max-connections-per-ip",
        type=_positive(int, "per-IP connection limit"),
        default=100,
        metavar="N",
        help="open streams one client address may hold; more get 429 (default 100)",
    )
    lim.add_argument(
        "--max-symbols",
        type=_positive(int, "symbol limit"),
        default=100,
        metavar="N",
        help="symbols one stream may name (default 100)",
    )
    lim.add_argument(
        "--buffer-size",
        type=_positive(int, "buffer size"),
        default=100_000,
        metavar="EVENTS",
        help="replay buffer length for Last-Event-ID resume (default 100000)",
    )
    lim.add_argument(
        "--buffer-age",
        type=_positive(float, "buffer age"),
        default=300.0,
        metavar="SECONDS",
        help="oldest replayable event (default 300)",
    )
    lim.add_argument(
        "--max-backlog",
        type=_positive(int, "backlog"),
        default=1 << 20,
        metavar="BYTES",
        help="unsent bytes after which a slow client is disconnected (default 1048576)",
    )
    lim.add_argument(
        "--replay-memory",
        type=_positive(int, "replay memory"),
        default=DEFAULT_REPLAY_MEMORY,
        metavar="BYTES",
        help="replay bytes in flight to all resuming clients together; more resumes wait "
        f"their turn (default {DEFAULT_REPLAY_MEMORY})",
    )
    lim.add_argument(
        "--ws-max-message",
        type=_positive(int, "WebSocket message limit"),
        default=4096,
        metavar="BYTES",
        help="largest message a /ws client may send; bigger closes with 1009 (default 4096)",
    )
    lim.add_argument(
        "--ws-frame-timeout",
        type=_positive(float, "WebSocket frame timeout"),
        default=10.0,
        metavar="SECONDS",
        help="a /ws client must answer a ping (finishing any frame it started) within "
        "this time, else it is closed with 1008 (default 10)",
    )
    _add_log_arguments(parser)
    parser.set_defaults(func=run_serve)


def build_source(args: argparse.Namespace) -> Source:
    """The source the ``serve`` options describe.

    Raises
    ------
    ConfigError
        Options that do not apply to the chosen source, or a bad config/replay file.
    """
    from quoteflow.market import Market
    from quoteflow.sources import Relay, Replay

    market_opts = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("tick_interval", args.tick_interval),
            ("speed", args.speed),
            ("bar_interval", args.bar_interval),
        )
        if v is not None
    }
    if args.relay:
        if market_opts:
            flags = ", ".join("--" + k.replace("_", "-") for k in market_opts)
            raise ConfigError(f"{flags} do not apply to --relay (the upstream sets the pace)")
        return Relay(args.relay)
    if args.replay:
        extra = sorted(set(market_opts) - {"tick_interval", "speed"})
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise ConfigError(
                f"{flags} do not apply to --replay (history is fixed, one bar per row)"
            )
        if args.speed is not None and args.tick_interval is not None:
            raise ConfigError("give --speed or --tick-interval for --replay, not both")
        kwargs: dict[str, Any] = {}
        if args.speed is not None:
            kwargs["rows_per_second"] = args.speed * 252.0  # one row is one trading day
        elif args.tick_interval is not None:
            kwargs["rows_per_second"] = 1.0 / args.tick_interval
        target = None if args.replay.lower() == "all" else args.replay
        return Replay(target, **kwargs)
    if args.config:
        return Market.from_toml(args.config, **market_opts)
    if args.universe:
        return Market.universe(args.universe, **market_opts)
    return Market.default(**market_opts)


def _cors_origins(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for origin in value.split(","):
            origin = origin.strip().rstrip("/")
            if origin and origin not in out:
                out.append(origin)
    return tuple(out)


def _settings(args: argparse.Namespace) -> ServerSettings:
    # An empty flag or variable is a mistake to report (check_secret), not "auth off".
    secret = getattr(args, "auth_secret", None)
    if secret is None:
        secret = os.environ.get("QUOTEFLOW_AUTH_SECRET")
    extra: dict[str, Any] = {}
    if getattr(args, "instance_id", None):
        extra["instance"] = args.instance_id
    try:
        return ServerSettings(
            heartbeat=args.heartbeat,
            retry_ms=args.retry_ms,
            max_connections=args.max_connections,
            max_symbols=args.max_symbols,
            auth_secret=secret,
            cors_origins=_cors_origins(getattr(args, "cors_origin", [])),
            max_connections_per_ip=getattr(args, "max_connections_per_ip", 100),
            trust_proxy=bool(getattr(args, "trust_proxy", False)),
            instance_header=bool(getattr(args, "instance_header", False)),
            metrics_access=getattr(args, "metrics_access", None),
            metrics_port=getattr(args, "metrics_port", None),
            metrics_host=getattr(args, "metrics_host", None),
            ws_max_message_size=getattr(args, "ws_max_message", 4096),
            ws_frame_timeout=getattr(args, "ws_frame_timeout", 10.0),
            **extra,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_MARKET_FLAGS = (
    "config",
    "universe",
    "replay",
    "relay",
    "seed",
    "tick_interval",
    "speed",
    "bar_interval",
)


def _check_serve_only(args: argparse.Namespace) -> None:
    """A serving-only Redis instance has no market: market options are a mistake."""
    given = [f for f in _MARKET_FLAGS if getattr(args, f, None) not in (None, False)]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ConfigError(
            f"{flags} describe the market, which the producer runs: pass them to "
            "`quoteflow generate --broker URL` (or add --generate to this instance)"
        )


def _broker(args: argparse.Namespace) -> Broker | None:
    url = args.broker
    if url in (None, "", "memory"):
        if getattr(args, "generate", False):
            raise ConfigError(
                "--generate needs --broker redis://...: the memory broker always generates"
            )
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"--broker {url!r}: use 'memory' or a redis://host:port/db URL")
    try:
        import redis  # noqa: F401  (the client library is an optional dependency)
    except ImportError as exc:
        raise ConfigError(
            f"--broker {url}: the Redis client is not installed ({exc}); "
            "pip install 'quoteflow[scale]'"
        ) from None
    return RedisBroker(
        url,
        produce=bool(getattr(args, "generate", False)),
        consume=True,
        buffer_size=args.buffer_size,
        buffer_age=args.buffer_age,
        max_backlog_bytes=args.max_backlog,
        replay_memory_bytes=args.replay_memory,
        catch_up_timeout=getattr(args, "catch_up_timeout", CATCH_UP_TIMEOUT),
    )


def _cap_connections(settings: ServerSettings) -> ServerSettings:
    """Raise the open-file limit; lower ``max_connections`` to what it can hold (and say so)."""
    soft, _hard = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, soft)
    if cap >= settings.max_connections:
        return settings
    print(
        f"quoteflow: --max-connections lowered from {settings.max_connections} to {cap}: "
        f"the open-file limit is {soft} and {fd_reserve(soft)} descriptors are kept for "
        "health checks, Redis and logs (raise it with ulimit -n)",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(settings, max_connections=cap)


def run_serve(args: argparse.Namespace) -> int:
    """``quoteflow serve``: build the source, serve until SIGTERM/SIGINT, exit 0.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_serve_arguments` options.

    Returns
    -------
    int
        Exit status.

    Raises
    ------
    ConfigError
        Bad option combination or config (the CLI prints it as one line, exit 2).
    OSError
        The address cannot be bound.
    """
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    settings = _settings(args)  # first: a bad secret fails before any work
    settings = _cap_connections(settings)
    broker = _broker(args)
    source: Source
    if isinstance(broker, RedisBroker) and not broker.produce:
        # Serving only: symbols and parameters come from the producer through Redis.
        _check_serve_only(args)
        source = StreamSource(broker)
    else:
        source = build_source(args)

    def ready(server: QuoteServer) -> None:
        n = len(source.symbols)
        base = server.url
        metrics = ""
        if server.metrics_port is not None:
            metrics = f", metrics on port {server.metrics_port}"
        print(
            f"quoteflow serving {n} symbols on {base} (dashboard), stream at {base}stream"
            + metrics,
            flush=True,
        )

    return run_server(
        source,
        host=args.host,
        port=args.port,
        on_ready=ready,
        broker=broker,
        settings=settings,
        buffer_size=args.buffer_size,
        buffer_age=args.buffer_age,
        max_backlog=args.max_backlog,
        replay_memory=args.replay_memory,
        idle_connection_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )


# ----------------------------------------------------------------- quoteflow generate


def _redact(url: str) -> str:
    """``url`` without its password (the printed line and logs may be shared)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``quoteflow generate`` options on ``parser`` (sets ``func``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``generate`` subparser.
    """
    _add_source_arguments(parser, "what to produce (default: the shipped calibrated market)")
    out = parser.add_argument_group("where to")
    out.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="redis://host:port/db that the serving instances read (quoteflow serve --broker)",
    )
    out.add_argument(
        "--maxlen",
        type=_positive(int, "stream length"),
        default=100_000,
        metavar="EVENTS",
        help="approximate cap of the Redis stream (XADD MAXLEN ~; default 100000)",
    )
    out.add_argument(
        "--outbox",
        type=_positive(int, "outbox size"),
        default=100_000,
        metavar="EVENTS",
        help="events kept while Redis is unreachable, sent once it is back (default 100000)",
    )
    net = parser.add_argument_group("health endpoint (optional)")
    net.add_argument("--host", default="127.0.0.1", help="interface for --port (default 127.0.0.1)")
    net.add_argument(
        "--port",
        type=_port,
        default=None,
        help="serve /healthz, /livez and /metrics on this port (0 picks one; default: no HTTP)",
    )
    _add_log_arguments(parser)
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """``quoteflow generate``: produce the market into Redis until SIGTERM/SIGINT, exit 0.

    The producer of a scaled-out deployment: it runs the source and ``XADD``\\ s every event
    to the Redis stream that the ``quoteflow serve --broker`` instances read, publishes
    the symbol catalog and applies parameter changes they forward. It serves no streams;
    with ``--port`` it answers ``/healthz`` (503 ``degraded`` while Redis is down),
    ``/livez`` and ``/metrics``. On SIGTERM it stops the source, sends what it still
    holds (briefly) and exits 0.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_generate_arguments` options.

    Returns
    -------
    int
        Exit status.

    Raises
    ------
    ConfigError
        Bad option combination, config or broker URL.
    OSError
        ``--port`` cannot be bound.
    """
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    url = str(args.broker)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"--broker {url!r}: quoteflow generate needs a redis://host:port/db URL")
    source = build_source(args)
    broker = RedisBroker(
        url, produce=True, consume=False, maxlen=args.maxlen, outbox_size=args.outbox
    )

    async def main() -> int:
        app = make_app(source, broker, streams=False)
        state: ServerState = app.settings["quoteflow"]
        http: tornado.httpserver.HTTPServer | None = None
        where = ""
        if args.port is not None:
            sockets = _bind(args.host, args.port)
            http = tornado.httpserver.HTTPServer(app)
            http.add_sockets(sockets)
            host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            where = f", health at http://{host}:{sockets[0].getsockname()[1]}/healthz"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await state.start()
            print(
                f"quoteflow generating {len(source.symbols)} symbols into {_redact(url)} "
                f"(stream {broker.stream}){where}",
                flush=True,
            )
            await stop.wait()
            log.info("signal received: stopping the producer")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if http is not None:
                http.stop()
            await state.shutdown(timeout=1.0)
            await state.close_broker()  # sends what the outbox still holds (up to 2 s)
        if broker.outbox_size:
            log.warning("%d events were not written to Redis before exit", broker.outbox_size)
        return 0

    return asyncio.run(main())
