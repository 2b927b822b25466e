"""History + live without a seam, over real sockets (issue 14, items 1 and 2).

For random cut points: ``history(...)`` then ``stream(last_event_id=...)`` gives exactly
the bars (field by field) and ticks a client connected all along saw, on the memory
broker and across two Redis-backed instances (history from one, live from the other).
The reference bars are built from the never-disconnected client's bar events with the
same roll-up rule (:func:`quoteflow.wire.bars.roll_up`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quoteflow.client import Event, History, ahistory, stream
from quoteflow.market import Market
from quoteflow.wire.bars import Bar, iso_ms, roll_up
from tests.integration.fakes import RawStream, request, serving, wait_for
from tests.redis_server import QuoteflowProcess, RedisServer, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BAR_INTERVAL = 0.25  # s: a 1 s bar is 4 base bars, so roll-ups are exercised quickly
TICK_INTERVAL = 0.05


def _key(event_id: str | None) -> tuple[int, ...]:
    """Order of ids of either broker (``"12"`` or ``"1764212345678-3"``)."""
    assert event_id is not None
    return tuple(int(p) for p in event_id.split("-"))


def _base_bars(events: list[Event], symbol: str) -> list[tuple[Bar, str | None]]:
    out = []
    for e in events:
        if e.event == "bar":
            data = json.loads(e.data)
            if data["symbol"] == symbol:
                out.append((Bar.from_payload(data), e.id))
    return out


def _ticks(events: list[Event], symbol: str) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e.event == "tick":
            data = json.loads(e.data)
            if data["symbol"] == symbol:
                out.append({"id": e.id, **data})
    return out


async def _live_bars(
    stream_url: str, h: History, symbol: str, want: int
) -> tuple[list[Bar], list[Event]]:
    """Stream on from ``h.last_event_id`` and roll the bar events up with ``h.builder()``."""
    builder = h.builder()
    bars: list[Bar] = []
    seen: list[Event] = []
    async with stream(
        stream_url, symbols=symbol, events="bar", last_event_id=h.last_event_id
    ) as live:
        async with asyncio.timeout(60):  # hang guard
            async for ev in live:
                seen.append(ev)
                assert ev.event == "bar", ev
                done = builder.add(Bar.from_payload(json.loads(ev.data)), ev.id)
                if done is not None:
                    bars.append(done[0])
                    if len(bars) >= want:
                        break
    return bars, seen


def check_seam(
    ref_events: list[Event],
    symbol: str,
    interval: str,
    h: History,
    live: list[Bar],
    live_events: list[Event],
    *,
    ref_from_start: bool,
) -> None:
    """History bars, then live bars, equal the reference's bars with no gap and no overlap."""
    assert h.last_event_id is not None and h.bars, "history had no bars at the cut"
    cut = _key(h.last_event_id)
    # No overlap: the first live event comes after the last one history included.
    assert _key(live_events[0].id) > cut
    ref = roll_up(_base_bars(ref_events, symbol), interval, BAR_INTERVAL * 1000)
    if not ref_from_start:
        ref = ref[1:]  # the reference joined mid-bucket: its first bar may be partial
    before = [(b, i) for b, i in ref if _key(i) <= cut]
    after = [b for b, i in ref if _key(i) > cut]
    # The seam: history ends with the reference's last bar at or before the cut, and
    # last_event_id is exactly the id of that bar's last event.
    assert before[-1][1] == h.last_event_id
    first_ref = iso_ms(ref[0][0].start)
    overlap = [b for b in h.bars if iso_ms(b.start) >= first_ref]
    assert overlap, "history and the reference share no bar"
    assert overlap == [b for b, _ in before][-len(overlap) :]  # field by field
    # Live continues with exactly the reference's next bars.
    assert live == after[: len(live)]
    assert len(live) >= 2


def check_tick_seam(
    ref_events: list[Event], symbol: str, ticks: list[dict[str, Any]], live: list[Event]
) -> None:
    ref = _ticks(ref_events, symbol)
    ids = [t["id"] for t in ref]
    assert ticks, "no tick history"
    end = ids.index(ticks[-1]["id"])
    assert ticks == ref[end + 1 - len(ticks) : end + 1]
    got = [{"id": e.id, **json.loads(e.data)} for e in live]
    assert got == ref[end + 1 : end + 1 + len(got)]
    assert len(got) >= 5


async def _live_ticks(stream_url: str, symbol: str, last_id: str | None, want: int) -> list[Event]:
    out: list[Event] = []
    async with stream(stream_url, symbols=symbol, events="tick", last_event_id=last_id) as live:
        async with asyncio.timeout(60):  # hang guard
            async for ev in live:
                out.append(ev)
                if len(out) >= want:
                    break
    return out


async def _caught_up(ref: RawStream, event_id: str | None) -> None:
    """Wait until the reference (read by its own task) has read up to ``event_id``."""
    await wait_for(
        lambda: bool(ref.events) and _key(ref.events[-1].id) >= _key(event_id),
        timeout=30,
        what="the reference to catch up",
    )


async def _read_forever(ref: RawStream) -> None:
    while await ref.read_some():
        pass


def test_history_then_stream_is_seamless_on_the_memory_broker() -> None:
    async def body() -> None:
        market = Market.default(seed=14, tick_interval=TICK_INTERVAL, bar_interval=BAR_INTERVAL)
        async with serving(market) as server:
            port = server.port
            assert port is not None
            base = f"http://127.0.0.1:{port}/"
            # The never-disconnected client: from the first event on.
            ref = await RawStream.open(port, "/stream?lastEventId=0")
            reader = asyncio.create_task(_read_forever(ref))
            rng = random.Random(1414)
            try:
                for cut in range(6):
                    # A random cut point: somewhere inside a bucket, after a few bars.
                    await asyncio.sleep(rng.uniform(0.3, 2.5) if cut else 3.2)
                    symbol = rng.choice(market.symbols)
                    interval = "1s" if cut % 2 == 0 else "5s"
                    if interval == "5s" and cut < 3:
                        await asyncio.sleep(10.5)  # two whole 5 s buckets first
                    h = await ahistory(base, symbol, interval, limit=rng.randint(2, 50))
                    want = 2
                    live, seen = await _live_bars(server.stream_url, h, symbol, want)
                    await _caught_up(ref, seen[-1].id)
                    check_seam(ref.events, symbol, interval, h, live, seen, ref_from_start=True)
                    t = await ahistory(base, symbol, events="tick", limit=rng.randint(1, 80))
                    live_ticks = await _live_ticks(server.stream_url, symbol, t.last_event_id, 8)
                    await _caught_up(ref, live_ticks[-1].id)
                    check_tick_seam(ref.events, symbol, t.ticks, live_ticks)
            finally:
                reader.cancel()
                ref.abort()

    asyncio.run(body())


def test_history_with_only_an_open_bucket_resumes_at_that_buckets_first_bar() -> None:
    """A fresh server asked for 1 h bars has none complete: the answer's ``last_event_id``
    is the id just before the open bucket's first base bar, so the stream starts with it
    and the client builds that hour whole (was: ``null``, and the live hour began at
    whatever bar came next, silently partial)."""

    async def body() -> None:
        market = Market.default(seed=5, tick_interval=TICK_INTERVAL, bar_interval=BAR_INTERVAL)
        async with serving(market) as server:
            port = server.port
            assert port is not None
            ref = await RawStream.open(port, "/stream?lastEventId=0&events=bar")
            reader = asyncio.create_task(_read_forever(ref))
            try:
                symbol = market.symbols[0]
                await wait_for(
                    lambda: len(_base_bars(ref.events, symbol)) >= 4, 30, "four base bars"
                )
                h = await ahistory(f"http://127.0.0.1:{port}/", symbol, "1h")
                assert h.bars == [] and h.last_event_id is not None
                async with stream(
                    server.stream_url, symbols=symbol, events="bar", last_event_id=h.last_event_id
                ) as live:
                    async with asyncio.timeout(30):  # hang guard
                        first = await anext(aiter(live))
                base = _base_bars(ref.events, symbol)
                hour = [b for b in base if b[0].start[:13] == base[-1][0].start[:13]]
                # The first live event is the open hour's first base bar, nothing before.
                assert first.id == hour[0][1]
                assert Bar.from_payload(json.loads(first.data)) == hour[0][0]
            finally:
                reader.cancel()
                ref.abort()

    asyncio.run(body())


def test_history_answers_bad_parameters_with_clear_400s() -> None:
    async def body() -> None:
        market = Market.default(seed=3, tick_interval=TICK_INTERVAL, bar_interval=BAR_INTERVAL)
        async with serving(market) as server:
            port = server.port
            assert port is not None
            await wait_for(
                lambda: bool(server.app.settings["quoteflow"].history.symbols()), 10, "bars"
            )
            cases = {
                "/history": "missing 'symbol'",
                "/history?symbol=NOPE": "unknown symbol",
                "/history?symbol=AAPL,MSFT": "one symbol",
                "/history?symbol=AAPL&interval=2s": "unknown interval '2s'",
                "/history?symbol=AAPL&interval=1s&interval=5s": "once",
                "/history?symbol=AAPL&from=yesterday": "is not a time",
                "/history?symbol=AAPL&from=10&to=5": "must be after",
                "/history?symbol=AAPL&to=1e300": "out of range",
                # (was a 500: the message formatted a time before year 1)
                "/history?symbol=AAPL&from=10&to=-99999999999": "must be after",
                "/history?symbol=AAPL&limit=0": "1..10000",
                "/history?symbol=AAPL&limit=10001": "1..10000",
                "/history?symbol=AAPL&limit=-3": "1..10000",
                "/history?symbol=AAPL&events=quote": "choose bar",
                "/history?symbol=AAPL&events=tick&interval=1s": "bars only",
            }
            for path, words in cases.items():
                status, answer = await request(port, "GET", path)
                assert status == 400, (path, answer)
                assert words in answer["error"], (path, answer)
                assert "known_symbols" in answer
            status, answer = await request(port, "GET", "/history?symbol=aapl&interval=1m")
            assert status == 200 and answer["symbol"] == "AAPL" and answer["interval"] == "1m"
            assert answer["bar_interval"] == BAR_INTERVAL

    asyncio.run(body())


def test_interval_not_a_multiple_of_the_bar_interval_names_the_valid_ones() -> None:
    async def body() -> None:
        market = Market.default(seed=3, tick_interval=0.1, bar_interval=2.0)
        async with serving(market) as server:
            port = server.port
            assert port is not None
            status, answer = await request(port, "GET", "/history?symbol=AAPL&interval=5s")
            assert status == 400, answer
            assert "not a multiple of the market's bar interval (2 s)" in answer["error"]
            assert answer["valid_intervals"] == ["1m", "5m", "15m", "1h", "1d"]

    asyncio.run(body())


# ------------------------------------------------------------------ two Redis instances


def _serving(workdir: Path, url: str, name: str) -> QuoteflowProcess:
    return QuoteflowProcess(
        workdir, name, "serve", "--broker", url, "--port", "0", "--heartbeat", "0.5"
    )


@pytest.mark.redis
def test_history_then_stream_is_seamless_across_two_redis_instances(tmp_path: Path) -> None:
    red = RedisServer(tmp_path)
    red.start()
    try:
        with quoteflow_processes(tmp_path) as procs:
            # Both serving instances run before the producer starts: each builds the same
            # bars from the same stream (docs/server.md, "/history with Redis").
            a, b = _serving(tmp_path, red.url, "A"), _serving(tmp_path, red.url, "B")
            procs += [a, b]
            a.wait_ready()
            b.wait_ready()
            gen = QuoteflowProcess(
                tmp_path,
                "generator",
                "generate",
                "--broker",
                red.url,
                "--universe",
                "3",
                "--seed",
                "5",
                "--tick-interval",
                str(TICK_INTERVAL),
                "--bar-interval",
                str(BAR_INTERVAL),
                "--port",
                "0",
            )
            procs.append(gen)
            gen.wait_ready()

            def late() -> QuoteflowProcess:
                c = _serving(tmp_path, red.url, "C")
                procs.append(c)
                return c.wait_ready()

            asyncio.run(_two_instances(a, b, late))
    finally:
        red.stop()


async def _two_instances(
    a: QuoteflowProcess, b: QuoteflowProcess, late: Callable[[], QuoteflowProcess]
) -> None:
    urls = [f"http://127.0.0.1:{p.port}/" for p in (a, b)]
    symbols = ["SYM0000", "SYM0001", "SYM0002"]
    # The reference joins as soon as instance A serves (it answers 503 until it has
    # heard from the producer), so its first bucket may be partial.
    deadline = time.monotonic() + 30
    while True:
        ref = await RawStream.open(a.port or 0, "/stream")
        if ref.status == 200:
            break
        ref.abort()
        assert time.monotonic() < deadline, "instance A never served"
        await asyncio.sleep(0.1)
    reader = asyncio.create_task(_read_forever(ref))
    rng = random.Random(2828)
    try:
        await asyncio.sleep(4.0)  # a few whole 1 s buckets, and the base interval inferred
        for cut in range(6):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            symbol = rng.choice(symbols)
            first = cut % 2  # history from one instance, live from the other
            h = await ahistory(urls[first], symbol, "1s", limit=rng.randint(2, 40))
            assert h.bar_interval == BAR_INTERVAL
            other = urls[1 - first] + "stream"
            live, seen = await _live_bars(other, h, symbol, 2)
            await _caught_up(ref, seen[-1].id)
            check_seam(ref.events, symbol, "1s", h, live, seen, ref_from_start=False)
        # Both instances answer the same for a fixed range (the bars both hold).
        newest = (await ahistory(urls[0], "SYM0001", "1s", limit=1)).bars[-1].start
        h_a = await ahistory(urls[0], "SYM0001", "1s", end=newest, limit=6)
        h_b = await ahistory(urls[1], "SYM0001", "1s", end=newest, limit=6)
        assert len(h_a.bars) == 6
        assert (h_a.bars, h_a.last_event_id) == (h_b.bars, h_b.last_event_id)
        # An instance started later answers the same too: the bars are kept in Redis.
        started = time.time()
        c = await asyncio.to_thread(late)
        url_c = f"http://127.0.0.1:{c.port}/"
        deadline = time.monotonic() + 30  # hang guard
        while True:
            status, _ = await request(c.port or 0, "GET", "/history?symbol=SYM0001&interval=1s")
            if status == 200:
                break
            assert time.monotonic() < deadline, f"instance C answers {status}"
            await asyncio.sleep(0.2)
        newest = (await ahistory(urls[0], "SYM0001", "1s", limit=1)).bars[-1].start
        h_a = await ahistory(urls[0], "SYM0001", "1s", end=newest, limit=30)
        h_c = await ahistory(url_c, "SYM0001", "1s", end=newest, limit=30)
        assert (h_c.bars, h_c.last_event_id) == (h_a.bars, h_a.last_event_id)
        assert iso_ms(h_c.bars[0].start) < started * 1000 - 5000  # from before C existed
        h = await ahistory(url_c, "SYM0000", "1s", limit=10)
        live, seen = await _live_bars(url_c + "stream", h, "SYM0000", 2)
        await _caught_up(ref, seen[-1].id)
        check_seam(ref.events, "SYM0000", "1s", h, live, seen, ref_from_start=False)
        t = await ahistory(urls[1], "SYM0002", events="tick", limit=30)
        live_ticks = await _live_ticks(urls[0] + "stream", "SYM0002", t.last_event_id, 8)
        await _caught_up(ref, live_ticks[-1].id)
        check_tick_seam(ref.events, "SYM0002", t.ticks, live_ticks)
    finally:
        reader.cancel()
        ref.abort()
