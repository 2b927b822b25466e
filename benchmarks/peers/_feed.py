"""The tick feed and hub shared by the Python fan-out peers.

Same semantics as ``seed-go/main.go``: S symbols tick every T ms; one generator
makes a geometric random-walk price per symbol per tick and broadcasts the
event to every subscriber. Each event is framed once, as bytes::

    id: N\\nevent: tick\\ndata: {"symbol": ..., "price": ..., "ts_ns": ...}\\n\\n

Ids start at 1 and are global across symbols (contiguous for a subscriber to
all symbols); ``ts_ns`` is the wall-clock generation time of the tick. Each
subscriber has a bounded queue (256 events); a subscriber whose queue is full is
dropped (closed and removed), never allowed to stall the generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

QUEUE_SIZE = 256
RETRY_FRAME = b"retry: 3000\n\n"


@dataclass(eq=False)
class Subscriber:
    """One client's bounded queue of framed events; ``closed`` once it must stop."""

    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    closed: bool = False

    def close(self) -> None:
        """Mark closed and wake a consumer parked on an empty queue."""
        self.closed = True
        # A full queue never blocks its consumer, so no wake-up is needed then.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(b"")


class Hub:
    """Every subscriber gets every event; a full queue drops its subscriber."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.drops = 0

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.close()

    def publish(self, frame: bytes) -> None:
        full: list[Subscriber] = []
        for sub in self.subscribers:
            try:
                sub.queue.put_nowait(frame)
            except asyncio.QueueFull:
                full.append(sub)
        for sub in full:
            self.unsubscribe(sub)
            self.drops += 1


async def generate(hub: Hub, symbols: int, interval_ms: float, seed: int = 42) -> None:
    """Publish one tick per symbol every ``interval_ms`` until cancelled.

    Rounds are scheduled on absolute deadlines; when the loop falls more than a
    whole interval behind, the missed rounds are skipped (like Go's time.Ticker),
    so an overloaded server shows up as a lower event rate, not as a burst.
    """
    names = [f"SYM{i:04d}" for i in range(symbols)]
    prices = [100.0] * symbols
    rng = random.Random(seed)
    interval = interval_ms / 1000.0
    step = 0.2 * math.sqrt(interval / (252 * 6.5 * 3600))
    loop = asyncio.get_running_loop()
    next_round = loop.time() + interval
    event_id = 0
    while True:
        delay = next_round - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        next_round = now + interval if now - next_round > interval else next_round + interval
        ts_ns = time.time_ns()
        for i, name in enumerate(names):
            prices[i] *= math.exp(step * rng.gauss(0.0, 1.0))
            event_id += 1
            data = f'{{"symbol":"{name}","price":{prices[i]:.4f},"ts_ns":{ts_ns}}}'
            hub.publish(f"id: {event_id}\nevent: tick\ndata: {data}\n\n".encode())


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every peer shares: --port --symbols --interval-ms."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8090, help="TCP port on 127.0.0.1")
    parser.add_argument("--symbols", type=int, default=10, help="number of symbols ticking")
    parser.add_argument(
        "--interval-ms", type=float, default=100.0, help="tick interval in milliseconds"
    )
    args = parser.parse_args(argv)
    if args.symbols < 1 or args.interval_ms <= 0:
        parser.error("--symbols must be >= 1 and --interval-ms > 0")
    return args
