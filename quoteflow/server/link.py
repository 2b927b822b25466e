"""The local link between ``quoteflow serve --workers N``'s producer and its workers.

One Unix stream socket pair per worker (``socket.socketpair``), created by the parent
and inherited by the worker process. Both directions carry *frames*: a 4-byte
big-endian length, then a pickled tuple whose first item names the message:

parent to worker
    ``("hello", dict)`` once, first: worker number, the ``serve`` options, the catalog
    and the *backlog* (the producer's replay window, so a restarted worker resumes
    clients exactly like the others);
    ``("batch", ids, kinds, symbols, texts, source_state)`` per tick round: the ids the
    producer decided and each payload's JSON text (without ``seq``);
    ``("catalog", dict)`` when symbols or parameters change;
    ``("reply", n, value, error)`` answering a request of the worker;
    ``("ask", n, what)`` asking the worker (``what`` = ``"metrics"``).
worker to parent
    ``("ready", instance)`` once listening; ``("ask", n, what, *args)`` a request
    (``"update"``: a ``PUT /symbols`` to apply; ``"metrics"``: every worker's
    ``/metrics`` text); ``("reply", n, value, error)``.

Pickle is used because both ends are the same program, started by the same user, on a
socket nobody else holds; it is the fastest way Python has to move a batch of strings
(``benchmarks/workers``: measured against SSE text re-parsed as the :class:`Relay` does,
and against Redis). Never point it at a socket other processes can reach.

Standard library only, plus the wire helpers.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from quoteflow.wire.payload import SEQ_FIELD

__all__ = [
    "FRAME_HEADER",
    "Link",
    "LinkReplyError",
    "Payload",
    "encode_frame",
    "read_frame_blocking",
]

FRAME_HEADER = struct.Struct(">I")

#: A frame larger than this is a broken peer, not a batch (10,000 symbols is ~2 MB).
MAX_FRAME = 256 * 1024 * 1024


def encode_frame(message: tuple[Any, ...]) -> bytes:
    """One frame: length, then the pickled ``message``."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("link closed by the other process")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame_blocking(sock: socket.socket) -> tuple[Any, ...]:
    """Read one frame from a blocking socket (the worker's hello, before its loop runs)."""
    (size,) = FRAME_HEADER.unpack(_recv_exactly(sock, FRAME_HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"link frame of {size} bytes: not a quoteflow peer")
    message: tuple[Any, ...] = pickle.loads(_recv_exactly(sock, size))
    return message


class Payload(Mapping[str, Any]):
    """A payload known by its JSON text, parsed only if someone reads a field.

    A worker frames each event from the text the producer sent (the broker's
    pre-encoded path) and keeps the latest tick of each symbol for ``/snapshot``; only
    a snapshot or ``/symbols`` ever needs the fields, so parsing every event (a
    ``json.loads`` per event per worker) would be wasted work.
    """

    __slots__ = ("_fields", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._fields: dict[str, Any] | None = None

    def _parsed(self) -> dict[str, Any]:
        fields = self._fields
        if fields is None:
            import json

            fields = self._fields = json.loads(self.text)
        return fields

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __bool__(self) -> bool:
        return self.text != "{}"

    def __contains__(self, key: object) -> bool:
        if key == SEQ_FIELD and self._fields is None:
            # The producer sends payloads without seq (the broker adds it): a substring
            # test answers without parsing.
            return f'"{SEQ_FIELD}":' in self.text
        return key in self._parsed()


class Link:
    """One end of a link on the running loop: send frames, read frames, ask and answer.

    Parameters
    ----------
    reader, writer
        The asyncio streams of the socket.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._asks = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    @classmethod
    async def open(cls, sock: socket.socket) -> Link:
        """Wrap a connected stream socket (made non-blocking) on the running loop."""
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue one message (no waiting: the transport buffers)."""
        if not self.writer.is_closing():
            self.writer.write(encode_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Queue an already encoded frame (one batch, encoded once for every worker)."""
        if not self.writer.is_closing():
            self.writer.write(frame)

    @property
    def buffered(self) -> int:
        """Bytes queued for the other process and not yet taken by it."""
        return self.writer.transport.get_write_buffer_size()

    async def read(self) -> tuple[Any, ...]:
        """The next message; ``ConnectionError`` once the other process is gone."""
        try:
            header = await self.reader.readexactly(FRAME_HEADER.size)
            (size,) = FRAME_HEADER.unpack(header)
            if size > MAX_FRAME:
                raise ConnectionError(f"link frame of {size} bytes: not a quoteflow peer")
            body = await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ConnectionError("link closed by the other process") from None
        message: tuple[Any, ...] = pickle.loads(body)
        return message

    async def ask(self, what: str, *args: Any, timeout: float = 5.0) -> Any:
        """Send a request and wait for its reply (``ConnectionError`` if none comes).

        The caller's read loop must hand replies to :meth:`answered`.
        """
        n = next(self._asks)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[n] = future
        self.send(("ask", n, what, *args))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ConnectionError(f"no answer to {what!r} within {timeout:g} s") from None
        finally:
            self._waiting.pop(n, None)

    def answered(self, n: int, value: Any, error: str | None) -> None:
        """A ``("reply", n, value, error)`` arrived: wake the :meth:`ask` waiting for it."""
        future = self._waiting.get(n)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(LinkReplyError(error))

    def fail_waiting(self) -> None:
        """The link is gone: every pending :meth:`ask` raises ``ConnectionError``."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("link closed by the other process"))
        self._waiting.clear()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.fail_waiting()
        self.writer.close()


class LinkReplyError(Exception):
    """The other process answered a request with an error message."""
