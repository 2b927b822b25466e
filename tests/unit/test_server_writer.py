"""quoteflow.server.writer: chunk framing, the framing cache and SocketWriter over a real
socket pair (a tornado IOStream on one end, a plain blocking-free reader on the other)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from tornado.iostream import IOStream

from quoteflow.broker import ALL_EVENTS, MemoryBroker
from quoteflow.client import SSEParser
from quoteflow.server.writer import (
    FrameCache,
    LatencySamples,
    LiveWriters,
    SocketWriter,
    frame_chunk,
    unframed,
)
from quoteflow.sources import MarketEvent

#: Hang guard of every wait in this file (not a speed bound).
HANG_GUARD_S = 10.0


class Counters:
    def __init__(self) -> None:
        self.bytes_sent = 0
        self.events_delivered = 0


def tick(k: int) -> list[MarketEvent]:
    return [MarketEvent("tick", "AAA", {"symbol": "AAA", "n": k})]


async def until(cond: Callable[[], bool], what: str) -> None:
    """Await ``cond()`` by yielding to the loop; fail after the hang guard."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD_S
    while not cond():
        assert loop.time() < deadline, f"hang guard: {what}"
        await asyncio.sleep(0.001)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


class Pair:
    """A connected socket pair: ``stream`` (tornado, server side) and ``peer`` (client)."""

    def __init__(self, sndbuf: int | None = None) -> None:
        server, self.peer = socket.socketpair()
        if sndbuf is not None:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        self.peer.setblocking(False)
        self.stream = IOStream(server)
        self.received = bytearray()

    def read(self) -> bytes:
        """Everything the peer can read now."""
        while True:
            try:
                data = self.peer.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.received += data
        return bytes(self.received)

    def close(self) -> None:
        self.stream.close()
        self.peer.close()


# ------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"abc", b"3\r\nabc\r\n"),
        (b"", b"0\r\n\r\n"),  # the last-chunk (RFC 9112 §7.1)
        (b"x" * 300, b"12c\r\n" + b"x" * 300 + b"\r\n"),
    ],
)
def test_frame_chunk_exact_bytes(data: bytes, wire: bytes) -> None:
    assert frame_chunk(data) == wire
    assert unframed(data) is data


def test_frame_cache_frames_each_object_once_and_is_correct_for_equal_copies() -> None:
    calls: list[bytes] = []

    def frame(data: bytes) -> bytes:
        calls.append(data)
        return frame_chunk(data)

    cache = FrameCache(frame)
    calls.clear()  # the cache's initial entry
    chunk = b"event: tick\ndata: 1\n\n"
    assert cache(chunk) == frame_chunk(chunk)
    assert cache(chunk) == frame_chunk(chunk)
    assert len(calls) == 1  # one group member after another: framed once
    other = bytes(bytearray(b"event: tick\ndata: 2\n\n"))
    assert cache(other) == frame_chunk(other)
    assert len(calls) == 2
    assert cache(b"") == b"0\r\n\r\n"  # correct for the empty chunk too


def test_each_app_owns_its_framing_cache() -> None:
    """No module-global cache: two apps' writers never share a framing entry."""
    a = LiveWriters(Counters(), lambda s: None)
    b = LiveWriters(Counters(), lambda s: None)
    assert a.chunked is not b.chunked
    chunk = b"data: 1\n\n"
    assert a.chunked(chunk) == b.chunked(chunk) == frame_chunk(chunk)


def test_latency_samples_are_observed_one_loop_iteration_later() -> None:
    async def body() -> None:
        seen: list[float] = []
        samples = LatencySamples(seen.append)
        samples.add(0.25)
        samples.add(0.5)
        assert seen == []  # not inside the fan-out
        await until(lambda: len(seen) == 2, "the flush")
        assert seen == [0.25, 0.5]

    run(body)


# -------------------------------------------------------------------- SocketWriter


def test_writer_sends_from_the_publish_call_framed_and_counted() -> None:
    async def body() -> None:
        pair = Pair()
        broker = MemoryBroker()
        sub = broker.subscribe(None, ALL_EVENTS, None)
        counters = Counters()
        seen: list[float] = []
        writers = LiveWriters(counters, seen.append)
        writer = writers.http(pair.stream, sub, chunked=True)
        writer.start()
        broker.publish(tick(1))
        # Written inside publish: the bytes are in the peer's socket already.
        wire = pair.read()
        size, _, rest = wire.partition(b"\r\n")  # one chunk: size CRLF data CRLF
        data = rest[: int(size, 16)]
        assert wire == frame_chunk(data)
        assert [e.id for e in SSEParser().feed(data)] == ["1"] and b'"n":1' in data
        assert counters.events_delivered == 1
        assert counters.bytes_sent == len(data)  # payload bytes, not framing
        await until(lambda: len(seen) == 1, "the latency sample")
        sub.close("test")
        await asyncio.wait_for(writer.done, HANG_GUARD_S)
        pair.close()

    run(body)


def test_a_slow_reader_queues_as_backlog_and_gets_everything_in_order() -> None:
    async def body() -> None:
        pair = Pair(sndbuf=4096)
        broker = MemoryBroker(max_backlog_bytes=1 << 26)
        sub = broker.subscribe(None, ALL_EVENTS, None)
        counters = Counters()
        writer = SocketWriter(pair.stream, sub, counters, LatencySamples(lambda s: None))
        writer.start()
        big = "x" * 20_000
        n = 50
        for k in range(n):
            broker.publish([MarketEvent("tick", "AAA", {"symbol": "AAA", "n": k, "pad": big})])
        # The peer has not read: the kernel buffers are full and the rest waits.
        assert sub.backlog_bytes > 0
        sub.close("test")

        def drained() -> bool:
            pair.read()
            return writer.done.done()

        await until(drained, "the writer to drain and finish")
        events = SSEParser().feed(pair.read())
        assert [e.id for e in events] == [str(k + 1) for k in range(n)]
        assert counters.events_delivered == n
        pair.close()

    run(body)


def test_a_shared_stream_keeps_tornados_own_bytes_first() -> None:
    """WebSocket pings go through tornado's buffer; the writer must not overtake them."""

    async def body() -> None:
        pair = Pair(sndbuf=4096)
        broker = MemoryBroker()
        sub = broker.subscribe(None, ALL_EVENTS, None)
        writer = LiveWriters(Counters(), lambda s: None).websocket(pair.stream, sub)
        writer.start()
        own = b"T" * 200_000  # more than the socket takes at once: tornado keeps the rest
        tornado_write = pair.stream.write(own)
        assert pair.stream.writing()
        # The peer reads what the kernel holds, so the socket has room again before
        # tornado's next write event: a direct send() now would overtake tornado's rest.
        pair.read()
        broker.publish(tick(1))
        sub.close("test")

        def drained() -> bool:
            pair.read()
            return writer.done.done() and tornado_write.done()

        await until(drained, "both writes")
        data = pair.read()
        assert data.startswith(own)
        assert [e.id for e in SSEParser().feed(data[len(own) :])] == ["1"]
        pair.close()

    run(body)


def test_a_vanished_peer_ends_the_writer_and_closes_the_stream() -> None:
    async def body() -> None:
        pair = Pair()
        broker = MemoryBroker()
        sub = broker.subscribe(None, ALL_EVENTS, None)
        writer = SocketWriter(pair.stream, sub, Counters(), LatencySamples(lambda s: None))
        writer.start()
        pair.peer.close()
        broker.publish(tick(1))  # send() fails with EPIPE: the peer is gone
        await until(lambda: writer.done.done(), "the writer to notice")
        assert pair.stream.closed()
        pair.stream.close()

    run(body)
