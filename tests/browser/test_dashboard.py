"""The dashboard at ``/`` in a real headless Chromium against a real ``quoteflow serve``.

The page exposes a read-only ``window.quoteflowDashboard`` (state, ids, counters) that
the tests read; everything else is checked through the DOM, the page's own requests and
the bytes that cross :class:`~tests.browser.conftest.StreamCutter`.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import BUSY_SYMBOLS, Dashboard, QuoteServer, StreamCutter
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DEFAULT_SYMBOLS = ["AAPL", "GOOG", "IBM", "MSFT"]
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
DOCS_SCREENSHOT_MAX_BYTES = 150_000
PRICE_RE = re.compile(r"^\d+\.\d{2,4}$")


def debug(page: Page, name: str) -> Any:
    """One field of the page's read-only ``window.quoteflowDashboard``."""
    return page.evaluate("(name) => window.quoteflowDashboard[name]", name)


def wait_live(page: Page, min_ticks: int = 1, timeout: float = 15_000) -> None:
    """Wait until the stream is open and at least ``min_ticks`` ticks arrived."""
    page.wait_for_function(
        "(n) => { const d = window.quoteflowDashboard;"
        " return d && d.state === 'live' && d.ticks >= n; }",
        arg=min_ticks,
        timeout=timeout,
    )


def price_cell(page: Page, symbol: str) -> str:
    return f'#quotes tbody tr[data-symbol="{symbol}"] td.price'


def read_ids_directly(
    server: QuoteServer, after: str, until: str, timeout: float = 15.0
) -> list[str]:
    """Ids the server sends to a plain client resuming after ``after``, up to ``until``.

    The reference the page is compared with: same query (all symbols, ticks and bars),
    resumed with the ``Last-Event-ID`` header, read line by line (WHATWG HTML §9.2.6:
    an ``id`` field takes effect when the blank line dispatches the block).
    """
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    deadline = time.monotonic() + timeout
    ids: list[str] = []
    try:
        conn.request("GET", "/stream?events=tick,bar", headers={"Last-Event-ID": after})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read(2000)
        pending: str | None = None
        while time.monotonic() < deadline:
            line = resp.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if line.startswith(b"id:"):
                pending = line[3:].removeprefix(b" ").decode()
            elif line == b"" and pending is not None:
                ids.append(pending)
                if pending == until:
                    return ids
                pending = None
    finally:
        conn.close()
    pytest.fail(f"the server never sent id {until} after {after}; got {len(ids)} ids")


def save_docs_screenshot(page: Page, artifacts: Path) -> None:
    """Write docs/dashboard.png when it is missing or QUOTEFLOW_UPDATE_DOCS=1 (<= 150 KB)."""
    if DOCS_SCREENSHOT.exists() and os.environ.get("QUOTEFLOW_UPDATE_DOCS") != "1":
        return
    small = artifacts / "dashboard-docs.png"
    page.screenshot(path=str(small), scale="css", animations="disabled")
    size = small.stat().st_size
    assert size <= DOCS_SCREENSHOT_MAX_BYTES, f"docs screenshot is {size} bytes"
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(small, DOCS_SCREENSHOT)


def test_dashboard_shows_live_prices(
    dashboard: Dashboard, quote_server: QuoteServer, artifacts_dir: Path
) -> None:
    page = dashboard.page
    page.goto(quote_server.url)
    wait_live(page)

    rows = page.locator("#quotes tbody tr").evaluate_all("rows => rows.map(r => r.dataset.symbol)")
    assert rows == DEFAULT_SYMBOLS
    assert page.locator("#status").get_attribute("data-state") == "live"
    assert page.locator("#status-text").inner_text().lower() == "live"

    cell = price_cell(page, "AAPL")
    page.wait_for_function("(sel) => /\\d/.test(document.querySelector(sel).textContent)", arg=cell)
    first = page.locator(cell).inner_text().strip()
    assert PRICE_RE.match(first), first
    page.wait_for_function(
        "([sel, old]) => document.querySelector(sel).textContent.trim() !== old",
        arg=[cell, first],
    )
    second = page.locator(cell).inner_text().strip()
    assert second != first

    # Change columns are signed and coloured by sign; bid < ask.
    row = page.locator('#quotes tbody tr[data-symbol="AAPL"]')
    pct = row.locator("td.pct").inner_text()
    assert re.match(r"^[+-]?\d+\.\d{2}%$", pct), pct
    bid = float(row.locator("td.bid").inner_text())
    ask = float(row.locator("td.ask").inner_text())
    assert bid < ask

    # Enough history for a chart worth looking at, and the header agrees with the page state.
    wait_live(page, min_ticks=4 * 60, timeout=20_000)
    page.wait_for_function("() => window.quoteflowDashboard.eventsPerSecond > 0")
    assert page.locator(".chart-card").count() == 4
    assert page.locator("#stat-last-id").inner_text() != "–"
    page.screenshot(path=str(artifacts_dir / "dashboard-line.png"), animations="disabled")
    save_docs_screenshot(page, artifacts_dir)

    page.get_by_role("button", name="Candles").click()
    assert page.get_by_role("button", name="Candles").get_attribute("aria-pressed") == "true"
    assert debug(page, "chartMode") == "candles"
    page.wait_for_function(
        "(n) => window.quoteflowDashboard.framesRendered > n", arg=debug(page, "framesRendered")
    )
    page.screenshot(path=str(artifacts_dir / "dashboard-candles.png"), animations="disabled")
    dashboard.record.assert_clean()


def test_reconnect_resumes_without_gap(
    dashboard: Dashboard, stream_cutter: StreamCutter, quote_server: QuoteServer
) -> None:
    page = dashboard.page
    page.goto(stream_cutter.start_url)
    wait_live(page, min_ticks=20)

    cut_id = stream_cutter.cut_streams()
    assert cut_id is not None
    received = debug(page, "eventsReceived")
    page.wait_for_function(
        "(n) => { const d = window.quoteflowDashboard;"
        " return d.reconnects >= 1 && d.state === 'live' && d.eventsReceived >= n; }",
        arg=received + 40,
        timeout=20_000,
    )
    states = debug(page, "states")
    assert states == ["connecting", "live", "reconnecting", "live"], states
    assert page.locator("#stat-reconnects").inner_text() == "1"

    # The browser's own reconnect carried the id of the last complete event it got;
    # the half event after it (id line included) was never dispatched.
    streams = stream_cutter.stream_requests()
    assert len(streams) == 2, [s.request_line for s in streams]
    assert "last-event-id" not in streams[0].headers
    assert streams[0].cut
    assert streams[1].headers.get("last-event-id") == cut_id

    # No gap, no duplicate: exactly what a plain client resuming from the page's first
    # id gets from the server, and (ids being integers here) every integer in between.
    ids = [str(i) for i in debug(page, "ids")]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert cut_id in ids
    assert ids[1:] == read_ids_directly(quote_server, after=ids[0], until=ids[-1])
    if all(i.isdigit() for i in ids):
        numbers = [int(i) for i in ids]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert debug(page, "resets") == 0
    dashboard.record.assert_clean()


def test_no_console_errors_and_only_local_requests(
    dashboard: Dashboard, quote_server: QuoteServer
) -> None:
    page = dashboard.page
    page.goto(quote_server.url)
    wait_live(page, min_ticks=40)
    # Exercise the interactive parts too: chart mode both ways, hide and show a chart.
    page.get_by_role("button", name="Candles").click()
    page.get_by_role("button", name="Line").click()
    page.locator('#quotes tbody tr[data-symbol="IBM"]').click()
    page.wait_for_function("() => document.querySelectorAll('.chart-card').length === 3")
    assert "IBM" not in debug(page, "charted")
    page.locator('#quotes tbody tr[data-symbol="IBM"]').click()
    page.wait_for_function("() => document.querySelectorAll('.chart-card').length === 4")
    wait_live(page, min_ticks=debug(page, "ticks") + 20)

    record = dashboard.record
    record.assert_clean()
    paths = {urlsplit(u).path for u in record.requests if not u.startswith("data:")}
    assert {
        "/",
        "/static/dashboard.js",
        "/static/dashboard.css",
        "/stream",
        "/symbols",
        "/snapshot",
    } <= paths, paths


def test_works_behind_a_path_prefix(dashboard: Dashboard, prefixed_proxy: StreamCutter) -> None:
    """Relative URLs only: mounted under /proxy/8080/ (jupyter-server-proxy) it still works."""
    page = dashboard.page
    page.goto(prefixed_proxy.start_url)
    wait_live(page, min_ticks=8)
    page.wait_for_function(
        "(sel) => /\\d/.test(document.querySelector(sel).textContent)", arg=price_cell(page, "MSFT")
    )
    dashboard.record.assert_clean()
    paths = [urlsplit(u).path for u in dashboard.record.requests if not u.startswith("data:")]
    assert paths and all(p.startswith("/proxy/8080/") for p in paths), paths
    assert [r.path.split("?")[0] for r in prefixed_proxy.stream_requests()] == ["/stream"]


def test_symbols_parameter_filters_the_page(
    dashboard: Dashboard, quote_server: QuoteServer
) -> None:
    page = dashboard.page
    page.goto(quote_server.url + "?symbols=AAPL,MSFT")
    wait_live(page, min_ticks=10)
    rows = page.locator("#quotes tbody tr").evaluate_all("rows => rows.map(r => r.dataset.symbol)")
    assert rows == ["AAPL", "MSFT"]
    assert "symbols=AAPL%2CMSFT" in str(debug(page, "streamUrl"))
    dashboard.record.assert_clean()


def test_reset_marks_a_gap(
    dashboard: Dashboard, busy_stream_cutter: StreamCutter, artifacts_dir: Path
) -> None:
    """An id the server can no longer replay gives `event: reset`: the page says so."""
    page = dashboard.page
    page.goto(busy_stream_cutter.start_url)
    wait_live(page, min_ticks=BUSY_SYMBOLS)
    notice = page.locator("#notice")
    assert notice.is_hidden()

    cut_id = busy_stream_cutter.cut_streams()
    page.wait_for_function(
        "() => { const d = window.quoteflowDashboard;"
        " return d.resets >= 1 && d.state === 'live' && d.reconnects >= 1; }",
        timeout=20_000,
    )
    streams = busy_stream_cutter.stream_requests()
    assert streams[1].headers.get("last-event-id") == cut_id
    assert notice.is_visible()
    assert f"after id {cut_id}" in notice.inner_text()
    # The reset carries the newest id; ids still only increase and never repeat.
    numbers = [int(i) for i in debug(page, "ids")]
    assert numbers == sorted(set(numbers))
    assert debug(page, "badEvents") == 0
    page.screenshot(path=str(artifacts_dir / "dashboard-reset.png"), animations="disabled")
    dashboard.record.assert_clean()


def test_many_events_per_second_paint_once_per_frame(
    dashboard: Dashboard, busy_server: QuoteServer, artifacts_dir: Path
) -> None:
    """1200 events/s: the page keeps up and paints many events per animation frame."""
    page = dashboard.page
    page.goto(busy_server.url)
    wait_live(page, min_ticks=BUSY_SYMBOLS)
    counters = (
        "() => { const d = window.quoteflowDashboard;"
        " return [d.eventsReceived, d.framesRendered, performance.now()]; }"
    )
    events0, frames0, t0 = page.evaluate(counters)
    wait_live(page, min_ticks=debug(page, "ticks") + 5 * BUSY_SYMBOLS, timeout=30_000)
    events1, frames1, t1 = page.evaluate(counters)
    events, frames, seconds = events1 - events0, frames1 - frames0, (t1 - t0) / 1000
    assert 0 < frames <= 65 * seconds + 5, (frames, seconds)  # requestAnimationFrame-paced
    assert events / frames > 5, (events, frames)  # not one paint per event
    assert page.locator("#quotes tbody tr").count() == BUSY_SYMBOLS
    # The page still answers input: toggling the chart mode repaints promptly.
    page.get_by_role("button", name="Candles").click()
    page.wait_for_function("() => window.quoteflowDashboard.chartMode === 'candles'", timeout=5_000)
    page.screenshot(path=str(artifacts_dir / "dashboard-busy.png"), animations="disabled")
    dashboard.record.assert_clean()


def test_candle_view_is_back_filled_from_bars_seen_before_switching(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    """Bars that arrived while the line view was on (or the symbol had no chart) are drawn
    as soon as the candle view opens: it does not start empty and wait for the next bar."""
    from tests.browser.conftest import _start_server, _stop_server

    server = _start_server(
        ["--seed", "3", "--tick-interval", "0.1", "--bar-interval", "1"], tmp_path / "serve.log"
    )
    try:
        page = dashboard.page
        page.goto(server.url + "?chart=line")
        wait_live(page)
        # Four bars of every symbol seen in the line view, none drawn as candles yet.
        page.wait_for_function(
            "() => Object.values(window.quoteflowDashboard.candles).every(c => c.final >= 4)",
            timeout=30_000,
        )
        before = debug(page, "candles")
        assert all(c["drawn"] == 0 for c in before.values()), before
        # Take a symbol off the charts, switch to candles, then chart it again.
        page.locator('#quotes tbody tr[data-symbol="IBM"]').click()
        page.wait_for_function("() => !window.quoteflowDashboard.charted.includes('IBM')")
        page.get_by_role("button", name="Candles").click()
        page.wait_for_function(
            "() => Object.entries(window.quoteflowDashboard.candles)"
            ".filter(([n]) => n !== 'IBM').every(([, c]) => c.drawn > 0)"
        )
        after = debug(page, "candles")
        for name in ("AAPL", "GOOG", "MSFT"):
            # Drawn at once: every bar seen before the switch (a fresh start would have 1).
            assert after[name]["drawn"] >= before[name]["final"] >= 4, (name, before, after)
        page.locator('#quotes tbody tr[data-symbol="IBM"]').click()
        page.wait_for_function("() => window.quoteflowDashboard.candles.IBM.drawn > 0")
        assert debug(page, "candles")["IBM"]["drawn"] >= before["IBM"]["final"]
        dashboard.record.assert_clean()
    finally:
        _stop_server(server)


HISTORY_SCREENSHOT = ROOT / "docs" / "dashboard-history.png"


def test_candles_are_back_filled_from_history_on_load(
    dashboard: Dashboard, tmp_path: Path, artifacts_dir: Path
) -> None:
    """The candle view opens with the server's completed bars (``GET /history``), drawn
    before the stream's first bar arrives, then continues live from ``last_event_id``."""
    from tests.browser.conftest import _start_server, _stop_server

    server = _start_server(
        ["--seed", "4", "--tick-interval", "0.1", "--bar-interval", "1"], tmp_path / "serve.log"
    )
    try:
        # Twenty completed bars on the server before the page exists.
        deadline = time.monotonic() + 60  # hang guard
        while True:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            conn.request("GET", "/history?symbol=AAPL")
            bars = json.loads(conn.getresponse().read())["bars"]
            conn.close()
            if len(bars) >= 20:
                break
            assert time.monotonic() < deadline, "the server never had 20 bars"
            time.sleep(0.2)
        page = dashboard.page
        page.goto(server.url + "?chart=candles")
        page.wait_for_function("() => window.quoteflowDashboard.drawnAtFirstBar !== null")
        drawn_first = debug(page, "drawnAtFirstBar")
        # Four charts of >= 20 history bars each were on screen before any stream bar.
        assert drawn_first >= 4 * 20, drawn_first
        assert debug(page, "historyBars") >= 4 * 20
        # Live continues: more bars, no candle twice (keyed by start), none missing.
        before = debug(page, "candles")["AAPL"]["final"]
        page.wait_for_function(
            "(n) => window.quoteflowDashboard.candles.AAPL.final >= n + 2", arg=before
        )
        starts = page.evaluate("() => window.quoteflowDashboard.candleStarts('AAPL')")
        assert starts == sorted(set(starts))
        steps = {round((b - a) / 1000) for a, b in itertools.pairwise(starts)}
        assert steps == {1}, steps  # one bar per second: no hole at the seam
        page.screenshot(path=str(artifacts_dir / "dashboard-history.png"), animations="disabled")
        if not HISTORY_SCREENSHOT.exists() or os.environ.get("QUOTEFLOW_UPDATE_DOCS") == "1":
            page.screenshot(path=str(HISTORY_SCREENSHOT), scale="css", animations="disabled")
        dashboard.record.assert_clean()
    finally:
        _stop_server(server)
