"""``quoteflow simulate``: simulate price paths of a model to CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quoteflow.cli._types import (
    MODEL_NAMES,
    SubParsers,
    parse_param,
    positive_float,
    positive_int,
)
from quoteflow.cli.fit import add_fit_options, fit_kwargs, fit_model
from quoteflow.errors import DataError

__all__ = ["DEFAULT_PARAMS", "add_parser", "default_params", "run"]

#: Parameters ``simulate`` uses when neither ``--param`` nor ``--from-fit`` gives them:
#: typical annualised values of a large-cap stock. MeanReversion's ``theta`` defaults to
#: ``--s0`` (start at the long-run level). Models not listed use their own defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "gbm": {"mu": 0.05, "sigma": 0.2},
    "meanrev": {"kappa": 2.0, "sigma": 0.2},
    # About 10 jumps a year of -2 % +- 4 %: large-cap crash-ish jumps.
    "merton": {"mu": 0.05, "sigma": 0.2, "lambda": 10.0, "jump_mean": -0.02, "jump_sd": 0.04},
}


def add_parser(subparsers: SubParsers) -> None:
    """Register ``quoteflow simulate``."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate price paths of a model to CSV",
        description="Simulate price paths and write them as CSV: a 'step' column and one "
        "column per path (path_0 ... path_{M-1}), first row the start price. Parameters "
        "come from --param, from a fit (--from-fit), or default to: gbm mu=0.05 sigma=0.2; "
        "meanrev kappa=2 theta=<s0> sigma=0.2; merton mu=0.05 sigma=0.2 lambda=10 "
        "jump_mean=-0.02 jump_sd=0.04; garch: the GARCH class defaults.",
    )
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="model to simulate")
    p.add_argument(
        "--param",
        type=parse_param,
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
    p.add_argument("--steps", type=positive_int, required=True, help="number of steps")
    p.add_argument("--paths", type=positive_int, default=1, help="number of paths (default 1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same paths)")
    p.add_argument(
        "--s0",
        type=positive_float,
        default=None,
        help="start price (default: 100, or the last price with --from-fit)",
    )
    add_fit_options(p)
    p.add_argument(
        "--out",
        default="-",
        metavar="FILE.csv",
        help="output CSV file (default: '-', standard output)",
    )
    p.set_defaults(func=run)


def default_params(name: str) -> dict[str, Any]:
    """Defaults of :data:`DEFAULT_PARAMS`, else the model class's own dataclass defaults."""
    import dataclasses

    from quoteflow.models import MODELS
    from quoteflow.models.registry import model_parameters

    out = dict(DEFAULT_PARAMS.get(name, {}))
    cls = MODELS[name]
    for f in model_parameters(cls):
        public = cls.public_name(f.name)  # GARCH's field lam is the parameter lambda
        if public not in out and f.default is not dataclasses.MISSING:
            out[public] = f.default
    return out


def run(args: argparse.Namespace) -> int:
    """Build the model (defaults, fit, ``--param``), simulate, write the CSV."""
    from quoteflow.models import model_from_spec

    params: dict[str, Any]
    s0 = args.s0
    if args.from_fit is not None:
        result, prices = fit_model(args, args.from_fit)
        params = dict(result.model.params())
        if s0 is None:
            s0 = float(prices.iloc[-1])
    else:
        fit_kwargs(args)  # --dist/--mean with a non-garch model is still a mistake
        params = default_params(args.model)
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
