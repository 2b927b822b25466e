"""The wire format's one home: payload encoding, ``seq`` and the broker's framer."""

from __future__ import annotations

import json
import math
import random

import pytest

from quoteflow.wire import (
    BAR_FIELDS,
    SEQ_FIELD,
    TICK_FIELDS,
    TRADE_FIELDS,
    TRADE_SIDES,
    EncodedBatch,
    EventFramer,
    PayloadEncoder,
    SSEParser,
    encode_event,
    encode_payload,
    pre_encoded,
    with_seq,
)


def _compact(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def test_fast_encoder_writes_what_the_json_module_writes() -> None:
    """The per-symbol templates are byte-for-byte json.dumps (compact), for any floats."""
    rng = random.Random(7)
    names = ["AAA", 'Q"UOTE', "ünï", "a\\b"]
    enc = PayloadEncoder(names)
    for _ in range(200):
        price = [rng.uniform(1e-6, 1e6) for _ in names]
        bid = [p * 0.999 for p in price]
        ask = [p * 1.001 for p in price]
        size = [rng.randrange(1, 10_000) for _ in names]
        stamp, sim = "2026-11-27T02:03:04.567Z", "2024-11-29T17:59:00.000Z"
        texts = enc.ticks(price, bid, ask, size, stamp, 1764208984567123456, sim)
        for i, text in enumerate(texts):
            values = (names[i], price[i], bid[i], ask[i], size[i])
            want = dict(zip(TICK_FIELDS, (*values, stamp, 1764208984567123456, sim), strict=True))
            assert text == _compact(want)
        bars = enc.bars(price, ask, bid, price, size, "a", "b", sim)
        for i, text in enumerate(bars):
            values = (names[i], price[i], ask[i], bid[i], price[i], size[i], "a", "b", sim)
            assert text == _compact(dict(zip(BAR_FIELDS, values, strict=True)))
        # A subset of the symbols (bars from trades) and trades, any number per symbol.
        which = sorted(rng.sample(range(len(names)), 2))
        sub = enc.bars(
            [price[i] for i in which],
            [ask[i] for i in which],
            [bid[i] for i in which],
            [price[i] for i in which],
            [size[i] for i in which],
            "a",
            "b",
            sim,
            which,
        )
        for j, i in enumerate(which):
            values = (names[i], price[i], ask[i], bid[i], price[i], size[i], "a", "b", sim)
            assert sub[j] == _compact(dict(zip(BAR_FIELDS, values, strict=True)))
        syms = sorted(rng.choices(range(len(names)), k=5))
        sides = [rng.choice(TRADE_SIDES) for _ in syms]
        trades = enc.trades(
            syms, [price[i] for i in syms], [size[i] for i in syms], sides, stamp, sim
        )
        for j, i in enumerate(syms):
            values = (names[i], price[i], size[i], sides[j], stamp, sim)
            assert trades[j] == _compact(dict(zip(TRADE_FIELDS, values, strict=True)))


def test_with_seq_adds_an_int_seq_to_any_object() -> None:
    assert with_seq('{"a":1}', 5) == '{"a":1,"seq":5}'
    assert with_seq("{}", 1) == '{"seq":1}'
    assert json.loads(with_seq(encode_payload({"x": [1, 2]}), 2**40))[SEQ_FIELD] == 2**40
    with pytest.raises(ValueError, match="not a JSON object"):
        with_seq("[1]", 1)


def test_framer_fast_and_generic_paths_write_the_same_bytes() -> None:
    framer = EventFramer()
    data = {"symbol": "AAA", "price": 1.5, "size": 100}
    text = encode_payload(data)
    fast = framer.frame("tick", data, text, 7, 7)
    generic = framer.frame("tick", data, None, 7, 7)
    assert fast == generic == encode_event(_compact({**data, "seq": 7}), id="7", event="tick")
    (event,) = SSEParser().feed(fast)
    assert json.loads(event.data)["seq"] == 7 and event.id == "7"


def test_framer_refuses_what_is_not_json() -> None:
    framer = EventFramer()
    with pytest.raises(ValueError):
        framer.frame("tick", {"price": math.nan}, None, 1, 1)
    with pytest.raises(ValueError):
        framer.frame("ti\nck", {"price": 1.0}, None, 1, 1)


def test_pre_encoded_reads_only_an_encoded_batch() -> None:
    pairs = [({"a": 1}, '{"a":1}')]
    assert pre_encoded(EncodedBatch(["e"], pairs)) == pairs
    assert pre_encoded(["e"]) == ()


def test_event_data_is_the_exact_inverse_of_one_line_framing() -> None:
    from quoteflow.wire.sse import encode_event, event_data

    for data, eid, kind in (
        ('{"a":1}', "7", "tick"),
        ('{"s":"data: x"}', "1-0", "bar"),
        ("", None, None),
        ('{"é":"ü"}', "9", "tick"),
    ):
        assert event_data(encode_event(data, id=eid, event=kind)) == data.encode()
    for bad in (encode_event("a\nb", id="1"), b": keepalive\n", b"id: 1\n\n", b"data: x\n"):
        with pytest.raises(ValueError, match="not an SSE event frame"):
            event_data(bad)


def test_ws_frames_from_parts_exact_bytes() -> None:
    from quoteflow.wire.ws import PING_FRAME, WsFramer, ws_event, ws_frame, ws_message

    data = b'{"symbol":"A","seq":7}'
    message = b'{"id":"7","event":"tick","data":{"symbol":"A","seq":7}}'
    assert ws_message("7", "tick", data) == message
    assert ws_event("7", "tick", data) == b"\x81" + bytes([len(message)]) + message
    assert WsFramer().frame("7", "tick", data) == ws_event("7", "tick", data)
    assert ws_message(None, "reset", b"{}") == b'{"id":null,"event":"reset","data":{}}'
    assert ws_message("1", 'q"é', b"{}") == b'{"id":"1","event":"q\\"\\u00e9","data":{}}'
    assert PING_FRAME == b"\x89\x00"
    assert ws_frame(b"x" * 125)[:2] == b"\x81\x7d"  # 7-bit length form, largest
    assert ws_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"  # 16-bit length form
    assert ws_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
