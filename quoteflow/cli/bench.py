"""``quoteflow bench``: run a benchmark suite of a source checkout's ``benchmarks/`` folder."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from quoteflow.cli._types import SubParsers
from quoteflow.errors import DataError

__all__ = ["BENCHMARKS", "add_parser", "run"]

#: Benchmark suites: ``quoteflow bench NAME [ARGS...]`` runs ``benchmarks/<module>.main(ARGS)``.
BENCHMARKS = {
    "models": "benchmarks.models.bench_models",
    "fanout": "benchmarks.fanout.run",
    "transports": "benchmarks.transports.run",
}


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow bench``."""
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark suite side by side with its peers (from a source checkout)",
        description=(
            "Run a benchmark suite of the benchmarks/ folder of a quoteflow source checkout "
            "(run from the repository root). Suites: "
            + ", ".join(BENCHMARKS)
            + ". Arguments after the suite name go to it (e.g. --quick; --help lists them)."
        ),
    )
    p.add_argument("suite", choices=sorted(BENCHMARKS), help="which benchmark to run")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the suite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import the suite from the working directory and run its ``main``."""
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(BENCHMARKS[args.suite])
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("benchmarks"):
            raise
        raise DataError(
            f"benchmark suite {args.suite!r} not found ({exc.name}): run `quoteflow bench` "
            "from the root of a quoteflow source checkout"
        ) from None
    finally:
        sys.path.pop(0)
    code: int = module.main(list(args.bench_args))
    return code
