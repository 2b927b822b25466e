"""The notebooks in real JupyterLab and headless Chromium: the chart is live, nothing errs.

nbclient runs a notebook without a frontend, so it passes even when a widget fails to
render or a chart never updates. Here a real JupyterLab serves a temporary copy of
notebooks/, Chromium opens a notebook, runs every cell above the last one (the last cell
stops the chart and the server, so the chart must be checked before it runs), and then:

- the price canvas of every live chart must change between two screenshots taken 3 s
  apart (screenshots of each notebook land in docs/, the docs show them);
- no cell may show an error, no widget may fail to render;
- finally the stop cell runs, and must finish without error too.

Screenshots land in test-artifacts/ (look at them when this fails).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS, ROOT, free_port, require_executable
from tests.notebooks._kernel import NOTEBOOKS_DIR, ensure_python3_kernelspec, kernel_env
from tests.notebooks.run_notebooks import widget_views

pytestmark = [
    pytest.mark.browser,
    pytest.mark.notebook,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


# JupyterLab settings for a deterministic page: every cell in the DOM (the default
# windowing renders only the visible ones, hiding prompts from the checks below) and no
# "news" toast over the output.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false", "checkForUpdates": false}',
}

#: JavaScript: true when every code cell of the visible notebook except the last one has
#: an execution number (``[3]:``), i.e. nothing is queued (``[ ]``) or running (``[*]``).
ABOVE_LAST_DONE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .map(e => e.innerText.trim());
  const above = prompts.slice(0, -1);
  return above.length > 0 && above.every(s => /^\\[\\d+\\]:?$/.test(s));
}"""

LAST_DONE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return /^\\[\\d+\\]:?$/.test(prompts[prompts.length - 1].innerText.trim());
}"""

#: Screenshots of each notebook land here (the docs show them).
DOCS = ROOT / "docs"

#: Text a failed widget or Bokeh view leaves in the page.
RENDER_FAILURES = ("Error displaying widget", "Could not create a view", "Cannot read properties")


@dataclass(frozen=True)
class LabServer:
    url: str
    token: str
    runtime: Path
    root: Path

    def shutdown_kernels(self) -> None:
        """Shut every kernel down (as closing the notebook and its kernel would)."""
        with urllib.request.urlopen(f"{self.url}/api/kernels?token={self.token}") as resp:
            kernels = json.loads(resp.read())
        for k in kernels:
            req = urllib.request.Request(
                f"{self.url}/api/kernels/{k['id']}?token={self.token}", method="DELETE"
            )
            with urllib.request.urlopen(req, timeout=30):
                pass

    def restore(self, name: str) -> None:
        """Close every session (and its kernel) and put back the repository's copy of
        ``name``, as the module found it (the tests after a save expect a fresh notebook)."""
        with urllib.request.urlopen(f"{self.url}/api/sessions?token={self.token}") as resp:
            sessions = json.loads(resp.read())
        for s in sessions:
            req = urllib.request.Request(
                f"{self.url}/api/sessions/{s['id']}?token={self.token}", method="DELETE"
            )
            with urllib.request.urlopen(req, timeout=30):
                pass
        shutil.copy(NOTEBOOKS_DIR / name, self.root / name)

    def kernel_of(self, name: str) -> Any:
        """A client of the kernel behind the open notebook ``name`` (its connection file)."""
        from jupyter_client.blocking.client import BlockingKernelClient

        with urllib.request.urlopen(f"{self.url}/api/sessions?token={self.token}") as resp:
            sessions = json.loads(resp.read())
        kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"].endswith(name))
        kc = BlockingKernelClient(connection_file=str(self.runtime / f"kernel-{kernel_id}.json"))
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        return kc

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server on a free port over a copy of notebooks/."""
    require_executable("chromium")
    ensure_python3_kernelspec()
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, root)
    settings = base / "settings"
    for rel, text in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(text)
    env = kernel_env()
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
    )
    port = free_port()
    token = secrets.token_hex(16)
    log = (base / "lab.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}); see {base / 'lab.log'}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within 60 s; see {base / 'lab.log'}")
                time.sleep(0.2)  # polling a condition (the server answering)
        yield LabServer(url, token, base / "runtime", root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_executable("chromium")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


#: How long a live chart may take to show new data before the test gives up: a hang
#: guard, not a speed requirement (it redraws several times a second).
CHART_CHANGE_HANG_GUARD_S = 30.0


def _new_page(browser: Any, console_errors: list[str]) -> Any:
    """A 1280x1000 page that appends the text of each console error to ``console_errors``."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    return page


def _open_notebook(page: Any, lab: LabServer, name: str) -> None:
    """Open ``name``, wait for its kernel to be idle, hide the file browser."""
    page.goto(lab.notebook_url(name))
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(timeout=60_000)
    # "Run" before the kernel has answered runs nothing: wait for it to be idle first.
    page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=60_000)
    page.keyboard.press("Control+b")  # hide the file browser: more room for the output


def _changed_pixels(a: bytes, b: bytes) -> int:
    from PIL import Image, ImageChops

    img_a = Image.open(io.BytesIO(a)).convert("RGB")
    img_b = Image.open(io.BytesIO(b)).convert("RGB")
    if img_a.size != img_b.size:
        return img_a.size[0] * img_a.size[1]
    diff = ImageChops.difference(img_a, img_b).convert("L").point(lambda v: 255 if v > 0 else 0)
    return int(sum(diff.histogram()[255:]))


def _error_outputs(page: Any) -> list[str]:
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    texts = panel.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    ).all_inner_texts()
    errors = [t[:500] for t in texts if "Error" in t or "Traceback" in t]
    body = panel.inner_text()
    errors += [
        f"page shows {s!r} after {body[max(0, body.index(s) - 200) : body.index(s)]!r}"
        for s in RENDER_FAILURES
        if s in body
    ]
    return errors


#: JavaScript: the reopened notebook has settled: its kernel is idle, at least ``n`` output
#: areas are drawn, and the widget manager has answered every widget output (it shows
#: "Loading widget..." until it has either drawn the view or given up with "Error
#: displaying widget"). Checking before that would miss the error.
OUTPUTS_SETTLED = """(n) => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel || !document.body.innerText.includes('| Idle')) return false;
  const drawn = [...panel.querySelectorAll('.jp-Cell .jp-OutputArea')]
    .filter(a => a.querySelector('.jp-OutputArea-child')).length;
  return drawn >= n && !panel.innerText.includes('Loading widget...');
}"""


def _save_and_shut_down(page: Any, lab: LabServer, name: str) -> dict[str, Any]:
    """Save the visible notebook (await the file on disk), shut the kernels down.

    Returns the saved notebook, asserting that it keeps no widget view (a widget's output
    needs the kernel: reopened, it shows "Error displaying widget: model not found").
    """
    saved = lab.root / name
    before = saved.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30  # hang guard
    while saved.stat().st_mtime_ns == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # polling a condition: the file on disk
    assert saved.stat().st_mtime_ns != before, f"{name} was not saved"
    lab.shutdown_kernels()
    nb: dict[str, Any] = json.loads(saved.read_text())
    views = widget_views(nb)
    assert not views, f"{name}: saved with widget views in cells {views}"
    return nb


def _reopen_and_check(
    browser: Any, lab: LabServer, name: str, nb: dict[str, Any], shot: Path, figures: int
) -> None:
    """Reopen ``name`` (its kernel shut down), wait until every output has settled, then
    assert at least ``figures`` static figures and no error on the page or the console."""
    console_errors: list[str] = []
    page = _new_page(browser, console_errors)
    try:
        page.goto(lab.notebook_url(name))
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(
            timeout=60_000
        )
        with_outputs = sum(1 for c in nb["cells"] if c.get("outputs"))
        page.wait_for_function(OUTPUTS_SETTLED, arg=with_outputs, timeout=60_000)
        drawn = _await_static_figures(page, figures) if figures else []
        assert len(drawn) >= figures and 0 not in drawn, f"{name} after reopening: {drawn}"
        if figures:
            _screenshot_at_figure(page, 0, shot)
        else:
            page.screenshot(path=str(shot))
        assert not _error_outputs(page), _error_outputs(page)
        failures = [e for e in console_errors if any(s in e for s in RENDER_FAILURES)]
        assert not failures, failures
    finally:
        page.close()
        lab.restore(name)


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "03_live_market.ipynb"])
def test_live_chart_in_jupyterlab(
    name: str, jupyterlab: LabServer, browser: Any, artifacts_dir: Path
) -> None:
    stem = Path(name).stem
    console_errors: list[str] = []
    page = _new_page(browser, console_errors)
    try:
        _open_notebook(page, jupyterlab, name)
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
        last = cells.nth(cells.count() - 1)
        last.locator(".jp-InputPrompt").click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Above Selected Cell").click()
        # A live widget makes the kernel flicker busy/idle: wait for the prompts instead.
        page.wait_for_function(ABOVE_LAST_DONE, timeout=90_000)

        status = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-html").first
        status.wait_for(timeout=30_000)
        page.wait_for_function(
            """() => [...document.querySelectorAll('.widget-html')]
                 .some(e => /connected .* [1-9]\\d* events/.test(e.innerText))""",
            timeout=30_000,
        )
        charts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .quoteflow-livechart")
        charts.first.locator(".bk-Canvas").first.wait_for(timeout=30_000)
        # The first panel of every chart, and the candle panel of a kind="both" chart (ticks,
        # candles, volume: three canvases) too.
        canvases = []
        for i in range(charts.count()):
            panels = charts.nth(i).locator(".bk-Canvas")
            canvases += [panels.nth(j) for j in range(2 if panels.count() >= 3 else 1)]
        assert canvases, f"{name}: no live chart on the page"
        # Await the condition (every chart redraws with new data), polling screenshots up
        # to a hang guard, instead of comparing two screenshots taken a fixed time apart.
        first = [c.screenshot() for c in canvases]
        second = list(first)
        deadline = time.monotonic() + CHART_CHANGE_HANG_GUARD_S
        while time.monotonic() < deadline:
            page.wait_for_timeout(250)  # polling interval
            second = [c.screenshot() for c in canvases]
            if all(_changed_pixels(a, b) > 200 for a, b in zip(first, second, strict=True)):
                break
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            (artifacts_dir / f"jupyterlab-{stem}-chart{i}-1.png").write_bytes(a)
            (artifacts_dir / f"jupyterlab-{stem}-chart{i}-2.png").write_bytes(b)
        changed = [_changed_pixels(a, b) for a, b in zip(first, second, strict=True)]
        assert all(n > 200 for n in changed), (
            f"{name}: a chart did not change within {CHART_CHANGE_HANG_GUARD_S} s: {changed}"
        )
        charts.first.scroll_into_view_if_needed()
        page.screenshot(path=str(DOCS / f"notebook-{stem}.png"))
        monitor = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider")
        if monitor.count():
            monitor.first.scroll_into_view_if_needed()
            page.screenshot(path=str(DOCS / f"notebook-{stem}-steer.png"))
        assert not _error_outputs(page), _error_outputs(page)
        linked = [charts.nth(i) for i in range(charts.count())]
        linked = [c for c in linked if c.locator(".bk-Canvas").count() >= 3]
        if linked:
            _pan_on_ticks_moves_the_candles(page, linked[0], artifacts_dir / stem)

        # Now the last cell: stop the chart and the server; it must finish cleanly.
        last.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")  # run without advancing (no new cell below)
        page.wait_for_function(LAST_DONE, timeout=60_000)
        page.screenshot(path=str(artifacts_dir / f"jupyterlab-{stem}-stopped.png"))
        assert not _error_outputs(page), _error_outputs(page)
        assert (
            "stopped" in last.inner_text()
            or "stopped" in page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").inner_text()
        )
        assert not console_errors, console_errors
        # Saved, closed and reopened: the frozen copies, no dead widget.
        nb = _save_and_shut_down(page, jupyterlab, name)
    finally:
        page.close()
    shot = artifacts_dir / f"jupyterlab-{stem}-reopened.png"
    # 01: the snapshot cell + 2 frozen charts; 03: 2 snapshots + 2 frozen charts (the overlay
    # and the kind="both" chart) + monitor.
    figures = {"01_quickstart.ipynb": 3, "03_live_market.ipynb": 5}[name]
    _reopen_and_check(browser, jupyterlab, name, nb, shot, figures)


def _stable_screenshot(element: Any) -> bytes:
    """A screenshot of ``element`` once two in a row are the same (its redraws settled)."""
    shot = element.screenshot()
    deadline = time.monotonic() + CHART_CHANGE_HANG_GUARD_S  # hang guard
    while time.monotonic() < deadline:
        element.page.wait_for_timeout(300)  # polling interval
        again = element.screenshot()
        if _changed_pixels(shot, again) == 0:
            return again
        shot = again
    raise AssertionError("the panel never stopped changing after pause")


def _pan_on_ticks_moves_the_candles(page: Any, chart: Any, prefix: Path) -> None:
    """kind="both": with drawing paused (nothing else moves), a drag on the tick panel
    must move the candle panel too: they share one x-range in one Bokeh document."""
    chart.locator("button", has_text="pause").click()
    ticks, candles = chart.locator(".bk-Canvas").nth(0), chart.locator(".bk-Canvas").nth(1)
    before = _stable_screenshot(candles)
    box = ticks.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 250, y, steps=10)
    page.mouse.up()
    after = before
    deadline = time.monotonic() + CHART_CHANGE_HANG_GUARD_S  # hang guard
    while _changed_pixels(before, after) <= 200 and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # polling interval
        after = candles.screenshot()
    Path(f"{prefix}-candles-before-pan.png").write_bytes(before)
    Path(f"{prefix}-candles-after-pan.png").write_bytes(after)
    assert _changed_pixels(before, after) > 200, "a pan on the ticks did not move the candles"
    chart.locator("button", has_text="resume").click()


def test_server_is_reachable_through_jupyter_server_proxy(jupyterlab: LabServer) -> None:
    """The Binder/JupyterHub link ``{prefix}proxy/{port}/``: dashboard and live stream."""
    from quoteflow.market import Market
    from quoteflow.models import GBM
    from quoteflow.notebook import serve_in_background

    market = Market({"AAA": GBM(mu=0.0, sigma=0.2)}, seed=1, tick_interval=0.05)
    with serve_in_background(market, name="proxy-test") as server:
        base = f"{jupyterlab.url}/proxy/{server.port}"
        auth = {"Authorization": f"token {jupyterlab.token}"}
        req = urllib.request.Request(f"{base}/", headers=auth)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert b"<html" in resp.read().lower()
        # jupyter-server-proxy buffers whole responses unless the request accepts exactly
        # text/event-stream (as EventSource does): then it flushes chunk by chunk.
        sse = {**auth, "Accept": "text/event-stream"}
        req = urllib.request.Request(f"{base}/stream?symbols=AAA", headers=sse)
        seen = b""
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            deadline = time.monotonic() + 10
            while b"event: tick" not in seen and time.monotonic() < deadline:
                seen += resp.read1(4096)
        assert b"event: tick" in seen, seen[:300]


ALL_DONE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .map(e => e.innerText.trim());
  return prompts.length > 0 && prompts.every(s => /^\\[\\d+\\]:?$/.test(s));
}"""


def _static_figures(page: Any) -> list[int]:
    """Bokeh canvases drawn inside each static-figure iframe of the visible notebook."""
    frames = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) iframe.quoteflow-static")
    return [
        frames.nth(i).content_frame.locator(".bk-Canvas").count() for i in range(frames.count())
    ]


def _screenshot_at_figure(page: Any, index: int, path: Path) -> None:
    frames = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) iframe.quoteflow-static")
    frames.nth(index).scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def _await_static_figures(page: Any, at_least: int) -> list[int]:
    deadline = time.monotonic() + 60  # hang guard: each iframe parses BokehJS on its own
    drawn = _static_figures(page)
    while (len(drawn) < at_least or 0 in drawn) and time.monotonic() < deadline:
        page.wait_for_timeout(250)  # polling a condition: iframes render on their own
        drawn = _static_figures(page)
    return drawn


def test_transports_notebook_draws_its_chart_offline(
    jupyterlab: LabServer, browser: Any, artifacts_dir: Path
) -> None:
    """04: Run All measures the transports and draws the comparison as a static figure
    with inline BokehJS (no CDN: Chromium here has no route off the machine)."""
    console_errors: list[str] = []
    page = _new_page(browser, console_errors)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        _open_notebook(page, jupyterlab, "04_transports.ipynb")
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_text("Run All Cells", exact=True).click()
        page.wait_for_function(ALL_DONE, timeout=180_000)
        drawn = _await_static_figures(page, 1)
        assert drawn and 0 not in drawn, f"static figures drawn: {drawn}"
        _screenshot_at_figure(page, 0, DOCS / "notebook-04_transports.png")
        assert not _error_outputs(page), _error_outputs(page)
        assert not console_errors, console_errors
        foreign = [u for u in requests if u.startswith("http") and "127.0.0.1" not in u]
        assert not foreign, f"requests off the machine: {foreign}"
    finally:
        page.close()


def test_calibration_diagnostics_survive_save_close_and_reopen(
    jupyterlab: LabServer, browser: Any, artifacts_dir: Path
) -> None:
    """02: Run All draws its diagnostics as static figures; saved, closed, with the kernel
    shut down and reopened, the notebook still shows every one of them (the panel's too:
    its stop cell froze it), and no widget error once the widget manager has settled."""
    name = "02_calibrate.ipynb"
    console_errors: list[str] = []
    page = _new_page(browser, console_errors)
    try:
        _open_notebook(page, jupyterlab, name)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_text("Run All Cells", exact=True).click()
        page.wait_for_function(ALL_DONE, timeout=120_000)
        # 3 in the notebook (GBM, GARCH-t, GARCH volatility) + 2 in the panel.
        drawn = _await_static_figures(page, 5)
        assert len(drawn) >= 5 and 0 not in drawn, f"static figures drawn: {drawn}"
        _screenshot_at_figure(page, 1, DOCS / "notebook-02_calibrate.png")
        assert not _error_outputs(page), _error_outputs(page)

        nb = _save_and_shut_down(page, jupyterlab, name)
        assert "quoteflow-static" in json.dumps(nb), "the notebook was saved without figures"
    finally:
        page.close()
    # 5: the panel's frozen copy keeps its 2 figures.
    shot = artifacts_dir / "jupyterlab-02-reopened.png"
    _reopen_and_check(browser, jupyterlab, name, nb, shot, figures=5)


#: JavaScript: the prompt of code cell ``n`` shows an execution count other than ``old``.
CELL_DONE = """([n, old]) => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const p = panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')[n].innerText.trim();
  return /^\\[\\d+\\]:?$/.test(p) && p !== old;
}"""

#: Kernel-side count of what runs: SSE connections the server counts, running charts.
COUNT_RUNNING = """\
import json as _j, re as _r, urllib.request as _u
from quoteflow.notebook import running_charts as _rc
_m = _u.urlopen(server.url + "/metrics", timeout=5).read().decode()
print(_j.dumps({"connections": float(_r.search(r"^quoteflow_connections (\\S+)", _m, _r.M).group(1)),
                "charts": len(_rc()), "events": chart.events_received}))
"""


def _run_code_cell(page: Any, index: int) -> None:
    """Run code cell ``index`` of the visible notebook in place and wait for it."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").nth(index)
    old = cell.locator(".jp-InputPrompt").inner_text().strip()
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+Enter")
    page.wait_for_function(CELL_DONE, arg=[index, old], timeout=60_000)


def _kernel_json(kc: Any, code: str) -> dict[str, Any]:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return dict(json.loads("".join(out).strip().splitlines()[-1]))


def test_rerunning_chart_and_server_cells_leaves_one_client_per_chart(
    jupyterlab: LabServer, browser: Any, artifacts_dir: Path
) -> None:
    """01: the chart cell three times, then the server cell three times: one chart on
    screen, one running chart in the kernel, one SSE connection at the server, and the
    chart still live (it followed the restarted server)."""
    console_errors: list[str] = []
    page = _new_page(browser, console_errors)
    kc = None
    try:
        _open_notebook(page, jupyterlab, "01_quickstart.ipynb")
        code = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        texts = [code.nth(i).locator(".jp-InputArea").inner_text() for i in range(code.count())]
        server_cell = next(i for i, t in enumerate(texts) if "serve_in_background(" in t)
        chart_cell = next(i for i, t in enumerate(texts) if "LiveChart(" in t)
        for i in range(chart_cell + 1):  # imports, server, chart (as a user would)
            if i in (0, server_cell, chart_cell):
                _run_code_cell(page, i)
        for _ in range(3):
            _run_code_cell(page, chart_cell)
        for _ in range(3):
            _run_code_cell(page, server_cell)
        kc = jupyterlab.kernel_of("01_quickstart.ipynb")
        deadline = time.monotonic() + 30  # hang guard: the old connections must close
        counts = _kernel_json(kc, COUNT_RUNNING)
        while counts["connections"] != 1 and time.monotonic() < deadline:
            page.wait_for_timeout(200)  # polling a condition (the server's gauge)
            counts = _kernel_json(kc, COUNT_RUNNING)
        visible = page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .widget-vbox"
        ).filter(has=page.locator(".bk-Canvas"))
        assert visible.count() == 1
        assert counts["connections"] == 1 and counts["charts"] == 1, counts
        later = counts
        deadline = time.monotonic() + 30
        while later["events"] <= counts["events"] + 5 and time.monotonic() < deadline:
            page.wait_for_timeout(200)  # polling a condition (events keep arriving)
            later = _kernel_json(kc, COUNT_RUNNING)
        assert later["events"] > counts["events"] + 5, "the chart stopped after the restart"
        page.screenshot(path=str(artifacts_dir / "jupyterlab-01-rerun.png"))
        kc.execute_interactive("chart.stop(); server.stop()", timeout=30)
        assert not _error_outputs(page), _error_outputs(page)
        assert not console_errors, console_errors
    finally:
        if kc is not None:
            kc.stop_channels()
        page.close()
