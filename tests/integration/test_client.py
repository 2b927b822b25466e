"""The reconnecting SSE client against small tornado servers defined here.

Every server is a tornado ``Application`` on a free loopback port, scripted per test, and
records what each request carried (``Last-Event-ID``, ``Authorization``, query), so the
tests check the client's behaviour from the server's side too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from quoteflow.client import (
    Event,
    EventStream,
    backoff_delay,
    build_request,
    build_url,
    iter_events,
    stream,
)
from quoteflow.errors import StreamError
from quoteflow.wire.sse import encode_comment, encode_event, encode_retry
from tests.conftest import free_port
from tests.integration.fakes import wait_for

#: Upper limit for awaiting a condition that normally holds within milliseconds: a hang
#: guard (the test fails instead of hanging), not a speed requirement.
HANG_GUARD_S = 15.0

# ---------------------------------------------------------------------------- servers


@dataclass
class Seen:
    """What the server saw of one request."""

    last_event_id: str | None
    authorization: str | None
    accept: str | None
    cache_control: str | None
    query: dict[str, str]


@dataclass
class Script:
    """Per-test server behaviour: ``behave(handler, n)`` serves the n-th request (0-based)."""

    behave: Callable[[ScriptedHandler, int], Awaitable[None]]
    seen: list[Seen] = field(default_factory=list)
    handlers: list[ScriptedHandler] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closes: int = 0


class ScriptedHandler(tornado.web.RequestHandler):
    script: Script

    def initialize(self, script: Script) -> None:
        self.script = script
        self.hold = asyncio.Event()
        self.done = asyncio.Event()

    async def get(self) -> None:
        h = self.request.headers
        n = len(self.script.seen)
        self.script.seen.append(
            Seen(
                h.get("Last-Event-ID"),
                h.get("Authorization"),
                h.get("Accept"),
                h.get("Cache-Control"),
                {k: v[-1].decode() for k, v in self.request.query_arguments.items()},
            )
        )
        self.script.handlers.append(self)
        try:
            await self.script.behave(self, n)
        finally:
            self.done.set()

    def start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")

    async def send(self, *blocks: bytes) -> None:
        for block in blocks:
            self.write(block)
        try:
            await self.flush()
        except StreamClosedError:
            self.hold.set()  # the client left; scripts check hold to stop writing

    async def hold_until_client_leaves(self) -> None:
        await self.hold.wait()

    def on_connection_close(self) -> None:
        # The client cut the connection (heartbeat timeout, close()): count it, and
        # let a handler that holds the connection open finish.
        self.script.closes += 1
        self.script.closed.set()
        self.hold.set()


@contextlib.asynccontextmanager
async def serving(
    behave: Callable[[ScriptedHandler, int], Awaitable[None]],
) -> AsyncIterator[tuple[str, Script]]:
    """Serve ``behave`` at ``/stream`` on a free port; yield (url, script)."""
    script = Script(behave)
    app = tornado.web.Application([(r"/stream", ScriptedHandler, {"script": script})])
    port = free_port()
    server: HTTPServer = app.listen(port, address="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port}/stream", script
    finally:
        server.stop()
        # Let every handler return before the loop ends: a handler cancelled by the
        # loop's shutdown would log a spurious error.
        for handler in script.handlers:
            handler.hold.set()
        await asyncio.wait_for(asyncio.gather(*(h.done.wait() for h in script.handlers)), 5)
        await server.close_all_connections()


def run(body: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout):
            await body()

    asyncio.run(main())


def reading_paused(es: EventStream) -> bool:
    """The client has stopped reading its socket (backpressure) until the queue drains."""
    drain = es._drain
    return drain is not None and not drain.done()


async def take(es: EventStream, n: int) -> list[Event]:
    got: list[Event] = []
    async for ev in es:
        got.append(ev)
        if len(got) >= n:
            break
    return got


# ---------------------------------------------------------------- request building (e)


def test_request_lifts_tornado_default_timeout() -> None:
    """tornado's request_timeout defaults to 20 s, which would cut every stream."""
    req = build_request("http://h/stream", connect_timeout=3.0)
    # 0 means "no deadline" to tornado; None would fall back to the 20 s default.
    assert req.request_timeout == 0
    assert req.connect_timeout == 3.0
    assert req.method == "GET"
    assert req.headers["Accept"] == "text/event-stream"
    assert req.headers["Cache-Control"] == "no-cache"
    assert "Last-Event-ID" not in req.headers
    assert "Authorization" not in req.headers


def test_request_headers() -> None:
    req = build_request(
        "http://h/stream", last_event_id="42", token="t.o.k", headers={"X-Trace": "1"}
    )
    assert req.headers["Last-Event-ID"] == "42"
    assert req.headers["Authorization"] == "Bearer t.o.k"
    assert req.headers["X-Trace"] == "1"
    # An empty last event id is not sent (HTML §9.2.3).
    assert "Last-Event-ID" not in build_request("http://h/", last_event_id="").headers
    # UTF-8 on the wire: tornado encodes header text as latin-1.
    req = build_request("http://h/", last_event_id="é")
    assert req.headers["Last-Event-ID"].encode("latin-1") == "é".encode()


@pytest.mark.parametrize(
    ("url", "kwargs", "expected"),
    [
        ("http://h/stream", {}, "http://h/stream"),
        ("http://h/stream", {"symbols": ["A", "B"]}, "http://h/stream?symbols=A,B"),
        (
            "http://h/stream",
            {"symbols": "A,B", "events": ("tick", "bar")},
            "http://h/stream?symbols=A,B&events=tick,bar",
        ),
        ("http://h/stream?x=1&symbols=Z", {"symbols": ["A"]}, "http://h/stream?x=1&symbols=A"),
        ("http://h/stream", {"symbols": ["BRK B"]}, "http://h/stream?symbols=BRK%20B"),
    ],
)
def test_build_url(url: str, kwargs: dict[str, Any], expected: str) -> None:
    assert build_url(url, **kwargs) == expected


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(1)
    for failures, ceiling in [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0), (10_000, 30.0)]:
        delays = [backoff_delay(failures, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter spans the range, not a constant


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        stream("http://h/", heartbeat_timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        stream("http://h/", max_retries=-1)
    with pytest.raises(TypeError):
        iter_events("http://h/", no_such_option=1)


# --------------------------------------------------------------------- resume (a)


@pytest.mark.integration
def test_reconnects_with_last_event_id_and_no_duplicates() -> None:
    total, per_connection = 10, 3

    async def behave(h: ScriptedHandler, n: int) -> None:
        lid = h.request.headers.get("Last-Event-ID")
        start = int(lid) + 1 if lid else 1
        h.start_stream()
        await h.send(encode_retry(10))
        for i in range(start, min(start + per_connection, total + 1)):
            await h.send(encode_event(json.dumps({"n": i}), id=str(i), event="tick"))
        # ... then end the response: the client must reconnect and resume.

    async def body() -> None:
        async with serving(behave) as (url, script):
            async with stream(url, symbols=["AAA", "BBB"], events=["tick"], token="sekrit") as es:
                got = await take(es, total)
            assert [e.id for e in got] == [str(i) for i in range(1, total + 1)]
            assert [json.loads(e.data)["n"] for e in got] == list(range(1, total + 1))
            assert {e.event for e in got} == {"tick"}
            assert [s.last_event_id for s in script.seen] == [None, "3", "6", "9"]
            assert es.reconnects == 3
            assert es.events_received == total
            assert es.last_event_id == "10"
            first = script.seen[0]
            assert first.query == {"symbols": "AAA,BBB", "events": "tick"}
            assert first.authorization == "Bearer sekrit"
            assert first.accept == "text/event-stream"
            assert first.cache_control == "no-cache"

    run(body)


@pytest.mark.integration
def test_initial_last_event_id_is_sent() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        await h.send(encode_event("x", id="101"))
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            async with stream(url, last_event_id="100") as es:
                assert await take(es, 1) == [Event("message", "x", "101")]
            assert script.seen[0].last_event_id == "100"

    run(body)


@pytest.mark.integration
def test_event_split_across_writes_and_unfinished_event_at_eof() -> None:
    """The unfinished last event of a connection is discarded (§9.2.6), not merged into
    the next connection's first event."""

    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        if n == 0:
            await h.send(b"id: 1\ndata: par")
            await h.send(b"t\r")
            await h.send(b"\n\r\nid: 2\ndata: lost")  # no blank line: never dispatched
        else:
            await h.send(b"data: next\n\n")
            await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script), stream(url, backoff_initial=0.01) as es:
            got = await take(es, 2)
        assert got == [Event(data="part", id="1"), Event(data="next", id="1")]
        assert script.seen[1].last_event_id == "1"

    run(body)


@pytest.mark.integration
@pytest.mark.parametrize(
    "tail",
    [
        b"id: 2\ndata: lost",  # EOF inside a line
        b"id: 2\ndata: lost\n",  # complete lines, no blank line
        b"event: custom\ndata: lost\n",  # a typed event
        b"data: lost\r",  # CR line endings
        b"id: 2\n",  # an id alone: must not become the id in force
        b"event: custom\n",  # a type alone: must not type the next event
    ],
    ids=["open-line", "no-blank-line", "typed", "cr", "id-only", "event-only"],
)
def test_unfinished_event_at_eof_is_dropped_in_every_shape(tail: bytes) -> None:
    """However the connection's last event is cut, it is not delivered, its fields do not
    leak into the next connection's first event, and the resume id is the last complete
    event's."""

    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        if n == 0:
            await h.send(b"id: 1\ndata: first\n\n" + tail)
        else:
            await h.send(b"data: next\n\n")
            await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script), stream(url, backoff_initial=0.01) as es:
            got = await take(es, 2)
        assert got == [Event(data="first", id="1"), Event(data="next", id="1")]
        assert script.seen[1].last_event_id == "1"

    run(body)


# ----------------------------------------------------------- status codes (b), (c)


@pytest.mark.integration
def test_204_ends_iteration_cleanly() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_status(204)

    async def body() -> None:
        async with serving(behave) as (url, script):
            es = stream(url, backoff_initial=0.01)
            got = [ev async for ev in es]
            assert got == []
            assert len(script.seen) == 1  # no reconnection after 204
            assert es.state == "closed"
            # Iterating again stays finished.
            assert [ev async for ev in es] == []
            await es.close()

    run(body)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, {"error": "unknown symbol 'ZZZ'", "known_symbols": ["AAA", "BBB"]}),
        (401, {"error": "missing or invalid token"}),
        (403, {"error": "token does not allow symbol 'AAA'"}),
        (404, {"error": "not found"}),
    ],
)
def test_client_errors_raise_stream_error_with_body(status: int, payload: dict[str, Any]) -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_status(status)
        h.set_header("Content-Type", "application/json")
        h.write(json.dumps(payload))

    async def body() -> None:
        async with serving(behave) as (url, script):
            es = stream(url, backoff_initial=0.01)
            with pytest.raises(StreamError) as info:
                await take(es, 1)
            msg = str(info.value)
            assert f"HTTP {status}" in msg
            assert payload["error"] in msg
            if status == 400:
                assert "known_symbols" in msg and "BBB" in msg
            assert len(script.seen) == 1  # a client error is not retried
            assert es.last_error == msg
            # After the error, iteration is over.
            assert [ev async for ev in es] == []
            await es.close()

    run(body)


@pytest.mark.integration
def test_token_in_query_is_redacted_from_errors() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_status(401)
        h.write({"error": "expired"})

    async def body() -> None:
        async with serving(behave) as (url, _):
            with pytest.raises(StreamError, match="401") as info:
                await take(stream(url + "?access_token=very-secret"), 1)
            assert "very-secret" not in str(info.value)

    run(body)


@pytest.mark.integration
def test_5xx_is_retried_with_backoff_then_succeeds() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        if n < 2:
            h.set_status(503)
            h.write({"error": "warming up"})
            return
        h.start_stream()
        await h.send(encode_event("ok", id="1"))
        await h.hold_until_client_leaves()

    async def body() -> None:
        states: list[str] = []
        async with serving(behave) as (url, script):
            async with stream(
                url, backoff_initial=0.02, on_status=lambda s: states.append(s.state)
            ) as es:
                assert await take(es, 1) == [Event(data="ok", id="1")]
                assert es.reconnects == 2
                assert es.connected
            assert len(script.seen) == 3
            assert states[:2] == ["connecting", "backoff"]
            assert states[-2:] == ["connected", "closed"]
            assert not es.connected

    run(body)


@pytest.mark.integration
def test_max_retries_gives_up_with_last_error() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_status(503)
        h.write({"error": "down for maintenance"})

    async def body() -> None:
        async with serving(behave) as (url, script):
            with pytest.raises(StreamError, match="gave up") as info:
                await take(stream(url, max_retries=2, backoff_initial=0.01), 1)
            assert "down for maintenance" in str(info.value)
            assert len(script.seen) == 3  # the first attempt and 2 retries

    run(body)


@pytest.mark.integration
def test_connection_refused_is_retried() -> None:
    port = free_port()  # nothing listens here

    async def body() -> None:
        es = stream(f"http://127.0.0.1:{port}/stream", max_retries=1, backoff_initial=0.01)
        with pytest.raises(StreamError, match="gave up"):
            await take(es, 1)
        assert es.reconnects == 1

    run(body)


@pytest.mark.integration
def test_wrong_content_type_is_an_error() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_header("Content-Type", "text/html")
        await h.send(b"<html>")
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            with pytest.raises(StreamError, match="text/html"):
                await take(stream(url), 1)
            assert len(script.seen) == 1
            # The client does not keep reading an endless wrong body.
            await script.closed.wait()

    run(body)


# ------------------------------------------------------------------ heartbeat (d)


@pytest.mark.integration
def test_silent_connection_detected_and_replaced() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        if n == 0:
            await h.send(encode_event("first", id="1"))
            await h.hold_until_client_leaves()  # then silence: no heartbeats
        else:
            await h.send(encode_event("second", id="2"))
            await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            async with stream(url, heartbeat_timeout=0.5, backoff_initial=0.01) as es:
                t0 = time.monotonic()
                got = await take(es, 2)
                elapsed = time.monotonic() - t0
            assert [e.data for e in got] == ["first", "second"]
            assert elapsed >= 0.45  # it was the heartbeat timeout that cut it
            assert script.seen[1].last_event_id == "1"
            assert es.reconnects == 1
            # The server saw the first connection cut by the client (no leaked socket).
            assert script.closes >= 1

    run(body)


@pytest.mark.integration
def test_heartbeat_comments_keep_the_connection() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        for _ in range(20):  # 1 s of keepalives, one per 0.05 s, then an event
            await h.send(encode_comment())
            await asyncio.sleep(0.05)
        await h.send(encode_event("after heartbeats"))
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            async with stream(url, heartbeat_timeout=0.6) as es:
                assert await take(es, 1) == [Event(data="after heartbeats")]
                assert es.reconnects == 0
            assert len(script.seen) == 1

    run(body)


# ------------------------------------------------------------------------ retry (g)


@pytest.mark.integration
def test_server_retry_sets_first_backoff() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        if n == 0:
            await h.send(encode_retry(50), encode_event("a", id="1"))
            return  # end of response: reconnect after the server's 50 ms, not 30 s
        await h.send(encode_event("b", id="2"))
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, _):
            async with stream(url, backoff_initial=30.0, backoff_max=60.0) as es:
                got = await take(es, 2)
                assert es.retry == 50
                assert es.last_delay is not None
                assert 0.0 <= es.last_delay <= 0.05
            assert [e.retry for e in got] == [50, 50]

    run(body, timeout=10.0)


# --------------------------------------------------------------- close, backpressure


@pytest.mark.integration
def test_close_from_another_task_ends_iteration_and_connection() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        await h.send(encode_event("only"))
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            es = stream(url)
            got: list[Event] = []

            async def consume() -> None:
                async for ev in es:
                    got.append(ev)

            task = asyncio.create_task(consume())
            await wait_for(lambda: bool(got), timeout=HANG_GUARD_S, what="the first event")
            await es.close()
            await task  # iteration ended without error
            await script.closed.wait()
            assert got == [Event(data="only")]
            assert es.state == "closed"
            await es.close()  # idempotent

    run(body)


@pytest.mark.integration
def test_slow_consumer_pauses_reading_and_loses_nothing() -> None:
    total = 600
    pad = "x" * 2000
    written = asyncio.Event()

    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        for i in range(total):
            h.write(encode_event(f"{i} {pad}", id=str(i)))
        await h.flush()
        written.set()
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, _):
            async with stream(url, max_queue=5) as es:
                first = await take(es, 1)
                await written.wait()
                # The condition itself, not a sleep: reading pauses with the queue over
                # its bound. A client that never pauses reads all 600 events and fails
                # here (by the hang guard) instead of passing on a loaded machine.
                await wait_for(
                    lambda: reading_paused(es), timeout=HANG_GUARD_S, what="reading to pause"
                )
                assert es.events_received < total
                # Paused with more than max_queue waiting: the queue is bounded by one
                # socket read beyond max_queue, not by what the server sent.
                assert es._queue.qsize() > es.max_queue
                rest = await take(es, total - 1)
            got = first + rest
            assert [int(e.data.split()[0]) for e in got] == list(range(total))
            assert es.reconnects == 0

    run(body)


@pytest.mark.integration
def test_close_while_paused_by_backpressure() -> None:
    written = asyncio.Event()

    async def behave(h: ScriptedHandler, n: int) -> None:
        h.start_stream()
        for i in range(300):
            h.write(encode_event(f"{i} {'y' * 2000}", id=str(i)))
        await h.send()
        written.set()
        await h.hold_until_client_leaves()

    async def body() -> None:
        async with serving(behave) as (url, script):
            es = stream(url, max_queue=2)
            assert [e.id for e in await take(es, 1)] == ["0"]
            await written.wait()
            await es.close()
            await script.closed.wait()
            assert [ev async for ev in es] == []  # unconsumed events were discarded

    run(body)


# --------------------------------------------------------------- sync helper (f)


class ThreadedServer:
    """A scripted server on its own loop thread, for the synchronous helper's tests."""

    def __init__(self, behave: Callable[[ScriptedHandler, int], Awaitable[None]]) -> None:
        self.behave = behave
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.script: Script | None = None
        self.url = ""
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        async with serving(self.behave) as (url, script):
            self.url, self.script = url, script
            self.ready.set()
            await self.stop_event.wait()

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        assert self.loop is not None and self.script is not None
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self.script.closed.wait(), timeout), self.loop
        )
        try:
            fut.result(timeout + 1)
        except TimeoutError:
            return False
        return True


async def _endless(h: ScriptedHandler, n: int) -> None:
    h.start_stream()
    i = 0
    while not h.hold.is_set():
        i += 1
        await h.send(encode_event(str(i), id=str(i), event="tick"))
        # Pace the feed, but stop at once when the client leaves.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(h.hold.wait(), 0.01)


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "quoteflow-sse-client"]


@pytest.mark.integration
def test_iter_events_from_sync_code_stops_cleanly_on_break() -> None:
    with ThreadedServer(_endless) as server:
        got: list[Event] = []
        for ev in iter_events(server.url, symbols=["AAA"]):
            got.append(ev)
            if len(got) == 5:
                break
        assert [e.data for e in got] == ["1", "2", "3", "4", "5"]
        assert _client_threads() == []
        assert server.wait_closed()  # the connection was closed, not left behind


@pytest.mark.integration
def test_iter_events_close_from_explicit_generator() -> None:
    with ThreadedServer(_endless) as server:
        it = iter_events(server.url)
        assert next(it).data == "1"
        it.close()
        assert _client_threads() == []
        assert server.wait_closed()


@pytest.mark.integration
def test_iter_events_raises_stream_error() -> None:
    async def behave(h: ScriptedHandler, n: int) -> None:
        h.set_status(404)
        h.write({"error": "no such endpoint"})

    with ThreadedServer(behave) as server, pytest.raises(StreamError, match="404"):
        list(iter_events(server.url))
    assert _client_threads() == []


@pytest.mark.integration
def test_iter_events_inside_a_running_event_loop() -> None:
    """It uses its own loop and thread, so a caller's running loop is no obstacle."""
    with ThreadedServer(_endless) as server:

        async def main() -> list[str]:
            got: list[str] = []
            for ev in iter_events(server.url):
                got.append(ev.data)
                if len(got) == 3:
                    break
            return got

        assert asyncio.run(main()) == ["1", "2", "3"]
        assert _client_threads() == []
