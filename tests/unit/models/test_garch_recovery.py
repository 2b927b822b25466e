"""GARCH(1,1) parameter recovery: simulate with known parameters, fit, compare.

Truth (percent daily returns): mu = 0.05, omega = 0.02, alpha = 0.08, beta = 0.9, with
normal and with standardised Student-t (nu = 6) innovations; n = 5000 returns per path
(about 20 years of trading days).

Tolerances argued from the sample size: at n = 5000 the QML estimator is close to its
normal limit (Bollerslev & Wooldridge 1992), so ``(estimate - truth) / robust_se`` is
close to N(0, 1) for every parameter.

- Fixed 20 seeds (0-19, fixed before any result was seen), every estimate within 3
  robust standard errors: a |N(0,1)| > 3 event has probability 0.27 %. A systematic
  bias or a too-small standard error (e.g. a wrong sandwich) pushes several |z| well
  past 3. One exceedance is recorded and pinned instead: seed 13 gives
  z(nu) = -3.378 for the t model. It is a chance event, not a defect. Over seeds 0-999
  (``python -m benchmarks.models.garch_recovery_study``, docs/models.md "Parameter
  recovery") z(nu) has sd 0.997 and 3 of 1000 |z| > 3 (2.7 expected); the t model's
  omega/alpha/beta are mildly heavy-tailed (skew +-0.4-0.5, 7-8 of 1000 beyond 3).
  1.9 % of t-model seeds and 1.3 % of normal-model seeds have some |z| > 3, so 20
  fixed seeds of both models all pass with probability about 52 % for a correct
  estimator. We keep the seeds fixed in advance and pin the one exceedance (its value,
  to 0.05) rather than widen the limit or pick other seeds: any change to the
  estimator or its standard errors moves it and fails the test.
- Coverage over 200 seeds of the 95 % Wald interval must lie in [90 %, 99 %]: the
  binomial standard deviation of a coverage estimate from 200 trials is
  sqrt(0.95 * 0.05 / 200) = 1.5 %, so the band is about -3.2 / +2.6 standard deviations
  around 95 %. Standard errors 30 % too small (true coverage 87 %) or a biased optimum
  fall outside it.
"""

from __future__ import annotations

import numpy as np
import pytest

# The truth (as above) and the simulate-fit-z loop, shared with the 1000-seed study.
from benchmarks.models.garch_recovery_study import z_scores

#: (dist, seed, parameter) -> its z-score: the recorded exceedances of 3 (see above).
KNOWN_EXCEEDANCES = {("t", 13, "nu"): -3.378}


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_estimates_within_three_robust_se_for_twenty_seeds(dist: str) -> None:
    names, z = z_scores(dist, range(20))
    assert np.all(np.isfinite(z))
    outside = {
        (dist, int(seed), names[j]): float(z[seed, j])
        for seed, j in zip(*np.nonzero(np.abs(z) >= 3.0), strict=True)
    }
    known = {k: v for k, v in KNOWN_EXCEEDANCES.items() if k[0] == dist}
    assert outside.keys() == known.keys(), f"|z| >= 3: {outside}, recorded: {known}"
    for key, value in known.items():
        assert outside[key] == pytest.approx(value, abs=0.05), key


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["normal", "t"])
def test_coverage_of_95pct_intervals_over_200_seeds(dist: str) -> None:
    # ~5 s per distribution on one core (200 fits of 5000 returns at ~10-20 ms each).
    names, z = z_scores(dist, range(200))
    coverage = np.mean(np.abs(z) < 1.959964, axis=0)
    for name, c in zip(names, coverage, strict=True):
        assert 0.90 <= c <= 0.99, f"{dist} {name}: coverage {c:.3f}"
    # No systematic bias: the mean z-score of each parameter is within ~3.5/sqrt(200).
    assert np.all(np.abs(z.mean(axis=0)) < 0.25), z.mean(axis=0)
