"""Options shared by ``quoteflow serve`` and ``quoteflow generate``: the source and logging."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from quoteflow.cli._types import positive
from quoteflow.errors import ConfigError
from quoteflow.server.logs import LOG_FORMATS

if TYPE_CHECKING:
    from quoteflow.sources import Source

__all__ = ["MARKET_FLAGS", "add_log_arguments", "add_source_arguments", "build_source"]

#: The options that describe the market (a serving-only instance has none).
MARKET_FLAGS = (
    "config",
    "universe",
    "replay",
    "relay",
    "seed",
    "tick_interval",
    "speed",
    "bar_interval",
)


def add_source_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The market/source options shared by ``serve`` and ``generate``."""
    what = parser.add_argument_group(title)
    src = what.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="MARKET.toml", help="market from a TOML file")
    src.add_argument(
        "--universe",
        type=positive(int, "universe size"),
        metavar="N",
        help="N synthetic GBM symbols SYM0000... (load tests)",
    )
    src.add_argument(
        "--replay",
        metavar="TICKER|CSV",
        help="replay real history: a shipped ticker (AAPL, GOOG, IBM, MSFT), 'all', or a CSV",
    )
    src.add_argument(
        "--relay", metavar="URL", help="re-publish an upstream SSE feed (e.g. http://h:8080/stream)"
    )
    what.add_argument("--seed", type=int, default=None, help="random seed (reproducible feed)")
    what.add_argument(
        "--tick-interval",
        type=positive(float, "tick interval"),
        default=None,
        metavar="SECONDS",
        help="wall seconds between ticks (market default 0.25; replay: seconds per row)",
    )
    what.add_argument(
        "--speed",
        type=positive(float, "speed"),
        default=None,
        metavar="YEARS_PER_S",
        help="simulated years per wall second (default 1/252: a trading day per second); "
        "replay: historical years per second (252 rows/s per 1.0)",
    )
    what.add_argument(
        "--bar-interval",
        type=positive(float, "bar interval"),
        default=None,
        metavar="SECONDS",
        help="wall seconds per OHLCV bar (market default 5)",
    )


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` (serve and generate)."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging level (default info)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="stderr log lines: text (default) or json (one object per line, with a "
        "stream_open/stream_close record per stream; docs/observability.md)",
    )


def build_source(args: argparse.Namespace) -> Source:
    """The source the ``serve`` options describe.

    Raises
    ------
    ConfigError
        Options that do not apply to the chosen source, or a bad config/replay file.
    """
    from quoteflow.market import Market
    from quoteflow.sources import Relay, Replay

    market_opts = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("tick_interval", args.tick_interval),
            ("speed", args.speed),
            ("bar_interval", args.bar_interval),
        )
        if v is not None
    }
    if args.relay:
        if market_opts:
            flags = ", ".join("--" + k.replace("_", "-") for k in market_opts)
            raise ConfigError(f"{flags} do not apply to --relay (the upstream sets the pace)")
        return Relay(args.relay)
    if args.replay:
        extra = sorted(set(market_opts) - {"tick_interval", "speed"})
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise ConfigError(
                f"{flags} do not apply to --replay (history is fixed, one bar per row)"
            )
        if args.speed is not None and args.tick_interval is not None:
            raise ConfigError("give --speed or --tick-interval for --replay, not both")
        kwargs: dict[str, Any] = {}
        if args.speed is not None:
            kwargs["rows_per_second"] = args.speed * 252.0  # one row is one trading day
        elif args.tick_interval is not None:
            kwargs["rows_per_second"] = 1.0 / args.tick_interval
        target = None if args.replay.lower() == "all" else args.replay
        return Replay(target, **kwargs)
    if args.config:
        return Market.from_toml(args.config, **market_opts)
    if args.universe:
        return Market.universe(args.universe, **market_opts)
    return Market.default(**market_opts)
