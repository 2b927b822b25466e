"""The quoteflow server against the SSE clients people already use (issue 18)."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS, require_executable
from tests.integration.fakes import run
from tests.interop.conftest import NPM_EVENTSOURCE
from tests.interop.harness import AFTER, Received, Row, page_server, probe, server_scenario
from tests.interop.proxy import Connection
from tests.interop.recipes import aiohttp_sse_client_events, httpx_sse_events, sseclient_events

pytestmark = [pytest.mark.interop, pytest.mark.integration, pytest.mark.timeout(120)]


def _finish(row: Row, exact: bool, cuts: dict[str, bool], streams: list[Connection]) -> None:
    row.exact, row.cuts = exact, cuts
    row.write(streams)
    assert exact, "events differ from the reference reader's (gap, duplicate or bytes)"
    assert cuts == dict.fromkeys(cuts, True), (cuts, streams)
    assert row.green, row


def test_npm_eventsource(node_eventsource: tuple[str, Path]) -> None:
    node, folder = node_eventsource

    async def read(url: str, n: int) -> list[Received]:
        proc = await asyncio.create_subprocess_exec(
            node,
            "node_reader.mjs",
            url,
            str(n),
            cwd=folder,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        got: list[Received] = []
        try:
            while len(got) < n:
                line = await proc.stdout.readline()
                assert line, "node reader ended early"
                e = json.loads(line)
                got.append((e["id"], e["event"], e["data"]))
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        return got

    async def body() -> None:
        exact, cuts, streams = await server_scenario(read)
        row = Row(
            "npm eventsource", "client", "JavaScript (Node)", NPM_EVENTSOURCE.split("@")[1], True
        )
        _finish(row, exact, cuts, streams)

    run(body)


#: The browser recipe of docs/server.md, reading its stream URL from ``?src=``.
_PAGE = """<!doctype html><script>
window.got = [];
const es = new EventSource(new URLSearchParams(location.search).get("src"));
es.addEventListener("tick", (e) => window.got.push([e.lastEventId, e.type, e.data]));
</script>"""


@pytest.mark.browser
def test_chromium_eventsource_from_another_origin() -> None:
    chromium = require_executable("chromium")
    from playwright.async_api import async_playwright

    seen: dict[str, str] = {}

    async def body() -> None:
        async with page_server(_PAGE) as origin:

            async def read(url: str, n: int) -> list[Received]:
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                    try:
                        page = await browser.new_page()
                        await page.goto(f"{origin}/?src={urllib.parse.quote(url)}")
                        await page.wait_for_function(f"window.got.length >= {n}")
                        got = await page.evaluate("window.got")
                        seen["version"] = browser.version
                    finally:
                        await browser.close()
                return [(e[0], e[1], e[2]) for e in got[:n]]

            exact, cuts, streams = await server_scenario(read, cors_origins=(origin,))
        row = Row(
            "Chromium EventSource",
            "client",
            "JavaScript (browser)",
            seen.get("version", "?").split(".")[0],
            True,
            note="page on another origin: needs --cors-origin",
        )
        _finish(row, exact, cuts, streams)

    run(body)


def _take_sync(events: Iterator[Any], n: int) -> list[Received]:
    got = []
    try:
        for e in itertools.islice(events, n):
            got.append(e)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return got


def _bare(take: Callable[[str], int]) -> Callable[[str], Awaitable[str]]:
    """``take(url)`` reads with a bare client until it gives control back; returns how."""

    async def attempt(url: str) -> str:
        try:
            n = await asyncio.to_thread(take, url)
        except Exception as exc:
            return f"raised {type(exc).__name__}"
        return f"ended after {n} events"

    return attempt


def _httpx_sse_bare(url: str) -> int:
    import httpx
    from httpx_sse import connect_sse

    with httpx.Client() as client, connect_sse(client, "GET", url) as source:
        return sum(1 for _ in source.iter_sse())


def test_httpx_sse_with_recipe() -> None:
    async def read(url: str, n: int) -> list[Received]:
        def take() -> list[Received]:
            got = _take_sync(httpx_sse_events(url), n)
            # Every event is a real one: sse.json() works on each (issue 18: the old
            # data-less retry block came out as an empty "message" event here).
            for sse in got:
                assert isinstance(sse.json(), dict)
            return [(sse.id, sse.event, sse.data) for sse in got]

        return await asyncio.to_thread(take)

    async def body() -> None:
        # Measured, not assumed: at a clean end of the response the bare client stops.
        outcome, conns = await probe(_bare(_httpx_sse_bare), "end")
        assert (outcome, len(conns)) == (f"ended after {AFTER} events", 1)
        exact, cuts, streams = await server_scenario(read)
        row = Row(
            "httpx-sse",
            "client",
            "Python",
            version("httpx-sse"),
            False,
            note="stops at the end of a response; sse.json() works on every event",
        )
        _finish(row, exact, cuts, streams)

    run(body)


def _sseclient_bare(url: str) -> int:
    import requests
    import sseclient

    with requests.get(url, stream=True, timeout=(10, 60)) as resp:
        return sum(1 for _ in sseclient.SSEClient(resp.iter_content(chunk_size=None)).events())


def test_sseclient_py_with_recipe() -> None:
    async def read(url: str, n: int) -> list[Received]:
        def take() -> list[Received]:
            return [(e.id, e.event, e.data) for e in _take_sync(sseclient_events(url), n)]

        return await asyncio.to_thread(take)

    async def body() -> None:
        outcome, conns = await probe(_bare(_sseclient_bare), "end")
        assert (outcome, len(conns)) == (f"ended after {AFTER} events", 1)
        exact, cuts, streams = await server_scenario(read)
        row = Row(
            "sseclient-py",
            "client",
            "Python",
            version("sseclient-py"),
            False,
            note="stops at the end of a response",
        )
        _finish(row, exact, cuts, streams)

    run(body)


def test_aiohttp_sse_client_with_recipe() -> None:
    async def read(url: str, n: int) -> list[Received]:
        got: list[Received] = []
        events = aiohttp_sse_client_events(url)
        try:
            async for e in events:
                got.append((e.last_event_id, e.type, e.data))
                if len(got) >= n:
                    break
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return got

    async def bare(url: str) -> str:
        from aiohttp_sse_client.client import EventSource

        n = 0
        try:
            async with EventSource(url, max_connect_retry=0) as source:
                async for _ in source:
                    n += 1
                    if n >= 2 * AFTER:
                        return f"read {n} events"
        except Exception as exc:
            return f"raised {type(exc).__name__}"
        return f"ended after {n} events"

    async def body() -> None:
        # Measured: after a drop (FIN between events) the bare client raises; after a
        # clean end it reconnects by itself, with Last-Event-ID.
        outcome, conns = await probe(bare, "fin")
        assert outcome.startswith("raised") and len(conns) == 1, (outcome, conns)
        outcome, conns = await probe(bare, "end")
        assert outcome == f"read {2 * AFTER} events", outcome
        assert [c.last_event_id for c in conns[1:2]] == conns[0].forwarded[-1:], conns
        exact, cuts, streams = await server_scenario(read)
        row = Row(
            "aiohttp-sse-client",
            "client",
            "Python (asyncio)",
            version("aiohttp-sse-client"),
            False,
            note="raises on a dropped connection (FIN, RST, mid-event cut); "
            "reconnects by itself only after a clean end",
        )
        _finish(row, exact, cuts, streams)

    run(body)
