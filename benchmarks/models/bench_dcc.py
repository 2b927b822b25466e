"""DCC(1,1) fit time for the 4 shipped tickers and for 50 simulated symbols.

Run from the repository root::

    python -m benchmarks.models.bench_dcc            # 5 repeats (4 symbols), 3 (50 symbols)
    python -m benchmarks.models.bench_dcc --quick    # 1 repeat each (smoke run)

Times (medians of wall-clock runs, ``time.perf_counter``) of ``DCC.fit(frame)`` in full
(univariate GARCH fits, the correlation step, the two-step standard errors) and of its
parts: the first step (one ``GARCH.fit`` per symbol), one evaluation of the correlation
log-likelihood with scores (what the optimiser calls), and the two-step covariance.
The 50 symbols are simulated: DCC shocks (a=0.05, b=0.9, Qbar equicorrelated 0.3)
through GARCH(1,1) returns, 2000 steps. Neither arch nor statsmodels fits DCC, so there
is no peer to run alongside. Prints a markdown table; nothing is saved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from quoteflow import data
from quoteflow.models import DCC, GARCH
from quoteflow.models._dcc_recursion import correlation_terms, qbar_of
from quoteflow.models.dcc import _two_step_covariance


def simulated_frame(n: int, steps: int = 2000, seed: int = 1) -> pd.DataFrame:
    qbar = np.full((n, n), 0.3)
    np.fill_diagonal(qbar, 1.0)
    names = tuple(f"S{i:02d}" for i in range(n))
    z = DCC(0.05, 0.9, qbar, names).simulate_shocks(steps, seed=seed)[0][:, 0, :]
    g = GARCH(mu=0.05, omega=0.05, alpha=0.08, beta=0.9)
    v = np.full(n, g.unconditional_variance)
    r = np.empty_like(z)
    for t in range(steps):
        e = np.sqrt(v) * z[t]
        r[t] = g.mu + e
        v = g.omega + g.alpha * e * e + g.beta * v
    logp = np.vstack([np.zeros(n), np.cumsum(r / 100.0, axis=0)])
    return pd.DataFrame(100.0 * np.exp(logp), columns=list(names))


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def row(label: str, frame: pd.DataFrame, repeats: int) -> str:
    fit = DCC.fit(frame)
    z = fit.std_resid
    qbar = qbar_of(z)
    a, b = fit.params["a"], fit.params["b"]
    total = median_ms(lambda: DCC.fit(frame), repeats)
    first = median_ms(lambda: [GARCH.fit(frame[c]) for c in frame], repeats)
    loglik = median_ms(lambda: correlation_terms(a, b, z, qbar, scores=True), repeats)
    terms = correlation_terms(a, b, z, qbar, scores=True)
    x = np.array([a, b])
    cov = median_ms(lambda: _two_step_covariance(fit.univariate, fit.symbols, z, x, terms), repeats)
    t, n = z.shape
    return (
        f"| {label} | {n} | {t} | {total:.0f} | {first:.0f} | {loglik:.1f} | {cov:.0f} "
        f"| {fit.extra['iterations']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat each")
    args = parser.parse_args()
    r4, r50 = (1, 1) if args.quick else (5, 3)
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    print(
        "| data | symbols | returns | DCC.fit (ms) | first step (ms) "
        "| one loglik+scores (ms) | two-step covariance (ms) | SLSQP iterations |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(row("shipped AAPL, GOOG, IBM, MSFT", data.load_all("adj_close"), r4))
    print(row("simulated DCC-GARCH", simulated_frame(50), r50))


if __name__ == "__main__":
    main()
