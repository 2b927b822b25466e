"""The reconnect-storm scenario against the browser's own EventSource (headless Chromium).

The page opens an EventSource on a real ``quoteflow serve`` and records the id of every
event. The storm (examples/scenarios/reconnect_storm.toml, started with
``POST /scenario``) sends a short ``retry``, drops every connection twice, answers three
reconnects with 503, stalls the stream for 2 s and finally restarts with an id gap.
EventSource reconnects by itself after a drop (WHATWG HTML §9.2.3, with
``Last-Event-ID``); a 503 "fails the connection" for good, so the page does what the
dashboard does: a new EventSource resuming with ``?lastEventId=``. No event may be lost:
ids are gap-free across every reconnect, except at the one reset the restart forces.
"""

from __future__ import annotations

import itertools
import json
import time
import tomllib
import urllib.request
from typing import Any

import pytest

from tests.browser.conftest import Dashboard, QuoteServer
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

STORM = ROOT / "examples" / "scenarios" / "reconnect_storm.toml"
#: Named hang guard (ms): the storm takes about 11 s of scenario time.
HANG_GUARD_MS = 60_000

RECORDER = """
() => {
  const rec = { events: [], opens: 0, errors: 0, reopened: 0, resets: 0, at: 0, maxGap: 0 };
  window.rec = rec;
  let last = "";
  const connect = () => {
    const es = new EventSource("/stream" + (last ? "?lastEventId=" + last : ""));
    es.onopen = () => { rec.opens += 1; };
    const record = (e) => {
      const now = performance.now();
      if (rec.at) rec.maxGap = Math.max(rec.maxGap, now - rec.at);
      rec.at = now;
      rec.events.push([e.type, e.lastEventId]);
      last = e.lastEventId;
      if (e.type === "reset") rec.resets += 1;
    };
    for (const type of ["tick", "bar", "session", "reset"]) es.addEventListener(type, record);
    es.onerror = () => {
      rec.errors += 1;
      if (es.readyState === EventSource.CLOSED) {  // a 503: EventSource gave up
        rec.reopened += 1;
        setTimeout(connect, 200);
      }
    };
  };
  connect();
}
"""


def _http(server: QuoteServer, method: str, path: str, body: bytes | None = None) -> Any:
    req = urllib.request.Request(server.url.rstrip("/") + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def test_reconnect_storm_is_survived_by_eventsource_with_no_lost_event(
    scenario_server: QuoteServer, dashboard: Dashboard
) -> None:
    page = dashboard.page
    page.goto(scenario_server.url + "healthz")
    page.evaluate(RECORDER)
    page.wait_for_function("window.rec.events.length >= 10", timeout=HANG_GUARD_MS)
    storm = tomllib.loads(STORM.read_text())
    started = _http(scenario_server, "POST", "/scenario", json.dumps(storm).encode())
    run_id = started["scenario"]["id"]
    deadline = time.monotonic() + HANG_GUARD_MS / 1000
    while True:  # polling the server's own progress report
        runs = _http(scenario_server, "GET", "/scenario")["scenarios"]
        if next(r for r in runs if r["id"] == run_id)["done"]:
            break
        assert time.monotonic() < deadline, "hang guard: the storm did not finish"
        time.sleep(0.1)
    page.wait_for_function(
        "window.rec.resets >= 1 && window.rec.events.length - "
        "window.rec.events.findIndex(e => e[0] === 'reset') > 20",
        timeout=HANG_GUARD_MS,
    )
    rec = page.evaluate("window.rec")
    rec.pop("at")
    events: list[tuple[str, str]] = [tuple(e) for e in rec["events"]]
    ids = [int(i) for _, i in events]
    pairs = enumerate(itertools.pairwise(ids))
    breaks = [(a, b, events[k + 1][0]) for k, (a, b) in pairs if b != a + 1]
    # One break only: at the reset the restart forces, across its id gap (1000).
    assert len(breaks) == 1 and breaks[0][2] == "reset", breaks
    assert breaks[0][1] >= breaks[0][0] + 1000
    assert rec["resets"] == 1
    # Every fault reached the page: 3 x 503 made it start over, drops made it reconnect.
    assert rec["reopened"] >= 3, rec
    assert rec["opens"] >= 5, rec
    # The stall (2 s without a byte) reached it too: EventSource cannot tell, it waits.
    assert rec["maxGap"] >= 1500, rec["maxGap"]
