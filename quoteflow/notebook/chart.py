"""``LiveChart``: a live Bokeh price/volume chart fed by an SSE client inside the kernel.

Threading model (the one thing to get right here): the SSE client and every change to the
Bokeh document and the ipywidgets run as tasks on the *kernel's* event loop, captured when
the chart is created in a cell. Widget messages are sent over the kernel's comm, which is
not thread-safe, and a ``ColumnDataSource.stream()`` issued from another thread can race
the kernel's own traffic and leave a view empty for good. The price of this choice: a cell
that blocks the loop (``time.sleep``) also stalls the chart; use ``await asyncio.sleep``.

Redraws are throttled: events are accumulated in per-symbol buffers as they arrive and a
flush task sends them to the browser every ``interval`` seconds in one
``ColumnDataSource.stream(..., rollover=window)`` call, so a fast feed costs a few comm
messages per second, not one per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import inspect
import json
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import ipywidgets as widgets
from bokeh.models import ColumnDataSource
from bokeh.models.annotations.geometry import Span
from bokeh.models.annotations.labels import Label, Title

from quoteflow.notebook._bokeh import EchoFreeBokehModel, load_bokehjs
from quoteflow.notebook._chart_figures import (
    OVERLAY_COLUMNS,
    overlay_figure,
    price_volume_figures,
    tick_bar_figures,
    time_axis_label,
)
from quoteflow.notebook.frozen import LiveDisplay

__all__ = ["ChartKind", "ChartView", "LiveChart", "running_charts"]

#: Charts by key (see ``LiveChart(key=...)``): creating a chart under a key that is taken
#: closes the chart that had it, so re-running a chart cell leaves one chart, not two.
_chart_registry: dict[str, LiveChart] = {}

ChartKind = Literal["line", "candles", "both"]

_UP = "#26a69a"
_DOWN = "#ef5350"

ChartView = Literal["single", "overlay"]

#: Columns of the data source per chart kind (times are epoch milliseconds, UTC).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "line": ("x", "price", "bid", "ask", "volume", "w"),
    "candles": ("x", "open", "high", "low", "close", "volume", "w", "color"),
}
#: ``kind="both"``: its main source holds bars; ticks go to ``tick_source``.
_COLUMNS["both"] = _COLUMNS["candles"]


def _epoch_ms(ts: Any) -> float:
    """ISO-8601 timestamp (``2026-11-27T02:03:04.567Z``) or epoch number -> epoch ms."""
    if isinstance(ts, int | float):
        # Heuristic: values that look like seconds are converted, ms kept as they are.
        return float(ts) * 1000.0 if ts < 1e11 else float(ts)
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp() * 1000.0


def _id_order(event_id: str) -> tuple[int, ...]:
    """Order of event ids of either broker (``"12"``, ``"1764212345678-3"``)."""
    try:
        return tuple(int(p) for p in event_id.split("-"))
    except ValueError:
        return (0,)


def _stream_url(url: Any) -> str:
    """The ``/stream`` endpoint for a server base URL, a ``/stream`` URL or a server handle."""
    base = str(getattr(url, "url", url))
    if base.rstrip("/").endswith("/stream"):
        return base
    return base.rstrip("/") + "/stream"


#: The request being executed and how many charts it has created so far.
_request_count: dict[str, int] = {}


def _cell_key() -> str | None:
    """``<cell>#<n>``: the executing cell and this chart's rank among the charts it made.

    The cell is JupyterLab's ``cellId`` or, for frontends that send none (nbclient, the
    console), a hash of the cell's code, so running the same code again is a re-run. The
    rank tells apart several charts made by one cell, the same way on every re-run.
    """
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return None
    with contextlib.suppress(Exception):
        parent = kernel.get_parent()
        request = str(parent.get("header", {}).get("msg_id", ""))
        cell = parent.get("metadata", {}).get("cellId")
        if not cell:
            code = str(parent.get("content", {}).get("code", ""))
            cell = "code-" + hashlib.sha1(code.encode()).hexdigest()[:12] if code else None
        if cell is None:
            return None
        if request not in _request_count:
            _request_count.clear()  # a new request: older counts are no longer needed
        rank = _request_count[request] = _request_count.get(request, 0) + 1
        return f"{cell}#{rank}"
    return None


def running_charts() -> list[LiveChart]:
    """The registered charts that are connected or trying to connect (one per key)."""
    return [c for c in _chart_registry.values() if c.running]


@dataclass
class _Rate:
    """Events per second over a sliding window (a deque of arrival times)."""

    span: float = 2.0

    def __post_init__(self) -> None:
        self._times: deque[float] = deque()

    def add(self, t: float) -> None:
        self._times.append(t)

    def value(self, now: float) -> float:
        while self._times and now - self._times[0] > self.span:
            self._times.popleft()
        return len(self._times) / self.span


class LiveChart(widgets.VBox):  # type: ignore[misc]
    """A live price and volume chart of a quoteflow SSE stream, as an ipywidget.

    Create it in a notebook cell and display it (it is the cell's value); it connects at
    once and keeps drawing while the kernel is idle or awaiting (``await
    asyncio.sleep(...)``). Several charts can run at the same time, each with its own
    connection.

    Parameters
    ----------
    url
        Server base URL (``http://127.0.0.1:8080``), its ``/stream`` URL, or the handle
        returned by :func:`quoteflow.notebook.serve_in_background`.
    symbols
        Symbols to subscribe to; the picker switches between them. ``None`` subscribes to
        every symbol and fills the picker as symbols appear.
    kind
        ``"line"``: tick prices with bid/ask band and tick sizes as volume;
        ``"candles"``: OHLCV bars from ``bar`` events, plus a forming candle built from
        ticks so the chart moves between bars; ``"both"``: a tick panel over a candle
        panel (and volume) of the same symbol in ONE Bokeh document with ONE shared
        x-range, so panning or zooming either moves the other, fed by one connection
        (``events=tick,bar``). Its ``source`` holds the bars, ``tick_source`` the ticks.
    window
        Points (ticks or bars) kept and shown per symbol; older ones roll off
        (``kind="both"``: ticks and bars each).
    interval
        Seconds between redraws; events arriving in between are sent in one batch.
    title
        What the chart shows, after the symbol in its title (default: "ticks" or "bars";
        ``kind="both"`` names its two panels itself).
    width, height
        Size of the price panel in pixels (the volume panel is a third of ``height``).
    view
        ``"single"``: one symbol at a time, picked from the dropdown; ``"overlay"``
        (``kind="line"`` only): every symbol at once, each normalised to 100 at its
        first tick, so that symbols of different price levels can be compared.
    unit
        Price unit for the axis label.
    volume
        Show the volume panel below the price panel (``view="single"``).
    span
        Seconds of time shown, trailing the latest event (``None``: the whole window).
        Give a tick chart and a bar chart of the same feed the same span and their time
        axes show the same stretch of time.
    backfill
        Candle charts (``kind="candles"``, ``"both"``) open with history: the completed
        bars of ``GET /history`` for each listed symbol (and for a symbol when it is
        first picked), then continue live from their ``last_event_id`` with no gap and
        no bar twice (docs/notebook.md, "Back-fill").
    autostart
        Connect immediately (default). Otherwise call :meth:`start`.
    key
        Registry key: creating a chart under a key already in use closes the chart that
        had it. Default: the executing notebook cell's id and the chart's rank among the
        charts that cell creates, so re-running a cell replaces its charts (and several
        charts in one cell keep each other). Outside a notebook cell with no ``key``:
        not registered.
    **client_options
        Passed to :func:`quoteflow.client.stream` (e.g. ``token``, ``heartbeat_timeout``).

    Attributes
    ----------
    source
        The kernel-side :class:`bokeh.models.ColumnDataSource` of the shown symbol.
    status
        The :class:`ipywidgets.HTML` status line.
    events_received
        Events this chart has received.
    """

    # Class-level defaults so that close() (also called by Widget.__del__) works on an
    # instance whose __init__ failed half-way.
    _running = False
    _closed = False
    _tasks: list[asyncio.Task[None]] = []  # noqa: RUF012 - replaced per instance

    def __init__(
        self,
        url: Any,
        symbols: str | Sequence[str] | None = None,
        *,
        kind: ChartKind = "line",
        window: int = 600,
        interval: float = 0.2,
        title: str | None = None,
        width: int = 760,
        height: int = 300,
        autostart: bool = True,
        key: str | None = None,
        view: ChartView = "single",
        unit: str = "USD",
        volume: bool = True,
        span: float | None = None,
        backfill: bool = True,
        **client_options: Any,
    ) -> None:
        if kind not in _COLUMNS:
            raise ValueError(f"kind must be 'line', 'candles' or 'both', got {kind!r}")
        if view not in ("single", "overlay"):
            raise ValueError(f"view must be 'single' or 'overlay', got {view!r}")
        if view == "overlay" and (kind != "line" or not symbols):
            raise ValueError("view='overlay' needs kind='line' and the symbols to overlay")
        if int(window) < 2:
            raise ValueError(f"window must be at least 2 points, got {window!r}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.url = _stream_url(url)
        self.view: ChartView = view
        self.unit = unit
        self._volume = bool(volume)
        self.span = None if span is None else float(span)
        self._market = getattr(url, "market", None)
        #: (epoch ms, label) of every :meth:`mark`.
        self.marks: list[tuple[float, str]] = []
        # A server handle is followed by name: re-running its cell (a new server under
        # the same name, possibly elsewhere) moves the chart to the new one.
        self._server_name: str | None = getattr(url, "name", None) if hasattr(url, "url") else None
        self.kind: ChartKind = kind
        self.window = int(window)
        self.interval = float(interval)
        if isinstance(symbols, str):
            symbols = [s.strip() for s in symbols.split(",") if s.strip()]
        self.symbols: list[str] | None = list(symbols) if symbols else None
        self._client_options = client_options

        # Captured here, in the cell, so that every later document/widget change happens
        # on the kernel's own loop (see the module docstring).
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

        cols = _COLUMNS[kind]
        self._history: dict[str, deque[tuple[Any, ...]]] = {}
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._forming: dict[str, dict[str, float]] = {}
        self._forming_dirty: set[str] = set()
        self._bar_ms: dict[str, float] = {}
        self._backfill = bool(backfill) and kind != "line"
        #: Symbols whose history was fetched (or is being fetched), and bars it gave.
        self._backfilled: set[str] = set()
        self.bars_backfilled = 0
        self._last_bar_start: dict[str, float] = {}
        self._tick_ms: dict[str, float] = {}
        self._last_x: dict[str, float] = {}
        self._last_tick_x: dict[str, float] = {}
        # kind="both": the ticks, kept and sent beside the bars.
        self._tick_history: dict[str, deque[tuple[Any, ...]]] = {}
        self._tick_pending: dict[str, list[tuple[Any, ...]]] = {}
        self.tick_source = ColumnDataSource({c: [] for c in _COLUMNS["line"]})
        empty: dict[str, Any] = {c: [] for c in cols}
        self.source = ColumnDataSource(empty)
        self._live = ColumnDataSource(self._forming_columns(None))
        self._overlay: dict[str, ColumnDataSource] = {}
        self._first_price: dict[str, float] = {}
        if view == "overlay":
            self._overlay = {
                s: ColumnDataSource({c: [] for c in OVERLAY_COLUMNS}) for s in self.symbols or []
            }
            self.source = next(iter(self._overlay.values()))
        self._rate = _Rate()
        self.events_received = 0
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None
        self._client: Any = None
        self._tasks = []
        self._paused = False
        self._status_text = ""
        self._status_at = 0.0
        self._reconnects_base = 0

        load_bokehjs()
        self._title = title
        self._layout = self._build_figures(
            self._title_text(self.symbols[0] if self.symbols else None), width, height
        )
        self.plot = EchoFreeBokehModel(self._layout)

        initial = self.symbols or []
        self.picker = widgets.Dropdown(
            options=initial,
            value=initial[0] if initial else None,
            description="symbol",
            # The overlay shows every symbol: nothing to pick.
            layout=widgets.Layout(width="200px", display="none" if view == "overlay" else None),
        )
        self.picker.observe(self._on_pick, names="value")
        self.pause_button = widgets.ToggleButton(
            value=False, description="pause", icon="pause", tooltip="pause/resume drawing"
        )
        self.pause_button.observe(self._on_pause, names="value")
        self.status = widgets.HTML(value="")
        controls = widgets.HBox([self.picker, self.pause_button, self.status])
        self._outputs = LiveDisplay(self, lambda: self.status.value + self.snapshot()._repr_html_())
        super().__init__(children=[controls, self.plot])
        self.add_class("quoteflow-livechart")  # how tests and styles find a live chart
        self._update_status(force=True)
        self.key = key if key is not None else self._default_key()
        if self.key is not None:
            previous = _chart_registry.pop(self.key, None)
            if previous is not None and previous is not self:
                previous.close()
            _chart_registry[self.key] = self
        if autostart:
            self.start()

    def _default_key(self) -> str | None:
        return _cell_key()

    # ------------------------------------------------------------------ figures

    def _forming_columns(self, bar: dict[str, float] | None) -> dict[str, Any]:
        if bar is None:
            nan = math.nan
            return {
                "x": [nan],
                "open": [nan],
                "high": [nan],
                "low": [nan],
                "close": [nan],
                "w": [0.0],
                "color": [_UP],
            }
        return {
            "x": [bar["x"]],
            "open": [bar["open"]],
            "high": [bar["high"]],
            "low": [bar["low"]],
            "close": [bar["close"]],
            "w": [bar["w"]],
            "color": [_UP if bar["close"] >= bar["open"] else _DOWN],
        }

    def _title_text(self, symbol: str | None, kind: str | None = None) -> str:
        # kind="both": the first (titled) panel is the tick panel.
        kind = kind or ("line" if self.kind == "both" else self.kind)
        what = "last price and bid/ask, ticks" if kind == "line" else "OHLC bars"
        if self.kind == "both" and kind != "line":
            what = "OHLC bars, x-range linked to the ticks above"
        head = what if self.kind == "both" or not self._title else self._title
        if self.view == "overlay":
            return f"{', '.join(self.symbols or [])} · {head}, normalised to 100"
        return f"{symbol} · {head}" if symbol else head

    def _build_figures(self, title: str, width: int, height: int) -> Any:
        layout, self._panel_figs = self._make_layout(
            self.source, self._live, self._overlay, title, width, height, self.tick_source
        )
        self._price_fig = self._panel_figs[0][1]
        return layout

    def _make_layout(
        self,
        source: ColumnDataSource,
        live: ColumnDataSource,
        overlay: dict[str, ColumnDataSource],
        title: str,
        width: int,
        height: int,
        ticks: ColumnDataSource | None = None,
    ) -> tuple[Any, list[tuple[str, Any]]]:
        """(layout, [(kind, price figure), ...]) of this chart's view over the sources."""
        time_label = time_axis_label(self._market)
        if self.kind == "both":
            first = self.symbols[0] if self.symbols else None
            symbol = self.symbol if hasattr(self, "picker") else first
            layout, figs = tick_bar_figures(
                ticks if ticks is not None else ColumnDataSource(self._columns((), "line")),
                source,
                live,
                titles=(title, self._title_text(symbol, "candles")),
                width=width,
                height=height,
                unit=self.unit,
                time_label=time_label,
                volume=self._volume,
                span=self.span,
            )
            return layout, [("line", figs[0]), ("candles", figs[1])]
        if self.view == "overlay":
            fig = overlay_figure(
                overlay, title=title, width=width, height=height, time_label=time_label,
                span=self.span,
            )  # fmt: skip
            return fig, [(self.kind, fig)]
        layout, fig = price_volume_figures(
            self.kind,
            source,
            live,
            title=title,
            width=width,
            height=height,
            unit=self.unit,
            time_label=time_label,
            volume=self._volume,
            span=self.span,
        )
        return layout, [(self.kind, fig)]

    def prices(self, symbol: str | None = None) -> list[tuple[float, float]]:
        """``(epoch ms, price)`` of the points kept for ``symbol`` (default: the shown one).

        Tick charts (and ``kind="both"``) give last prices, candle charts bar closes; at
        most ``window`` points.
        """
        symbol = symbol or self.symbol
        if self.kind == "both":
            return [(float(r[0]), float(r[1])) for r in self._tick_history.get(symbol or "", ())]
        rows = self._history.get(symbol or "", ())
        col = 1 if self.kind == "line" else 4
        return [(float(r[0]), float(r[col])) for r in rows]

    def snapshot(self, title: str | None = None) -> Any:
        """A static copy of the chart as it is now (survives save/reopen and HTML export).

        Returns
        -------
        StaticFigure
            Display it as a cell's value; it needs neither the kernel nor the internet.
        """
        from quoteflow.notebook.static import static_figure

        sources = {}
        for symbol in self._overlay:
            rows = list(self._history.get(symbol, ()))
            first = self._first_price.get(symbol, rows[0][1] if rows else 1.0)
            sources[symbol] = ColumnDataSource(
                {
                    "x": [r[0] for r in rows],
                    "y": [100.0 * r[1] / first for r in rows],
                    "price": [r[1] for r in rows],
                }
            )
        shown = self.symbol or ""
        layout, panels = self._make_layout(
            ColumnDataSource(self._columns(self._history.get(shown, ()))),
            ColumnDataSource(self._forming_columns(self._forming.get(shown))),
            sources,
            self._price_fig.title.text,
            self._price_fig.width,
            self._price_fig.height,
            ColumnDataSource(self._columns(self._tick_history.get(shown, ()), "line")),
        )
        for x, label in self.marks:
            for _, panel in panels:
                _draw_mark(panel, x, label)
        return static_figure(layout, title=title or f"snapshot: {self._price_fig.title.text}")

    def mark(self, label: str, color: str = "#ff8f00") -> None:
        """Draw a vertical line at the time of the latest event, labelled ``label``.

        Use it where something changed (a slider moved a parameter): the chart shows
        where the stream should start to look different. Kernel loop only (a cell or a
        widget callback).
        """
        x = max([*self._last_x.values(), *self._last_tick_x.values()], default=time.time() * 1000.0)
        for _, panel in self._panel_figs:
            _draw_mark(panel, x, label, color)
        self.marks.append((x, label))

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """True while the chart is connected or trying to connect."""
        return self._running

    @property
    def paused(self) -> bool:
        """True while drawing is paused (events are still received and kept)."""
        return self._paused

    @property
    def symbol(self) -> str | None:
        """The symbol on show."""
        value = self.picker.value
        return None if value is None else str(value)

    @symbol.setter
    def symbol(self, value: str) -> None:
        if value not in self.picker.options:
            self.picker.options = [*self.picker.options, value]
        self.picker.value = value

    def start(self) -> None:
        """Connect (again) and start drawing. Idempotent."""
        if self._closed:
            raise RuntimeError("this LiveChart was closed; create a new one")
        if self._running:
            return
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "LiveChart needs a running event loop: create it in a notebook cell "
                    "(the kernel's loop) or inside a coroutine"
                ) from None
        self._running = True
        self._tasks = [loop.create_task(self._receive()), loop.create_task(self._redraw_loop())]
        self._update_status(force=True)

    def stop(self) -> None:
        """Disconnect and stop drawing; the chart stays on screen as it is. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._drop_client()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._flush()
        self._update_status(force=True)

    def freeze(self) -> None:
        """Stop, and replace every output showing the chart with :meth:`snapshot` (static:
        it survives a saved and reopened notebook, see :mod:`quoteflow.notebook.frozen`)."""
        self.stop()
        self._outputs.freeze()

    def _ipython_display_(self) -> None:
        self._outputs.show()

    def close(self) -> None:
        """Stop and close the widget and its views (releases the connection)."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        key = getattr(self, "key", None)
        if key is not None and _chart_registry.get(key) is self:
            del _chart_registry[key]
        parts = [getattr(self, n, None) for n in ("plot", "picker", "pause_button", "status")]
        for w in (*parts, *self.children):
            if w is None:
                continue
            if w.comm is not None or isinstance(w, EchoFreeBokehModel):
                w.close()
        super().close()

    def pause(self) -> None:
        """Freeze the drawing; events keep arriving and are drawn on :meth:`resume`."""
        self.pause_button.value = True

    def resume(self) -> None:
        """Resume drawing after :meth:`pause`."""
        self.pause_button.value = False

    def resync(self) -> None:
        """Re-render every view of the chart from the current data (catches up late views)."""
        self.plot.resync()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # A second display() creates a new view that would start from the state at
        # creation; bring every view up to date first.
        if not self._closed:
            self.plot.resync()
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ tasks

    async def _receive(self) -> None:
        """Consume the SSE stream (runs on the kernel loop until stopped)."""
        from quoteflow.client import stream

        events = "tick" if self.kind == "line" else "tick,bar"
        options = dict(self._client_options)
        options.setdefault("events", events.split(","))
        if self.symbols:
            options.setdefault("symbols", list(self.symbols))
        user_on_status = options.pop("on_status", None)

        def on_status(client: Any) -> None:
            # Connection changes show at once; the throttle is for the counters only.
            self._update_status(force=True)
            if user_on_status is not None:
                user_on_status(client)

        options["on_status"] = on_status
        try:
            if self._backfill and not options.get("last_event_id"):
                resume = await self._backfill_symbols(self.symbols or [], options.get("token"))
                if resume is not None:
                    options["last_event_id"] = resume
            self._client = stream(self.url, **options)
            async for ev in self._client:
                if not self._running:
                    break
                self._on_event(ev.event, ev.data)
            else:
                if self._running:
                    # The client only ends by itself when the server says so (HTTP 204).
                    self.last_error = "the server ended the stream"
                    self._running = False
                    self._update_status(force=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown in the status line: a chart must not crash a cell
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._running = False
            self._update_status(force=True)

    async def _backfill_symbols(self, symbols: Sequence[str], token: Any) -> str | None:
        """Draw the completed bars of ``/history`` for ``symbols``; the id to stream from.

        One stream serves every symbol, so it resumes after the oldest of the
        ids in ``last_event_id``: the bars replayed for the other symbols are ones they
        already have, and :meth:`_row` skips them.
        """
        from quoteflow.client import ahistory

        ids: list[str] = []
        for symbol in symbols:
            if symbol in self._backfilled:
                continue
            self._backfilled.add(symbol)
            try:
                h = await ahistory(self.url, symbol, limit=self.window, token=token)
            except Exception as exc:  # no history (an older server): live only
                self.last_error = f"history: {exc}"
                return None
            received, latency = self.events_received, self.last_latency_ms
            for bar in h.bars:
                self._on_event("bar", json.dumps({"symbol": h.symbol, **bar.to_dict()}))
            self.bars_backfilled += len(h.bars)
            self.events_received, self.last_latency_ms = received, latency
            if h.last_event_id is not None:
                ids.append(h.last_event_id)
        # A symbol without bars yet has nothing before the oldest id to miss.
        return min(ids, key=_id_order) if ids else None

    async def _backfill_picked(self, symbol: str) -> None:
        """Put the history of a symbol picked for the first time before its live bars."""
        from quoteflow.client import ahistory

        try:
            h = await ahistory(
                self.url, symbol, limit=self.window, token=self._client_options.get("token")
            )
        except Exception as exc:
            self.last_error = f"history: {exc}"
            return
        rows = self._history.get(symbol)
        if rows is None:
            return
        first = rows[0][0] if rows else math.inf
        older = []
        for bar in h.bars:
            row = self._bar_row(symbol, bar.to_dict())
            if row[0] < first:
                older.append(row)
        room = self.window - len(rows)
        if not older or room <= 0:
            return
        older = older[-room:]
        self.bars_backfilled += len(older)
        rows.extendleft(reversed(older))
        if self.symbol == symbol:
            self.source.data = self._columns(rows)

    def _drop_client(self, reconnect: bool = False) -> None:
        """Close the SSE client, keeping its reconnect count (plus one for a move)."""
        client, self._client = self._client, None
        self._reconnects_base += int(getattr(client, "reconnects", 0) or 0) + int(reconnect)
        if client is not None and hasattr(client, "close"):
            result = client.close()
            if inspect.isawaitable(result) and self._loop is not None:
                self._loop.create_task(_await(result))

    def _follow_server(self) -> None:
        """Reconnect to the server now registered under our server's name, if it moved."""
        if self._server_name is None:
            return
        from quoteflow.notebook.server import running_servers

        current = running_servers().get(self._server_name)
        if current is None or _stream_url(current) == self.url:
            return
        self.url = _stream_url(current)
        receiver = self._tasks[0] if self._tasks else None
        self._drop_client(reconnect=True)
        if receiver is not None and self._loop is not None:
            receiver.cancel()
            self._tasks[0] = self._loop.create_task(self._receive())

    async def _redraw_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.interval)
            try:
                self._follow_server()
                self._flush()
                self._update_status()
            except Exception as exc:  # keep drawing; say what went wrong
                self.last_error = f"redraw: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ events

    def _on_event(self, event: str, data: str) -> None:
        if event not in ("tick", "bar"):
            return  # reset/snapshot and unknown events carry nothing to draw
        try:
            d = json.loads(data)
        except ValueError:
            return
        now = time.time()
        self.events_received += 1
        self._rate.add(now)
        symbol = str(d.get("symbol", ""))
        if not symbol:
            return
        stamp = d.get("ts") if event == "tick" else d.get("end")
        if stamp is not None:
            with contextlib.suppress(ValueError, TypeError):
                self.last_latency_ms = now * 1000.0 - _epoch_ms(stamp)
        if symbol not in self._history:
            if self.symbols is not None and symbol not in self.symbols:
                return
            self._history[symbol] = deque(maxlen=self.window)
            self._pending[symbol] = []
            if self.kind == "both":
                self._tick_history[symbol] = deque(maxlen=self.window)
                self._tick_pending[symbol] = []
            if symbol not in self.picker.options:
                self.picker.options = [*self.picker.options, symbol]
            if self.picker.value is None:
                self.picker.value = symbol
        row = self._row(event, symbol, d)
        if row is not None:
            self._history[symbol].append(row)
            self._pending[symbol].append(row)
        if self.kind == "both" and event == "tick":
            tick = self._tick_row(symbol, d)
            self._tick_history[symbol].append(tick)
            self._tick_pending[symbol].append(tick)

    def _row(self, event: str, symbol: str, d: dict[str, Any]) -> tuple[Any, ...] | None:
        if self.kind == "line":
            return self._tick_row(symbol, d) if event == "tick" else None
        if event == "tick":
            self._extend_forming(symbol, d)
            return None
        start = _epoch_ms(d["start"])
        if start <= self._last_bar_start.get(symbol, -math.inf):
            return None  # already drawn (back-filled, then replayed by the stream)
        self._last_bar_start[symbol] = start
        self._forming.pop(symbol, None)
        self._forming_dirty.add(symbol)
        self._last_x[symbol] = _epoch_ms(d["end"])
        return self._bar_row(symbol, d)

    def _bar_row(self, symbol: str, d: dict[str, Any]) -> tuple[Any, ...]:
        """A row of candle columns from a bar payload."""
        start, end = _epoch_ms(d["start"]), _epoch_ms(d["end"])
        self._bar_ms[symbol] = end - start
        o, c = float(d["open"]), float(d["close"])
        return (
            (start + end) / 2.0,
            o,
            float(d["high"]),
            float(d["low"]),
            c,
            float(d.get("volume", 0.0)),
            0.8 * (end - start),
            _UP if c >= o else _DOWN,
        )

    def _tick_row(self, symbol: str, d: dict[str, Any]) -> tuple[Any, ...]:
        """A row of ``kind="line"`` columns from a tick."""
        x = _epoch_ms(d["ts"])
        last = self._last_tick_x.get(symbol)
        if last is not None and x > last:
            # Volume bars as wide as the typical tick spacing (smoothed).
            gap = x - last
            self._tick_ms[symbol] = 0.8 * self._tick_ms.get(symbol, gap) + 0.2 * gap
        self._last_tick_x[symbol] = x
        w = 0.8 * self._tick_ms.get(symbol, 200.0)
        price = float(d["price"])
        return (
            x,
            price,
            float(d.get("bid", price)),
            float(d.get("ask", price)),
            float(d.get("size", 0.0)),
            w,
        )

    def _extend_forming(self, symbol: str, d: dict[str, Any]) -> None:
        """Grow the not-yet-closed candle of ``symbol`` from a tick."""
        p = float(d["price"])
        t = _epoch_ms(d["ts"])
        bar = self._forming.get(symbol)
        if bar is None:
            start = self._last_x.get(symbol, t)
            bar = {"start": start, "open": p, "high": p, "low": p, "close": p}
            self._forming[symbol] = bar
        bar["high"] = max(bar["high"], p)
        bar["low"] = min(bar["low"], p)
        bar["close"] = p
        span = self._bar_ms.get(symbol, max(t - bar["start"], 1.0))
        bar["x"] = bar["start"] + span / 2.0
        bar["w"] = 0.8 * span
        self._forming_dirty.add(symbol)

    # ------------------------------------------------------------------ drawing

    def _columns(self, rows: Iterable[tuple[Any, ...]], kind: str | None = None) -> dict[str, Any]:
        names = _COLUMNS[kind or self.kind]
        out: dict[str, Any] = {c: [] for c in names}
        for row in rows:
            for c, v in zip(names, row, strict=True):
                out[c].append(v)
        return out

    def _flush(self) -> None:
        """Send what arrived since the last flush to the browser (kernel loop only)."""
        if self._paused or self._closed:
            return
        if self.view == "overlay":
            self._flush_overlay()
            return
        symbol = self.symbol
        if symbol is None:
            return
        rows = self._pending.get(symbol)
        if rows:
            self._pending[symbol] = []
            self.source.stream(self._columns(rows[-self.window :]), rollover=self.window)
        ticks = self._tick_pending.get(symbol)
        if ticks:
            self._tick_pending[symbol] = []
            self.tick_source.stream(
                self._columns(ticks[-self.window :], "line"), rollover=self.window
            )
        for pendings in (self._pending, self._tick_pending):
            for other, pending in pendings.items():
                if other != symbol:
                    pending.clear()  # kept in history; drawn from there when picked
        if self.kind != "line" and symbol in self._forming_dirty:
            self._forming_dirty.clear()
            # Patch the one-row source in place: a patch echo is dropped like a stream echo.
            new = self._forming_columns(self._forming.get(symbol))
            self._live.patch({k: [(0, v[0])] for k, v in new.items()})

    def _flush_overlay(self) -> None:
        for symbol, rows in self._pending.items():
            src = self._overlay.get(symbol)
            if not rows or src is None:
                continue
            self._pending[symbol] = []
            rows = rows[-self.window :]
            first = self._first_price.setdefault(symbol, float(rows[0][1]))
            src.stream(
                {
                    "x": [r[0] for r in rows],
                    "y": [100.0 * r[1] / first for r in rows],
                    "price": [r[1] for r in rows],
                },
                rollover=self.window,
            )

    def _on_pick(self, change: dict[str, Any]) -> None:
        symbol = change["new"]
        if symbol is None or self.view == "overlay":
            return
        if self._backfill and symbol not in self._backfilled and self._loop is not None:
            self._backfilled.add(symbol)
            self._tasks.append(self._loop.create_task(self._backfill_picked(symbol)))
        # Replace, not stream: the new symbol's history is drawn in one go.
        self.source.data = self._columns(self._history.get(symbol, ()))
        if symbol in self._pending:
            self._pending[symbol] = []
        if self.kind == "both":
            self.tick_source.data = self._columns(self._tick_history.get(symbol, ()), "line")
            self._tick_pending[symbol] = []
        if self.kind != "line":
            self._live.data = self._forming_columns(self._forming.get(symbol))
        for kind, panel in self._panel_figs:
            if isinstance(panel.title, Title):
                panel.title.text = self._title_text(str(symbol), kind)
        self._update_status(force=True)

    def _on_pause(self, change: dict[str, Any]) -> None:
        self._paused = bool(change["new"])
        self.pause_button.description = "resume" if self._paused else "pause"
        self.pause_button.icon = "play" if self._paused else "pause"
        if not self._paused:
            self._flush()
        self._update_status(force=True)

    # ------------------------------------------------------------------ status

    def stats(self) -> dict[str, Any]:
        """Counters shown in the status line, as a dict."""
        client = self._client
        now = time.time()
        # A stopped chart receives nothing: its rate is 0, not the last one measured.
        rate = self._rate.value(now) if self._running else 0.0
        connected = getattr(client, "connected", None)
        if connected is None:  # a client without the flag: judge by recent traffic
            connected = rate > 0
        return {
            "connected": bool(connected) and self._running,
            "running": self._running,
            "paused": self._paused,
            "symbol": self.symbol,
            "events_received": self.events_received,
            "events_per_second": rate,
            "latency_ms": self.last_latency_ms,
            "reconnects": int(getattr(client, "reconnects", 0) or 0) + self._reconnects_base,
            "last_error": getattr(client, "last_error", None) or self.last_error,
            "points": len(self.source.data.get("x", [])),
        }

    def _update_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < 0.5:
            return  # a status line changing 5x a second is noise, and comm traffic
        self._status_at = now
        s = self.stats()
        if not s["running"]:
            state = "<span style='color:#888'>&#9632; stopped</span>"
        elif s["connected"]:
            state = "<span style='color:#2e7d32'>&#9679; connected</span>"
        else:
            state = "<span style='color:#c62828'>&#9675; connecting&hellip;</span>"
        parts = [state]
        if s["paused"]:
            parts.append("<b>paused</b>")
        parts.append(f"{s['events_per_second']:.1f} events/s")
        lat = s["latency_ms"]
        parts.append("latency " + ("&ndash;" if lat is None else f"{lat:.0f} ms"))
        parts.append(f"reconnects {s['reconnects']}")
        parts.append(f"{s['events_received']} events")
        err = s["last_error"]
        if err and not s["connected"]:
            parts.append(f"<span style='color:#c62828'>{html.escape(str(err))[:120]}</span>")
        text = (
            "<span style='font-family:monospace;font-size:12px'>"
            + " &middot; ".join(parts)
            + "</span>"
        )
        if text != self._status_text:
            self._status_text = text
            self.status.value = text


def _draw_mark(fig: Any, x: float, label: str, color: str = "#ff8f00") -> None:
    """A dashed vertical line at ``x`` (epoch ms) with ``label`` at its foot."""
    fig.add_layout(Span(location=x, dimension="height", line_color=color, line_dash="dashed"))
    fig.add_layout(
        Label(
            x=x,
            y=4,
            y_units="screen",
            x_offset=3,
            text=label,
            text_font_size="8pt",
            text_color=color,
        )
    )


async def _await(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable
