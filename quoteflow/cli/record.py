"""``quoteflow record``: write an SSE feed to rolling, crash-safe Parquet files."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from quoteflow.cli._types import SubParsers, positive
from quoteflow.errors import ConfigError

__all__ = ["add_parser", "run"]


def _size(text: str) -> int:
    """``--roll-size``: bytes, with an optional K/M/G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    body = text.strip().lower().removesuffix("b")
    factor = units.get(body[-1:], 1)
    if factor != 1:
        body = body[:-1]
    try:
        value = int(float(body) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: e.g. 64M, 500K, 1G") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be > 0")
    return value


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow record``."""
    p = subparsers.add_parser(
        "record",
        help="record an SSE feed (a quoteflow server or any other) to Parquet",
        description="Write every event of an SSE feed (id, type, data, receive time, "
        "payload fields as columns) to Parquet files NAME-00000.parquet, "
        "NAME-00001.parquet, ... Each file is finished atomically (written as "
        ".partial, then renamed), so a killed recorder loses at most the last roll "
        "interval. Replay with `quoteflow serve --replay NAME.parquet` (docs/recording.md).",
    )
    p.add_argument("url", help="the SSE URL, e.g. http://127.0.0.1:8080/stream")
    p.add_argument("--out", required=True, metavar="NAME.parquet", help="name of the recording")
    p.add_argument(
        "--roll-size",
        type=_size,
        default=64 << 20,
        metavar="BYTES",
        help="start a new file after about this size (64M by default; K/M/G suffixes)",
    )
    p.add_argument(
        "--roll-interval",
        type=positive(float, "roll interval"),
        default=60.0,
        metavar="SECONDS",
        help="start a new file after this many seconds (default 60): the most a crash can lose",
    )
    p.add_argument(
        "--duration",
        type=positive(float, "duration"),
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: until SIGINT/SIGTERM or the feed ends)",
    )
    p.add_argument(
        "--max-events",
        type=positive(int, "event count"),
        default=None,
        metavar="N",
        help="stop after N events",
    )
    p.add_argument("--symbols", default=None, metavar="A,B", help="?symbols= for the feed")
    p.add_argument("--events", default=None, metavar="tick,bar", help="?events= for the feed")
    p.add_argument(
        "--heartbeat-timeout",
        type=positive(float, "heartbeat timeout", allow_zero=True),
        default=45.0,
        metavar="SECONDS",
        help="reconnect after this long without a byte (quoteflow sends a keepalive every "
        "15 s); 0: never, for a feed that is silent between events (default 45)",
    )
    p.add_argument(
        "--token",
        default=None,
        metavar="JWT",
        help="bearer token for a server with auth (prefer env QUOTEFLOW_TOKEN: argv is "
        "visible in ps)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record until stopped; print what was written. Exit 0."""
    import os

    from quoteflow.recording import Recorder, record

    if not str(args.url).startswith(("http://", "https://")):
        raise ConfigError(f"record: url must be an http:// or https:// URL, got {args.url!r}")
    recorder = Recorder(args.out, roll_bytes=args.roll_size, roll_seconds=args.roll_interval)
    token = args.token or os.environ.get("QUOTEFLOW_TOKEN") or None
    options = {k: v for k, v in (("symbols", args.symbols), ("events", args.events)) if v}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"quoteflow recording {args.url} to {recorder.out}", file=sys.stderr, flush=True)
        await record(
            args.url,
            recorder,
            duration=args.duration,
            max_events=args.max_events,
            stop=stop,
            token=token,
            heartbeat_timeout=args.heartbeat_timeout or None,
            **options,
        )

    asyncio.run(main())
    stats = recorder.stats
    names = ", ".join(str(f) for f in stats.files) or "no file (no event received)"
    print(f"recorded {stats.events} events in {len(stats.files)} file(s): {names}", flush=True)
    return 0
