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
    "calendar",
    "start",
    "trade_rate",
    "replay_ids",
    "replay_paused",
)


def speed_value(text: str) -> float | str:
    """``--speed``: a positive number, or ``max`` (replays only)."""
    if text.strip().lower() == "max":
        return "max"
    value: float = positive(float, "speed")(text)
    return value


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
        metavar="TICKER|CSV|F.parquet",
        help="replay a recording of `quoteflow record` (F.parquet, a glob, or several "
        "comma-separated), or real daily history: a shipped ticker (AAPL, GOOG, IBM, "
        "MSFT), 'all', or a CSV; steer it with POST /replay (docs/recording.md)",
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
        type=speed_value,
        default=None,
        metavar="X",
        help="simulated years per wall second (default 1/252: a trading day per second); "
        "daily-history replay: historical years per second (252 rows/s per 1.0); "
        "recording replay: a multiple of the recorded pace, 0.1 to 1000 (default 1); "
        "'max' (replays): as fast as clients take it",
    )
    what.add_argument(
        "--replay-ids",
        choices=("fresh", "original"),
        default=None,
        help="with --replay: number events afresh (default) or keep the recorded ids "
        "(memory broker only; decimal, increasing ids)",
    )
    what.add_argument(
        "--replay-paused",
        action="store_true",
        help='with --replay: start paused; POST /replay {"action": "resume"} starts it',
    )
    what.add_argument(
        "--bar-interval",
        type=positive(float, "bar interval"),
        default=None,
        metavar="SECONDS",
        help="wall seconds per OHLCV bar (market default 5)",
    )
    what.add_argument(
        "--calendar",
        default=None,
        metavar="NAME",
        help="trade in the simulated sessions of an exchange calendar (XNYS, XLON, ...): "
        "no ticks while closed, an overnight gap, session events (docs/market.md)",
    )
    what.add_argument(
        "--start",
        default=None,
        metavar="DATE",
        help="start of simulated time (2024-11-25 or an ISO date-time; default: today with "
        "--calendar, else sim_ts is the wall clock)",
    )
    what.add_argument(
        "--trade-rate",
        type=positive(float, "trade rate"),
        default=None,
        metavar="PER_S",
        help="emit trade events, this many per symbol per second (Poisson); bars are then "
        "built from trades (size law: the config's [trades] table, docs/market.md)",
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
    from quoteflow.sources import Relay

    market_opts = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("tick_interval", args.tick_interval),
            ("speed", args.speed),
            ("bar_interval", args.bar_interval),
            ("calendar", args.calendar),
            ("start", args.start),
            ("trade_rate", args.trade_rate),
        )
        if v is not None
    }
    if (args.replay_ids is not None or args.replay_paused) and not args.replay:
        flag = "--replay-ids" if args.replay_ids is not None else "--replay-paused"
        raise ConfigError(f"{flag} only applies to --replay")
    if args.speed == "max" and not args.replay:
        raise ConfigError("--speed max only applies to --replay; give a number of years per second")
    if args.relay:
        if market_opts:
            flags = ", ".join("--" + k.replace("_", "-") for k in market_opts)
            raise ConfigError(f"{flags} do not apply to --relay (the upstream sets the pace)")
        return Relay(args.relay)
    if args.replay:
        return _replay_source(args, market_opts)
    if "trade_rate" in market_opts:
        market_opts["trades"] = {"rate": market_opts.pop("trade_rate")}
    if args.config:
        return Market.from_toml(args.config, **market_opts)
    if args.universe:
        return Market.universe(args.universe, **market_opts)
    return Market.default(**market_opts)


def _replay_source(args: argparse.Namespace, market_opts: dict[str, Any]) -> Source:
    """``--replay``: a recording or the daily history, both a ``SessionReplay``."""
    from quoteflow.playback import SessionReplay, parse_speed
    from quoteflow.recording import is_recording

    common: dict[str, Any] = {"ids": args.replay_ids or "fresh", "paused": args.replay_paused}
    if is_recording(args.replay):
        extra = sorted(set(market_opts) - {"speed"})
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise ConfigError(
                f"{flags} do not apply to a recording (its times are recorded); "
                "use --speed X (0.1 to 1000, or max)"
            )
        speed = 1.0 if args.speed is None else parse_speed(args.speed, "--speed")
        return SessionReplay.from_recording(args.replay, speed=speed, **common)
    extra = sorted(set(market_opts) - {"tick_interval", "speed"})
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise ConfigError(f"{flags} do not apply to --replay (history is fixed, one bar per row)")
    if args.speed is not None and args.tick_interval is not None:
        raise ConfigError("give --speed or --tick-interval for --replay, not both")
    kwargs: dict[str, Any] = {}
    if args.speed == "max":
        kwargs["speed"] = None
    elif args.speed is not None:
        kwargs["rows_per_second"] = args.speed * 252.0  # one row is one trading day
    elif args.tick_interval is not None:
        kwargs["rows_per_second"] = 1.0 / args.tick_interval
    target = None if args.replay.lower() == "all" else args.replay
    return SessionReplay.from_history(target, **common, **kwargs)
