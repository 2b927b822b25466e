"""Session and trade events through the Redis broker: another instance serves them unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from quoteflow.broker.redis import RedisBroker
from quoteflow.client import SSEParser
from quoteflow.market import Market
from quoteflow.market.sessions import SIM_SECONDS_PER_YEAR
from quoteflow.models import GBM
from tests.integration.test_redis_broker import drain, run, started, until
from tests.redis_server import running_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def test_a_second_instance_serves_the_session_and_trade_events_of_the_producer(
    tmp_path: Path,
) -> None:
    tick = 0.01
    market = Market(
        {"A": GBM(0.0, 0.3), "B": GBM(0.0, 0.2)},
        seed=4,
        tick_interval=tick,
        # an hour per tick: 7 ticks a session, 4 on the half day
        speed=3600.0 / SIM_SECONDS_PER_YEAR / tick,
        bar_interval=None,
        calendar="XNYS",
        start="2024-11-27",
        trades={"rate": 100.0},
    )
    batches = [market.step(now=1_800_000_000.0 + k * tick) for k in range(11)]
    want = [
        (e.event, e.data)
        for b in batches
        for e in b
        if e.event in ("session", "trade") and e.symbol == "B"
    ]
    # Wednesday's session and the half day after Thanksgiving, both opened and closed.
    states = [(d["state"], d["sim_ts"]) for kind, d in want if kind == "session"]
    assert states == [
        ("open", "2024-11-27T14:30:00.000Z"),
        ("closed", "2024-11-27T21:00:00.000Z"),
        ("open", "2024-11-29T14:30:00.000Z"),
        ("closed", "2024-11-29T18:00:00.000Z"),
    ]

    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = await started(RedisBroker(redis.url, produce=True, consume=True))
            other = await started(RedisBroker(redis.url, consume=True))
            sub = other.subscribe(frozenset({"B"}), frozenset({"session", "trade"}), None)
            for b in batches:
                producer.publish(b)
                await asyncio.sleep(0)
            got: list[tuple[str, dict[str, Any]]] = []
            parser = SSEParser()
            await until(lambda: (drain(sub, parser, got), len(got) >= len(want))[1])
            strip = [
                (kind, {k: v for k, v in d.items() if k not in ("id", "seq")}) for kind, d in got
            ]
            assert strip == want

    run(main)
