"""Resume with Last-Event-ID over real sockets: no gap, no duplicate; reset when too late."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from quoteflow.broker.memory import MemoryBroker
from tests.integration.fakes import FakeSource, RawStream, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

N_BATCHES = 300  # 3 symbols + a bar round every 10 batches: 990 events
N_CLIENTS = 20


def _key(ev_id: str | None, data: str) -> tuple[int, str]:
    assert ev_id is not None
    return int(ev_id), data


async def _resuming_client(
    port: int, rng: random.Random, path: str, last_event: int, use_header: bool
) -> list[tuple[int, str]]:
    """Read, drop the connection at random points, resume; return what was received."""
    got: list[tuple[int, str]] = []
    last = "0"  # from the first event on, like the reference
    cuts = 0
    while not got or got[-1][0] < last_event:
        headers: dict[str, str] = {}
        url = path
        if use_header:
            headers["Last-Event-ID"] = last
        else:
            url = f"{path}{'&' if '?' in path else '?'}lastEventId={last}"
        s = await RawStream.open(port, url, headers)
        assert s.status == 200
        want = rng.randint(1, 120) if cuts < 4 else 10**9
        try:
            await s.read_until(
                lambda st, w=want: (
                    len(st.events) >= w
                    or bool(st.events and int(st.events[-1].id or 0) >= last_event)
                ),
                timeout=30,
            )
        finally:
            s.abort()  # an abrupt disconnect, mid-chunk if it happens to be
        assert all(e.event != "reset" for e in s.events)
        got.extend(_key(e.id, e.data) for e in s.events)
        if s.events and s.events[-1].id is not None:
            last = s.events[-1].id
        cuts += 1
    return got


@pytest.mark.parametrize("use_header", [True, False], ids=["header", "query"])
def test_reconnect_at_random_points_loses_and_repeats_nothing(use_header: bool) -> None:
    async def body() -> None:
        source = FakeSource(interval=0.002, max_batches=N_BATCHES, bar_every=10)
        async with serving(source) as server:
            port = server.port
            assert port is not None
            # The reference connects from id 0 (everything in the buffer) and never drops.
            ref = await RawStream.open(port, "/stream?lastEventId=0")
            total = N_BATCHES * 3 + (N_BATCHES // 10) * 3
            rng = random.Random(20261127 + use_header)
            paths = ["/stream", "/stream?symbols=AAA,CCC", "/stream?events=bar"]
            tasks = [
                asyncio.create_task(
                    _resuming_client(
                        port, random.Random(rng.random()), paths[i % 3], total, use_header
                    )
                )
                for i in range(N_CLIENTS)
            ]
            await ref.read_until(lambda s: len(s.events) >= total, timeout=60)
            results = await asyncio.gather(*tasks)
            await ref.close()
        reference = [_key(e.id, e.data) for e in ref.events]
        assert [i for i, _ in reference] == list(range(1, total + 1))
        for i, got in enumerate(results):
            path = paths[i % 3]
            if "symbols=AAA,CCC" in path:
                expected = [
                    (n, d) for n, d in reference if json.loads(d)["symbol"] in {"AAA", "CCC"}
                ]
            elif "events=bar" in path:
                expected = [(n, d) for n, d in reference if "close" in json.loads(d)]
            else:
                expected = reference
            # Equal lists: same events, same order, no gap, no duplicate.
            assert got == expected, f"client {i} ({path}) differs"

    run(body)


def test_resume_after_eviction_sends_reset_with_snapshot_then_live() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.002)
        broker = MemoryBroker(buffer_size=12)
        async with serving(source, broker=broker) as server:
            port = server.port
            assert port is not None
            s = await RawStream.open(port, "/stream?symbols=BBB")
            await s.read_until(lambda st: len(st.events) >= 2)
            s.abort()
            last = s.events[-1].id
            assert last is not None
            await wait_for(lambda: int(broker.last_id or 0) > int(last) + 40, what="eviction")
            s2 = await RawStream.open(port, "/stream?symbols=BBB", {"Last-Event-ID": last})
            await s2.read_until(lambda st: len(st.events) >= 3)
            await s2.close()
        first, *live = s2.events
        assert first.event == "reset"
        reset = json.loads(first.data)
        assert reset["reason"] == "evicted"
        assert reset["last_id"] == last
        assert list(reset["snapshot"]) == ["BBB"]
        assert first.id is not None
        assert int(first.id) >= reset["snapshot"]["BBB"]["seq"]
        # Live continues strictly after the reset's id.
        assert all(e.event == "tick" and int(e.id or 0) > int(first.id) for e in live)
        assert broker.stats.resets == 1

    run(body)


def test_resume_from_an_id_this_server_never_issued_is_a_reset() -> None:
    async def body() -> None:
        async with serving(FakeSource(interval=0.002)) as server:
            assert server.port is not None
            s = await RawStream.open(server.port, "/stream", {"Last-Event-ID": "999999999"})
            await s.read_until(lambda st: len(st.events) >= 2)
            await s.close()
        assert s.events[0].event == "reset"
        assert json.loads(s.events[0].data)["reason"] == "unknown_id"

    run(body)
