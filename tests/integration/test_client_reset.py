"""The client after a TCP reset, and its status callbacks at the end of a stream.

Regression tests for issue 18's defects, over real sockets with a raw server of the
test's own: tornado's chunked-body reader used to swallow a connection reset (RST), so
the fetch never completed and the client waited for its heartbeat timeout (45 s by
default; for ever with ``heartbeat_timeout=None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Awaitable, Callable

import pytest

from quoteflow.client import Event, EventStream, iter_events, stream

pytestmark = pytest.mark.integration

# Named hang guard: a client that never comes back must fail the test, not hang it.
HANG_GUARD_S = 10.0
RETRY_MS = 300


def _chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


class _Server:
    """An asyncio TCP server whose connection handlers all end with it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> _Server:
        self._server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/stream"

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RawServer(_Server):
    """Answers each connection with a chunked 200 event stream, then ends it its way.

    ``ending`` is ``"rst"`` (close with ``SO_LINGER`` 0: the kernel sends a reset) or
    ``"fin"`` (an ordinary close). Each connection gets one event whose id is the
    connection's number. The request heads are kept for the test to read.
    """

    def __init__(self, ending: str) -> None:
        super().__init__()
        self.ending = ending
        self.requests: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        n = len(self.requests)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + _chunk(b"retry: %d\nid: %d\ndata: event %d\n\n" % (RETRY_MS, n, n))
        )
        await writer.drain()
        # Let the event reach the client before the reset: a reset discards what the
        # peer has not read yet, and this test is about reconnecting, not that loss.
        await asyncio.sleep(0.1)
        if self.ending == "rst":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _last_event_id(head: bytes) -> str | None:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "last-event-id":
            return value.strip()
    return None


def _run(body: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(body(), HANG_GUARD_S)

    asyncio.run(guarded())


@pytest.mark.parametrize("heartbeat_timeout", [None, 45.0])
@pytest.mark.parametrize("ending", ["rst", "fin"])
def test_client_reconnects_after_tcp_reset_within_retry(
    ending: str, heartbeat_timeout: float | None
) -> None:
    """Defect: after an RST the client stalled until heartbeat_timeout (never with None)."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with RawServer(ending) as srv:
            es = EventStream(srv.url, heartbeat_timeout=heartbeat_timeout, seed=1)
            async with es:
                got: list[tuple[float, Event]] = []
                async for ev in es:
                    got.append((loop.time(), ev))
                    if len(got) == 3:
                        break
        assert [ev.id for _, ev in got] == ["1", "2", "3"]
        # Each reconnection sent the id of the last event received.
        assert [_last_event_id(h) for h in srv.requests[:3]] == [None, "1", "2"]
        # Back within the retry delay plus jitter: the first backoff after an attempt that
        # delivered events is at most the server's retry time (full jitter in [0, retry]).
        # The event is sent 0.1 s before the cut, so the gap between two events is at most
        # 0.1 s + 0.3 s + connection set-up; 2 s leaves room for a loaded machine and is
        # still far below the 45 s heartbeat timeout the defect waited for.
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
        assert max(gaps) < 2.0, gaps

    _run(body)


def test_iter_events_reconnects_after_tcp_reset() -> None:
    """The plain-iterator form (what scripts and notebooks call) too."""

    async def body() -> None:
        async with RawServer("rst") as srv:
            url = srv.url
            ids: list[str | None] = []
            done = threading.Event()

            def read() -> None:
                for ev in iter_events(url, heartbeat_timeout=None):
                    ids.append(ev.id)
                    if len(ids) == 2:
                        break
                done.set()

            # A daemon thread and a deadline: with the defect the reader never returns,
            # and the test must fail rather than hang.
            threading.Thread(target=read, daemon=True).start()
            deadline = asyncio.get_running_loop().time() + HANG_GUARD_S / 2
            while not done.is_set() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            assert done.is_set(), f"iter_events did not come back after a reset; got {ids}"
            assert ids == ["1", "2"]

    _run(body)


class NoContentServer(_Server):
    """Answers every request with HTTP 204: the server asks the client to stop."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()


def test_204_reports_closed_once_with_async_with() -> None:
    """Defect: on a 204 end, on_status was called twice with 'closed'."""

    async def body() -> None:
        states: list[str] = []
        async with NoContentServer() as srv:
            es = stream(srv.url, on_status=lambda s: states.append(s.state))
            async with es:
                events = [ev async for ev in es]
        assert events == []
        assert states == ["connecting", "closed"]

    _run(body)


def test_204_reports_closed_once_with_iter_events() -> None:
    async def body() -> None:
        states: list[str] = []
        async with NoContentServer() as srv:
            url = srv.url
            events = await asyncio.to_thread(
                lambda: list(iter_events(url, on_status=lambda s: states.append(s.state)))
            )
        assert events == []
        assert states == ["connecting", "closed"]

    _run(body)


def test_explicit_close_after_end_reports_closed_once() -> None:
    async def body() -> None:
        states: list[str] = []
        async with NoContentServer() as srv:
            es = stream(srv.url, on_status=lambda s: states.append(s.state))
            assert [ev async for ev in es] == []
            await es.close()
            await es.close()
        assert states.count("closed") == 1

    _run(body)
