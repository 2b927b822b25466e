"""Re-running cells in a real kernel leaks neither charts nor connections.

A real ipykernel (jupyter_client), driven the way JupyterLab drives it: each execute
request carries its cell's ``cellId``. The server cell runs once, the chart cell three
times, the server cell three more times; then the server must count exactly one SSE
connection, the kernel exactly one running chart, and that chart must still receive
events (it followed the restarted server).
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from tests.notebooks._kernel import ensure_python3_kernelspec, kernel_env

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:zmq.*"),
]

SERVER_CELL = """\
from quoteflow.market import Market
from quoteflow.models import GBM
from quoteflow.notebook import LiveChart, running_charts, serve_in_background
server = serve_in_background(
    Market({"AAA": GBM(mu=0.0, sigma=0.3)}, seed=1, tick_interval=0.05), name="rerun"
)
"""
CHART_CELL = 'chart = LiveChart(server, symbols=["AAA"], interval=0.1)\nchart'
COUNT_CELL = """\
import asyncio, re, time, urllib.request, json

def _connections():
    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    return float(re.search(r"^quoteflow_connections (\\S+)", text, re.M).group(1))

async def _settle():
    # Condition with a deadline (hang guard): one connection, one chart, fresh events.
    before = chart.events_received
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (_connections() == 1 and len(running_charts()) == 1
                and chart.events_received > before + 5):
            break
        await asyncio.sleep(0.1)
    return {"connections": _connections(), "charts": len(running_charts()),
            "new_events": chart.events_received - before, "url": chart.url,
            "server": server.stream_url}

print(json.dumps(await _settle()))
"""
STOP_CELL = """\
old = [c for c in _old_charts]
chart.stop(); server.stop()
print(json.dumps({"rate_after_stop": chart.stats()["events_per_second"],
                  "old_closed": all(c._closed for c in old)}))
"""


class Kernel:
    """A real kernel and a client that sends cell ids like JupyterLab."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, cell_id: str, timeout: float = 60.0) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        out: list[str] = []
        deadline = time.monotonic() + timeout  # hang guard
        while time.monotonic() < deadline:
            try:
                m: dict[str, Any] = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            kind, c = m["msg_type"], m["content"]
            if kind == "stream":
                out.append(c["text"])
            elif kind == "error":
                raise AssertionError(f"cell {cell_id} failed: {c['ename']}: {c['evalue']}")
            elif kind == "status" and c["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError(f"cell {cell_id} did not finish within {timeout} s")


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    ensure_python3_kernelspec()
    for key, value in kernel_env().items():
        monkeypatch.setenv(key, value)
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    k = Kernel(km)
    try:
        yield k
    finally:
        k.kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_rerunning_chart_and_server_cells_leaves_one_chart_and_one_connection(
    kernel: Kernel,
) -> None:
    kernel.run(SERVER_CELL, "server-cell")
    kernel.run("_old_charts = []", "setup")
    for _ in range(3):
        kernel.run("if 'chart' in dir(): _old_charts.append(chart)", "keep")
        kernel.run(CHART_CELL, "chart-cell")
    first = json.loads(kernel.run(COUNT_CELL, "count").strip().splitlines()[-1])
    assert first["connections"] == 1 and first["charts"] == 1, first
    for _ in range(3):
        kernel.run(SERVER_CELL, "server-cell")
    after = json.loads(kernel.run(COUNT_CELL, "count").strip().splitlines()[-1])
    assert after["connections"] == 1 and after["charts"] == 1, after
    assert after["new_events"] > 5, f"the chart did not follow the restarted server: {after}"
    assert after["url"] == after["server"]
    stopped = json.loads(kernel.run(STOP_CELL, "stop").strip().splitlines()[-1])
    assert stopped == {"rate_after_stop": 0.0, "old_closed": True}


BOTH_CELL = """\
import asyncio, json, time
from bokeh.models import Plot
both = LiveChart(server, symbols=["AAA"], kind="both", interval=0.1)
display(both)

async def _filled():
    deadline = time.monotonic() + 30  # hang guard: bars close every 0.5 s
    while time.monotonic() < deadline:
        if len(both.source.data["x"]) >= 2 and len(both.tick_source.data["x"]) >= 5:
            break
        await asyncio.sleep(0.1)

await _filled()
# Every plot of the chart's ONE Bokeh document (the widget's model), and their x-ranges.
plots = [m for m in both.plot._model.references() if isinstance(m, Plot)]
print(json.dumps({
    "plots": len(plots),
    "x_ranges": len({p.x_range.id for p in plots}),
    "documents": len({id(p.document) for p in plots}),
    "one_document": all(p.document is both.plot._model.document for p in plots),
    "bars": len(both.source.data["x"]), "ticks": len(both.tick_source.data["x"]),
    "client_url": both._client.url,
}))
both.close()
"""


def test_tick_and_bar_panels_share_one_x_range_and_both_get_data(kernel: Kernel) -> None:
    """kind="both": ticks, candles and volume are plots of ONE Bokeh document with ONE
    x_range model (so a pan or zoom of one moves the others), fed by one SSE client
    subscribed to ticks and bars, and both panels receive data."""
    kernel.run(SERVER_CELL.replace('name="rerun"', 'name="both"'), "server-cell")
    got = json.loads(kernel.run(BOTH_CELL, "both-cell").strip().splitlines()[-1])
    kernel.run("server.stop()", "stop")
    assert got["plots"] == 3, got  # ticks, candles, volume
    assert got["x_ranges"] == 1, got
    assert got["documents"] == 1 and got["one_document"], got
    assert got["bars"] >= 2 and got["ticks"] >= 5, got
    assert "events=tick,bar" in got["client_url"], got  # one client for both panels
