"""The ``quoteflow`` command.

One subcommand per ``_add_<name>_parser(subparsers)`` function, each registering its
options and ``set_defaults(func=<handler>)``; the handler takes the parsed namespace and
returns the exit code. To add a command, write those two functions and append the first to
:data:`_PARSERS`.

User mistakes (bad file, column, data, parameter) print one line
``quoteflow: error: <message>`` on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import numpy as np
import pandas as pd

from quoteflow.errors import DataError, QuoteflowError

__all__ = ["build_parser", "main"]

SubParsers: TypeAlias = "argparse._SubParsersAction[Any]"

#: Exit status of a user mistake (same as argparse's usage errors).
EXIT_USAGE = 2

#: Parameters ``simulate`` uses when neither ``--param`` nor ``--from-fit`` gives them:
#: typical annualised values of a large-cap stock. MeanReversion's ``theta`` defaults to
#: ``--s0`` (start at the long-run level).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "gbm": {"mu": 0.05, "sigma": 0.2},
    "meanrev": {"kappa": 2.0, "sigma": 0.2},
    "garch": {},  # filled from GARCH's own defaults, see _default_params()
}

_MODEL_NAMES = ("gbm", "meanrev", "garch")

#: The shipped ticker whose history mean-reverts clearly (kappa about 2.5, t about 4 on
#: 2000-2013 adj_close); suggested when ``fit TICKER --model meanrev`` finds none.
MEANREV_TICKER = "MSFT"


# --------------------------------------------------------------------------- helpers


def _parse_dt(text: str) -> float:
    """``--dt``: a float (``0.004``) or a fraction (``1/252``) of years, ``> 0``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"invalid dt {text!r}: give years per step as a number or fraction, e.g. 1/252"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid dt {text!r}: must be > 0 years")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid price {text!r}: must be > 0")
    return value


def _parse_param(text: str) -> tuple[str, Any]:
    """``--param k=v``: numbers become floats, anything else stays a string (``dist=t``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid --param {text!r}: expected NAME=VALUE")
    raw = raw.strip()
    value: Any
    try:
        value = float(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def load_prices(source: str, column: str | None = None) -> pd.Series:
    """Prices from a CSV file or a shipped ticker name (``AAPL``, ``GOOG``, ``IBM``, ``MSFT``).

    A shipped ticker gives its ``adj_close`` column unless ``column`` says otherwise. A file
    of the same name as a ticker wins over the ticker.

    Raises
    ------
    DataError
        Missing file / unknown ticker, missing column, bad values.
    """
    from quoteflow import data

    path = Path(source)
    if path.exists():
        return data.read_csv(path, column=column)
    if source.upper() in data.TICKERS:
        frame = data.load(source)
        key = "adj_close" if column is None else column.strip().lower().replace(" ", "_")
        if key not in frame.columns:
            raise DataError(
                f"ticker {source.upper()} has no column {column!r}; columns: "
                f"{', '.join(frame.columns)}"
            )
        series = frame[key].astype(float)
        series.name = f"{source.upper()} {key}"
        return series
    raise DataError(
        f"no such file: {source} (nor a shipped ticker); give a CSV path or a shipped "
        f"ticker ({', '.join(data.TICKERS)})"
    )


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """GARCH-only fit options; an error if given for another model."""
    extra = {k: getattr(args, k) for k in ("dist", "mean") if getattr(args, k, None) is not None}
    if extra and args.model != "garch":
        opts = " and ".join(f"--{k}" for k in extra)
        verb = "applies" if len(extra) == 1 else "apply"
        raise DataError(f"{opts} only {verb} to --model garch, not {args.model}")
    return extra


def _fit(args: argparse.Namespace, source: str) -> tuple[Any, pd.Series]:
    from quoteflow import data
    from quoteflow.models import MODELS

    prices = load_prices(source, args.column)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = MODELS[args.model].fit(prices, dt=args.dt, **_fit_kwargs(args))
        except DataError as exc:
            # Shipped data are clean, so a refusal is about the model: point at a ticker
            # where this one works (the obvious first try, AAPL, trends).
            ticker = source.upper()
            if (
                args.model == "meanrev"
                and ticker in data.TICKERS
                and ticker != MEANREV_TICKER
                and not Path(source).exists()
            ):
                raise DataError(
                    f"{exc}; for a shipped ticker that mean-reverts try: "
                    f"quoteflow fit {MEANREV_TICKER} --model meanrev"
                ) from None
            raise
    # A fit warning (e.g. no convergence) is news for the user: one line each on stderr.
    for w in caught:
        print(f"quoteflow: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    return result, prices


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--column",
        default=None,
        help="price column of the CSV (case-insensitive; default: adj_close, else close, "
        "else the only numeric column; shipped tickers: adj_close)",
    )
    p.add_argument(
        "--dt",
        type=_parse_dt,
        default=1 / 252,
        help="time between two prices in years, a number or fraction (default: 1/252, "
        "trading days)",
    )
    p.add_argument(
        "--dist",
        choices=("normal", "t"),
        default=None,
        help="GARCH innovation distribution (default: normal); garch only",
    )
    p.add_argument(
        "--mean",
        choices=("constant", "zero"),
        default=None,
        help="GARCH mean of the returns (default: constant); garch only",
    )


# --------------------------------------------------------------------------- fit


def _add_fit_parser(subparsers: SubParsers) -> None:
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
    p.add_argument("--model", choices=_MODEL_NAMES, required=True, help="model to fit")
    _add_fit_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> int:
    result, _ = _fit(args, args.prices)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(result.summary())
    return 0


# --------------------------------------------------------------------------- simulate


def _add_simulate_parser(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate price paths of a model to CSV",
        description="Simulate price paths and write them as CSV: a 'step' column and one "
        "column per path (path_0 ... path_{M-1}), first row the start price. Parameters "
        "come from --param, from a fit (--from-fit), or default to: gbm mu=0.05 sigma=0.2; "
        "meanrev kappa=2 theta=<s0> sigma=0.2; garch: the GARCH class defaults.",
    )
    p.add_argument("--model", choices=_MODEL_NAMES, required=True, help="model to simulate")
    p.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model parameter (repeatable), e.g. --param mu=0.08 --param sigma=0.3; "
        "overrides the defaults or the fitted values",
    )
    p.add_argument(
        "--from-fit",
        metavar="PRICES",
        default=None,
        help="fit the model to this CSV file or shipped ticker first and simulate the fit "
        "(start price defaults to the last observed price)",
    )
    p.add_argument("--steps", type=_positive_int, required=True, help="number of steps")
    p.add_argument("--paths", type=_positive_int, default=1, help="number of paths (default 1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same paths)")
    p.add_argument(
        "--s0",
        type=_positive_float,
        default=None,
        help="start price (default: 100, or the last price with --from-fit)",
    )
    _add_fit_options(p)
    p.add_argument(
        "--out",
        default="-",
        metavar="FILE.csv",
        help="output CSV file (default: '-', standard output)",
    )
    p.set_defaults(func=_cmd_simulate)


def _default_params(name: str) -> dict[str, Any]:
    """Defaults of :data:`DEFAULT_PARAMS`, else the model class's own dataclass defaults."""
    import dataclasses

    from quoteflow.models import MODELS

    out = dict(DEFAULT_PARAMS.get(name, {}))
    for f in dataclasses.fields(MODELS[name]):  # type: ignore[arg-type]
        if f.name not in out and f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


def _cmd_simulate(args: argparse.Namespace) -> int:
    from quoteflow.models import model_from_spec

    params: dict[str, Any]
    s0 = args.s0
    if args.from_fit is not None:
        result, prices = _fit(args, args.from_fit)
        params = dict(result.model.params())
        if s0 is None:
            s0 = float(prices.iloc[-1])
    else:
        _fit_kwargs(args)  # --dist/--mean with a non-garch model is still a mistake
        params = _default_params(args.model)
        if args.model == "garch":
            params.update({k: getattr(args, k) for k in ("dist", "mean") if getattr(args, k)})
    if s0 is None:
        s0 = 100.0
    if args.model == "meanrev" and "theta" not in params:
        params["theta"] = s0
    params.update(dict(args.param))
    model = model_from_spec(args.model, **params)
    paths = model.simulate(args.steps, n_paths=args.paths, s0=s0, dt=args.dt, seed=args.seed)
    frame = pd.DataFrame(paths, columns=[f"path_{i}" for i in range(paths.shape[1])])
    frame.insert(0, "step", np.arange(paths.shape[0]))
    shown = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in model.params().items()
    )
    if args.out == "-":
        frame.to_csv(sys.stdout, index=False)
    else:
        out = Path(args.out)
        if out.is_dir():
            raise DataError(f"--out {args.out}: is a directory; give a file name, e.g. paths.csv")
        if not out.parent.is_dir():
            raise DataError(
                f"--out {args.out}: directory {out.parent} does not exist; create it first"
            )
        frame.to_csv(out, index=False)
        print(
            f"wrote {args.paths} path(s) x {args.steps} step(s) of {model.name}({shown}) "
            f"to {args.out}"
        )
    return 0


# --------------------------------------------------------------------------- bench

#: Benchmark suites: ``quoteflow bench NAME [ARGS...]`` runs ``benchmarks/<module>.main(ARGS)``.
_BENCHMARKS = {
    "models": "benchmarks.models.bench_models",
    "fanout": "benchmarks.fanout.run",
    "transports": "benchmarks.transports.run",
}


def _add_bench_parser(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark suite side by side with its peers (from a source checkout)",
        description=(
            "Run a benchmark suite of the benchmarks/ folder of a quoteflow source checkout "
            "(run from the repository root). Suites: "
            + ", ".join(_BENCHMARKS)
            + ". Arguments after the suite name go to it (e.g. --quick; --help lists them)."
        ),
    )
    p.add_argument("suite", choices=sorted(_BENCHMARKS), help="which benchmark to run")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the suite")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import os

    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(_BENCHMARKS[args.suite])
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


# --------------------------------------------------------------------------- entry point


def _add_serve_parser(subparsers: SubParsers) -> None:
    # All serve logic lives in quoteflow.server.runner (also used by notebooks and tests).
    from quoteflow.server.runner import add_serve_arguments

    p = subparsers.add_parser(
        "serve",
        help="stream a market over Server-Sent Events (Tornado server, dashboard at /)",
        description="Serve a simulated, replayed or relayed market as an SSE feed. "
        "Endpoints, limits and metrics: docs/server.md.",
    )
    add_serve_arguments(p)  # sets func=run_serve


def _add_generate_parser(subparsers: SubParsers) -> None:
    # The producer of a scaled-out deployment (docs/scaling.md); logic in the runner.
    from quoteflow.server.runner import add_generate_arguments

    p = subparsers.add_parser(
        "generate",
        help="produce a market into Redis for several `quoteflow serve --broker` instances",
        description="Run the market (or replay, relay) and publish every event to a Redis "
        "stream; `quoteflow serve --broker URL` instances serve it. No HTTP server unless "
        "--port is given (then /healthz, /livez, /metrics). See docs/scaling.md.",
    )
    add_generate_arguments(p)  # sets func=run_generate


def _add_token_parser(subparsers: SubParsers) -> None:
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
    p.set_defaults(func=_cmd_token)


def _cmd_token(args: argparse.Namespace) -> int:
    import os

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


#: Subcommands in the order --help lists them. Add yours here.
_PARSERS: list[Callable[[SubParsers], None]] = [
    _add_fit_parser,
    _add_simulate_parser,
    _add_serve_parser,
    _add_generate_parser,
    _add_token_parser,
    _add_bench_parser,
]


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
    for add in _PARSERS:
        add(subparsers)
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
