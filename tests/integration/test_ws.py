"""``GET /ws``: the feed as WebSocket text frames, with /stream's resume and limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from quoteflow.broker.base import Framing
from quoteflow.broker.memory import MemoryBroker
from quoteflow.server.ws import ws_frame
from quoteflow.wire.ws import ws_event
from tests.integration.fakes import FakeSource, request, run, serving, wait_for
from tests.redis_server import QuoteflowProcess, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _connect(port: int, query: str = "") -> tornado.websocket.WebSocketClientConnection:
    return await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws{query}")


async def _close(conn: tornado.websocket.WebSocketClientConnection) -> None:
    """Close and wait for the server's close frame (the socket is closed afterwards)."""
    conn.close()
    async with asyncio.timeout(10):
        while await conn.read_message() is not None:
            pass


async def _read(conn: tornado.websocket.WebSocketClientConnection, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len(out) < n:
            msg = await conn.read_message()
            assert msg is not None, "the server closed the WebSocket"
            assert isinstance(msg, str)  # text frames
            out.append(json.loads(msg))
    return out


def test_messages_are_json_text_frames_with_id_event_and_data() -> None:
    async def body() -> None:
        async with serving(FakeSource(("AAA", "BBB"), bar_every=3)) as server:
            assert server.port is not None
            conn = await _connect(server.port, "?symbols=aaa&events=tick,bar")
            msgs = await _read(conn, 12)
            await _close(conn)
            assert {m["event"] for m in msgs} == {"tick", "bar"}
            for m in msgs:
                assert set(m) == {"id", "event", "data"}
                assert isinstance(m["id"], str) and m["data"]["seq"] == int(m["id"])
                assert m["data"]["symbol"] == "AAA"
            ids = [int(m["id"]) for m in msgs]
            assert ids == sorted(set(ids))

    run(body)


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate() -> None:
    async def body() -> None:
        async with serving(FakeSource(("AAA", "BBB", "CCC"), interval=0.002)) as server:
            assert server.port is not None
            first = await _connect(server.port)
            got = await _read(first, 30)
            await _close(first)
            last = got[-1]["id"]
            # More events are published while the client is away.
            broker = server.broker
            await wait_for(lambda: int(broker.last_id or 0) > int(last) + 50, what="publishing")
            second = await _connect(server.port, f"?lastEventId={last}")
            more = await _read(second, 100)
            await _close(second)
            ids = [int(m["id"]) for m in got + more]
            # Every symbol is subscribed, so ids are contiguous across the reconnect.
            assert ids == list(range(ids[0], ids[0] + len(ids)))

    run(body)


def test_resume_from_an_evicted_id_gets_a_reset_message() -> None:
    async def body() -> None:
        broker = MemoryBroker(buffer_size=10)
        async with serving(FakeSource(("AAA",), interval=0.002), broker=broker) as server:
            assert server.port is not None
            await wait_for(lambda: int(broker.last_id or 0) > 30, what="publishing")
            conn = await _connect(server.port, "?lastEventId=1")
            (reset,) = await _read(conn, 1)
            await _close(conn)
            assert reset["event"] == "reset" and reset["data"]["reason"] == "evicted"
            assert "AAA" in reset["data"]["snapshot"]

    run(body)


def test_bad_parameters_are_a_json_400_before_the_upgrade() -> None:
    async def body() -> None:
        async with serving(FakeSource(("AAA", "BBB"))) as server:
            port = server.port
            assert port is not None
            upgrade = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
            }
            for query, word in (
                ("?symbols=NOPE", "NOPE"),
                ("?events=quote", "quote"),
                ("?lastEventId=abc", "abc"),
            ):
                status, payload = await request(port, "GET", "/ws" + query, headers=upgrade)
                assert status == 400, (query, payload)
                assert word in payload["error"] and payload["known_symbols"] == ["AAA", "BBB"]
            # Not a WebSocket request at all: JSON 400 pointing to /stream.
            status, payload = await request(port, "GET", "/ws")
            assert status == 400 and "/stream" in payload["error"]
            with pytest.raises(tornado.httpclient.HTTPClientError) as err:
                await _connect(port, "?symbols=NOPE")
            assert err.value.code == 400
            assert server.state.streams == set()  # nothing left registered

    run(body)


def _stalled_ws_client(port: int) -> socket.socket:
    """Open /ws with a tiny receive buffer and never read a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


def test_a_stalled_websocket_client_is_cut_off_and_others_keep_going() -> None:
    async def body() -> None:
        source = FakeSource(("AAA", "BIG"), interval=0.004, big={"BIG": 64 * 1024})
        broker = MemoryBroker(buffer_size=64, max_backlog_bytes=256 * 1024)
        async with serving(source, broker=broker) as server:
            assert server.port is not None
            stalled = _stalled_ws_client(server.port)
            try:
                normal = await _connect(server.port, "?symbols=AAA")
                await wait_for(
                    lambda: broker.stats.slow_consumer_disconnects >= 1,
                    timeout=60,
                    what="the stalled WebSocket client to be dropped",
                )
                msgs = await _read(normal, 50)  # the normal client still gets data
                await _close(normal)
                assert all(m["data"]["symbol"] == "AAA" for m in msgs)
            finally:
                stalled.close()

    run(body)


def test_frames_from_event_parts() -> None:
    # (Was test_frames_from_sse_chunks: /ws no longer parses the broker's SSE bytes; the
    # same frames are now built from the event's parts.)
    frame = ws_event("7", "tick", b'{"symbol":"A","seq":7}')
    assert frame == ws_frame(b'{"id":"7","event":"tick","data":{"symbol":"A","seq":7}}')
    assert Framing.WEBSOCKET.heartbeat == b"\x89\x00"  # a heartbeat is a ping
    assert ws_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"  # 16-bit length form
    assert ws_frame(b"x" * 70000)[:2] == b"\x81\x7f"  # 64-bit length form


# ------------------------------------------------------------- defect 6 (issue 10)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _raw_ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand (RFC 6455 §4.1), so a test can send broken frames."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws?symbols=SYM0000 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> tuple[int | None, bool]:
    """Read server frames to the end: (close code or None if no close frame, saw EOF)."""
    code: int | None = None
    try:
        while True:
            head = await reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(n)
            if head[0] & 0x0F == 0x8 and len(payload) >= 2:
                code = struct.unpack("!H", payload[:2])[0]
    except asyncio.IncompleteReadError:
        return code, True
    except ConnectionError:  # reset after the close: closed all the same
        return code, True


def test_defect6_unfinished_websocket_messages_hold_no_memory_and_get_closed(
    tmp_path: Path,
) -> None:
    """Before: each never-finished 9 MiB message was buffered whole (50 clients: +450 MB)
    and the connections stayed open for ever."""
    with quoteflow_processes(tmp_path) as procs:
        srv = QuoteflowProcess(
            tmp_path,
            "ws",
            "serve",
            "--port",
            "0",
            "--universe",
            "2",
            "--tick-interval",
            "0.2",
            "--ws-frame-timeout",
            "1",
            "--max-connections-per-ip",
            "500",
        )
        procs.append(srv)
        srv.wait_ready()
        port = srv.port
        assert port is not None

        async def main() -> None:
            # A witness that reads all along (and so answers pings): it stays connected.
            normal = await _connect(port, "?symbols=SYM0001")
            seen: list[dict[str, Any]] = []

            async def witness() -> None:
                while (msg := await normal.read_message()) is not None:
                    assert isinstance(msg, str)
                    seen.append(json.loads(msg))

            reading = asyncio.create_task(witness())
            await wait_for(lambda: len(seen) >= 2, what="the witness's first events")
            opened: list[asyncio.StreamWriter] = []
            try:
                await attack(opened)
            finally:
                for writer in opened:
                    writer.close()
            n = len(seen)
            await wait_for(lambda: len(seen) >= n + 5, what="the witness to keep receiving")
            assert not reading.done(), "the witness was disconnected"
            normal.close()
            async with asyncio.timeout(10):  # hang guard: the server's close frame ends it
                await reading
            ids = [int(m["id"]) for m in seen]
            assert ids == sorted(set(ids)) and {m["data"]["symbol"] for m in seen} == {"SYM0001"}
            grown = sizes["grown"]
            assert grown < 64 << 20, f"server RSS grew {grown / 2**20:.0f} MiB"

        sizes: dict[str, int] = {}

        async def attack(opened: list[asyncio.StreamWriter]) -> None:
            before = _rss_bytes(srv.pid)
            big = []
            for _ in range(50):
                big.append(await _raw_ws(port))
                opened.append(big[-1][1])
            small = []
            for _ in range(50):
                small.append(await _raw_ws(port))
                opened.append(small[-1][1])
            mask = b"\x01\x02\x03\x04"
            chunk = b"x" * (1 << 20)

            async def send_big(writer: asyncio.StreamWriter) -> None:
                # A masked text frame announcing 9 MiB, sent but for its last byte.
                writer.write(b"\x81\xff" + struct.pack("!Q", 9 << 20) + mask)
                with contextlib.suppress(ConnectionError):
                    for i in range(9):
                        writer.write(chunk if i < 8 else chunk[:-1])
                        await writer.drain()

            async with asyncio.timeout(120):  # hang guard
                await asyncio.gather(*(send_big(w) for _, w in big))
            for _, writer in small:
                # Small enough to be accepted, but never finished: only time can tell.
                writer.write(b"\x81\xfe" + struct.pack("!H", 1000) + mask + b"x" * 10)
                await writer.drain()
            sizes["grown"] = _rss_bytes(srv.pid) - before
            async with asyncio.timeout(60):  # hang guard
                big_ends = await asyncio.gather(*(_close_code(r) for r, _ in big))
                small_ends = await asyncio.gather(*(_close_code(r) for r, _ in small))
            assert all(eof for _, eof in big_ends + small_ends)
            # Too big: 1009 (when the close frame got through before the reset).
            assert {code for code, _ in big_ends} <= {1009, None}, big_ends
            assert [code for code, _ in small_ends] == [1008] * 50, small_ends

        run(main)
        status, health = asyncio.run(request(port, "GET", "/healthz"))
        assert status == 200 and health["connections"] == 0, health
        srv.signal(signal.SIGTERM)
        assert srv.wait(15) == 0
        log = srv.log()
        assert "Traceback" not in log, log
        assert log.count("no pong within 1 s") == 50, log
