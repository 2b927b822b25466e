"""``quoteflow fit``: fit a price model to a price history and print the result."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

import pandas as pd

from quoteflow.cli._types import DIST_NAMES, MEAN_NAMES, MODEL_NAMES, SubParsers, parse_dt
from quoteflow.errors import DataError

__all__ = ["MEANREV_TICKER", "add_fit_options", "add_parser", "fit_model", "run"]

#: The shipped ticker whose history mean-reverts clearly (kappa about 2.5, t about 4 on
#: 2000-2013 adj_close); suggested when ``fit TICKER --model meanrev`` finds none.
MEANREV_TICKER = "MSFT"


def fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """GARCH-only fit options; an error if given for another model."""
    extra = {
        k: getattr(args, k) for k in ("dist", "mean", "o") if getattr(args, k, None) is not None
    }
    if extra and args.model != "garch":
        opts = " and ".join(f"--{k}" for k in extra)
        verb = "applies" if len(extra) == 1 else "apply"
        raise DataError(f"{opts} only {verb} to --model garch, not {args.model}")
    return extra


def fit_model(args: argparse.Namespace, source: str) -> tuple[Any, pd.Series]:
    """Fit ``args.model`` to the prices ``source`` names (a CSV file or a shipped ticker)."""
    from quoteflow import data
    from quoteflow.models import MODELS

    prices = data.resolve_prices(source, args.column)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = MODELS[args.model].fit(prices, dt=args.dt, **fit_kwargs(args))
        except DataError as exc:
            # Shipped data are clean, so a refusal is about the model: point at a ticker
            # where this one works (the obvious first try, AAPL, trends).
            ticker = data.shipped_ticker(source)
            if args.model == "meanrev" and ticker not in (None, MEANREV_TICKER):
                raise DataError(
                    f"{exc}; for a shipped ticker that mean-reverts try: "
                    f"quoteflow fit {MEANREV_TICKER} --model meanrev"
                ) from None
            raise
    # A fit warning (e.g. no convergence) is news for the user: one line each on stderr.
    for w in caught:
        print(f"quoteflow: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    return result, prices


def add_fit_options(p: argparse.ArgumentParser) -> None:
    """``--column``, ``--dt``, ``--dist``, ``--mean``, ``--o`` (``fit`` and ``simulate --from-fit``)."""
    p.add_argument(
        "--column",
        default=None,
        help="price column of the CSV (case-insensitive; default: adj_close, else close, "
        "else the only numeric column; shipped tickers: adj_close)",
    )
    p.add_argument(
        "--dt",
        type=parse_dt,
        default=1 / 252,
        help="time between two prices in years, a number or fraction (default: 1/252, "
        "trading days)",
    )
    p.add_argument(
        "--dist",
        choices=DIST_NAMES,
        default=None,
        help="GARCH innovation distribution (default: normal); garch only",
    )
    p.add_argument(
        "--mean",
        choices=MEAN_NAMES,
        default=None,
        help="GARCH mean of the returns (default: constant); garch only",
    )
    p.add_argument(
        "--o",
        type=int,
        choices=(0, 1),
        default=None,
        help="GARCH asymmetry order: 1 fits GJR-GARCH(1,1,1) with gamma (default: 0); garch only",
    )


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow fit``."""
    p = subparsers.add_parser(
        "fit",
        help="fit a price model to a price history (maximum likelihood)",
        description="Fit a price model by maximum likelihood and print its parameters, "
        "standard errors and fit statistics.",
    )
    p.add_argument(
        "prices",
        metavar="PRICES",
        help="CSV file with a header row, or a shipped ticker: AAPL, GOOG, IBM, MSFT "
        "(daily history 2000-2013; fits adj_close)",
    )
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="model to fit")
    add_fit_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and print the summary (or JSON)."""
    result, _ = fit_model(args, args.prices)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(result.summary())
    return 0
