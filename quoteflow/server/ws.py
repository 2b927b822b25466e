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

The broker fans out SSE bytes (encoded once per event, joined once per group and
batch). :func:`ws_frames` turns such a chunk into WebSocket frames, and since every
member of a group receives the same chunk object in a row, a one-entry cache makes that
conversion once per group and batch too. The frames then go to the socket through the
same :class:`~quoteflow.server.writer.SocketWriter` as SSE.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from typing import Any

import tornado.websocket

from quoteflow.broker.base import CloseReason, Subscription
from quoteflow.server.handlers import JSONHandler
from quoteflow.server.request import ApiError
from quoteflow.server.streams import OpenStream, open_subscription
from quoteflow.server.writer import SocketWriter
from quoteflow.wire.parser import SSEParser

__all__ = ["FRAME_TIMEOUT", "WebSocketStreamHandler", "ws_frame", "ws_frames"]

log = logging.getLogger(__name__)

#: Close reason of a client that did not answer a ping in time (see the module docstring).
FRAME_TIMEOUT = "ws_frame_timeout"

# RFC 6455 §5.2: FIN bit + opcode. Text frames carry the events; pings the heartbeats.
_TEXT = 0x81
_PING = 0x89
_CLOSE_CODES = {
    CloseReason.SHUTDOWN: (1001, "server shutting down; reconnect with lastEventId"),
    CloseReason.BROKER_CLOSED: (1001, "server shutting down; reconnect with lastEventId"),
    CloseReason.TOKEN_EXPIRED: (1008, "token expired"),
    CloseReason.SLOW_CONSUMER: (1008, "slow consumer: reconnect with lastEventId"),
    # RFC 6455 §7.4.1: 1008, the endpoint received something that violates its policy.
    FRAME_TIMEOUT: (1008, "no pong in time: finish every frame promptly and answer pings"),
}


def ws_frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """One unmasked, unfragmented server-to-client frame (RFC 6455 §5.2).

    Parameters
    ----------
    payload : bytes
        The application data (UTF-8 text for a text frame).
    opcode : int
        First byte: FIN plus the opcode (0x81 text, 0x89 ping).

    Returns
    -------
    bytes
        Header (2, 4 or 10 bytes: the 7-bit, 16-bit or 64-bit payload length) + payload.
    """
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", opcode, 126, n)
    else:
        head = struct.pack("!BBQ", opcode, 127, n)
    return head + payload


def _message(event: str, data: str, event_id: str | None) -> bytes:
    # ``data`` is the broker's JSON text: spliced in as is, not parsed and re-encoded.
    return (
        '{"id":' + json.dumps(event_id) + ',"event":' + json.dumps(event) + ',"data":' + data + "}"
    ).encode()


_cache: tuple[bytes, bytes] = (b"", b"")


def ws_frames(chunk: bytes) -> bytes:
    """Convert SSE bytes from the broker into WebSocket frames, one text frame per event.

    Parameters
    ----------
    chunk : bytes
        Complete SSE blocks (events, ``: keepalive`` comments).

    Returns
    -------
    bytes
        The frames, concatenated; a chunk holding no event (a heartbeat) becomes one
        ping frame.
    """
    global _cache
    last, frames = _cache
    if chunk is last:
        return frames
    # Parsed by the one SSE parser of the package, so the two transports cannot drift.
    events = SSEParser().feed(chunk)
    if events:
        frames = b"".join([ws_frame(_message(e.event, e.data, e.id)) for e in events])
    else:
        frames = ws_frame(b"", _PING)
    _cache = (chunk, frames)
    return frames


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
        stream = self.stream = open_subscription(self, self.state, watch=self._check_client)
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
        writer = self.state.writers.websocket(conn.stream, sub, ws_frames)
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
