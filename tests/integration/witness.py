"""A witness stream: a real client that reads ``/stream`` throughout an attack.

Every hostile-input test asks the same question of the server: while it was under
attack, did an ordinary client keep receiving every event, on time? :class:`Witness`
answers it. It runs in its own thread with a plain blocking socket (so it is independent
of the event loop of the test or of an in-process server, and of the project's client
library), speaks HTTP/1.0 (the body is the bare event stream, no chunked coding), parses
events with :class:`quoteflow.client.SSEParser` and records

- ``ids``: the id of every event, in arrival order (ints; the memory broker's ids);
- ``max_silence``: the longest time in seconds between two received events (heartbeat
  comments do not count: they prove the connection, not the feed), measured from the
  first event to the last one or to :meth:`stop`, whichever is later;
- ``eof`` / ``error``: whether the server ended the stream, or what broke it.

Usage::

    with Witness(port) as w:          # waits for the first event
        ...attack...
    w.assert_healthy(max_silence=1.0)  # no gap in ids, no silence over 1 s, no EOF

or ``w = Witness(port).start()`` ... ``w.stop()``. ``path`` selects the subscription
(default every symbol and event type, so ids must be consecutive: a gap is a lost event);
``headers`` add request headers (e.g. ``{"Authorization": "Bearer ..."}``). For a
filtered subscription pass ``consecutive=False`` to :meth:`assert_healthy`: ids then
only have to increase strictly.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType

from quoteflow.client import SSEParser

__all__ = ["Witness"]


class Witness:
    """Read ``path`` of the server on ``host:port`` in a background thread.

    Parameters
    ----------
    port : int
        Server port.
    path : str
        Request target, default ``/stream`` (every symbol, ticks and bars).
    headers : mapping, optional
        Extra request headers.
    host : str
        Server address.
    """

    def __init__(
        self,
        port: int,
        path: str = "/stream",
        headers: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port
        self.path = path
        self.headers = dict(headers or {})
        self.host = host
        self.status = 0
        self.ids: list[int] = []
        self.events = 0
        self.max_silence = 0.0
        self.eof = False
        self.error: str | None = None
        self._last_event: float | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Witness:
        """Connect and start reading; return once the first event arrived.

        Raises
        ------
        AssertionError
            No event within ``timeout`` seconds (or the request failed).
        """
        self._thread = threading.Thread(target=self._run, name="witness", daemon=True)
        self._thread.start()
        if not self._first.wait(timeout) or self.error is not None:
            self.stop()
            raise AssertionError(f"witness got no event within {timeout} s: {self.error}")
        return self

    def stop(self) -> Witness:
        """Stop reading (closing the connection) and account the final silence."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            if self._last_event is not None and not self.eof and self.error is None:
                self.max_silence = max(self.max_silence, time.monotonic() - self._last_event)
        return self

    def __enter__(self) -> Witness:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what it saw -------------------------------------------------------------------

    def gaps(self) -> list[tuple[int, int]]:
        """``(before, after)`` pairs of consecutive received ids that are not ``+1``."""
        ids = list(self.ids)
        return [(a, b) for a, b in itertools.pairwise(ids) if b != a + 1]

    def assert_healthy(self, max_silence: float = 1.0, *, consecutive: bool = True) -> None:
        """Assert: still streaming, ids strictly increasing (and consecutive), no long silence.

        Parameters
        ----------
        max_silence : float
            Longest allowed time between two events, in seconds.
        consecutive : bool
            Ids must increase by exactly 1 (an unfiltered stream of the memory broker).
        """
        assert self.error is None, f"witness stream broke: {self.error}"
        assert not self.eof, "witness stream ended"
        assert self.events > 0, "witness received no event"
        ids = list(self.ids)
        backwards = [(a, b) for a, b in itertools.pairwise(ids) if b <= a]
        assert not backwards, f"ids not increasing (duplicates or reordering): {backwards[:5]}"
        if consecutive:
            gaps = self.gaps()
            assert not gaps, f"witness lost events: {len(gaps)} gaps, first {gaps[:5]}"
        assert self.max_silence <= max_silence, (
            f"witness saw {self.max_silence:.2f} s without an event (allowed {max_silence} s)"
        )

    # -- the reading thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            with socket.create_connection((self.host, self.port), timeout=10) as sock:
                lines = [f"GET {self.path} HTTP/1.0", f"Host: {self.host}"]
                lines += [f"{k}: {v}" for k, v in self.headers.items()]
                sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                sock.settimeout(0.1)  # wake up to check the stop flag
                self._read(sock)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._first.set()

    def _read(self, sock: socket.socket) -> None:
        parser = SSEParser()
        head = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                self.eof = True
                return
            if not self.status:
                head += chunk
                if b"\r\n\r\n" not in head:
                    continue
                status_line, _, chunk = head.partition(b"\r\n\r\n")
                self.status = int(status_line.split(b" ", 2)[1])
                if self.status != 200:
                    self.error = f"status {self.status}: {chunk[:200]!r}"
                    return
            now = time.monotonic()
            events = parser.feed(chunk)
            if not events:
                continue
            with self._lock:
                if self._last_event is not None:
                    self.max_silence = max(self.max_silence, now - self._last_event)
                self._last_event = now
                for event in events:
                    self.events += 1
                    if event.id is not None and event.id.isdigit():
                        self.ids.append(int(event.id))
            self._first.set()
