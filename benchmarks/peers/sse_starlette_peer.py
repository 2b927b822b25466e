"""Fan-out peer: sse-starlette on uvicorn (uvloop event loop, httptools parser).

One ``asyncio.Queue(maxsize=256)`` per client (see ``_feed.py``); the response
is an ``EventSourceResponse`` over an async generator that drains it. Events are
framed once by the feed and yielded as bytes, which sse-starlette sends as they
are, so the peer is not charged for encoding every event once per client.

    python benchmarks/peers/sse_starlette_peer.py --port 8090 --symbols 10 --interval-ms 100
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from _feed import RETRY_FRAME, Hub, generate, parse_args
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route


def make_app(hub: Hub, symbols: int, interval_ms: float) -> Starlette:
    """The Starlette app: GET /stream, with the tick generator as a lifespan task."""

    async def events() -> AsyncIterator[bytes]:
        sub = hub.subscribe()
        try:
            yield RETRY_FRAME
            while True:
                frame = await sub.queue.get()
                if sub.closed:
                    return  # dropped as a slow consumer
                yield frame
        finally:
            hub.unsubscribe(sub)

    async def stream(request: Request) -> EventSourceResponse:
        return EventSourceResponse(
            events(),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            ping=15,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(generate(hub, symbols, interval_ms))
        try:
            yield
        finally:
            task.cancel()

    return Starlette(routes=[Route("/stream", stream)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    app = make_app(Hub(), args.symbols, args.interval_ms)
    print(
        f"sse-starlette listening on http://127.0.0.1:{args.port}/ "
        f"(symbols={args.symbols}, interval={args.interval_ms}ms)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
