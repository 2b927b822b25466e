"""quoteflow.risk: VaR/ES of the innovation laws, the coverage and ES tests, the backtest."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.signal import lfilter

from quoteflow import data, risk
from quoteflow.errors import ConfigError, DataError, ParameterError
from quoteflow.models import GARCH, GBM
from quoteflow.models._garch_recursion import variance_reference
from quoteflow.models.base import PriceModel
from quoteflow.models.innovations import INNOVATIONS, StudentT

# ------------------------------------------------------------------ the published formulas

#: A fixed exceedance sequence of 250 days: isolated hits, a pair, a run of three, a hit on
#: the first and the last day (every transition count is non-zero).
HIT_DAYS = (0, 3, 4, 17, 60, 61, 62, 130, 200, 201, 249)
N_DAYS = 250


def _fixed_hits() -> np.ndarray:
    h = np.zeros(N_DAYS, dtype=bool)
    h[list(HIT_DAYS)] = True
    return h


def _kupiec_direct(hits: list[int], p: float) -> float:
    """Kupiec (1995), eq. for LR_POF, written out with plain logs (0 log 0 taken as 0)."""
    n = len(hits)
    x = sum(hits)

    def xlog(a: float, b: float) -> float:
        return 0.0 if a == 0 else a * math.log(b)

    restricted = xlog(n - x, 1 - p) + xlog(x, p)
    unrestricted = xlog(n - x, 1 - x / n) + xlog(x, x / n)
    return -2.0 * (restricted - unrestricted)


def _christoffersen_direct(hits: list[int], p: float) -> tuple[float, float]:
    """Christoffersen (1998), §3.2-3.3: LR_ind and LR_cc from the transition counts."""
    n = {(i, j): 0 for i in (0, 1) for j in (0, 1)}
    for a, b in itertools.pairwise(hits):
        n[(a, b)] += 1
    n00, n01, n10, n11 = n[(0, 0)], n[(0, 1)], n[(1, 0)], n[(1, 1)]
    pi01 = n01 / (n00 + n01)
    pi11 = n11 / (n10 + n11)
    pi2 = (n01 + n11) / (n00 + n01 + n10 + n11)
    log_l_pi1 = (
        n00 * math.log(1 - pi01)
        + n01 * math.log(pi01)
        + n10 * math.log(1 - pi11)
        + n11 * math.log(pi11)
    )
    log_l_pi2 = (n00 + n10) * math.log(1 - pi2) + (n01 + n11) * math.log(pi2)
    log_l_p = (n00 + n10) * math.log(1 - p) + (n01 + n11) * math.log(p)
    return -2.0 * (log_l_pi2 - log_l_pi1), -2.0 * (log_l_p - log_l_pi1)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_kupiec_and_christoffersen_match_the_published_formulas(alpha: float) -> None:
    hits = _fixed_hits()
    as_list = [int(v) for v in hits]
    uc = risk.kupiec(hits, alpha)
    ind, cc = risk.christoffersen(hits, alpha)
    assert uc.statistic == pytest.approx(_kupiec_direct(as_list, alpha), abs=1e-10)
    want_ind, want_cc = _christoffersen_direct(as_list, alpha)
    assert ind.statistic == pytest.approx(want_ind, abs=1e-10)
    assert cc.statistic == pytest.approx(want_cc, abs=1e-10)
    assert (uc.dof, ind.dof, cc.dof) == (1, 1, 2)
    assert uc.pvalue == pytest.approx(stats.chi2.sf(uc.statistic, 1), rel=1e-12)
    assert cc.pvalue == pytest.approx(stats.chi2.sf(cc.statistic, 2), rel=1e-12)
    # The paper's decomposition, conditioning on the first observation.
    assert cc.statistic == pytest.approx(
        risk.kupiec(hits[1:], alpha).statistic + ind.statistic, abs=1e-10
    )


def test_coverage_tests_vectorise_over_rows() -> None:
    rng = np.random.default_rng(3)
    hits = rng.random((5, 300)) < 0.05
    uc = risk.kupiec(hits, 0.05)
    ind, cc = risk.christoffersen(hits, 0.05)
    for i in range(5):
        assert uc.statistic[i] == pytest.approx(risk.kupiec(hits[i], 0.05).statistic, abs=1e-12)
        one_ind, one_cc = risk.christoffersen(hits[i], 0.05)
        assert ind.statistic[i] == pytest.approx(one_ind.statistic, abs=1e-12)
        assert cc.statistic[i] == pytest.approx(one_cc.statistic, abs=1e-12)


def test_zero_exceedances_have_documented_values() -> None:
    hits = np.zeros(500, dtype=bool)
    uc = risk.kupiec(hits, 0.01)
    ind, cc = risk.christoffersen(hits, 0.01)
    assert uc.statistic == pytest.approx(-2 * 500 * math.log(0.99), rel=1e-12)
    assert ind.statistic == 0.0 and ind.pvalue == 1.0
    assert cc.statistic == pytest.approx(-2 * 499 * math.log(0.99), rel=1e-12)


def test_all_exceedances_have_documented_values() -> None:
    hits = np.ones(40, dtype=bool)
    uc = risk.kupiec(hits, 0.05)
    ind, cc = risk.christoffersen(hits, 0.05)
    assert uc.statistic == pytest.approx(-2 * 40 * math.log(0.05), rel=1e-12)
    assert uc.pvalue < 1e-40
    assert ind.statistic == 0.0
    assert cc.statistic == pytest.approx(-2 * 39 * math.log(0.05), rel=1e-12)


def test_one_day_has_no_transition() -> None:
    ind, _ = risk.christoffersen([True], 0.05)
    assert ind.statistic == 0.0


@pytest.mark.parametrize(
    ("hits", "alpha", "error", "match"),
    [
        ([], 0.05, DataError, "at least one day"),
        ([0, 2, 1], 0.05, DataError, "0/1"),
        ([0, 1], 0.0, ConfigError, r"\(0, 0.5\)"),
        ([0, 1], 0.5, ConfigError, r"\(0, 0.5\)"),
        ([0, 1], "0.05", ConfigError, "number"),
    ],
)
def test_coverage_tests_reject_bad_input(
    hits: list, alpha: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        risk.kupiec(hits, alpha)  # type: ignore[arg-type]


# ------------------------------------------------------------------ VaR and ES of the laws


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.2])
def test_normal_var_es_closed_form(alpha: float) -> None:
    q, m = risk.innovation_var_es(INNOVATIONS["normal"], (), alpha)
    assert q == pytest.approx(stats.norm.ppf(alpha), rel=1e-12)
    want = stats.norm.expect(lambda x: x, ub=q, conditional=True)
    assert m == pytest.approx(want, rel=1e-8)


class _NumericT(StudentT):
    """The unit-variance t through the generic (quadrature) branch."""


@pytest.mark.parametrize("nu", [2.5, 4.0, 8.0, 50.0])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_student_t_var_es_closed_form(nu: float, alpha: float) -> None:
    q, m = risk.innovation_var_es(INNOVATIONS["t"], (nu,), alpha)
    s = math.sqrt((nu - 2) / nu)
    assert q == pytest.approx(s * stats.t.ppf(alpha, nu), rel=1e-12)
    want = s * stats.t.expect(lambda x: x, args=(nu,), ub=stats.t.ppf(alpha, nu), conditional=True)
    assert m == pytest.approx(want, rel=1e-7)
    # The generic branch (used for laws without a closed form) agrees.
    q2, m2 = risk.innovation_var_es(_NumericT(), (nu,), alpha)
    assert q2 == pytest.approx(q, rel=1e-9)
    assert m2 == pytest.approx(m, rel=1e-7)


# ------------------------------------------------------------------ the backtest


@pytest.fixture(scope="module")
def aapl() -> pd.Series:
    return data.resolve_prices("AAPL")


def test_garch_forecasts_are_the_fixed_parameter_filter(aapl: pd.Series) -> None:
    """One refit: every forecast is the variance recursion run on with the window's fit."""
    window = 800
    res = risk.backtest(aapl, "garch", window=window, refit_every=10**6, dist="t")
    assert len(res.refits) == 1
    fit = GARCH.fit(aapl.iloc[: window + 1], dist="t")
    m = fit.model
    e = m.scale * np.diff(np.log(aapl.to_numpy())) - m.mu
    s2 = variance_reference(m.omega, m.alpha, m.beta, e, fit.backcast)
    np.testing.assert_allclose(res.sd.to_numpy(), np.sqrt(s2[window:]) / m.scale, rtol=1e-10)
    np.testing.assert_allclose(res.mean.to_numpy(), m.mu / m.scale)
    q, tail = risk.innovation_var_es(m.innovation, m.shape, 0.01)
    np.testing.assert_allclose(res.var[0.01], -(m.mu / m.scale + res.sd * q), rtol=1e-12)
    np.testing.assert_allclose(res.es[0.01], -(m.mu / m.scale + res.sd * tail), rtol=1e-12)
    assert (res.es[0.01] > res.var[0.01]).all() and (res.var[0.01] > res.var[0.05]).all()
    assert res.returns.index[0] == aapl.index[window + 1]
    np.testing.assert_array_equal(res.hits[0.05], res.returns < -res.var[0.05])


def test_no_look_ahead(aapl: pd.Series) -> None:
    """Changing the last price changes no forecast (only the last realised return)."""
    prices = aapl.iloc[:1300].copy()
    a = risk.backtest(prices, "garch", window=1000, refit_every=50)
    prices.iloc[-1] *= 1.2
    b = risk.backtest(prices, "garch", window=1000, refit_every=50)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert a.returns.iloc[-1] != b.returns.iloc[-1]


def test_rolling_windows_and_warm_start(aapl: pd.Series) -> None:
    prices = aapl.iloc[:1400]
    warm = risk.backtest(prices, "garch", window=1000, refit_every=40)
    cold = risk.backtest(prices, "garch", window=1000, refit_every=40, warm_start=False)
    assert list(warm.refits["window"]) == [1000] * 10
    assert list(warm.refits["first_day"]) == list(prices.index[1001::40])
    # Same likelihood, so the same optimum whatever the start (to optimiser precision).
    for name in ("omega", "alpha", "beta"):
        np.testing.assert_allclose(warm.refits[name], cold.refits[name], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(warm.var[0.01], cold.var[0.01], rtol=1e-3)


def test_expanding_window_and_other_models(aapl: pd.Series) -> None:
    res = risk.backtest(aapl.iloc[:1200], GBM, window="expanding", min_window=500, refit_every=100)
    assert list(res.refits["window"]) == list(range(500, 1200, 100))
    fit = GBM.fit(aapl.iloc[:501])
    first = res.sd.iloc[0]
    assert first == pytest.approx(fit.params["sigma"] * math.sqrt(1 / 252), rel=1e-12)
    mr = risk.backtest(data.resolve_prices("MSFT").iloc[:800], "meanrev", window=500)
    # Mean reversion: the forecast mean pulls the log price back to log(theta).
    assert mr.mean.std() > 0


def test_table_and_summary(aapl: pd.Series) -> None:
    res = risk.backtest(aapl, "garch", window=1000, refit_every=100, es_simulations=300)
    table = res.table
    assert list(table.index) == [0.01, 0.05]
    assert set(table.columns) >= {"LR_uc", "p_uc", "LR_ind", "p_ind", "LR_cc", "p_cc", "Z2", "p_Z2"}
    row = table.loc[0.05]
    uc, _, cc = res.coverage(0.05)
    assert row["LR_uc"] == uc.statistic and row["p_cc"] == cc.pvalue
    assert row["exceedances"] == res.hits[0.05].sum()
    assert 0 < row["p_Z2"] <= 1
    assert "Kupiec" in res.summary() and "Acerbi" in res.summary()
    assert res.forecasts.shape == (len(res.returns), 3 + 3 * 2)


def test_plot_marks_the_exceedances(aapl: pd.Series) -> None:
    res = risk.backtest(aapl.iloc[:1300], "garch", window=1000, refit_every=100)
    fig = res.plot(0.05)
    marks = [
        r for r in fig.renderers if len(r.data_source.data.get("x", [])) == res.hits[0.05].sum()
    ]
    assert marks
    with pytest.raises(ConfigError, match="not backtested"):
        res.plot(0.1)


def test_z2_flags_underestimated_tails() -> None:
    """Normal forecasts of t(3) returns: the tail is heavier than forecast, Z2 < 0."""
    rng = np.random.default_rng(11)
    n = 2000
    r = rng.standard_t(3, n) * math.sqrt(1 / 3) * 0.01
    laws = risk.ForecastLaws(
        mean=np.zeros(n),
        sd=np.full(n, 0.01),
        law_of=np.zeros(n, dtype=np.intp),
        laws=((INNOVATIONS["normal"], ()),),
    )
    q, m = risk.innovation_var_es(INNOVATIONS["normal"], (), 0.01)
    z2, p = risk.acerbi_szekely_z2(r, np.full(n, -0.01 * q), np.full(n, -0.01 * m), 0.01, laws)
    assert z2 < 0 and p < 0.01


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 5000}, DataError, "too short"),
        ({"window": 3269}, DataError, "too short"),
        ({"window": 10}, ConfigError, "window must be an integer >= 30"),
        ({"window": "rolling"}, ConfigError, "'expanding'"),
        ({"window": "expanding", "min_window": 4000}, DataError, "first estimation window"),
        ({"refit_every": 0}, ConfigError, "refit_every"),
        ({"alpha": [0.01, 0.7]}, ConfigError, r"\(0, 0.5\)"),
        ({"alpha": []}, ConfigError, "at least one level"),
        ({"model": "nope"}, ConfigError, "unknown model"),
        ({"model": 3}, ConfigError, "model name"),
        ({"dist": "cauchy"}, ParameterError, "dist"),
    ],
)
def test_backtest_rejects_bad_input(aapl: pd.Series, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        risk.backtest(aapl, **kwargs)


def test_backtest_names_the_supported_models(aapl: pd.Series) -> None:
    class Unsupported(PriceModel):
        name = "unsupported"

    with pytest.raises(
        ConfigError, match="no one-step forecast for model Unsupported; supported: garch"
    ):
        risk.backtest(aapl, Unsupported)


def test_backtest_reports_refits_that_did_not_converge(aapl: pd.Series) -> None:
    with pytest.warns(RuntimeWarning, match="refits did not converge"):
        res = risk.backtest(aapl.iloc[:1100], "garch", window=1000, refit_every=50, max_iter=2)
    assert not res.refits["converged"].any()
    assert res.notes and "did not converge" in res.summary()


def test_backtest_too_short_series() -> None:
    with pytest.raises(DataError, match="too short"):
        risk.backtest([100.0, 101.0, 100.5], window=30)
    with pytest.raises(DataError, match="prices"):
        risk.backtest([100.0], window=30)


# ------------------------------------------------------------------ warm start of GARCH.fit


def test_garch_fit_start_reaches_the_same_optimum(aapl: pd.Series) -> None:
    a = GARCH.fit(aapl.iloc[:1001], dist="t")
    b = GARCH.fit(aapl.iloc[20:1021], dist="t")
    warm = GARCH.fit(aapl.iloc[20:1021], dist="t", start=a)
    from_map = GARCH.fit(aapl.iloc[20:1021], dist="t", start=dict(a.params))
    assert warm.params == from_map.params
    assert warm.loglik == pytest.approx(b.loglik, abs=1e-6)
    for name, value in b.params.items():
        assert warm.params[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
    # A normal fit has no nu: the missing start comes from arch's grid start.
    normal = GARCH.fit(aapl.iloc[:1001])
    mixed = GARCH.fit(aapl.iloc[20:1021], dist="t", start=normal)
    assert mixed.loglik == pytest.approx(b.loglik, abs=1e-6)


def test_garch_fit_start_on_the_bounds_still_converges(aapl: pd.Series) -> None:
    # A start on the box (alpha = 0, the persistence bound) is moved inside it first. (A
    # start far from the optimum, e.g. beta = 1 with omega = 0, can end in another local
    # optimum near integrated GARCH, as with any local optimiser: warm starts are for
    # neighbouring windows.)
    ref = GARCH.fit(aapl.iloc[:1001])
    start = {**ref.params, "alpha": 0.0, "beta": 1.0 - ref.params["alpha"]}
    fit = GARCH.fit(aapl.iloc[:1001], start=start)
    assert fit.converged and fit.loglik == pytest.approx(ref.loglik, abs=1e-5)


@pytest.mark.parametrize("start", [[0.1, 0.2], {"alpha": float("nan")}, "fit"])
def test_garch_fit_start_rejects_bad_values(aapl: pd.Series, start: object) -> None:
    with pytest.raises(ParameterError):
        GARCH.fit(aapl.iloc[:500], start=start)  # type: ignore[arg-type]


# ------------------------------------------------------------------ nominal rejection rates

#: Seeds (independent series) of the rejection-rate tests.
SEEDS = 400
#: Under H0 the number of rejections at level 5 % is Binomial(SEEDS, s), s the test's true
#: size, which is 5 % asymptotically (chi-square limit) and exactly 5 % for the Monte Carlo
#: Z2 p-value. A two-sided 99.9 % interval of Binomial(400, 0.05) is [8, 33] rejections
#: (2.0 %-8.25 %): a correct test falls outside it once in a thousand runs, while a test
#: whose size were 1.5 % or 10 % would fall outside most of the time (40 expected at 10 %).
LOW, HIGH = stats.binom.ppf(0.0005, SEEDS, 0.05), stats.binom.isf(0.0005, SEEDS, 0.05)
TRUE = GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9, nu=6.0, dist="t")


def _true_model_forecasts(n_days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (fractions) of SEEDS GARCH-t paths and their true conditional sd, ``(SEEDS, n)``."""
    prices = TRUE.simulate(n_days, n_paths=SEEDS, seed=seed)
    r = TRUE.scale * np.diff(np.log(prices), axis=0)
    e = r - TRUE.mu
    # sigma2[t] = omega + alpha e[t-1]**2 + beta sigma2[t-1], paths start at the
    # unconditional variance (as GARCH.simulate does).
    u = np.empty_like(e)
    u[0] = TRUE.unconditional_variance
    u[1:] = TRUE.omega + TRUE.alpha * e[:-1] ** 2
    s2 = lfilter([1.0], [1.0, -TRUE.beta], u, axis=0)
    return (r / TRUE.scale).T, (np.sqrt(s2) / TRUE.scale).T


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.025])
def test_coverage_tests_reject_at_the_nominal_rate_under_the_true_model(alpha: float) -> None:
    r, sd = _true_model_forecasts(1500, seed=2024)
    q, _ = risk.innovation_var_es(TRUE.innovation, TRUE.shape, alpha)
    var = -(TRUE.mu / TRUE.scale + sd * q)
    hits = r < -var
    assert abs(hits.mean() - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / hits.size)
    uc = risk.kupiec(hits, alpha)
    ind, cc = risk.christoffersen(hits, alpha)
    for test in (uc, ind, cc):
        rejections = int(np.sum(test.pvalue < 0.05))
        assert LOW <= rejections <= HIGH, (test.name, rejections)


@pytest.mark.slow
def test_z2_rejects_at_the_nominal_rate_under_the_true_model() -> None:
    alpha, n = 0.025, 1000
    r, sd = _true_model_forecasts(n, seed=77)
    q, m = risk.innovation_var_es(TRUE.innovation, TRUE.shape, alpha)
    mean = np.full(n, TRUE.mu / TRUE.scale)
    rejections = 0
    for i in range(SEEDS):
        laws = risk.ForecastLaws(
            mean=mean,
            sd=sd[i],
            law_of=np.zeros(n, dtype=np.intp),
            laws=((TRUE.innovation, TRUE.shape),),
        )
        # 199 simulations: p <= 0.05 exactly when the observed Z2 is among the lowest 10 of
        # 200 exchangeable values, probability 0.05 under H0.
        _, p = risk.acerbi_szekely_z2(
            r[i], -(mean + sd[i] * q), -(mean + sd[i] * m), alpha, laws, n_sim=199, seed=i
        )
        rejections += p <= 0.05
    assert LOW <= rejections <= HIGH, rejections


def test_risk_imports_only_models_and_errors_and_draws_lazily() -> None:
    """DESIGN.md layout: risk sits on models; bokeh is imported inside plot() only."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(risk.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in names if m.startswith("quoteflow")}
    assert all(m == "quoteflow.errors" or m.startswith("quoteflow.models") for m in ours), ours
    assert not {m for m in names if m.split(".")[0] in ("bokeh", "tornado", "matplotlib")}


@pytest.mark.slow
def test_refitted_backtest_hits_at_the_nominal_rate_on_average() -> None:
    """The whole pipeline (fit, filter, VaR) on GARCH-t data with the true model class.

    400 series, each fitted once on 1000 returns and forecast for 250 days at 5 %: 100,000
    forecasts. Estimation error is shared by the 250 days of a series, which inflates the
    variance of the pooled hit rate over the binomial ``0.05 * 0.95 / 100000`` (measured
    1.2-1.3 times, docs/risk.md); the band is 3.29 standard deviations (99.9 %) with a
    factor 1.5 on the variance, [4.74 %, 5.26 %]. A forecast that saw its own day's return
    (the VaR of day t + 1 used for day t) hits 4.3 % of the time on these series, outside
    the band; a one-day-stale VaR (5.25 %) is not caught here, the exact timing is pinned
    by test_garch_forecasts_are_the_fixed_parameter_filter and test_no_look_ahead.
    """
    series, window, days, alpha = 400, 1000, 250, 0.05
    paths = TRUE.simulate(window + days, n_paths=series, seed=99)
    hits = 0
    for i in range(series):
        res = risk.backtest(
            paths[:, i], "garch", window=window, refit_every=days, dist="t", alpha=alpha
        )
        hits += int(res.hits[alpha].sum())
    total = series * days
    half_width = 3.29 * math.sqrt(1.5 * alpha * (1 - alpha) / total)
    assert abs(hits / total - alpha) < half_width, hits / total
