"""Tick and bar arrays, and the OHLCV bar accumulators the market feeds every tick.

:class:`BarAccumulator` builds bars from the quoted prices (volume = quoted sizes);
:class:`TradeBarAccumulator` from trades when the market trades (prices and volume of the
trades). Both close a bar every ``ticks`` ticks, or early when told (a session's close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from quoteflow.sources import SymbolFloats, SymbolInts

if TYPE_CHECKING:
    from quoteflow.market.trades import TradeArrays

__all__ = ["BarAccumulator", "BarArrays", "TickArrays", "TradeBarAccumulator"]


@dataclass(frozen=True, slots=True)
class BarArrays:
    """The bars that closed on a tick, one entry per symbol (market order).

    ``symbols`` holds the market positions the entries belong to when not every symbol
    has a bar (bars from trades: a symbol without a trade in the window has none);
    ``None`` means all symbols, in order. ``sim_ts`` is the simulated time of the last tick.
    """

    open: SymbolFloats
    high: SymbolFloats
    low: SymbolFloats
    close: SymbolFloats
    volume: SymbolInts
    start: str
    end: str
    sim_ts: str = ""
    symbols: SymbolInts | None = None


@dataclass(frozen=True, slots=True)
class TickArrays:
    """One tick of the whole market as arrays (what :meth:`Market.step` builds events from).

    ``ts`` is the tick time as ISO-8601 UTC with milliseconds, ``ts_ns`` the same instant
    as integer Unix nanoseconds (what latency measurements use: ``ts`` is truncated to
    the millisecond), ``sim_ts`` the simulated time (docs/market.md, "Simulated time").
    ``opens`` / ``closes`` say that the tick is the first / last of a trading session
    (``closed_sim_ts``: the session's scheduled close, in simulated time); ``trades`` are
    the tick's trades when the market trades.
    """

    ts: str
    price: SymbolFloats
    bid: SymbolFloats
    ask: SymbolFloats
    size: SymbolInts
    bars: BarArrays | None
    ts_ns: int = 0
    sim_ts: str = ""
    opens: bool = False
    closes: bool = False
    closed_sim_ts: str = ""
    trades: TradeArrays | None = None


class BarAccumulator:
    """OHLCV bars over ``ticks`` ticks for ``n`` symbols; :meth:`add` returns closed bars.

    Parameters
    ----------
    n
        Number of symbols.
    ticks
        Ticks per bar, ``>= 1``; ``0`` disables bars (:meth:`add` always returns None).
    """

    def __init__(self, n: int, ticks: int) -> None:
        self.ticks = ticks
        self._count = 0
        self._start = ""
        self._open = np.zeros(n)
        self._high = np.zeros(n)
        self._low = np.zeros(n)
        self._volume = np.zeros(n, dtype=np.int64)

    def add(
        self,
        price: SymbolFloats,
        size: SymbolInts,
        ts: str,
        sim_ts: str = "",
        close: bool = False,
    ) -> BarArrays | None:
        """Account one tick (prices, sizes, its time); the bars it closes, or None.

        ``close`` closes the bar with this tick even if it has fewer than ``ticks`` ticks
        (the last tick of a trading session: a bar never spans a closed market).
        """
        if not self.ticks:
            return None
        if self._count == 0:
            self._open[:] = price
            self._high[:] = price
            self._low[:] = price
            self._volume[:] = size
            self._start = ts
        else:
            np.maximum(self._high, price, out=self._high)
            np.minimum(self._low, price, out=self._low)
            self._volume += size
        self._count += 1
        if self._count < self.ticks and not close:
            return None
        self._count = 0
        return BarArrays(
            open=self._open.copy(),
            high=self._high.copy(),
            low=self._low.copy(),
            close=price,
            volume=self._volume.copy(),
            start=self._start,
            end=ts,
            sim_ts=sim_ts,
        )


class TradeBarAccumulator:
    """OHLCV bars from trades over windows of ``ticks`` ticks for ``n`` symbols.

    ``open``/``high``/``low``/``close`` are the first, highest, lowest and last trade price
    of the window, ``volume`` the traded shares. A symbol without a trade in the window
    has no bar. ``start`` / ``end`` are the times of the window's first and last tick,
    as for quote bars.

    Parameters
    ----------
    n
        Number of symbols.
    ticks
        Ticks per bar, ``>= 1``; ``0`` disables bars.
    """

    def __init__(self, n: int, ticks: int) -> None:
        self.ticks = ticks
        self._count = 0
        self._start = ""
        self._open = np.zeros(n)
        self._high = np.full(n, -np.inf)
        self._low = np.full(n, np.inf)
        self._close = np.zeros(n)
        self._volume = np.zeros(n, dtype=np.int64)
        self._traded = np.zeros(n, dtype=bool)

    def add(
        self, trades: TradeArrays, ts: str, sim_ts: str = "", close: bool = False
    ) -> BarArrays | None:
        """Account one tick's trades; the bars it closes (symbols that traded), or None."""
        if not self.ticks:
            return None
        if self._count == 0:
            self._start = ts
        sym, price = trades.symbols, trades.price
        if sym.size:
            # Trades come grouped by symbol, in order: first and last of each group.
            first = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
            last = np.r_[first[1:] - 1, sym.size - 1]
            syms = sym[first]
            fresh = ~self._traded[syms]
            self._open[syms[fresh]] = price[first[fresh]]
            self._close[syms] = price[last]
            np.maximum.at(self._high, sym, price)
            np.minimum.at(self._low, sym, price)
            np.add.at(self._volume, sym, trades.size)
            self._traded[syms] = True
        self._count += 1
        if self._count < self.ticks and not close:
            return None
        self._count = 0
        which = np.flatnonzero(self._traded).astype(np.int64)
        bars = BarArrays(
            open=self._open[which],
            high=self._high[which],
            low=self._low[which],
            close=self._close[which],
            volume=self._volume[which],
            start=self._start,
            end=ts,
            sim_ts=sim_ts,
            symbols=which,
        )
        self._high.fill(-np.inf)
        self._low.fill(np.inf)
        self._volume.fill(0)
        self._traded.fill(False)
        return bars
