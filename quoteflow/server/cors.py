"""Telling the operator about refused cross-origin requests, without flooding the log.

A page on another origin that opens ``new EventSource(url)`` gets no events when the
server does not answer with ``Access-Control-Allow-Origin``: the browser drops the
response and the page sees only ``readyState == 2``. Nothing in the page says why, so
the server says it, in its own log, naming the flag that allows that origin
(``--cors-origin``). A browser retries every few seconds and a busy page may open many
streams, so each origin is logged at most once per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RefusedOriginLog"]

log = logging.getLogger("quoteflow.server.cors")

#: Longest part of an ``Origin`` header that is quoted in the log (client input).
_SHOWN = 100


class RefusedOriginLog:
    """Log a refused ``Origin`` once per origin per ``interval`` seconds.

    Parameters
    ----------
    interval : float, default 60
        Seconds during which further refusals of the same origin are not logged.
    max_origins : int, default 1024
        Origins remembered at most; a client sending a new Origin with every request
        cannot grow this without bound (past it, the table is cleared, so at worst a
        line is repeated early).
    clock : callable, default time.monotonic
        Seconds, for tests.
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        max_origins: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_origins = max_origins
        self._clock = clock
        self._last: dict[str, float] = {}

    def refused(self, origin: str, path: str, *, cors_enabled: bool) -> bool:
        """Note one refused request; log it unless this origin was logged recently.

        Parameters
        ----------
        origin : str
            The request's ``Origin`` header.
        path : str
            The request path, shown in the log line.
        cors_enabled : bool
            Whether any ``--cors-origin`` is set (the advice differs).

        Returns
        -------
        bool
            Whether a line was logged.
        """
        shown = origin[:_SHOWN]
        now = self._clock()
        last = self._last.get(shown)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.max_origins:
            self._last.clear()
        self._last[shown] = now
        allowed = "allows no other origin" if not cors_enabled else "does not allow it"
        log.warning(
            "cross-origin request from Origin %r to %s refused: this server %s, so a "
            "browser page there gets nothing (EventSource readyState 2). To allow it, "
            "start the server with --cors-origin %s (or ServerSettings(cors_origins=...)). "
            "Not logged again for this origin for %g s.",
            shown,
            path[:_SHOWN],
            allowed,
            shown,
            self.interval,
        )
        return True
