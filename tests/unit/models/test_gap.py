"""The closed-period gap of every model: its variance follows the documented rule.

Statistical tests. With ``N`` independent draws, a sample variance of normal returns has a
relative standard error of ``sqrt(2 / N)``; a mean of squared unit-variance innovations
with kurtosis ``k`` has one of ``sqrt((k - 1) / N)``. Every bound below is 5 standard
errors: a correct rule fails with probability ~6e-7 per check, while a rule off by the
tolerance (about 1.6 % at N = 200,000) is caught. Seeds are fixed, so a run is
reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from quoteflow.models import GARCH, GBM, MeanReversion
from quoteflow.models.garch import GARCHStepper

N = 200_000
Z_BOUND = 5.0


def _rel_tol(kurtosis: float = 3.0) -> float:
    return Z_BOUND * math.sqrt((kurtosis - 1.0) / N)


def test_gbm_gap_log_return_is_normal_with_variance_sigma2_tau() -> None:
    model = GBM(mu=0.1, sigma=0.3)
    tau = 0.3 / 252  # an overnight of 0.3 trading days of model time
    st = model.stepper(np.full(N, 100.0), 1 / 1008)
    z = np.random.default_rng(1).standard_normal(N)
    r = np.log(st.gap(z, tau) / 100.0)
    want_var = model.sigma**2 * tau
    assert r.var(ddof=1) == pytest.approx(want_var, rel=_rel_tol())
    # mean (mu - sigma^2/2) tau, standard error sqrt(var / N)
    assert abs(r.mean() - (model.mu - model.sigma**2 / 2) * tau) < Z_BOUND * math.sqrt(want_var / N)


def test_meanrev_gap_is_the_exact_ou_move_over_tau() -> None:
    model = MeanReversion(kappa=8.0, theta=50.0, sigma=0.4)
    tau = 5.0 / 252  # long enough that reversion shows: exp(-kappa tau) = 0.85
    start = 70.0
    st = model.stepper(np.full(N, start), 1 / 1008)
    z = np.random.default_rng(2).standard_normal(N)
    x = np.log(st.gap(z, tau))
    want_var = model.sigma**2 * (1 - math.exp(-2 * model.kappa * tau)) / (2 * model.kappa)
    want_mean = math.log(50.0) + math.exp(-model.kappa * tau) * (math.log(start) - math.log(50.0))
    assert x.var(ddof=1) == pytest.approx(want_var, rel=_rel_tol())
    assert abs(x.mean() - want_mean) < Z_BOUND * math.sqrt(want_var / N)


def _garch_gap_variance_by_steps(st: GARCHStepper, h: int) -> np.ndarray:
    """Sum over the gap's h steps of E[v_{t+k}] = vbar + phi^k (v - vbar): the rule, by a loop."""
    _, _, omega_h, _, _, _, phi = st._state
    vbar = omega_h / (1 - phi)
    total = np.zeros_like(st.variance)
    expected = st.variance.copy()
    for _ in range(h):
        total += expected
        expected = vbar + phi * (expected - vbar)
    return total


@pytest.mark.parametrize(("dist", "kurtosis"), [("normal", 3.0), ("t", 3.0 + 6.0 / (8.0 - 4.0))])
def test_garch_gap_variance_is_its_conditional_variance_over_the_gap(
    dist: str, kurtosis: float
) -> None:
    model = GARCH(mu=0.04, omega=0.05, alpha=0.1, beta=0.85, nu=8.0, dist=dist)
    dt = 1 / 1008
    st = model.stepper(np.full(N, 100.0), dt)
    rng = np.random.default_rng(3)
    # Paths in different volatility states, as after a day of trading.
    st.variance = st.variance * rng.uniform(0.3, 4.0, N)
    h = 200
    # A gap of 200 steps, over which the variance forecast decays to ~8 % of its distance
    # from vbar: the sum differs clearly from h * v (or h * vbar) for these states.
    want = _garch_gap_variance_by_steps(st, h)
    np.testing.assert_allclose(st.gap_variance(h * dt), want, rtol=1e-12)
    v_before = st.variance.copy()
    r = np.log(st.gap(rng.standard_normal(N), h * dt) / 100.0) * model.scale
    mean = model.mu * h * dt / model.dt_fit
    # (r - mean)^2 / V is eps^2: mean 1, standard error sqrt((kurtosis - 1) / N)
    ratio = (r - mean) ** 2 / want
    assert abs(ratio.mean() - 1.0) < _rel_tol(kurtosis)
    # The variance state continues at its forecast for the end of the gap.
    _, _, omega_h, _, _, _, phi = st._state
    vbar = omega_h / (1 - phi)
    np.testing.assert_allclose(st.variance, vbar + phi**h * (v_before - vbar), rtol=1e-12)


@pytest.mark.parametrize(
    "model",
    [GBM(0.05, 0.2), MeanReversion(2.0, 100.0, 0.2), GARCH()],
    ids=["gbm", "meanrev", "garch"],
)
def test_a_gap_of_zero_leaves_the_price_and_bad_tau_is_refused(model: object) -> None:
    st = model.stepper(np.array([100.0, 80.0]), 1 / 1008)  # type: ignore[attr-defined]
    before = st.prices.copy()
    # no model time, no move, whatever the shock
    np.testing.assert_allclose(st.gap(np.ones(2), 0.0), before, rtol=1e-12)
    with pytest.raises(ValueError, match="tau must be a gap length"):
        st.gap(np.ones(2), -1.0)
