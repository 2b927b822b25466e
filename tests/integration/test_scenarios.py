"""Scripted scenarios over real sockets: one test per step, and the reconnect storm.

Each test serves a small seeded market through a real server (``ScenarioSource`` in
front of a :class:`~quoteflow.market.Market`), starts a scenario with ``POST /scenario``
and reads the feed with a raw socket or the project's own reconnecting client. Market
steps are checked on the payloads; transport steps on what the connection sees (no byte
during a stall, a 503, a 204, a ``retry:`` line, a reset) and on the client's ids, which
must stay gap-free across every reconnect except where the scenario forces a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from quoteflow.client import Event, EventStream, stream
from quoteflow.market import Market
from quoteflow.models import GBM
from quoteflow.scenario import ScenarioSource
from quoteflow.server.auth import mint_token
from quoteflow.server.runner import QuoteServer
from quoteflow.wire.payload import SESSION_FIELDS
from tests.integration.fakes import FakeSource, RawStream, request, run, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
STORM = ROOT / "examples" / "scenarios" / "reconnect_storm.toml"
#: Named hang guard: a condition that never comes true fails the test instead of hanging.
HANG_GUARD_S = 30.0
SECRET = "scenario-secret-" + "s" * 32


def _market(tick_interval: float = 0.05, sigma: float = 0.2) -> Market:
    return Market(
        {"AAA": GBM(mu=0.0, sigma=sigma), "BBB": GBM(mu=0.0, sigma=0.2)},
        s0={"AAA": 100.0, "BBB": 50.0},
        seed=5,
        tick_interval=tick_interval,
        bar_interval=None,
    )


@contextlib.asynccontextmanager
async def _serving(
    tick_interval: float = 0.05, sigma: float = 0.2, **options: Any
) -> AsyncIterator[QuoteServer]:
    async with serving(ScenarioSource(_market(tick_interval, sigma)), **options) as server:
        yield server


async def _start(port: int, steps: list[dict[str, Any]], name: str = "test") -> dict[str, Any]:
    body = json.dumps({"name": name, "steps": steps}).encode()
    status, answer = await request(port, "POST", "/scenario", body)
    assert status == 202, answer
    run_status: dict[str, Any] = answer["scenario"]
    return run_status


async def _until(cond: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while not cond():
            await asyncio.sleep(0.01)  # polling a condition, not a fixed wait


async def _scenario_done(port: int) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            status, body = await request(port, "GET", "/scenario")
            assert status == 200, body
            if body["running"] == 0:
                return
            await asyncio.sleep(0.05)


def _data(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(e.data)
    return out


def _between_markers(events: list[Event], symbol: str) -> list[dict[str, Any]]:
    """Ticks of ``symbol`` between BBB's halt and its resume (the scenario's markers)."""
    out: list[dict[str, Any]] = []
    inside = False
    for e in events:
        if e.event == "session" and _data(e)["symbol"] == "BBB":
            inside = _data(e)["state"] == "halted"
            if not inside:
                return out
        elif inside and e.event == "tick" and _data(e)["symbol"] == symbol:
            out.append(_data(e))
    raise AssertionError("no end marker in the stream")


def _markers(duration: float) -> list[dict[str, Any]]:
    return [
        {"action": "halt", "symbol": "BBB", "at": 0.0},
        {"action": "resume", "symbol": "BBB", "at": duration},
    ]


def _sessions(events: list[Event]) -> list[dict[str, Any]]:
    return [_data(e) for e in events if e.event == "session"]


def _id_breaks(events: list[Event]) -> list[tuple[int, int, str]]:
    """Places where an id is not the previous one + 1: ``(previous, id, event type)``."""
    out = []
    prev: int | None = None
    for e in events:
        assert e.id is not None
        i = int(e.id)
        if prev is not None and i != prev + 1:
            out.append((prev, i, e.event))
        prev = i
    return out


@dataclass
class _Reader:
    """The project's client, reading every event of an unfiltered stream in a task."""

    client: EventStream
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended: bool = False
    task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, port: int, **options: Any) -> _Reader:
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("heartbeat_timeout", 5.0)
        reader: _Reader | None = None

        def on_status(s: EventStream) -> None:
            if reader is not None and s.last_error and s.last_error not in reader.errors:
                reader.errors.append(s.last_error)

        client = stream(f"http://127.0.0.1:{port}/stream", on_status=on_status, **options)
        reader = cls(client)
        reader.task = asyncio.get_running_loop().create_task(reader._read())
        return reader

    async def _read(self) -> None:
        async for e in self.client:
            self.events.append(e)
        self.ended = True

    async def more(self, n: int) -> None:
        """Wait for ``n`` more events."""
        target = len(self.events) + n
        await _until(lambda: len(self.events) >= target, f"{n} more events")

    async def close(self) -> None:
        await self.client.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# ---------------------------------------------------------------------- market steps


def test_jump_moves_the_price_by_pct_on_the_stream() -> None:
    async def body() -> None:
        async with _serving(sigma=0.01) as server:
            s = await RawStream.open(server.port, "/stream?symbols=AAA&events=tick")
            await s.read_until(lambda r: len(r.events) >= 5)
            await _start(server.port, [{"action": "jump", "symbol": "AAA", "pct": -8.0}])
            await s.read_until(lambda r: len(r.events) >= 40)
            await s.close()
            prices = [_data(e)["price"] for e in s.events]
            moves = [math.log(b / a) for a, b in itertools.pairwise(prices)]
            big = [m for m in moves if abs(m) > 0.01]
            assert len(big) == 1, moves
            assert math.exp(big[0]) == pytest.approx(0.92, abs=0.002)

    run(body)


def test_volatility_multiplies_the_moves_for_its_duration() -> None:
    async def body() -> None:
        async with _serving() as server:
            s = await RawStream.open(server.port, "/stream?events=tick,session")
            steps = [
                *_markers(2.0),
                {"action": "volatility", "symbol": "AAA", "factor": 10.0, "duration": 2.0, "at": 0},
            ]
            await _start(server.port, steps)
            await s.read_until(lambda r: sum(e.event == "session" for e in r.events) >= 2)
            n_before = len(s.events)
            await s.read_until(lambda r: len(r.events) >= n_before + 160)
            await s.close()
            during = [t["price"] for t in _between_markers(s.events, "AAA")]
            assert len(during) == 40  # 2 scenario seconds at 20 ticks/s
            after_resume = False
            after: list[float] = []
            for e in s.events:
                if e.event == "session" and _data(e)["state"] == "open":
                    after_resume = True
                elif after_resume and e.event == "tick" and _data(e)["symbol"] == "AAA":
                    after.append(_data(e)["price"])

            def sd(p: list[float]) -> float:
                return statistics.stdev(math.log(b / a) for a, b in itertools.pairwise(p))

            assert sd(during) / sd(after) > 4.0  # 10 expected; 40 draws

    run(body)


def test_halt_streams_no_ticks_and_sends_session_events() -> None:
    async def body() -> None:
        async with _serving() as server:
            s = await RawStream.open(server.port, "/stream?symbols=AAA,BBB&events=tick,session")
            await s.read_until(lambda r: len(r.events) >= 4)
            await _start(server.port, [{"action": "halt", "symbol": "BBB", "duration": 1.0}])
            await s.read_until(lambda r: len(_sessions(r.events)) >= 2)
            n = len(s.events)
            await s.read_until(lambda r: len(r.events) >= n + 10)
            await s.close()
            sessions = _sessions(s.events)
            assert [(d["state"], d["symbol"]) for d in sessions] == [
                ("halted", "BBB"),
                ("open", "BBB"),
            ]
            assert [d["seq"] for d in sessions] == [_seq(s.events, 0), _seq(s.events, 1)]
            # The payload of exchange-calendar sessions (wire.payload.SESSION_FIELDS).
            assert all(tuple(d) == (*SESSION_FIELDS, "seq") for d in sessions), sessions
            kinds = [(e.event, _data(e)["symbol"]) for e in s.events]
            start = kinds.index(("session", "BBB"))
            end = len(kinds) - 1 - kinds[::-1].index(("session", "BBB"))
            halted = kinds[start + 1 : end]
            assert ("tick", "BBB") not in halted
            assert halted.count(("tick", "AAA")) == 20  # 1 s at 20 ticks/s
            assert ("tick", "BBB") in kinds[end:]
            assert ("tick", "BBB") in kinds[:start]

    run(body)


def _seq(events: list[Event], k: int) -> int:
    seqs = [_data(e)["seq"] for e in events if e.event == "session"]
    return int(seqs[k])


def test_list_and_delist_change_the_catalog_and_the_stream() -> None:
    async def body() -> None:
        async with _serving() as server:
            port = server.port
            s = await RawStream.open(port, "/stream?events=tick,session")
            steps = [
                {"action": "list", "symbol": "NEW", "price": 20.0, "model": "gbm"},
                {"action": "delist", "symbol": "AAA", "at": 0.5},
            ]
            await _start(port, steps)
            await s.read_until(lambda r: len(_sessions(r.events)) >= 2)
            n = len(s.events)
            await s.read_until(lambda r: len(r.events) >= n + 20)
            await s.close()
            assert [(x["state"], x["symbol"]) for x in _sessions(s.events)] == [
                ("open", "NEW"),
                ("closed", "AAA"),
            ]
            symbols = [(e.event, _data(e)["symbol"]) for e in s.events]
            delisted_at = symbols.index(("session", "AAA"))
            listed_at = symbols.index(("session", "NEW"))
            assert ("tick", "NEW") not in symbols[:listed_at]
            assert symbols[listed_at:delisted_at].count(("tick", "NEW")) == 10
            assert ("tick", "AAA") not in symbols[delisted_at:]
            assert ("tick", "NEW") in symbols[delisted_at:]
            status, catalog = await request(port, "GET", "/symbols")
            assert status == 200 and sorted(catalog) == ["BBB", "NEW"]
            assert catalog["NEW"]["model"] == "gbm"
            status, err = await request(port, "GET", "/stream?symbols=AAA")
            assert status == 400 and err["known_symbols"] == ["BBB", "NEW"]
            fresh = await RawStream.open(port, "/stream?symbols=NEW&events=tick")
            await fresh.read_until(lambda r: len(r.events) >= 3)
            await fresh.close()

    run(body)


def test_spread_widens_bid_ask_for_its_duration() -> None:
    async def body() -> None:
        async with _serving() as server:
            s = await RawStream.open(server.port, "/stream?symbols=AAA&events=tick")
            await s.read_until(lambda r: len(r.events) >= 5)
            steps = [{"action": "spread", "symbol": "AAA", "factor": 10.0, "duration": 1.0}]
            await _start(server.port, steps)
            await s.read_until(lambda r: len(r.events) >= 60)
            await s.close()
            wide = []
            for e in s.events:
                t = _data(e)
                wide.append((t["ask"] - t["bid"]) / t["price"] * 1e4 > 50)  # 10 -> 100 bps
            runs = [k for k, _ in itertools.groupby(wide)]
            assert runs == [False, True, False], wide
            assert sum(wide) == 20  # 1 s at 20 ticks/s

    run(body)


def test_burst_streams_rate_ticks_per_second_for_its_duration() -> None:
    async def body() -> None:
        async with _serving(tick_interval=0.5) as server:
            s = await RawStream.open(server.port, "/stream?events=tick,session")
            steps = [*_markers(1.0), {"action": "burst", "rate": 100.0, "duration": 1.0, "at": 0}]
            await _start(server.port, steps)
            await s.read_until(lambda r: len(_sessions(r.events)) >= 2)
            await s.close()
            ticks = _between_markers(s.events, "AAA")
            assert len(ticks) == 100
            gaps = [(b["ts_ns"] - a["ts_ns"]) / 1e9 for a, b in itertools.pairwise(ticks)]
            # The pace is the burst's (0.01 s), not the market's 0.5 s.
            assert statistics.median(gaps) < 0.25

    run(body)


# ------------------------------------------------------------------- transport steps


def test_drop_closes_every_stream_and_the_client_resumes_gap_free() -> None:
    async def body() -> None:
        async with _serving() as server:
            raw = await RawStream.open(server.port, "/stream")
            reader = _Reader.start(server.port)
            try:
                await reader.more(20)
                await _start(server.port, [{"action": "drop"}])
                await raw.read_until(lambda r: r.eof)  # the raw stream was cut too
                await raw.close()
                await _until(lambda: reader.client.reconnects >= 1, "a reconnect")
                await reader.more(20)
            finally:
                await reader.close()
            assert _id_breaks(reader.events) == []
            assert not [e for e in reader.events if e.event == "reset"]

    run(body)


def test_stall_sends_no_byte_not_even_a_heartbeat_then_delivers_everything() -> None:
    async def body() -> None:
        async with _serving(heartbeat=0.2) as server:
            s = await RawStream.open(server.port, "/stream")
            await s.read_until(lambda r: len(r.events) >= 10)
            await _start(server.port, [{"action": "stall", "duration": 1.5}])
            arrivals = [time.monotonic()]  # (the stall starts at the next tick)
            n = len(s.events)
            async with asyncio.timeout(HANG_GUARD_S):
                while len(s.events) < n + 60:
                    assert await s.read_some(), "the stalled stream was closed"
                    arrivals.append(time.monotonic())
            await s.close()
            silence = max(b - a for a, b in itertools.pairwise(arrivals))
            # Ticks every 0.05 s and heartbeats every 0.2 s, yet nothing for the stall.
            assert silence >= 1.2
            assert _id_breaks(s.events) == []  # the same connection, nothing lost

    run(body)


def test_stall_is_detected_by_the_client_heartbeat_timeout_which_resumes() -> None:
    async def body() -> None:
        async with _serving() as server:
            reader = _Reader.start(server.port, heartbeat_timeout=0.5)
            try:
                await reader.more(10)
                await _start(server.port, [{"action": "stall", "duration": 3.0}])
                await _until(lambda: reader.client.reconnects >= 1, "a reconnect")
                await reader.more(20)
            finally:
                await reader.close()
            assert any("no data for 0.5 s" in e for e in reader.errors), reader.errors
            assert _id_breaks(reader.events) == []

    run(body)


def test_retry_is_sent_on_every_open_stream() -> None:
    async def body() -> None:
        async with _serving() as server:
            s = await RawStream.open(server.port, "/stream")
            reader = _Reader.start(server.port)
            try:
                await reader.more(5)
                await _start(server.port, [{"action": "retry", "ms": 1234}])
                await s.read_until(lambda r: b"retry: 1234\n" in r.raw)
                await _until(lambda: reader.client.retry == 1234, "retry 1234 at the client")
            finally:
                await reader.close()
                await s.close()

    run(body)


def test_refuse_503_answers_the_next_stream_requests_then_lets_them_through() -> None:
    async def body() -> None:
        async with _serving() as server:
            port = server.port
            await _start(port, [{"action": "refuse", "count": 2, "status": 503}])
            await _scenario_done(port)
            answers = []
            for _ in range(3):
                s = await RawStream.open(port, "/stream")
                answers.append((s.status, s.headers.get("retry-after")))
                if s.status == 503:
                    body = json.loads(await s.body())
                    assert "scenario: refusing this stream request" in body["error"]
                await s.close()
            assert answers == [(503, "1"), (503, "1"), (200, None)]

    run(body)


def test_refuse_503_is_survived_by_the_client_gap_free() -> None:
    async def body() -> None:
        async with _serving() as server:
            reader = _Reader.start(server.port)
            try:
                await reader.more(10)
                steps = [{"action": "refuse", "count": 3, "status": 503}, {"action": "drop"}]
                await _start(server.port, steps)
                await _until(lambda: reader.client.reconnects >= 4, "four reconnects")
                await reader.more(20)
            finally:
                await reader.close()
            assert sum("503" in e for e in reader.errors) >= 1, reader.errors
            assert _id_breaks(reader.events) == []

    run(body)


def test_refuse_204_tells_the_client_to_stop() -> None:
    async def body() -> None:
        async with _serving() as server:
            reader = _Reader.start(server.port)
            try:
                await reader.more(5)
                await _start(server.port, [{"action": "refuse", "status": 204}, {"action": "drop"}])
                await _until(lambda: reader.ended, "the client's end")
            finally:
                await reader.close()
            assert reader.client.last_error == "HTTP 204 No Content: the server ended the stream"
            assert _id_breaks(reader.events) == []

    run(body)


def test_restart_with_an_id_gap_forces_a_reset_on_resume() -> None:
    async def body() -> None:
        async with _serving() as server:
            reader = _Reader.start(server.port)
            try:
                await reader.more(10)
                await _start(server.port, [{"action": "restart", "gap": 5000}])
                await _until(
                    lambda: any(e.event == "reset" for e in reader.events), "a reset event"
                )
                await reader.more(10)
            finally:
                await reader.close()
            resets = [e for e in reader.events if e.event == "reset"]
            assert len(resets) == 1
            assert _data(resets[0])["reason"] == "evicted"
            breaks = _id_breaks(reader.events)
            assert len(breaks) == 1
            before, after, kind = breaks[0]
            assert kind == "reset" and after >= before + 5000

    run(body)


# ----------------------------------------------------------------- the endpoint itself


def test_post_scenario_errors_name_the_step_and_key() -> None:
    async def body() -> None:
        async with _serving() as server:
            port = server.port
            cases = [
                (b'{"steps": [{"action": "jump", "symbol": "AAA", "pct": "x"}]}', "pct"),
                (b'{"steps": [{"action": "halt", "symbol": "ZZZ"}]}', "unknown symbol 'ZZZ'"),
                (b'{"steps": [{"action": "jmup"}]}', "did you mean 'jump'"),
                (b'{"steps": []}', "steps: must be a non-empty list"),
                (b"[1]", "must be a table"),
                (b'{"steps": [{"action": "drop", "at": NaN}]}', "invalid JSON"),
                (b"{", "invalid JSON"),
            ]
            for raw, expected in cases:
                status, answer = await request(port, "POST", "/scenario", raw)
                assert status == 400, (raw, answer)
                assert expected in answer["error"], (raw, answer)
            status, answer = await request(port, "DELETE", "/scenario")
            assert status == 200 and answer == {"cancelled": 0}

    run(body)


def test_post_scenario_needs_admin_when_auth_is_on_and_a_scenario_source() -> None:
    async def body() -> None:
        drop = json.dumps({"steps": [{"action": "drop"}]}).encode()
        async with _serving(auth_secret=SECRET) as server:
            status, _ = await request(server.port, "POST", "/scenario", drop)
            assert status == 401
            user = {"Authorization": f"Bearer {mint_token(SECRET)}"}
            status, answer = await request(server.port, "POST", "/scenario", drop, user)
            assert status == 403 and "admin" in answer["error"]
            admin = {"Authorization": f"Bearer {mint_token(SECRET, admin=True)}"}
            status, _ = await request(server.port, "POST", "/scenario", drop, admin)
            assert status == 202
        async with serving(FakeSource()) as server:
            status, answer = await request(server.port, "POST", "/scenario", drop)
            assert status == 409 and "runs no scenarios" in answer["error"]

    run(body)


def test_serve_scenario_file_error_is_one_line_naming_step_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "crash.toml"
    bad.write_text('[[steps]]\nat = 1\naction = "jump"\nsymbol = "SYM0000"\npcts = 3\n')
    cmd = [sys.executable, "-m", "quoteflow", "serve", "--universe", "2", "--scenario", str(bad)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "crash.toml: steps[0] (jump): 'pcts': unknown key (did you mean 'pct'?)" in lines[0]


# -------------------------------------------------------------------- the storm


def _storm() -> dict[str, Any]:
    scenario: dict[str, Any] = tomllib.loads(STORM.read_text())
    return scenario


def test_reconnect_storm_is_survived_by_the_project_client_with_no_lost_event() -> None:
    async def body() -> None:
        async with _serving() as server:
            # The stall (2 s) is found by the client's heartbeat watch.
            reader = _Reader.start(server.port, heartbeat_timeout=1.0)
            try:
                await reader.more(10)
                await _start(server.port, _storm()["steps"], name="reconnect storm")
                await _scenario_done(server.port)
                await _until(
                    lambda: any(e.event == "reset" for e in reader.events), "the forced reset"
                )
                await reader.more(20)
            finally:
                await reader.close()
            # drop, 3 x 503 + drop, stall, drop, restart: every one a reconnect.
            assert reader.client.reconnects >= 8, reader.errors
            assert sum("503" in e for e in reader.errors) >= 1, reader.errors
            resets = [e for e in reader.events if e.event == "reset"]
            assert len(resets) == 1  # the restart's, and only that one
            breaks = _id_breaks(reader.events)
            assert len(breaks) == 1 and breaks[0][2] == "reset", breaks
            assert breaks[0][1] >= breaks[0][0] + 1000  # the restart's gap

    run(body)


# ------------------------------------------------------------------- determinism


DETERMINISM = """
[[steps]]
at = 0.2
action = "jump"
symbol = "SYM0000"
pct = -5.0

[[steps]]
action = "volatility"
symbol = "SYM0001"
factor = 4.0
duration = 0.5

[[steps]]
after = 0.3
action = "halt"
symbol = "SYM0000"
duration = 0.4

[[steps]]
action = "list"
symbol = "NEWCO"
price = 20.0

[[steps]]
after = 0.2
action = "burst"
rate = 200.0
duration = 0.3

[[steps]]
after = 0.5
action = "delist"
symbol = "SYM0001"
"""


async def _first_events(port: int, n: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    """The first ``n`` events of the server's feed (replayed), timestamps removed
    (``sim_ts`` too: without a calendar or start it is the wall clock)."""
    await _scenario_done(port)
    s = await RawStream.open(port, "/stream?lastEventId=0")
    await s.read_until(lambda r: len(r.events) >= n)
    await s.close()
    out = []
    for e in s.events[:n]:
        d = _data(e)
        for stamp in ("ts", "ts_ns", "sim_ts", "start", "end"):
            d.pop(stamp, None)
        out.append((e.event, e.id, d))
    return out


def test_same_seed_and_scenario_give_the_same_feed_in_two_server_runs(tmp_path: Path) -> None:
    """Two ``quoteflow serve --seed 7 --scenario F`` processes, each read from the first
    event (``lastEventId=0`` replays the buffer): the same events, payloads equal but for
    the timestamps."""
    from tests.redis_server import QuoteflowProcess

    scenario = tmp_path / "det.toml"
    scenario.write_text(DETERMINISM)
    args = ["serve", "--port", "0", "--universe", "2", "--seed", "7", "--tick-interval", "0.02"]
    args += ["--scenario", str(scenario)]
    feeds = []
    for k in range(2):
        proc = QuoteflowProcess(tmp_path, f"det{k}", *args).wait_ready()
        try:
            assert proc.port is not None
            feeds.append(asyncio.run(_first_events(proc.port, 600)))
        finally:
            proc.stop()
    assert feeds[0] == feeds[1]
    kinds = {(e, d.get("state")) for e, _, d in feeds[0]}
    assert ("session", "halted") in kinds and ("session", "closed") in kinds
