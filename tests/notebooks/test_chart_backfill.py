"""LiveChart opens with history: candles back-filled from ``GET /history``, then live
from its ``last_event_id`` with no bar missing and none twice (issue 14, item 2).

A real server on a free port and the real client on an asyncio loop standing in for
the kernel's (as in test_notebook_api.py); no Jupyter kernel needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from quoteflow.client import ahistory
from quoteflow.market import Market
from quoteflow.models import GBM
from quoteflow.notebook import LiveChart, running_servers, serve_in_background, stop_all

pytestmark = pytest.mark.integration


def _market() -> Market:
    return Market(
        {"AAA": GBM(mu=0.05, sigma=0.3), "BBB": GBM(mu=0.0, sigma=0.2)},
        seed=7,
        tick_interval=0.05,
        bar_interval=0.25,
    )


async def _until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout  # hang guard
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _no_leaked_servers() -> Iterator[None]:
    yield
    stop_all()
    assert running_servers() == {}


async def _server_has_bars(url: str, symbol: str, n: int) -> None:
    deadline = time.monotonic() + 30  # hang guard
    while len((await ahistory(url, symbol, limit=50)).bars) < n:
        assert time.monotonic() < deadline, f"the server never had {n} bars"
        await asyncio.sleep(0.1)


def _ohlcv(chart: LiveChart) -> list[tuple[float, ...]]:
    d = chart.source.data
    return list(zip(d["open"], d["high"], d["low"], d["close"], d["volume"], strict=True))


def test_candle_chart_opens_with_history_then_continues_live_without_a_seam() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="backfill")
        try:
            await _server_has_bars(server.url, "AAA", 12)
            chart = LiveChart(
                server, symbols=["AAA", "BBB"], kind="candles", interval=0.05, window=400
            )
            try:
                # Drawn from history before the first live bar could have arrived: the
                # back-fill happens before the stream is even opened.
                await _until(lambda: chart.bars_backfilled >= 24, what="back-filled bars")
                await _until(lambda: len(chart.source.data["x"]) >= 12, what="drawn bars")
                n0 = len(chart.source.data["x"])
                # Then live: a few more bars, no duplicate, no hole.
                await _until(lambda: len(chart.source.data["x"]) >= n0 + 6, what="live bars")
                h = await ahistory(server.url, "AAA", limit=400)
                drawn = _ohlcv(chart)
                want = [(b.open, b.high, b.low, b.close, float(b.volume)) for b in h.bars]
                # The chart holds exactly the server's bars (the newest may still be on
                # its way to either): same bars, field by field, in order.
                n = min(len(drawn), len(want)) - 1
                assert n >= 12
                assert drawn[:n] == want[:n]
                xs = chart.source.data["x"]
                assert all(a < b for a, b in zip(xs, xs[1:], strict=False))
            finally:
                chart.close()
        finally:
            server.stop()

    asyncio.run(main())


def test_a_symbol_picked_later_is_back_filled_before_its_live_bars() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="backfill-pick")
        try:
            await _server_has_bars(server.url, "BBB", 12)
            # symbols=None: nothing is known before the stream names the symbols.
            chart = LiveChart(server, kind="candles", interval=0.05, window=400)
            try:
                await _until(lambda: set(chart.picker.options) == {"AAA", "BBB"}, what="picker")
                other = "BBB" if chart.symbol == "AAA" else "AAA"
                before = chart.bars_backfilled
                chart.symbol = other
                await _until(lambda: chart.bars_backfilled >= before + 12, what="back-fill")
                await _until(lambda: len(chart.source.data["x"]) >= 14, what="drawn")
                xs = chart.source.data["x"]
                assert all(a < b for a, b in zip(xs, xs[1:], strict=False))
                h = await ahistory(server.url, other, limit=400)
                want = [(b.open, b.high, b.low, b.close, float(b.volume)) for b in h.bars]
                drawn = _ohlcv(chart)
                n = min(len(drawn), len(want)) - 1
                assert n >= 12 and drawn[:n] == want[:n]
            finally:
                chart.close()
        finally:
            server.stop()

    asyncio.run(main())
