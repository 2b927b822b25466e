"""The pieces of ``quoteflow serve --workers N`` that need no process: ids, backlog,
frames, lazy payloads, the metrics sum, the port reservation, the ``--workers`` value."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quoteflow.broker.memory import MemoryBroker
from quoteflow.cli.workers import (
    Producer,
    aggregate_metrics,
    batch_of,
    parse_workers,
    reserve_port,
)
from quoteflow.server.link import Payload, encode_frame, read_frame_blocking
from quoteflow.sources import MarketEvent, Source
from quoteflow.wire.payload import EncodedBatch


class _Source(Source):
    def __init__(self) -> None:
        self.names = ["A", "B"]

    @property
    def symbols(self) -> list[str]:
        return list(self.names)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {s: {"model": "x", "params": {}, "price": None} for s in self.names}

    def update(self, symbol: str, params: Any) -> dict[str, Any]:
        return {}

    async def batches(self) -> AsyncIterator[list[MarketEvent]]:  # pragma: no cover
        if False:
            yield []


def _tick(symbol: str, price: float) -> MarketEvent:
    return MarketEvent("tick", symbol, {"symbol": symbol, "price": price})


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_producer_numbers_like_a_memory_broker_and_drops_unencodable() -> None:
    producer = Producer(_Source(), buffer_size=100, buffer_age=60.0)
    producer.publish([_tick("A", 1.0), _tick("B", float("nan")), _tick("B", 2.0)])
    producer.publish([_tick("A", 3.0)])
    ids, kinds, syms, texts = producer.backlog()
    assert ids == [1, 2, 3]  # the NaN event used no id, as in MemoryBroker.publish
    assert syms == ["A", "B", "A"] and kinds == ["tick"] * 3
    assert json.loads(texts[1]) == {"symbol": "B", "price": 2.0}
    assert producer.dropped == 1 and producer.next_id == 4


def test_producer_keeps_given_ids_and_drops_ids_that_go_back() -> None:
    producer = Producer(_Source(), buffer_size=100, buffer_age=60.0)
    events = [_tick("A", 1.0), _tick("B", 2.0)]
    producer.publish(EncodedBatch(events, [], [10, 20]))
    producer.publish(EncodedBatch([_tick("A", 3.0)], [], [15]))  # below the newest: dropped
    assert producer.backlog()[0] == [10, 20]
    assert producer.dropped == 1 and producer.next_id == 21


def test_backlog_is_bounded_by_size_and_age() -> None:
    clock = _Clock()
    producer = Producer(_Source(), buffer_size=3, buffer_age=10.0, clock=clock)
    for i in range(5):
        producer.publish([_tick("A", float(i + 1))])
    assert producer.backlog()[0] == [3, 4, 5]
    clock.now = 5.0
    producer.publish([_tick("A", 9.0)])
    clock.now = 12.0  # ids 3-5 are 12 s old, id 6 is 7 s old
    assert producer.backlog()[0] == [6]


def test_a_worker_broker_fed_the_producers_frames_issues_the_producers_ids() -> None:
    producer = Producer(_Source(), buffer_size=100, buffer_age=60.0)
    producer.publish([_tick("A", 1.0), _tick("B", 2.0)])
    producer.publish([_tick("A", 3.0)])
    a, b = socket.socketpair()
    with a, b:
        a.sendall(encode_frame(("batch", *producer.backlog(), (0.0, 0, 0))))
        kind, ids, kinds, syms, texts, _state = read_frame_blocking(b)
    assert kind == "batch"
    broker = MemoryBroker()
    broker.publish(batch_of(ids, kinds, syms, texts))
    assert broker.last_id == "3"
    # The snapshot parses the lazy payload: the fields and the producer's seq.
    assert broker.snapshot() == {
        "A": {"symbol": "A", "price": 3.0, "seq": 3},
        "B": {"symbol": "B", "price": 2.0, "seq": 2},
    }


def test_payload_parses_only_when_a_field_is_read() -> None:
    payload = Payload('{"symbol":"A","price":1.5}')
    assert "seq" not in payload and bool(payload)
    assert payload._fields is None  # the broker's checks did not parse it
    assert payload["price"] == 1.5 and dict(payload) == {"symbol": "A", "price": 1.5}
    assert "seq" in Payload('{"seq":3}') and not Payload("{}")


def test_aggregate_sums_counters_and_takes_max_and_min_where_a_sum_means_nothing() -> None:
    one = (
        "# HELP quoteflow_connections Open streams.\n# TYPE quoteflow_connections gauge\n"
        "quoteflow_connections 3.0\n"
        'quoteflow_events_published_total{event="tick"} 100.0\n'
        "quoteflow_last_event_id 120.0\n"
        "quoteflow_start_time_seconds 50.0\n"
        'quoteflow_worker_info{instance="h:1",worker="0"} 1.0\n'
        'quoteflow_delivery_latency_seconds_bucket{le="0.01"} 7.0\n'
    )
    two = one.replace(" 3.0", " 4.0").replace(" 100.0", " 98.0").replace(" 120.0", " 118.0")
    two = two.replace(" 50.0", " 40.0").replace(" 7.0\n", " 5.0\n")
    text = aggregate_metrics([one, two], workers=3)
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["quoteflow_connections"] == 7.0
    assert values['quoteflow_delivery_latency_seconds_bucket{le="0.01"}'] == 12.0
    assert values['quoteflow_events_published_total{event="tick"}'] == 100.0
    assert values["quoteflow_last_event_id"] == 120.0
    assert values["quoteflow_start_time_seconds"] == 40.0
    assert values['quoteflow_workers{state="answered"}'] == 2.0
    assert values['quoteflow_workers{state="configured"}'] == 3.0
    assert "worker_info" not in text
    assert text.count("# TYPE quoteflow_connections gauge") == 1


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("3", 3), (" 2", 2)])
def test_parse_workers_counts(text: str, value: int) -> None:
    assert parse_workers(text) == value


def test_parse_workers_auto_is_the_core_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert parse_workers("auto") == 6 and parse_workers("AUTO") == 6


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", ""])
def test_parse_workers_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="worker count"):
        parse_workers(text)


def test_reserved_port_gets_no_connection_and_workers_can_listen_on_it() -> None:
    held, port = reserve_port("127.0.0.1", 0)
    try:
        assert port > 0
        # Nobody listens yet: a connection is refused, not queued on the reservation.
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), 1),
        ):
            pass
        listener = socket.socket()
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(8)
            with socket.create_connection(("127.0.0.1", port), 1):
                conn, _ = listener.accept()
                conn.close()
    finally:
        for sock in held:
            sock.close()


def test_reserving_a_port_in_use_says_which_address() -> None:
    busy = socket.socket()
    with busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            reserve_port("127.0.0.1", port)


class _FakeLink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def buffered(self) -> int:
        return sum(map(len, self.frames))


def test_a_worker_that_does_not_read_its_feed_is_reported_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("quoteflow.cli.workers.MAX_LINK_BACKLOG", 1000)
    stuck: list[int] = []
    producer = Producer(_Source(), buffer_size=100, buffer_age=60.0, on_stuck=stuck.append)
    reading, not_reading = _FakeLink(), _FakeLink()
    producer.links = {0: reading, 1: not_reading}  # type: ignore[dict-item]
    producer.publish([_tick("A", 1.0)])
    assert stuck == []
    reading.frames.clear()  # worker 0 takes its frames, worker 1 never does
    for i in range(30):
        producer.publish([_tick("A", float(i + 2))])
        reading.frames.clear()
    assert set(stuck) == {1}
