"""Diagnostics of a fitted price model: residual tests, tables and static-ready figures.

:func:`diagnostics` draws the four checks a fitted price model should pass, as one Bokeh
layout:

- histogram of the standardised residuals against the fitted innovation density (normal,
  or unit-variance Student-t for GARCH-t): fat tails show up as bars above the curve;
- QQ plot of the same residuals against that distribution;
- autocorrelation of the *squared* standardised residuals with the ±1.96/√n band
  (Box & Jenkins 1976, §2.1.6), always inside the y-range: volatility clustering left
  unexplained shows up as bars outside the band, which GBM leaves and GARCH should remove
  (Bollerslev 1986);
- a fan chart: quantiles of paths simulated from the fitted model, after the history,
  with a y-range that holds the 5–95 % band.

:func:`volatility_diagnostics` adds what an analyst reads next to a GARCH fit: the
conditional σₜ against |rₜ|, and the term structure of the variance forecast, both
annualised. :func:`residual_tests` computes Ljung–Box on the residuals and on their
squares, Engle's ARCH-LM and Jarque–Bera, each with statistic, degrees of freedom and
p-value; :func:`tests_table_html` and :func:`parameter_table_html` render them as tables
with numbers right-aligned.

Standardised residuals are the model's own shocks recovered from the prices: GBM
``(r - (mu - sigma^2/2) dt) / (sigma sqrt(dt))``; mean reversion, the AR(1) residual of log
price over its standard deviation; GARCH, ``e_t / sigma_t``.

Show any of the layouts with :func:`quoteflow.notebook.static_figure`: a static figure
survives a saved-and-reopened notebook and an HTML export, a widget does not.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from bokeh.layouts import gridplot, row
from bokeh.models import ColumnDataSource, Range1d
from bokeh.models.annotations.geometry import Band, Span
from bokeh.plotting import figure
from scipy import stats

__all__ = [
    "TestResult",
    "acf",
    "annualised",
    "arch_lm",
    "diagnostics",
    "innovation_distribution",
    "jarque_bera",
    "ljung_box",
    "model_label",
    "parameter_table_html",
    "residual_tests",
    "squared_acf",
    "standardized_residuals",
    "tests_table_html",
    "volatility_diagnostics",
]

FloatArray = npt.NDArray[np.float64]

_TOOLS = "pan,wheel_zoom,reset,save"


# ---------------------------------------------------------------------- residuals


def model_label(fit: Any) -> str:
    """A label that tells the models apart: ``GARCH(1,1)-t (nu 5.1)`` vs ``GARCH(1,1)-normal``."""
    name = getattr(fit.model, "name", "")
    if name == "garch":
        dist = str(getattr(fit.model, "dist", "normal"))
        if dist == "t":
            return f"GARCH(1,1)-t (nu {float(fit.params.get('nu', math.nan)):.1f})"
        return f"GARCH(1,1)-{dist}"
    if name == "meanrev":
        return "mean reversion (exp. OU)"
    return "GBM" if name == "gbm" else type(fit.model).__name__


def standardized_residuals(fit: Any, prices: Any) -> FloatArray:
    """The fitted model's standardised shocks recovered from ``prices`` (see module doc).

    Parameters
    ----------
    fit
        A :class:`~quoteflow.models.FitResult` of GBM, MeanReversion or GARCH.
    prices
        The prices the model was fitted on.

    Returns
    -------
    ndarray
        One value per return, shape ``(len(prices) - 1,)``.
    """
    std_resid = getattr(fit, "std_resid", None)
    if std_resid is not None and len(std_resid):
        return np.asarray(std_resid, dtype=np.float64)
    p = np.asarray(prices, dtype=np.float64)
    x = np.log(p)
    name = getattr(fit.model, "name", "")
    dt = float(fit.dt)
    params = dict(fit.params)
    if name == "gbm":
        mu, sigma = params["mu"], params["sigma"]
        r = np.diff(x)
        return np.asarray((r - (mu - 0.5 * sigma**2) * dt) / (sigma * math.sqrt(dt)))
    if name == "meanrev":
        kappa, theta, sigma = params["kappa"], params["theta"], params["sigma"]
        # Exact AR(1) form of the OU step (Glasserman 2003, eq. 3.46).
        phi = math.exp(-kappa * dt)
        c = (1.0 - phi) * math.log(theta)
        sd = sigma * math.sqrt(-math.expm1(-2.0 * kappa * dt) / (2.0 * kappa))
        return np.asarray((x[1:] - c - phi * x[:-1]) / sd)
    raise ValueError(f"no residuals for model {name!r}")


def innovation_distribution(fit: Any) -> Any:
    """The fitted unit-variance innovation distribution as a frozen scipy distribution.

    Normal for GBM, mean reversion and GARCH-normal; for GARCH-t the Student-t with the
    fitted ``nu`` rescaled to unit variance (scale ``sqrt((nu - 2) / nu)``, Bollerslev 1987).
    """
    nu = dict(fit.params).get("nu")
    if nu is not None and math.isfinite(nu) and nu > 2:
        return stats.t(df=nu, scale=math.sqrt((nu - 2.0) / nu))
    return stats.norm()


def acf(x: Any, nlags: int = 20) -> FloatArray:
    """Sample autocorrelation of ``x`` at lags ``1..nlags`` (Box & Jenkins 1976, eq. 2.1.12).

    ``r_k = sum_t (x_t - xbar)(x_{t+k} - xbar) / sum_t (x_t - xbar)^2``, as statsmodels'
    ``acf`` (``adjusted=False``).
    """
    d = np.asarray(x, dtype=np.float64)
    d = d - d.mean()
    denom = float(d @ d)
    if denom == 0.0:
        return np.zeros(nlags)
    n = d.size
    return np.array([float(d[: n - k] @ d[k:]) / denom for k in range(1, nlags + 1)])


def squared_acf(z: Any, nlags: int = 20) -> FloatArray:
    """Sample autocorrelation of ``z**2`` at lags ``1..nlags`` (see :func:`acf`)."""
    return acf(np.asarray(z, dtype=np.float64) ** 2, nlags)


# ---------------------------------------------------------------------- tests


@dataclass(frozen=True)
class TestResult:
    """One residual test: its statistic, degrees of freedom and p-value.

    Attributes
    ----------
    name
        What was tested, e.g. ``"Ljung-Box Q(10), residuals"``.
    statistic
        The test statistic.
    df
        Degrees of freedom of its chi-square reference distribution.
    pvalue
        Probability of a statistic at least this large under the null.
    null
        The null hypothesis in words.
    """

    __test__ = False  # not a pytest test class

    name: str
    statistic: float
    df: int
    pvalue: float
    null: str


def ljung_box(x: Any, lags: int = 10) -> tuple[float, float]:
    """Ljung–Box portmanteau test of no autocorrelation up to ``lags``.

    ``Q = n (n + 2) sum_{k=1}^{m} r_k^2 / (n - k)``, chi-square with ``m`` degrees of
    freedom under the null (Ljung & Box 1978, eq. 2.1). Returns ``(Q, p-value)``.
    """
    v = np.asarray(x, dtype=np.float64)
    n = v.size
    r = acf(v, lags)
    k = np.arange(1, lags + 1, dtype=np.float64)
    q = float(n * (n + 2) * np.sum(r**2 / (n - k)))
    return q, float(stats.chi2.sf(q, lags))


def arch_lm(z: Any, lags: int = 5) -> tuple[float, float]:
    """Engle's ARCH-LM test: regress ``z_t^2`` on a constant and ``z_{t-1}^2..z_{t-q}^2``.

    ``LM = (n - q) R^2``, chi-square with ``q`` degrees of freedom under no ARCH effect
    (Engle 1982, §8; statsmodels' ``het_arch``). Returns ``(LM, p-value)``.
    """
    e2 = np.asarray(z, dtype=np.float64) ** 2
    n = e2.size - lags
    y = e2[lags:]
    design = np.column_stack(
        [np.ones(n)] + [e2[lags - j : lags - j + n] for j in range(1, lags + 1)]
    )
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    centred = y - y.mean()
    r2 = 1.0 - float(resid @ resid) / float(centred @ centred)
    lm = n * r2
    return lm, float(stats.chi2.sf(lm, lags))


def jarque_bera(z: Any) -> tuple[float, float]:
    """Jarque–Bera test of normality: ``JB = n/6 (S^2 + (K - 3)^2 / 4)``, chi-square(2).

    (Jarque & Bera 1980). Returns ``(JB, p-value)``.
    """
    res = stats.jarque_bera(np.asarray(z, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def residual_tests(fit: Any, prices: Any, lags: int = 10, arch_lags: int = 5) -> list[TestResult]:
    """Ljung–Box on residuals and squared residuals, ARCH-LM and Jarque–Bera of ``fit``.

    Parameters
    ----------
    fit
        The fit to check.
    prices
        The prices it was fitted on.
    lags
        Lags of the Ljung–Box tests.
    arch_lags
        Lags of the ARCH-LM regression.

    Returns
    -------
    list of TestResult
        In the order named above. Jarque–Bera tests *normality*: for GARCH-t a small
        p-value is expected and not a failure of the fit.
    """
    z = standardized_residuals(fit, prices)
    q, qp = ljung_box(z, lags)
    q2, q2p = ljung_box(z**2, lags)
    lm, lmp = arch_lm(z, arch_lags)
    jb, jbp = jarque_bera(z)
    return [
        TestResult(f"Ljung-Box Q({lags}), residuals", q, lags, qp, "no autocorrelation"),
        TestResult(
            f"Ljung-Box Q({lags}), squared residuals", q2, lags, q2p, "no volatility clustering"
        ),
        TestResult(f"ARCH-LM({arch_lags})", lm, arch_lags, lmp, "no ARCH effect"),
        TestResult("Jarque-Bera", jb, 2, jbp, "normal residuals"),
    ]


# ---------------------------------------------------------------------- tables

_NUM = "style='text-align:right;font-variant-numeric:tabular-nums;padding:0 8px'"
_HEAD = "style='text-align:right;padding:0 8px'"


def _num(x: float, fmt: str = "{:.4g}") -> str:
    return fmt.format(x) if math.isfinite(x) else "&ndash;"


def _pvalue(p: float) -> str:
    if not math.isfinite(p):
        return "&ndash;"
    return "&lt; 0.0001" if p < 1e-4 else f"{p:.4f}"


def tests_table_html(tests: list[TestResult], level: float = 0.05) -> str:
    """HTML table of :func:`residual_tests` (numbers right-aligned; rejections marked)."""
    rows = "".join(
        f"<tr><td>{html.escape(t.name)}</td><td {_NUM}>{_num(t.statistic, '{:.2f}')}</td>"
        f"<td {_NUM}>{t.df}</td><td {_NUM}>{_pvalue(t.pvalue)}</td>"
        f"<td>{html.escape(t.null)}"
        f"{' &mdash; <b>rejected</b>' if t.pvalue < level else ''}</td></tr>"
        for t in tests
    )
    return (
        "<table class='quoteflow-tests'><thead><tr><th style='text-align:left'>test</th>"
        f"<th {_HEAD}>statistic</th><th {_HEAD}>df</th><th {_HEAD}>p-value</th>"
        f"<th style='text-align:left'>null (rejected at {level:g})</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def annualised(fit: Any) -> dict[str, float]:
    """Drift and volatility of the log price per year (fractions), for any fitted model.

    GBM and mean reversion are parameterised per year already (``mu``, ``sigma``);
    GARCH works per period in scaled units, so its mean is ``mu / scale / dt`` and its
    volatility the unconditional one, ``sqrt(omega / (1 - alpha - beta) / dt) / scale``.
    """
    model, params = fit.model, dict(fit.params)
    if getattr(model, "name", "") == "garch":
        scale, dt = float(model.scale), float(fit.dt)
        return {
            "drift": params.get("mu", 0.0) / scale / dt,
            "drift_se": fit.std_err.get("mu", math.nan) / scale / dt,
            "volatility": float(model.annual_volatility),
        }
    return {
        "drift": params.get("mu", math.nan),
        "drift_se": fit.std_err.get("mu", math.nan),
        "volatility": params.get("sigma", math.nan),
    }


def parameter_table_html(fit: Any, level: float = 0.95) -> str:
    """Parameters with std errors, t-values, p-values and CIs, plus annualised figures.

    Numbers are right-aligned. A drift whose estimate is within two standard errors of
    zero gets a note: over a few years of daily data the drift is rarely distinguishable
    from zero, and a simulation that relies on it shows noise, not a forecast.
    """
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    body = []
    for k, v in fit.params.items():
        se = float(fit.std_err.get(k, math.nan))
        t = v / se if math.isfinite(se) and se > 0 else math.nan
        p = float(2.0 * stats.norm.sf(abs(t))) if math.isfinite(t) else math.nan
        lo, hi = v - z * se, v + z * se
        body.append(
            f"<tr><td>{html.escape(k)}</td><td {_NUM}>{_num(v)}</td><td {_NUM}>{_num(se)}</td>"
            f"<td {_NUM}>{_num(t, '{:.2f}')}</td><td {_NUM}>{_pvalue(p)}</td>"
            f"<td {_NUM}>[{_num(lo)}, {_num(hi)}]</td></tr>"
        )
    ann = annualised(fit)
    notes = []
    units = "per year" if fit.model.name != "garch" else "per period, in scaled units (see below)"
    notes.append(
        f"Parameters {units}. Annualised: drift {_num(100 * ann['drift'], '{:+.1f}')} % "
        f"&plusmn; {_num(100 * ann['drift_se'], '{:.1f}')} %, volatility "
        f"{_num(100 * ann['volatility'], '{:.1f}')} % (log price, per year)."
    )
    if math.isfinite(ann["drift_se"]) and abs(ann["drift"]) < 2.0 * ann["drift_se"]:
        notes.append(
            f"<b>Drift too noisy to mean much</b>: {_num(ann['drift'], '{:.3f}')} &plusmn; "
            f"{_num(ann['drift_se'], '{:.3f}')} per year is within two standard errors of "
            "zero; simulations that rely on it show noise, not a forecast."
        )
    notes += [html.escape(n) for n in getattr(fit, "notes", ())]
    head = "".join(
        f"<th {_HEAD}>{h}</th>" for h in ("estimate", "std err", "t", "p-value", f"{level:.0%} CI")
    )
    return (
        f"<div class='quoteflow-fit'><strong>{html.escape(model_label(fit))}</strong> "
        f"({fit.nobs} obs, log-lik {fit.loglik:.2f}, AIC {fit.aic:.2f}, BIC {fit.bic:.2f}, "
        f"converged: {fit.converged})"
        f"<table><thead><tr><th style='text-align:left'>parameter</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        + "".join(f"<p style='margin:2px 0'><em>{n}</em></p>" for n in notes)
        + "</div>"
    )


# ---------------------------------------------------------------------- figures


def _dates_of(prices: Any) -> pd.DatetimeIndex | None:
    index = getattr(prices, "index", None)
    return index if isinstance(index, pd.DatetimeIndex) else None


def _padded(lo: float, hi: float, pad: float = 0.08) -> Range1d:
    span = (hi - lo) or abs(hi) or 1.0
    return Range1d(start=lo - pad * span, end=hi + pad * span)


def _residual_figures(fit: Any, z: FloatArray, width: int, height: int) -> tuple[Any, Any]:
    dist = innovation_distribution(fit)
    label = model_label(fit)
    hist_fig = figure(
        title=f"standardised residuals: {label}",
        width=width,
        height=height,
        x_axis_label="standardised residual",
        y_axis_label="density",
        tools=_TOOLS,
    )
    lo, hi = float(np.percentile(z, 0.1)), float(np.percentile(z, 99.9))
    lim = max(abs(lo), abs(hi), 4.0)
    counts, edges = np.histogram(np.clip(z, -lim, lim), bins=80, range=(-lim, lim), density=True)
    hist_fig.quad(
        top=counts,
        bottom=0,
        left=edges[:-1],
        right=edges[1:],
        fill_color="#90caf9",
        line_color="white",
        legend_label="residuals",
    )
    grid = np.linspace(-lim, lim, 400)
    hist_fig.line(
        grid, dist.pdf(grid), color="#c62828", line_width=2, legend_label="fitted density"
    )
    hist_fig.line(
        grid, stats.norm.pdf(grid), color="#555555", line_dash="dashed", legend_label="N(0, 1)"
    )
    hist_fig.legend.location = "top_left"
    hist_fig.legend.label_text_font_size = "8pt"

    qq = figure(
        title=f"QQ plot vs fitted distribution: {label}",
        width=width,
        height=height,
        x_axis_label="theoretical quantile",
        y_axis_label="sample quantile",
        tools=_TOOLS,
    )
    zs = np.sort(z)
    probs = (np.arange(1, zs.size + 1) - 0.5) / zs.size
    theo = dist.ppf(probs)
    qq.scatter(theo, zs, size=3, alpha=0.5, color="#1f77b4")
    edge = float(max(abs(theo[0]), abs(theo[-1])))
    qq.line([-edge, edge], [-edge, edge], color="#c62828", line_width=1.5)
    return hist_fig, qq


def _acf_figure(z: FloatArray, width: int, height: int, nlags: int = 20) -> Any:
    values = squared_acf(z, nlags)
    band = 1.96 / math.sqrt(z.size)
    # The band is what the bars are read against: it must always be inside the range.
    top = max(float(values.max()), band)
    bottom = min(float(values.min()), -band)
    fig = figure(
        title="ACF of squared std. residuals (±1.96/√n)",
        width=width,
        height=height,
        x_axis_label="lag (periods)",
        y_axis_label="autocorrelation",
        y_range=_padded(bottom, top, 0.15),
        tools=_TOOLS,
    )
    lags = np.arange(1, nlags + 1, dtype=np.float64)
    fig.vbar(
        x=lags, top=values, width=0.6, color=np.where(np.abs(values) > band, "#c62828", "#1f77b4")
    )
    for level in (band, -band):
        fig.add_layout(
            Span(location=level, dimension="width", line_dash="dashed", line_color="#555555")
        )
    return fig


def _fan_figure(
    fit: Any, prices: Any, horizon: int, n_paths: int, history: int, seed: int | None,
    width: int, height: int,
) -> Any:  # fmt: skip
    p = np.asarray(prices, dtype=np.float64)
    dates = _dates_of(prices)
    hist_p = p[-history:]
    sims = fit.model.simulate(
        horizon, n_paths=n_paths, s0=float(p[-1]), dt=float(fit.dt), seed=seed
    )
    qs = np.percentile(sims, [5, 25, 50, 75, 95], axis=1)
    # Bands are annotations, which auto-ranging ignores: the range is set from the data
    # and the outer band so that the 95 % quantile never runs off the top.
    y_range = _padded(float(min(hist_p.min(), qs[0].min())), float(max(hist_p.max(), qs[4].max())))
    options: dict[str, Any] = {
        "title": f"simulated fan (5-25-50-75-95 %): {model_label(fit)}",
        "width": width,
        "height": height,
        "y_axis_label": "price",
        "y_range": y_range,
        "tools": _TOOLS,
    }
    if dates is not None:
        hist_x: Any = dates[-history:]
        fut_x: Any = pd.bdate_range(dates[-1], periods=horizon + 1)
        fan = figure(x_axis_type="datetime", x_axis_label="date", **options)
    else:
        hist_x = np.arange(p.size - hist_p.size, p.size)
        fut_x = np.arange(p.size - 1, p.size + horizon)
        fan = figure(x_axis_label="period", **options)
    fan.line(hist_x, hist_p, color="#222222", legend_label="history")
    fan_src = ColumnDataSource(
        {"x": fut_x, "q05": qs[0], "q25": qs[1], "q50": qs[2], "q75": qs[3], "q95": qs[4]}
    )
    for lower, upper, alpha in (("q05", "q95", 0.15), ("q25", "q75", 0.3)):
        fan.add_layout(
            Band(
                base="x",
                lower=lower,
                upper=upper,
                source=fan_src,
                fill_color="#1f77b4",
                fill_alpha=alpha,
                line_width=0,
            )
        )
    fan.line("x", "q50", source=fan_src, color="#1f77b4", line_width=2, legend_label="median")
    fan.legend.location = "top_left"
    fan.legend.label_text_font_size = "8pt"
    return fan


def diagnostics(
    fit: Any,
    prices: Any,
    *,
    horizon: int = 126,
    n_paths: int = 500,
    history: int = 504,
    seed: int | None = 0,
    width: int = 380,
    height: int = 260,
) -> Any:
    """Bokeh 2×2 grid of diagnostics of ``fit`` on ``prices`` (see the module docstring).

    Parameters
    ----------
    fit
        The fit to check.
    prices
        The prices it was fitted on (a date-indexed Series puts dates on the fan chart).
    horizon
        Steps simulated ahead for the fan chart (in steps of ``fit.dt``).
    n_paths
        Simulated paths behind the fan chart's quantiles.
    history
        Trailing prices shown before the fan.
    seed
        Seed of the simulation (same seed, same fan).
    width, height
        Size of each panel in pixels.

    Returns
    -------
    bokeh.models.GridPlot
        The layout; show it with :func:`quoteflow.notebook.static_figure` (survives
        save/reopen) or ``bokeh.io.show``.
    """
    z = standardized_residuals(fit, prices)
    hist_fig, qq = _residual_figures(fit, z, width, height)
    acf_fig = _acf_figure(z, width, height)
    fan = _fan_figure(fit, prices, horizon, n_paths, history, seed, width, height)
    return gridplot([[hist_fig, qq], [acf_fig, fan]], toolbar_location="right")


def volatility_diagnostics(
    fit: Any, prices: Any, *, horizon: int = 252, width: int = 380, height: int = 260
) -> Any:
    """Conditional σₜ vs |rₜ| and the variance forecast's term structure of a GARCH fit.

    Left: the fitted conditional volatility σₜ and the absolute return |rₜ| of each day,
    both annualised (``x / scale * sqrt(1 / dt)``, percent per year). Right: the
    annualised volatility of the forecast ``sqrt(mean_{k<=h} E[sigma2_{T+k}] / dt)`` for
    horizons ``h = 1..horizon`` (Baillie & Bollerslev 1992), converging to the
    unconditional volatility, drawn as a dashed line.

    Parameters
    ----------
    fit
        A GARCH fit (:class:`~quoteflow.models.garch.GARCHFitResult`).
    prices
        The prices it was fitted on (dates on the x-axis when it is a dated Series).
    horizon
        Longest forecast horizon in periods.
    width, height
        Size of each panel in pixels.

    Raises
    ------
    ValueError
        If ``fit`` is not a GARCH fit.
    """
    vol = np.asarray(getattr(fit, "conditional_volatility", ()), dtype=np.float64)
    if getattr(fit.model, "name", "") != "garch" or vol.size == 0:
        raise ValueError("volatility_diagnostics needs a GARCH fit")
    scale, dt = float(fit.model.scale), float(fit.dt)
    to_annual = 100.0 / scale / math.sqrt(dt)  # scaled per-period units -> % per year
    label = model_label(fit)
    dates = _dates_of(prices)
    x: Any = dates[1:] if dates is not None else np.arange(1, vol.size + 1)
    left = figure(
        title=f"conditional σₜ vs |rₜ|: {label}",
        width=width,
        height=height,
        x_axis_type="datetime" if dates is not None else "linear",
        x_axis_label="date" if dates is not None else "period",
        y_axis_label="% per year (annualised)",
        tools=_TOOLS,
    )
    abs_r = np.abs(np.asarray(fit.returns, dtype=np.float64)) * to_annual
    left.scatter(x, abs_r, size=2, color="#9e9e9e", alpha=0.6, legend_label="|rₜ|")
    left.line(x, vol * to_annual, color="#c62828", line_width=1.5, legend_label="σₜ")
    left.legend.location = "top_left"
    left.legend.label_text_font_size = "8pt"

    forecast = np.asarray(fit.forecast_variance(horizon), dtype=np.float64)
    h = np.arange(1, horizon + 1, dtype=np.float64)
    term = np.sqrt(np.cumsum(forecast) / h) * to_annual
    long_run = 100.0 * float(fit.model.annual_volatility)
    right = figure(
        title="volatility forecast term structure",
        width=width,
        height=height,
        x_axis_label="horizon (periods ahead)",
        y_axis_label="% per year (annualised)",
        y_range=_padded(float(min(term.min(), long_run)), float(max(term.max(), long_run))),
        tools=_TOOLS,
    )
    right.line(h, term, color="#1f77b4", line_width=2, legend_label="forecast, mean to h")
    right.line(
        [1, horizon],
        [long_run, long_run],
        color="#555555",
        line_dash="dashed",
        legend_label="unconditional",
    )
    right.legend.location = "bottom_right"
    right.legend.label_text_font_size = "8pt"
    return row(left, right)
