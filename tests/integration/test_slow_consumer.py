"""A client that stops reading is cut off; memory stays bounded; others are unaffected."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from quoteflow.broker.memory import MemoryBroker
from tests.integration.fakes import FakeSource, RawStream, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BIG = 64 * 1024  # bytes of padding per BIG tick
MAX_BACKLOG = 256 * 1024
#: Awaiting a condition that normally holds within a second or two: a hang guard.
HANG_GUARD_S = 60.0
#: A normal client is "unaffected" if no tick reaches it later than this many batches
#: after it was published (typically 0-2).
MAX_BATCHES_BEHIND = 25


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class NormalClient:
    """What a normal client saw: the AAA counters, and per AAA tick how many batches the
    source had published after it by the time it arrived, and how many slow consumers
    had been dropped by then."""

    counters: list[int] = field(default_factory=list)
    behind: list[int] = field(default_factory=list)
    drops_at_arrival: list[int] = field(default_factory=list)


async def _normal_client(
    port: int, n: int, source: FakeSource, broker: MemoryBroker
) -> NormalClient:
    """Read ``n`` AAA ticks (with BBB's in between)."""
    s = await RawStream.open(port, "/stream?symbols=AAA,BBB")
    seen = NormalClient()
    done = 0
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while len(seen.counters) < n:
                if not await s.read_some():
                    raise EOFError("normal client was disconnected")
                for ev in s.events[done:]:
                    data = json.loads(ev.data)
                    if data["symbol"] == "AAA":
                        seen.counters.append(data["n"])
                        seen.behind.append(source.k - 1 - data["n"])
                        seen.drops_at_arrival.append(broker.stats.slow_consumer_disconnects)
                done = len(s.events)
    finally:
        await s.close()
    return seen


def test_stalled_client_is_cut_off_memory_bounded_others_unaffected() -> None:
    async def body() -> None:
        # BIG ticks are 64 KiB: ~16 MiB/s at 250 batches/s, so a stalled reader fills its
        # socket buffers and the 256 KiB backlog bound within seconds.
        source = FakeSource(("AAA", "BBB", "BIG"), interval=0.004, big={"BIG": BIG})
        # Small replay buffer: memory growth then has one possible cause, the backlog.
        broker = MemoryBroker(buffer_size=64, max_backlog_bytes=MAX_BACKLOG)
        async with serving(source, broker=broker) as server:
            port = server.port
            assert port is not None
            # Baseline: a normal client with nobody stalled.
            base = await _normal_client(port, 300, source, broker)

            rss_before = rss_bytes()
            published_before = source.k
            stalled = await RawStream.open(port, "/stream", rcvbuf=4096)
            normal = asyncio.create_task(_normal_client(port, 300, source, broker))
            await wait_for(
                lambda: broker.stats.slow_consumer_disconnects >= 1,
                timeout=HANG_GUARD_S,
                what="the stalled client to be dropped",
            )
            # Keep publishing for a while after the drop: memory must not creep.
            await wait_for(
                lambda: (source.k - published_before) * BIG > 40 * 1024 * 1024,
                timeout=HANG_GUARD_S,
                what="40 MiB published",
            )
            rss_after = rss_bytes()
            during = await normal
            published_bytes = (source.k - published_before) * BIG

            assert len(server.state.streams) == 0  # the stalled stream is gone
            metrics = server.state.metrics.render().decode()
            assert "quoteflow_slow_consumer_disconnects_total 1.0" in metrics
            stalled.abort()

        # Nothing was lost by the normal client in either phase.
        for seen in (base, during):
            assert seen.counters == list(range(seen.counters[0], seen.counters[0] + 300))
        # Memory: the server kept at most the backlog bound plus one write in flight per
        # stream, while far more than that was published. An unbounded queue would hold
        # all of published_bytes (asserted to be large, so the check can fail).
        assert published_bytes > 40 * 1024 * 1024
        assert rss_after - rss_before < 16 * 1024 * 1024, (rss_before, rss_after)
        # Unaffected, counted in events rather than seconds: (a) the normal client got
        # ticks while the stalled one was still connected, not only after the cut; (b) its
        # own queue stayed short: when a tick arrived, the source had published at most
        # MAX_BATCHES_BEHIND batches after it (the source and both clients share this
        # loop, so a loaded machine slows publishing as much as reading). A fan-out that
        # waited on the slow reader would deliver nothing until the cut (which takes at
        # least MAX_BACKLOG / BIG = 4 batches beyond the socket buffers; measured: ~50
        # AAA ticks arrive before it, and no tick is ever behind).
        assert during.drops_at_arrival.count(0) >= 1, "nothing delivered before the cut"
        assert max(during.behind) <= MAX_BATCHES_BEHIND, (max(base.behind), during.behind)

    run(body)
