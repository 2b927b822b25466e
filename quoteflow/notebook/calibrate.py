"""Calibration in a notebook: diagnostics plots and a fit-and-push widget.

:func:`diagnostics` draws the four checks a fitted price model should pass, as one Bokeh
layout:

- histogram of the standardised residuals against the fitted innovation density (normal,
  or unit-variance Student-t for GARCH-t): fat tails show up as bars above the curve;
- QQ plot of the same residuals against that distribution;
- autocorrelation of the *squared* standardised residuals with the ±1.96/√n band
  (Box & Jenkins 1976, §2.1.6): volatility clustering left unexplained shows up as bars
  outside the band, which GBM leaves and GARCH should remove (Bollerslev 1986);
- a fan chart: quantiles of paths simulated from the fitted model, after the history.

Standardised residuals are the model's own shocks recovered from the prices: GBM
``(r - (mu - sigma^2/2) dt) / (sigma sqrt(dt))``; mean reversion, the AR(1) residual of log
price over its standard deviation; GARCH, ``e_t / sigma_t``.

:class:`CalibrationPanel` wraps it into a widget: pick a shipped ticker or upload a CSV,
pick a model, fit, read the parameter table and plots, and push the fitted model to a
running quote server.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import numpy.typing as npt
import pandas as pd
from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource
from bokeh.models.annotations.geometry import Band, Span
from bokeh.plotting import figure
from scipy import stats

from quoteflow.notebook._bokeh import EchoFreeBokehModel, load_bokehjs

__all__ = [
    "MODEL_CHOICES",
    "CalibrationPanel",
    "calibrate_widget",
    "diagnostics",
    "fit_model",
    "innovation_distribution",
    "push_model",
    "squared_acf",
    "standardized_residuals",
]

FloatArray = npt.NDArray[np.float64]

#: Model choices of the panel: label -> key of :func:`fit_model`.
MODEL_CHOICES: dict[str, str] = {
    "GBM": "gbm",
    "Mean reversion (exp. OU)": "meanrev",
    "GARCH(1,1), normal": "garch-normal",
    "GARCH(1,1), Student-t": "garch-t",
}


def fit_model(prices: Any, model: str, dt: float = 1 / 252) -> Any:
    """Fit one model by key: ``"gbm"``, ``"meanrev"``, ``"garch-normal"``, ``"garch-t"``.

    Parameters
    ----------
    prices
        Positive prices (array, list or Series), equally spaced.
    model
        Model key (also accepted: ``"garch"`` for ``"garch-normal"``).
    dt
        Time between prices in years.

    Returns
    -------
    FitResult
        The fit.

    Raises
    ------
    ValueError
        For an unknown key (listing the known ones) or data the model cannot fit.
    """
    from quoteflow.models import GARCH, GBM, MeanReversion

    key = model.strip().lower()
    if key == "gbm":
        return GBM.fit(prices, dt=dt)
    if key == "meanrev":
        return MeanReversion.fit(prices, dt=dt)
    if key in ("garch", "garch-normal"):
        return GARCH.fit(prices, dt=dt, dist="normal")
    if key == "garch-t":
        return GARCH.fit(prices, dt=dt, dist="t")
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_CHOICES.values())}")


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


def squared_acf(z: Any, nlags: int = 20) -> FloatArray:
    """Sample autocorrelation of ``z**2`` at lags ``1..nlags`` (Box & Jenkins 1976, eq. 2.1.12)."""
    s = np.asarray(z, dtype=np.float64) ** 2
    d = s - s.mean()
    denom = float(d @ d)
    if denom == 0.0:
        return np.zeros(nlags)
    n = d.size
    return np.array([float(d[: n - k] @ d[k:]) / denom for k in range(1, nlags + 1)])


def _dates_of(prices: Any) -> pd.DatetimeIndex | None:
    index = getattr(prices, "index", None)
    return index if isinstance(index, pd.DatetimeIndex) else None


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
        The layout; show it with :class:`EchoFreeBokehModel` or ``bokeh.io.show``.
    """
    z = standardized_residuals(fit, prices)
    dist = innovation_distribution(fit)
    title = f"{type(fit.model).__name__} ({fit.model.name})"

    # Histogram vs density.
    hist_fig = figure(
        title=f"standardised residuals: {title}",
        width=width,
        height=height,
        tools="pan,wheel_zoom,reset,save",
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

    # QQ plot.
    qq = figure(
        title="QQ plot vs fitted distribution",
        width=width,
        height=height,
        x_axis_label="theoretical quantile",
        y_axis_label="sample quantile",
        tools="pan,wheel_zoom,reset,save",
    )
    zs = np.sort(z)
    probs = (np.arange(1, zs.size + 1) - 0.5) / zs.size
    theo = dist.ppf(probs)
    qq.scatter(theo, zs, size=3, alpha=0.5, color="#1f77b4")
    edge = float(max(abs(theo[0]), abs(theo[-1])))
    qq.line([-edge, edge], [-edge, edge], color="#c62828", line_width=1.5)

    # ACF of squared residuals.
    nlags = 20
    acf = squared_acf(z, nlags)
    band = 1.96 / math.sqrt(z.size)
    acf_fig = figure(
        title="ACF of squared std. residuals",
        width=width,
        height=height,
        x_axis_label="lag",
        tools="pan,wheel_zoom,reset,save",
    )
    lags = np.arange(1, nlags + 1, dtype=np.float64)
    acf_fig.vbar(
        x=lags, top=acf, width=0.6, color=np.where(np.abs(acf) > band, "#c62828", "#1f77b4")
    )
    for level in (band, -band):
        acf_fig.add_layout(
            Span(location=level, dimension="width", line_dash="dashed", line_color="#555555")
        )

    # Fan chart.
    p = np.asarray(prices, dtype=np.float64)
    dates = _dates_of(prices)
    hist_p = p[-history:]
    sims = fit.model.simulate(
        horizon, n_paths=n_paths, s0=float(p[-1]), dt=float(fit.dt), seed=seed
    )
    qs = np.percentile(sims, [5, 25, 50, 75, 95], axis=1)
    if dates is not None:
        hist_x: Any = dates[-history:]
        fut_x: Any = pd.bdate_range(dates[-1], periods=horizon + 1)
        fan = figure(
            title="simulated fan (5-25-50-75-95 %)",
            x_axis_type="datetime",
            width=width,
            height=height,
            tools="pan,wheel_zoom,reset,save",
        )
    else:
        hist_x = np.arange(p.size - hist_p.size, p.size)
        fut_x = np.arange(p.size - 1, p.size + horizon)
        fan = figure(
            title="simulated fan (5-25-50-75-95 %)",
            width=width,
            height=height,
            tools="pan,wheel_zoom,reset,save",
        )
    fan.line(hist_x, hist_p, color="#222222", legend_label="history")
    fan_src = ColumnDataSource(
        {"x": fut_x, "q05": qs[0], "q25": qs[1], "q50": qs[2], "q75": qs[3], "q95": qs[4]}
    )
    fan.add_layout(
        Band(
            base="x",
            lower="q05",
            upper="q95",
            source=fan_src,
            fill_color="#1f77b4",
            fill_alpha=0.15,
            line_width=0,
        )
    )
    fan.add_layout(
        Band(
            base="x",
            lower="q25",
            upper="q75",
            source=fan_src,
            fill_color="#1f77b4",
            fill_alpha=0.3,
            line_width=0,
        )
    )
    fan.line("x", "q50", source=fan_src, color="#1f77b4", line_width=2, legend_label="median")
    fan.legend.location = "top_left"
    fan.legend.label_text_font_size = "8pt"
    return gridplot([[hist_fig, qq], [acf_fig, fan]], toolbar_location="right")


def _server_symbols(server: Any) -> list[str]:
    """Symbols of a server handle, a market or a server URL (``GET /symbols``)."""
    if server is None:
        return []
    market = getattr(server, "market", server)
    symbols = getattr(market, "symbols", None)
    if symbols is not None and not isinstance(server, str):
        return [str(s) for s in symbols]
    url = str(getattr(server, "url", server)).rstrip("/") + "/symbols"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read().decode())
    items = body.get("symbols", body) if isinstance(body, dict) else body
    if isinstance(items, dict):
        return [str(k) for k in items]
    return [str(i["symbol"] if isinstance(i, dict) else i) for i in items]


def push_model(server: Any, symbol: str, model: Any) -> Any:
    """Make ``symbol`` on a running server follow ``model`` from the next tick on.

    Parameters
    ----------
    server
        A :class:`~quoteflow.notebook.server.BackgroundServer` (or anything with a
        ``market``), a market itself, or a server base URL.
    symbol
        The symbol to change.
    model
        The fitted model (``fit.model``).

    Returns
    -------
    Any
        What the market or the server answered (the new parameters).
    """
    market = getattr(server, "market", None) if not isinstance(server, str) else None
    if market is None and server is not None and hasattr(server, "set_model"):
        market = server
    if market is not None:
        return market.set_model(symbol, model)
    # Over HTTP: PUT /symbols/{symbol} with the model's name and parameters.
    body = {"model": model.name, **model.params()}
    url = str(getattr(server, "url", server)).rstrip("/") + f"/symbols/{symbol}"
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read().decode())


class CalibrationPanel(widgets.VBox):  # type: ignore[misc]
    """Fit a model to a shipped ticker or an uploaded CSV and push it to a live stream.

    Parameters
    ----------
    server
        The running server to push fitted models to: the handle of
        :func:`quoteflow.notebook.serve_in_background`, a market, or a server URL.
        ``None`` hides the push controls.
    ticker
        Initially selected shipped ticker.
    model
        Initially selected model key (see :data:`MODEL_CHOICES`).
    years
        Fit on the last ``years`` years of history (0: all of it).

    Attributes
    ----------
    result
        The last :class:`~quoteflow.models.FitResult` (``None`` before the first fit).
    prices
        The price series of the last fit.
    """

    def __init__(
        self, server: Any = None, *, ticker: str = "AAPL", model: str = "garch-t", years: int = 5
    ) -> None:
        from quoteflow.data import TICKERS

        load_bokehjs()
        self.server = server
        self.result: Any = None
        self.prices: pd.Series | None = None
        self._uploaded: pd.Series | None = None
        self.source_picker = widgets.Dropdown(
            options=list(TICKERS), value=ticker.upper(), description="data"
        )
        self.upload = widgets.FileUpload(accept=".csv", multiple=False, description="CSV…")
        self.column = widgets.Text(
            value="", placeholder="price column (auto)", layout=widgets.Layout(width="180px")
        )
        self.model_picker = widgets.Dropdown(
            options=list(MODEL_CHOICES.items()), value=model, description="model"
        )
        self.years = widgets.BoundedIntText(
            value=years, min=0, max=50, description="years", layout=widgets.Layout(width="160px")
        )
        self.fit_button = widgets.Button(description="fit", button_style="primary", icon="cogs")
        self.fit_button.on_click(lambda _b: self.fit())
        self.upload.observe(self._on_upload, names="value")
        self.message = widgets.HTML()
        self.table = widgets.HTML()
        self.plots = widgets.Box()
        self._plot_widget: EchoFreeBokehModel | None = None
        children: list[Any] = [
            widgets.HBox([self.source_picker, self.upload, self.column]),
            widgets.HBox([self.model_picker, self.years, self.fit_button]),
            self.message,
            self.table,
            self.plots,
        ]
        self.symbol_picker = widgets.Dropdown(description="symbol", options=[])
        self.push_button = widgets.Button(
            description="push to stream", icon="upload", disabled=True
        )
        self.push_button.on_click(lambda _b: self.push())
        self.push_message = widgets.HTML()
        if server is not None:
            try:
                symbols = _server_symbols(server)
            except OSError as exc:
                symbols = []
                self.push_message.value = (
                    f"cannot list the server's symbols: {html.escape(str(exc))}"
                )
            self.symbol_picker.options = symbols
            children.append(widgets.HBox([self.symbol_picker, self.push_button, self.push_message]))
        super().__init__(children=children)

    # ------------------------------------------------------------------ data

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, list | tuple) else next(iter(files.values()))
        name = str(item.get("name", "upload.csv"))
        content = bytes(item["content"])
        try:
            self._uploaded = self._read_upload(name, content)
        except ValueError as exc:
            self._uploaded = None
            self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return
        label = f"upload: {name}"
        self.source_picker.options = [
            *[o for o in self.source_picker.options if not str(o).startswith("upload: ")],
            label,
        ]
        self.source_picker.value = label
        self.message.value = f"read {len(self._uploaded)} prices from {html.escape(name)}"

    def _read_upload(self, name: str, content: bytes) -> pd.Series:
        from quoteflow.data import read_csv

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_bytes(content)
            return read_csv(path, column=self.column.value.strip() or None)

    def load_csv(self, path: str | Path) -> pd.Series:
        """Use a CSV file from disk instead of an upload (same reader and errors)."""
        p = Path(path)
        self._on_upload({"new": [{"name": p.name, "content": p.read_bytes()}]})
        if self._uploaded is None:
            raise ValueError(self.message.value)
        return self._uploaded

    def _selected_prices(self) -> pd.Series:
        from quoteflow.data import load

        choice = str(self.source_picker.value)
        if choice.startswith("upload: "):
            if self._uploaded is None:
                raise ValueError("no uploaded CSV; upload one first")
            prices = self._uploaded
        else:
            prices = load(choice)["adj_close"]
        years = int(self.years.value)
        if years > 0 and isinstance(prices.index, pd.DatetimeIndex):
            start = prices.index[-1] - pd.DateOffset(years=years)
            prices = prices[prices.index >= start]
        return prices

    # ------------------------------------------------------------------ actions

    def fit(self, model: str | None = None) -> Any:
        """Fit the selected (or given) model to the selected data and show the results.

        Returns
        -------
        FitResult or None
            The fit, or ``None`` when it failed (the message says why).
        """
        if model is not None:
            self.model_picker.value = model
        key = str(self.model_picker.value)
        self.message.value = "fitting…"
        try:
            prices = self._selected_prices()
            result = fit_model(prices, key)
            layout = diagnostics(result, prices)
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return None
        self.result, self.prices = result, prices
        self.message.value = (
            f"{html.escape(str(self.source_picker.value))}: {len(prices)} prices"
            f" from {prices.index[0]!s:.10} to {prices.index[-1]!s:.10}"
        )
        self.table.value = result._repr_html_()
        if self._plot_widget is not None:
            self._plot_widget.close()
        self._plot_widget = EchoFreeBokehModel(layout)
        self.plots.children = [self._plot_widget]
        self.push_button.disabled = self.server is None
        return result

    def push(self, symbol: str | None = None) -> Any:
        """Push the last fitted model to the server for ``symbol`` (default: the picker's)."""
        if self.result is None:
            raise ValueError("nothing fitted yet: call fit() first")
        if self.server is None:
            raise ValueError("no server: create the panel with CalibrationPanel(server=...)")
        if symbol is not None:
            if symbol not in self.symbol_picker.options:
                self.symbol_picker.options = [*self.symbol_picker.options, symbol]
            self.symbol_picker.value = symbol
        target = self.symbol_picker.value
        if target is None:
            raise ValueError("choose a symbol to push the model to")
        try:
            answer = push_model(self.server, str(target), self.result.model)
        except (ValueError, OSError) as exc:
            self.push_message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            raise
        self.push_message.value = (
            f"{html.escape(str(target))} now follows "
            f"{html.escape(type(self.result.model).__name__)}"
        )
        return answer

    def close(self) -> None:
        """Close the panel and its plots."""
        if self._plot_widget is not None:
            self._plot_widget.close()
        super().close()


def calibrate_widget(server: Any = None, **kwargs: Any) -> CalibrationPanel:
    """Shortcut for :class:`CalibrationPanel` (``calibrate_widget(server)`` in a cell)."""
    return CalibrationPanel(server, **kwargs)
