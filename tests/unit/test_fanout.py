"""LocalFanout, the part every broker shares, and WebSocket framing from event parts.

The fan-out is driven directly here (no broker): keys, types, symbols and SSE frames go
in, exact bytes come out per framing. The MemoryBroker tests cover the same paths through
``publish``.
"""

from __future__ import annotations

import json

import pytest

from quoteflow.broker import ALL_EVENTS, BrokerStats, CloseReason, Framing, LocalFanout
from quoteflow.broker.base import Subscription
from quoteflow.broker.memory import MemoryBroker
from quoteflow.sources import MarketEvent
from quoteflow.wire.sse import encode_event
from quoteflow.wire.ws import PING_FRAME, ws_frame

TICKS = frozenset({"tick"})


def _fanout(**bounds: int) -> LocalFanout:
    return LocalFanout(BrokerStats(), lambda key: f"k{key}", **bounds)  # type: ignore[arg-type]


def _frames(keys: list[int]) -> tuple[list[str], list[str], list[bytes]]:
    kinds = ["tick"] * len(keys)
    syms = ["AAA" if k % 2 else "BBB" for k in keys]
    frames = [
        encode_event(f'{{"symbol":"{s}","seq":{k}}}', id=f"k{k}", event="tick")
        for k, s in zip(keys, syms, strict=True)
    ]
    return kinds, syms, frames


def _append(fan: LocalFanout, keys: list[int], now: float = 0.0) -> list[bytes]:
    kinds, syms, frames = _frames(keys)
    fan.append(keys, kinds, syms, frames, now)
    return frames


def _subscribe(
    fan: LocalFanout,
    symbols: frozenset[str] | None = None,
    framing: Framing = Framing.SSE,
) -> Subscription:
    sub = fan.open(symbols, TICKS, framing)
    fan.add(sub)
    return sub


def _ws(key: int, sym: str) -> bytes:
    return ws_frame(
        b'{"id":"k%d","event":"tick","data":{"symbol":"%s","seq":%d}}' % (key, sym.encode(), key)
    )


def test_one_group_per_filter_and_framing_each_gets_its_own_bytes() -> None:
    fan = _fanout()
    sse = [_subscribe(fan), _subscribe(fan)]
    ws = _subscribe(fan, framing=Framing.WEBSOCKET)
    ws_a = _subscribe(fan, frozenset({"AAA"}), Framing.WEBSOCKET)
    assert fan.group_count == 3 and fan.subscriber_count == 4
    frames = _append(fan, [1, 2, 3])
    chunks = [s.take().data for s in sse]
    assert chunks[0] == b"".join(frames) and chunks[0] is chunks[1]  # joined once per group
    assert ws.take().data == _ws(1, "AAA") + _ws(2, "BBB") + _ws(3, "AAA")
    assert ws_a.take().data == _ws(1, "AAA") + _ws(3, "AAA")


def test_websocket_frames_are_built_only_while_a_websocket_subscriber_exists() -> None:
    built: list[int] = []
    fan = _fanout()
    reframe = fan._reframes[Framing.WEBSOCKET]
    assert reframe is not None

    def counting(key: int, kind: str, frame: bytes) -> bytes:
        built.append(key)
        return reframe(key, kind, frame)

    fan._reframes[Framing.WEBSOCKET] = counting
    _subscribe(fan)
    _append(fan, [1, 2])
    assert built == []  # SSE only: nothing but the SSE frames
    _subscribe(fan, framing=Framing.WEBSOCKET)
    _subscribe(fan, frozenset({"BBB"}), Framing.WEBSOCKET)
    _append(fan, [3, 4])
    assert built == [3, 4]  # once per event, for both WebSocket groups


def test_replay_and_reset_arrive_in_the_subscription_framing() -> None:
    fan = _fanout()
    _append(fan, [1, 2, 3, 4])
    sub = fan.open(frozenset({"BBB"}), TICKS, Framing.WEBSOCKET)
    fan.replay_after(sub, 1)
    fan.add(sub)
    assert sub.take().data == _ws(2, "BBB") + _ws(4, "BBB")
    reset = fan.open(None, TICKS, Framing.WEBSOCKET)
    fan.send_reset(reset, "evicted", "k0", {"AAA": {"seq": 3}}, "k4")
    message = (
        b'{"id":"k4","event":"reset","data":%s}'
        % json.dumps(
            {"reason": "evicted", "last_id": "k0", "snapshot": {"AAA": {"seq": 3}}},
            separators=(",", ":"),
        ).encode()
    )
    assert reset.take().data == ws_frame(message)
    assert fan.stats.replays == 1 and fan.stats.resets == 1


def test_heartbeat_is_the_framing_own() -> None:
    fan = _fanout()
    sse, ws = _subscribe(fan), _subscribe(fan, framing=Framing.WEBSOCKET)
    for sub in (sse, ws):
        sub.push_heartbeat(b": keepalive\n")
    assert sse.take().data == b": keepalive\n"
    assert ws.take().data == PING_FRAME == b"\x89\x00"


def test_slow_consumer_is_cut_off_counted_and_removed() -> None:
    fan = _fanout(max_backlog_bytes=100)
    slow, other = _subscribe(fan), _subscribe(fan, frozenset({"AAA"}))
    for k in range(1, 6):
        _append(fan, [k])
        other.take()  # this one reads
    assert slow.close_reason == CloseReason.SLOW_CONSUMER
    assert fan.stats.slow_consumer_disconnects == 1
    assert fan.subscriptions() == [other] and not other.closed


def test_store_only_append_fans_out_nothing_and_close_ends_everything() -> None:
    fan = _fanout()
    sub = _subscribe(fan)
    kinds, syms, frames = _frames([1, 2])
    fan.append([1, 2], kinds, syms, frames, 0.0, live=False)
    assert not sub.has_pending() and len(fan.log) == 2
    fan.close()
    assert sub.close_reason == CloseReason.BROKER_CLOSED and fan.subscriber_count == 0
    with pytest.raises(RuntimeError, match="closed"):
        fan.open(None, ALL_EVENTS, Framing.SSE)


def test_memory_broker_websocket_subscription_live_resume_and_reset() -> None:
    b = MemoryBroker(buffer_size=4)
    live = b.subscribe(None, ALL_EVENTS, None, Framing.WEBSOCKET)
    b.publish([MarketEvent("tick", "AAA", {"symbol": "AAA", "price": 1.5})])
    assert live.take().data == ws_frame(
        b'{"id":"1","event":"tick","data":{"symbol":"AAA","price":1.5,"seq":1}}'
    )
    for k in range(5):
        b.publish([MarketEvent("tick", "AAA", {"symbol": "AAA", "price": float(k)})])
    resumed = b.subscribe(None, ALL_EVENTS, "5", Framing.WEBSOCKET)
    assert resumed.take().data == ws_frame(
        b'{"id":"6","event":"tick","data":{"symbol":"AAA","price":4.0,"seq":6}}'
    )
    evicted = b.subscribe(None, ALL_EVENTS, "1", Framing.WEBSOCKET)
    data = evicted.take().data
    assert data[:1] == b"\x81"
    message = json.loads(data[4:] if data[1] == 126 else data[2:])
    assert message["id"] == "6" and message["event"] == "reset"
    assert message["data"]["reason"] == "evicted" and message["data"]["last_id"] == "1"
