"""The Parquet recorder, the reader, and the replay timeline (no sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quoteflow.errors import ConfigError
from quoteflow.playback import RecordedPayload, SessionReplay, _without_seq, parse_speed
from quoteflow.recording import Recorder, read_recording, recording_files


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_every_event_is_a_row_and_flat_payload_fields_are_columns(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "s.parquet")
    rec.add("tick", '{"symbol":"A","price":1.5,"size":3,"seq":7}', "7", 10)
    rec.add("message", "hello, not json", None, 11)
    rec.add("news", '{"symbol":"B","nested":{"x":1},"flag":true}', "8", 12)
    rec.add("tick", '["a", "list"]', "9", 13)
    rec.close()
    (path,) = rec.stats.files
    assert path.name == "s-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    assert [r["data"] for r in rows][1] == "hello, not json"  # raw text kept
    assert [r["id"] for r in rows] == ["7", None, "8", "9"]
    assert rows[0]["payload.price"] == 1.5 and rows[0]["payload.seq"] == 7
    assert rows[1]["payload.symbol"] is None and rows[3]["payload.symbol"] is None
    assert rows[2]["payload.flag"] is True
    assert "payload.nested" not in rows[2]  # nested values stay in data only
    assert [r["received_ns"] for r in rows] == [10, 11, 12, 13]


def test_a_value_that_does_not_fit_its_column_is_null_and_data_keeps_it(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "t.parquet", row_group_rows=2)
    rec.add("tick", '{"symbol":"A","n":1,"price":2}', "1", 1)
    rec.add("tick", '{"symbol":"A","n":2.5,"price":3}', "2", 2)  # n: int then float
    rec.add("tick", '{"symbol":"A","n":"three","late":1,"price":"x"}', "3", 3)
    rec.close()
    table = pq.read_table(rec.stats.files[0])
    assert table.schema.field("payload.n").type == pa.float64()
    assert table.schema.field("payload.price").type == pa.float64()  # a known field
    assert table.column("payload.n").to_pylist() == [1.0, 2.5, None]
    assert table.column("payload.price").to_pylist() == [2.0, 3.0, None]
    assert "payload.late" not in table.column_names
    assert json.loads(table.column("data").to_pylist()[2])["late"] == 1


def test_files_roll_by_time_and_by_size_each_finished_atomically(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(tmp_path / "r.parquet", roll_seconds=5, row_group_rows=1, clock=clock)
    rec.add("tick", '{"symbol":"A"}', "1", 1)
    assert rec.stats.files == [] and rec.stats.current is not None
    assert rec.stats.current.name == "r-00000.parquet.partial"
    clock.t += 5
    rec.add("tick", '{"symbol":"A"}', "2", 2)  # the file is 5 s old: finished
    assert [f.name for f in rec.stats.files] == ["r-00000.parquet"]
    rec.add("tick", '{"symbol":"A"}', "3", 3)
    rec.close()
    assert [f.name for f in rec.stats.files] == ["r-00000.parquet", "r-00001.parquet"]
    assert not list(tmp_path.glob("*.partial"))
    by_size = Recorder(tmp_path / "z.parquet", roll_bytes=1, row_group_rows=1)
    for k in range(3):
        by_size.add("tick", '{"symbol":"A"}', str(k), k)
    by_size.close()
    assert len(by_size.stats.files) == 3
    table = read_recording(tmp_path / "z.parquet")
    assert table.column("id").to_pylist() == ["0", "1", "2"]


def test_a_recording_is_never_overwritten_and_must_be_named_parquet(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "s.parquet")
    rec.add("tick", "{}", None, 1)
    rec.close()
    with pytest.raises(ConfigError, match="already exists"):
        Recorder(tmp_path / "s.parquet")
    with pytest.raises(ConfigError, match=r"NAME\.parquet"):
        Recorder(tmp_path / "s.csv")


def test_recording_files_resolves_names_globs_and_lists(tmp_path: Path) -> None:
    for name in ("a", "b"):
        rec = Recorder(tmp_path / f"{name}.parquet", row_group_rows=1, roll_bytes=1)
        for k in range(2):
            rec.add("tick", "{}", None, k)
        rec.close()
    a = [tmp_path / "a-00000.parquet", tmp_path / "a-00001.parquet"]
    b = [tmp_path / "b-00000.parquet", tmp_path / "b-00001.parquet"]
    assert recording_files(tmp_path / "a.parquet") == a
    assert recording_files(str(tmp_path / "*-00000.parquet")) == [a[0], b[0]]
    assert recording_files(f"{tmp_path / 'b.parquet'},{a[1]}") == [*b, a[1]]
    with pytest.raises(ConfigError, match="no recording"):
        recording_files(tmp_path / "missing.parquet")


def test_seq_is_removed_wherever_it_is_and_only_at_the_top_level() -> None:
    texts = pa.array(
        [
            '{"symbol":"A","price":1,"seq":5}',
            '{"seq":5,"symbol":"A"}',
            '{"symbol":"A","inner":{"b":1,"seq":2}}',
            '{"symbol":"seq"}',
        ]
    )
    out = _without_seq(texts).to_pylist()
    assert [json.loads(t) for t in out] == [
        {"symbol": "A", "price": 1},
        {"symbol": "A"},
        {"symbol": "A", "inner": {"b": 1, "seq": 2}},
        {"symbol": "seq"},
    ]


def test_recorded_payload_is_the_mapping_of_its_text() -> None:
    text = '{"symbol":"A","price":1.5,"size":2}'
    payload = RecordedPayload(text)
    assert "seq" not in payload and bool(payload)
    assert dict(payload) == json.loads(text) and payload["price"] == 1.5
    assert len(payload) == 3 and "size" in payload and "bid" not in payload


@pytest.mark.parametrize(
    ("value", "want"),
    [("max", None), ("MAX", None), (10, 10.0), ("0.1", 0.1), (1000, 1000.0)],
)
def test_speed_is_a_multiple_from_a_tenth_to_a_thousand_or_max(value: object, want: float) -> None:
    assert parse_speed(value) == want


@pytest.mark.parametrize("value", [0, 0.05, 1001, "fast", True, None, float("nan"), [1]])
def test_bad_speeds_are_refused_naming_the_range(value: object) -> None:
    with pytest.raises(ConfigError, match="speed"):
        parse_speed(value)


def test_only_market_events_with_a_symbol_replay_and_the_rest_is_counted(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "m.parquet")
    rec.add("tick", '{"symbol":"A","price":1}', "1", 1)
    rec.add("reset", '{"reason":"evicted"}', "2", 2)
    rec.add("bar", '{"close":3}', "3", 3)
    rec.add("message", "plain", None, 4)
    rec.add("trade", '{"symbol":"A","price":1.5,"size":100,"side":"buy"}', "5", 5)
    rec.add("session", '{"symbol":"B","state":"closed"}', "6", 6)
    rec.close()
    replay = SessionReplay.from_recording(tmp_path / "m.parquet", speed="max")
    assert replay.symbols == ["A", "B"]
    assert replay.skipped == {"not-market-event": 2, "no-symbol": 1}

    async def first_batch() -> list[str]:
        batches = replay.batches()
        batch = await anext(batches)
        await batches.aclose()
        return [ev.event for ev in batch]

    assert asyncio.run(first_batch()) == ["tick", "trade", "session"]
    # The last price of A is its trade's; a session event carries none.
    assert replay.describe()["A"]["price"] == 1.5
    assert replay.describe()["B"]["price"] is None
    with pytest.raises(ConfigError, match="no market event"):
        rec2 = Recorder(tmp_path / "e.parquet")
        rec2.add("message", "x", None, 1)
        rec2.close()
        SessionReplay.from_recording(tmp_path / "e.parquet")


def test_the_memory_broker_publishes_given_ids_and_drops_ids_that_go_back() -> None:
    from quoteflow.broker.memory import MemoryBroker
    from quoteflow.sources import MarketEvent
    from quoteflow.wire.payload import EncodedBatch

    broker = MemoryBroker()
    sub = broker.subscribe(None, frozenset({"tick"}), None)

    def batch(ids: list[int]) -> EncodedBatch[MarketEvent]:
        events = [MarketEvent("tick", "A", {"symbol": "A", "n": i}) for i in ids]
        return EncodedBatch(events, [], ids)

    broker.publish(batch([5, 6, 9]))  # a gap between 6 and 9
    broker.publish(batch([9, 10]))  # 9 again: dropped, 10 kept
    broker.publish([MarketEvent("tick", "A", {"symbol": "A", "n": 0})])  # fresh: 11
    assert broker.stats.dropped == 1
    assert broker.last_id == "11"
    text = sub.take().data.decode()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == [5, 6, 9, 10, 11]
    assert '"seq":9}' in text and '"n":10,"seq":10}' in text


def test_regression_speed_as_a_huge_integer_is_a_config_error_not_a_crash() -> None:
    # JSON allows integers of any length; float() of one raised OverflowError, which
    # POST /replay answered with a 500.
    with pytest.raises(ConfigError, match=r"from 0\.1 to 1000"):
        parse_speed(10**400)


def test_a_feed_with_ever_new_keys_gets_a_bounded_number_of_columns(tmp_path: Path) -> None:
    from quoteflow.recording import MAX_PAYLOAD_COLUMNS

    rec = Recorder(tmp_path / "keys.parquet")
    for k in range(MAX_PAYLOAD_COLUMNS + 50):
        rec.add("message", json.dumps({f"key{k}": k}), None, k)
    rec.close()
    table = pq.read_table(rec.stats.files[0])
    assert len(table.column_names) == 4 + MAX_PAYLOAD_COLUMNS
    assert table.num_rows == MAX_PAYLOAD_COLUMNS + 50
