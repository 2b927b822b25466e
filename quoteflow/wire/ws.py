"""WebSocket framing of events: the one place where ``/ws`` bytes are written.

``GET /ws`` carries the same events as ``/stream``, one text frame (RFC 6455 §5.6) per
event, holding the JSON message ``{"id": "<id>", "event": "<type>", "data": <payload>}``
(:data:`MESSAGE_KEYS`); ``data`` is the payload's JSON text as the broker encoded it,
spliced in unchanged (never decoded and encoded again). A heartbeat is a ping frame
(:data:`PING_FRAME`, RFC 6455 §5.5.2).

The broker builds these frames from an event's parts (id, type, payload text), once per
event and only when a WebSocket subscriber exists, and joins them once per fan-out group
and batch, as it does SSE frames (:class:`quoteflow.broker.fanout.LocalFanout`).

Pure functions, standard library only, nothing else from quoteflow.
"""

from __future__ import annotations

import json
import struct

__all__ = [
    "MESSAGE_KEYS",
    "OP_PING",
    "OP_TEXT",
    "PING_FRAME",
    "WsFramer",
    "ws_event",
    "ws_frame",
    "ws_message",
]

#: RFC 6455 §5.2: first byte of an unfragmented frame, FIN bit + opcode (text, ping).
OP_TEXT = 0x81
OP_PING = 0x89
#: Keys of an event message, in the order written.
MESSAGE_KEYS: tuple[str, str, str] = ("id", "event", "data")


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, unfragmented server-to-client frame (RFC 6455 §5.2).

    Parameters
    ----------
    payload : bytes
        The application data (UTF-8 text for a text frame).
    opcode : int
        First byte: FIN plus the opcode (:data:`OP_TEXT` 0x81, :data:`OP_PING` 0x89).

    Returns
    -------
    bytes
        Header (2, 4 or 10 bytes: the 7-bit, 16-bit or 64-bit payload length, §5.2
        "Payload length") + payload.

    Examples
    --------
    >>> ws_frame(b"hi")
    b'\\x81\\x02hi'
    """
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", opcode, 126, n)
    else:
        head = struct.pack("!BBQ", opcode, 127, n)
    return head + payload


#: The heartbeat of a WebSocket stream: an empty ping (the client answers with a pong).
PING_FRAME = ws_frame(b"", OP_PING)


def ws_message(event_id: str | None, event: str, data: bytes) -> bytes:
    """The JSON message of one event: ``{"id":...,"event":...,"data":<data>}``.

    Parameters
    ----------
    event_id : str or None
        The event id (a JSON string; ``null`` when the event has none).
    event : str
        The event type.
    data : bytes
        The payload's JSON text (UTF-8), spliced in as it is.

    Returns
    -------
    bytes

    Examples
    --------
    >>> ws_message("7", "tick", b'{"seq":7}')
    b'{"id":"7","event":"tick","data":{"seq":7}}'
    """
    return b'{"id":%s,"event":%s,"data":%s}' % (
        json.dumps(event_id).encode(),
        json.dumps(event).encode(),
        data,
    )


def ws_event(event_id: str | None, event: str, data: bytes) -> bytes:
    """The text frame of one event (:func:`ws_frame` of :func:`ws_message`)."""
    return ws_frame(ws_message(event_id, event, data))


class WsFramer:
    """:func:`ws_event` for the broker's fan-out, with the per-type part of the message
    written once per event type instead of once per event."""

    __slots__ = ("_tails",)

    def __init__(self) -> None:
        # Event type -> b',"event":"<type>","data":'
        self._tails: dict[str, bytes] = {}

    def frame(self, event_id: str, event: str, data: bytes) -> bytes:
        """Exactly ``ws_event(event_id, event, data)``."""
        tail = self._tails.get(event)
        if tail is None:
            tail = b',"event":%s,"data":' % json.dumps(event).encode()
            if len(self._tails) < 64:  # no unbounded cache of odd types
                self._tails[event] = tail
        return ws_frame(b'{"id":' + json.dumps(event_id).encode() + tail + data + b"}")
