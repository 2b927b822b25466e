"""GARCH(1,1): validation, recursions vs their plain references, likelihood, simulation,
stepper, units and time steps. Agreement with ``arch`` and parameter recovery live in
test_garch_arch_agreement.py and test_garch_recovery.py."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from scipy import stats

from quoteflow.errors import DataError
from quoteflow.models import _garch_recursion as rec
from quoteflow.models.base import FitResult
from quoteflow.models.garch import (
    GARCH,
    GARCHConvergenceWarning,
    GARCHFitResult,
    GARCHStepper,
    _loglik_terms,
    _Spec,
)
from quoteflow.models.gbm import GBM

DT = 1 / 252
TRUE = GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9)


def _prices(model: GARCH, n: int, seed: int) -> np.ndarray:
    return model.simulate(n, seed=seed)[:, 0]


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"omega": 0.0}, "omega must be > 0"),
        ({"omega": -1.0}, "omega must be > 0"),
        ({"alpha": -0.01}, "alpha must be >= 0"),
        ({"beta": -0.01}, "beta must be >= 0"),
        ({"alpha": 0.2, "beta": 0.8}, r"alpha \+ beta must be < 1"),
        ({"alpha": 0.5, "beta": 0.6}, r"alpha \+ beta must be < 1"),
        ({"dist": "t", "nu": 2.0}, "nu must be > 2"),
        ({"dist": "t", "nu": 1.5}, "nu must be > 2"),
        ({"dist": "student"}, "dist must be one of 'normal', 't'"),
        ({"mean": "ar1"}, "mean must be one of 'constant', 'zero'"),
        ({"mean": "zero", "mu": 0.1}, "mu must be 0 when mean='zero'"),
        ({"mu": math.nan}, "mu must be finite"),
        ({"omega": math.inf}, "omega must be finite"),
        ({"scale": 0.0}, r"scale = 0 is out of range; allowed: \[0.0001, 10000\]"),
        ({"dt_fit": -1.0}, "dt_fit must be > 0"),
        ({"alpha": "0.1"}, "alpha must be a real number"),
    ],
)
def test_invalid_parameters_name_parameter_and_range(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GARCH(**kwargs)


def test_nu_is_only_checked_for_t() -> None:
    assert GARCH(nu=1.0).nu == 1.0  # ignored for the normal
    assert GARCH(dist="t", nu=2.5).nu == 2.5


def test_params_are_json_safe_and_frozen() -> None:
    m = GARCH(mu=np.float32(0.5), omega=1, alpha=0, beta=0)  # type: ignore[arg-type]
    p = m.params()
    assert type(p["mu"]) is float and type(p["omega"]) is float
    assert json.loads(json.dumps(p)) == p
    assert p["dist"] == "normal" and p["mean"] == "constant" and p["scale"] == 100.0
    with pytest.raises(AttributeError):
        m.alpha = 0.1  # type: ignore[misc]
    assert m.with_params(alpha=0.1).alpha == 0.1
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        m.with_params(alpha=0.5, beta=0.5)


def test_derived_quantities() -> None:
    assert TRUE.persistence == pytest.approx(0.98)
    assert TRUE.unconditional_variance == pytest.approx(1.0)
    # 1 %^2 per day -> 0.01 * sqrt(252) per year
    assert TRUE.annual_volatility == pytest.approx(0.01 * math.sqrt(252))


# ----------------------------------------------------------------------- recursions


def test_backcast_matches_its_definition() -> None:
    e = np.arange(1.0, 101.0)
    w = 0.94 ** np.arange(75)
    assert rec.backcast(e) == pytest.approx(np.sum(w * e[:75] ** 2) / w.sum(), rel=1e-14)
    short = np.array([1.0, 2.0])
    assert rec.backcast(short) == pytest.approx((1.0 + 0.94 * 4.0) / 1.94, rel=1e-14)


def test_variance_filter_equals_plain_loop() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal(2000) * 1.3
    ref = rec.variance_reference(0.05, 0.1, 0.85, e, 1.7)
    fast = rec.variance_filter(0.05, 0.1, 0.85, e, 1.7)
    np.testing.assert_allclose(fast, ref, rtol=1e-12)
    assert ref[0] == pytest.approx(0.05 + 0.95 * 1.7, rel=1e-15)


@pytest.mark.parametrize("with_mu", [True, False])
def test_variance_gradient_equals_finite_differences(with_mu: bool) -> None:
    rng = np.random.default_rng(1)
    r = 0.1 + rng.standard_normal(500)
    bc = 1.2
    theta = np.array([0.1, 0.05, 0.1, 0.85])  # mu, omega, alpha, beta

    def sig(t: np.ndarray) -> np.ndarray:
        return rec.variance_reference(t[1], t[2], t[3], r - t[0], bc)

    _, grad = rec.variance_and_gradient(0.05, 0.1, 0.85, r - 0.1, bc, with_mu)
    cols = [0, 1, 2, 3] if with_mu else [1, 2, 3]
    for row, j in enumerate(cols):
        h = 1e-6
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        fd = (sig(up) - sig(dn)) / (2 * h)
        np.testing.assert_allclose(grad[row], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_scores_equal_finite_differences_of_loglik(dist: str) -> None:
    rng = np.random.default_rng(2)
    r = 0.05 + rng.standard_normal(400)
    spec = _Spec(returns=r, backcast=rec.backcast(r - r.mean()), dist=dist, mean="constant")
    x = np.array([0.04, 0.05, 0.1, 0.85] + ([6.0] if dist == "t" else []))
    terms = _loglik_terms(spec, x)
    scores = terms.scores(with_mu=True)
    np.testing.assert_allclose(scores.mean(axis=0), terms.gradient(with_mu=True), rtol=1e-12)
    for j in range(x.size):
        h = 1e-6 * max(abs(x[j]), 0.1)
        up, dn = x.copy(), x.copy()
        up[j] += h
        dn[j] -= h
        fd = (_loglik_terms(spec, up).ll - _loglik_terms(spec, dn).ll) / (2 * h)
        np.testing.assert_allclose(scores[:, j], fd, rtol=1e-5, atol=1e-7)


def test_t_loglik_is_a_unit_variance_density() -> None:
    # The standardised t log-density must integrate to 1 and have variance sigma2.
    x = np.linspace(-60, 60, 400_001)
    spec = _Spec(returns=x, backcast=1.0, dist="t", mean="zero")
    # alpha = beta = 0: sigma2_t = omega for every t.
    dens = np.exp(_loglik_terms(spec, np.array([2.0, 0.0, 0.0, 5.0])).ll)
    dx = x[1] - x[0]
    assert np.sum(dens) * dx == pytest.approx(1.0, abs=1e-4)
    assert np.sum(dens * x**2) * dx == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize(("steps", "paths"), [(1, 1), (100, 3), (5000, 1), (20_001, 2), (300, 300)])
def test_affine_scan_equals_plain_loop(steps: int, paths: int) -> None:
    rng = np.random.default_rng(steps)
    z = rng.standard_normal((steps, paths))
    a = 0.1 * z**2 + 0.88
    x0 = rng.uniform(0.5, 2.0, paths)
    ref = rec.affine_scan_reference(a, 0.02, x0)
    np.testing.assert_allclose(rec.affine_scan(a, 0.02, x0), ref, rtol=1e-10)


def test_affine_scan_handles_zero_coefficients_and_array_intercepts() -> None:
    rng = np.random.default_rng(3)
    a = np.where(rng.uniform(size=(10_000, 1)) < 0.3, 0.0, rng.uniform(0, 1.5, (10_000, 1)))
    c = rng.uniform(0.0, 1.0, (10_000, 1))
    ref = rec.affine_scan_reference(a, c, np.array([3.0]))
    np.testing.assert_allclose(rec.affine_scan(a, c, np.array([3.0])), ref, rtol=1e-10)


def test_simulated_variance_equals_plain_recursion_million_steps() -> None:
    """The fast path must reproduce the plain GARCH loop over a long single path."""
    n = 1_000_000
    rng = np.random.default_rng(11)
    eps = rng.standard_normal((n, 1))
    fast = TRUE._variance_path(eps, DT)[:, 0]
    # Plain recursion, evaluated with the reference scan on the same shocks.
    a = TRUE.alpha * eps[:-1] ** 2 + TRUE.beta
    v0 = TRUE.unconditional_variance
    ref = np.concatenate([[v0], rec.affine_scan_reference(a, TRUE.omega, np.array([v0]))[:, 0]])
    np.testing.assert_allclose(fast, ref, rtol=1e-10)


# ----------------------------------------------------------------------- simulation


def test_simulate_shape_first_row_and_seed() -> None:
    s0 = np.array([10.0, 20.0, 30.0])
    out = TRUE.simulate(50, n_paths=3, s0=s0, seed=4)  # type: ignore[arg-type]
    assert out.shape == (51, 3)
    np.testing.assert_array_equal(out[0], s0)
    assert np.all(out > 0) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, TRUE.simulate(50, n_paths=3, s0=s0, seed=4))  # type: ignore[arg-type]
    assert not np.array_equal(out, TRUE.simulate(50, n_paths=3, s0=s0, seed=5))  # type: ignore[arg-type]
    gen_a, gen_b = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(TRUE.simulate(5, seed=gen_a), TRUE.simulate(5, seed=gen_b))
    assert TRUE.simulate(0).shape == (1, 1)


def test_simulate_is_the_plain_recursion_in_price_units() -> None:
    """Rebuild prices from the same draws with a plain loop: r = mu + sqrt(v) eps, /scale."""
    m = GARCH(mu=0.05, omega=0.1, alpha=0.1, beta=0.85, scale=100.0)
    n, s0 = 300, 50.0
    out = m.simulate(n, s0=s0, seed=7)[:, 0]
    eps = np.random.default_rng(7).standard_normal((n, 1))[:, 0]
    v = m.unconditional_variance
    logp = math.log(s0)
    expected = [s0]
    for t in range(n):
        logp += (m.mu + math.sqrt(v) * eps[t]) / m.scale
        expected.append(math.exp(logp))
        v = m.omega + m.alpha * v * eps[t] ** 2 + m.beta * v
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("bad", [{"n_steps": -1}, {"n_paths": 0}, {"dt": 0.0}, {"s0": -1.0}])
def test_simulate_rejects_bad_arguments(bad: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"n_steps": 10, "n_paths": 1, "s0": 100.0, "dt": DT}
    kwargs.update(bad)
    with pytest.raises(ValueError):
        TRUE.simulate(**kwargs)


def test_simulated_returns_have_garch_moments() -> None:
    # 200 paths x 2000 steps: mean and variance per step of the scaled returns match
    # mu and omega / (1 - alpha - beta); with ~4e5 returns the standard error of the mean is
    # ~0.0016 and of the variance (kurtosis ~ 4-5) a few 0.01 -> generous bounds.
    paths = TRUE.simulate(2000, n_paths=200, seed=21)
    r = 100 * np.diff(np.log(paths), axis=0)
    assert r.mean() == pytest.approx(0.05, abs=0.01)
    assert r.var() == pytest.approx(1.0, rel=0.05)
    # Volatility clustering: squared returns are autocorrelated (zero for iid returns).
    r2 = r**2 - (r**2).mean()
    acf1 = float(np.mean(r2[1:] * r2[:-1]) / np.mean(r2 * r2))
    assert acf1 > 0.1


def test_t_simulation_has_unit_variance_innovations_and_fat_tails() -> None:
    m = GARCH(mu=0.0, omega=1.0, alpha=0.0, beta=0.0, dist="t", nu=5.0, mean="zero")
    r = 100 * np.diff(np.log(m.simulate(200_000, seed=3)[:, 0]))
    # se of a sample variance: sqrt((kurtosis - 1) / n) = sqrt(8 / 200,000) = 0.0063 for
    # t5 (kurtosis 9; measured sd over seeds 3-22: 0.0069). 0.03 is 4.7 se; a t sampler
    # left unstandardised would be off by nu / (nu - 2) = 1.67.
    assert r.var() == pytest.approx(1.0, rel=0.03)
    assert stats.kurtosis(r) > 2.0  # excess kurtosis of t5 is 6; normal would be 0
    ks = stats.kstest(r, stats.t(df=5, scale=math.sqrt(3 / 5)).cdf)
    assert ks.pvalue > 0.001


# ----------------------------------------------------------------------- time steps


def test_step_coefficients_are_the_fitted_ones_at_dt_fit() -> None:
    assert TRUE.step_coefficients(DT) == (TRUE.mu, TRUE.omega, TRUE.alpha, 0.0, TRUE.beta)


@pytest.mark.parametrize("h", [1 / 23400, 0.25, 4.0])
def test_step_coefficients_keep_calendar_time_moments(h: float) -> None:
    mu_h, omega_h, alpha_h, _, beta_h = TRUE.step_coefficients(DT * h)
    assert mu_h == pytest.approx(TRUE.mu * h)
    # Unconditional variance per unit time is kept ...
    assert omega_h / (1 - alpha_h - beta_h) == pytest.approx(h * TRUE.unconditional_variance)
    # ... and a variance shock decays at the same rate per unit of calendar time.
    assert alpha_h + beta_h == pytest.approx(TRUE.persistence**h, rel=1e-12)
    assert alpha_h >= 0 and beta_h >= 0
    # A model with those coefficients is valid.
    GARCH(mu=mu_h, omega=omega_h, alpha=alpha_h, beta=beta_h)


def test_quarter_steps_reproduce_daily_variance() -> None:
    # Steps of a quarter day: four of them add up to the daily variance and mean.
    paths = TRUE.simulate(4 * 1000, n_paths=100, dt=DT / 4, seed=8)
    daily = 100 * np.diff(np.log(paths[::4]), axis=0)
    # 100,000 daily returns. The mean: se sqrt(var / n) = 0.0032 (returns are serially
    # uncorrelated), so 0.015 is 4.7 se. The variance: squared returns cluster
    # (persistence 0.98), which widens its se well past the iid sqrt((kurtosis - 1) / n);
    # measured over seeds 8-27 the relative sd is 0.020, so 0.09 is 4.5 sd. Wrong step
    # coefficients (e.g. daily ones applied per quarter step) are off by a factor ~4.
    assert daily.var() == pytest.approx(TRUE.unconditional_variance, rel=0.09)
    assert daily.mean() == pytest.approx(TRUE.mu, abs=0.015)


# ----------------------------------------------------------------------- stepper


def test_stepper_matches_simulate_at_fit_step() -> None:
    n, paths = 200, 4
    sim = TRUE.simulate(n, n_paths=paths, s0=100.0, dt=DT, seed=12)
    z = np.random.default_rng(12).standard_normal((n, paths))
    st = TRUE.stepper(np.full(paths, 100.0), DT)
    assert isinstance(st, GARCHStepper)
    rows = [st.prices.copy()] + [st.step(z[t]).copy() for t in range(n)]
    np.testing.assert_allclose(np.array(rows), sim, rtol=1e-11)


def test_stepper_t_uses_gaussian_copula() -> None:
    m = GARCH(mu=0.0, omega=1.0, alpha=0.0, beta=0.0, dist="t", nu=4.0, mean="zero")
    z = np.random.default_rng(5).standard_normal(100_000)
    eps = m.innovations_from_normal(z)
    # Monotone map (ranks kept, so correlation carries over) onto the unit-variance t.
    assert np.all(np.diff(eps[np.argsort(z)]) >= 0)
    # (near z = 0 the reference loses digits in Phi(z) ~ 0.5, hence the atol)
    np.testing.assert_allclose(
        eps, stats.t.ppf(stats.norm.cdf(z), 4) / math.sqrt(2), rtol=1e-9, atol=1e-12
    )
    assert np.isfinite(m.innovations_from_normal(np.array([-40.0, 40.0]))).all()
    st = m.stepper(100.0, DT)
    new = st.step(z[:1])
    assert new[0] == pytest.approx(100.0 * math.exp(eps[0] / 100.0))


def test_stepper_set_model_keeps_state_and_changes_dynamics() -> None:
    st = TRUE.stepper([100.0, 50.0], DT)
    z = np.array([3.0, -3.0])
    st.step(z)
    prices, var = st.prices.copy(), st.variance.copy()
    calm = TRUE.with_params(alpha=0.0, beta=0.5, omega=0.01)
    st.set_model(calm)
    assert st.model is calm
    np.testing.assert_array_equal(st.prices, prices)
    np.testing.assert_array_equal(st.variance, var)  # no jump in volatility
    st.step(np.zeros(2))
    np.testing.assert_allclose(st.variance, 0.01 + 0.5 * var)
    with pytest.raises(TypeError, match="needs a GARCH"):
        st.set_model(GBM(mu=0.1, sigma=0.2))


def test_stepper_set_model_with_other_scale_keeps_price_volatility() -> None:
    st = TRUE.stepper(100.0, DT)
    before = st.volatility.copy()
    pct = TRUE
    frac = GARCH(mu=pct.mu / 100, omega=pct.omega / 1e4, alpha=0.08, beta=0.9, scale=1.0)
    st.set_model(frac)
    np.testing.assert_allclose(st.volatility, before)
    assert st.volatility[0] == pytest.approx(TRUE.annual_volatility)


def test_stepper_rejects_bad_shocks() -> None:
    st = TRUE.stepper([1.0, 2.0], DT)
    with pytest.raises(ValueError, match="shape"):
        st.step(np.zeros(3))


# ----------------------------------------------------------------------- fitting


def test_fit_returns_garch_fit_result_with_aligned_diagnostics() -> None:
    p = _prices(TRUE, 3000, seed=1)
    res = GARCH.fit(p)
    assert isinstance(res, GARCHFitResult) and isinstance(res, FitResult)
    assert res.converged and res.nobs == 3000
    assert list(res.params) == ["mu", "omega", "alpha", "beta"]
    assert list(res.std_err) == list(res.params)
    for arr in (res.returns, res.resid, res.conditional_volatility, res.std_resid):
        assert arr.shape == (3000,)
    np.testing.assert_allclose(res.returns, 100 * np.diff(np.log(p)), rtol=1e-12)
    np.testing.assert_allclose(res.std_resid * res.conditional_volatility, res.resid)
    m = res.model
    assert isinstance(m, GARCH)
    assert m.scale == 100.0 and m.dt_fit == DT and m.dist == "normal"
    assert res.aic == pytest.approx(-2 * res.loglik + 8)
    d = res.to_dict()
    json.dumps(d)
    assert d["loglik_scaled"] == pytest.approx(res.loglik_scaled)
    assert "garch" in res.summary().lower() and "alpha" in res.summary()
    assert "<table>" in res._repr_html_()
    assert res.cov.shape == (4, 4)
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov)), list(res.std_err.values()))


def test_loglik_is_of_unscaled_returns_and_scale_invariant() -> None:
    p = _prices(TRUE, 2500, seed=2)
    pct = GARCH.fit(p, scale=100.0)
    ten = GARCH.fit(p, scale=10.0)
    n = pct.nobs
    # Change of variables r = scale * x: log f_x = log f_r + log(scale).
    assert pct.loglik == pytest.approx(pct.loglik_scaled + n * math.log(100.0), rel=1e-14)
    assert pct.loglik == pytest.approx(ten.loglik, rel=1e-7)
    # Same model in other units: mu ~ scale, omega ~ scale**2, alpha/beta unchanged.
    assert ten.params["mu"] * 10 == pytest.approx(pct.params["mu"], rel=1e-3)
    assert ten.params["omega"] * 100 == pytest.approx(pct.params["omega"], rel=1e-3)
    assert ten.params["beta"] == pytest.approx(pct.params["beta"], rel=1e-4)
    # The unscaled loglik compares with GBM on the same returns; GBM is nested in
    # GARCH-normal (alpha = beta = 0) up to the variance start, so it cannot be much higher.
    gbm = GBM.fit(p)
    assert pct.loglik > gbm.loglik


def test_zero_mean_fit_has_no_mu() -> None:
    p = _prices(TRUE.with_params(mu=0.0, mean="zero"), 2000, seed=3)  # type: ignore[attr-defined]
    res = GARCH.fit(p, mean="zero")
    assert list(res.params) == ["omega", "alpha", "beta"]
    assert res.model.mu == 0.0  # type: ignore[attr-defined]
    assert res.n_params == 3


def test_t_fit_has_nu() -> None:
    p = _prices(GARCH(dist="t", nu=6.0), 3000, seed=4)
    res = GARCH.fit(p, dist="t")
    assert list(res.params) == ["mu", "omega", "alpha", "beta", "nu"]
    assert 3.0 < res.params["nu"] < 15.0
    assert res.model.nu == res.params["nu"]  # type: ignore[attr-defined]


def test_non_convergence_warns_and_says_so() -> None:
    p = _prices(TRUE, 1000, seed=5)
    with pytest.warns(GARCHConvergenceWarning, match="GARCH fit did not converge"):
        res = GARCH.fit(p, max_iter=1)
    assert res.converged is False
    assert any("did not converge" in n for n in res.notes)


def test_converged_fit_emits_no_warning() -> None:
    p = _prices(TRUE, 1000, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GARCH.fit(p).converged


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        ([100.0] * 10 + [math.nan] + [100.0] * 40, "NaN at index 10"),
        ([100.0] * 5 + [math.inf] + [100.0] * 40, "inf at index 5"),
        ([100.0, 101.0, -1.0] + [100.0] * 40, "positive.*index 2"),
        ([100.0, 101.0, 0.0] + [100.0] * 40, "positive.*index 2"),
        ([100.0, 101.0, 102.0], "too short"),
        ([5.0] * 100, "constant"),
        ([[1.0, 2.0]] * 40, "1-D"),
    ],
)
def test_bad_prices_raise_data_error(prices: Any, match: str) -> None:
    with pytest.raises(DataError, match=match):
        GARCH.fit(prices)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dist": "gaussian"}, "dist must be one of 'normal', 't'"),
        ({"mean": "ar"}, "mean must be one of 'constant', 'zero'"),
        ({"scale": -1.0}, r"scale = -1 is out of range; allowed: \[0.0001, 10000\]"),
        ({"dt": 0.0}, "dt must be"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_fit_options_raise(kwargs: dict[str, Any], match: str) -> None:
    p = _prices(TRUE, 100, seed=0)
    with pytest.raises(ValueError, match=match):
        GARCH.fit(p, **kwargs)


def test_forecast_variance_term_structure() -> None:
    res = GARCH.fit(_prices(TRUE, 2000, seed=9))
    m = res.model
    assert isinstance(m, GARCH)
    f = res.forecast_variance(500)
    first = m.omega + m.alpha * res.resid[-1] ** 2 + m.beta * res.conditional_volatility[-1] ** 2
    assert f[0] == pytest.approx(first, rel=1e-12)
    # Geometric approach to the unconditional variance at rate alpha + beta.
    gaps = f - m.unconditional_variance
    np.testing.assert_allclose(gaps[1:], gaps[:-1] * m.persistence, rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="horizon"):
        res.forecast_variance(0)


def test_fitted_model_streams_in_price_units() -> None:
    """A model fitted on prices simulates prices with the same return volatility."""
    p = _prices(TRUE, 4000, seed=10)
    m = GARCH.fit(p).model
    sim = m.simulate(4000, n_paths=20, s0=float(p[-1]), seed=1)
    r_sim = np.diff(np.log(sim), axis=0)  # unscaled
    r_data = np.diff(np.log(p))
    # The spread is that of r_data's sample sd (4000 returns; r_sim has 20x more): 1/sqrt(2n)
    # = 0.011 if iid, 0.016 measured over seeds 10-29 (clustering), plus the fit's error in
    # the unconditional variance. 0.08 is 5 sd; percent-vs-fraction is off by a factor 10.
    assert r_sim.std() == pytest.approx(r_data.std(), rel=0.08)
    assert 0.005 < r_sim.std() < 0.02  # a fraction per day, not percent
