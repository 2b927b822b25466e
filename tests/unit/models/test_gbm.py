"""GBM: validation, exact MLE, likelihood, simulation, stepper, parameter recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from quoteflow.models import GBM, FitResult
from quoteflow.models.gbm import GBMStepper

DT = 1 / 252
TRUE = GBM(mu=0.08, sigma=0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mu": 0.1, "sigma": 0.0}, "sigma must be > 0"),
        ({"mu": 0.1, "sigma": -0.2}, "sigma must be > 0"),
        ({"mu": math.nan, "sigma": 0.2}, "mu must be finite"),
        ({"mu": 0.1, "sigma": math.inf}, "sigma must be finite"),
        ({"mu": "0.1", "sigma": 0.2}, "mu must be a real number"),
        ({"mu": True, "sigma": 0.2}, "mu must be a real number"),
    ],
)
def test_invalid_parameters_name_parameter_and_range(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GBM(**kwargs)  # type: ignore[arg-type]


def test_parameters_are_plain_floats_and_frozen() -> None:
    m = GBM(mu=np.float32(0.5), sigma=1)  # type: ignore[arg-type]
    assert type(m.mu) is float and type(m.sigma) is float
    assert m.params() == {"mu": 0.5, "sigma": 1.0}
    with pytest.raises(AttributeError):
        m.mu = 1.0  # type: ignore[misc]
    assert m.with_params(sigma=0.3) == GBM(0.5, 0.3)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        m.with_params(sigma=-1.0)


def test_fit_matches_closed_form_and_gaussian_loglik() -> None:
    prices = TRUE.simulate(500, seed=3)[:, 0]
    res = GBM.fit(prices, dt=DT)
    r = np.diff(np.log(prices))
    n = r.size
    s2 = r.var()  # ddof=0: the MLE
    assert res.nobs == n == 500
    assert res.params["sigma"] == pytest.approx(math.sqrt(s2 / DT), rel=1e-12)
    assert res.params["mu"] == pytest.approx(r.mean() / DT + s2 / DT / 2, rel=1e-12)
    # loglik is the Gaussian log-density of the log returns at the MLE (no Jacobian).
    ll = stats.norm.logpdf(r, loc=r.mean(), scale=math.sqrt(s2)).sum()
    assert res.loglik == pytest.approx(ll, rel=1e-12)
    assert res.aic == pytest.approx(-2 * ll + 4)
    assert res.bic == pytest.approx(-2 * ll + 2 * math.log(n))
    assert res.converged and isinstance(res, FitResult)
    assert isinstance(res.model, GBM) and res.model.params() == dict(res.params)


def test_std_errors_match_numerical_inverse_hessian() -> None:
    # Independent check of the Fisher-information algebra: invert the numerical Hessian of
    # the log-likelihood in (mu, sigma) at the MLE.
    prices = TRUE.simulate(2000, seed=11)[:, 0]
    res = GBM.fit(prices, dt=DT)
    r = np.diff(np.log(prices))

    def ll(theta: np.ndarray) -> float:
        mu, sigma = theta
        return float(stats.norm.logpdf(r, (mu - sigma**2 / 2) * DT, sigma * math.sqrt(DT)).sum())

    x0 = np.array([res.params["mu"], res.params["sigma"]])
    h = np.array([1e-3, 1e-5])
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h[i], np.eye(2)[j] * h[j]
            hess[i, j] = (
                ll(x0 + ei + ej) - ll(x0 + ei - ej) - ll(x0 - ei + ej) + ll(x0 - ei - ej)
            ) / (4 * h[i] * h[j])
    se = np.sqrt(np.diag(np.linalg.inv(-hess)))
    assert res.std_err["mu"] == pytest.approx(se[0], rel=1e-3)
    assert res.std_err["sigma"] == pytest.approx(se[1], rel=1e-3)


def test_fit_rejects_bad_dt() -> None:
    prices = TRUE.simulate(100, seed=1)[:, 0]
    with pytest.raises(ValueError, match="dt must be a positive"):
        GBM.fit(prices, dt=0.0)


def test_simulate_shape_first_row_and_seed() -> None:
    a = TRUE.simulate(50, n_paths=7, s0=42.0, seed=5)
    assert a.shape == (51, 7) and a.dtype == np.float64
    assert np.all(a[0] == 42.0)
    assert np.all(a > 0)
    np.testing.assert_array_equal(a, TRUE.simulate(50, n_paths=7, s0=42.0, seed=5))
    b = TRUE.simulate(50, n_paths=7, s0=42.0, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, TRUE.simulate(50, n_paths=7, s0=42.0, seed=6))
    assert TRUE.simulate(0, n_paths=3).shape == (1, 3)
    per_path = TRUE.simulate(3, n_paths=2, s0=np.array([1.0, 2.0]), seed=1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(per_path[0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": -1}, "n_steps"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"n_steps": 3, "n_paths": 0}, "n_paths"),
        ({"n_steps": 3, "s0": -1.0}, "s0"),
        ({"n_steps": 3, "dt": -1.0}, "dt"),
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TRUE.simulate(**kwargs)  # type: ignore[arg-type]


def test_simulated_log_returns_have_the_model_distribution() -> None:
    # 200 x 500 = 1e5 log returns: the sample mean has sd sigma*sqrt(dt)/sqrt(1e5) and the
    # sample variance relative sd sqrt(2/1e5) = 0.45 %, so 5 sd bounds fail ~never by chance.
    paths = TRUE.simulate(500, n_paths=200, seed=7)
    r = np.diff(np.log(paths), axis=0).ravel()
    sd = TRUE.sigma * math.sqrt(DT)
    mean = (TRUE.mu - TRUE.sigma**2 / 2) * DT
    assert abs(r.mean() - mean) < 5 * sd / math.sqrt(r.size)
    assert abs(r.var() / sd**2 - 1) < 5 * math.sqrt(2 / r.size)
    # Kolmogorov-Smirnov against the exact normal law of a step.
    assert stats.kstest(r[:20000], "norm", args=(mean, sd)).pvalue > 1e-3


def test_stepper_reproduces_simulate_with_the_same_shocks() -> None:
    n_steps, n_paths = 30, 4
    paths = TRUE.simulate(n_steps, n_paths=n_paths, s0=50.0, seed=9)
    z = np.random.default_rng(9).standard_normal((n_steps, n_paths))
    st = TRUE.stepper(np.full(n_paths, 50.0), DT)
    assert isinstance(st, GBMStepper) and st.dt == DT
    for t in range(n_steps):
        out = st.step(z[t])
        np.testing.assert_allclose(out, paths[t + 1], rtol=1e-12)
    np.testing.assert_allclose(st.prices, paths[-1], rtol=1e-12)


def test_stepper_set_model_changes_dynamics_and_keeps_prices() -> None:
    st = GBM(0.0, 0.2).stepper(100.0, DT)
    assert st.prices.shape == (1,)
    st.step(np.array([0.5]))
    before = st.prices.copy()
    st.set_model(GBM(mu=1.0, sigma=0.4))
    assert st.model == GBM(1.0, 0.4)
    np.testing.assert_array_equal(st.prices, before)
    out = st.step(np.array([1.0]))
    expected = before * math.exp((1.0 - 0.08) * DT + 0.4 * math.sqrt(DT))
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        st.step(np.zeros(2))
    from quoteflow.models import MeanReversion

    with pytest.raises(TypeError, match="needs a GBM"):
        st.set_model(MeanReversion(1.0, 100.0, 0.2))


# ------------------------------------------------------------------ parameter recovery

#: The fixed seeds of the acceptance test.
SEEDS = range(20)
N = 5000


def _fits(seeds: range, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    est: dict[str, list[float]] = {"mu": [], "sigma": []}
    se: dict[str, list[float]] = {"mu": [], "sigma": []}
    for s in seeds:
        res = GBM.fit(TRUE.simulate(n, seed=s)[:, 0], dt=DT)
        for k in est:
            est[k].append(res.params[k])
            se[k].append(res.std_err[k])
    return {k: np.array(v) for k, v in est.items()}, {k: np.array(v) for k, v in se.items()}


def test_recovers_parameters_within_three_std_errors() -> None:
    # n = 5000 daily returns (~20 years): se(sigma) = sigma/sqrt(2n) = 1 % of sigma, while
    # se(mu) = sigma/sqrt(n dt) ~ 0.056 (a drift is never well identified; the test still
    # holds the estimate to 3 se). Each of the 40 checks fails with p = 0.27 % if the se are
    # right, so a failure here means biased estimates or wrong std errors.
    est, se = _fits(SEEDS, N)
    for k in ("mu", "sigma"):
        z = (est[k] - getattr(TRUE, k)) / se[k]
        assert np.all(np.abs(z) < 3), f"{k}: z-scores {np.round(z, 2)}"


@pytest.mark.slow
def test_confidence_intervals_cover_the_truth() -> None:
    # 200 seeds: the coverage of a correct 95 % CI is Binomial(200, 0.95)/200, sd 1.5 %, so
    # [90 %, 99 %] is more than 3 sd on the low side and ~2.6 sd on the high side.
    est, se = _fits(range(200), N)
    for k in ("mu", "sigma"):
        cover = np.mean(np.abs(est[k] - getattr(TRUE, k)) <= 1.959964 * se[k])
        assert 0.90 <= cover <= 0.99, f"{k}: coverage {cover:.3f}"
