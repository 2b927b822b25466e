"""DCC(1,1): the vectorised likelihood against a direct loop, the fit, bad input, recovery."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from quoteflow import data
from quoteflow.errors import DataError, ParameterError
from quoteflow.models import DCC, GARCH
from quoteflow.models._dcc_recursion import correlation_terms, qbar_of

QBAR3 = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]])


def direct_loglik(a: float, b: float, z: np.ndarray) -> tuple[float, np.ndarray]:
    """Engle (2002) eq. (26), written independently as a plain loop over t."""
    t_n, n = z.shape
    s = z.T @ z / t_n
    qbar = s / np.sqrt(np.outer(np.diag(s), np.diag(s)))
    q = qbar.copy()
    total = 0.0
    path = np.empty((t_n, n, n))
    for t in range(t_n):
        if t > 0:
            q = (1 - a - b) * qbar + a * np.outer(z[t - 1], z[t - 1]) + b * q
        d = 1.0 / np.sqrt(np.diag(q))
        r = q * np.outer(d, d)
        path[t] = r
        sign, logdet = np.linalg.slogdet(r)
        assert sign > 0
        total += -0.5 * (logdet + z[t] @ np.linalg.inv(r) @ z[t] - z[t] @ z[t])
    return total, path


def garch_prices(eps: np.ndarray, model: GARCH, s0: float = 100.0) -> np.ndarray:
    """Prices of GARCH(1,1) percent log returns driven by given innovations ``eps`` (T, ...)."""
    v = np.full(eps.shape[1:], model.unconditional_variance)
    r = np.empty_like(eps)
    for t in range(eps.shape[0]):
        e = np.sqrt(v) * eps[t]
        r[t] = model.mu + e
        v = model.omega + model.alpha * e * e + model.beta * v
    logp = np.concatenate([np.zeros((1, *eps.shape[1:])), np.cumsum(r / 100.0, axis=0)])
    out: np.ndarray = s0 * np.exp(logp)
    return out


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return data.load_all("adj_close")


@pytest.fixture(scope="module")
def shipped_fit(shipped: pd.DataFrame):  # type: ignore[no-untyped-def]
    return DCC.fit(shipped)


def test_vectorised_loglik_and_path_equal_the_direct_loop() -> None:
    z = DCC(0.05, 0.9, QBAR3, ("A", "B", "C")).simulate_shocks(500, seed=3)[0][:, 0, :]
    for a, b in ((0.05, 0.9), (0.0, 0.0), (0.2, 0.75), (0.01, 0.98)):
        terms = correlation_terms(a, b, z, qbar_of(z))
        want, path = direct_loglik(a, b, z)
        # Same arithmetic up to summation order: 1e-10 relative is ~1e5 ulps of a sum of
        # 500 terms, far above reordering error and far below any formula mistake.
        assert math.isclose(float(terms.ll.sum()), want, rel_tol=1e-10)
        np.testing.assert_allclose(terms.r, path, rtol=1e-10, atol=1e-12)


def test_analytic_scores_equal_numerical_derivatives_of_the_loglik() -> None:
    z = DCC(0.05, 0.9, QBAR3, ("A", "B", "C")).simulate_shocks(400, seed=5)[0][:, 0, :]
    qbar = qbar_of(z)
    x = np.array([0.04, 0.91])
    got = correlation_terms(x[0], x[1], z, qbar, scores=True).scores
    assert got is not None
    for k in range(2):
        h = np.zeros(2)
        h[k] = 1e-6
        up = correlation_terms(*(x + h), z, qbar).ll
        down = correlation_terms(*(x - h), z, qbar).ll
        # central differences: error O(h^2) ~ 1e-12 per term, plus rounding 1e-16/1e-6
        np.testing.assert_allclose(got[:, k], (up - down) / 2e-6, rtol=1e-5, atol=1e-8)


def test_fit_on_shipped_data_is_the_maximum_a_brute_force_optimiser_finds(shipped_fit) -> None:  # type: ignore[no-untyped-def]
    # arch and statsmodels have no DCC; Nelder-Mead on the direct loop is the independent check.
    z = shipped_fit.std_resid
    for s, f in shipped_fit.univariate.items():
        np.testing.assert_array_equal(z[:, list(shipped_fit.symbols).index(s)], f.std_resid)

    def negll(x: np.ndarray) -> float:
        a, b = x
        if a < 0 or b < 0 or a + b >= 1:
            return 1e10
        return -direct_loglik(a, b, z)[0]

    brute = optimize.minimize(
        negll, [0.05, 0.85], method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9}
    )
    a, b = shipped_fit.params["a"], shipped_fit.params["b"]
    assert math.isclose(-brute.fun, shipped_fit.loglik_correlation, rel_tol=1e-9)
    assert -brute.fun <= shipped_fit.loglik_correlation + 1e-6
    # a flat likelihood in (a, b): agreement to 1e-3 is ~1/20 of a standard error
    assert abs(brute.x[0] - a) < 1e-3 and abs(brute.x[1] - b) < 1e-2
    total = sum(f.loglik for f in shipped_fit.univariate.values())
    assert math.isclose(shipped_fit.loglik, total + shipped_fit.loglik_correlation, rel_tol=1e-12)
    assert shipped_fit.correlation.shape == (z.shape[0], 4, 4)
    assert shipped_fit.converged


def test_univariate_fits_are_the_garch_fits_with_dist_passed_on(shipped: pd.DataFrame) -> None:
    fit = DCC.fit(shipped[["AAPL", "MSFT"]], dist="t")
    for sym in ("AAPL", "MSFT"):
        alone = GARCH.fit(shipped[sym], dist="t")
        assert fit.univariate[sym].params == alone.params
    assert "a" in fit.summary() and fit.to_dict()["params"] == dict(fit.params)
    lo, hi = fit.conf_int()["b"]
    assert lo < fit.params["b"] < hi
    frame = fit.correlation_frame()
    assert list(frame.columns) == ["AAPL/MSFT"]
    assert frame.index[0] == shipped.index[1] and len(frame) == fit.nobs
    np.testing.assert_allclose(frame["AAPL/MSFT"], fit.pair_correlation("MSFT", "AAPL"), rtol=1e-15)
    with pytest.raises(DataError, match="not a symbol"):
        fit.pair_correlation("AAPL", "IBM")


def test_two_step_errors_differ_from_the_naive_second_step_only(shipped_fit) -> None:  # type: ignore[no-untyped-def]
    naive = shipped_fit.extra["std_err_naive"]
    for k in ("a", "b"):
        assert shipped_fit.std_err[k] > 0 and naive[k] > 0
        assert shipped_fit.std_err[k] != naive[k]


def test_bad_input_is_a_clear_data_error(shipped: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="at least 2 symbols"):
        DCC.fit(shipped[["AAPL"]])
    with pytest.raises(DataError, match="misaligned"):
        DCC.fit({"AAPL": shipped["AAPL"], "MSFT": shipped["MSFT"].iloc[5:]})
    nan = shipped.copy()
    nan.iloc[7, 1] = np.nan
    with pytest.raises(DataError, match=r"'GOOG'.*NaN at index 7"):
        DCC.fit(nan)
    with pytest.raises(DataError, match="DataFrame"):
        DCC.fit(shipped.to_numpy())
    with pytest.raises(ParameterError, match="univariate"):
        DCC.fit(shipped, univariate="egarch")
    with pytest.raises(ParameterError) as exc:
        DCC(0.5, 0.6, QBAR3, ("A", "B", "C"))
    assert exc.value.param == "b"
    with pytest.raises(ParameterError, match="positive definite"):
        DCC(0.05, 0.9, [[1, 1, 0], [1, 1, 0], [0, 0, 1]], ("A", "B", "C"))


def test_tracker_follows_the_recursion_and_step_mapping() -> None:
    model = DCC(0.05, 0.9, QBAR3, ("A", "B", "C"))
    tracker = model.tracker()
    z = np.array([1.0, -0.5, 2.0])
    tracker.update(z)
    q = 0.05 * QBAR3 + 0.05 * np.outer(z, z) + 0.9 * QBAR3
    d = 1 / np.sqrt(np.diag(q))
    np.testing.assert_allclose(tracker.correlation, q * np.outer(d, d), rtol=1e-14)
    a_h, b_h = model.step_coefficients(model.dt_fit / 4)
    assert math.isclose(a_h + b_h, 0.95**0.25) and math.isclose(a_h, 0.05 * 0.5)


@pytest.mark.slow
def test_95_percent_intervals_cover_the_true_a_and_b() -> None:
    """Coverage over 200 seeds of 3 symbols x 2000 steps, DCC-GARCH(1,1) with a=0.05, b=0.9.

    With a correct interval, each of the 200 seeds covers with probability 0.95, so the
    number covering is Binomial(200, 0.95): mean 190, sd 3.1. The acceptance band 90-99 %
    (180-198 of 200) is about [-3.2, +2.6] sd: a correct estimator lands outside it with
    probability 0.16 % (binomial cdf: 0.12 % below, 0.04 % above), plus whatever the
    small finite-sample bias of QML at T=2000 adds. One simulation (fixed seed, so the
    test is deterministic) of which both parameters must land in the band. Measured:
    191 (a) and 189 (b); the naive second-step-only errors give 188 and 187.
    """
    n_seeds, n_steps = 200, 2000
    truth = DCC(0.05, 0.9, QBAR3, ("A", "B", "C"))
    z, _ = truth.simulate_shocks(n_steps, n_paths=n_seeds, seed=20261202)
    garch = GARCH(mu=0.05, omega=0.05, alpha=0.08, beta=0.9)
    prices = garch_prices(z, garch)  # (n_steps + 1, seeds, 3), vectorised over seeds
    covered = {"a": 0, "b": 0}
    for k in range(n_seeds):
        fit = DCC.fit(pd.DataFrame(prices[:, k, :], columns=["A", "B", "C"]))
        for name, value in (("a", 0.05), ("b", 0.9)):
            lo, hi = fit.conf_int()[name]
            covered[name] += lo <= value <= hi
    outside = stats.binom.cdf(179, n_seeds, 0.95) + stats.binom.sf(198, n_seeds, 0.95)
    assert outside < 0.002  # the band's false-alarm rate, as argued above
    for name, count in covered.items():
        assert 180 <= count <= 198, (name, count)


@pytest.mark.parametrize(("dist", "o"), [("t", 0), ("skewt", 1)])
def test_adjoint_cross_derivative_equals_finite_differences_of_the_scores(  # type: ignore[no-untyped-def]
    shipped, dist: str, o: int
) -> None:
    """H21 by the adjoint (four passes) vs re-filtering z for each first-step parameter;
    with GJR first steps too (``o=1`` is passed on, and ``gamma`` is a first-step
    parameter of the sandwich)."""
    from quoteflow.models.dcc import _first_step, _mean_score, cross_derivative
    from quoteflow.models.garch import _loglik_terms

    fit = DCC.fit(shipped[["AAPL", "IBM", "MSFT"]], dist=dist, o=o)
    assert all(("gamma" in f.params) == bool(o) for f in fit.univariate.values())
    z, x = fit.std_resid, np.array([fit.params["a"], fit.params["b"]])
    got = cross_derivative(fit.univariate, fit.symbols, z, x)
    for i, name in enumerate(fit.symbols):
        spec, theta = _first_step(fit.univariate[name])
        want = np.empty((2, theta.size))
        step = 1e-6 * np.maximum(np.abs(theta), 0.1)
        for k in range(theta.size):
            pair = []
            for sign in (1.0, -1.0):
                y = theta.copy()
                y[k] += sign * step[k]
                zk = z.copy()
                zk[:, i] = (spec.returns - spec.unpack(y)[0]) / np.sqrt(
                    _loglik_terms(spec, y).sigma2
                )
                pair.append(_mean_score(zk, qbar_of(zk), x))
            want[:, k] = (pair[0] - pair[1]) / (2 * step[k])
        # both are differences of smooth functions at steps ~1e-6: agreement to 1e-5 of
        # the largest entry is what the truncation and rounding errors allow
        scale = np.abs(want).max()
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-5 * scale)


def test_a_first_step_warning_names_its_symbol(shipped: pd.DataFrame) -> None:
    import warnings

    from quoteflow.models import GARCHConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DCC.fit(shipped[["AAPL", "MSFT"]], max_iter=1)
    first_step = [str(w.message) for w in caught if w.category is GARCHConvergenceWarning]
    assert [m.split(":")[0] for m in first_step] == ["AAPL", "MSFT"]
    assert all("GARCH fit did not converge" in m for m in first_step)
