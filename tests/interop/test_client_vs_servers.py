"""quoteflow's client against third-party SSE servers (issue 18), through the proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib.metadata import version

import pytest

from quoteflow.client import stream
from tests.integration.fakes import run
from tests.interop.harness import AFTER, COUNT, HANG_GUARD, Row, contiguous, cut_verdicts
from tests.interop.peers import EVENTS, aiohttp_sse_server, sse_starlette_server
from tests.interop.proxy import CutProxy

pytestmark = [pytest.mark.interop, pytest.mark.integration, pytest.mark.timeout(120)]

Peer = Callable[[], AbstractAsyncContextManager[int]]


@pytest.mark.parametrize(
    ("peer", "name"),
    [(sse_starlette_server, "sse-starlette"), (aiohttp_sse_server, "aiohttp-sse")],
)
def test_quoteflow_client_against(peer: Peer, name: str) -> None:
    async def body() -> None:
        async with peer() as port, CutProxy(port, only_path="/stream", after=AFTER) as proxy:
            got: list[tuple[str, str, str]] = []
            url = f"http://127.0.0.1:{proxy.port}/stream"

            async def take() -> None:
                async with stream(url, backoff_initial=0.05, heartbeat_timeout=None) as es:
                    async for e in es:
                        got.append((e.id or "", e.event, e.data))
                        if len(got) >= COUNT:
                            break

            await asyncio.wait_for(take(), HANG_GUARD)
            streams = proxy.streams
        exact = contiguous(got, EVENTS) and got[0] == EVENTS[0]
        cuts = cut_verdicts(streams, {g[0] for g in got})
        row = Row(
            name, "server", "Python", version(name), True, note="read by quoteflow.client.stream"
        )
        row.exact, row.cuts = exact, cuts
        row.write(streams)
        assert exact, got[:3]
        assert row.green, (cuts, streams)

    run(body)
