"""Does the stream do what the sliders say? Realised volatility and correlation, live.

:class:`StreamMonitor` watches the ticks a :class:`~quoteflow.notebook.LiveChart` has
received and shows, once a second:

- per symbol, the *realised* annualised volatility of the last ``window`` tick returns,
  ``sd(diff log p) / sqrt(dt)`` with ``dt = tick_interval * speed`` simulated years per
  tick (the market's own step), next to the σ the model was given;
- for the first two symbols, the correlation of their tick log returns over the same
  window, drawn as a live line against the target correlation.

With ``window`` returns the standard error of a realised volatility is about
``sigma / sqrt(2 window)`` (7 % of sigma at 100 returns), of a correlation about
``(1 - rho^2) / sqrt(window)``: the readouts move around the targets, not on them.
Everything runs on the kernel's event loop (see :mod:`quoteflow.notebook.chart`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
from typing import Any

import ipywidgets as widgets
import numpy as np
from bokeh.models import ColumnDataSource, Range1d
from bokeh.models.annotations.geometry import Span
from bokeh.plotting import figure

from quoteflow.notebook._bokeh import EchoFreeBokehModel
from quoteflow.notebook.frozen import LiveDisplay
from quoteflow.notebook.static import static_figure

__all__ = ["StreamMonitor", "realised_volatility", "return_correlation"]


def realised_volatility(prices: Any, dt: float) -> float:
    """Annualised volatility of log returns: ``sd(diff log p) / sqrt(dt)`` (NaN if < 3 prices)."""
    p = np.asarray(prices, dtype=np.float64)
    if p.size < 3:
        return math.nan
    return float(np.std(np.diff(np.log(p)), ddof=1) / math.sqrt(dt))


def return_correlation(a: Any, b: Any) -> float:
    """Pearson correlation of the log returns of two aligned price series (NaN if < 3)."""
    pa, pb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if pa.size < 3 or pa.size != pb.size:
        return math.nan
    ra, rb = np.diff(np.log(pa)), np.diff(np.log(pb))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


class StreamMonitor(widgets.VBox):  # type: ignore[misc]
    """Realised-volatility readouts and a rolling-correlation panel of a live chart.

    Parameters
    ----------
    chart
        A ``kind="line"`` :class:`~quoteflow.notebook.LiveChart` subscribed to the symbols.
    market
        The :class:`~quoteflow.market.Market` being streamed (for ``dt`` and the models'
        σ and correlation targets).
    symbols
        Symbols to watch; the first two also get the correlation panel.
    window
        Tick returns per estimate.
    interval
        Seconds between updates.

    Attributes
    ----------
    readouts
        One :class:`ipywidgets.HTML` per symbol (put them next to the sliders).
    correlation
        The last correlation estimate (NaN before there is enough data).
    """

    _task: asyncio.Task[None] | None = None

    def __init__(
        self,
        chart: Any,
        market: Any,
        symbols: list[str],
        *,
        window: int = 100,
        interval: float = 1.0,
        width: int = 760,
        height: int = 200,
    ) -> None:
        self.chart, self.market, self.symbols = chart, market, list(symbols)
        self.window, self.interval = int(window), float(interval)
        self.dt = float(market.dt)
        self.readouts = {s: widgets.HTML(layout=widgets.Layout(width="460px")) for s in symbols}
        self.correlation = math.nan
        self._corr = ColumnDataSource({"x": [], "rho": []})
        self._size = (int(width), int(height))
        fig = self._make_figure(self._corr)
        self.figure = fig
        self.plot = EchoFreeBokehModel(fig)
        self._outputs = LiveDisplay(self, self._static_html)
        super().__init__(children=[self.plot])
        self._update()
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _make_figure(self, source: ColumnDataSource) -> Any:
        """The rolling-correlation figure drawn from ``source`` (live, or a static copy)."""
        width, height = self._size
        target = self._target_correlation()
        title = (
            f"rolling correlation of {self.symbols[0]} and {self.symbols[1]} tick returns"
            f" (last {self.window})"
            if len(self.symbols) > 1
            else "rolling correlation (needs two symbols)"
        )
        if target is not None:
            title += f"; target {target:.2f} (dashed)"
        fig = figure(
            title=title,
            x_axis_type="datetime",
            x_axis_label="time (UTC)",
            y_axis_label="correlation",
            y_range=Range1d(start=-1.05, end=1.05),
            width=width,
            height=height,
            tools="pan,wheel_zoom,reset,save",
        )
        fig.line("x", "rho", source=source, line_width=2, legend_label="realised")
        if target is not None:
            fig.add_layout(
                Span(location=target, dimension="width", line_dash="dashed", line_color="#c62828")
            )
        fig.legend.location = "bottom_left"
        return fig

    def _static_html(self) -> str:
        copy = self._make_figure(
            ColumnDataSource({str(k): list(v) for k, v in self._corr.data.items()})
        )
        return str(static_figure(copy, title="rolling correlation")._repr_html_())

    def _ipython_display_(self) -> None:
        self._outputs.show()

    def freeze(self) -> None:
        """Stop, and replace every output showing the panel with a static copy of it."""
        self.stop()
        self._outputs.freeze()

    def _target_correlation(self) -> float | None:
        if len(self.symbols) < 2:
            return None
        with contextlib.suppress(Exception):
            names = list(self.market.symbols)
            i, j = names.index(self.symbols[0]), names.index(self.symbols[1])
            return float(np.asarray(self.market.correlation_matrix)[i, j])
        return None

    def _target_sigma(self, symbol: str) -> float:
        with contextlib.suppress(Exception):
            return float(self.market.model(symbol).sigma)
        return math.nan

    def _update(self) -> None:
        series = {s: self.chart.prices(s)[-(self.window + 1) :] for s in self.symbols}
        for s, rows in series.items():
            rv = realised_volatility([p for _, p in rows], self.dt)
            target = self._target_sigma(s)
            text = "&ndash;" if math.isnan(rv) else f"{rv:.2f}"
            self.readouts[s].value = (
                f"<span style='font-family:monospace'>{html.escape(s)} realised σ "
                f"<b>{text}</b> (model {target:.2f}, last {max(len(rows) - 1, 0)} ticks)</span>"
            )
        if len(self.symbols) < 2:
            return
        a, b = series[self.symbols[0]], series[self.symbols[1]]
        common = sorted({x for x, _ in a} & {x for x, _ in b})[-(self.window + 1) :]
        pa, pb = dict(a), dict(b)
        rho = return_correlation([pa[x] for x in common], [pb[x] for x in common])
        self.correlation = rho
        if math.isfinite(rho) and common:
            self._corr.stream({"x": [common[-1]], "rho": [rho]}, rollover=600)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(Exception):  # a readout must not kill the loop
                self._update()

    def stop(self) -> None:
        """Stop updating (the readouts and the panel keep their last values)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
