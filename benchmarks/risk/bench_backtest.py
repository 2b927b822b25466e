"""Rolling GARCH backtest: 3,000 warm-started refits vs refitting ``arch`` from scratch.

Run from the repository root (needs the ``test`` extra for ``arch``)::

    python -m benchmarks.risk.bench_backtest                 # 3000 refits (a few minutes)
    python -m benchmarks.risk.bench_backtest --refits 30     # smoke run

The series: ``window + refits`` daily prices simulated (seed 7) from the GARCH-t fitted to
the shipped AAPL history (the shipped tickers have 3269 returns, too few for 3,000 refits
of a 1000-day window). Every case refits on the *same* windows: returns ``k - window ..
k - 1`` for ``k = window .. window + refits - 1`` (``refit_every=1``).

Cases, each timed once (wall clock, ``time.perf_counter``):

- ``quoteflow warm``: ``quoteflow.risk.backtest(..., refit_every=1)``, every refit started
  from the previous window's estimates (``GARCH.fit(start=...)``), forecasts, VaR/ES and
  the test table included (Z2 with 2000 simulations);
- ``quoteflow cold``: the same with ``warm_start=False`` (arch's grid-search start);
- ``arch cold``: ``arch_model(100 r, mean="Constant", vol="GARCH", p=1, q=1,
  dist="t").fit(disp="off")`` on each window, fits only;
- ``arch warm``: the same with ``starting_values=`` the previous window's estimates.

Also printed: the largest difference between quoteflow's warm estimates and arch's cold
ones over all windows (the warm start must not change the answer).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np


def _series(window: int, refits: int, dist: str) -> np.ndarray:
    from quoteflow import data
    from quoteflow.models import GARCH

    fit = GARCH.fit(data.resolve_prices("AAPL"), dist=dist)
    out: np.ndarray = fit.model.simulate(window + refits, s0=100.0, seed=7)[:, 0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refits", type=int, default=3000)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--dist", default="t", choices=("normal", "t"))
    ap.add_argument("--skip-arch-warm", action="store_true")
    args = ap.parse_args(argv)

    from arch import arch_model

    from quoteflow import risk

    prices = _series(args.window, args.refits, args.dist)
    r = 100.0 * np.diff(np.log(prices))
    times: dict[str, float] = {}
    params: dict[str, np.ndarray] = {}

    def tick(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            print(f"  {done}/{total}", file=sys.stderr)

    for label, warm in (("quoteflow warm", True), ("quoteflow cold", False)):
        print(label, file=sys.stderr)
        t0 = time.perf_counter()
        res = risk.backtest(
            prices,
            "garch",
            window=args.window,
            refit_every=1,
            dist=args.dist,
            warm_start=warm,
            progress=tick,
        )
        res.table  # noqa: B018 - the tests are part of the work
        times[label] = time.perf_counter() - t0
        params[label] = res.refits[
            ["mu", "omega", "alpha", "beta", "nu"][: 5 if args.dist == "t" else 4]
        ].to_numpy()

    arch_dist = "t" if args.dist == "t" else "normal"
    cases = [("arch cold", False)] + ([] if args.skip_arch_warm else [("arch warm", True)])
    for label, warm in cases:
        print(label, file=sys.stderr)
        rows = []
        prev = None
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, k in enumerate(range(args.window, args.window + args.refits)):
                am = arch_model(
                    r[k - args.window : k], mean="Constant", vol="GARCH", p=1, q=1, dist=arch_dist
                )
                fit = am.fit(disp="off", starting_values=prev if warm else None)
                prev = fit.params.to_numpy()
                rows.append(prev)
                if (i + 1) % 500 == 0:
                    print(f"  {i + 1}/{args.refits}", file=sys.stderr)
        times[label] = time.perf_counter() - t0
        params[label] = np.asarray(rows)

    print(
        f"\n{args.refits} refits of GARCH(1,1)-{args.dist}, window {args.window}, refit_every=1\n"
    )
    print("| case | total (s) | per refit (ms) | vs quoteflow warm |")
    print("|---|---:|---:|---:|")
    base = times["quoteflow warm"]
    for label, t in times.items():
        print(f"| {label} | {t:.2f} | {1000 * t / args.refits:.2f} | {t / base:.1f}x |")
    diff = np.max(np.abs(params["quoteflow warm"] - params["arch cold"]), axis=0)
    names = ["mu", "omega", "alpha", "beta", "nu"][: diff.shape[0]]
    print(
        "\nmax |quoteflow warm - arch cold| over windows: "
        + ", ".join(f"{n} {d:.2g}" for n, d in zip(names, diff, strict=True))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
