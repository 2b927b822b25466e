"""Python overhead of fan-out per client: one publish to N subscribers with a no-op socket.

    python -m benchmarks.fanout.bench_writer            # 10,000 subscribers, 5 publishes

Every subscriber has a :class:`~quoteflow.server.writer.SocketWriter` whose socket
accepts everything instantly, so the time is the Python path alone (broker group loop,
``Subscription.push``, writer, chunk framing, counters, latency stamp) without the
kernel's ``send()``. Multiply by the subscriber count to see what it adds to a burst.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

from quoteflow.broker.base import ALL_EVENTS
from quoteflow.broker.memory import MemoryBroker
from quoteflow.market import Market
from quoteflow.server.writer import FrameCache, LatencySamples, SocketWriter, frame_chunk


class _Socket:
    def send(self, data: bytes) -> int:
        return len(data)


class _Stream:
    """Enough of tornado's IOStream for the writer's fast path."""

    def __init__(self) -> None:
        self.socket = _Socket()

    def writing(self) -> bool:
        return False


class _Metrics:
    bytes_sent = 0
    events_delivered = 0


async def _run(n: int, repeats: int) -> None:
    broker = MemoryBroker()
    market = Market.universe(1, seed=1)
    latency = LatencySamples(lambda seconds: None)
    # One framing cache for all, as an app has (LiveWriters.chunked).
    chunked = FrameCache(frame_chunk)
    for _ in range(n):
        sub = broker.subscribe(None, ALL_EVENTS, None)
        stream: Any = _Stream()
        SocketWriter(stream, sub, _Metrics(), latency, frame=chunked).start()
    for _ in range(repeats):
        batch = market.step()
        t0 = time.perf_counter()
        broker.publish(batch)
        dt = time.perf_counter() - t0
        latency.flush()
        print(f"publish to {n:,} subscribers: {dt * 1e3:.2f} ms = {dt / n * 1e6:.2f} us each")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fanout.bench_writer")
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    asyncio.run(_run(args.subscribers, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
