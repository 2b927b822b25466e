"""Two third-party SSE servers for quoteflow's client: sse-starlette and aiohttp-sse.

Each serves the same :data:`EVENTS` at ``/stream``, honouring ``Last-Event-ID`` (it
resumes after that id), with ``retry`` on the first event. The events are chosen to
trip a careless parser: a multi-line payload, U+2028 inside a line, a 70 KB event. The
two servers end their lines differently (sse-starlette CRLF, aiohttp-sse LF), and both
pass through the cutting proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.interop.harness import RETRY_MS

#: (id, type, data) of every event, in order; ids 1..len.
EVENTS: list[tuple[str, str, str]] = [
    (
        str(k),
        "tick",
        "x" * 70_000
        if k % 7 == 3
        else f"line one of {k}\nline two"
        if k % 5 == 1
        else f'{{"n": {k}, "text": "a\u2028b"}}',
    )
    for k in range(1, 41)
]
#: Seconds between two events.
INTERVAL = 0.01


def _start(last_event_id: str | None) -> int:
    if last_event_id and last_event_id.isdigit():
        return int(last_event_id)
    return 0


@contextlib.asynccontextmanager
async def sse_starlette_server() -> AsyncIterator[int]:
    """sse-starlette under uvicorn on a free port of this loop; yields the port."""
    import uvicorn
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    async def stream(request: Request) -> EventSourceResponse:
        start = _start(request.headers.get("last-event-id"))

        async def events() -> AsyncIterator[ServerSentEvent]:
            for i, (eid, kind, data) in enumerate(EVENTS[start:]):
                yield ServerSentEvent(data, id=eid, event=kind, retry=RETRY_MS if i == 0 else None)
                await asyncio.sleep(INTERVAL)
            await asyncio.Event().wait()  # all sent: hold the stream open

        return EventSourceResponse(events(), ping=None, sep="\r\n")

    app = Starlette(routes=[Route("/stream", stream)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def aiohttp_sse_server() -> AsyncIterator[int]:
    """aiohttp-sse on a free port of this loop; yields the port."""
    from aiohttp import web
    from aiohttp_sse import sse_response

    async def stream(request: web.Request) -> web.StreamResponse:
        start = _start(request.headers.get("Last-Event-ID"))
        async with sse_response(request, sep="\n", ping_interval=3600) as resp:
            for i, (eid, kind, data) in enumerate(EVENTS[start:]):
                await resp.send(data, id=eid, event=kind, retry=RETRY_MS if i == 0 else None)
                await asyncio.sleep(INTERVAL)
            await asyncio.Event().wait()
        return resp

    app = web.Application()
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
