"""Redis Streams broker against a real redis-server: ids, fan-out, resume across
instances, and a Redis restart in the middle of the feed."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from quoteflow.broker.base import CloseReason, EventIdError, Subscription
from quoteflow.broker.redis import RedisBroker, parse_stream_id
from quoteflow.client import SSEParser
from quoteflow.sources import MarketEvent
from tests.redis_server import RedisServer, running_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]

SYMBOLS = ("AAA", "BBB", "CCC")


def batch(k: int) -> list[MarketEvent]:
    return [MarketEvent("tick", s, {"symbol": s, "price": 100.0 + k, "k": k}) for s in SYMBOLS]


#: Awaiting a condition that normally holds within milliseconds: a hang guard.
UNTIL_HANG_GUARD_S = 10.0
#: A whole test body: a hang guard (each test takes a second or two).
RUN_HANG_GUARD_S = 60.0

#: Brokers started by the running test, closed by :func:`run` whatever happens.
_started: list[RedisBroker] = []


async def started(broker: RedisBroker) -> RedisBroker:
    """Start ``broker`` and register it, so a failing test still stops its tasks.

    An unclosed broker's reader/writer tasks would outlive the test body: cancelled by
    ``asyncio.run`` on the way out, redis-py may turn the cancel into a ConnectionError,
    which the loops retry; the run then hangs until pytest's own timeout instead of
    reporting the failed assertion.
    """
    await broker.start()
    _started.append(broker)
    return broker


async def until(cond: Callable[[], bool], timeout: float = UNTIL_HANG_GUARD_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def drain(sub: Subscription, parser: SSEParser, out: list[tuple[str, dict]]) -> None:  # type: ignore[type-arg]
    if sub.has_pending():
        for ev in parser.feed(sub.take().data):
            out.append((ev.event, {"id": ev.id, **json.loads(ev.data)}))


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await asyncio.wait_for(coro(), RUN_HANG_GUARD_S)
        finally:
            while _started:
                await _started.pop().aclose()  # idempotent: a test may have closed it

    asyncio.run(main())


def test_parse_stream_id() -> None:
    assert parse_stream_id("1-0") < parse_stream_id("1-1") < parse_stream_id("2-0")
    for bad in ("", "12", "a-1", "1-", "-1-0", "1-0-0", "9" * 30 + "-0"):
        with pytest.raises(EventIdError, match="Redis stream ids"):
            parse_stream_id(bad)


def test_ids_are_stream_ids_and_resume_works_on_another_instance(tmp_path: Path) -> None:
    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=True)
            await started(producer)
            a = producer.subscribe(None, frozenset({"tick"}), None)
            got_a: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            pa = SSEParser()
            for k in range(10):
                producer.publish(batch(k))
                await asyncio.sleep(0.005)
            await until(lambda: (drain(a, pa, got_a), len(got_a) == 30)[1])
            ids = [d["id"] for _, d in got_a]
            assert all(parse_stream_id(i) for i in ids)
            # "seq" is an int on both brokers (the producer's event counter here).
            seqs = [d["seq"] for _, d in got_a]
            assert all(type(q) is int for q in seqs)
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert ids == sorted(ids, key=parse_stream_id)
            assert [d["k"] for _, d in got_a] == [k for k in range(10) for _ in SYMBOLS]

            # A second serving instance, started later, resumes a client from any id.
            other = RedisBroker(redis.url, consume=True)
            await started(other)
            cut = 13
            b = other.subscribe(None, frozenset({"tick"}), ids[cut])
            got_b: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            pb = SSEParser()
            drain(b, pb, got_b)
            assert [d["id"] for _, d in got_b] == ids[cut + 1 :]
            # ...and goes on live with the same ids as the first instance.
            producer.publish(batch(10))
            await until(lambda: (drain(b, pb, got_b), len(got_b) == 30 - cut - 1 + 3)[1])
            await until(lambda: (drain(a, pa, got_a), len(got_a) == 33)[1])
            assert [d["id"] for _, d in got_b][-3:] == [d["id"] for _, d in got_a][-3:]
            # Filtered subscription on the other instance.
            c = other.subscribe(frozenset({"BBB"}), frozenset({"tick"}), ids[0])
            got_c: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            drain(c, SSEParser(), got_c)
            assert {d["symbol"] for _, d in got_c} == {"BBB"} and len(got_c) == 11
            # An id newer than any issued (Redis holds nothing that new either): reset
            # with snapshot, once Redis has answered.
            d = other.subscribe(None, frozenset({"tick"}), "99999999999999-0")
            got_d: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            await until(lambda: (drain(d, SSEParser(), got_d), bool(got_d))[1])
            assert got_d[0][0] == "reset" and got_d[0][1]["reason"] == "unknown_id"
            assert got_d[0][1]["last_id"] == "99999999999999-0"
            assert got_d[0][1]["id"] == other.last_id  # resume from here after it
            assert set(got_d[0][1]["snapshot"]) == set(SYMBOLS)
            # Live after the reset, and counted as a subscriber all along.
            assert other.subscriber_count == 3 and other.health()["catching_up"] == 0
            await other.aclose()
            await producer.aclose()

    run(main)


def test_redis_restart_mid_stream_loses_nothing_published_after(tmp_path: Path) -> None:
    async def main() -> None:
        redis = RedisServer(tmp_path)
        redis.start()
        try:
            producer = RedisBroker(redis.url, produce=True, consume=False, backoff_max=0.2)
            server = RedisBroker(redis.url, consume=True, backoff_max=0.2, block_ms=200)
            await started(producer)
            await started(server)
            sub = server.subscribe(None, frozenset({"tick"}), None)
            got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            parser = SSEParser()
            for k in range(5):
                producer.publish(batch(k))
            await until(lambda: (drain(sub, parser, got), len(got) == 15)[1])

            redis.kill()
            # Published while Redis is down: kept in the producer's outbox.
            for k in range(5, 8):
                producer.publish(batch(k))
            await until(lambda: not server.healthy)
            assert server.health()["redis"] == "down" and server.last_error
            assert not sub.closed  # the client stays connected

            redis.start()  # same port, empty (no persistence): the worst case
            for k in range(8, 12):
                producer.publish(batch(k))
            await until(
                lambda: (drain(sub, parser, got), len(got) == 36)[1], timeout=2 * UNTIL_HANG_GUARD_S
            )
            assert server.healthy and server.outages >= 1
            ks = [d["k"] for _, d in got]
            assert ks == [k for k in range(12) for _ in SYMBOLS]  # no gap, no duplicate
            ids = [parse_stream_id(d["id"]) for _, d in got]
            assert ids == sorted(set(ids))
            await server.aclose()
            await producer.aclose()
        finally:
            redis.stop()

    run(main)


def test_non_producer_refuses_publish(tmp_path: Path) -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", consume=True)
    with pytest.raises(RuntimeError, match="does not produce"):
        broker.publish(batch(0))


def test_bad_url() -> None:
    with pytest.raises(ValueError, match="redis:// URL"):
        RedisBroker("http://localhost:6379")


def test_producer_writes_every_batch_in_order_regression_outbox_count(tmp_path: Path) -> None:
    """Regression: the writer's loop variable shadowed the batch size, so after the first
    pipeline it popped the wrong number of outbox entries and the feed stalled."""

    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=False)
            await started(producer)
            for k in range(40):
                producer.publish(batch(k))
                await asyncio.sleep(0)  # let the writer run between some batches
            await until(lambda: producer.sent == 120 and producer.outbox_size == 0)
            reader = RedisBroker(redis.url, consume=True)
            await started(reader)  # primes from the stream: everything, in order
            sub = reader.subscribe(None, frozenset({"tick"}), None)
            assert reader.last_id is not None
            got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            first = reader.subscribe(None, frozenset({"tick"}), "0-1")  # before all: reset
            drain(first, SSEParser(), got)
            assert got[0][0] == "reset"
            got.clear()
            # Replay the whole buffer from its first id: k = 0..39 per symbol, in order.
            oldest = reader._log.keys[0]
            assert not sub.has_pending()  # a fresh subscription starts live
            ms, seq = oldest >> 32, oldest & 0xFFFFFFFF
            d = reader.subscribe(None, frozenset({"tick"}), f"{ms}-{seq}")
            drain(d, SSEParser(), got)
            assert [p["k"] for _, p in got] == [k for k in range(40) for _ in SYMBOLS][1:]
            await reader.aclose()
            await producer.aclose()

    run(main)


def test_consumer_drops_a_resent_pipeline_by_producer_sequence(tmp_path: Path) -> None:
    """A pipeline whose reply was lost is re-sent: the entries then exist twice in the
    stream (different ids); consumers keep the first copy only."""

    async def main() -> None:
        import redis.asyncio as aioredis

        with running_redis(tmp_path) as redis:
            server = RedisBroker(redis.url, consume=True, block_ms=200)
            await started(server)
            sub = server.subscribe(None, frozenset({"tick"}), None)
            client = aioredis.Redis.from_url(redis.url)
            try:
                for _attempt in range(2):  # the same two events, sent twice
                    for n in (1, 2):
                        await client.xadd(
                            server.stream,
                            {"e": "tick", "s": "AAA", "d": json.dumps({"n": n}), "p": "P1", "n": n},
                        )
                await client.xadd(
                    server.stream, {"e": "tick", "s": "AAA", "d": '{"n":3}', "p": "P1", "n": 3}
                )
            finally:
                await client.aclose()
            got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            parser = SSEParser()
            await until(lambda: (drain(sub, parser, got), len(got) >= 3)[1])
            assert [p["n"] for _, p in got] == [1, 2, 3]
            assert server.duplicates_skipped == 2
            await server.aclose()

    run(main)


def test_catalog_and_forwarded_parameter_changes(tmp_path: Path) -> None:
    from quoteflow.broker.redis import StreamSource
    from quoteflow.errors import ConfigError

    async def main() -> None:
        params = {"AAA": {"sigma": 0.2}}

        def update(symbol: str, change: dict) -> dict:  # type: ignore[type-arg]
            if set(change) - {"sigma"}:
                raise ConfigError(f"unknown parameter {sorted(change)[0]!r}")
            params[symbol].update(change)
            return dict(params[symbol])

        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=False)
            producer.catalog_provider = lambda: {
                s: {"model": "gbm", "params": dict(p), "price": 1.0} for s, p in params.items()
            }
            producer.update_handler = update
            await started(producer)
            server = RedisBroker(redis.url, consume=True, block_ms=100)
            await started(server)
            source = StreamSource(server)
            assert source.symbols == [] and not source.symbols_known
            producer.publish(batch(0))  # the catalog goes out with the first events
            await until(lambda: source.describe().get("AAA", {}).get("model") == "gbm")
            assert source.symbols == list(SYMBOLS) and source.symbols_known
            assert await source.aupdate("AAA", {"sigma": 0.4}) == {"sigma": 0.4}
            with pytest.raises(ConfigError, match="kappa"):
                await source.aupdate("AAA", {"kappa": 1})
            with pytest.raises(ConfigError, match="only serves"):
                source.update("AAA", {"sigma": 1})
            await producer.aclose()
            with pytest.raises(ConnectionError, match="no producer answered"):
                await source.aupdate("AAA", {"sigma": 0.5})
            await server.aclose()

    run(main)


def test_serving_instance_never_shows_a_ticked_symbol_without_its_model_regression_catalog_race(
    tmp_path: Path,
) -> None:
    """A serving instance whose first catalog read found nothing ingested the producer's
    first ticks before reading the catalog again, so ``/symbols`` answered ``{"model":
    null, "params": {}}`` for a symbol it had seen ticking (and a PUT through it was not
    visible in its own ``/symbols`` until the next periodic read). Now a symbol is never
    ingested before the catalog that describes it, and a forwarded change shows at once."""
    from quoteflow.broker.redis import StreamSource

    async def main() -> None:
        params = {s: {"sigma": 0.2} for s in SYMBOLS}

        def update(symbol: str, change: dict) -> dict:  # type: ignore[type-arg]
            params[symbol].update(change)
            return dict(params[symbol])

        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=False)
            producer.catalog_provider = lambda: {
                s: {"model": "gbm", "params": dict(p)} for s, p in params.items()
            }
            producer.update_handler = update
            await started(producer)
            server = RedisBroker(redis.url, consume=True, block_ms=5000)
            await started(server)
            source = StreamSource(server)
            assert server.catalog is None  # primed before the producer wrote anything
            producer.publish(batch(0))
            await until(lambda: "AAA" in server.ticked_symbols())
            # No await since the symbol appeared: what /symbols would answer right now.
            described = source.describe()
            assert {s: d["model"] for s, d in described.items()} == dict.fromkeys(SYMBOLS, "gbm")
            assert await source.aupdate("BBB", {"sigma": 0.45}) == {"sigma": 0.45}
            assert source.describe()["BBB"]["params"] == {"sigma": 0.45}

    run(main)


def test_defect3_control_task_survives_any_failing_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10 defect 3: an exception other than ConfigError/ValueError/TypeError in the
    producer's update (an OverflowError from sigma=1e155) ended its control task silently,
    and every later forwarded change timed out. Now every request gets an answer."""
    from quoteflow.errors import ConfigError

    async def main() -> None:
        def update(symbol: str, change: dict) -> dict:  # type: ignore[type-arg]
            if "boom" in change:
                raise OverflowError("(34, 'Numerical result out of range')")
            if "deep" in change:
                raise RecursionError("maximum recursion depth exceeded")
            if change.get("sigma", 0) > 1:
                raise ConfigError("gbm: parameter sigma = 2 is too large; allowed: <= 1")
            return dict(change)

        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=False)
            producer.update_handler = update
            await producer.start()
            server = RedisBroker(redis.url, consume=True, block_ms=100)
            await server.start()
            # A malformed request (not from a quoteflow instance) is dropped, not fatal.
            await server._redis.rpush(producer.control_key, b"[" * 5000 + b"]" * 5000)
            for change in ({"boom": 1}, {"deep": 1}):
                with pytest.raises(ConfigError, match="internal error"):
                    await server.forward_update("AAA", change)
            with pytest.raises(ConfigError, match=r"sigma = 2 is too large; allowed"):
                await server.forward_update("AAA", {"sigma": 2})
            assert await server.forward_update("AAA", {"sigma": 0.3}) == {"sigma": 0.3}
            await producer.aclose()
            await server.aclose()

    with caplog.at_level("INFO", logger="quoteflow.broker.redis"):
        run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any("refused parameter change for AAA: gbm: parameter sigma" in m for m in messages)
    assert any("ignoring malformed parameter change" in m for m in messages)


def _sid(key: int) -> str:
    return f"{key >> 32}-{key & 0xFFFFFFFF}"


def test_resume_ahead_of_a_lagging_instance_is_held_regression_false_reset(
    tmp_path: Path,
) -> None:
    """Issue 10, defect 9: an id newer than this instance has read, but issued by the
    stream, is held (nothing sent) until the reader has it, then replayed after it
    exactly; before the fix it got a false ``unknown_id`` reset with an older id."""

    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=True)
            await producer.start()
            for k in range(10):
                producer.publish(batch(k))
            await until(lambda: len(producer._log) == 30)
            ids = [_sid(key) for key in producer._log.keys]

            # An instance that has read nothing yet (not started): maximally behind.
            lagging = RedisBroker(redis.url, consume=True, block_ms=200)
            sub = lagging.subscribe(None, frozenset({"tick"}), ids[20])
            assert not sub.has_pending() and not sub.closed
            assert lagging.subscriber_count == 1 and lagging.health()["catching_up"] == 1
            await lagging.start()  # primes from the stream: the id is there now
            got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            parser = SSEParser()
            drain(sub, parser, got)
            assert [d["id"] for _, d in got] == ids[21:]  # nothing at or below the id
            # ...then live, without a duplicate.
            producer.publish(batch(10))
            await until(lambda: (drain(sub, parser, got), len(got) == 12)[1])
            ks = [d["k"] for _, d in got]
            assert ks == [k for k in range(11) for _ in SYMBOLS][21:]
            assert "reset" not in {e for e, _ in got}
            assert lagging.health()["catch_up_waits"] == 1
            assert lagging.health()["catch_up_timeouts"] == 0
            await lagging.aclose()
            await producer.aclose()

    run(main)


def test_resume_held_while_redis_is_paused_ends_after_the_catch_up_timeout(
    tmp_path: Path,
) -> None:
    """When neither the reader nor Redis can confirm the id in time, the stream ends
    (reason ``catch_up_timeout``): no reset, no event; the client comes back with it."""

    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = RedisBroker(redis.url, produce=True, consume=True, catch_up_timeout=0.5)
            await producer.start()
            producer.publish(batch(0))
            await until(lambda: len(producer._log) == 3)
            ahead = _sid(producer._log.keys[-1] + (5 << 32))  # 5 ms later: not issued yet
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                sub = producer.subscribe(None, frozenset({"tick"}), ahead)
                await until(lambda: sub.closed, timeout=10)  # hang guard, not a bound
                assert sub.close_reason == CloseReason.CATCH_UP_TIMEOUT
                assert not sub.has_pending()
                assert producer.health()["catch_up_timeouts"] == 1
                assert producer.subscriber_count == 0
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            await producer.aclose()

    run(main)


def test_instance_started_while_redis_is_down_primes_when_it_is_back_regression_reset(
    tmp_path: Path,
) -> None:
    """An instance that could not prime at start read the stream from "$" once Redis was
    back: it lacked what the stream held and answered resumes from it with a reset."""

    async def main() -> None:
        redis = RedisServer(tmp_path, persist=True)
        redis.start()
        try:
            producer = RedisBroker(redis.url, produce=True, consume=True)
            await producer.start()
            for k in range(5):
                producer.publish(batch(k))
            await until(lambda: len(producer._log) == 15)
            ids = [_sid(key) for key in producer._log.keys]
            await producer.aclose()
            redis.stop()  # the append-only file keeps the stream

            server = RedisBroker(redis.url, consume=True, block_ms=200, backoff_max=0.2)
            await server.start()
            assert not server.healthy
            redis.start()
            await until(lambda: server.last_id == ids[-1], timeout=20)
            sub = server.subscribe(None, frozenset({"tick"}), ids[3])
            got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
            drain(sub, SSEParser(), got)
            assert [d["id"] for _, d in got] == ids[4:]
            await server.aclose()
        finally:
            redis.stop()

    run(main)


def test_resume_across_events_missing_from_the_stream_gets_a_reset_regression_silent_gap(
    tmp_path: Path,
) -> None:
    """Entries of one producer run are numbered: when some never reach this instance (a
    Redis restart without persistence lost them), a replay across the hole was silently
    incomplete. Now it is a reset (reason ``gap``) whose id is greater than the client's;
    a resume from after the hole replays as usual."""

    async def main() -> None:
        import redis.asyncio as aioredis

        with running_redis(tmp_path) as redis:
            server = RedisBroker(redis.url, consume=True, block_ms=200)
            await server.start()
            client = aioredis.Redis.from_url(redis.url)
            try:
                for n in (1, 2, 5, 6):  # 3 and 4 never made it to the stream
                    await client.xadd(
                        server.stream,
                        {"e": "tick", "s": "AAA", "d": json.dumps({"n": n}), "p": "P1", "n": n},
                    )
            finally:
                await client.aclose()
            await until(lambda: len(server._log) == 4)
            ids = [_sid(key) for key in server._log.keys]
            for before in ids[:2]:
                got: list[tuple[str, dict]] = []  # type: ignore[type-arg]
                drain(server.subscribe(None, frozenset({"tick"}), before), SSEParser(), got)
                assert [e for e, _ in got] == ["reset"] and got[0][1]["reason"] == "gap"
                assert got[0][1]["last_id"] == before
                assert parse_stream_id(got[0][1]["id"]) > parse_stream_id(before)
            got = []
            drain(server.subscribe(None, frozenset({"tick"}), ids[2]), SSEParser(), got)
            assert [(e, d["n"]) for e, d in got] == [("tick", 6)]
            assert server.health()["gaps"] == 1
            await server.aclose()

    run(main)


def _ws_messages(data: bytes) -> list[dict]:  # type: ignore[type-arg]
    """Decode unmasked server text frames (RFC 6455 §5.2) into their JSON messages."""
    out, i = [], 0
    while i < len(data):
        assert data[i] == 0x81, data[i : i + 8]
        n, i = data[i + 1], i + 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        out.append(json.loads(data[i : i + n]))
        i += n
    return out


def test_websocket_subscriptions_get_frames_with_stream_ids_live_and_on_resume(
    tmp_path: Path,
) -> None:
    """The Redis consumer fans out per framing like the memory broker: WebSocket frames
    built from the entry's parts (stream id, type, the producer's payload text)."""
    from quoteflow.broker.base import Framing
    from quoteflow.wire.ws import ws_event

    async def main() -> None:
        with running_redis(tmp_path) as redis:
            producer = await started(RedisBroker(redis.url, produce=True, consume=False))
            server = await started(RedisBroker(redis.url, consume=True, block_ms=200))
            ws = server.subscribe(None, frozenset({"tick"}), None, Framing.WEBSOCKET)
            sse = server.subscribe(None, frozenset({"tick"}), None)
            for k in range(3):
                producer.publish(batch(k))
            got: list[dict] = []  # type: ignore[type-arg]
            await until(
                lambda: (
                    ws.has_pending() and got.extend(_ws_messages(ws.take().data)),
                    len(got) == 9,
                )[1]
            )
            sse_events = SSEParser().feed(sse.take().data)
            assert [m["id"] for m in got] == [e.id for e in sse_events]
            assert [m["data"] for m in got] == [json.loads(e.data) for e in sse_events]
            first = sse_events[0]
            assert (
                ws_event(first.id, "tick", first.data.encode())[2:]
                == json.dumps(got[0], separators=(",", ":")).encode()
            )
            # Resume in WebSocket framing on a second instance.
            other = await started(RedisBroker(redis.url, consume=True, block_ms=200))
            resumed = other.subscribe(
                frozenset({"BBB"}), frozenset({"tick"}), got[0]["id"], Framing.WEBSOCKET
            )
            replay = _ws_messages(resumed.take().data)
            assert [m["id"] for m in replay] == [
                m["id"] for m in got[1:] if m["data"]["symbol"] == "BBB"
            ]

    run(main)
