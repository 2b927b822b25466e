"""The wire format, in one home: event payloads, SSE framing, and the SSE parser.

- :mod:`quoteflow.wire.payload`: the JSON payload schema of ``tick``, ``bar``, ``trade`` and ``session``, the fast
  per-symbol encoder the market uses, ``seq`` (added once, by the broker) and the
  broker's encode-once framer;
- :mod:`quoteflow.wire.sse`: Server-Sent Events framing (the only place SSE bytes are
  written);
- :mod:`quoteflow.wire.ws`: WebSocket framing of events (``/ws``: one text frame per
  event, ping heartbeats), built from an event's parts;
- :mod:`quoteflow.wire.parser`: :class:`SSEParser` and :class:`Event` (the only place
  SSE bytes are read).

Standard library only, and nothing else from quoteflow: the market, the brokers, the
server and the client all import this package, and it imports none of them (checked by
``tests/unit/test_packaging.py``).
"""

from __future__ import annotations

from quoteflow.wire.parser import Event, SSEParser
from quoteflow.wire.payload import (
    BAR_FIELDS,
    EVENT_TYPES,
    SEQ_FIELD,
    SESSION_FIELDS,
    SESSION_STATES,
    TICK_FIELDS,
    TRADE_FIELDS,
    TRADE_SIDES,
    EncodedBatch,
    EventFramer,
    PayloadEncoder,
    encode_payload,
    pre_encoded,
    with_seq,
)
from quoteflow.wire.sse import (
    encode_comment,
    encode_event,
    encode_fields,
    encode_retry,
    event_data,
    split_lines,
)
from quoteflow.wire.ws import PING_FRAME, WsFramer, ws_event, ws_frame, ws_message

__all__ = [
    "BAR_FIELDS",
    "EVENT_TYPES",
    "PING_FRAME",
    "SEQ_FIELD",
    "SESSION_FIELDS",
    "SESSION_STATES",
    "TICK_FIELDS",
    "TRADE_FIELDS",
    "TRADE_SIDES",
    "EncodedBatch",
    "Event",
    "EventFramer",
    "PayloadEncoder",
    "SSEParser",
    "WsFramer",
    "encode_comment",
    "encode_event",
    "encode_fields",
    "encode_payload",
    "encode_retry",
    "event_data",
    "pre_encoded",
    "split_lines",
    "with_seq",
    "ws_event",
    "ws_frame",
    "ws_message",
]
