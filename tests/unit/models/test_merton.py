"""MertonJump jump-diffusion (issue 15, item 3): density, truncation, simulation, fit, streaming."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from quoteflow import data
from quoteflow.errors import DataError, ParameterError
from quoteflow.market import Market
from quoteflow.models import MODELS, MertonJump, compare
from quoteflow.models.merton import (
    _components,
    _loglik_and_gradient,
    _loglik_terms,
    jumps_to_keep,
    truncation_bound,
)

DT = 1 / 252
TRUTH = {"mu": 0.08, "sigma": 0.15, "lam": 25.0, "jump_mean": -0.02, "jump_sd": 0.04}
MODEL = MertonJump(**TRUTH)
THETA = np.array([0.08, 0.15, 25.0, -0.02, 0.04])


def _density_by_fourier(x: float, m: MertonJump, dt: float) -> float:
    """f(x) = 1/pi int_0^inf Re[e^{-iux} phi(u)] du, with the characteristic function
    phi(u) = exp(i u c - sigma^2 dt u^2 / 2 + lam dt (exp(i u jm - js^2 u^2 / 2) - 1))
    (MertonJump 1976): a route to the density that shares nothing with the mixture sum."""
    c = (m.mu - 0.5 * m.sigma**2 - m.lam * m.kappa) * dt

    def integrand(u: float) -> float:
        jump = m.lam * dt * (np.exp(1j * u * m.jump_mean - 0.5 * m.jump_sd**2 * u * u) - 1.0)
        phi = np.exp(1j * u * c - 0.5 * m.sigma**2 * dt * u * u + jump)
        return float((np.exp(-1j * u * x) * phi).real)

    value, _ = integrate.quad(integrand, 0.0, 2000.0, limit=400, epsabs=1e-12)
    return value / math.pi


@pytest.mark.parametrize("x", [-0.15, -0.05, -0.02, 0.0, 0.004, 0.03, 0.08])
def test_mixture_density_equals_the_fourier_inversion_of_the_characteristic_function(
    x: float,
) -> None:
    got = math.exp(float(MODEL.logpdf(x)[0]))
    want = _density_by_fourier(x, MODEL, DT)
    # quad's absolute error (1e-12 requested) and the truncation bound (1e-11) are far
    # below 1e-7 of a density of order 0.1..40.
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_truncation_omits_at_most_the_stated_bound_and_never_adds() -> None:
    lam_dt = MODEL.lam * DT
    k = jumps_to_keep(lam_dt)
    assert stats.poisson.sf(k, lam_dt) <= 1e-12 < stats.poisson.sf(k - 1, lam_dt)
    bound = truncation_bound(lam_dt, MODEL.sigma**2 * DT, k)
    x = np.linspace(-0.4, 0.2, 601)
    truncated = np.exp(MODEL.logpdf(x))
    # The same mixture with 40 more terms: the exact density to double precision.
    kk = np.arange(k + 41)
    w = stats.poisson.pmf(kk, lam_dt)
    _, mean, _ = _components(*THETA, DT)
    drift = mean[0]
    full = (
        w[None, :]
        * stats.norm.pdf(
            x[:, None],
            drift + kk[None, :] * MODEL.jump_mean,
            np.sqrt(MODEL.sigma**2 * DT + kk[None, :] * MODEL.jump_sd**2),
        )
    ).sum(axis=1)
    assert np.all(full - truncated >= -1e-12 * full)
    assert np.max(full - truncated) <= bound


def test_analytic_gradient_equals_numerical_derivatives_of_the_loglik() -> None:
    r = np.diff(np.log(MODEL.simulate(2000, seed=4)[:, 0]))
    _, grad = _loglik_and_gradient(r, THETA, DT)
    for j in range(5):
        h = 1e-6 * max(abs(THETA[j]), 0.01)
        up, down = THETA.copy(), THETA.copy()
        up[j] += h
        down[j] -= h
        num = (_loglik_terms(r, up, DT).sum() - _loglik_terms(r, down, DT).sum()) / (2 * h)
        assert grad[j] == pytest.approx(num, rel=1e-5, abs=1e-6 * abs(grad).max())


def test_simulated_log_returns_have_the_theoretical_cumulants() -> None:
    """Mean ``c + lam dt jm``, variance ``sigma^2 dt + lam dt (jm^2 + js^2)``, fourth
    cumulant ``lam dt (jm^4 + 6 jm^2 js^2 + 3 js^4)`` (compound Poisson cumulants)."""
    n = 400_000
    r = np.diff(np.log(MODEL.simulate(n, seed=11)[:, 0]))
    lam_dt = MODEL.lam * DT
    jm, js = MODEL.jump_mean, MODEL.jump_sd
    c = (MODEL.mu - 0.5 * MODEL.sigma**2 - MODEL.lam * MODEL.kappa) * DT
    mean = c + lam_dt * jm
    var = MODEL.sigma**2 * DT + lam_dt * (jm**2 + js**2)
    k4 = lam_dt * (jm**4 + 6 * jm**2 * js**2 + 3 * js**4)
    # Tolerances: 4 standard errors of each sample statistic at n = 400,000.
    assert abs(r.mean() - mean) < 4 * math.sqrt(var / n)
    m4 = float(np.mean((r - r.mean()) ** 4))
    se_var = math.sqrt((m4 - var**2) / n)
    assert abs(r.var() - var) < 4 * se_var
    sample_k4 = stats.kstat(r, 4)
    assert sample_k4 == pytest.approx(k4, rel=0.15)  # the k4 statistic's SE is ~4 % here


def test_the_stepper_draws_the_same_law_as_simulate() -> None:
    """The streaming form maps the market's normal shock through the mixture's inverse
    CDF: its draws must follow the MertonJump law (Kolmogorov-Smirnov against the exact CDF)."""
    rng = np.random.default_rng(5)
    stepper = MODEL.stepper(np.full(50_000, 100.0), DT)
    r = np.log(stepper.step(rng.standard_normal(50_000)) / 100.0)
    x, cdf = MODEL._cdf_table(DT)
    result = stats.kstest(r, lambda v: np.interp(v, x, cdf))
    assert result.pvalue > 1e-3
    gap = MODEL.stepper(np.full(20_000, 100.0), DT)
    moved = np.log(gap.gap(rng.standard_normal(20_000), 3 * DT) / 100.0)
    lam_t = MODEL.lam * 3 * DT
    var3 = MODEL.sigma**2 * 3 * DT + lam_t * (MODEL.jump_mean**2 + MODEL.jump_sd**2)
    assert moved.var() == pytest.approx(var3, rel=0.05)  # SE of a variance at n=20k: ~2 %


@pytest.mark.slow
def test_95_percent_intervals_cover_the_truth_over_200_seeds() -> None:
    """Over 200 simulated series of 3000 daily returns (~300 jumps each), the 95 %
    intervals (estimate +- 1.96 observed-information SE) cover each true parameter 90-99 %
    of the time: at 95 % the count of 200 has SD 3.1, so 180..198 holds a correct
    estimator with probability > 0.99 (binomial), and a broken SE (off by 25 %) falls
    out of it."""
    names = {"mu": 0.08, "sigma": 0.15, "lambda": 25.0, "jump_mean": -0.02, "jump_sd": 0.04}
    hits = dict.fromkeys(names, 0)
    for seed in range(200):
        prices = MODEL.simulate(3000, seed=seed)[:, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fit = MertonJump.fit(prices)
        for name, true in names.items():
            hits[name] += abs(fit.params[name] - true) <= 1.959964 * fit.std_err[name]
    assert all(180 <= h <= 198 for h in hits.values()), hits


def test_compare_ranks_merton_first_on_merton_data() -> None:
    prices = MertonJump(0.05, 0.12, 12.0, -0.05, 0.06).simulate(4000, seed=2)[:, 0]
    table = compare(prices).table
    assert table.iloc[0]["model"] == "merton", table[["model", "aic"]]


def test_fit_on_shipped_aapl_reports_its_truncation_and_streams() -> None:
    fit = MertonJump.fit(data.load("AAPL")["adj_close"])
    assert set(fit.params) == {"mu", "sigma", "lambda", "jump_mean", "jump_sd"}
    assert all(np.isfinite(v) and v > 0 for v in fit.std_err.values())
    assert any("truncated at" in n for n in fit.notes)
    assert fit.extra["truncation_bound"] < 1e-9
    assert MODELS["merton"] is MertonJump
    market = Market(symbols={"AAPL": fit.model}, seed=1, tick_interval=0.1)
    prices = [market.step()[0].data["price"] for _ in range(200)]
    assert all(p > 0 for p in prices) and len(set(prices)) > 50
    assert market.update("AAPL", {"lambda": 10.0})["lambda"] == 10.0
    with pytest.raises(ParameterError, match="lambda"):
        market.update("AAPL", {"lambda": -1.0})


def test_bad_input_names_what_is_wrong() -> None:
    with pytest.raises(DataError):
        MertonJump.fit([100.0, 101.0, 102.0])
    with pytest.raises(ParameterError, match="jump_sd"):
        MertonJump(0.1, 0.2, 5.0, 0.0, 0.0)
    with pytest.raises(ParameterError, match="lambda"):
        MertonJump(0.1, 0.2, -5.0, 0.0, 0.1)
    with pytest.raises(ParameterError, match="sigma"):
        MertonJump(0.1, -0.2, 5.0, 0.0, 0.1)


def test_no_jumps_in_the_data_is_a_warning_not_a_crash() -> None:
    from quoteflow.models import GBM

    prices = GBM(0.05, 0.2).simulate(2000, seed=3)[:, 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = MertonJump.fit(prices)
    assert np.isfinite(fit.loglik)
    # Without jumps the jump part is not identified: either a warning says so, or the
    # fitted jumps are negligible (tiny intensity or tiny sizes).
    assert caught or fit.params["lambda"] * fit.params["jump_sd"] ** 2 < 0.01
