"""Opening a live stream: one admission path for ``/stream`` (SSE) and ``/ws`` (WebSocket).

:func:`open_subscription` validates the request (``symbols``, ``events``, the resume id,
the token), applies the connection limits, subscribes to the broker and registers the
result, an :class:`OpenStream`, in ``state.streams``. The handlers only differ in how
they write: ``StreamHandler`` (handlers.py) as an SSE response body, ``WebSocketStreamHandler``
(ws.py) as WebSocket frames, both through :mod:`quoteflow.server.writer`.

An :class:`OpenStream` is what the app's heartbeat timer and graceful shutdown see of a
stream (:meth:`~OpenStream.heartbeat`, :meth:`~OpenStream.end`, :meth:`~OpenStream.cut`);
the handler calls :meth:`~OpenStream.close` when its connection ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from tornado.iostream import IOStream

from quoteflow.broker.base import CloseReason, EventIdError, Framing, Subscription
from quoteflow.server.logs import track_connection
from quoteflow.server.overload import IntervalLog
from quoteflow.server.request import (
    ApiError,
    RequestView,
    allowed_symbols,
    authorize,
    last_argument,
    parse_events,
    parse_symbols,
    symbols_error,
)
from quoteflow.server.writer import connection_stream

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState

__all__ = ["OpenStream", "open_subscription", "refusal_logs"]

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


class OpenStream:
    """An admitted stream: its subscription, its slot under the connection limits and
    its token's expiry timer. Made by :func:`open_subscription`.

    Parameters
    ----------
    state : ServerState
        The app's state; the stream is in ``state.streams`` until :meth:`close`.
    sub : Subscription
        The broker subscription.
    ip : str
        Client address (counted against ``--max-connections-per-ip``).
    iostream : IOStream or None
        The client connection (closed by :meth:`cut`).
    watch : callable, optional
        Called with the monotonic time on every heartbeat tick (the WebSocket handler's
        liveness ping).

    Attributes
    ----------
    sub : Subscription
    ip : str
    iostream : IOStream or None
    """

    __slots__ = ("_expiry", "_open", "_state", "_watch", "iostream", "ip", "sub")

    def __init__(
        self,
        state: ServerState,
        sub: Subscription,
        ip: str,
        iostream: IOStream | None,
        watch: Callable[[float], None] | None = None,
    ) -> None:
        self._state = state
        self.sub = sub
        self.ip = ip
        self.iostream = iostream
        self._watch = watch
        self._expiry: asyncio.TimerHandle | None = None
        self._open = True
        state.streams.add(self)
        state.streams_by_ip[ip] = state.streams_by_ip.get(ip, 0) + 1
        state.metrics.streams_opened.inc()
        sub.add_close_callback(self._on_sub_closed)

    def expire_at(self, seconds_left: float) -> None:
        """End the stream with ``TOKEN_EXPIRED`` after ``seconds_left`` seconds."""
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(seconds_left, self.sub.close, CloseReason.TOKEN_EXPIRED)

    def heartbeat(self, now: float, idle: float, chunk: bytes) -> bool:
        """Queue ``chunk`` if the stream has been idle ``idle`` seconds; True if sent."""
        if self._watch is not None:
            self._watch(now)
        sub = self.sub
        if sub.closed or now - sub.last_activity < idle:
            return False
        sub.push_heartbeat(chunk)
        return True

    def end(self) -> None:
        """End the stream cleanly (graceful shutdown): the writer sends what is pending."""
        self.sub.close(CloseReason.SHUTDOWN)

    def cut(self) -> None:
        """Close the connection at once (slow consumer; shutdown of a stuck writer)."""
        if self.iostream is not None:
            self.iostream.close()

    def close(self, reason: str) -> None:
        """The connection ended: free the slot and end the subscription (idempotent)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._open:
            self._open = False
            state = self._state
            state.streams.discard(self)
            left = state.streams_by_ip.get(self.ip, 1) - 1
            if left > 0:
                state.streams_by_ip[self.ip] = left
            else:
                state.streams_by_ip.pop(self.ip, None)
        self.sub.close(reason)

    def _on_sub_closed(self, sub: Subscription) -> None:
        if sub.close_reason != CloseReason.SLOW_CONSUMER:
            return
        log.info("closing slow consumer %s (backlog over bound)", self.ip)
        # The writer may have bytes parked in tornado's buffer for a socket the client
        # does not read; closing the stream fails that write and ends the handler.
        self.cut()


def _refused(state: ServerState, reason: str, figure: int) -> None:
    """Count a refusal by a connection limit; log a summary at most once per interval."""
    state.metrics.streams_rejected.labels(reason).inc()
    state.refusals[reason].hit(figure)


def open_subscription(
    view: RequestView,
    state: ServerState,
    *,
    watch: Callable[[float], None] | None = None,
    framing: Framing = Framing.SSE,
) -> OpenStream:
    """Validate a stream request, apply the limits and subscribe; register the stream.

    The one admission path of ``/stream`` and ``/ws``: query ``symbols``, ``events``,
    ``lastEventId`` (the ``Last-Event-ID`` header wins), auth (a token's ``exp`` also
    ends the stream), ``--max-connections`` and ``--max-connections-per-ip``.

    Parameters
    ----------
    view : RequestView
        The request (the handler).
    state : ServerState
        The app's state.
    watch : callable, optional
        See :class:`OpenStream`.
    framing : Framing
        How the broker frames the events (``/ws``: ``Framing.WEBSOCKET``).

    Returns
    -------
    OpenStream
        Its subscription has the replay (streamed) or reset for the resume point attached.

    Raises
    ------
    ApiError
        400 bad parameters, 401/403 auth, 429 per-address limit, 503 limit or
        shutting down (or a scenario's ``refuse`` step, which may also answer 204).
    """
    if state.closing:
        raise ApiError(503, "server is shutting down; reconnect to another instance")
    state.faults.admit(view)  # a scenario's "refuse" step (server/faults.py)
    claims = authorize(view, state)
    symbols = allowed_symbols(state, claims, parse_symbols(view, state))
    events = parse_events(view, state)
    request = view.request
    # The header is what an EventSource sends on reconnect, so it is newer than a
    # lastEventId query parameter baked into the URL: the header wins.
    last_id = request.headers.get("Last-Event-ID") or last_argument(view, "lastEventId")
    settings = state.settings
    if len(state.streams) >= settings.max_connections:
        _refused(state, "max_connections", len(state.streams))
        raise ApiError(
            503,
            f"too many connections ({settings.max_connections}); retry later",
            quiet_log=True,
        )
    # remote_ip is the proxy's X-Real-IP only with --trust-proxy (tornado xheaders).
    ip = request.remote_ip or "?"
    per_ip = settings.max_connections_per_ip
    if state.streams_by_ip.get(ip, 0) >= per_ip:
        _refused(state, "max_connections_per_ip", per_ip)
        raise ApiError(
            429,
            f"too many streams from {ip} ({per_ip}); close some or subscribe to "
            "several symbols on one stream",
            quiet_log=True,
        )
    try:
        sub = state.broker.subscribe(symbols, events, last_id or None, framing)
    except EventIdError as exc:
        raise symbols_error(state, str(exc)) from None
    stream = OpenStream(state, sub, ip, connection_stream(request), watch)
    track_connection(sub, path=request.path, remote=ip, last_event_id=last_id or None)
    if claims is not None:
        # "exp" is honoured during the stream too: it ends cleanly at expiry and the
        # reconnect is refused with 401 until the client has a fresh token.
        stream.expire_at(max(claims.seconds_left(), 0.0))
    return stream
