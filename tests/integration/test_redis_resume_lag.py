"""Resuming on a Redis serving instance that has read less of the stream than the one the
client left (issue 10, defect 9): real redis-server, ``quoteflow generate`` and two
``quoteflow serve --broker`` processes, a raw-socket SSE client.

Before the fix the lagging instance answered such an id with ``event: reset``
(``unknown_id``) carrying its own, older, id and the client then got again every event
between the two. Ground truth for "no gap, no duplicate" is the Redis stream (``XRANGE``),
counted once per producer entry (``p``, ``n``): a pipeline the producer re-sent after a
Redis restart is in the stream twice but is one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from quoteflow.broker.redis import parse_stream_id
from quoteflow.client import Event, SSEParser
from tests.redis_server import QuoteflowProcess, RedisServer, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(120)]

STREAM_KEY = "quoteflow:events"


def _serve(workdir: Path, url: str, name: str, *extra: str) -> QuoteflowProcess:
    return QuoteflowProcess(
        workdir,
        name,
        "serve",
        "--broker",
        url,
        "--port",
        "0",
        "--instance-id",
        name,
        "--heartbeat",
        "0.3",
        *extra,
    )


def _health(port: int) -> dict[str, object]:
    """``/healthz`` of an instance (200 or 503, both are answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
    health: dict[str, object] = json.loads(body)
    return health


def _wait_serving(port: int, timeout: float = 30.0) -> None:
    """Until the instance has read events from Redis (it answers /stream with 200 then)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if _health(port).get("last_event_id"):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"instance on port {port} never read an event")
        time.sleep(0.05)


@dataclass
class Cluster:
    red: RedisServer
    workdir: Path
    procs: list[QuoteflowProcess]
    instances: dict[str, QuoteflowProcess] = field(default_factory=dict)

    def port(self, name: str) -> int:
        port = self.instances[name].port
        assert port is not None
        return port

    def start_instance(self, name: str, label: str | None = None, *extra: str) -> QuoteflowProcess:
        p = _serve(self.workdir, self.red.url, name, *extra)
        p.name = label or name
        self.procs.append(p)
        p.wait_ready()
        self.instances[name] = p
        _wait_serving(self.port(name))
        return p

    def truth(self, first: str, last: str) -> list[tuple[str, str]]:
        """``(id, event)`` of every event in Redis from ``first`` to ``last``, once each."""
        client = redis.Redis.from_url(self.red.url)
        try:
            rows = client.xrange(STREAM_KEY, min=first, max=last)
        finally:
            client.close()
        seen: set[tuple[bytes, bytes]] = set()
        out: list[tuple[str, str]] = []
        for sid, fields in rows:
            key = (fields[b"p"], fields[b"n"])
            if key not in seen:
                seen.add(key)
                out.append((sid.decode(), fields[b"e"].decode()))
        return out


@contextmanager
def cluster(
    workdir: Path, *, persist: bool = False, b_args: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    red = RedisServer(workdir, persist=persist)
    red.start()
    try:
        with quoteflow_processes(workdir) as procs:
            gen = QuoteflowProcess(
                workdir,
                "generator",
                "generate",
                "--broker",
                red.url,
                "--universe",
                "4",
                "--seed",
                "5",
                "--tick-interval",
                "0.02",
            )
            procs.append(gen)
            gen.wait_ready()
            c = Cluster(red, workdir, procs)
            c.start_instance("A")
            c.start_instance("B", None, *b_args)
            yield c
            for p in procs:
                assert "Traceback" not in p.log(), p.log()
    finally:
        if red.proc is not None:
            red.proc.send_signal(signal.SIGCONT)  # in case a failure left it stopped
        red.stop()


async def open_stream(
    port: int, last_id: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and send ``GET /stream`` (HTTP/1.0: the body is plain SSE until close).

    Returns as soon as the request is sent: the kernel accepts the connection even while
    the server process is stopped.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "GET /stream HTTP/1.0\r\nHost: 127.0.0.1\r\n"
    if last_id:
        head += f"Last-Event-ID: {last_id}\r\n"
    writer.write((head + "\r\n").encode())
    await writer.drain()
    return reader, writer


@dataclass
class Session:
    status: int = 0
    events: list[Event] = field(default_factory=list)
    last_id: str | None = None


async def read_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    last_id: str | None,
    *,
    want: int | None = None,
    duration: float | None = None,
) -> Session:
    """Read one response: until ``want`` events, ``duration`` seconds, or the end.

    ``duration`` is how long this client stays before it hops to the other instance
    (the soak's pattern), not a synchronisation; ``want`` is awaited under a hang guard.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + (duration if duration is not None else 30.0)
    parser = SSEParser(last_event_id=last_id)
    out = Session(last_id=last_id)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = await asyncio.wait_for(reader.read(65536), max(end - loop.time(), 0.01))
            if not chunk:
                return out
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        out.status = int(head.split()[1])
        if out.status != 200:
            return out
        out.events += parser.feed(body)
        while want is None or len(out.events) < want:
            chunk = await asyncio.wait_for(reader.read(65536), max(end - loop.time(), 0.01))
            if not chunk:
                break
            out.events += parser.feed(chunk)
    except (TimeoutError, ConnectionError):
        if duration is None:
            raise
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        out.last_id = parser.last_event_id
    return out


def _key(event_id: str | None) -> int:
    assert event_id is not None, "an event without id"
    return parse_stream_id(event_id)


def test_resume_on_a_paused_instance_waits_regression_false_reset_and_duplicates(
    tmp_path: Path,
) -> None:
    """B is stopped for 2 s while the client streams from A, then the client resumes on B
    with A's last id, the request already waiting when B continues: no reset, no
    duplicate, no gap."""
    with cluster(tmp_path) as c:

        async def main() -> None:
            reader, writer = await open_stream(c.port("A"), None)
            first = await read_session(reader, writer, None, want=20)
            assert first.status == 200 and len(first.events) >= 20

            c.instances["B"].signal(signal.SIGSTOP)
            try:
                reader, writer = await open_stream(c.port("A"), first.last_id)
                # The 2 s pause of B (the fault), while the client reads from A.
                on_a = await read_session(reader, writer, first.last_id, duration=2.0)
                assert on_a.status == 200 and len(on_a.events) >= 20
                assert on_a.last_id
                # Ask B while it is still stopped, so that the request is the first thing
                # it sees on waking, next to two seconds of stream its reader has not read.
                reader, writer = await open_stream(c.port("B"), on_a.last_id)
            finally:
                c.instances["B"].signal(signal.SIGCONT)
            on_b = await read_session(reader, writer, on_a.last_id, want=20)
            assert on_b.status == 200

            kinds = [ev.event for ev in on_b.events]
            assert "reset" not in kinds, on_b.events[: kinds.index("reset") + 1]
            assert _key(on_b.events[0].id) > _key(on_a.last_id), "an event at or below the id"
            got = [(ev.id or "", ev.event) for ev in first.events + on_a.events + on_b.events]
            assert len({i for i, _ in got}) == len(got), "duplicate ids"
            assert got == c.truth(got[0][0], got[-1][0]), "not the stream: gap or reorder"
            # B really was behind: the resume waited for its reader.
            broker = _health(c.port("B"))["broker"]
            assert isinstance(broker, dict) and broker["catch_up_waits"] >= 1, broker

        asyncio.run(asyncio.wait_for(main(), 60))


def test_alternating_instances_through_faults_lose_nothing_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    """About 20 s of a client that hops between A and B on every reconnect while an
    instance is SIGKILLed and restarted, the other is paused, Redis is paused and Redis
    is restarted (with its append-only file, so the stream survives): 0 lost, 0
    duplicates, no reset."""
    with cluster(tmp_path, persist=True) as c:

        async def faults() -> list[str]:
            # The fault schedule (what happens when), not a synchronisation.
            done: list[str] = []
            red_proc = c.red.proc
            assert red_proc is not None
            await asyncio.sleep(2.0)
            c.instances["A"].signal(signal.SIGKILL)
            done.append("kill A")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(c.start_instance, "A", "A2")
            done.append("restart A")
            await asyncio.sleep(1.5)
            red_proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(1.5)
            red_proc.send_signal(signal.SIGCONT)
            done.append("pause Redis")
            await asyncio.sleep(2.0)
            c.instances["B"].signal(signal.SIGSTOP)
            await asyncio.sleep(2.0)
            c.instances["B"].signal(signal.SIGCONT)
            done.append("pause B")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(c.red.stop)
            await asyncio.to_thread(c.red.start)
            done.append("restart Redis")
            await asyncio.sleep(2.0)
            c.instances["A"].signal(signal.SIGSTOP)
            await asyncio.sleep(1.5)
            c.instances["A"].signal(signal.SIGCONT)
            done.append("pause A")
            await asyncio.sleep(2.0)
            return done

        async def main() -> None:
            rng = random.Random(10)
            got: list[Event] = []
            last: str | None = None
            sessions = hops = 0
            fault_task = asyncio.create_task(faults())
            name = "A"
            while not fault_task.done() or sessions < 4:
                name = "B" if name == "A" else "A"
                hops += 1
                try:
                    reader, writer = await open_stream(c.port(name), last)
                except OSError:
                    continue  # killed and not restarted yet: try the other one
                s = await read_session(reader, writer, last, duration=rng.uniform(0.15, 0.8))
                if s.status == 200:
                    sessions += 1
                got += s.events
                last = s.last_id
            done = await fault_task
            assert len(done) == 6, done

            resets = [ev for ev in got if ev.event == "reset"]
            assert not resets, f"{len(resets)} false resets, first: {resets[0]}"
            keys = [_key(ev.id) for ev in got]
            duplicates = sum(1 for a, b in itertools.pairwise(keys) if b <= a)
            truth = c.truth(got[0].id or "", got[-1].id or "")
            received = {ev.id for ev in got}
            lost = [i for i, _ in truth if i not in received]
            assert (len(lost), duplicates) == (0, 0), (len(lost), duplicates, sessions, hops)
            assert [(ev.id, ev.event) for ev in got] == truth
            assert sessions >= 20, sessions

        asyncio.run(asyncio.wait_for(main(), 90))


def test_resume_that_cannot_catch_up_in_time_ends_cleanly_and_resumes_later(
    tmp_path: Path,
) -> None:
    """B is behind and Redis is paused, so B can neither read up to the client's id nor
    ask Redis about it: after --catch-up-timeout the stream ends cleanly (chunked end),
    with no event and no reset; the same id later resumes without gap or duplicate."""
    with cluster(tmp_path, b_args=("--catch-up-timeout", "1")) as c:

        async def main() -> None:
            red_proc = c.red.proc
            assert red_proc is not None
            reader, writer = await open_stream(c.port("A"), None)
            first = await read_session(reader, writer, None, want=20)
            c.instances["B"].signal(signal.SIGSTOP)
            try:
                reader, writer = await open_stream(c.port("A"), first.last_id)
                on_a = await read_session(reader, writer, first.last_id, duration=1.0)
                assert on_a.last_id and len(on_a.events) >= 10
                red_proc.send_signal(signal.SIGSTOP)
            finally:
                c.instances["B"].signal(signal.SIGCONT)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", c.port("B"))
                writer.write(
                    b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + f"Last-Event-ID: {on_a.last_id}\r\n\r\n".encode()
                )
                # The connection stays open (keep-alive): read up to the chunked end.
                # The 20 s is a hang guard; the end is due after about one second.
                raw = b""
                async with asyncio.timeout(20):
                    while not raw.endswith(b"\r\n0\r\n\r\n"):
                        chunk = await reader.read(65536)
                        assert chunk, f"closed without a chunked end: {raw[-200:]!r}"
                        raw += chunk
                writer.close()
            finally:
                red_proc.send_signal(signal.SIGCONT)
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert body.endswith(b"0\r\n\r\n"), body[-200:]  # the chunked terminator
            assert b"event:" not in body and b"id:" not in body, body
            broker = _health(c.port("B"))["broker"]
            assert isinstance(broker, dict) and broker["catch_up_timeouts"] == 1, broker

            # Redis is back: the same id resumes on B, right after it (as a client would,
            # retrying while B's reader may still be reconnecting).
            on_b = Session()
            for _attempt in range(10):
                reader, writer = await open_stream(c.port("B"), on_a.last_id)
                on_b = await read_session(reader, writer, on_a.last_id, want=10)
                if on_b.events:
                    break
            assert len(on_b.events) >= 10, on_b
            got = [(ev.id or "", ev.event) for ev in first.events + on_a.events + on_b.events]
            assert "reset" not in {e for _, e in got}
            assert got == c.truth(got[0][0], got[-1][0])

        asyncio.run(asyncio.wait_for(main(), 60))
