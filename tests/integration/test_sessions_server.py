"""Session and trade events over a real server socket: a simulated XNYS week, filtered by type."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from quoteflow.market import Market
from quoteflow.market.sessions import SIM_SECONDS_PER_YEAR
from quoteflow.models import GARCH, GBM
from tests.integration.fakes import RawStream, payloads, request, run, serving
from tests.unit.test_sessions import THANKSGIVING_WEEK

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Hang guard for reading a simulated week (about 70 ticks of 2 ms: well under a second).
READ_HANG_GUARD_S = 20.0


def week_market() -> Market:
    tick = 0.002
    step_s = 30 * 60.0  # 13 ticks per regular session: a week in ~0.15 s of wall time
    return Market(
        {"A": GBM(0.05, 0.3), "B": GARCH()},
        seed=2,
        tick_interval=tick,
        speed=step_s / SIM_SECONDS_PER_YEAR / tick,
        bar_interval=4 * tick,
        calendar="XNYS",
        start="2024-11-25",
        trades={"rate": 200.0},
    )


def _sessions(events: list[Any]) -> list[tuple[str, str]]:
    return [(p["state"], p["sim_ts"]) for p in payloads(events, "session")]


def test_session_and_trade_events_reach_a_client_filtered_by_type_and_symbol() -> None:
    want = [
        (state, stamp)
        for o, c in THANKSGIVING_WEEK
        for state, stamp in (("open", o), ("closed", c))
    ]

    async def body() -> None:
        async with serving(week_market()) as server:
            assert server.port is not None
            # From the first event on (lastEventId=0), whenever we connect.
            only = await RawStream.open(
                server.port, "/stream?symbols=A&events=session,trade&lastEventId=0"
            )
            ticks = await RawStream.open(server.port, "/stream?events=tick,bar&lastEventId=0")
            assert only.status == ticks.status == 200
            await only.read_until(
                lambda s: len(_sessions(s.events)) >= len(want), READ_HANG_GUARD_S
            )
            await ticks.read_until(
                lambda s: any(json.loads(e.data)["sim_ts"] >= "2024-11-29T17" for e in s.events),
                READ_HANG_GUARD_S,
            )
            await only.close()
            await ticks.close()
        assert _sessions(only.events)[: len(want)] == want
        assert {e.event for e in only.events} == {"session", "trade"}
        trades = payloads(only.events, "trade")
        assert trades and all(t["symbol"] == "A" for t in trades)
        assert all(
            list(t) == ["symbol", "price", "size", "side", "ts", "sim_ts", "seq"] for t in trades
        )
        assert {t["side"] for t in trades} == {"buy", "sell"}
        # ids strictly increase across both kinds on one stream
        ids = [int(e.id) for e in only.events]
        assert ids == sorted(set(ids))
        # The other stream: ticks and bars only, never on Thanksgiving, never after the
        # half day's 18:00 UTC close, and bars built from trades (volume = traded shares).
        assert {e.event for e in ticks.events} == {"tick", "bar"}
        stamps = [json.loads(e.data)["sim_ts"] for e in ticks.events]
        assert not any(s.startswith("2024-11-28") for s in stamps)
        assert not any(s.startswith("2024-11-29") and s >= "2024-11-29T18" for s in stamps)
        traded = sum(t["size"] for t in trades)
        bars_a = [b for b in payloads(ticks.events, "bar") if b["symbol"] == "A"]
        assert sum(b["volume"] for b in bars_a) <= traded  # bars cover the trades seen so far

    run(body)


def test_bad_event_type_is_a_400_that_names_trade_and_session() -> None:
    async def body() -> None:
        async with serving(week_market()) as server:
            assert server.port is not None
            status, payload = await request(server.port, "GET", "/stream?events=tick,quote")
            assert status == 400
            assert isinstance(payload, dict)
            assert "quote" in payload["error"]
            assert "session" in payload["error"] and "trade" in payload["error"]

    run(body)


def test_the_project_client_reads_session_events() -> None:
    from quoteflow.client import stream

    async def body() -> None:
        async with serving(week_market()) as server:
            got: list[dict[str, Any]] = []
            async with asyncio.timeout(READ_HANG_GUARD_S):
                async for ev in stream(
                    server.stream_url, symbols=["B"], events=["session"], last_event_id="0"
                ):
                    assert ev.event == "session"
                    got.append(json.loads(ev.data))
                    if len(got) >= 4:
                        break
        assert [(g["state"], g["symbol"]) for g in got] == [
            ("open", "B"),
            ("closed", "B"),
            ("open", "B"),
            ("closed", "B"),
        ]
        assert got[1]["sim_ts"] == "2024-11-25T21:00:00.000Z"

    run(body)
