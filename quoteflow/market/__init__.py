"""The simulated market: symbols -> models, correlated shocks, a clock, ticks and bars.

A :class:`Market` holds one price model per symbol. Every tick it

1. draws one standard-normal shock per symbol and correlates them with a factor ``L`` of
   the target correlation matrix ``C = L L^T`` (``z -> L z`` gives ``Cov(L z) = C``;
   Glasserman 2003, *Monte Carlo Methods in Financial Engineering*, §2.3.3);
2. advances every symbol by ``dt = tick_interval * speed`` simulated years with those
   shocks (models with non-normal innovations map them through a Gaussian copula
   themselves, see :class:`quoteflow.models.Stepper`);
3. turns prices into quotes (rounded price, bid/ask around it, a random lot size, a
   timestamp and the simulated time ``sim_ts``), optionally trades at those quotes, and,
   every ``bar_interval`` seconds of ticks, into OHLCV bars (from the trades when the
   market trades).

With an exchange calendar (``calendar="XNYS"``) the ticks follow its sessions in
simulated time: the first tick of a session moves prices across the closed period in
one draw (the overnight gap) and ``session`` events mark every open and close.

GBM symbols, the bulk of any large market (``Market.universe``), are stepped together
with per-symbol parameter arrays in one vectorised update, so a tick of 10,000 symbols is
a handful of numpy operations; other models run through their own steppers, one per
distinct parameter set.

Configuration comes from Python (:class:`Market`), a TOML file (:meth:`Market.from_toml`),
a dict (:meth:`Market.from_config`), or ready-made: :meth:`Market.default` (the shipped
tickers, calibrated on the shipped history) and :meth:`Market.universe` (N synthetic GBM
symbols for load tests). See docs/market.md.

The package has one module per concept: :mod:`~quoteflow.market.engine` (:class:`Market`),
:mod:`~quoteflow.market.correlation` (validating and factoring the correlation),
:mod:`~quoteflow.market.bars` (tick/bar arrays, the bar accumulator),
:mod:`~quoteflow.market.config` (TOML/dict configuration),
:mod:`~quoteflow.market.sessions` (simulated time, exchange sessions),
:mod:`~quoteflow.market.trades` (trade counts, sides and sizes) and
:mod:`~quoteflow.market.defaults` (the calibrated shipped-ticker market). The payload
encoding lives in :mod:`quoteflow.wire`; pacing (the deadline schedule of
:meth:`Market.batches`) in :func:`quoteflow.sources.paced`, shared with ``Replay``.
"""

from __future__ import annotations

from quoteflow.market.bars import BarAccumulator, BarArrays, TickArrays, TradeBarAccumulator
from quoteflow.market.correlation import correlation_factor
from quoteflow.market.defaults import default_calibration as _default_calibration
from quoteflow.market.engine import DEFAULT_SPEED, GUARD_LOG_INTERVAL, Market
from quoteflow.market.sessions import SIM_SECONDS_PER_YEAR, ClockTick, SimClock
from quoteflow.market.trades import TradeArrays, TradeSettings
from quoteflow.wire.payload import EncodedBatch

__all__ = [
    "DEFAULT_SPEED",
    "GUARD_LOG_INTERVAL",
    "SIM_SECONDS_PER_YEAR",
    "BarAccumulator",
    "BarArrays",
    "ClockTick",
    "EncodedBatch",
    "Market",
    "SimClock",
    "TickArrays",
    "TradeArrays",
    "TradeBarAccumulator",
    "TradeSettings",
    "_default_calibration",
    "correlation_factor",
]
