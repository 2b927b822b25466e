"""A close() that lands while the client is still connecting leaves no socket open.

The client cuts a connection by closing its socket; before the socket exists, the cut is
remembered and applied as soon as tornado hands the socket over
(``quoteflow.client._http._StreamConnection``). Real sockets, a raw asyncio server.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from quoteflow.client import EventStream, stream
from tests.integration.fakes import wait_for

pytestmark = pytest.mark.integration

# Named hang guard: a client that never lets go must fail the test, not hang it.
HANG_GUARD_S = 10.0


class _Listener:
    """Accepts connections and records, per connection, the bytes read until EOF."""

    def __init__(self) -> None:
        self.opened = 0
        self.ended: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            self.ended.append(await reader.read())  # until the client closes
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def test_close_while_connecting_closes_the_socket_once_it_exists() -> None:
    async def body() -> None:
        listener = _Listener()
        server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        closing: list[asyncio.Task[None]] = []

        def on_status(es: EventStream) -> None:
            if es.state == "connecting":  # the fetch has started, the socket may not exist
                closing.append(asyncio.get_running_loop().create_task(es.close()))

        es = stream(f"http://127.0.0.1:{port}/stream", on_status=on_status)
        try:
            assert [ev async for ev in es] == []
            await asyncio.gather(*closing)
            await wait_for(
                lambda: len(listener.ended) == listener.opened >= 1,
                timeout=HANG_GUARD_S,
                what="the server to see the client's socket closed",
            )
            assert listener.opened == 1  # no reconnection after close()
            assert es.state == "closed"
            assert es.reconnects == 0
        finally:
            await es.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(body(), HANG_GUARD_S * 2))
