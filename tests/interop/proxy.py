"""A TCP proxy of the suite's own that cuts SSE responses in the four ways networks do.

For connection number *k* the proxy follows ``plan[k]`` (``None``: pass everything):

``"fin"``
    after ``after`` complete events, close the socket normally (FIN): an abrupt drop in
    the middle of a chunked body, between two events;
``"rst"``
    after ``after`` events, close with ``SO_LINGER`` 0, which sends a TCP reset;
``"mid"``
    after ``after`` events, forward the first half of the next event, then FIN;
``"end"``
    after ``after`` events, end the response cleanly (the final empty chunk), then close.

It speaks just enough HTTP/1.1 for this: one request per connection (``Connection:
close`` both ways), the chunked body decoded and re-chunked one SSE block per chunk, so a
cut lands exactly where the plan says. Each connection's request head (``Last-Event-ID``)
and the ids of the complete events it forwarded are recorded for the verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["MODES", "Connection", "CutProxy"]

#: The cuts, in the order a scenario applies them.
MODES = ("fin", "rst", "mid", "end")

# §9.2.6 line ends: CRLF, LF or CR; a blank line ends a block.
_LINE = re.compile(rb"\r\n|\r|\n")
_BLOCK_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n|\r\n\n|\n\r(?!\n)")


def _last_id(block: bytes) -> str | None:
    ids = [ln[3:] for ln in _LINE.split(block) if ln.startswith(b"id:")]
    if not ids:
        return None
    value = ids[-1]
    return (value[1:] if value.startswith(b" ") else value).decode("utf-8")


@dataclass
class Connection:
    """What one client connection asked for and was given."""

    index: int
    mode: str | None
    path: str = ""
    last_event_id: str | None = None
    #: Ids of the complete events forwarded to the client, in order.
    forwarded: list[str] = field(default_factory=list)
    cut: bool = False


class CutProxy:
    """Listen on a free port of 127.0.0.1 and forward to ``upstream_port``.

    Parameters
    ----------
    upstream_port : int
        The server's port.
    plan : sequence of str or None
        Cut mode per connection, in connection order; connections past the plan pass.
    after : int
        Complete events forwarded on a connection before its cut.
    only_path : str
        Only requests whose path starts with this are cut (a page's other requests pass).
    """

    def __init__(
        self,
        upstream_port: int,
        plan: tuple[str | None, ...] = MODES,
        *,
        after: int = 5,
        only_path: str = "/",
    ) -> None:
        self.upstream_port = upstream_port
        self.plan = plan
        self.after = after
        self.only_path = only_path
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> CutProxy:
        """Bind and start accepting; returns self."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop accepting and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> CutProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def streams(self) -> list[Connection]:
        """The connections that asked for a path under ``only_path``."""
        return [c for c in self.connections if c.path.startswith(self.only_path)]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else ""
            headers = {}
            kept = [lines[0]]
            for line in lines[1:]:
                if not line:
                    continue
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
                if name.strip().lower() != "connection":
                    kept.append(line)
            kept.append("Connection: close")
            mode: str | None = None
            if path.startswith(self.only_path):
                n = len(self.streams)
                mode = self.plan[n] if n < len(self.plan) else None
            conn = Connection(len(self.connections), mode, path, headers.get("last-event-id"))
            self.connections.append(conn)
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(("\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            resp_head = await up_reader.readuntil(b"\r\n\r\n")
            rlines = resp_head.decode("latin-1").split("\r\n")
            chunked = any(
                ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower()
                for ln in rlines
            )
            out = [ln for ln in rlines if ln and not ln.lower().startswith("connection:")]
            out.append("Connection: close")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            await self._body(conn, up_reader, writer, chunked)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if up_writer is not None:
                up_writer.close()
            if not writer.transport.is_closing():
                writer.close()

    async def _body(
        self,
        conn: Connection,
        up: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        chunked: bool,
    ) -> None:
        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        pending = b""
        events = 0
        cutting = False  # "mid": the next block is cut in half
        async for data in _decoded(up, chunked):
            pending += data
            while True:
                found = _BLOCK_END.search(pending)
                if found is None:
                    break
                block, pending = pending[: found.end()], pending[found.end() :]
                if cutting:
                    writer.write(frame(block[: len(block) // 2]))
                    await writer.drain()
                    conn.cut = True
                    writer.close()  # FIN in the middle of an event
                    return
                writer.write(frame(block))
                if b"data:" in block:
                    events += 1
                    last = _last_id(block)
                    if last is not None:
                        conn.forwarded.append(last)
                await writer.drain()
                if conn.mode is not None and events >= self.after:
                    if conn.mode == "mid":
                        cutting = True
                        continue
                    conn.cut = True
                    await _cut(writer, conn.mode, chunked)
                    return
            if pending and not cutting and conn.mode is None:
                # A comment or retry line without its block yet: pass it on at once,
                # so heartbeats keep flowing on an uncut connection.
                writer.write(frame(pending))
                await writer.drain()
                pending = b""
        if pending:
            writer.write(frame(pending))
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _cut(writer: asyncio.StreamWriter, mode: str, chunked: bool) -> None:
    if mode == "end":
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
    elif mode == "fin":
        writer.close()
    elif mode == "rst":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER on with a zero timeout: close() discards unsent data and sends RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        raise ValueError(f"unknown cut mode {mode!r}; known: {', '.join(MODES)}")


async def _decoded(up: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The response body, de-chunked, piece by piece as it arrives."""
    if not chunked:
        while data := await up.read(65536):
            yield data
        return
    while True:
        size_line = await up.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            with contextlib.suppress(asyncio.IncompleteReadError):
                await up.readuntil(b"\r\n")
            return
        data = await up.readexactly(size)
        await up.readexactly(2)
        yield data
