"""The ready-made market of the shipped tickers, calibrated on the shipped history."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from quoteflow.market.correlation import SquareMatrix
from quoteflow.models import GARCH, GBM, MeanReversion, PriceModel

__all__ = ["default_calibration"]


@functools.cache
def default_calibration() -> tuple[
    tuple[tuple[str, PriceModel], ...], tuple[tuple[str, float], ...], SquareMatrix
]:
    """Fits, start prices and return correlation of the shipped tickers (once per process)."""
    import warnings

    from quoteflow import data

    fits: dict[str, Callable[[Any], PriceModel]] = {
        "AAPL": lambda p: GARCH.fit(p, dist="t").model,
        "GOOG": lambda p: GBM.fit(p).model,
        "IBM": lambda p: MeanReversion.fit(p).model,
        "MSFT": lambda p: GARCH.fit(p, dist="normal").model,
    }
    models: list[tuple[str, PriceModel]] = []
    s0: list[tuple[str, float]] = []
    for ticker, fit in fits.items():
        prices = data.load(ticker)["adj_close"]
        with warnings.catch_warnings():
            # A fit that stops short of full convergence is still a sensible demo market;
            # the warning belongs to explicit calibration, not to server start-up.
            warnings.simplefilter("ignore")
            models.append((ticker, fit(prices)))
        s0.append((ticker, float(prices.iloc[-1])))
    returns = np.diff(np.log(data.load_all("adj_close")[list(fits)].to_numpy()), axis=0)
    corr: SquareMatrix = np.corrcoef(returns, rowvar=False)
    corr.setflags(write=False)
    return tuple(models), tuple(s0), corr
