"""Start a quote server from a notebook cell without blocking the kernel.

Why a thread with its own event loop, and not a task on the kernel's loop: the kernel's
loop only turns while no cell is running. A cell doing ``time.sleep(5)``, a long fit or a
plain ``for`` loop would freeze a server living on that loop; every connected client
(including the browser dashboard) would stall and, after its heartbeat timeout, reconnect.
A server on its own thread keeps serving whatever the cell does, and its loop is never the
kernel's, so nothing in it touches widgets (those stay on the kernel loop, see
:mod:`quoteflow.notebook.chart`).

Re-running a cell must not leak servers: every server started here is kept in a
module-level registry under a ``name`` (default ``"default"``); starting one under a name
that is taken stops the previous one first and frees its port. ``stop_all()`` stops
everything, and so does interpreter exit.
"""

from __future__ import annotations

import atexit
import html
import os
import threading
from types import TracebackType
from typing import Any

from quoteflow.errors import QuoteflowError

__all__ = ["BackgroundServer", "running_servers", "serve_in_background", "stop_all"]

_registry: dict[str, BackgroundServer] = {}
_registry_lock = threading.Lock()


def _proxy_prefix() -> str | None:
    """URL prefix of jupyter-server-proxy on JupyterHub/Binder, if we run there."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not prefix:
        return None
    return prefix if prefix.endswith("/") else prefix + "/"


class BackgroundServer:
    """Handle of a quote server running on its own thread (see :func:`serve_in_background`).

    Attributes
    ----------
    name
        Registry name; starting another server under the same name stops this one.
    host, port
        Where the server listens (``port`` is the bound port, also when 0 was asked for).
    url
        ``http://host:port``: the address for code in the kernel (``LiveChart``,
        ``quoteflow.client``).
    browser_url
        Where a *browser* reaches the dashboard: ``url``, or on JupyterHub/Binder the
        jupyter-server-proxy path ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/``.
    market
        The source being served (a :class:`quoteflow.market.Market` unless another
        source was given); changing its parameters changes the stream.
    """

    def __init__(self, source: Any, *, host: str, port: int, name: str, **options: Any) -> None:
        from quoteflow.server.runner import QuoteServer

        self.name = name
        self.host = host
        self.market = source
        self._requested_port = port
        self._server = QuoteServer(source, host=host, port=port, **options)
        self._started = False
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (0 before start)."""
        return int(self._server.port or 0)

    @property
    def server(self) -> Any:
        """The underlying :class:`quoteflow.server.runner.QuoteServer`."""
        return self._server

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """Server-side base URL, ``http://host:port`` (for clients in the kernel)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "localhost") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def browser_url(self) -> str:
        """Dashboard URL for the user's browser (proxied on JupyterHub/Binder)."""
        prefix = _proxy_prefix()
        if prefix is None:
            return self.url + "/"
        return f"{prefix}proxy/{self.port}/"

    @property
    def stream_url(self) -> str:
        """``url + "/stream"``."""
        return self.url + "/stream"

    @property
    def running(self) -> bool:
        """True between a successful start and stop."""
        return self._started and not self._stopped

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving on a new thread with its own event loop; return once bound.

        Raises
        ------
        QuoteflowError
            If the server does not come up within ``timeout`` seconds or cannot bind
            (e.g. the port is taken); the message carries the cause.
        """
        if self._started:
            return self
        try:
            self._server.start_in_thread(timeout=timeout)
        except (OSError, RuntimeError) as exc:
            raise QuoteflowError(
                f"quote server failed to start on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        self._started = True
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server, end its streams and free its port. Idempotent.

        Parameters
        ----------
        timeout
            Seconds to wait for the server thread to finish.
        """
        if self._started and not self._stopped:
            self._server.stop_in_thread(timeout=timeout)
        self._stopped = True
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- display

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<BackgroundServer {self.name!r} {state} at {self.url}>"

    def _repr_html_(self) -> str:
        if not self.running:
            return f"<p>quoteflow server <code>{html.escape(self.name)}</code>: stopped</p>"
        symbols = ", ".join(html.escape(str(s)) for s in getattr(self.market, "symbols", []))
        link = html.escape(self.browser_url)
        return (
            "<div class='quoteflow-server'>quoteflow server "
            f"<code>{html.escape(self.name)}</code> running: "
            f"<a href='{link}' target='_blank' rel='noopener'>dashboard &#8599;</a>"
            f" &middot; stream <code>{html.escape(self.stream_url)}</code>"
            f" &middot; symbols: {symbols}</div>"
        )


def serve_in_background(
    market: Any = None,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    name: str = "default",
    seed: int | None = None,
    timeout: float = 10.0,
    **options: Any,
) -> BackgroundServer:
    """Start a quote server on a background thread and return its handle.

    Works inside a running Jupyter kernel (the server has its own thread and event
    loop, so cells that block do not stall it). Calling it again with the same ``name``
    (re-running the cell) stops the previous server first: no leaked servers or ports.
    With ``port=0`` the new server takes the previous one's port again, so clients and
    :class:`~quoteflow.notebook.LiveChart` views of it reconnect to the new server.

    Parameters
    ----------
    market
        What to serve: a :class:`quoteflow.market.Market` or any source. ``None``:
        ``Market.default(seed=seed)``.
    port
        TCP port; 0 picks a free one (see ``handle.port``).
    host
        Interface to bind; loopback by default.
    name
        Registry name, see above. Use different names to run several servers at once.
    seed
        Seed of the default market (ignored when ``market`` is given).
    timeout
        Seconds to wait for the server to come up.
    **options
        Passed to :class:`quoteflow.server.runner.QuoteServer` (e.g. ``heartbeat``).

    Returns
    -------
    BackgroundServer
        With ``url``, ``port``, ``browser_url``, ``market``, ``stop()``; usable as a
        context manager; shows a dashboard link when it is a cell's value.

    Raises
    ------
    QuoteflowError
        If the server cannot start (port taken, bad options...).
    """
    with _registry_lock:
        previous = _registry.pop(name, None)
    # Re-running the cell keeps the address: charts and clients of the old server
    # reconnect to the new one by themselves (``port=0`` only; a given port is a given).
    keep = previous.port if previous is not None and port == 0 and previous.host == host else 0
    if previous is not None:
        previous.stop()
    if market is None:
        from quoteflow.market import Market

        market = Market.default(seed=seed)
    handle = BackgroundServer(market, host=host, port=keep or port, name=name, **options)
    try:
        handle.start(timeout=timeout)
    except QuoteflowError:
        if not keep:
            raise
        # Someone else took the old port meanwhile: any free one (charts follow by name).
        handle = BackgroundServer(market, host=host, port=0, name=name, **options)
        handle.start(timeout=timeout)
    with _registry_lock:
        _registry[name] = handle
    return handle


def running_servers() -> dict[str, BackgroundServer]:
    """The servers started by :func:`serve_in_background` that are still registered."""
    with _registry_lock:
        return dict(_registry)


def stop_all() -> None:
    """Stop every server started by :func:`serve_in_background`."""
    with _registry_lock:
        handles = list(_registry.values())
    for handle in handles:
        handle.stop()


atexit.register(stop_all)
