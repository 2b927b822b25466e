"""Fixtures for the real-browser tests of the dashboard.

* ``quote_server``: a real ``quoteflow serve --port 0`` process (seeded, fast ticks),
  its URL parsed from what it prints; stopped at the end of the session.
* ``browser``: headless Debian Chromium driven by Playwright (never a downloaded one).
* ``dashboard``: a fresh 1280x800 page that records console errors, page errors and
  every request it makes, for the assertions in the tests.
* :class:`StreamCutter`: a small HTTP proxy between the browser and the server that
  can hang up on the page's ``/stream`` connection in the middle of an event and records
  the request head of every connection (to see the ``Last-Event-ID`` header of the
  browser's own reconnect). It can also mount the server under a path prefix, the way
  jupyter-server-proxy does.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    ViewportSize,
    sync_playwright,
)

from tests.conftest import ARTIFACTS, CHROMIUM_ARGS, ROOT, require_executable

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
SERVER_START_TIMEOUT = 30.0
URL_RE = re.compile(r"http://[^\s/]+:\d+/")


# --------------------------------------------------------------------------- server


@dataclass
class QuoteServer:
    """A running ``quoteflow serve`` process."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[str]
    reader: threading.Thread
    output: list[str] = field(default_factory=list)


def _start_server(extra_args: list[str], log_path: Path) -> QuoteServer:
    cmd = [sys.executable, "-m", "quoteflow", "serve", "--port", "0", *extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = log_path.open("w")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    assert proc.stdout is not None
    stdout = proc.stdout
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def drain() -> None:
        # Keep reading so the server never blocks on a full pipe.
        for line in stdout:
            output.append(line)
            match = URL_RE.search(line)
            if match and not url:
                url.append(match.group(0))
                found.set()
        found.set()

    reader = threading.Thread(target=drain, name="quoteflow-serve-stdout", daemon=True)
    reader.start()
    if not found.wait(SERVER_START_TIMEOUT) or not url:
        proc.kill()
        proc.wait(5)
        reader.join(5)
        stdout.close()
        pytest.fail(
            f"`{' '.join(cmd)}` printed no URL within {SERVER_START_TIMEOUT:.0f} s;"
            f" stdout: {''.join(output)!r}; stderr in {log_path}"
        )
    parts = urlsplit(url[0])
    assert parts.hostname is not None and parts.port is not None
    return QuoteServer(url[0], parts.hostname, parts.port, proc, reader, output)


def _stop_server(server: QuoteServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)
    server.reader.join(5)
    if server.process.stdout is not None:
        server.process.stdout.close()


@pytest.fixture(scope="session")
def quote_server() -> Iterator[QuoteServer]:
    """``quoteflow serve --port 0 --seed 1 --tick-interval 0.1`` on the default market."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = _start_server(
        ["--seed", "1", "--tick-interval", "0.1"], ARTIFACTS / "browser-server.log"
    )
    yield server
    _stop_server(server)


@pytest.fixture(scope="session")
def scenario_server() -> Iterator[QuoteServer]:
    """A small fast market (2 GBM symbols, 20 ticks/s) to run scenarios against."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = _start_server(
        ["--seed", "3", "--universe", "2", "--tick-interval", "0.05"],
        ARTIFACTS / "browser-scenario-server.log",
    )
    yield server
    _stop_server(server)


BUSY_SYMBOLS = 120


@pytest.fixture(scope="session")
def busy_server() -> Iterator[QuoteServer]:
    """A fast, wide feed with a tiny replay buffer: 120 symbols x 10 ticks/s = 1200 events/s,
    100 events of replay (less than one tick round), 0.5 s reconnection delay. Any
    reconnect therefore finds its id evicted and gets ``event: reset``."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = _start_server(
        [
            "--seed",
            "2",
            "--universe",
            str(BUSY_SYMBOLS),
            "--tick-interval",
            "0.1",
            "--bar-interval",
            "1",
            "--buffer-size",
            "100",
            "--retry-ms",
            "500",
        ],
        ARTIFACTS / "browser-busy-server.log",
    )
    yield server
    _stop_server(server)


# --------------------------------------------------------------------------- browser


# Module scope, not session: while a sync Playwright is open its event loop counts as
# running in the main thread, and every later test's asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright must never download a browser)."""
    executable = require_executable("chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class PageRecord:
    """What a page did: console errors, uncaught exceptions and requested URLs."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """No console error, no uncaught exception, no request off 127.0.0.1."""
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        foreign = [
            u
            for u in self.requests
            if not u.startswith("data:") and urlsplit(u).hostname != "127.0.0.1"
        ]
        assert foreign == [], f"requests to other hosts: {foreign}"


@dataclass
class Dashboard:
    page: Page
    record: PageRecord


@pytest.fixture
def dashboard(browser: Browser) -> Iterator[Dashboard]:
    """A fresh page (1280x800) in its own context, recording errors and requests."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(15_000)
    record = PageRecord()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            record.console_errors.append(f"{msg.text} @ {msg.location}")

    def on_request(req: Request) -> None:
        record.requests.append(req.url)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: record.page_errors.append(str(exc)))
    page.on("request", on_request)
    yield Dashboard(page, record)
    context.close()


# --------------------------------------------------------------------------- proxy


@dataclass
class ProxiedRequest:
    """One connection through the proxy (one request: the proxy speaks HTTP/1.0 upstream)."""

    request_line: str
    headers: dict[str, str]
    last_id: str | None = None  # id of the last complete SSE block sent to the browser
    cut: bool = False

    @property
    def path(self) -> str:
        return self.request_line.split(" ")[1]


class StreamCutter:
    """HTTP proxy on 127.0.0.1 that can cut the browser's SSE stream mid-event.

    Each request is forwarded upstream as HTTP/1.0 without keep-alive, so every
    connection carries one request and the server writes the event stream without
    chunked framing: the proxy sees raw SSE bytes and can forward them one complete
    block (``...\\n\\n``) at a time. :meth:`cut_streams` makes the proxy send the first
    half of the next event on every open ``/stream`` connection and hang up, the way a
    dropped connection looks to the browser. ``prefix`` mounts the server under a path
    such as ``/proxy/8080/`` (the proxy strips it), like jupyter-server-proxy.
    """

    def __init__(self, upstream_host: str, upstream_port: int, prefix: str = "/") -> None:
        assert prefix.startswith("/") and prefix.endswith("/")
        self.upstream = (upstream_host, upstream_port)
        self.prefix = prefix.encode()
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._cut_wanted = threading.Event()
        self._cut_done = threading.Event()
        self._cut_ids: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="stream-cutter", daemon=True
        )
        self._server: asyncio.Server | None = None
        self.port = 0
        self.start_url = ""

    # -- lifecycle (called from the test thread)
    def start(self) -> str:
        """Start listening; return the URL the browser should open."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.start_url = f"http://127.0.0.1:{self.port}{self.prefix.decode()}"
        return self.start_url

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def stream_requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return [r for r in self.requests if urlsplit(r.path).path.endswith("/stream")]

    def cut_streams(self, timeout: float = 10.0) -> str | None:
        """Cut the open stream mid-event; return the last id the browser fully received."""
        self._cut_done.clear()
        self._cut_wanted.set()
        assert self._cut_done.wait(timeout), "no event arrived to cut the stream on"
        return self._cut_ids[-1]

    # -- the proxy (runs on the proxy's event loop)
    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        swriter: asyncio.StreamWriter | None = None
        try:
            head = await creader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            method, target, _version = lines[0].split(b" ", 2)
            if not target.startswith(self.prefix):
                cwriter.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            target = b"/" + target[len(self.prefix) :]
            kept = [
                line
                for line in lines[1:]
                if not line.lower().startswith((b"connection:", b"keep-alive:"))
            ]
            record = ProxiedRequest(
                request_line=(method + b" " + target).decode("latin-1"),
                headers={
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.decode("latin-1").partition(":") for line in kept)
                },
            )
            with self._lock:
                self.requests.append(record)
            sreader, swriter = await asyncio.open_connection(*self.upstream)
            swriter.write(
                b"\r\n".join([method + b" " + target + b" HTTP/1.0", *kept]) + b"\r\n\r\n"
            )
            await swriter.drain()
            if urlsplit(record.path).path == "/stream":
                await self._pump_events(sreader, cwriter, record)
            else:
                while data := await sreader.read(65536):
                    cwriter.write(data)
                    await cwriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            if swriter is not None:
                swriter.close()
            cwriter.close()

    async def _pump_events(
        self, sreader: asyncio.StreamReader, cwriter: asyncio.StreamWriter, record: ProxiedRequest
    ) -> None:
        cwriter.write(await sreader.readuntil(b"\r\n\r\n"))  # response head, as is
        buffer = b""
        while data := await sreader.read(65536):
            buffer += data
            while (end := buffer.find(b"\n\n")) >= 0:
                block, buffer = buffer[: end + 2], buffer[end + 2 :]
                if self._cut_wanted.is_set() and b"\ndata:" in b"\n" + block:
                    # Half an event: its id line may arrive but it is never dispatched,
                    # so the browser's last event id stays that of the previous block.
                    cwriter.write(block[: len(block) // 2])
                    await cwriter.drain()
                    record.cut = True
                    self._cut_wanted.clear()
                    self._cut_ids.append(record.last_id)
                    self._cut_done.set()
                    return
                cwriter.write(block)
                for line in block.split(b"\n"):
                    if line.startswith(b"id:"):
                        record.last_id = line[3:].removeprefix(b" ").decode()
            await cwriter.drain()


@pytest.fixture
def stream_cutter(quote_server: QuoteServer) -> Iterator[StreamCutter]:
    """A :class:`StreamCutter` in front of the session's server."""
    cutter = StreamCutter(quote_server.host, quote_server.port)
    cutter.start()
    yield cutter
    cutter.stop()


@pytest.fixture
def busy_stream_cutter(busy_server: QuoteServer) -> Iterator[StreamCutter]:
    """A :class:`StreamCutter` in front of the busy server."""
    cutter = StreamCutter(busy_server.host, busy_server.port)
    cutter.start()
    yield cutter
    cutter.stop()


@pytest.fixture
def prefixed_proxy(quote_server: QuoteServer) -> Iterator[StreamCutter]:
    """The server mounted under ``/proxy/8080/``, as jupyter-server-proxy would."""
    cutter = StreamCutter(quote_server.host, quote_server.port, prefix="/proxy/8080/")
    cutter.start()
    yield cutter
    cutter.stop()
