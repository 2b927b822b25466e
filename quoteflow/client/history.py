"""``quoteflow.client.history``: fetch ``GET /history``, then stream on without a seam.

History and live in two lines::

    h = history("http://127.0.0.1:8080/", "AAPL", interval="1m")
    live = stream("http://127.0.0.1:8080/stream", symbols="AAPL", last_event_id=h.last_event_id)

``h.bars`` are the completed bars; the stream starts with the first event after the last
one they include, so feeding its ``bar`` events to ``h.builder()`` (a
:class:`~quoteflow.wire.bars.BarBuilder`, the server's own roll-up rule) yields exactly
the bars that follow, with nothing missing and nothing twice.

Like the rest of the client, this depends on nothing in quoteflow but the wire format
and the error types (its one JSON ``GET`` is :func:`quoteflow.client._http.get_json`);
re-exported by :mod:`quoteflow.client`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from quoteflow.client._http import aget_json, get_json
from quoteflow.wire.bars import BASE, Bar, BarBuilder

__all__ = ["History", "ahistory", "history", "history_url"]


@dataclass(frozen=True)
class History:
    """One ``/history`` answer.

    Attributes
    ----------
    symbol : str
    interval : str or None
        The bar interval (None for ticks).
    bars : list of Bar
        Completed bars, oldest first (empty for ticks).
    ticks : list of dict
        Tick payloads with their event ``"id"``, oldest first (empty for bars).
    last_event_id : str or None
        The id of the last event included: pass it to ``stream(last_event_id=...)``.
        None when there was nothing yet (then stream without an id).
    bar_interval : float or None
        The market's bar interval in seconds (what longer bars are rolled up from).
    """

    symbol: str
    interval: str | None
    bars: list[Bar] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    last_event_id: str | None = None
    bar_interval: float | None = None

    def builder(self) -> BarBuilder:
        """A :class:`~quoteflow.wire.bars.BarBuilder` that continues these bars from the
        stream's ``bar`` events (``builder.add(Bar.from_payload(data), event.id)``)."""
        if self.interval is None:
            raise ValueError("this is a tick history: it has no bar interval")
        if self.bar_interval is None:
            if self.interval != BASE:
                raise ValueError("the server did not say its bar interval")
            return BarBuilder(BASE, 1.0)  # the base bars as they are
        return BarBuilder(self.interval, self.bar_interval * 1000)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> History:
        """Build from the decoded JSON answer."""
        bar_interval = body.get("bar_interval")
        return cls(
            symbol=str(body["symbol"]),
            interval=body.get("interval"),
            bars=[Bar.from_payload(b) for b in body.get("bars", ())],
            ticks=list(body.get("ticks", ())),
            last_event_id=body.get("last_event_id"),
            bar_interval=float(bar_interval) if bar_interval is not None else None,
        )


def history_url(
    url: str,
    symbol: str,
    interval: str | None = None,
    *,
    events: str = "bar",
    start: str | float | None = None,
    end: str | float | None = None,
    limit: int | None = None,
) -> str:
    """The ``/history`` URL on the server of ``url`` (its root, ``/stream`` or ``/history``)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    for tail in ("/stream", "/history", "/ws"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    query: dict[str, str] = {"symbol": symbol}
    if events != "bar":
        query["events"] = events
    if interval is not None:
        query["interval"] = interval
    if start is not None:
        query["from"] = str(start)
    if end is not None:
        query["to"] = str(end)
    if limit is not None:
        query["limit"] = str(limit)
    return urllib.parse.urlunsplit(
        parts._replace(path=path.rstrip("/") + "/history", query=urllib.parse.urlencode(query))
    )


def history(
    url: str,
    symbol: str,
    interval: str | None = None,
    *,
    events: str = "bar",
    start: str | float | None = None,
    end: str | float | None = None,
    limit: int | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> History:
    """Fetch ``GET /history`` (blocking; :func:`ahistory` in async code).

    Parameters
    ----------
    url : str
        The server (``http://127.0.0.1:8080/``), or its ``/stream`` URL.
    symbol : str
        One symbol.
    interval : str, optional
        ``1s, 5s, 15s, 1m, 5m, 15m, 1h, 1d`` (a multiple of the market's bar interval);
        default: the market's own.
    events : {"bar", "tick"}
        Bars (default) or the recent ticks.
    start, end : str or float, optional
        ``from`` / ``to``: ISO-8601 UTC or Unix seconds (bar starts or tick times,
        ``end`` exclusive).
    limit : int, optional
        The newest ``limit`` bars (ticks) in range, 1..10000.
    token : str, optional
        Bearer token when auth is on.
    timeout : float
        Seconds for the whole request.

    Returns
    -------
    History

    Raises
    ------
    StreamError
        The server answered an error (its message is included) or could not be reached.
    """
    target = history_url(url, symbol, interval, events=events, start=start, end=end, limit=limit)
    return History.from_json(get_json(target, token=token, timeout=timeout))


async def ahistory(
    url: str,
    symbol: str,
    interval: str | None = None,
    *,
    events: str = "bar",
    start: str | float | None = None,
    end: str | float | None = None,
    limit: int | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> History:
    """:func:`history` for a running event loop (a notebook kernel, an async app)."""
    target = history_url(url, symbol, interval, events=events, start=start, end=end, limit=limit)
    return History.from_json(await aget_json(target, token=token, timeout=timeout))
