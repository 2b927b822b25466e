"""``quoteflow token``: mint an HS256 JWT for a server started with ``--auth-secret``."""

from __future__ import annotations

import argparse
import os

from quoteflow.cli._types import SubParsers
from quoteflow.errors import DataError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow token``."""
    p = subparsers.add_parser(
        "token",
        help="mint an HS256 JWT for a server started with --auth-secret",
        description="Print a token for `quoteflow serve --auth-secret` (or "
        "QUOTEFLOW_AUTH_SECRET). Send it as 'Authorization: Bearer <token>', "
        "?access_token=<token> or the access_token cookie.",
    )
    p.add_argument(
        "--symbols",
        default=None,
        metavar="A,B",
        help="comma-separated symbols the token may subscribe to (default: all)",
    )
    p.add_argument(
        "--ttl",
        default="1h",
        metavar="DURATION",
        help="lifetime: 90s, 15m, 1h, 7d; at most 3650d (default 1h)",
    )
    p.add_argument(
        "--admin",
        action="store_true",
        help="may change parameters (PUT /symbols/...) and read /metrics",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="may read /metrics (servers with --metrics-access token, the default with auth)",
    )
    p.add_argument("--subject", default=None, metavar="NAME", help="'sub' claim (who it is for)")
    p.add_argument(
        "--secret",
        default=None,
        metavar="SECRET",
        help="HS256 secret (default: env QUOTEFLOW_AUTH_SECRET; prefer the env var: argv "
        "is visible in ps)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the token."""
    from quoteflow.server.auth import mint_token, parse_ttl

    secret = args.secret if args.secret is not None else os.environ.get("QUOTEFLOW_AUTH_SECRET")
    if secret is None:
        raise DataError("no secret: pass --secret or set QUOTEFLOW_AUTH_SECRET")
    symbols = None
    if args.symbols is not None:
        symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
        if not symbols:
            raise DataError("--symbols is empty: name at least one symbol, or omit it for all")
    token = mint_token(
        secret,
        symbols=symbols,
        ttl=parse_ttl(args.ttl),
        admin=args.admin,
        metrics=args.metrics,
        subject=args.subject,
    )
    print(token)
    return 0
