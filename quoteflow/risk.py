"""Rolling one-step Value-at-Risk and Expected Shortfall backtests of the price models.

:func:`backtest` re-estimates a model on a rolling (or expanding) window of daily prices
every ``refit_every`` days, forecasts the distribution of the next day's log return, and
scores the forecasts with the tests a risk report carries:

- Kupiec (1995) proportion of failures, ``LR_uc`` (:func:`kupiec`);
- Christoffersen (1998) independence ``LR_ind`` and conditional coverage ``LR_cc``
  (:func:`christoffersen`);
- Acerbi & Székely (2014) ``Z2`` test of the Expected Shortfall, with its p-value by
  simulation of the returns under the forecast distributions (:func:`acerbi_szekely_z2`).

Conventions. Returns are log returns ``r_t = log S_t - log S_{t-1}`` as fractions. VaR and
ES at level ``alpha`` are *losses*, positive numbers: ``VaR_t = -q_alpha(r_t | F_{t-1})``
and ``ES_t = -E[r_t | r_t <= -VaR_t, F_{t-1}]``. Day ``t`` is an exceedance (a "hit") when
``r_t < -VaR_t``. The forecast of day ``t`` uses prices up to day ``t - 1`` only.

Between refits the parameters are held fixed and the model's state is filtered forward on
the realised returns (for GARCH the variance recursion, for mean reversion the log price),
so every day gets a true one-step-ahead forecast. Refits of models that take a ``start``
(GARCH) warm-start from the previous window's estimates.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import integrate, special, stats
from scipy.signal import lfilter

from quoteflow.errors import ConfigError, DataError
from quoteflow.models.base import MIN_OBSERVATIONS, FitResult, FloatArray, PriceModel
from quoteflow.models.base import validate_prices as _validate_prices
from quoteflow.models.garch import GARCH
from quoteflow.models.gbm import GBM
from quoteflow.models.innovations import INNOVATIONS, Innovation, Normal, StudentT
from quoteflow.models.meanrev import MeanReversion, _ou_discretisation
from quoteflow.models.registry import MODELS, model_class

__all__ = [
    "ES_TEST",
    "BacktestResult",
    "CoverageTest",
    "ForecastLaws",
    "acerbi_szekely_z2",
    "backtest",
    "christoffersen",
    "innovation_var_es",
    "kupiec",
]

#: The ES backtest this module runs, as reported in tables and docs.
ES_TEST = "Acerbi-Szekely Z2, p-value by simulation under the forecast distributions"

#: Callback of :func:`backtest`: ``progress(refits_done, refits_total)``.
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- VaR and ES of the laws


def innovation_var_es(
    innovation: Innovation, shape: Sequence[float], alpha: float
) -> tuple[float, float]:
    """Lower ``alpha``-quantile and lower-tail mean of a unit-variance innovation law.

    Returns ``(q, m)`` with ``P(eps <= q) = alpha`` and ``m = E[eps | eps <= q]`` (both
    negative for ``alpha < 1/2``). A return ``r = mean + sd * eps`` then has
    ``VaR = -(mean + sd q)`` and ``ES = -(mean + sd m)``.

    Closed forms (McNeil, Frey & Embrechts 2015, *Quantitative Risk Management*, rev. ed.,
    §2.3, the ES of the normal and of the Student t laws):

    - normal: ``q = Phi^-1(alpha)``, ``m = -phi(q) / alpha``;
    - Student t with ``nu > 2`` scaled to unit variance, ``eps = s T``,
      ``s = sqrt((nu - 2) / nu)``: with ``t = F_nu^-1(alpha)``,
      ``q = s t`` and ``m = -s f_nu(t) (nu + t**2) / ((nu - 1) alpha)``.

    Any other law (skewed t, ...) is integrated numerically through its Gaussian-copula map
    ``F^-1(Phi(z))`` (:meth:`Innovation.from_normal`):
    ``q = F^-1(alpha)`` and ``m = (1/alpha) int_{-inf}^{Phi^-1(alpha)} F^-1(Phi(z)) phi(z) dz``
    (the lower-tail mean as an integral of the quantile function, Acerbi & Tasche 2002).
    """
    a = float(alpha)
    if isinstance(innovation, Normal):
        q = float(special.ndtri(a))
        return q, -float(stats.norm.pdf(q)) / a
    if isinstance(innovation, StudentT):
        (nu,) = shape
        s = math.sqrt((nu - 2.0) / nu)
        t = float(stats.t.ppf(a, nu))
        m = -float(stats.t.pdf(t, nu)) * (nu + t * t) / ((nu - 1.0) * a)
        return s * t, s * m
    z_a = float(special.ndtri(a))

    def quantile(z: float) -> float:
        return float(innovation.from_normal(shape, np.array([z]))[0])

    tail, _ = integrate.quad(lambda z: quantile(z) * math.exp(-0.5 * z * z), -np.inf, z_a)
    return quantile(z_a), tail / (math.sqrt(2.0 * math.pi) * a)


# ---------------------------------------------------------------- coverage tests


@dataclass(frozen=True)
class CoverageTest:
    """A likelihood-ratio test: statistic, chi-square degrees of freedom and p-value.

    Arrays when the hits had leading axes (one test per row).
    """

    name: str
    statistic: Any
    dof: int
    pvalue: Any


def _hits(hits: Any) -> np.ndarray:
    arr = np.asarray(hits)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise DataError("exceedances: need at least one day, got none")
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise DataError("exceedances must be 0/1 or booleans")
        arr = arr.astype(bool)
    return arr


def _alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating):
        raise ConfigError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
    a = float(alpha)
    if not 0.0 < a < 0.5:
        raise ConfigError(f"alpha must be in (0, 0.5) (a tail probability), got {alpha!r}")
    return a


def _bernoulli_ll(n0: Any, n1: Any, p: Any) -> Any:
    """``n0 log(1 - p) + n1 log p`` with ``0 log 0 = 0`` (xlogy)."""
    return special.xlogy(n0, 1.0 - p) + special.xlogy(n1, p)


def _ratio(num: Any, den: Any) -> Any:
    """``num / den`` with 0 where ``den == 0`` (then ``num == 0`` too: the term drops out)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _lr(restricted: Any, unrestricted: Any) -> Any:
    # The unrestricted MLE can only do better; rounding can leave -1e-13.
    return np.maximum(-2.0 * (restricted - unrestricted), 0.0)


def kupiec(hits: Any, alpha: float) -> CoverageTest:
    """Kupiec (1995) proportion-of-failures test of the exceedance rate.

    With ``n`` days and ``x`` exceedances,
    ``LR_uc = -2 log[(1 - alpha)**(n - x) alpha**x] + 2 log[(1 - x/n)**(n - x) (x/n)**x]``,
    asymptotically chi-square(1) under ``P(hit) = alpha``. ``0 log 0 = 0``: no exceedance
    gives ``LR_uc = -2 n log(1 - alpha)``, all exceedances ``-2 n log(alpha)``.

    Parameters
    ----------
    hits
        Exceedance indicators (booleans or 0/1), shape ``(..., n)``; one test per row.
    alpha
        The VaR level, in ``(0, 0.5)``.

    References
    ----------
    Kupiec, P. H. (1995), "Techniques for verifying the accuracy of risk measurement
    models", *Journal of Derivatives* 3(2), 73-84.
    """
    a = _alpha(alpha)
    h = _hits(hits)
    n = h.shape[-1]
    x = h.sum(axis=-1)
    stat = _lr(_bernoulli_ll(n - x, x, a), _bernoulli_ll(n - x, x, x / n))
    return CoverageTest("Kupiec LR_uc", _scalar(stat), 1, _scalar(stats.chi2.sf(stat, 1)))


def _transitions(h: np.ndarray) -> tuple[Any, Any, Any, Any]:
    prev, nxt = h[..., :-1], h[..., 1:]
    n01 = np.sum(~prev & nxt, axis=-1)
    n11 = np.sum(prev & nxt, axis=-1)
    n10 = np.sum(prev & ~nxt, axis=-1)
    n00 = np.sum(~prev & ~nxt, axis=-1)
    return n00, n01, n10, n11


def christoffersen(hits: Any, alpha: float) -> tuple[CoverageTest, CoverageTest]:
    """Christoffersen (1998) tests of independence and of conditional coverage.

    With ``n_ij`` the number of days in state ``j`` after a day in state ``i`` (1 = hit),
    ``pi01 = n01 / (n00 + n01)``, ``pi11 = n11 / (n10 + n11)`` and
    ``pi = (n01 + n11) / (n00 + n01 + n10 + n11)``, the first-order Markov likelihood
    ``L(pi01, pi11) = (1-pi01)**n00 pi01**n01 (1-pi11)**n10 pi11**n11`` gives

    - ``LR_ind = -2 log[L(pi, pi) / L(pi01, pi11)]``, chi-square(1);
    - ``LR_cc = -2 log[L(alpha, alpha) / L(pi01, pi11)]``, chi-square(2).

    Both condition on the first observation, as in the paper, so
    ``LR_cc = LR_uc(hits[1:]) + LR_ind`` exactly (Christoffersen 1998, §3.3). With
    ``0 log 0 = 0``, a run with no exceedance after an exceedance (or none at all) has
    ``LR_ind = 0``; fewer than two days give no transition and ``LR_ind = 0``.

    Returns
    -------
    (independence, conditional_coverage)

    References
    ----------
    Christoffersen, P. F. (1998), "Evaluating interval forecasts", *International Economic
    Review* 39(4), 841-862.
    """
    a = _alpha(alpha)
    h = _hits(hits)
    n00, n01, n10, n11 = _transitions(h)
    pi01 = _ratio(n01, n00 + n01)
    pi11 = _ratio(n11, n10 + n11)
    pi = _ratio(n01 + n11, n00 + n01 + n10 + n11)
    markov = _bernoulli_ll(n00, n01, pi01) + _bernoulli_ll(n10, n11, pi11)
    ind = _lr(_bernoulli_ll(n00 + n10, n01 + n11, pi), markov)
    cc = _lr(_bernoulli_ll(n00 + n10, n01 + n11, a), markov)
    return (
        CoverageTest("Christoffersen LR_ind", _scalar(ind), 1, _scalar(stats.chi2.sf(ind, 1))),
        CoverageTest("Christoffersen LR_cc", _scalar(cc), 2, _scalar(stats.chi2.sf(cc, 2))),
    )


def _scalar(x: Any) -> Any:
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


# ---------------------------------------------------------------- ES backtest


@dataclass(frozen=True)
class ForecastLaws:
    """The forecast distributions of the days: ``r_t = mean_t + sd_t eps_t``.

    ``eps_t`` follows ``laws[law_of[t]]``, an ``(innovation, shape)`` pair (one per refit:
    the shape parameters change when the model is re-estimated).
    """

    mean: FloatArray
    sd: FloatArray
    law_of: np.ndarray
    laws: tuple[tuple[Innovation, tuple[float, ...]], ...]

    def tail_quantile(self, days: np.ndarray, u: FloatArray) -> FloatArray:
        """``F_t^-1(u)`` of the returns of ``days`` (``u`` in the lower tail)."""
        eps = np.empty_like(u)
        which = self.law_of[days]
        z = special.ndtri(u)
        for k in np.unique(which):
            sel = which == k
            innovation, shape = self.laws[int(k)]
            eps[sel] = innovation.from_normal(shape, z[sel])
        out: FloatArray = self.mean[days] + self.sd[days] * eps
        return out


def _z2(returns: FloatArray, hits: np.ndarray, es: FloatArray, alpha: float) -> Any:
    n = returns.shape[-1]
    return np.sum(np.where(hits, returns, 0.0) / es, axis=-1) / (n * alpha) + 1.0


def acerbi_szekely_z2(
    returns: FloatArray,
    var: FloatArray,
    es: FloatArray,
    alpha: float,
    laws: ForecastLaws,
    *,
    n_sim: int = 2000,
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Acerbi & Székely (2014) ``Z2`` statistic and its p-value by simulation.

    ``Z2 = sum_t r_t I_t / (T alpha ES_t) + 1`` with ``I_t = 1[r_t < -VaR_t]`` and ES as a
    positive loss; ``E[Z2] = 0`` when the forecast distributions are right, negative values
    mean the tail risk was underestimated. The p-value is ``P(Z2 <= z_obs)`` under the
    forecasts, estimated from ``n_sim`` simulated return paths drawn from the forecast
    distributions themselves (the paper's procedure), as ``(1 + #{Z2_sim <= z_obs}) /
    (1 + n_sim)`` (a valid Monte Carlo p-value, Davison & Hinkley 1997, §4.2.1). Only the
    tail is drawn: a day is a hit iff its uniform ``u < alpha`` (``VaR`` is the forecast
    quantile), and then ``r = F_t^-1(u)``.

    Parameters
    ----------
    returns, var, es
        Realised log returns and their VaR and ES forecasts (positive losses), shape ``(n,)``.
    alpha
        The level of ``var`` and ``es``.
    laws
        The forecast distributions the VaR and ES came from.
    n_sim
        Simulated paths; with ``n_sim = 20 k - 1`` the test at 5 % has size exactly 5 %.
    seed
        Seed (or Generator) of the simulations.

    Returns
    -------
    (Z2, p-value)

    References
    ----------
    Acerbi, C. & Székely, B. (2014), "Backtesting expected shortfall", *Risk*, December
    2014.
    """
    a = _alpha(alpha)
    n = returns.shape[0]
    observed = float(_z2(returns, returns < -var, es, a))
    rng = np.random.default_rng(seed)
    below = 0
    chunk = max(1, min(n_sim, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_sim:
        m = min(chunk, n_sim - done)
        u = rng.random((m, n))
        rows, days = np.nonzero(u < a)
        x = laws.tail_quantile(days, u[rows, days])
        z = np.bincount(rows, weights=x / es[days], minlength=m) / (n * a) + 1.0
        below += int(np.count_nonzero(z <= observed))
        done += m
    return observed, (1.0 + below) / (1.0 + n_sim)


# ---------------------------------------------------------------- one-step forecasts


def _garch_forecast(fit: FitResult, logp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GARCH (and GJR, with ``gamma``): the variance recursion run on with fixed parameters.

    ``sigma2_{t+1} = omega + (alpha + gamma 1[e_t < 0]) e_t**2 + beta sigma2_t`` (Bollerslev
    1986; Glosten, Jagannathan & Runkle 1993), started from the fit's last residual and
    conditional variance, as the ``1 / (1 - beta L)`` filter of ``_garch_recursion``.
    ``logp`` are the log prices from the last one of the fit window on.
    """
    m = fit.model
    assert isinstance(m, GARCH)
    e_seg = m.scale * np.diff(logp)[:-1] - m.mu
    resid = np.asarray(fit.resid)  # type: ignore[attr-defined]
    vol = np.asarray(fit.conditional_volatility)  # type: ignore[attr-defined]
    e_prev = np.concatenate([resid[-1:], e_seg])
    gamma = float(fit.params.get("gamma", 0.0))
    u = m.omega + (m.alpha + gamma * (e_prev < 0.0)) * e_prev**2
    sigma2 = lfilter([1.0], [1.0, -m.beta], u, zi=[m.beta * float(vol[-1]) ** 2])[0]
    mean = np.full(u.shape[0], m.mu / m.scale)
    sd: FloatArray = np.sqrt(sigma2) / m.scale
    return mean, sd


def _gbm_forecast(fit: FitResult, logp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GBM: iid normal log returns ``N((mu - sigma**2/2) dt, sigma**2 dt)`` (Glasserman 2003)."""
    m = fit.model
    assert isinstance(m, GBM)
    drift, vol = m.exact_coefficients(fit.dt)
    k = logp.shape[0] - 1
    return np.full(k, drift), np.full(k, vol)


def _meanrev_forecast(fit: FitResult, logp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean reversion: ``r_{t+1} = (phi - 1)(x_t - log theta) + sd z`` (exact AR(1) step)."""
    m = fit.model
    assert isinstance(m, MeanReversion)
    phi, sd = _ou_discretisation(m.kappa, m.sigma, fit.dt)
    origin = logp[:-1]
    return (phi - 1.0) * (origin - math.log(m.theta)), np.full(origin.shape[0], sd)


#: One-step forecasters by model class: ``(fit, log prices) -> (mean, sd)`` of the next
#: log returns, the first forecast made at the first log price.
_FORECASTERS: dict[type[PriceModel], Callable[[FitResult, FloatArray], tuple[Any, Any]]] = {
    GARCH: _garch_forecast,
    GBM: _gbm_forecast,
    MeanReversion: _meanrev_forecast,
}


def _law(model: PriceModel) -> tuple[Innovation, tuple[float, ...]]:
    if isinstance(model, GARCH):
        return model.innovation, tuple(model.shape)
    return INNOVATIONS["normal"], ()


def _forecaster(cls: type[PriceModel]) -> Callable[[FitResult, FloatArray], tuple[Any, Any]]:
    for klass in cls.__mro__:
        if klass in _FORECASTERS:
            return _FORECASTERS[klass]
    known = ", ".join(k.name for k in _FORECASTERS)
    raise ConfigError(
        f"backtest: no one-step forecast for model {cls.__name__}; supported: {known}"
    )


# ---------------------------------------------------------------- the backtest


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Forecasts and test results of :func:`backtest`.

    Attributes
    ----------
    returns
        Realised log returns of the forecast days (fractions), indexed by date when the
        prices were a pandas Series (else by position of the return).
    mean, sd
        Mean and standard deviation of each day's one-step forecast distribution.
    var, es
        VaR and ES (positive losses, log-return fractions), one column per ``alpha``.
    hits
        Exceedances ``returns < -var``, one column per ``alpha``.
    refits
        One row per estimation: first forecast day, window length, parameters, whether
        the optimiser converged.
    laws
        The forecast distributions (:class:`ForecastLaws`), what the Z2 p-value simulates.
    es_pvalue_sims, seed
        Simulations and seed of the Z2 p-value.
    notes
        Anything the reader should know (refits that did not converge).
    """

    model: str
    window: int | str
    refit_every: int
    alpha: tuple[float, ...]
    returns: pd.Series
    mean: pd.Series
    sd: pd.Series
    var: pd.DataFrame
    es: pd.DataFrame
    hits: pd.DataFrame
    refits: pd.DataFrame
    es_pvalue_sims: int
    laws: ForecastLaws = field(repr=False)
    seed: int | None = 0
    notes: tuple[str, ...] = ()

    @property
    def forecasts(self) -> pd.DataFrame:
        """Returns, mean, sd and every ``VaR``/``ES``/``hit`` column in one frame."""
        parts: dict[str, pd.Series] = {"return": self.returns, "mean": self.mean, "sd": self.sd}
        for a in self.alpha:
            tag = _pct(a)
            parts[f"VaR {tag}"] = self.var[a]
            parts[f"ES {tag}"] = self.es[a]
            parts[f"hit {tag}"] = self.hits[a]
        return pd.DataFrame(parts)

    def coverage(self, alpha: float) -> tuple[CoverageTest, CoverageTest, CoverageTest]:
        """Kupiec ``LR_uc``, Christoffersen ``LR_ind`` and ``LR_cc`` at level ``alpha``."""
        hits = self.hits[alpha].to_numpy()
        return (kupiec(hits, alpha), *christoffersen(hits, alpha))

    def es_test(self, alpha: float) -> tuple[float, float]:
        """``(Z2, p-value)`` of the Acerbi-Székely test at ``alpha`` (see :data:`ES_TEST`)."""
        return acerbi_szekely_z2(
            self.returns.to_numpy(),
            self.var[alpha].to_numpy(),
            self.es[alpha].to_numpy(),
            alpha,
            self.laws,
            n_sim=self.es_pvalue_sims,
            seed=self.seed,
        )

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per ``alpha``: counts, every statistic and its p-value."""
        rows = []
        n = len(self.returns)
        for a in self.alpha:
            uc, ind, cc = self.coverage(a)
            z2, p_z2 = self.es_test(a)
            x = int(self.hits[a].sum())
            rows.append(
                {
                    "alpha": a,
                    "days": n,
                    "exceedances": x,
                    "expected": a * n,
                    "rate": x / n,
                    "LR_uc": uc.statistic,
                    "p_uc": uc.pvalue,
                    "LR_ind": ind.statistic,
                    "p_ind": ind.pvalue,
                    "LR_cc": cc.statistic,
                    "p_cc": cc.pvalue,
                    "Z2": z2,
                    "p_Z2": p_z2,
                }
            )
        return pd.DataFrame(rows).set_index("alpha")

    def summary(self) -> str:
        """The table as text with a header saying what was run."""
        head = (
            f"VaR/ES backtest: model {self.model}, window {self.window}, refit every "
            f"{self.refit_every} days, {len(self.refits)} refits, {len(self.returns)} days\n"
            f"LR_uc: Kupiec (1995); LR_ind, LR_cc: Christoffersen (1998); Z2: Acerbi & "
            f"Szekely (2014), p-value from {self.es_pvalue_sims} simulations\n"
        )
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            body = self.table.to_string(float_format=lambda v: f"{v:.4g}")
        return head + body + "".join(f"\nnote: {n}" for n in self.notes)

    def __str__(self) -> str:
        return self.summary()

    def plot(self, alpha: float | None = None, *, width: int = 900, height: int = 350) -> Any:
        """A Bokeh figure: returns, ``-VaR`` and ``-ES`` at ``alpha``, exceedances marked.

        Bokeh is imported here, not with the module. Show it with ``bokeh.io.show`` or
        ``quoteflow.notebook.static_figure``.
        """
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure

        a = self.alpha[0] if alpha is None else alpha
        if a not in self.alpha:
            raise ConfigError(f"alpha {a!r} was not backtested; levels: {list(self.alpha)}")
        index = self.returns.index
        dated = isinstance(index, pd.DatetimeIndex)
        x = index if dated else np.arange(len(index))
        src = ColumnDataSource(
            {
                "x": x,
                "r": self.returns.to_numpy(),
                "var": -self.var[a].to_numpy(),
                "es": -self.es[a].to_numpy(),
            }
        )
        hit = self.hits[a].to_numpy()
        fig = figure(
            width=width,
            height=height,
            x_axis_type="datetime" if dated else "linear",
            title=f"{self.model}: one-day VaR and ES at {_pct(a)} ({int(hit.sum())} exceedances "
            f"of {len(hit)}, expected {a * len(hit):.1f})",
            y_axis_label="log return",
        )
        fig.scatter("x", "r", source=src, size=2, color="#888888", legend_label="return")
        fig.line("x", "var", source=src, color="#1f77b4", legend_label=f"-VaR {_pct(a)}")
        fig.line("x", "es", source=src, color="#d62728", legend_label=f"-ES {_pct(a)}")
        fig.scatter(
            np.asarray(x)[hit],
            self.returns.to_numpy()[hit],
            size=6,
            marker="x",
            color="#d62728",
            legend_label="exceedance",
        )
        fig.legend.location = "bottom_left"
        return fig


def _label(x: Any) -> str:
    """A date as ``2006-12-05`` (not ``2006-12-05 00:00:00``), anything else as ``str``."""
    if isinstance(x, pd.Timestamp) and x == x.normalize():
        return str(x.date())
    return str(x)


def _pct(a: float) -> str:
    return f"{100 * a:g}%"


def _alphas(alpha: Any) -> tuple[float, ...]:
    levels = [alpha] if isinstance(alpha, int | float) else list(alpha)
    if not levels:
        raise ConfigError("alpha: give at least one level, e.g. [0.01, 0.05]")
    out = tuple(_alpha(a) for a in levels)
    if len(set(out)) != len(out):
        raise ConfigError(f"alpha: levels must be distinct, got {list(out)}")
    return out


def _int_option(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _model_class(model: Any) -> type[PriceModel]:
    if isinstance(model, type) and issubclass(model, PriceModel):
        return model
    if isinstance(model, str):
        return model_class(model)
    raise ConfigError(
        f"model must be a model name ({', '.join(MODELS)}) or a model class, got {model!r}"
    )


def _accepts_start(cls: type[PriceModel]) -> bool:
    # Only some estimators iterate (GARCH); the closed-form ones take no start.
    return "start" in inspect.signature(cls.fit).parameters


def backtest(
    prices: Any,
    model: str | type[PriceModel] = "garch",
    *,
    window: int | str = 1000,
    refit_every: int = 20,
    alpha: float | Iterable[float] = (0.01, 0.05),
    min_window: int = 1000,
    dt: float = 1 / 252,
    warm_start: bool = True,
    es_simulations: int = 2000,
    seed: int | None = 0,
    progress: Progress | None = None,
    **fit_kwargs: Any,
) -> BacktestResult:
    """Rolling one-step VaR/ES forecasts of ``model`` on ``prices`` and their backtests.

    Every ``refit_every`` days the model is fitted on the last ``window`` returns (or on
    all returns so far with ``window="expanding"``) and the next ``refit_every`` days are
    forecast one step ahead with those parameters, the model's state being filtered on
    the realised returns (no look-ahead: day ``t``'s forecast uses prices up to ``t - 1``).
    VaR and ES come from the forecast distribution ``r_t = mean_t + sd_t eps_t``
    (:func:`innovation_var_es`).

    Parameters
    ----------
    prices
        1-D array, list or pandas Series of positive daily prices (a Series' index labels
        the forecasts).
    model
        A name of :data:`quoteflow.models.MODELS` (``"garch"``, ``"gbm"``, ``"meanrev"``)
        or a model class.
    window
        Estimation window in returns (``>= 30``), or ``"expanding"``.
    refit_every
        Days between re-estimations, ``>= 1``.
    alpha
        VaR/ES tail level(s), each in ``(0, 0.5)``.
    min_window
        With ``window="expanding"``: returns in the first estimation window.
    dt
        Time between prices in years (passed to ``fit``).
    warm_start
        Start each refit from the previous estimates (models whose ``fit`` takes
        ``start``; :meth:`GARCH.fit`). False: every fit starts from scratch.
    es_simulations
        Simulated paths for the Z2 p-value.
    seed
        Seed of those simulations.
    progress
        Called as ``progress(done, total)`` after each refit.
    **fit_kwargs
        Passed to ``fit`` unchanged (``dist="t"``, ``mean="zero"``, ``o=1``, ...).

    Returns
    -------
    BacktestResult
        Forecasts, exceedances, ``.table`` of the tests, ``.plot()``.

    Raises
    ------
    ConfigError
        Unknown model, bad ``window``/``refit_every``/``alpha``.
    DataError
        Bad prices, or too few for the window plus one forecast day.

    Warns
    -----
    RuntimeWarning
        Once, if some refits did not converge (counted in ``notes`` and ``refits``).
    """
    cls = _model_class(model)
    forecast = _forecaster(cls)
    levels = _alphas(alpha)
    every = _int_option("refit_every", refit_every, 1)
    sims = _int_option("es_simulations", es_simulations, 1)
    expanding = isinstance(window, str)
    if expanding and window != "expanding":
        raise ConfigError(f"window must be an integer or 'expanding', got {window!r}")
    first = _int_option(
        "min_window" if expanding else "window",
        min_window if expanding else window,
        MIN_OBSERVATIONS,
    )
    p = _validate_prices(prices, min_obs=2)
    n = p.shape[0] - 1
    if n <= first:
        raise DataError(
            f"prices too short for the backtest: {n} returns, the "
            f"{'first ' if expanding else ''}estimation window needs {first} and at least one "
            f"more day to forecast (give at least {first + 2} prices or a smaller window)"
        )
    labels = prices.index[1:] if isinstance(prices, pd.Series) else pd.RangeIndex(1, n + 1)
    logp = np.log(p)
    starts = list(range(first, n, every))
    use_start = warm_start and _accepts_start(cls)
    mean = np.empty(n - first)
    sd = np.empty(n - first)
    law_of = np.empty(n - first, dtype=np.intp)
    laws: list[tuple[Innovation, tuple[float, ...]]] = []
    refit_rows: list[dict[str, Any]] = []
    previous: FitResult | None = None
    seen: set[str] = set()
    for i, k in enumerate(starts):
        lo = 0 if expanding else k - first
        kwargs = dict(fit_kwargs)
        if use_start and previous is not None:
            kwargs["start"] = previous
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit = cls.fit(p[lo : k + 1], dt=dt, **kwargs)
            except DataError as exc:
                raise DataError(
                    f"backtest: the {cls.name} fit on the window before {_label(labels[k])} "
                    f"(returns {lo + 1}..{k} of {n}) failed: {exc}"
                ) from None
        end = min(k + every, n)
        # log prices from the forecast origin of day k to the price of day end - 1's origin
        m_seg, s_seg = forecast(fit, logp[k : end + 1])
        mean[k - first : end - first] = m_seg
        sd[k - first : end - first] = s_seg
        laws.append(_law(fit.model))
        law_of[k - first : end - first] = i
        refit_rows.append(
            {
                "first_day": labels[k],
                "window": k - lo,
                **fit.params,
                "converged": bool(fit.converged),
            }
        )
        # A non-convergence warning is summarised once below; any other warning of a
        # refit is passed on, once per message (3,000 refits must not print 3,000 lines).
        for w in caught:
            text = str(w.message)
            if (fit.converged or not issubclass(w.category, RuntimeWarning)) and text not in seen:
                seen.add(text)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        previous = fit
        if progress is not None:
            progress(i + 1, len(starts))
    refits = pd.DataFrame(refit_rows)
    bad = int((~refits["converged"]).sum())
    notes: tuple[str, ...] = ()
    if bad:
        msg = f"backtest: {bad} of {len(refits)} refits did not converge (see .refits)"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        notes = (msg,)
    index = labels[first:]
    r = np.diff(logp)[first:]
    var = {}
    es = {}
    cache = {j: {a: innovation_var_es(*law, a) for a in levels} for j, law in enumerate(laws)}
    for a in levels:
        q = np.array([cache[j][a][0] for j in range(len(laws))])[law_of]
        tail = np.array([cache[j][a][1] for j in range(len(laws))])[law_of]
        var[a] = -(mean + sd * q)
        es[a] = -(mean + sd * tail)
    var_f = pd.DataFrame(var, index=index)
    return BacktestResult(
        model=cls.name,
        window=window if expanding else first,
        refit_every=every,
        alpha=levels,
        returns=pd.Series(r, index=index, name="return"),
        mean=pd.Series(mean, index=index, name="mean"),
        sd=pd.Series(sd, index=index, name="sd"),
        var=var_f,
        es=pd.DataFrame(es, index=index),
        hits=pd.DataFrame({a: r < -var[a] for a in levels}, index=index),
        refits=refits,
        es_pvalue_sims=sims,
        laws=ForecastLaws(mean=mean, sd=sd, law_of=law_of, laws=tuple(laws)),
        seed=seed,
        notes=notes,
    )
