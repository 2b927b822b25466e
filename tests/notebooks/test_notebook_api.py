"""quoteflow.notebook without a browser: server handle, LiveChart, echo suppression, panel.

Real servers on free ports, the real SSE client on an asyncio loop standing in for the
kernel's; no Jupyter kernel needed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bokeh.core.serialization import Serializer
from jupyter_bokeh import BokehModel

from quoteflow.errors import QuoteflowError
from quoteflow.market import Market
from quoteflow.models import GBM
from quoteflow.notebook import (
    BackgroundServer,
    CalibrationPanel,
    EchoFreeBokehModel,
    LiveChart,
    running_charts,
    running_servers,
    serve_in_background,
    stop_all,
)
from quoteflow.notebook.calibrate import diagnostics, standardized_residuals
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _market(seed: int = 1, **kw: Any) -> Market:
    kw.setdefault("tick_interval", 0.05)
    kw.setdefault("bar_interval", 0.5)
    return Market({"AAA": GBM(mu=0.05, sigma=0.3), "BBB": GBM(mu=0.0, sigma=0.2)}, seed=seed, **kw)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Await ``cond()`` on the loop (the chart's tasks keep running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_leaked_servers() -> Iterator[None]:
    yield
    stop_all()
    assert running_servers() == {}


# ------------------------------------------------------------------ server handle


def test_rerunning_the_cell_leaves_exactly_one_server_on_the_same_port() -> None:
    first = serve_in_background(_market(), name="cell")
    p1 = first.port
    assert p1 > 0 and _listening(p1)
    second = serve_in_background(_market(seed=2), name="cell")
    assert not first.running
    # The same address again, so that charts and clients of the first reconnect.
    assert second.port == p1 and _listening(p1)
    assert running_servers() == {"cell": second}
    second.stop()
    assert not _listening(p1)


def test_rerun_with_an_explicit_port_takes_that_port() -> None:
    first = serve_in_background(_market(), name="cell")
    other = free_port()
    second = serve_in_background(_market(), port=other, name="cell")
    assert not first.running and second.port == other and not _listening(first.port)


def test_stop_frees_the_port_and_is_idempotent() -> None:
    with serve_in_background(_market(), name="ctx") as handle:
        port = handle.port
        assert handle.url == f"http://127.0.0.1:{port}"
        assert handle.stream_url == f"http://127.0.0.1:{port}/stream"
        assert "running" in handle._repr_html_()
    assert _bindable(port)
    handle.stop()  # again: no error
    assert "stopped" in handle._repr_html_()
    assert "cell" not in running_servers()


def test_same_port_can_be_reused_after_stop() -> None:
    port = free_port()
    a = serve_in_background(_market(), port=port, name="a")
    a.stop()
    b = serve_in_background(_market(), port=port, name="b")
    assert b.port == port and _listening(port)


# tornado.netutil.bind_sockets leaks the socket it fails to bind (closed by the GC with a
# ResourceWarning); collect it here so the warning is not blamed on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_port_taken_gives_a_clear_error() -> None:
    a = serve_in_background(_market(), name="a")
    with pytest.raises(QuoteflowError, match=f"{a.port}"):
        serve_in_background(_market(), port=a.port, name="b")
    assert set(running_servers()) == {"a"}
    gc.collect()


def test_jupyterhub_link_goes_through_server_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice")
    handle = serve_in_background(_market(), name="hub")
    assert handle.browser_url == f"/user/alice/proxy/{handle.port}/"
    assert handle.url == f"http://127.0.0.1:{handle.port}"  # the kernel-side client stays direct
    assert f"href='/user/alice/proxy/{handle.port}/'" in handle._repr_html_()
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert handle.browser_url == f"http://127.0.0.1:{handle.port}/"


def test_handle_serves_the_given_market() -> None:
    market = _market()
    handle = serve_in_background(market, name="m")
    assert isinstance(handle, BackgroundServer)
    assert handle.market is market
    with socket.create_connection(("127.0.0.1", handle.port), timeout=5) as s:
        s.sendall(b"GET /symbols HTTP/1.0\r\nHost: x\r\n\r\n")
        body = b""
        while chunk := s.recv(65536):
            body += chunk
    assert b"AAA" in body and b"BBB" in body


# ------------------------------------------------------------------ LiveChart


def test_live_chart_streams_and_client_survives_a_server_restart() -> None:
    async def main() -> None:
        port = free_port()
        server = serve_in_background(_market(), port=port, name="restart")
        chart = LiveChart(server, symbols=["AAA", "BBB"], window=50, interval=0.05)
        try:
            await _until(lambda: len(chart.source.data["x"]) >= 5, what="points on the chart")
            assert chart.stats()["connected"]
            await _until(lambda: "connected" in chart.status.value, timeout=5, what="status")
            server.stop()
            await _until(lambda: not chart.stats()["connected"], what="disconnect")
            before = chart.events_received
            server = serve_in_background(_market(seed=3), port=port, name="restart")
            await _until(
                lambda: chart.stats()["connected"] and chart.events_received > before + 5,
                what="reconnect and new events",
            )
            stats = chart.stats()
            assert stats["reconnects"] >= 1
            await _until(
                lambda: f"reconnects {stats['reconnects']}" in chart.status.value,
                timeout=5,
                what="status line",
            )
            # Rollover keeps the window; no point drawn twice.
            xs = chart.source.data["x"]
            assert len(xs) <= 50
            assert len(set(xs)) == len(xs)
        finally:
            chart.close()
            server.stop()
        assert not chart.running

    asyncio.run(main())


def test_several_charts_at_once_and_candles() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="multi")
        line = LiveChart(server, symbols="AAA", interval=0.05)
        candles = LiveChart(server, kind="candles", interval=0.05)
        try:
            await _until(lambda: len(line.source.data["x"]) >= 3, what="line points")
            await _until(lambda: len(candles.source.data["x"]) >= 2, what="closed bars")
            # symbols=None subscribes to everything; the picker fills as symbols appear.
            await _until(lambda: set(candles.picker.options) == {"AAA", "BBB"}, what="picker")
            data = candles.source.data
            assert all(
                lo <= min(o, c) and max(o, c) <= hi
                for o, c, lo, hi in zip(
                    data["open"], data["close"], data["low"], data["high"], strict=True
                )
            )
        finally:
            line.close()
            candles.close()
            server.stop()

    asyncio.run(main())


def _tick(symbol: str, i: int) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + i)) + ".000Z"
    price = 100.0 + i
    return json.dumps(
        {
            "symbol": symbol,
            "price": price,
            "bid": price - 0.05,
            "ask": price + 0.05,
            "size": 100,
            "ts": ts,
            "seq": i,
        }
    )


def _echo_of(source: Any, new: dict[str, list[Any]], rollover: int) -> dict[str, Any]:
    """The message a browser view sends back after applying ``source.stream(new)``."""
    data = Serializer(deferred=False).encode(new)
    return {
        "event": "jsevent",
        "kind": "ColumnsStreamed",
        "model": source.ref,
        "data": data,
        "rollover": rollover,
    }


def test_echoed_stream_events_do_not_duplicate_points() -> None:
    """Regression: jupyter_bokeh re-applied the browser's echo; 39 points became 78."""
    chart = LiveChart("http://127.0.0.1:1", symbols=["AAA"], window=100, autostart=False)
    try:
        for i in range(39):
            chart._on_event("tick", _tick("AAA", i))
        chart._flush()
        assert len(chart.source.data["x"]) == 39
        echo = _echo_of(chart.source, chart._columns(chart._history["AAA"]), 100)
        chart.plot._handle_custom_msg(echo, [])
        chart.plot._handle_custom_msg(echo, [])  # a second view echoes too
        xs = chart.source.data["x"]
        assert len(xs) == 39 and len(set(xs)) == 39
        assert chart.plot.echoes_dropped == 2
    finally:
        chart.close()


def test_stock_bokeh_model_would_duplicate_the_echo() -> None:
    """The echo we simulate is the real thing: the unpatched widget stores it twice."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    source = ColumnDataSource({"x": [], "y": []})
    fig = figure()
    fig.line("x", "y", source=source)
    widget = BokehModel(fig)
    new = {"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]}
    source.stream(new)
    widget._handle_custom_msg(_echo_of(source, new, 100), [])
    assert len(source.data["x"]) == 6
    # No widget.close(): the stock close() is not idempotent and Widget.__del__ calls it.


def test_pause_holds_points_and_resume_draws_them() -> None:
    chart = LiveChart("http://127.0.0.1:1", symbols=["AAA", "BBB"], window=20, autostart=False)
    try:
        chart.pause()
        for i in range(5):
            chart._on_event("tick", _tick("AAA", i))
        chart._flush()
        assert len(chart.source.data["x"]) == 0
        assert "paused" in chart.status.value
        chart.resume()
        assert len(chart.source.data["x"]) == 5
        for i in range(5, 40):  # beyond the window: rollover
            chart._on_event("tick", _tick("AAA", i))
        chart._flush()
        assert len(chart.source.data["x"]) == 20
        assert chart.source.data["price"][-1] == 139.0
        chart.symbol = "BBB"
        assert len(chart.source.data["x"]) == 0
        assert chart._price_fig.title.text.startswith("BBB")
    finally:
        chart.close()


def test_late_view_gets_the_current_data() -> None:
    """A page (re)load asks for the full state: it must carry what was streamed since."""
    chart = LiveChart("http://127.0.0.1:1", symbols=["AAA"], autostart=False)
    try:
        for i in range(7):
            chart._on_event("tick", _tick("AAA", i))
        chart._flush()
        bundle = json.loads(chart.plot.get_state()["render_bundle"])
        text = json.dumps(bundle)
        assert "106.0" in text  # the last streamed price is in the state a new view renders
        assert "106.0" in chart.plot.get_state("render_bundle")["render_bundle"]
        # Displaying the chart again re-renders existing views from the current data.
        assert "106.0" not in json.dumps(chart.plot.render_bundle)
        chart._repr_mimebundle_()
        assert "106.0" in json.dumps(chart.plot.render_bundle)
    finally:
        chart.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        LiveChart("http://x", kind="bars", autostart=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        LiveChart("http://x", window=1, autostart=False)


def test_a_chart_under_a_taken_key_closes_the_previous_one() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="keys")
        first = LiveChart(server, symbols="AAA", interval=0.05, key="cell-1")
        other = LiveChart(server, symbols="AAA", interval=0.05, key="cell-2")
        try:
            await _until(lambda: first.events_received > 0, what="first chart's events")
            second = LiveChart(server, symbols="AAA", interval=0.05, key="cell-1")
            assert not first.running and first._closed
            assert set(running_charts()) == {other, second}
            await _until(lambda: second.events_received > 0, what="second chart's events")
            second.close()
            assert set(running_charts()) == {other}
        finally:
            for chart in list(running_charts()):
                chart.close()
            server.stop()

    asyncio.run(main())


def test_stopped_chart_reports_zero_events_per_second() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="rate")
        chart = LiveChart(server, symbols="AAA", interval=0.05)
        try:
            await _until(lambda: chart.stats()["events_per_second"] > 0, what="a rate")
            chart.stop()
            assert chart.stats()["events_per_second"] == 0.0
            assert " 0.0 events/s" in chart.status.value
        finally:
            chart.close()
            server.stop()

    asyncio.run(main())


def test_chart_follows_a_server_restarted_elsewhere_under_its_name() -> None:
    async def main() -> None:
        server = serve_in_background(_market(), name="moving")
        chart = LiveChart(server, symbols="AAA", interval=0.05)
        try:
            await _until(lambda: chart.events_received > 0, what="events")
            moved = serve_in_background(_market(seed=5), port=free_port(), name="moving")
            assert moved.port != server.port and not _listening(server.port)
            await _until(lambda: chart.url == moved.stream_url, what="the chart to move")
            before = chart.events_received
            await _until(
                lambda: chart.stats()["connected"] and chart.events_received > before + 3,
                what="events from the new server",
            )
        finally:
            chart.close()
            stop_all()

    asyncio.run(main())


def test_chart_is_labelled_and_says_when_time_is_simulated() -> None:
    server = serve_in_background(_market(), name="labels")
    try:
        chart = LiveChart(server, symbols=["AAA", "BBB"], autostart=False)
        price, vol = chart._layout.children
        assert price.title.text.startswith("AAA · ")
        assert "http" not in price.title.text  # the symbol, not the URL
        assert price.yaxis[0].axis_label == "price (USD)"
        assert "SIMULATED" in vol.xaxis[0].axis_label
        assert vol.yaxis[0].axis_label == "shares"
        assert vol.x_range is price.x_range
        assert {item.label["value"] for item in price.legend[0].items} == {"last", "bid/ask"}
        candles = LiveChart(server, kind="candles", symbols="AAA", autostart=False)
        cprice = candles._layout.children[0]
        hover = [t for t in cprice.tools if type(t).__name__ == "HoverTool"]
        assert hover and "@close" in str(hover[0].tooltips)
        # The same span: tick and bar charts show the same trailing stretch of time.
        ticks = LiveChart(server, symbols="AAA", span=60, autostart=False)
        bars = LiveChart(server, kind="candles", symbols="AAA", span=60, autostart=False)
        for c in (ticks, bars):
            rng = c._price_fig.x_range
            assert (rng.follow, rng.follow_interval) == ("end", 60_000.0)
            c.close()
        plain = LiveChart("http://127.0.0.1:1", symbols="AAA", autostart=False, volume=False)
        assert plain._layout.xaxis[0].axis_label == "time (UTC)"
        for c in (chart, candles, plain):
            c.close()
    finally:
        server.stop()


def test_overlay_normalises_every_symbol_to_its_first_price_and_snapshots() -> None:
    chart = LiveChart("http://127.0.0.1:1", symbols=["AAA", "BBB"], view="overlay", autostart=False)
    try:
        for i in range(5):
            chart._on_event("tick", _tick("AAA", i))  # 100, 101, ...
            chart._on_event("tick", _tick("BBB", i))
        chart._flush()
        ys = chart._overlay["AAA"].data["y"]
        assert ys[0] == 100.0 and ys[-1] == pytest.approx(104.0)
        assert len(chart._overlay["BBB"].data["x"]) == 5
        chart.mark("sigma up")
        assert chart.marks and chart.marks[0][1] == "sigma up"
        snap = chart.snapshot()
        assert "sigma up" in snap.html and "Bokeh.embed" in snap.html
        assert chart.prices("BBB")[-1][1] == 104.0
    finally:
        chart.close()
    with pytest.raises(ValueError, match="overlay"):
        LiveChart("http://x", view="overlay", autostart=False)


def test_monitor_reads_realised_volatility_and_correlation_of_the_stream() -> None:
    from quoteflow.notebook import StreamMonitor
    from quoteflow.notebook.monitor import realised_volatility

    rng = np.random.default_rng(3)
    dt = 0.1 / 252
    z = rng.standard_normal((2000, 2)) @ np.linalg.cholesky([[1, 0.6], [0.6, 1]]).T
    a = 100 * np.exp(np.cumsum(0.3 * np.sqrt(dt) * z[:, 0]))
    b = 50 * np.exp(np.cumsum(0.3 * np.sqrt(dt) * z[:, 1]))
    assert realised_volatility(a, dt) == pytest.approx(0.3, rel=0.05)
    market = Market(
        {"AAA": GBM(mu=0.0, sigma=0.3), "BBB": GBM(mu=0.0, sigma=0.3)},
        correlation={("AAA", "BBB"): 0.6},
        tick_interval=0.1,
    )
    chart = LiveChart("http://127.0.0.1:1", symbols=["AAA", "BBB"], window=3000, autostart=False)
    try:
        for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
            for sym, p in (("AAA", pa), ("BBB", pb)):
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + i))
                chart._on_event("tick", json.dumps({"symbol": sym, "price": p, "ts": ts + ".000Z"}))
        monitor = StreamMonitor(chart, market, ["AAA", "BBB"], window=1000)
        assert monitor.correlation == pytest.approx(0.6, abs=0.08)
        assert "realised σ <b>0.3" in monitor.readouts["AAA"].value
        assert "target 0.60" in monitor.figure.title.text
        monitor.stop()
    finally:
        chart.close()


# ------------------------------------------------------------------ calibration


def test_panel_fits_and_pushes_to_a_market() -> None:
    market = Market.default(seed=1)
    panel = CalibrationPanel(market, ticker="MSFT", model="gbm", years=3)
    result = panel.fit()
    assert result is not None, panel.message.value
    assert "mu" in panel.table.value and "<iframe" in panel.plots.value
    assert panel.symbol_picker.value == "MSFT"  # the push target defaults to the data's ticker
    panel.push()
    assert market.model("MSFT") == result.model
    assert "now follows" in panel.push_message.value
    panel.fit("gbm")
    assert panel.push_message.value == "", "the message was about the previous fit"
    panel.close()


def test_panel_dates_pick_the_range_and_export_the_fit() -> None:
    import base64
    import datetime as dt

    panel = CalibrationPanel(ticker="IBM", model="garch-normal", years=5)
    assert panel.end_date.value is not None and panel.start_date.value is not None
    assert 4.9 < (panel.end_date.value - panel.start_date.value).days / 365.25 < 5.1
    panel.start_date.value = dt.date(2008, 1, 1)
    panel.end_date.value = dt.date(2010, 12, 31)
    result = panel.fit()
    assert result is not None, panel.message.value
    assert panel.prices is not None
    assert str(panel.prices.index[0])[:4] == "2008" and str(panel.prices.index[-1])[:4] == "2010"
    exported = panel.export()
    assert exported["params"] == result.to_dict()["params"]
    assert exported["label"] == "GARCH(1,1)-normal"
    assert exported["data"]["start"].startswith("2008-01")
    link = panel.download.value
    payload = link.split("base64,", 1)[1].split("'", 1)[0]
    assert json.loads(base64.b64decode(payload)) == json.loads(json.dumps(exported))
    assert "download='IBM-garch-normal-" in link
    for label in ("t", "p-value", "95% CI", "Ljung-Box", "ARCH-LM", "Jarque-Bera"):
        assert label in panel.table.value + panel.tests.value, label
    panel.end_date.value = dt.date(2007, 1, 1)
    assert panel.fit() is None and "after end date" in panel.message.value
    panel.close()


def test_panel_csv_error_names_the_users_file_not_a_temp_copy(tmp_path: Path) -> None:
    bad = tmp_path / "my_prices.csv"
    bad.write_text("Date,Close\n")
    panel = CalibrationPanel()
    with pytest.raises(ValueError, match="my_prices.csv") as info:
        panel.load_csv(bad)
    # The reader read a temporary copy; the message must not send the user looking there.
    for text in (str(info.value), panel.message.value):
        assert not re.search(r"/\S*my_prices\.csv", text), text
    panel.close()


def test_noisy_drift_gets_a_note() -> None:
    from quoteflow.data import load
    from quoteflow.notebook.diagnostics import parameter_table_html

    prices = load("MSFT")["adj_close"].iloc[-756:]
    fit = GBM.fit(prices)
    assert abs(fit.params["mu"]) < 2 * fit.std_err["mu"]  # three years: drift is noise
    assert "too noisy" in parameter_table_html(fit)
    # Right-aligned numbers.
    assert "text-align:right" in parameter_table_html(fit)


def test_panel_pushes_over_http(tmp_path: Path) -> None:
    server = serve_in_background(_market(), name="http-push")
    rng = np.random.default_rng(0)
    prices = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    csv = tmp_path / "prices.csv"
    csv.write_text(
        "Date,Close\n"
        + "".join(
            f"2020-01-{1 + i % 28:02d}T00:{i // 28:02d},{p:.4f}\n" for i, p in enumerate(prices)
        )
    )
    panel = CalibrationPanel(server.url, model="gbm")
    assert panel.symbol_picker.options == ("AAA", "BBB")
    panel.load_csv(csv)
    assert panel.fit() is not None, panel.message.value
    answer = panel.push("BBB")
    assert answer["symbol"] == "BBB"
    assert server.market.model("BBB") == panel.result.model
    panel.close()


def test_bad_csv_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Close\n2020-01-01,10\n2020-01-02,-1\n")
    panel = CalibrationPanel()
    with pytest.raises(ValueError, match="positive"):
        panel.load_csv(bad)
    panel.close()


def test_diagnostics_layout_and_residuals() -> None:
    from quoteflow.data import load

    prices = load("IBM")["adj_close"].iloc[-800:]
    fit = GBM.fit(prices)
    z = standardized_residuals(fit, prices)
    assert z.shape == (len(prices) - 1,)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.05
    layout = diagnostics(fit, prices, n_paths=50)
    assert len(layout.children) == 4


def _figures(layout: Any) -> dict[str, Any]:
    return {child.title.text.split(":")[0].split(" (")[0]: child for child, *_ in layout.children}


def test_fan_chart_range_holds_its_outer_band_and_acf_its_confidence_band() -> None:
    from quoteflow.data import load

    prices = load("AAPL")["adj_close"].iloc[-1260:]
    fit = GBM.fit(prices)
    figs = _figures(diagnostics(fit, prices, n_paths=200))
    fan = figs["simulated fan"]
    band = next(r for r in fan.center if type(r).__name__ == "Band" and r.upper == "q95")
    q95, q05 = max(band.source.data["q95"]), min(band.source.data["q05"])
    assert fan.y_range.start <= q05 and fan.y_range.end >= q95
    acf_fig = figs["ACF of squared std. residuals"]
    limit = 1.96 / np.sqrt(len(prices) - 1)
    assert acf_fig.y_range.start < -limit and acf_fig.y_range.end > limit
    # A model that explains the clustering leaves small bars: the band still shows.
    z = np.random.default_rng(0).standard_normal(5000)
    from quoteflow.notebook.diagnostics import _acf_figure

    quiet = _acf_figure(z, 300, 200)
    assert quiet.y_range.start < -1.96 / np.sqrt(5000) and quiet.y_range.end > 1.96 / np.sqrt(5000)


def test_residual_tests_agree_with_statsmodels() -> None:
    from statsmodels.stats.diagnostic import acorr_ljungbox, het_arch
    from statsmodels.stats.stattools import jarque_bera as sm_jb

    from quoteflow.data import load
    from quoteflow.models import GARCH
    from quoteflow.notebook.diagnostics import residual_tests

    prices = load("AAPL")["adj_close"].iloc[-1000:]
    fit = GARCH.fit(prices, dist="t")
    z = standardized_residuals(fit, prices)
    lb, lb2, lm, jb = residual_tests(fit, prices, lags=10, arch_lags=5)
    ref = acorr_ljungbox(z, lags=[10])
    assert lb.statistic == pytest.approx(float(ref["lb_stat"].iloc[0]), rel=1e-10)
    assert lb.pvalue == pytest.approx(float(ref["lb_pvalue"].iloc[0]), rel=1e-8)
    ref2 = acorr_ljungbox(z**2, lags=[10])
    assert lb2.statistic == pytest.approx(float(ref2["lb_stat"].iloc[0]), rel=1e-10)
    arch = het_arch(z, nlags=5, result_object=True)
    assert lm.statistic == pytest.approx(arch.lm, rel=1e-8)
    assert lm.pvalue == pytest.approx(arch.lmpval, rel=1e-6)
    jb_stat, jb_p, _skew, _kurt = sm_jb(z)
    assert jb.statistic == pytest.approx(jb_stat, rel=1e-10)
    assert jb.pvalue == pytest.approx(jb_p, rel=1e-8, abs=1e-300)


def test_labels_tell_garch_normal_from_garch_t_and_volatility_panels() -> None:
    from quoteflow.data import load
    from quoteflow.models import GARCH
    from quoteflow.notebook.diagnostics import model_label, volatility_diagnostics

    prices = load("MSFT")["adj_close"].iloc[-1000:]
    normal, t = GARCH.fit(prices, dist="normal"), GARCH.fit(prices, dist="t")
    assert model_label(normal) == "GARCH(1,1)-normal"
    assert model_label(t).startswith("GARCH(1,1)-t (nu ")
    titles = [f.title.text for f, *_ in diagnostics(t, prices, n_paths=20).children]
    assert all("GARCH(1,1)-t" in s for s in titles if ":" in s)
    left, right = volatility_diagnostics(t, prices).children
    assert "annualised" in left.yaxis[0].axis_label
    # The term structure converges on the unconditional volatility (percent per year).
    term = right.renderers[0].data_source.data["y"]
    assert (
        abs(term[-1] - 100 * t.model.annual_volatility)
        < abs(term[0] - 100 * t.model.annual_volatility) + 1e-9
    )
    with pytest.raises(ValueError, match="GARCH"):
        volatility_diagnostics(GBM.fit(prices), prices)


def test_static_figure_is_self_contained() -> None:
    from quoteflow.data import load
    from quoteflow.notebook import static_figure

    prices = load("IBM")["adj_close"].iloc[-300:]
    fig = static_figure(diagnostics(GBM.fit(prices), prices, n_paths=20), title="IBM")
    page = fig._repr_html_()
    assert page.startswith("<iframe") and "srcdoc=" in page
    assert "cdn.bokeh.org" not in fig.html and "Bokeh.embed" in fig.html
    assert fig.width > 760 and fig.height > 520
