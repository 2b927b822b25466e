"""The interop scenario: a client reads through a :class:`CutProxy`, a reference reader
reads the same feed without ever disconnecting, and the two are compared.

The proxy cuts the client's first four connections after ``AFTER`` events each, one way
each (FIN, RST, mid-event, clean end; see :mod:`tests.interop.proxy`), so a client that
reads ``COUNT`` events has lived through all four. Verdicts:

* ``exact``: the client's events (id, type, data) are one contiguous run of the reference
  reader's events: every event, byte for byte, no gap, no duplicate;
* per cut: the next connection came and asked for a ``Last-Event-ID`` the client had
  received (see :func:`cut_verdicts` for why not always the last one the proxy wrote).

Results are written as JSON to ``test-artifacts/interop/`` for the table of
docs/clients.md (:mod:`tests.interop.table`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quoteflow.server.app import ServerSettings
from tests.conftest import ARTIFACTS
from tests.integration.fakes import FakeSource, RawStream, serving
from tests.interop.proxy import MODES, Connection, CutProxy

#: Where each scenario writes its result row.
RESULTS = ARTIFACTS / "interop"
#: Events per connection before its cut, and events a client reads in all.
AFTER = 5
COUNT = 30
#: The server's ``retry`` (ms): how soon a well-behaved client comes back.
RETRY_MS = 150
#: Hang guard for one whole scenario (not a speed requirement).
HANG_GUARD = 60.0

#: One received event: (id, type, data).
Received = tuple[str, str, str]
Reader = Callable[[str, int], Awaitable[list[Received]]]


@dataclass
class Row:
    """One line of the compatibility table."""

    name: str
    role: str  # "client" (of the quoteflow server) or "server" (for the quoteflow client)
    language: str
    version: str
    reconnects: bool  # reconnected by itself, without the recipe loop
    exact: bool = False
    cuts: dict[str, bool] = field(default_factory=dict)
    note: str = ""

    def write(self, streams: list[Connection] | None = None) -> Path:
        """Write ``test-artifacts/interop/<role>-<name>.json`` (and, for a post-mortem,
        what each connection asked for and got, beside it); returns the path."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"{self.role}-{self.name}".replace(" ", "_")
        path = RESULTS / f"{stem}.json"
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")
        if streams is not None:
            log = RESULTS / "connections" / f"{stem}.json"
            log.parent.mkdir(exist_ok=True)
            log.write_text(json.dumps([asdict(c) for c in streams], indent=1) + "\n")
        return path

    @property
    def green(self) -> bool:
        return self.exact and len(self.cuts) == len(MODES) and all(self.cuts.values())


def cut_verdicts(streams: list[Connection], received: set[str]) -> dict[str, bool]:
    """Per cut mode: did a next connection come, resuming from an event the client had?

    Not necessarily the last event the proxy wrote: after a reset, bytes still in
    flight are discarded by TCP, and a browser drops what its network layer had read
    but not yet handed to the page when the body fails. Such events were never received,
    and the server replays them. Whether the resume was exact (no gap, no duplicate)
    is the ``exact`` verdict over all the client's events.
    """
    out: dict[str, bool] = {}
    for k, conn in enumerate(streams):
        if conn.mode is None:
            continue
        nxt = streams[k + 1] if k + 1 < len(streams) else None
        sent = {i for c in streams[: k + 1] for i in c.forwarded}
        out[conn.mode] = bool(
            conn.cut
            and nxt is not None
            and nxt.last_event_id in received
            and nxt.last_event_id in sent
        )
    return out


def contiguous(got: list[Received], reference: list[Received]) -> bool:
    """Whether ``got`` is one run of ``reference``: complete, in order, no duplicate."""
    if not got or got[0] not in reference:
        return False
    i = reference.index(got[0])
    return reference[i : i + len(got)] == got


async def _keep_reading(ref: RawStream, stop: asyncio.Event) -> None:
    # The reference must drain its socket all along, or the server would count it as a
    # slow consumer and drop it.
    with contextlib.suppress(EOFError):
        await ref.read_until(lambda _: stop.is_set(), timeout=HANG_GUARD * 2)


async def server_scenario(
    read: Reader, *, cors_origins: tuple[str, ...] = ()
) -> tuple[bool, dict[str, bool], list[Connection]]:
    """Run ``read`` against a quoteflow server through the proxy; (exact, cuts, streams)."""
    settings = ServerSettings(retry_ms=RETRY_MS, cors_origins=cors_origins)
    async with serving(FakeSource(interval=0.02), settings=settings) as server:
        assert server.port is not None
        ref = await RawStream.open(server.port, "/stream?events=tick")
        await ref.read_until(lambda r: len(r.events) >= 1)
        stop = asyncio.Event()
        reading = asyncio.create_task(_keep_reading(ref, stop))
        try:
            async with CutProxy(server.port, only_path="/stream", after=AFTER) as proxy:
                url = f"http://127.0.0.1:{proxy.port}/stream?events=tick"
                got = await asyncio.wait_for(read(url, COUNT), HANG_GUARD)
                streams = proxy.streams
            last = got[-1][0]
            for _ in range(int(HANG_GUARD / 0.01)):
                if any(e.id == last for e in ref.events):
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await reading
            await ref.close()
    reference = [(e.id or "", e.event, e.data) for e in ref.events]
    return contiguous(got, reference), cut_verdicts(streams, {g[0] for g in got}), streams


@contextlib.asynccontextmanager
async def page_server(html: str) -> AsyncIterator[str]:
    """Serve ``html`` at ``/`` of a second origin on 127.0.0.1; yields that origin.

    A real socket, not a browser-side fake: Chromium puts a page whose address it does
    not know in the public address space and then refuses its requests to loopback
    (Private Network Access), which is not the situation of a page a user serves.
    """
    body = html.encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def probe(
    attempt: Callable[[str], Awaitable[str]], mode: str
) -> tuple[str, list[Connection]]:
    """What a client does by itself when its one connection is cut once with ``mode``.

    ``attempt(url)`` reads with the bare client (no recipe loop) until the client gives
    control back, and says how: ``"ended"`` (its iterator stopped) or ``"raised X"``.
    Returns that and the connections the proxy saw: a client that reconnects by itself
    would have opened a second one before giving control back.
    """
    settings = ServerSettings(retry_ms=RETRY_MS)
    async with serving(FakeSource(interval=0.02), settings=settings) as server:
        assert server.port is not None
        async with CutProxy(server.port, (mode,), only_path="/stream", after=AFTER) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/stream?events=tick"
            outcome = await asyncio.wait_for(attempt(url), HANG_GUARD)
            return outcome, proxy.streams
