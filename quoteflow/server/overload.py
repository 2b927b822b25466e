"""What the server does at its limits: the open-file limit, accept back-off, quiet refusals.

At the process's open-file limit every ``accept()`` fails with ``EMFILE`` and leaves the
connection in the kernel's queue, so the listening socket stays readable: tornado's own
accept handler (``tornado.netutil.add_accept_handler``) then fails again at once, for ever
(100 % CPU and one traceback per attempt in the log). :class:`Acceptor` replaces it:

- it keeps one spare file descriptor open; on ``EMFILE``/``ENFILE`` it closes the spare,
  accepts the waiting connection with the fd that freed, answers it with a JSON 503 and
  closes it, and opens the spare again (the "reserve fd" technique of libev/libuv users),
  so the client hears why instead of waiting in the queue;
- it then stops watching the listening socket for a short pause (:data:`ACCEPT_PAUSE`)
  instead of retrying in a tight loop;
- it logs the condition at most once per :data:`LOG_INTERVAL`, with the number of
  connections refused since the last line (:class:`IntervalLog`).

:func:`raise_open_file_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at
start-up, and :func:`connection_cap` says how many streams that limit can hold with a
reserve left for everything else (listening sockets, ``/healthz``, Redis, log files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop

__all__ = [
    "ACCEPT_PAUSE",
    "LOG_INTERVAL",
    "Acceptor",
    "IntervalLog",
    "connection_cap",
    "raise_open_file_limit",
]

log = logging.getLogger(__name__)

#: Seconds the listening socket is not watched after an accept failed for lack of
#: descriptors (or kernel memory): the back-off that replaces the busy loop.
ACCEPT_PAUSE = 0.05
#: Seconds between two log lines about the same refusal (limit reached, 503 sent).
LOG_INTERVAL = 10.0
#: Connections accepted per readiness event (tornado uses its listen backlog, 128).
_ACCEPT_BATCH = 128
#: accept() errors that mean "no resources now", not "this connection is bad".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _canned_503(message: str) -> bytes:
    body = json.dumps({"error": message, "status": "full"}, separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "Cache-Control: no-cache\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


#: What a client accepted on the spare descriptor hears (it never reaches tornado).
FULL_RESPONSE = _canned_503("server is at its open-file limit; retry later")


class IntervalLog:
    """Logs an event at most once per ``interval`` seconds, with a count of the others.

    Parameters
    ----------
    logger : logging.Logger
        Where to log.
    message : str
        %-format with one ``%d`` (occurrences since the last line) and, optionally,
        more arguments passed to :meth:`hit`.
    interval : float
        Seconds between lines.
    level : int
        Logging level.
    clock : callable
        Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        interval: float = LOG_INTERVAL,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._level = level
        self._clock = clock
        self._last: float | None = None
        self._count = 0

    def hit(self, *args: Any, count: int = 1) -> None:
        """Count ``count`` occurrences; log (with the count so far) once the interval passed."""
        self._count += count
        now = self._clock()
        if self._last is None or now - self._last >= self._interval:
            self._logger.log(self._level, self._message, self._count, *args)
            self._last = now
            self._count = 0


def raise_open_file_limit() -> tuple[int, int]:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; return ``(soft, hard)`` after.

    The soft limit is often 1024 while the hard limit allows far more; a server that
    holds one descriptor per client should use what it is allowed. Failure to raise it
    (a container that forbids it) leaves the limit as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite soft limit for files; nr_open is the real ceiling.
        try:
            target = int(open("/proc/sys/fs/nr_open").read())  # noqa: SIM115
        except (OSError, ValueError):
            target = soft
    else:
        target = hard
    if soft != resource.RLIM_INFINITY and target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fd_reserve(limit: int) -> int:
    """Descriptors kept free of streams under an open-file ``limit``.

    For the listening sockets, the event loop, the spare fd, ``/healthz`` and
    ``/metrics`` probes, ``PUT`` requests, Redis connections and log files: 1/8 of the
    limit, at least 32.
    """
    return max(32, limit // 8)


def connection_cap(requested: int, limit: int | None = None) -> int:
    """The stream limit an open-file ``limit`` can hold: ``requested`` or less.

    Parameters
    ----------
    requested : int
        ``--max-connections``.
    limit : int, optional
        The soft ``RLIMIT_NOFILE`` (default: the current one).

    Returns
    -------
    int
        ``min(requested, limit - fd_reserve(limit))``, at least 1.
    """
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY or limit <= 0:
        return requested
    return max(1, min(requested, limit - fd_reserve(limit)))


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _refuse(conn: socket.socket) -> None:
    """Answer ``conn`` with :data:`FULL_RESPONSE` and close it, without blocking."""
    try:
        conn.setblocking(False)
        # Read what the client already sent: closing a socket with unread data would
        # send a reset, and the client could lose the answer.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            conn.recv(65536)
        conn.send(FULL_RESPONSE)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client is gone already
    finally:
        conn.close()


class Acceptor:
    """Accepts connections for a tornado server without spinning at the open-file limit.

    Parameters
    ----------
    callback : callable
        ``callback(connection, address)`` for every accepted connection (tornado's
        ``TCPServer._handle_connection``).
    pause : float
        Seconds the listening sockets are not watched after running out of descriptors.
    on_refused : callable, optional
        Called once per connection answered with the 503 (a metric).
    """

    def __init__(
        self,
        callback: Callable[[socket.socket, Any], None],
        *,
        pause: float = ACCEPT_PAUSE,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._callback = callback
        self._pause = pause
        self._on_refused = on_refused
        self._spare = _open_spare()
        self._log = IntervalLog(
            log,
            "open-file limit reached (%d connection(s) refused with 503 since the last "
            "report; limit %d): accept paused briefly, existing streams continue",
        )
        self._closed = False

    def add(self, sock: socket.socket) -> Callable[[], None]:
        """Watch ``sock`` (listening, non-blocking); return a function that stops it."""
        io_loop = IOLoop.current()
        state = {"watching": False, "removed": False}
        resume: list[object] = []

        def watch() -> None:
            if not state["watching"] and not state["removed"]:
                io_loop.add_handler(sock, handler, IOLoop.READ)
                state["watching"] = True

        def unwatch() -> None:
            if state["watching"]:
                io_loop.remove_handler(sock)
                state["watching"] = False

        def handler(fd: object, events: int) -> None:
            for _ in range(_ACCEPT_BATCH):
                if state["removed"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    self._at_limit(sock)
                    unwatch()
                    resume[:] = [io_loop.call_later(self._pause, watch)]
                    return
                self._callback(connection, address)

        def remove() -> None:
            state["removed"] = True
            unwatch()
            for handle in resume:
                io_loop.remove_timeout(handle)
            resume.clear()

        watch()
        return remove

    def _at_limit(self, sock: socket.socket) -> None:
        """Out of descriptors: answer waiting clients with 503 using the spare fd."""
        refused = 0
        while self._spare is not None and refused < _ACCEPT_BATCH:
            os.close(self._spare)
            self._spare = None
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                conn = None
            except OSError:
                conn = None  # someone else took the freed fd: pause and retry
            if conn is None:
                self._spare = _open_spare()
                break
            _refuse(conn)
            self._spare = _open_spare()
            refused += 1
            if self._on_refused is not None:
                self._on_refused()
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._log.hit(limit, count=refused)

    def close(self) -> None:
        """Release the spare descriptor."""
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
