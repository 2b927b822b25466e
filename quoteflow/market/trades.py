"""Trades beside quotes: how many, how large, which side, at what price (docs/market.md, "Trades").

Per symbol and tick the number of trades is Poisson with mean ``rate * tick_interval``
(``rate`` trades per wall-clock second of the stream, the pace at which quotes tick); each
trade is a buy (lifting the ask) or a sell (hitting the bid) with probability 1/2, and its
size in shares is drawn from the configured law:

- ``"lognormal"``: ``max(1, round(X))`` with ``log X ~ N(size_mu, size_sigma**2)``, so
  ``P(size <= k) = Phi((log(k + 1/2) - size_mu) / size_sigma)`` for ``k >= 1``;
- ``"geometric"``: ``P(size = k) = (1 - size_p)**(k - 1) size_p`` for ``k >= 1``, mean
  ``1 / size_p``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from quoteflow.errors import ConfigError
from quoteflow.market.config import check_keys, number
from quoteflow.sources import SymbolFloats, SymbolInts

__all__ = ["SIZE_LAWS", "TRADE_KEYS", "TradeArrays", "TradeSettings", "draw_trades"]

#: Per-trade boolean array, shape ``(n_trades,)``.
TradeBools: TypeAlias = npt.NDArray[np.bool_]

#: The size laws a market's trades can follow.
SIZE_LAWS: tuple[str, ...] = ("lognormal", "geometric")
#: Keys of the ``[trades]`` table.
TRADE_KEYS: tuple[str, ...] = ("rate", "size", "size_mu", "size_sigma", "size_p")

# Sizes are capped here (a share count a float holds exactly, far beyond any real trade).
_MAX_LOG_SIZE = math.log(1e12)


@dataclass(frozen=True, slots=True)
class TradeSettings:
    """How a market trades (validated on construction).

    Parameters
    ----------
    rate
        Mean trades per symbol per wall-clock second, ``> 0`` (Poisson).
    size
        Size law, one of :data:`SIZE_LAWS`.
    size_mu, size_sigma
        Lognormal law: mean and standard deviation of the log of the size in shares
        (``size_sigma > 0``). Default: median 100 shares, ``size_sigma = 1``.
    size_p
        Geometric law: probability ``0 < size_p <= 1``; mean size ``1 / size_p`` shares.

    Raises
    ------
    ConfigError
        Naming the key (``trades.<key>``) and what is allowed.
    """

    rate: float = 2.0
    size: str = "lognormal"
    size_mu: float = math.log(100.0)
    size_sigma: float = 1.0
    size_p: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", number(self.rate, "trades.rate", gt=0.0))
        if self.size not in SIZE_LAWS:
            raise ConfigError(
                f"trades.size: must be one of {', '.join(SIZE_LAWS)}, got {self.size!r}"
            )
        mu = number(self.size_mu, "trades.size_mu")
        if abs(mu) > _MAX_LOG_SIZE:
            raise ConfigError(f"trades.size_mu: must be in [-27.6, 27.6] (log shares), got {mu!r}")
        object.__setattr__(self, "size_mu", mu)
        object.__setattr__(self, "size_sigma", number(self.size_sigma, "trades.size_sigma", gt=0.0))
        p = number(self.size_p, "trades.size_p", gt=0.0)
        if p > 1.0:
            raise ConfigError(f"trades.size_p: must be in (0, 1], got {p!r}")
        object.__setattr__(self, "size_p", p)

    @classmethod
    def from_config(cls, value: Any) -> TradeSettings:
        """Settings from the ``[trades]`` table (or a mapping, or settings as they are).

        Raises
        ------
        ConfigError
            Not a table, an unknown key (with a hint) or a bad value.
        """
        if isinstance(value, TradeSettings):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"trades: must be a table, got {type(value).__name__} {value!r}")
        check_keys(value, TRADE_KEYS, "trades")
        return cls(**dict(value))

    def draw_sizes(self, rng: np.random.Generator, k: int) -> SymbolInts:
        """``k`` trade sizes in shares from the configured law."""
        if self.size == "geometric":
            sizes: SymbolInts = rng.geometric(self.size_p, k).astype(np.int64)
            return sizes
        log_size = np.minimum(
            self.size_mu + self.size_sigma * rng.standard_normal(k), _MAX_LOG_SIZE
        )
        out: SymbolInts = np.maximum(1, np.rint(np.exp(log_size))).astype(np.int64)
        return out


@dataclass(frozen=True, slots=True)
class TradeArrays:
    """The trades of one tick, in market order of their symbols.

    Attributes
    ----------
    symbols
        Market position of each trade's symbol (non-decreasing).
    price, size
        Trade price and size in shares.
    buy
        True for a buy (at the ask), False for a sell (at the bid).
    """

    symbols: SymbolInts
    price: SymbolFloats
    size: SymbolInts
    buy: TradeBools


def draw_trades(
    settings: TradeSettings,
    rng: np.random.Generator,
    tick_interval: float,
    bid: SymbolFloats,
    ask: SymbolFloats,
) -> TradeArrays:
    """The trades of one tick: Poisson counts per symbol, sides, sizes, prices at the quote.

    Parameters
    ----------
    settings
        Rate and size law.
    rng
        The market's trade stream (its own, so trades never change a seed's prices).
    tick_interval
        Wall seconds the tick stands for.
    bid, ask
        The tick's quotes, one per symbol.
    """
    n = bid.size
    counts = rng.poisson(settings.rate * tick_interval, n)
    symbols: SymbolInts = np.repeat(np.arange(n, dtype=np.int64), counts)
    k = symbols.size
    buy: TradeBools = rng.random(k) < 0.5
    sizes = settings.draw_sizes(rng, k)
    price: SymbolFloats = np.where(buy, ask[symbols], bid[symbols])
    return TradeArrays(symbols=symbols, price=price, size=sizes, buy=buy)
