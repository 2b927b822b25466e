"""Trades beside quotes: Poisson rate, size laws, sides at the quote, bars built from trades.

Statistical checks use 5 standard errors of the estimate (a correct law fails one with
probability ~6e-7); each test says its sample size and the standard error it implies.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from quoteflow.market import Market
from quoteflow.market.trades import TradeSettings
from quoteflow.models import GBM, MeanReversion

Z = 5.0


def trading_market(n: int, **trades: Any) -> Market:
    return Market(
        {f"S{i}": GBM(0.0, 0.3) for i in range(n)},
        seed=21,
        tick_interval=0.25,
        bar_interval=1.0,
        trades=trades,
    )


def test_trade_counts_are_poisson_with_mean_rate_times_tick_interval() -> None:
    n, ticks, rate = 1_000, 200, 2.0
    market = trading_market(n, rate=rate)
    counts = np.zeros((ticks, n), dtype=np.int64)
    for k in range(ticks):
        a = market.step_arrays(now=0.0)
        assert a.trades is not None
        counts[k] = np.bincount(a.trades.symbols, minlength=n)
    lam = rate * market.tick_interval  # 0.5 per symbol and tick
    m = n * ticks  # 200,000 symbol-ticks: the mean's standard error is sqrt(lam / m)
    assert abs(counts.mean() - lam) < Z * math.sqrt(lam / m)
    # Poisson: variance = mean. The sample variance's standard error is about
    # sqrt((mu4 - sigma^4) / m) with mu4 = lam (1 + 3 lam) for a Poisson law.
    se_var = math.sqrt((lam * (1 + 3 * lam) - lam**2) / m)
    assert abs(counts.var() - lam) < Z * se_var


def _sizes_and_sides(settings: dict[str, Any], ticks: int = 100) -> tuple[Any, Any, Any]:
    market = trading_market(500, **settings)
    sizes, buys, at_quote = [], [], []
    for _ in range(ticks):
        a = market.step_arrays(now=0.0)
        assert a.trades is not None
        t = a.trades
        sizes.append(t.size)
        buys.append(t.buy)
        quote = np.where(t.buy, a.ask[t.symbols], a.bid[t.symbols])
        at_quote.append(t.price == quote)
    return np.concatenate(sizes), np.concatenate(buys), np.concatenate(at_quote)


def test_lognormal_sizes_follow_the_rounded_lognormal_cdf() -> None:
    # Small sizes, where the rounding to whole shares shows in the CDF.
    mu, sigma = math.log(8.0), 0.7
    sizes, buys, at_quote = _sizes_and_sides(
        {"rate": 40.0, "size": "lognormal", "size_mu": mu, "size_sigma": sigma}
    )
    n = sizes.size  # ~500 symbols x 100 ticks x 10 = 500,000 trades
    assert n > 400_000 and sizes.dtype == np.int64 and sizes.min() >= 1
    for k in (1, 2, 5, 8, 12, 30):
        # P(round(X) <= k) = P(X < k + 1/2); the empirical CDF's standard error is
        # sqrt(p (1 - p) / n)
        p = float(norm.cdf((math.log(k + 0.5) - mu) / sigma))
        assert abs(np.mean(sizes <= k) - p) < Z * math.sqrt(p * (1 - p) / n)
    # Buyers lift the ask, sellers hit the bid, half and half.
    assert at_quote.all()
    assert abs(buys.mean() - 0.5) < Z * math.sqrt(0.25 / n)


def test_geometric_sizes_have_mean_one_over_p() -> None:
    p = 0.02
    sizes, _, _ = _sizes_and_sides({"rate": 40.0, "size": "geometric", "size_p": p})
    n = sizes.size
    # mean 1/p = 50 with standard error sqrt((1 - p) / p^2 / n); P(size = 1) = p
    assert abs(sizes.mean() - 1 / p) < Z * math.sqrt((1 - p) / p**2 / n)
    assert abs(np.mean(sizes == 1) - p) < Z * math.sqrt(p * (1 - p) / n)
    assert sizes.min() >= 1


def test_bars_from_trades_equal_a_direct_aggregation_of_the_trade_events() -> None:
    market = Market(
        {"A": GBM(0.0, 0.5), "B": MeanReversion(3.0, 20.0, 0.5), "Q": GBM(0.0, 0.2)},
        seed=8,
        tick_interval=0.25,
        bar_interval=1.0,
        trades={"rate": 3.0, "size": "geometric", "size_p": 0.1},
    )
    window: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ticks_in_window: list[str] = []
    bars_checked = 0
    empty_windows = 0
    for k in range(400):
        events = market.step(now=1_800_000_000.0 + k * 0.25)
        ticks_in_window.append(events[0].data["ts"])
        for e in events:
            if e.event == "trade":
                window[e.symbol].append(e.data)
        bars = {e.symbol: e.data for e in events if e.event == "bar"}
        if (k + 1) % 4:
            assert not bars
            continue
        for symbol in ("A", "B", "Q"):
            trades = window.pop(symbol, [])
            if not trades:
                assert symbol not in bars  # no trade, no bar
                empty_windows += 1
                continue
            bar = bars[symbol]
            prices = [t["price"] for t in trades]
            assert bar["open"] == prices[0] and bar["close"] == prices[-1]
            assert bar["high"] == max(prices) and bar["low"] == min(prices)
            assert bar["volume"] == sum(t["size"] for t in trades)
            assert bar["start"] == ticks_in_window[0] and bar["end"] == ticks_in_window[-1]
            bars_checked += 1
        ticks_in_window.clear()
    assert bars_checked > 250 and empty_windows > 0  # rate 3/s over 1 s bars: e^-3 empty


def test_trades_never_change_the_prices_of_a_seed_and_are_off_by_default() -> None:
    def ticks(**options: Any) -> list[list[Any]]:
        m = Market({"A": GBM(0.0, 0.3), "B": GBM(0.1, 0.2)}, seed=3, **options)
        out = []
        for _ in range(30):
            batch = m.step(now=0.0)
            out.append([(e.event, e.data) for e in batch if e.event == "tick"])
            if not options:
                assert {e.event for e in batch} <= {"tick", "bar"}
        return out

    assert ticks() == ticks(trades={"rate": 5.0})


def test_trade_settings_validate_by_key() -> None:
    assert TradeSettings().rate == 2.0 and TradeSettings().size == "lognormal"
    with pytest.raises(ValueError, match=r"trades\.size_sigma: must be > 0"):
        TradeSettings(size_sigma=0.0)
    with pytest.raises(ValueError, match=r"trades\.size_mu: must be in"):
        TradeSettings(size_mu=100.0)
    with pytest.raises(ValueError, match="trades: must be a table"):
        TradeSettings.from_config(3.0)
