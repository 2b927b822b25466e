"""Running the quote server: programmatically (:class:`QuoteServer`) or as a main program.

:class:`QuoteServer` binds an ``HTTPServer`` around :func:`quoteflow.server.app.make_app`,
either on the running event loop (``await start()`` / ``await stop()``, e.g. inside a
Jupyter kernel) or in a background thread with its own loop (``start_in_thread()`` /
``stop_in_thread()`` or ``with QuoteServer(...)``). ``port=0`` binds a free port, known
as :attr:`QuoteServer.port` after start.

:func:`run_server` is the main-program form: it installs SIGTERM/SIGINT handlers and
shuts down gracefully (stop accepting, end every stream with a clean EOF so clients
resume elsewhere with ``Last-Event-ID``, stop the source, exit 0). Signal handlers are
only installed there (through :func:`run_until_signal`, which ``quoteflow generate`` uses
too), never in the notebook/thread forms. The command line lives in :mod:`quoteflow.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import socket
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from quoteflow.broker.base import Broker
from quoteflow.broker.factory import broker_from_url
from quoteflow.broker.settings import BufferSettings
from quoteflow.history import HistorySettings
from quoteflow.server.app import (
    GcGovernor,
    ServerSettings,
    ServerState,
    make_app,
    make_metrics_app,
)
from quoteflow.server.overload import Acceptor

if TYPE_CHECKING:
    from quoteflow.sources import Catalog

__all__ = ["QuoteServer", "bind_sockets", "run_server", "run_until_signal"]

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


def bind_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """``tornado.netutil.bind_sockets`` with a clear error, and no leaked socket.

    ``reuse_port``: ``SO_REUSEPORT``, so several processes listen on one port
    (``quoteflow serve --workers N``, :mod:`quoteflow.cli.workers`).
    """
    try:
        return tornado.netutil.bind_sockets(
            port, host, backlog=LISTEN_BACKLOG, reuse_port=reuse_port
        )
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
    history : HistorySettings, optional
        Bounds (and, with Redis, the shared archive) of ``GET /history``.
    reuse_port : bool
        Bind with ``SO_REUSEPORT`` (the workers of ``quoteflow serve --workers N``).
    """

    def __init__(
        self,
        source: Catalog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        broker: Broker | None = None,
        settings: ServerSettings | None = None,
        buffer_size: int = BufferSettings.buffer_size,
        buffer_age: float = BufferSettings.buffer_age,
        max_backlog: int = BufferSettings.max_backlog_bytes,
        replay_memory: int = BufferSettings.replay_memory_bytes,
        idle_connection_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        heartbeat: float | None = None,
        retry_ms: int | None = None,
        max_connections: int | None = None,
        max_symbols: int | None = None,
        auth_secret: str | None = None,
        history: HistorySettings | None = None,
        reuse_port: bool = False,
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
        #: Listen with ``SO_REUSEPORT`` (a worker of ``quoteflow serve --workers N``).
        self.reuse_port = reuse_port
        self.broker: Broker = broker or broker_from_url(
            None,
            buffer_size=buffer_size,
            buffer_age=buffer_age,
            max_backlog_bytes=max_backlog,
            replay_memory_bytes=replay_memory,
        )
        self.settings = settings
        self.idle_connection_timeout = idle_connection_timeout
        self.body_timeout = body_timeout
        self.app: tornado.web.Application = make_app(
            source, self.broker, settings=self.settings, history=history
        )
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
        sockets = bind_sockets(self.host, self.requested_port, reuse_port=self.reuse_port)
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

    def _http_server(self, app: tornado.web.Application, *, xheaders: bool = False) -> _HTTPServer:
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
        sockets = bind_sockets(settings.metrics_host or self.host, settings.metrics_port)
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
    source: Catalog,
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
        await run_until_signal(
            server.start,
            server.stop,
            on_ready=None if on_ready is None else functools.partial(on_ready, server),
            install_signal_handlers=install_signal_handlers,
        )
        return 0

    return asyncio.run(main())


async def run_until_signal(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    *,
    on_ready: Callable[[], None] | None = None,
    install_signal_handlers: bool = True,
    stopping: str = "shutting down",
) -> None:
    """``await start()``, then wait for SIGTERM/SIGINT, then ``await stop()`` (always).

    The main loop of every long-running command (``quoteflow serve``, ``quoteflow
    generate``): one place for signal handling, so both shut down the same way.

    Parameters
    ----------
    start, stop
        Coroutine functions that start and stop what the process runs; ``stop`` runs even
        if ``start`` or ``on_ready`` raised.
    on_ready
        Called once started (e.g. to print the URL).
    install_signal_handlers
        Handle SIGTERM and SIGINT on the running loop (main thread only); without them
        this waits until cancelled.
    stopping
        What the log line on a signal says is happening.
    """
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
    try:
        await start()
        if on_ready is not None:
            on_ready()
        await done.wait()
        log.info("signal received: %s", stopping)
    finally:
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await stop()
