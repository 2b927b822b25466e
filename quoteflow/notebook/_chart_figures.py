"""The Bokeh figures of :class:`~quoteflow.notebook.LiveChart` (layout only, no data flow).

One price panel (a tick line with its bid/ask band, or OHLC candles with the forming
candle paler) over an optional volume panel sharing its x-range; or, for several symbols
at once, one overlay of every symbol's price normalised to 100 at its first tick.
Every panel has a title naming what it shows, labelled axes with units, a legend and a
hover tool.
"""

from __future__ import annotations

from typing import Any, Literal

from bokeh.layouts import column
from bokeh.models import BasicTicker, ColumnDataSource, DataRange1d, HoverTool, NumeralTickFormatter
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

__all__ = [
    "OVERLAY_COLUMNS",
    "overlay_figure",
    "price_volume_figures",
    "tick_bar_figures",
    "time_axis_label",
]

_LINE = "#1f77b4"
_VOLUME = "#9e9e9e"
_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"

#: Columns of one symbol's source in the overlay view.
OVERLAY_COLUMNS = ("x", "y", "price")

_TIME_TIP = ("time", "@x{%H:%M:%S.%3N}")


def time_axis_label(market: Any) -> str:
    """The x-axis label: wall-clock UTC, and plainly "simulated" for a simulated market.

    The simulated market stamps ticks with the wall clock but advances its models by
    ``speed`` years per second (one trading day per second by default): the time axis is
    not the time the prices describe, and the label says so.
    """
    speed = getattr(market, "speed", None)
    if not isinstance(speed, int | float) or speed <= 0:
        return "time (UTC)"
    days = speed * 252.0
    return (
        f"wall-clock time (UTC) · SIMULATED market: 1 s = {days:.3g} simulated trading "
        f"day{'s' if days != 1 else ''}"
    )


def _price_figure(
    title: str,
    width: int,
    height: int,
    time_label: str,
    y_label: str,
    span: float | None,
    x_range: Any = None,
) -> Any:
    # A trailing window of ``span`` seconds: charts with the same span (ticks and bars of
    # the same feed) show the same stretch of time, edge to edge.
    if x_range is None:
        x_range = (
            DataRange1d(follow="end", follow_interval=span * 1000.0, range_padding=0)
            if span
            else DataRange1d()
        )
    fig = figure(
        x_range=x_range,
        title=title,
        x_axis_type="datetime",
        x_axis_label=time_label,
        y_axis_label=y_label,
        width=width,
        height=height,
        tools=_TOOLS,
        toolbar_location="right",
    )
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0.00")
    return fig


def price_volume_figures(
    kind: str,
    source: ColumnDataSource,
    live: ColumnDataSource,
    *,
    title: str,
    width: int,
    height: int,
    unit: str,
    time_label: str,
    volume: bool = True,
    span: float | None = None,
    x_range: Any = None,
) -> tuple[Any, Any]:
    """The single-symbol layout; returns ``(layout, price_figure)``.

    Parameters
    ----------
    kind
        ``"line"`` (ticks: last price and bid/ask band) or ``"candles"`` (bars).
    source
        Data of the shown symbol (columns of ``LiveChart``'s kind).
    live
        One-row source of the forming candle (candles only).
    title, width, height
        Of the price panel; the volume panel is a third as high.
    unit
        Price unit for the axis label (e.g. ``"USD"``).
    time_label
        x-axis label (see :func:`time_axis_label`).
    volume
        Add the volume panel below the price panel.
    span
        Seconds of time shown, trailing the latest point (``None``: all the data).
    x_range
        A range model to share (linked panels); default: a new one (see ``span``).
    """
    price = _price_figure(title, width, height, time_label, f"price ({unit})", span, x_range)
    if kind == "line":
        price.varea(
            x="x",
            y1="bid",
            y2="ask",
            source=source,
            fill_alpha=0.2,
            fill_color=_LINE,
            legend_label="bid/ask",
        )
        main = price.line(
            x="x", y="price", source=source, line_width=2, color=_LINE, legend_label="last"
        )
        tips = [
            _TIME_TIP,
            ("price", "@price{0,0.00}"),
            ("bid", "@bid{0,0.00}"),
            ("ask", "@ask{0,0.00}"),
            ("size", "@volume{0,0}"),
        ]
        mode: Literal["mouse", "vline"] = "vline"
    else:
        main = None
        for s, alpha, label in ((source, 1.0, "bar"), (live, 0.5, "forming bar")):
            price.segment(
                x0="x", y0="high", x1="x", y1="low", source=s, color="color", line_alpha=alpha
            )
            body = price.vbar(
                x="x",
                top="open",
                bottom="close",
                width="w",
                source=s,
                fill_color="color",
                line_color="color",
                fill_alpha=alpha,
                line_alpha=alpha,
                legend_label=label,
            )
            main = main or body
        tips = [
            _TIME_TIP,
            ("open", "@open{0,0.00}"),
            ("high", "@high{0,0.00}"),
            ("low", "@low{0,0.00}"),
            ("close", "@close{0,0.00}"),
            ("volume", "@volume{0,0}"),
        ]
        mode = "mouse"
    price.add_tools(
        HoverTool(renderers=[main], tooltips=tips, formatters={"@x": "datetime"}, mode=mode)
    )
    price.legend.location = "top_left"
    price.legend.label_text_font_size = "8pt"
    price.legend.background_fill_alpha = 0.6
    if not volume:
        return price, price
    price.xaxis.axis_label = None
    vol = figure(
        x_axis_type="datetime",
        x_range=price.x_range,  # linked: pan or zoom one, the other follows
        y_range=DataRange1d(start=0),
        x_axis_label=time_label,
        y_axis_label="shares",
        width=width,
        height=max(110, height // 3),
        tools="",
        toolbar_location=None,
    )
    vol.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    vol.yaxis.ticker = BasicTicker(desired_num_ticks=3)
    vol.vbar(x="x", top="volume", width="w", source=source, color=_VOLUME)
    return column(price, vol), price


def tick_bar_figures(
    ticks: ColumnDataSource,
    bars: ColumnDataSource,
    live: ColumnDataSource,
    *,
    titles: tuple[str, str],
    width: int,
    height: int,
    unit: str,
    time_label: str,
    volume: bool = True,
    span: float | None = None,
) -> tuple[Any, list[Any]]:
    """Ticks over candles (over volume) of one symbol, all on ONE shared x-range.

    The panels live in one layout, hence one Bokeh document: panning or zooming any of
    them moves the others. Returns ``(layout, [tick_figure, candle_figure])``.

    Parameters
    ----------
    ticks
        Tick data (``LiveChart`` ``kind="line"`` columns).
    bars, live
        Closed bars and the one-row forming bar (``kind="candles"`` columns).
    titles
        Of the tick panel and the candle panel.
    width, height
        Of each price panel; the volume panel is a third as high.
    unit, time_label, volume, span
        As for :func:`price_volume_figures`.
    """
    tick_fig, _ = price_volume_figures(
        "line", ticks, live, title=titles[0], width=width, height=height, unit=unit,
        time_label=time_label, volume=False, span=span,
    )  # fmt: skip
    tick_fig.xaxis.axis_label = None
    bar_layout, bar_fig = price_volume_figures(
        "candles", bars, live, title=titles[1], width=width, height=height, unit=unit,
        time_label=time_label, volume=volume, span=span, x_range=tick_fig.x_range,
    )  # fmt: skip
    return column(tick_fig, bar_layout), [tick_fig, bar_fig]


def overlay_figure(
    sources: dict[str, ColumnDataSource],
    *,
    title: str,
    width: int,
    height: int,
    time_label: str,
    span: float | None = None,
) -> Any:
    """Every symbol's price normalised to 100 at its first tick, one line each."""
    fig = _price_figure(title, width, height, time_label, "price, first tick = 100", span)
    lines = []
    for i, (symbol, src) in enumerate(sources.items()):
        lines.append(
            fig.line(
                x="x",
                y="y",
                source=src,
                line_width=2,
                color=Category10_10[i % 10],
                legend_label=symbol,
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=lines,
            tooltips=[_TIME_TIP, ("normalised", "@y{0.00}"), ("price", "@price{0,0.00}")],
            formatters={"@x": "datetime"},
            mode="mouse",
        )
    )
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.click_policy = "hide"
    return fig
