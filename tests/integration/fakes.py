"""Test-only helpers for the server tests: a deterministic source and a raw SSE client.

``FakeSource`` emits known events (a counter per symbol), so a test can say exactly what
a stream must contain. ``RawStream`` talks HTTP/1.0 over a plain asyncio socket (no
chunked encoding, the server closes at the end), keeps the raw body bytes (heartbeat
comments are visible) and decodes events with the project's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from quoteflow.client import Event, SSEParser
from quoteflow.errors import ConfigError
from quoteflow.server.runner import QuoteServer
from quoteflow.sources import MarketEvent, Source


class FakeSource(Source):
    """Deterministic source: batch ``k`` has one tick per symbol with ``{"n": k}``.

    Parameters
    ----------
    symbols
        Symbol names.
    interval
        Seconds between batches (0 yields to the loop between batches only).
    max_batches
        Stop after this many batches (None: forever).
    bar_every
        Every ``bar_every``-th batch also carries one bar per symbol (0: never).
    big
        ``{symbol: n_bytes}``: pad that symbol's ticks with ``n_bytes`` of filler.
    """

    def __init__(
        self,
        symbols: tuple[str, ...] = ("AAA", "BBB", "CCC"),
        *,
        interval: float = 0.005,
        max_batches: int | None = None,
        bar_every: int = 0,
        big: Mapping[str, int] | None = None,
    ) -> None:
        self._symbols = list(symbols)
        self.interval = interval
        self.max_batches = max_batches
        self.bar_every = bar_every
        self.big = {s: "x" * n for s, n in (big or {}).items()}
        self.k = 0
        self.params: dict[str, dict[str, Any]] = {s: {"sigma": 0.2} for s in symbols}
        self.closed = False

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def step(self) -> list[MarketEvent]:
        k = self.k
        self.k += 1
        # "t" is the publish time on this process's monotonic clock: a client in the same
        # process measures delivery latency against it.
        t = time.monotonic()
        out = []
        for s in self._symbols:
            data: dict[str, Any] = {"symbol": s, "n": k, "price": 100.0 + k, "t": t}
            if s in self.big:
                data["pad"] = self.big[s]
            out.append(MarketEvent("tick", s, data))
        if self.bar_every and k % self.bar_every == self.bar_every - 1:
            out.extend(
                MarketEvent("bar", s, {"symbol": s, "n": k, "close": 100.0 + k})
                for s in self._symbols
            )
        return out

    async def batches(self) -> AsyncIterator[list[MarketEvent]]:
        while self.max_batches is None or self.k < self.max_batches:
            await asyncio.sleep(self.interval)
            yield self.step()

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            s: {"model": "fake", "params": dict(p), "price": 100.0} for s, p in self.params.items()
        }

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in params.items():
            if key != "sigma":
                raise ConfigError(f"fake: unknown parameter {key!r}; allowed: sigma")
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"fake: sigma must be > 0, got {value!r}")
        self.params[symbol].update(params)
        return dict(self.params[symbol])

    def close(self) -> None:
        self.closed = True


class RawStream:
    """An SSE stream over a raw HTTP/1.0 socket.

    Attributes
    ----------
    status : int
        HTTP status.
    headers : dict
        Response headers, lower-cased names.
    raw : bytearray
        Every body byte received.
    events : list of Event
        Events decoded so far by :class:`quoteflow.client.SSEParser`.
    eof : bool
        True once the server closed the connection cleanly.
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw = bytearray()
        self.events: list[Event] = []
        self.eof = False
        self._parser = SSEParser()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/stream",
        headers: Mapping[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> RawStream:
        """Connect, send the request and read the status line and headers."""
        self = cls()
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        self._reader, self._writer = reader, writer
        lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        if rcvbuf is not None:
            return self  # a stalled client: never reads
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        return self

    async def read_some(self) -> bool:
        """Read one chunk; False at end of stream."""
        assert self._reader is not None
        chunk = await self._reader.read(65536)
        if not chunk:
            self.eof = True
            self._parser.finish()  # an event without its blank line is not dispatched
            return False
        self.raw += chunk
        self.events.extend(self._parser.feed(chunk))
        return True

    async def read_until(self, cond: Callable[[RawStream], bool], timeout: float = 10.0) -> None:
        """Read until ``cond(self)`` holds; raise TimeoutError or EOFError otherwise."""
        async with asyncio.timeout(timeout):
            while not cond(self):
                if not await self.read_some():
                    if cond(self):
                        return
                    raise EOFError(f"stream ended; got {len(self.events)} events")

    async def body(self, timeout: float = 10.0) -> bytes:
        """Read to EOF (non-stream responses)."""
        async with asyncio.timeout(timeout):
            while await self.read_some():
                pass
        return bytes(self.raw)

    def json(self) -> Any:
        return json.loads(bytes(self.raw))

    def abort(self) -> None:
        """Drop the connection without reading further."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


def payloads(events: list[Event], kind: str = "tick") -> list[dict[str, Any]]:
    """The decoded JSON data of events of type ``kind``."""
    return [json.loads(e.data) for e in events if e.event == kind]


async def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP/1.0 request; returns (status, parsed JSON body or raw text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


async def wait_for(
    cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``cond`` until true (a condition, not a fixed sleep); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body on a fresh loop."""

    async def main() -> None:
        await coro_fn()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def serving(source: Source, **options: Any) -> AsyncIterator[QuoteServer]:
    """A :class:`QuoteServer` on a free port of the running loop, stopped afterwards."""
    server = QuoteServer(source, port=0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(timeout=2.0)
