"""A client that stops reading is cut off; memory stays bounded; others are unaffected."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from quoteflow.broker.memory import MemoryBroker
from tests.integration.fakes import FakeSource, RawStream, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BIG = 64 * 1024  # bytes of padding per BIG tick
MAX_BACKLOG = 256 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _normal_client(port: int, n: int) -> tuple[list[float], list[int]]:
    """Read ``n`` small ticks; return per-event latencies and the ``n`` counters."""
    s = await RawStream.open(port, "/stream?symbols=AAA,BBB")
    latencies: list[float] = []
    counters: list[int] = []
    seen = 0
    try:
        async with asyncio.timeout(60):
            while len(counters) < n:
                if not await s.read_some():
                    raise EOFError("normal client was disconnected")
                now = time.monotonic()
                for ev in s.events[seen:]:
                    data = json.loads(ev.data)
                    latencies.append(now - data["t"])
                    if data["symbol"] == "AAA":
                        counters.append(data["n"])
                seen = len(s.events)
    finally:
        await s.close()
    return latencies, counters


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
            # Baseline latency of a normal client with nobody stalled.
            base_lat, base_n = await _normal_client(port, 300)

            rss_before = rss_bytes()
            published_before = source.k
            stalled = await RawStream.open(port, "/stream", rcvbuf=4096)
            normal = asyncio.create_task(_normal_client(port, 300))
            await wait_for(
                lambda: broker.stats.slow_consumer_disconnects >= 1,
                timeout=60,
                what="the stalled client to be dropped",
            )
            # Keep publishing for a while after the drop: memory must not creep.
            await wait_for(
                lambda: (source.k - published_before) * BIG > 40 * 1024 * 1024,
                timeout=60,
                what="40 MiB published",
            )
            rss_after = rss_bytes()
            stall_lat, stall_n = await normal
            published_bytes = (source.k - published_before) * BIG

            assert len(server.state.streams) == 0  # the stalled stream is gone
            metrics = server.state.metrics.render().decode()
            assert "quoteflow_slow_consumer_disconnects_total 1.0" in metrics
            stalled.abort()

        # Nothing was lost by the normal client in either phase.
        for counters in (base_n, stall_n):
            assert counters == list(range(counters[0], counters[0] + len(counters)))
        # Memory: the server kept at most the backlog bound plus one write in flight per
        # stream, while far more than that was published. An unbounded queue would hold
        # all of published_bytes (asserted to be large, so the check can fail).
        assert published_bytes > 40 * 1024 * 1024
        assert rss_after - rss_before < 16 * 1024 * 1024, (rss_before, rss_after)
        # Latency: with the stalled client the broker pays one list append per batch
        # until the cut, so the normal client's p99 must stay of the same order. The
        # bound is generous (x10 and +250 ms) for a noisy 2-core CI machine: stalling
        # behind the slow reader would cost seconds, not milliseconds.
        assert p99(stall_lat) < max(10 * p99(base_lat), p99(base_lat) + 0.25), (
            p99(base_lat),
            p99(stall_lat),
        )

    run(body)
