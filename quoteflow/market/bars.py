"""Tick and bar arrays, and the OHLCV bar accumulator the market feeds every tick."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quoteflow.sources import SymbolFloats, SymbolInts

__all__ = ["BarAccumulator", "BarArrays", "TickArrays"]


@dataclass(frozen=True, slots=True)
class BarArrays:
    """The bars that closed on a tick, one entry per symbol (market order)."""

    open: SymbolFloats
    high: SymbolFloats
    low: SymbolFloats
    close: SymbolFloats
    volume: SymbolInts
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class TickArrays:
    """One tick of the whole market as arrays (what :meth:`Market.step` builds events from).

    ``ts`` is the tick time as ISO-8601 UTC with milliseconds, ``ts_ns`` the same instant
    as integer Unix nanoseconds (what latency measurements use: ``ts`` is truncated to
    the millisecond).
    """

    ts: str
    price: SymbolFloats
    bid: SymbolFloats
    ask: SymbolFloats
    size: SymbolInts
    bars: BarArrays | None
    ts_ns: int = 0


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

    def add(self, price: SymbolFloats, size: SymbolInts, ts: str) -> BarArrays | None:
        """Account one tick (prices, sizes, its time); the bars it closes, or None."""
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
        if self._count < self.ticks:
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
        )
