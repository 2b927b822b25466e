"""Fan-out peer: plain Tornado, one ``write`` + ``await flush()`` per event per client.

The obvious way to stream SSE from Tornado, and the baseline quoteflow's own
server has to beat: each client handler waits on its bounded queue (256
events, see ``_feed.py``) and writes and flushes every event on its own.

    python benchmarks/peers/tornado_naive.py --port 8090 --symbols 10 --interval-ms 100
"""

from __future__ import annotations

import asyncio
import sys

import tornado.web
from _feed import RETRY_FRAME, Hub, Subscriber, generate, parse_args
from tornado.iostream import StreamClosedError


class StreamHandler(tornado.web.RequestHandler):
    """GET /stream: every event of every symbol, until the client goes away."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.sub: Subscriber | None = None

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        sub = self.sub = self.hub.subscribe()
        try:
            self.write(RETRY_FRAME)
            await self.flush()
            while True:
                frame = await sub.queue.get()
                if sub.closed:
                    break  # dropped as a slow consumer, or the client left
                self.write(frame)
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.hub.unsubscribe(sub)

    def on_connection_close(self) -> None:
        # The handler may be parked on queue.get(): unsubscribing wakes it.
        if self.sub is not None:
            self.hub.unsubscribe(self.sub)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    hub = Hub()
    app = tornado.web.Application([(r"/stream", StreamHandler, {"hub": hub})])
    app.listen(args.port, address="127.0.0.1", backlog=4096)
    print(
        f"tornado-naive listening on http://127.0.0.1:{args.port}/ "
        f"(symbols={args.symbols}, interval={args.interval_ms}ms)",
        file=sys.stderr,
        flush=True,
    )
    await generate(hub, args.symbols, args.interval_ms)


if __name__ == "__main__":
    asyncio.run(main())
