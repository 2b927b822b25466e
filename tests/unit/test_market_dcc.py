"""A market driven by DCC correlations: Market.from_fit, correlation = "dcc", describe()."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quoteflow import data
from quoteflow.errors import ConfigError
from quoteflow.market import Market
from quoteflow.models import DCC, GARCH, GBM

DAILY_SPEED = (1 / 252) / 0.25  # tick_interval 0.25 s -> dt = one DCC period


def gbm_dcc_market(a: float, b: float, rho: float, seed: int) -> Market:
    model = DCC(a, b, [[1.0, rho], [rho, 1.0]], ("X", "Y"))
    # Low volatility keeps prices far from the quote precision over a long run, so the
    # rounding of quotes adds no visible noise to the returns.
    symbols = {"X": GBM(mu=0.0, sigma=0.05), "Y": GBM(mu=0.0, sigma=0.05)}
    return Market(symbols, correlation=model, seed=seed, speed=DAILY_SPEED, bar_interval=None)


def window_statistic(returns: np.ndarray, path: np.ndarray, w: int) -> tuple[float, np.ndarray]:
    """Correlation over windows of ``w`` steps between realised and engine correlation."""
    r = returns.reshape(-1, w, 2)
    realised = np.array([np.corrcoef(win.T)[0, 1] for win in r])
    truth = path.reshape(-1, w).mean(axis=1)
    return float(np.corrcoef(realised, truth)[0, 1]), truth


def test_realised_rolling_correlation_follows_the_engine_path() -> None:
    """Windowed realised correlation of the stream vs the engine's R_t over the same window.

    With GBM marginals each log return is ``vol * z`` exactly, so the realised correlation
    of window ``k`` (``w = 50`` steps, 800 windows) estimates the mean ``m_k`` of the
    engine's ``R_t`` over it. The statistic is the correlation, over windows, of the two.

    Its expected value: if the sampling error of a window (variance ~ ``(1 - m^2)^2 / w``,
    normal theory) were independent of ``m_k`` it would be ``c0 = sqrt(S / (S + N))``,
    ``S`` the variance of ``m_k`` and ``N`` the mean sampling variance. In DCC it is not:
    ``R_t`` is driven by the shocks just drawn, so a window whose shocks happen to be more
    correlated also raises its own ``m_k``, and the statistic is above ``c0``. So the test
    takes the reference from the model itself: the same statistic on 20 independent paths
    of :meth:`DCC.simulate_shocks` (which does not use the market), and asks the market's
    to be within 4 of their standard deviations of their mean (the sd estimated from 20
    paths is within ~30 % of the true one, so 4 estimated sd is at least ~3 true ones),
    and above ``c0`` minus 4 sampling sd ``(1 - c0^2) / sqrt(800)`` (Fisher 1921).
    """
    steps, w, a, b, rho = 40_000, 50, 0.06, 0.92, 0.3
    m = gbm_dcc_market(a, b, rho, seed=7)
    path = np.empty(steps)
    prices = np.empty((steps + 1, 2))
    prices[0] = m.step_arrays(now=0.0).price  # one tick to get a first quote
    for t in range(steps):
        path[t] = m.correlation_matrix[0, 1]  # R_t that the next tick's shocks are drawn with
        prices[t + 1] = m.step_arrays(now=float(t + 1)).price
    observed, truth = window_statistic(np.diff(np.log(prices), axis=0), path, w)

    model = DCC(a, b, [[1.0, rho], [rho, 1.0]], ("X", "Y"))
    z, r = model.simulate_shocks(steps, n_paths=20, seed=99)
    reference = np.array(
        [window_statistic(z[:, p], r[:, p, 0, 1], w)[0] for p in range(z.shape[1])]
    )
    assert abs(observed - reference.mean()) < 4 * reference.std(ddof=1), (observed, reference)

    signal, noise = truth.var(), float(np.mean((1 - truth**2) ** 2)) / w
    c0 = math.sqrt(signal / (signal + noise))
    assert observed > c0 - 4 * (1 - c0**2) / math.sqrt(truth.size), (observed, c0)
    assert observed > 0.5 and np.ptp(path) > 0.5  # the path really moves


def test_from_fit_of_a_dcc_fit_streams_the_fitted_symbols() -> None:
    frame = data.load_all("adj_close")[["AAPL", "MSFT", "IBM"]]
    fit = DCC.fit(frame)
    m = Market.from_fit(fit, seed=3, speed=DAILY_SPEED)
    assert m.symbols == ["AAPL", "MSFT", "IBM"]
    assert m.dcc == fit.model
    assert m.describe()["MSFT"]["price"] == round(float(frame["MSFT"].iloc[-1]), 2)
    first = m.correlation_matrix.copy()
    np.testing.assert_allclose(first, fit.model.qbar_matrix, rtol=1e-12)
    for _ in range(3):
        m.step()
    assert not np.allclose(m.correlation_matrix, first)
    d = m.describe()
    assert d["AAPL"]["correlation_model"] == "dcc"
    assert d["AAPL"]["correlation"]["MSFT"] == pytest.approx(m.correlation_matrix[0, 1])
    assert d["AAPL"]["correlation"]["AAPL"] == pytest.approx(1.0)


def test_from_fit_of_a_univariate_fit() -> None:
    fit = GARCH.fit(data.load("AAPL")["adj_close"])
    m = Market.from_fit(fit, symbol="AAPL", s0=50.0, seed=1)
    assert m.symbols == ["AAPL"] and m.model("AAPL") == fit.model
    assert "correlation" not in m.describe()["AAPL"]
    with pytest.raises(ConfigError, match="FitResult"):
        Market.from_fit("not a fit")  # type: ignore[arg-type]


def test_same_seed_same_dcc_stream() -> None:
    a, b = gbm_dcc_market(0.05, 0.9, 0.2, 11), gbm_dcc_market(0.05, 0.9, 0.2, 11)
    for t in range(50):
        np.testing.assert_array_equal(a.step_arrays(now=t).price, b.step_arrays(now=t).price)


def test_dcc_over_a_subset_and_unknown_symbols() -> None:
    model = DCC(0.05, 0.9, [[1.0, 0.5], [0.5, 1.0]], ("X", "Y"))
    m = Market(
        {"X": GBM(mu=0.0, sigma=0.2), "Y": GBM(mu=0.0, sigma=0.2), "Z": GBM(mu=0.0, sigma=0.2)},
        correlation=model,
        seed=1,
    )
    m.step()
    assert "correlation" not in m.describe()["Z"]
    assert m.correlation_matrix[2, 0] == 0.0
    with pytest.raises(ConfigError, match="unknown symbol 'Y'"):
        Market({"X": GBM(mu=0.0, sigma=0.2), "Q": GBM(mu=0.0, sigma=0.2)}, correlation=model)


def test_toml_dcc_given_and_fitted(tmp_path: Path) -> None:
    given = tmp_path / "given.toml"
    given.write_text(
        '[symbols.X]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
        '[symbols.Y]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
        '[correlation]\nmodel = "dcc"\na = 0.03\nb = 0.95\nqbar = [[1.0, 0.4], [0.4, 1.0]]\n'
    )
    m = Market.from_toml(given)
    assert m.dcc is not None and (m.dcc.a, m.dcc.b) == (0.03, 0.95)
    assert m.dcc.qbar == ((1.0, 0.4), (0.4, 1.0))

    fitted = tmp_path / "fitted.toml"
    fitted.write_text(
        'correlation = "dcc"\n[symbols.AAPL]\nmodel = "garch"\nfit = "AAPL"\n'
        '[symbols.IBM]\nmodel = "gbm"\nfit = "IBM"\n'
    )
    m = Market.from_toml(fitted)
    both = {t: data.load(t)["adj_close"] for t in ("AAPL", "IBM")}
    want = DCC.fit(pd.DataFrame(both).dropna()).model  # each ticker's history, common dates
    assert m.dcc is not None
    assert m.dcc.a == pytest.approx(want.a) and m.dcc.b == pytest.approx(want.b)

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[symbols.X]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
        '[symbols.Y]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
        '[correlation]\nmodel = "dcc"\na = 0.5\nb = 0.6\nqbar = [[1.0, 0.4], [0.4, 1.0]]\n'
    )
    with pytest.raises(ConfigError, match=r"bad.toml: correlation.b: .*a \+ b must be < 1"):
        Market.from_toml(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text(bad.read_text().replace("a = 0.5", "alpha = 0.5"))
    with pytest.raises(ConfigError, match=r"correlation\.alpha: unknown key"):
        Market.from_toml(typo)
    nodata = tmp_path / "nodata.toml"
    nodata.write_text(
        'correlation = "dcc"\n[symbols.X]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
        '[symbols.Y]\nmodel = "gbm"\nparams = {mu = 0.0, sigma = 0.2}\n'
    )
    with pytest.raises(ConfigError, match="neither a shipped ticker"):
        Market.from_toml(nodata)


def test_the_shipped_dcc_example_streams_moving_correlations() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "dcc.toml"
    m = Market.from_toml(path)
    assert m.dcc is not None and m.dcc.symbols == ("AAPL", "MSFT", "IBM", "GOOG")
    assert m.tick_interval * m.speed == pytest.approx(m.dcc.dt_fit, rel=1e-12)
    before = m.correlation_matrix.copy()
    m.step()
    assert not np.allclose(m.correlation_matrix, before)
