"""Rejection rates of the coverage tests when the GARCH-t parameters are *estimated*.

Run from the repository root::

    python -m benchmarks.risk.size_study --seed 1 --window 1000 --days 250
    python -m benchmarks.risk.size_study --seed 2 --window 2000 --days 500

Simulates ``--series`` GARCH-t paths of ``window + days`` returns (mu=0.05, omega=0.02,
alpha=0.08, beta=0.9, nu=6, percent units), fits once on the first ``window`` returns
(``refit_every = days``) with :func:`quoteflow.risk.backtest` and counts how often
``LR_uc``, ``LR_ind`` and ``LR_cc`` reject at 5 % with ``alpha = 0.05`` VaR. Prints the
counts, the mean hit rate and the hit-rate variance relative to the binomial one
(docs/risk.md, "What the tests check").
"""

from __future__ import annotations

import argparse

import numpy as np

from quoteflow import risk
from quoteflow.models import GARCH


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--series", type=int, default=400)
    args = ap.parse_args(argv)
    true = GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9, nu=6.0, dist="t")
    paths = true.simulate(args.window + args.days, n_paths=args.series, seed=args.seed)
    rejections = np.zeros(3, dtype=int)
    rates = []
    for i in range(args.series):
        res = risk.backtest(
            paths[:, i], "garch", window=args.window, refit_every=args.days, dist="t", alpha=0.05
        )
        tests = res.coverage(0.05)
        rejections += [t.pvalue < 0.05 for t in tests]
        rates.append(res.hits[0.05].mean())
    r = np.asarray(rates)
    print(
        f"window {args.window}, {args.days} days, {args.series} series: rejections at 5 % "
        f"LR_uc {rejections[0]}, LR_ind {rejections[1]}, LR_cc {rejections[2]}; mean hit "
        f"rate {r.mean():.4f}, variance / binomial {r.var() * args.days / (0.05 * 0.95):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
