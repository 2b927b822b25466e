"""``quoteflow serve``: stream a market over SSE (and WebSocket) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quoteflow.broker.base import Broker
from quoteflow.broker.factory import broker_from_url
from quoteflow.broker.settings import BufferSettings, RedisSettings
from quoteflow.cli._source import (
    MARKET_FLAGS,
    add_log_arguments,
    add_source_arguments,
    build_source,
)
from quoteflow.cli._types import SubParsers, port, positive
from quoteflow.errors import ConfigError
from quoteflow.history import HistorySettings
from quoteflow.server.app import METRICS_ACCESS, ServerSettings
from quoteflow.server.logs import configure_logging
from quoteflow.server.overload import connection_cap, fd_reserve, raise_open_file_limit
from quoteflow.server.runner import BODY_TIMEOUT, HEADER_TIMEOUT, QuoteServer, run_server

if TYPE_CHECKING:
    from quoteflow.scenario import Scenario
    from quoteflow.sources import Catalog, Source

__all__ = ["add_parser", "add_serve_arguments", "run"]

_SERVER = ServerSettings
_BUFFER = BufferSettings
CATCH_UP_TIMEOUT = RedisSettings.catch_up_timeout


#: The "stream behaviour and limits" options: flag, type, default (from the settings
#: dataclasses or the runner's transport constants), metavar, help (``{0}`` is the default).
_LIMITS: tuple[tuple[str, Callable[[str], Any], Any, str, str], ...] = (
    (
        "--heartbeat",
        positive(float, "heartbeat"),
        _SERVER.heartbeat,
        "SECONDS",
        "send ': keepalive' after this many idle seconds (default {0:g})",
    ),
    (
        "--retry-ms",
        positive(int, "retry", allow_zero=True),
        _SERVER.retry_ms,
        "MS",
        "client reconnection delay sent as 'retry:' (default {0})",
    ),
    (
        "--max-connections",
        positive(int, "connection limit"),
        _SERVER.max_connections,
        "N",
        "open streams beyond which /stream answers 503 (default {0}; lowered to what the "
        "open-file limit can hold, with a reserve, and said so at start-up)",
    ),
    (
        "--header-timeout",
        positive(float, "header timeout"),
        HEADER_TIMEOUT,
        "SECONDS",
        "a request's line and headers must arrive within this; also the idle keep-alive "
        "timeout (default {0:g})",
    ),
    (
        "--body-timeout",
        positive(float, "body timeout"),
        BODY_TIMEOUT,
        "SECONDS",
        "a request body (PUT) must arrive within this (default {0:g})",
    ),
    (
        "--max-connections-per-ip",
        positive(int, "per-IP connection limit"),
        _SERVER.max_connections_per_ip,
        "N",
        "open streams one client address may hold; more get 429 (default {0})",
    ),
    (
        "--max-symbols",
        positive(int, "symbol limit"),
        _SERVER.max_symbols,
        "N",
        "symbols one stream may name (default {0})",
    ),
    (
        "--buffer-size",
        positive(int, "buffer size"),
        _BUFFER.buffer_size,
        "EVENTS",
        "replay buffer length for Last-Event-ID resume (default {0})",
    ),
    (
        "--buffer-age",
        positive(float, "buffer age"),
        _BUFFER.buffer_age,
        "SECONDS",
        "oldest replayable event (default {0:g})",
    ),
    (
        "--max-backlog",
        positive(int, "backlog"),
        _BUFFER.max_backlog_bytes,
        "BYTES",
        "unsent bytes after which a slow client is disconnected (default {0})",
    ),
    (
        "--replay-memory",
        positive(int, "replay memory"),
        _BUFFER.replay_memory_bytes,
        "BYTES",
        "replay bytes in flight to all resuming clients together; more resumes wait their "
        "turn (default {0})",
    ),
    (
        "--ws-max-message",
        positive(int, "WebSocket message limit"),
        _SERVER.ws_max_message_size,
        "BYTES",
        "largest message a /ws client may send; bigger closes with 1009 (default {0})",
    ),
    (
        "--ws-frame-timeout",
        positive(float, "WebSocket frame timeout"),
        _SERVER.ws_frame_timeout,
        "SECONDS",
        "a /ws client must answer a ping (finishing any frame it started) within this "
        "time, else it is closed with 1008 (default {0:g})",
    ),
)


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow serve``."""
    p = subparsers.add_parser(
        "serve",
        help="stream a market over Server-Sent Events (Tornado server, dashboard at /)",
        description="Serve a simulated, replayed or relayed market as an SSE feed. "
        "Endpoints, limits and metrics: docs/server.md.",
    )
    add_serve_arguments(p)  # sets func=run


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``quoteflow serve`` options on ``parser`` (sets ``func``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``serve`` subparser.
    """
    add_source_arguments(parser, "what to serve (default: the shipped calibrated market)")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    net.add_argument(
        "--port", type=port, default=8080, help="TCP port (default 8080; 0 picks a free port)"
    )
    net.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="serving processes sharing the port (SO_REUSEPORT), fed by one producer with "
        "one id space, so a client resumes on any of them (default 1; auto: one per core; "
        "limits such as --max-connections apply per worker; docs/server.md)",
    )
    net.add_argument(
        "--broker",
        default="memory",
        metavar="URL",
        help="'memory' (default) or redis://host:port/db for several instances",
    )
    net.add_argument(
        "--generate",
        action="store_true",
        help="with --broker redis://: this instance also produces the feed into Redis "
        "(exactly one instance per stream); without it the instance only serves",
    )
    net.add_argument(
        "--catch-up-timeout",
        type=positive(float, "catch-up timeout"),
        default=CATCH_UP_TIMEOUT,
        metavar="SECONDS",
        help="with --broker redis://: how long a resume whose id this instance has not "
        "read yet waits for it before the stream ends for the client to retry "
        f"(default {CATCH_UP_TIMEOUT:g})",
    )
    net.add_argument(
        "--history-bars",
        type=int,
        default=HistorySettings.max_bars,
        metavar="N",
        help="base bars kept per symbol for GET /history (default "
        f"{HistorySettings.max_bars}; with --broker redis:// they are kept in Redis, "
        "shared by every instance; 0: none)",
    )
    net.add_argument(
        "--history-ticks",
        type=int,
        default=HistorySettings.max_ticks,
        metavar="N",
        help=f"ticks kept per symbol for GET /history?events=tick (default "
        f"{HistorySettings.max_ticks}; 0: none)",
    )
    net.add_argument(
        "--auth-secret",
        default=None,
        metavar="SECRET",
        help="require HS256 JWTs signed with SECRET (>= 32 bytes; default: env "
        "QUOTEFLOW_AUTH_SECRET, else auth off; an empty value is an error, not 'off'); "
        "prefer the env var: argv is visible in ps",
    )
    net.add_argument(
        "--metrics-access",
        choices=METRICS_ACCESS,
        default=None,
        help="who may read /metrics: open (anyone), token (a token with the metrics or "
        "admin claim), listener (only on --metrics-port, not the main port); default: "
        "token when auth is on, else open",
    )
    net.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        help="port of the /metrics listener (with --metrics-access listener; 0 picks one)",
    )
    net.add_argument(
        "--metrics-host",
        default=None,
        metavar="HOST",
        help="interface of the /metrics listener (default: --host)",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages of ORIGIN (https://host[:port], or '*') to use the API; "
        "repeatable or comma-separated (default: none, no CORS headers)",
    )
    net.add_argument(
        "--trust-proxy",
        action="store_true",
        help="behind a reverse proxy: take the client address from X-Real-IP / "
        "X-Forwarded-For (for the per-IP limit and logs); never when clients connect directly",
    )
    net.add_argument(
        "--instance-id",
        default=None,
        metavar="NAME",
        help="name of this instance in /healthz and, with --instance-header, in the "
        "X-Quoteflow-Instance response header (default host:pid)",
    )
    net.add_argument(
        "--instance-header",
        action="store_true",
        help="send X-Quoteflow-Instance: NAME on every response (off by default: it "
        "names the host and pid to anyone, without auth)",
    )
    parser.add_argument(
        "--scenario",
        default=None,
        metavar="SCENARIO.toml",
        help="run a scripted scenario against the simulated market from the first tick "
        "(price jumps, halts, listings, bursts, transport faults; docs/scenarios.md). "
        "Without it, POST /scenario can still start one",
    )
    lim = parser.add_argument_group("stream behaviour and limits")
    for flag, kind, default, metavar, text in _LIMITS:
        lim.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=text.format(default)
        )
    add_log_arguments(parser)
    parser.set_defaults(func=run)


def _workers(text: str) -> int:
    from quoteflow.cli.workers import parse_workers

    return parse_workers(text)


def _cors_origins(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for origin in value.split(","):
            origin = origin.strip().rstrip("/")
            if origin and origin not in out:
                out.append(origin)
    return tuple(out)


def _settings(args: argparse.Namespace) -> ServerSettings:
    # An empty flag or variable is a mistake to report (check_secret), not "auth off".
    secret = getattr(args, "auth_secret", None)
    if secret is None:
        secret = os.environ.get("QUOTEFLOW_AUTH_SECRET")
    extra: dict[str, Any] = {}
    if getattr(args, "instance_id", None):
        extra["instance"] = args.instance_id
    try:
        return ServerSettings(
            heartbeat=args.heartbeat,
            retry_ms=args.retry_ms,
            max_connections=args.max_connections,
            max_symbols=args.max_symbols,
            auth_secret=secret,
            cors_origins=_cors_origins(getattr(args, "cors_origin", [])),
            max_connections_per_ip=getattr(
                args, "max_connections_per_ip", _SERVER.max_connections_per_ip
            ),
            trust_proxy=bool(getattr(args, "trust_proxy", False)),
            instance_header=bool(getattr(args, "instance_header", False)),
            metrics_access=getattr(args, "metrics_access", None),
            metrics_port=getattr(args, "metrics_port", None),
            metrics_host=getattr(args, "metrics_host", None),
            ws_max_message_size=getattr(args, "ws_max_message", _SERVER.ws_max_message_size),
            ws_frame_timeout=getattr(args, "ws_frame_timeout", _SERVER.ws_frame_timeout),
            **extra,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_serve_only(args: argparse.Namespace) -> None:
    """A serving-only Redis instance has no market: market options are a mistake."""
    given = [f for f in MARKET_FLAGS if getattr(args, f, None) not in (None, False)]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ConfigError(
            f"{flags} describe the market, which the producer runs: pass them to "
            "`quoteflow generate --broker URL` (or add --generate to this instance)"
        )


def _broker(args: argparse.Namespace) -> Broker:
    # --generate makes a Redis instance produce; the memory broker always produces, so
    # --generate with it is a mistake, which the factory names.
    generate = bool(getattr(args, "generate", False))
    memory = args.broker in (None, "", "memory")
    return broker_from_url(
        args.broker,
        produce=not generate if memory else generate,
        consume=True,
        given_ids=getattr(args, "replay_ids", None) == "original",
        buffer_size=args.buffer_size,
        buffer_age=args.buffer_age,
        max_backlog_bytes=args.max_backlog,
        replay_memory_bytes=args.replay_memory,
        catch_up_timeout=getattr(args, "catch_up_timeout", CATCH_UP_TIMEOUT),
    )


def _cap_connections(settings: ServerSettings) -> ServerSettings:
    """Raise the open-file limit; lower ``max_connections`` to what it can hold (and say so)."""
    soft, _hard = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, soft)
    if cap >= settings.max_connections:
        return settings
    print(
        f"quoteflow: --max-connections lowered from {settings.max_connections} to {cap}: "
        f"the open-file limit is {soft} and {fd_reserve(soft)} descriptors are kept for "
        "health checks, Redis and logs (raise it with ulimit -n)",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(settings, max_connections=cap)


def _scenario(path: str | None) -> Scenario | None:
    from quoteflow.scenario import Scenario

    return Scenario.from_toml(path) if path else None


def _with_scenarios(source: Source, scenario: Scenario | None) -> Source:
    """A simulated market runs scenarios (``--scenario``, ``POST /scenario``)."""
    from quoteflow.market import Market
    from quoteflow.scenario import ScenarioSource

    if not isinstance(source, Market):
        if scenario is not None:
            raise ConfigError(
                "--scenario needs a simulated market (--config, --universe or the "
                "default), not --replay or --relay"
            )
        return source
    return ScenarioSource(source, scenario)


def run(args: argparse.Namespace) -> int:
    """``quoteflow serve``: build the source, serve until SIGTERM/SIGINT, exit 0.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_serve_arguments` options.

    Returns
    -------
    int
        Exit status.

    Raises
    ------
    ConfigError
        Bad option combination or config (the CLI prints it as one line, exit 2).
    OSError
        The address cannot be bound.
    """
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    settings = _settings(args)  # first: a bad secret fails before any work
    workers = getattr(args, "workers", 1)
    if workers > 1:
        from quoteflow.cli.workers import run_workers

        return run_workers(args, workers)
    settings = _cap_connections(settings)
    # The scenario file is checked before any work (the default market calibrates).
    scenario = _scenario(getattr(args, "scenario", None))
    broker = _broker(args)
    source: Catalog
    remote = broker.remote_catalog()
    if remote is not None:
        # Serving only: symbols and parameters come from the producer through Redis.
        _check_serve_only(args)
        if scenario is not None:
            raise ConfigError("--scenario needs the producing instance's market (add --generate)")
        source = remote
    else:
        source = _with_scenarios(build_source(args), scenario)

    def ready(server: QuoteServer) -> None:
        n = len(source.symbols)
        base = server.url
        metrics = ""
        if server.metrics_port is not None:
            metrics = f", metrics on port {server.metrics_port}"
        print(
            f"quoteflow serving {n} symbols on {base} (dashboard), stream at {base}stream"
            + metrics,
            flush=True,
        )

    return run_server(
        source,
        host=args.host,
        port=args.port,
        on_ready=ready,
        broker=broker,
        settings=settings,
        buffer_size=args.buffer_size,
        buffer_age=args.buffer_age,
        max_backlog=args.max_backlog,
        replay_memory=args.replay_memory,
        idle_connection_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        history=_history(args),
    )


def _history(args: argparse.Namespace) -> HistorySettings:
    """``--history-*``; with a Redis broker, bars are archived there for every instance."""
    for flag, value in (
        ("--history-bars", args.history_bars),
        ("--history-ticks", args.history_ticks),
    ):
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0 (0 keeps none), got {value}")
    redis = args.broker not in (None, "", "memory")
    return HistorySettings(
        max_bars=args.history_bars,
        max_ticks=args.history_ticks,
        archive_url=args.broker if redis else None,
    )
