"""The ``/history`` store's memory bounds (``quoteflow.history.HistoryStore``)."""

from __future__ import annotations

import json

from quoteflow.history import HistorySettings, HistoryStore


def _sse(event_id: int, kind: str, payload: dict[str, object]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


def _tick(n: int, pad: int) -> dict[str, object]:
    return {"symbol": "BIG", "price": 1.0 + n, "ts": "2026-12-02T10:00:00.000Z", "pad": "x" * pad}


def test_large_tick_payloads_are_bounded_by_bytes_not_only_by_count() -> None:
    """Defect: the store kept ``max_ticks`` ticks whatever their size, so a feed of 64 KiB
    payloads held 64 MiB per symbol (the slow-consumer test saw the server's RSS grow by
    40 MiB after the store began to read ticks)."""
    settings = HistorySettings(max_ticks=1000, max_symbol_bytes=256 * 1024)
    store = HistoryStore(1.0, settings)
    for n in range(200):
        store.feed(_sse(n + 1, "tick", _tick(n, 64 * 1024)))
    ticks, last_id = store.ticks("BIG")
    assert last_id == "200"  # the newest is always kept
    assert 2 <= len(ticks) <= 4  # 256 KiB / 64 KiB
    assert [t["id"] for t in ticks] == [str(i) for i in range(201 - len(ticks), 201)]
    held = sum(len(json.dumps({k: v for k, v in t.items() if k != "id"})) for t in ticks)
    assert held <= 256 * 1024 + 1024


def test_small_ticks_are_bounded_by_count_and_the_newest_kept_in_order() -> None:
    store = HistoryStore(1.0, HistorySettings(max_ticks=50))
    for n in range(120):
        store.feed(_sse(n + 1, "tick", _tick(n, 10)))
    ticks, last_id = store.ticks("BIG", limit=1000)
    assert [t["id"] for t in ticks] == [str(i) for i in range(71, 121)] and last_id == "120"


def test_a_payload_larger_than_the_bound_is_still_kept_alone() -> None:
    store = HistoryStore(1.0, HistorySettings(max_symbol_bytes=1024))
    store.feed(_sse(1, "tick", _tick(0, 10)))
    store.feed(_sse(2, "tick", _tick(1, 4096)))
    ticks, last_id = store.ticks("BIG")
    assert [t["id"] for t in ticks] == ["2"] and last_id == "2"


def test_bars_are_bounded_by_bytes_and_mark_the_store_truncated() -> None:
    store = HistoryStore(1.0, HistorySettings(max_symbol_bytes=4096))
    for n in range(100):
        start = f"2026-12-02T10:00:{n // 10:02d}.{(n % 10) * 100:03d}Z"
        bar = {
            "symbol": "BIG", "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10,
            "start": start, "end": start, "pad": "y" * 500,
        }  # fmt: skip
        store.feed(_sse(n + 1, "bar", bar))
    held = store.symbols()["BIG"]
    assert 4 <= held <= 8  # ~600 bytes a bar within 4 KiB
    bars, last_id = store.bars("BIG", "base", limit=1000)
    assert len(bars) == held and last_id == "100"


def test_bars_closed_milliseconds_apart_infer_a_positive_base_not_zero() -> None:
    """Defect: a fast replay (``--replay AAPL``) closes bars ~4 ms apart; the inferred
    base was rounded to 10 ms, i.e. 0, and ``/history`` answered 500 (division by zero)."""
    store = HistoryStore(None, HistorySettings())
    for n in range(40):
        ms = 4 * n
        start = f"2026-12-02T10:00:00.{ms:03d}Z"
        bar = {
            "symbol": "AAPL", "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10,
            "start": start, "end": start,
        }  # fmt: skip
        store.feed(_sse(n + 1, "bar", bar))
    assert store.base_ms == 4.0
    bars, last_id = store.bars("AAPL", "base", limit=5)
    assert len(bars) == 5 and last_id == "40"
    one_second, _ = store.bars("AAPL", "1s")  # 250 base bars a bucket: none complete
    assert one_second == []


def test_a_bar_builder_refuses_a_base_interval_that_is_not_positive() -> None:
    import pytest

    from quoteflow.wire.bars import BarBuilder, valid_intervals

    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="bar interval"):
            BarBuilder("1s", bad)
        assert valid_intervals(bad) == []
