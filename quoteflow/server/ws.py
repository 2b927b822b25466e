"""``GET /ws``: the same feed as ``/stream``, over a WebSocket (for the transport comparison).

Same subscription and resume semantics as ``/stream``: query parameters ``symbols``,
``events`` and ``lastEventId`` (validated before the upgrade, so a bad request is a JSON
400 like on ``/stream``), auth, the connection limits, the replay buffer (resume with no
gap, or a ``reset`` message with a snapshot), the slow-consumer bound. Every event is one
text frame (RFC 6455 §5.6) holding ``{"id": "...", "event": "tick", "data": {...}}``;
a heartbeat is a ping frame. The client never needs to send anything but pongs (messages
it sends are ignored).

What a client sends is bounded in size and in time, so that it cannot make the server
hold memory with messages it never finishes:

- a message over ``ws_max_message_size`` (4 KiB; all fragments together) closes the
  connection with 1009 (tornado's ``websocket_max_message_size``), before its payload
  is read;
- every ``ws_frame_timeout`` seconds (10) the server pings, and a client that has not
  answered within the next ``ws_frame_timeout`` is closed with 1008. A pong cannot pass
  a frame that was started and not finished (frames are sent whole, one after another,
  RFC 6455 §5.4), so this bounds how long any frame may take, and it drops dead peers
  too. The check runs on the server's one heartbeat timer, not a timer per connection.

The subscription is opened with ``Framing.WEBSOCKET``: the broker builds each event's
frame from its parts (:mod:`quoteflow.wire.ws`, once per event while a WebSocket
subscriber exists) and joins them once per group and batch, as it does for SSE, and its
heartbeat is a ping frame. The frames go to the socket as they are, through the same
:class:`~quoteflow.server.writer.SocketWriter` as SSE.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import tornado.websocket

from quoteflow.broker.base import CloseReason, Framing, Subscription
from quoteflow.server.handlers import JSONHandler
from quoteflow.server.request import ApiError
from quoteflow.server.streams import OpenStream, open_subscription
from quoteflow.server.writer import SocketWriter
from quoteflow.wire.ws import ws_frame

__all__ = ["FRAME_TIMEOUT", "WebSocketStreamHandler", "ws_frame"]

log = logging.getLogger(__name__)

#: Close reason of a client that did not answer a ping in time (see the module docstring).
FRAME_TIMEOUT = "ws_frame_timeout"

_CLOSE_CODES = {
    CloseReason.SHUTDOWN: (1001, "server shutting down; reconnect with lastEventId"),
    CloseReason.BROKER_CLOSED: (1001, "server shutting down; reconnect with lastEventId"),
    CloseReason.TOKEN_EXPIRED: (1008, "token expired"),
    CloseReason.SLOW_CONSUMER: (1008, "slow consumer: reconnect with lastEventId"),
    # RFC 6455 §7.4.1: 1008, the endpoint received something that violates its policy.
    FRAME_TIMEOUT: (1008, "no pong in time: finish every frame promptly and answer pings"),
}


class WebSocketStreamHandler(tornado.websocket.WebSocketHandler, JSONHandler):
    """``GET /ws``: the feed as WebSocket text frames (see the module docstring).

    Admission is the same as ``/stream``'s
    (:func:`~quoteflow.server.streams.open_subscription`); from ``JSONHandler`` it takes
    the JSON errors, CORS and the header-size check of every API endpoint.
    """

    lists_symbols = True
    #: The admitted stream (None until admitted, or when refused).
    stream: OpenStream | None = None
    _writer: SocketWriter | None = None
    _opened = False
    #: When the last liveness ping went out, and whether it is still unanswered
    #: (monotonic seconds; see the module docstring).
    _pinged_at = 0.0
    _awaiting_pong = False
    #: When the client was found not answering (then it is closed, and cut if it lingers).
    _timed_out_at: float | None = None

    def check_origin(self, origin: str) -> bool:
        """Same origin, or an origin allowed by ``--cors-origin``."""
        if super().check_origin(origin):
            return True
        allowed = self.state.settings.cors_origins
        return "*" in allowed or origin in allowed

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Validate and subscribe (JSON errors before the upgrade), then upgrade."""
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(
                400, "/ws is a WebSocket endpoint (Upgrade: websocket); use /stream for SSE"
            )
        stream = self.stream = open_subscription(
            self, self.state, watch=self._check_client, framing=Framing.WEBSOCKET
        )
        try:
            await super().get(*args, **kwargs)
        finally:
            if not self._opened:  # the handshake was refused (origin, version...)
                stream.close(CloseReason.CLIENT_GONE)

    def open(self, *args: str, **kwargs: str) -> None:
        """Connected: start writing the replay, then live data."""
        self._opened = True
        self._pinged_at = time.monotonic()
        conn = self.ws_connection
        if self.stream is None or conn is None or conn.stream is None:
            return
        sub = self.stream.sub
        writer = self.state.writers.websocket(conn.stream, sub)
        self._writer = writer
        writer.done.add_done_callback(lambda _: self._finished_writing(sub))
        writer.start()

    def _finished_writing(self, sub: Subscription) -> None:
        code, reason = _CLOSE_CODES.get(sub.close_reason or "", (1000, ""))
        if self.ws_connection is not None:
            self.close(code, reason)

    def on_message(self, message: str | bytes) -> None:
        """Messages from the client are ignored (the subscription is in the URL)."""

    def on_pong(self, data: bytes) -> None:
        """The client answered: every frame it started before has been finished."""
        self._awaiting_pong = False

    def _check_client(self, now: float) -> None:
        """The liveness ping and its deadline (on every tick of the app's heartbeat timer)."""
        stream = self.stream
        if not self._opened or stream is None:
            return
        sub = stream.sub
        timeout = self.state.settings.ws_frame_timeout
        if self._timed_out_at is not None:
            # Closed with 1008 already; a client that does not even read that is cut.
            if now - self._timed_out_at > timeout:
                stream.cut()
            return
        if sub.closed:
            return
        if self._awaiting_pong:
            if now - self._pinged_at > timeout:
                self._timed_out_at = now
                log.info(
                    "closing WebSocket client %s: no pong within %g s",
                    self.request.remote_ip,
                    timeout,
                )
                # The writer sends what is pending, then the close frame (1008).
                sub.close(FRAME_TIMEOUT)
            return
        if now - self._pinged_at >= timeout:
            conn = self.ws_connection
            if conn is None or conn.is_closing():
                return
            # Through tornado's stream: SocketWriter (shared=True) keeps frames in order.
            conn.write_ping(b"")
            self._pinged_at = now
            self._awaiting_pong = True

    def on_close(self) -> None:
        """The connection ended (either side): stop the subscription."""
        if self.stream is not None:
            self.stream.close(CloseReason.CLIENT_GONE)
