"""Tail diagnostics of standardised residuals (FitResult.tails): against scipy and
statsmodels, the Hill estimator against its exact law on Pareto data, and in every fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from quoteflow.data import load
from quoteflow.errors import DataError
from quoteflow.models import GARCH, GBM, MeanReversion
from quoteflow.models.base import FitResult
from quoteflow.models.tails import MIN_TAIL_OBSERVATIONS, hill_k, tail_diagnostics
from tests.conftest import require_module

statsmodels_stattools = require_module("statsmodels.stats.stattools")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moments_and_jarque_bera_agree_with_scipy_and_statsmodels(seed: int) -> None:
    z = np.random.default_rng(seed).standard_t(5, size=3000)
    t = tail_diagnostics(z)
    assert t.nobs == 3000
    assert t.excess_kurtosis == pytest.approx(stats.kurtosis(z), rel=1e-12)
    assert t.skewness == pytest.approx(stats.skew(z), rel=1e-12)
    jb = stats.jarque_bera(z)
    assert t.jarque_bera == pytest.approx(jb.statistic, rel=1e-12)
    assert t.jarque_bera_pvalue == pytest.approx(jb.pvalue, rel=1e-9, abs=1e-300)
    sm_jb, sm_p, _, sm_kurt = statsmodels_stattools.jarque_bera(z)
    assert t.jarque_bera == pytest.approx(sm_jb, rel=1e-12)
    assert t.jarque_bera_pvalue == pytest.approx(sm_p, rel=1e-9, abs=1e-300)
    assert t.excess_kurtosis + 3.0 == pytest.approx(sm_kurt, rel=1e-12)


def test_hill_is_its_definition_with_k_floor_sqrt_n() -> None:
    z = np.random.default_rng(3).standard_normal(1000)
    t = tail_diagnostics(z)
    assert t.hill_k == hill_k(1000) == 31
    x = sorted(np.abs(z), reverse=True)
    h = sum(math.log(x[i]) for i in range(31)) / 31 - math.log(x[31])
    assert t.hill_tail_index == pytest.approx(1.0 / h, rel=1e-12)
    assert t.hill_se == pytest.approx(t.hill_tail_index / math.sqrt(31), rel=1e-15)


def test_hill_interval_covers_the_pareto_index_at_its_exact_rate() -> None:
    # For Pareto(alpha) data, alpha * k * H is exactly Gamma(k, 1) (Renyi representation
    # of exponential spacings), so the coverage of the Wald interval
    # alpha_hat (1 +- 1.96 / sqrt(k)) is P((1 - c) k <= G <= (1 + c) k), c = 1.96 / sqrt(k),
    # computable exactly. Over 400 seeds the count of covering intervals is
    # Binomial(400, p): we accept p +- 3.3 sd (a two-sided 0.1 % band, argued from the
    # binomial law, not tuned).
    alpha, n, seeds = 3.0, 2000, 400
    rng = np.random.default_rng(11)
    samples = rng.pareto(alpha, size=(seeds, n)) + 1.0
    k = hill_k(n)
    c = 1.96 / math.sqrt(k)
    p = float(stats.gamma.cdf((1 + c) * k, k) - stats.gamma.cdf((1 - c) * k, k))
    covered = 0
    for x in samples:
        t = tail_diagnostics(x)
        lo, hi = t.hill_tail_index - 1.96 * t.hill_se, t.hill_tail_index + 1.96 * t.hill_se
        covered += lo <= alpha <= hi
    sd = math.sqrt(seeds * p * (1 - p))
    assert abs(covered - seeds * p) <= 3.3 * sd, (covered, seeds * p)


def test_too_few_or_constant_residuals_are_refused() -> None:
    with pytest.raises(DataError, match="at least 16"):
        tail_diagnostics(np.arange(MIN_TAIL_OBSERVATIONS - 1, dtype=float))
    with pytest.raises(DataError, match="constant"):
        tail_diagnostics(np.ones(100))


def _fits() -> list[FitResult]:
    aapl = load("AAPL")["adj_close"]
    return [
        GARCH.fit(aapl),
        GARCH.fit(aapl, dist="skewt", o=1),
        GBM.fit(aapl),
        MeanReversion.fit(load("MSFT")["adj_close"]),
    ]


def test_every_fit_reports_tails_in_summary_html_and_dict() -> None:
    for res in _fits():
        t = res.tails
        assert t is not None, type(res.model).__name__
        assert t.nobs == np.isfinite(res.std_resid).sum()
        text = res.summary()
        assert "Hill tail index" in text and "Jarque-Bera" in text
        assert f"k = floor(sqrt(n)) = {t.hill_k}" in text
        assert "Jarque-Bera" in res._repr_html_()
        d = json.loads(json.dumps(res.to_dict()))
        assert d["tail_diagnostics"]["hill_k"] == t.hill_k
        assert d["tail_diagnostics"]["jarque_bera"] == pytest.approx(t.jarque_bera)


def test_daily_returns_under_normal_garch_are_fat_tailed() -> None:
    # The normal GARCH leaves fat tails in AAPL's residuals: normality is rejected at any
    # level and the tail index is finite and small (a normal law's Hill estimate with
    # k = 57 of 3268 is ~ 6-8).
    res = GARCH.fit(load("AAPL")["adj_close"])
    t = res.tails
    assert t is not None
    assert t.excess_kurtosis > 1.0
    assert t.jarque_bera_pvalue < 1e-10
    assert t.hill_tail_index < 6.0


def test_a_fit_without_residuals_has_no_tails() -> None:
    res = FitResult(model=GBM(0.0, 0.2), params={}, std_err={}, loglik=0.0, nobs=1)
    assert res.tails is None
    assert res.to_dict()["tail_diagnostics"] is None
    assert "Hill" not in res.summary()
