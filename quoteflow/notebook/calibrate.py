"""Calibration in a notebook: fit a model, read its diagnostics, push it to a live stream.

:class:`CalibrationPanel` is a widget: pick a shipped ticker or upload a CSV, pick the
start and end dates and a model, fit, read the parameter table (estimates, standard
errors, t- and p-values, confidence intervals, annualised drift and volatility) and the
residual tests, see the diagnostics plots (static figures, see
:mod:`quoteflow.notebook.diagnostics`), download the fit as JSON, and push the fitted
model to a running quote server (the push target defaults to the data's ticker).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd

from quoteflow.notebook.diagnostics import (
    diagnostics,
    innovation_distribution,
    model_label,
    parameter_table_html,
    residual_tests,
    squared_acf,
    standardized_residuals,
    tests_table_html,
    volatility_diagnostics,
)
from quoteflow.notebook.frozen import LiveDisplay
from quoteflow.notebook.static import static_figure

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

# Re-exported from their home, quoteflow.notebook.diagnostics (older import path).
_REEXPORTED = (innovation_distribution, squared_acf, standardized_residuals)

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
        Initial date range: the last ``years`` years of the data (0: all of it). The
        start and end date pickers change it.

    Attributes
    ----------
    result
        The last :class:`~quoteflow.models.FitResult` (``None`` before the first fit).
    prices
        The price series of the last fit.
    start_date, end_date
        The date pickers (``None``: from the first / to the last price).
    download
        HTML link that downloads the last fit as JSON (``FitResult.to_dict()``).
    """

    def __init__(
        self, server: Any = None, *, ticker: str = "AAPL", model: str = "garch-t", years: int = 5
    ) -> None:
        from quoteflow.data import TICKERS

        self.server = server
        self.result: Any = None
        self.prices: pd.Series | None = None
        self._uploaded: pd.Series | None = None
        self._years = int(years)
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
        self.start_date = widgets.DatePicker(
            description="from", layout=widgets.Layout(width="230px")
        )
        self.end_date = widgets.DatePicker(description="to", layout=widgets.Layout(width="230px"))
        self.fit_button = widgets.Button(description="fit", button_style="primary", icon="cogs")
        self.fit_button.on_click(lambda _b: self.fit())
        self.upload.observe(self._on_upload, names="value")
        self.source_picker.observe(lambda _c: self._reset_dates(), names="value")
        self.message = widgets.HTML()
        self.table = widgets.HTML()
        self.tests = widgets.HTML()
        self.download = widgets.HTML()
        self.plots = widgets.HTML()
        children: list[Any] = [
            widgets.HBox([self.source_picker, self.upload, self.column]),
            widgets.HBox([self.start_date, self.end_date]),
            widgets.HBox([self.model_picker, self.fit_button, self.download]),
            self.message,
            self.table,
            self.tests,
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
        self._outputs = LiveDisplay(self, self._static_html)
        super().__init__(children=children)
        self._reset_dates()

    # ------------------------------------------------------------------ data

    def _all_prices(self) -> pd.Series:
        from quoteflow.data import load

        choice = str(self.source_picker.value)
        if choice.startswith("upload: "):
            if self._uploaded is None:
                raise ValueError("no uploaded CSV; upload one first")
            return self._uploaded
        return load(choice)["adj_close"]

    def _reset_dates(self) -> None:
        """Date pickers to the default range of the selected data (the last ``years``)."""
        try:
            prices = self._all_prices()
        except ValueError:
            return
        if not isinstance(prices.index, pd.DatetimeIndex) or prices.empty:
            self.start_date.value = self.end_date.value = None
            return
        last = prices.index[-1]
        first = prices.index[0]
        if self._years > 0:
            first = max(first, last - pd.DateOffset(years=self._years))
        self.start_date.value = first.date()
        self.end_date.value = last.date()

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
        self._reset_dates()
        self.message.value = f"read {len(self._uploaded)} prices from {html.escape(name)}"

    def _read_upload(self, name: str, content: bytes) -> pd.Series:
        from quoteflow.data import read_csv

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_bytes(content)
            try:
                return read_csv(path, column=self.column.value.strip() or None)
            except ValueError as exc:
                # The reader names the file it read, a temporary copy: name the user's.
                raise ValueError(str(exc).replace(str(path), Path(name).name)) from None

    def load_csv(self, path: str | Path) -> pd.Series:
        """Use a CSV file from disk instead of an upload (same reader and errors)."""
        p = Path(path)
        self._on_upload({"new": [{"name": p.name, "content": p.read_bytes()}]})
        if self._uploaded is None:
            raise ValueError(self.message.value)
        return self._uploaded

    def _selected_prices(self) -> pd.Series:
        prices = self._all_prices()
        if isinstance(prices.index, pd.DatetimeIndex):
            start, end = self.start_date.value, self.end_date.value
            if start is not None and end is not None and start > end:
                raise ValueError(f"start date {start} is after end date {end}")
            if start is not None:
                prices = prices[prices.index >= pd.Timestamp(start)]
            if end is not None:
                prices = prices[prices.index < pd.Timestamp(end) + pd.Timedelta(days=1)]
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
        self.push_message.value = ""  # "X now follows ..." was about the previous fit
        try:
            prices = self._selected_prices()
            result = fit_model(prices, key)
            layouts = [diagnostics(result, prices)]
            if result.model.name == "garch":
                layouts.append(volatility_diagnostics(result, prices))
            tests = residual_tests(result, prices)
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return None
        self.result, self.prices = result, prices
        self.message.value = (
            f"{html.escape(str(self.source_picker.value))}: {len(prices)} prices"
            f" from {prices.index[0]!s:.10} to {prices.index[-1]!s:.10}"
        )
        self.table.value = parameter_table_html(result)
        self.tests.value = tests_table_html(tests)
        self.plots.value = "".join(
            static_figure(layout, title=f"{model_label(result)} diagnostics")._repr_html_()
            for layout in layouts
        )
        self.download.value = self._download_link()
        self.push_button.disabled = self.server is None
        ticker = str(self.source_picker.value)
        if ticker in self.symbol_picker.options:
            self.symbol_picker.value = ticker  # push to the data's own symbol by default
        return result

    def export(self) -> dict[str, Any]:
        """The last fit as a JSON-safe dict (``FitResult.to_dict()`` plus the data's range)."""
        if self.result is None or self.prices is None:
            raise ValueError("nothing fitted yet: call fit() first")
        out: dict[str, Any] = dict(self.result.to_dict())
        out["label"] = model_label(self.result)
        out["data"] = {
            "source": str(self.source_picker.value),
            "start": str(self.prices.index[0])[:10],
            "end": str(self.prices.index[-1])[:10],
            "prices": len(self.prices),
        }
        return out

    def _download_link(self) -> str:
        body = json.dumps(self.export(), indent=2).encode()
        data = base64.b64encode(body).decode()
        source = str(self.source_picker.value).removeprefix("upload: ").replace(" ", "_")
        name = f"{Path(source).stem}-{self.model_picker.value}-{dt.date.today():%Y%m%d}.json"
        return (
            f"<a download='{html.escape(name, quote=True)}' "
            f"href='data:application/json;base64,{data}'>&#11015; download fit (JSON)</a>"
        )

    def _static_html(self) -> str:
        parts = (self.message, self.table, self.tests, self.download, self.plots, self.push_message)
        body = "".join(f"<div>{w.value}</div>" for w in parts if w.value)
        return f"<div class='quoteflow-frozen quoteflow-calibration'>{body}</div>"

    def _ipython_display_(self) -> None:
        self._outputs.show()

    def freeze(self) -> str:
        """Replace every output showing the panel with a static copy of its results.

        Call it where the panel's live part ends (before ``server.stop()``): a widget's
        output needs the kernel, so a saved and reopened notebook would show "Error
        displaying widget" in its place; the static copy (message, parameter and test
        tables, download link, diagnostics figures) needs nothing.

        Returns
        -------
        str
            The static HTML.
        """
        return self._outputs.freeze()

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
            f"{html.escape(str(target))} now follows {html.escape(model_label(self.result))}"
        )
        return answer


def calibrate_widget(server: Any = None, **kwargs: Any) -> CalibrationPanel:
    """Shortcut for :class:`CalibrationPanel` (``calibrate_widget(server)`` in a cell)."""
    return CalibrationPanel(server, **kwargs)
