"""``quoteflow generate``: produce a market into Redis for ``quoteflow serve --broker`` instances."""

from __future__ import annotations

import argparse
import asyncio
import logging

import tornado.httpserver

from quoteflow.broker.base import BackendLink
from quoteflow.broker.factory import REDIS_SCHEMES, broker_from_url
from quoteflow.broker.redis import DEFAULT_STREAM
from quoteflow.broker.settings import RedisSettings
from quoteflow.cli._source import add_log_arguments, add_source_arguments, build_source
from quoteflow.cli._types import SubParsers, port, positive
from quoteflow.errors import ConfigError
from quoteflow.server.app import ServerState, make_app
from quoteflow.server.logs import configure_logging
from quoteflow.server.runner import bind_sockets, run_until_signal

__all__ = ["add_generate_arguments", "add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow generate``."""
    p = subparsers.add_parser(
        "generate",
        help="produce a market into Redis for several `quoteflow serve --broker` instances",
        description="Run the market (or replay, relay) and publish every event to a Redis "
        "stream; `quoteflow serve --broker URL` instances serve it. No HTTP server unless "
        "--port is given (then /healthz, /livez, /metrics). See docs/scaling.md.",
    )
    add_generate_arguments(p)  # sets func=run


def _redact(url: str) -> str:
    """``url`` without its password (the printed line and logs may be shared)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``quoteflow generate`` options on ``parser`` (sets ``func``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``generate`` subparser.
    """
    add_source_arguments(parser, "what to produce (default: the shipped calibrated market)")
    out = parser.add_argument_group("where to")
    out.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="redis://host:port/db that the serving instances read (quoteflow serve --broker)",
    )
    out.add_argument(
        "--maxlen",
        type=positive(int, "stream length"),
        default=RedisSettings.maxlen,
        metavar="EVENTS",
        help=f"approximate cap of the Redis stream (XADD MAXLEN ~; default {RedisSettings.maxlen})",
    )
    out.add_argument(
        "--outbox",
        type=positive(int, "outbox size"),
        default=RedisSettings.outbox_size,
        metavar="EVENTS",
        help="events kept while Redis is unreachable, sent once it is back "
        f"(default {RedisSettings.outbox_size})",
    )
    net = parser.add_argument_group("health endpoint (optional)")
    net.add_argument("--host", default="127.0.0.1", help="interface for --port (default 127.0.0.1)")
    net.add_argument(
        "--port",
        type=port,
        default=None,
        help="serve /healthz, /livez and /metrics on this port (0 picks one; default: no HTTP)",
    )
    add_log_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``quoteflow generate``: produce the market into Redis until SIGTERM/SIGINT, exit 0.

    The producer of a scaled-out deployment: it runs the source and ``XADD``\\ s every event
    to the Redis stream that the ``quoteflow serve --broker`` instances read, publishes
    the symbol catalog and applies parameter changes they forward. It serves no streams;
    with ``--port`` it answers ``/healthz`` (503 ``degraded`` while Redis is down),
    ``/livez`` and ``/metrics``. On SIGTERM it stops the source, sends what it still
    holds (briefly) and exits 0.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_generate_arguments` options.

    Returns
    -------
    int
        Exit status.

    Raises
    ------
    ConfigError
        Bad option combination, config or broker URL.
    OSError
        ``--port`` cannot be bound.
    """
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    url = str(args.broker)
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"--broker {url!r}: quoteflow generate needs a redis://host:port/db URL")
    source = build_source(args)
    broker = broker_from_url(
        url,
        produce=True,
        consume=False,
        given_ids=getattr(args, "replay_ids", None) == "original",
        maxlen=args.maxlen,
        outbox_size=args.outbox,
    )

    async def main() -> int:
        app = make_app(source, broker, streams=False)
        state: ServerState = app.settings["quoteflow"]
        http: tornado.httpserver.HTTPServer | None = None
        where = ""
        if args.port is not None:
            sockets = bind_sockets(args.host, args.port)
            http = tornado.httpserver.HTTPServer(app)
            http.add_sockets(sockets)
            host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            where = f", health at http://{host}:{sockets[0].getsockname()[1]}/healthz"

        def ready() -> None:
            print(
                f"quoteflow generating {len(source.symbols)} symbols into {_redact(url)} "
                f"(stream {DEFAULT_STREAM}){where}",
                flush=True,
            )

        async def stop() -> None:
            if http is not None:
                http.stop()
            await state.shutdown(timeout=1.0)
            await state.close_broker()  # sends what the outbox still holds (up to 2 s)

        await run_until_signal(state.start, stop, on_ready=ready, stopping="stopping the producer")
        unsent = broker.outbox_size if isinstance(broker, BackendLink) else 0
        if unsent:
            log.warning("%d events were not written to Redis before exit", unsent)
        return 0

    return asyncio.run(main())
