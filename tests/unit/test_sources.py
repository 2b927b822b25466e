"""Sources: the event type, quote helpers, Replay of real history and Relay of an SSE feed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quoteflow import data
from quoteflow.errors import ConfigError
from quoteflow.sources import (
    MarketEvent,
    Relay,
    Replay,
    Source,
    iso_ms,
    quote_sides,
    round_prices,
)

# ------------------------------------------------------------------------- event, helpers


def test_market_event_is_frozen_with_slots() -> None:
    e = MarketEvent("tick", "AAPL", {"symbol": "AAPL"})
    assert not hasattr(e, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.symbol = "MSFT"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1.0009, "1970-01-01T00:00:01.000Z"),  # truncated, never in the future
        (1_795_000_000.567, "2026-11-18T11:06:40.567Z"),
        (951_782_400.5, "2000-02-29T00:00:00.500Z"),
    ],
)
def test_iso_ms(t: float, expected: str) -> None:
    assert iso_ms(t) == expected


@pytest.mark.parametrize(
    ("price", "quoted"),
    [
        (123.456, 123.46),
        (1.0, 1.0),
        (0.999949, 0.9999),
        (0.0123456, 0.01235),
        (0.000123456, 0.0001235),
        (25_000.004, 25_000.0),
    ],
)
def test_round_prices(price: float, quoted: float) -> None:
    out = round_prices(np.array([price, 50.0]))  # a mixed array takes the per-price path
    assert out[0] == quoted
    assert json.dumps(float(out[0])) == repr(quoted)  # short decimals on the wire


@settings(deadline=None)  # pure numpy, but CI machines stall; correctness is the point
@given(
    st.floats(min_value=1e-4, max_value=1e6),
    st.floats(min_value=0.0, max_value=500.0),
)
def test_quote_sides_bracket_the_price(price: float, spread: float) -> None:
    p, bid, ask = quote_sides(np.array([price]), spread)
    assert bid[0] <= p[0] <= ask[0]
    assert bid[0] > 0
    # never wider than the spread plus one price increment on each side
    increment = 0.01 if p[0] >= 1 else 10 ** (math.floor(math.log10(p[0])) - 3)
    assert ask[0] - bid[0] <= p[0] * spread * 1e-4 + 2 * increment + 1e-9


def test_quote_sides_exact_grid() -> None:
    p, bid, ask = quote_sides(np.array([100.0, 10.0]), 10.0)
    assert p.tolist() == [100.0, 10.0]
    assert bid.tolist() == [99.95, 9.99]  # 9.995 rounded down
    assert ask.tolist() == [100.05, 10.01]


# --------------------------------------------------------------------------------- replay


def test_replay_emits_shipped_aapl_rows_in_order() -> None:
    hist = data.load("AAPL")
    r = Replay("AAPL", clock=lambda: 0.0)
    assert isinstance(r, Source) and r.symbols == ["AAPL"]
    n = 0
    last_date = ""
    while True:
        batch = r.step()
        if not batch:
            break
        tick, bar = batch
        assert (tick.event, bar.event) == ("tick", "bar")
        row = hist.iloc[n]
        assert tick.data["date"] == hist.index[n].strftime("%Y-%m-%d") > last_date
        assert tick.data["sim_ts"] == tick.data["date"] + "T00:00:00.000Z"
        last_date = tick.data["date"]
        adj = float(row["adj_close"])  # below $1 in 2003: 4 significant digits, not cents
        assert tick.data["price"] == (round(adj, 2) if adj >= 1 else float(f"{adj:.4g}"))
        assert tick.data["size"] == int(row["volume"])
        assert tick.data["bid"] < tick.data["price"] < tick.data["ask"]
        assert bar.data["close"] == tick.data["price"]
        assert bar.data["volume"] == tick.data["size"]
        factor = row["adj_close"] / row["close"]
        assert bar.data["open"] == pytest.approx(row["open"] * factor, abs=0.006)
        assert bar.data["low"] <= min(bar.data["open"], bar.data["close"])
        assert bar.data["high"] >= max(bar.data["open"], bar.data["close"])
        n += 1
    assert n == len(hist) == 3270
    assert r.done and r.step() == []
    assert r.describe()["AAPL"]["price"] == round(hist["adj_close"].iloc[-1], 2)


def test_replay_first_row_split_adjusted() -> None:
    # 2000-03-01: raw close 130.31, adj_close 4.186663 (two splits later). The bar is in
    # adjusted units too, so a chart shows no 30x jump at the 2000 and 2005 splits.
    first = Replay("AAPL", clock=lambda: 0.0).step()
    assert first[0].data["price"] == 4.19
    assert first[1].data["open"] == round(118.56 * 4.186663 / 130.31, 2)


def test_replay_shipped_symbols_any_case() -> None:
    r = Replay(symbols=["msft", "aapl"], clock=lambda: 0.0)
    assert r.symbols == ["MSFT", "AAPL"]
    assert [e.symbol for e in r.step()] == ["MSFT", "AAPL", "MSFT", "AAPL"]


def test_replay_all_shipped_symbols_missing_days_skipped() -> None:
    r = Replay(clock=lambda: 0.0)
    assert r.symbols == list(data.TICKERS)
    first = r.step()
    # GOOG starts trading in 2004: no GOOG event on 2000-03-01.
    assert [e.symbol for e in first if e.event == "tick"] == ["AAPL", "IBM", "MSFT"]
    assert [e.event for e in first] == ["tick"] * 3 + ["bar"] * 3
    assert r.describe()["GOOG"]["params"]["first_date"] == "2004-08-19"


def test_replay_long_dataframe_and_column_choice() -> None:
    frame = pd.DataFrame(
        {
            "Date": ["2024-01-02", "2024-01-03", "2024-01-02", "2024-01-04"],
            "Ticker": ["X", "X", "Y", "Y"],
            "Close": [10.0, 11.0, 100.0, 90.0],
            "Volume": [1000, 2000, 3000, 4000],
        }
    )
    r = Replay(frame, clock=lambda: 0.0)
    assert r.column == "close"
    rows = []
    while batch := r.step():
        rows.append([(e.event, e.symbol, e.data.get("price", e.data.get("close"))) for e in batch])
    assert rows == [
        [("tick", "X", 10.0), ("tick", "Y", 100.0), ("bar", "X", 10.0), ("bar", "Y", 100.0)],
        [("tick", "X", 11.0), ("bar", "X", 11.0)],
        [("tick", "Y", 90.0), ("bar", "Y", 90.0)],
    ]
    only_y = Replay(frame, symbols=["Y"], clock=lambda: 0.0)
    assert [e.symbol for e in only_y.step()] == ["Y", "Y"]


def test_replay_single_series_csv(tmp_path: Path) -> None:
    path = tmp_path / "acme.csv"
    path.write_text("Date,Price\n2024-01-03,5.5\n2024-01-02,5.0\n2024-01-04,6.25\n")
    r = Replay(path, column="Price", clock=lambda: 0.0)
    assert r.symbols == ["ACME"]
    prices = [r.step()[0].data["price"] for _ in range(3)]
    assert prices == [5.0, 5.5, 6.25]  # sorted by date
    bar = Replay(path, column="price", symbols=["Z"], clock=lambda: 0.0).step()[1]
    assert bar.symbol == "Z"
    assert (bar.data["open"], bar.data["high"], bar.data["low"]) == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "AAPL", "symbols": ["MSFT"]}, "unknown symbol(s) MSFT; in the data: AAPL"),
        ({"source": None, "symbols": ["ZZZZ"]}, "unknown ticker 'ZZZZ'"),
        ({"source": "no/such/file.csv"}, "no such file"),
        ({"source": "AAPL", "column": "vwap"}, "no price column 'vwap'"),
        ({"source": "AAPL", "rows_per_second": 0}, "rows_per_second must be > 0"),
        ({"source": 42}, "expected a DataFrame, a CSV path or a shipped ticker"),
    ],
)
def test_replay_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Replay(**kwargs)
    assert message in str(info.value)


def test_replay_bad_price_names_symbol_and_date() -> None:
    frame = pd.DataFrame(
        {"date": ["2024-01-02", "2024-01-03"], "symbol": ["X", "X"], "close": [1.0, -2.0]}
    )
    with pytest.raises(
        ConfigError, match=r"X close must be a positive number, got -2.0 on 2024-01-03"
    ):
        Replay(frame)


def test_replay_parameters_cannot_change() -> None:
    with pytest.raises(ConfigError) as info:
        Replay("AAPL").update("AAPL", {"sigma": 0.1})
    assert str(info.value) == "replay source: parameters cannot be changed"


def test_replay_batches_end_or_loop() -> None:
    frame = pd.DataFrame(
        {"date": pd.date_range("2024-01-01", periods=5), "symbol": "X", "close": [1.0, 2, 3, 4, 5]}
    )

    async def collect(r: Replay, limit: int) -> list[float]:
        out: list[float] = []
        gen = r.batches()
        async for batch in gen:
            out.append(batch[0].data["price"])
            if len(out) == limit:
                break
        await gen.aclose()
        return out

    assert asyncio.run(collect(Replay(frame, rows_per_second=500), 100)) == [1, 2, 3, 4, 5]
    looped = asyncio.run(collect(Replay(frame, rows_per_second=500, loop=True), 12))
    assert looped == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]


# ---------------------------------------------------------------------------------- relay


def test_relay_convert_skips_and_counts() -> None:
    r = Relay("http://example.invalid/stream")
    tick = r.convert("tick", json.dumps({"symbol": "A", "price": 1.5, "seq": 9}))
    assert tick == MarketEvent("tick", "A", {"symbol": "A", "price": 1.5})
    assert r.convert("reset", "{}") is None
    assert r.convert("tick", "not json") is None
    assert r.convert("bar", json.dumps({"open": 1})) is None
    assert r.convert("", "hello") is None
    assert r.skipped == {"reset": 1, "not-json": 1, "no-symbol": 1, "message": 1}
    assert r.symbols == ["A"] and r.relayed == 1
    assert r.describe() == {
        "A": {"model": "relay", "params": {"url": "http://example.invalid/stream"}, "price": 1.5}
    }
    with pytest.raises(ConfigError, match="relay source: parameters cannot be changed"):
        r.update("A", {})
    with pytest.raises(ConfigError, match="must be an http"):
        Relay("ftp://x")
    filtered = Relay("http://x/stream", symbols=["B"])
    assert filtered.convert("tick", json.dumps({"symbol": "A"})) is None
    assert filtered.symbols == ["B"]


UPSTREAM = (
    b"retry: 100\n\n"
    b": a comment\n\n"
    b'id: 7\nevent: tick\ndata: {"symbol": "AAPL", "price": 101.25, "bid": 101.2, "ask": 101.3, '
    b'"size": 300, "ts": "2026-11-27T02:03:04.567Z", "seq": 7}\n\n'
    b'id: 8\nevent: reset\ndata: {"snapshot": []}\n\n'
    b"id: 9\nevent: tick\ndata: oops\n\n"
    b'id: 10\nevent: bar\ndata: {"symbol": "MSFT", "open": 1, "high": 2, "low": 0.5, '
    b'"close": 1.5, "volume": 900, "start": "a", "end": "b", "seq": 10}\n\n'
)


@pytest.mark.integration
def test_relay_republishes_an_upstream_sse_feed() -> None:
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port
    from tornado.web import Application, RequestHandler

    seen_queries: list[str] = []

    class Feed(RequestHandler):
        async def get(self) -> None:
            seen_queries.append(self.request.query)
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.write(UPSTREAM)
            await self.flush()
            self.closed = asyncio.Event()
            await self.closed.wait()  # hold the stream open until the relay hangs up

        def on_connection_close(self) -> None:
            self.closed.set()

    async def main() -> list[list[MarketEvent]]:
        sock, port = bind_unused_port()
        server = HTTPServer(Application([(r"/stream", Feed)]))
        server.add_sockets([sock])
        relay = Relay(f"http://127.0.0.1:{port}/stream", symbols=["AAPL", "MSFT"])
        got: list[list[MarketEvent]] = []
        gen = relay.batches()
        try:
            async with asyncio.timeout(20):
                async for batch in gen:
                    got.append(batch)
                    if len(got) == 2:
                        break
        finally:
            await gen.aclose()
            server.stop()
            await server.close_all_connections()
        assert relay.skipped == {"reset": 1, "not-json": 1}
        assert relay.describe()["MSFT"]["price"] == 1.5
        return got

    batches = asyncio.run(main())
    assert [[(e.event, e.symbol) for e in b] for b in batches] == [
        [("tick", "AAPL")],
        [("bar", "MSFT")],
    ]
    assert batches[0][0].data == {
        "symbol": "AAPL",
        "price": 101.25,
        "bid": 101.2,
        "ask": 101.3,
        "size": 300,
        "ts": "2026-11-27T02:03:04.567Z",
    }
    assert "seq" not in batches[1][0].data
    assert "symbols=AAPL%2CMSFT" in seen_queries[0] or "symbols=AAPL,MSFT" in seen_queries[0]


def test_relay_passes_trades_and_session_events_through() -> None:
    r = Relay("http://example.invalid/stream")
    session = {"symbol": "A", "state": "open", "ts": "t", "sim_ts": "s"}
    assert r.convert("session", json.dumps({**session, "seq": 1})) == MarketEvent(
        "session", "A", session
    )
    assert r.symbols == ["A"] and r.describe()["A"]["price"] is None
    trade = {"symbol": "A", "price": 2.5, "size": 7, "side": "buy", "ts": "t", "sim_ts": "s"}
    assert r.convert("trade", json.dumps(trade)) == MarketEvent("trade", "A", trade)
    assert r.describe()["A"]["price"] == 2.5 and r.relayed == 2 and not r.skipped
