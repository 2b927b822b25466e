"""``quoteflow backtest``: rolling one-step VaR/ES forecasts and their backtests."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from typing import Any

from quoteflow.cli._types import MODEL_NAMES, SubParsers, positive_int
from quoteflow.cli.fit import add_fit_options, fit_kwargs

__all__ = ["add_parser", "parse_alphas", "parse_days", "parse_window", "run"]


def parse_window(text: str) -> int | str:
    """``--window``: a number of returns (``>= 30``) or ``expanding``."""
    if text.strip().lower() == "expanding":
        return "expanding"
    return parse_days(text)


def parse_days(text: str) -> int:
    """``--min-window``: a number of returns, ``>= 30`` (what a fit needs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid window {text!r}: give a number of days (or 'expanding' for --window)"
        ) from None
    if value < 30:
        raise argparse.ArgumentTypeError(f"invalid window {text!r}: must be >= 30 days")
    return value


def parse_alphas(text: str) -> tuple[float, ...]:
    """``--alpha``: comma-separated tail levels in (0, 0.5), e.g. ``0.01,0.05``."""
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid alpha {part.strip()!r}: expected numbers like 0.01,0.05"
            ) from None
        if not (math.isfinite(value) and 0.0 < value < 0.5):
            raise argparse.ArgumentTypeError(f"invalid alpha {part.strip()!r}: must be in (0, 0.5)")
        out.append(value)
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"invalid alpha {text!r}: levels must be distinct")
    return tuple(out)


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow backtest``."""
    p = subparsers.add_parser(
        "backtest",
        help="rolling one-day VaR/ES backtest of a model (Kupiec, Christoffersen, Z2)",
        description="Refit a model on a rolling (or expanding) window every --refit-every "
        "days, forecast the next day's VaR and ES, and print the Kupiec, Christoffersen and "
        "Acerbi-Szekely Z2 tests (docs/risk.md). Progress goes to stderr.",
    )
    p.add_argument(
        "prices",
        metavar="PRICES",
        help="CSV file with a header row, or a shipped ticker: AAPL, GOOG, IBM, MSFT",
    )
    p.add_argument("--model", choices=MODEL_NAMES, default="garch", help="model (default garch)")
    add_fit_options(p)
    p.add_argument(
        "--window",
        type=parse_window,
        default=1000,
        metavar="DAYS|expanding",
        help="estimation window in returns, or 'expanding' (default 1000)",
    )
    p.add_argument(
        "--min-window",
        type=parse_days,
        default=1000,
        metavar="DAYS",
        help="first window of --window expanding (default 1000)",
    )
    p.add_argument(
        "--refit-every",
        type=positive_int,
        default=20,
        metavar="DAYS",
        help="days between refits (default 20)",
    )
    p.add_argument(
        "--alpha",
        type=parse_alphas,
        default=(0.01, 0.05),
        metavar="A[,A...]",
        help="VaR/ES tail levels (default 0.01,0.05)",
    )
    p.add_argument(
        "--simulations",
        type=positive_int,
        default=2000,
        metavar="N",
        help="simulations for the Z2 p-value (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of those simulations (default 0)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


class _Progress:
    """``backtest: refit i/n`` on stderr: rewritten in place on a terminal, else every 10 %."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // total
        if not self.tty and tenth == self.last and done != total:
            return
        self.last = tenth
        line = f"backtest: refit {done}/{total} ({time.perf_counter() - self.t0:.1f} s)"
        if self.tty:
            print(f"\r{line}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the backtest and print its table."""
    from quoteflow import data, risk

    prices = data.resolve_prices(args.prices, args.column)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = risk.backtest(
            prices,
            args.model,
            window=args.window,
            min_window=args.min_window,
            refit_every=args.refit_every,
            alpha=args.alpha,
            dt=args.dt,
            es_simulations=args.simulations,
            seed=args.seed,
            progress=_Progress(),
            **fit_kwargs(args),
        )
        table = result.table
    for w in caught:
        print(f"quoteflow: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    if args.json:
        out: dict[str, Any] = {
            "model": result.model,
            "window": result.window,
            "refit_every": result.refit_every,
            "refits": len(result.refits),
            "es_test": risk.ES_TEST,
            "table": [
                {"alpha": a, **{k: _json_number(v) for k, v in row.items()}}
                for a, row in table.to_dict(orient="index").items()
            ],
        }
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(result.summary())
    return 0


def _json_number(v: Any) -> Any:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 and not isinstance(v, float) else f
