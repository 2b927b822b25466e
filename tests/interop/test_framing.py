"""Regression (issue 18): httpx-sse saw the data-less ``retry`` block as an empty event."""

from __future__ import annotations

import json

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from quoteflow.wire.sse import encode_comment, encode_event, encode_retry

pytestmark = [pytest.mark.interop]


def test_httpx_sse_gets_no_empty_event_from_retry_or_heartbeat() -> None:
    # The server's bytes in the order it writes them: retry first (handlers.py), an
    # event, an idle heartbeat (app.py), another event. With the old framing
    # (``retry: 2000\n\n``, ``: keepalive\n\n``) httpx-sse 0.4 dispatched each data-less
    # block as a "message" event with data "" once an id or retry was set.
    wire = (
        encode_retry(2000)
        + encode_event('{"n": 1}', id="1", event="tick")
        + encode_comment()
        + encode_comment()
        + encode_event('{"n": 2}', id="2", event="tick")
    )
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for line in lines.decode(wire.decode()) + lines.flush():
        sse = decoder.decode(line)
        if sse is not None:
            events.append(sse)
    assert [(e.event, e.id, e.retry) for e in events] == [
        ("tick", "1", 2000),
        ("tick", "2", None),  # httpx-sse reports retry on the event that carried it
    ]
    assert [json.loads(e.data) for e in events] == [{"n": 1}, {"n": 2}]  # sse.json() works
