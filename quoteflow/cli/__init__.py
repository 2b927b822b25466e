"""The ``quoteflow`` command: one module per subcommand.

Each command module (``fit``, ``simulate``, ``serve``, ``generate``, ``record``, ``token``,
``bench``, ``backtest``)
has ``add_parser(subparsers)``, which registers its options and
``set_defaults(func=run)``, and ``run(args)``, which takes the parsed namespace and
returns the exit code. To add a command, write such a module and append it to
:data:`COMMANDS`. Option types live in :mod:`quoteflow.cli._types`; the source options
``serve`` and ``generate`` share in :mod:`quoteflow.cli._source`. Option defaults are read
from the settings dataclasses (``ServerSettings``, ``BufferSettings``, ``RedisSettings``),
never written again here.

User mistakes (bad file, column, data, parameter) print one line
``quoteflow: error: <message>`` on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from quoteflow.cli.fit import MEANREV_TICKER
from quoteflow.errors import QuoteflowError

__all__ = ["COMMANDS", "EXIT_USAGE", "MEANREV_TICKER", "build_parser", "main"]

#: Exit status of a user mistake (same as argparse's usage errors).
EXIT_USAGE = 2

#: Command modules (``quoteflow.cli.<name>``) in the order --help lists them. Add yours here.
COMMANDS: tuple[str, ...] = (
    "fit",
    "simulate",
    "serve",
    "generate",
    "record",
    "token",
    "bench",
    "backtest",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``quoteflow: error: ...``, exit 2)."""

    def error(self, message: str) -> NoReturn:
        # _error adds the one "quoteflow: error:" prefix; the subcommand is in the hint.
        _error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``quoteflow`` argument parser with every registered subcommand."""
    from quoteflow import __version__

    parser = _Parser(
        prog="quoteflow",
        description="Calibrate price models, stream them over Server-Sent Events, watch them live.",
    )
    parser.add_argument("--version", action="version", version=f"quoteflow {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name in COMMANDS:
        # By name: `import quoteflow.cli` stays light; tornado loads with the parser.
        importlib.import_module(f"quoteflow.cli.{name}").add_parser(subparsers)
    return parser


def _error(message: str) -> None:
    # One line, always: a multi-line message would look like a traceback to a user.
    line = " ".join(str(message).split()) or "unknown error"
    print(f"quoteflow: error: {line}", file=sys.stderr)


def _os_error_text(exc: OSError) -> str:
    """``exc`` in words: ``/tmp: is a directory`` rather than ``[Errno 21] Is a directory: '/tmp'``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"
    return exc.strerror or str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``quoteflow`` command; return the exit status (0 ok, 2 user mistake).

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args))
    except BrokenPipeError:  # `quoteflow simulate ... | head`: the reader left, not an error
        return 0
    except (QuoteflowError, ValueError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(_os_error_text(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
