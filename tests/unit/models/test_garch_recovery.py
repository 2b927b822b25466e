"""GARCH(1,1) parameter recovery: simulate with known parameters, fit, compare.

Truth (percent daily returns): mu = 0.05, omega = 0.02, alpha = 0.08, beta = 0.9, with
normal and with standardised Student-t (nu = 6) innovations; n = 5000 returns per path
(about 20 years of trading days).

Tolerances argued from the sample size: at n = 5000 the QML estimator is close to its
normal limit (Bollerslev & Wooldridge 1992), so ``(estimate - truth) / robust_se`` is
close to N(0, 1) for every parameter.

- The statistical check is the coverage test below. Over seeds 0-999
  (``python -m benchmarks.models.garch_recovery_study``, docs/models.md "Parameter
  recovery") z(nu) has sd 0.997 and 3 of 1000 |z| > 3 (2.7 expected); the t model's
  omega/alpha/beta are mildly heavy-tailed (skew +-0.4-0.5, 7-8 of 1000 beyond 3).
- A golden-output regression test pins the z-scores of seeds 0-19 (in
  ``golden/garch_recovery_z.json``). It is not a statistical test: it fails for any
  change of the sampler or the estimator, also a correct one (an equivalent t sampler
  draws other numbers). Then check the coverage test (``pytest -m slow``) and the
  study, and regenerate the file with ``python -m tests.unit.models.test_garch_recovery``.
- Coverage over 200 seeds of the 95 % Wald interval must lie in [90 %, 99 %]: the
  binomial standard deviation of a coverage estimate from 200 trials is
  sqrt(0.95 * 0.05 / 200) = 1.5 %, so the band is about -3.2 / +2.6 standard deviations
  around 95 %. Standard errors 30 % too small (true coverage 87 %) or a biased optimum
  fall outside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The truth (as above) and the simulate-fit-z loop, shared with the 1000-seed study.
from benchmarks.models.garch_recovery_study import z_scores

GOLDEN = Path(__file__).with_name("golden") / "garch_recovery_z.json"
GOLDEN_SEEDS = range(20)


def golden_z_scores() -> dict[str, dict[str, Any]]:
    """The z-scores of seeds 0-19 as the golden file stores them (rounded to 1e-4)."""
    out: dict[str, dict[str, Any]] = {}
    for dist in ("normal", "t"):
        names, z = z_scores(dist, GOLDEN_SEEDS)
        out[dist] = {"names": names, "z": np.round(z, 4).tolist()}
    return out


def test_golden_output_regression_z_scores_of_seeds_0_to_19() -> None:
    """Golden output: same seeds, same z-scores (see the module docstring to regenerate)."""
    want = json.loads(GOLDEN.read_text())
    got = golden_z_scores()
    for dist in ("normal", "t"):
        assert got[dist]["names"] == want[dist]["names"]
        z = np.array(got[dist]["z"])
        assert np.all(np.isfinite(z))
        # 0.01 in z is ~1 % of a standard error: platform rounding passes, a changed
        # estimate, standard error or random stream does not.
        np.testing.assert_allclose(z, np.array(want[dist]["z"]), atol=0.01, err_msg=dist)


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


GJR_RETURNS = 2000


@pytest.mark.slow
def test_gjr_skewt_coverage_of_95pct_intervals_over_200_seeds() -> None:
    """GJR-GARCH(1,1,1) with skewed-t innovations (issue 15): 200 seeds of n = 2000.

    Truth ``TRUTH["gjr-skewt"]`` of the study (mu 0.05, omega 0.05, alpha 0.08,
    gamma 0.12, beta 0.8, eta 6, lambda -0.2). The band is the one argued in the module
    docstring: coverage from 200 seeds has binomial sd 1.5 % around a true 95 %, and
    [90 %, 99 %] is about -3.2 / +2.6 sd. At n = 2000 the interval is not yet exact: a
    run of seeds 0-199 gave coverage 0.915-0.955 and mean z of alpha -0.23 (the known
    downward small-sample bias of the QML ARCH coefficient, ~3 sd of a 200-seed mean);
    the bias check allows |mean z| < 0.4 (0.4 SE of bias lowers a 95 % interval's
    coverage to ~93.5 %, still inside the band), which a wrong score or Hessian breaks.
    ~10 s on one core (200 fits of 7 parameters).
    """
    names, z = z_scores("gjr-skewt", range(200), n=GJR_RETURNS)
    assert names == ["mu", "omega", "alpha", "gamma", "beta", "eta", "lambda"]
    coverage = np.mean(np.abs(z) < 1.959964, axis=0)
    for name, c in zip(names, coverage, strict=True):
        assert 0.90 <= c <= 0.99, f"gjr-skewt {name}: coverage {c:.3f}"
    assert np.all(np.abs(z.mean(axis=0)) < 0.4), z.mean(axis=0)


if __name__ == "__main__":
    # Regenerate the golden file (only after an intended change; see the docstring).
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden_z_scores(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
