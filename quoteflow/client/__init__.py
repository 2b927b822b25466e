"""Server-Sent Events client: a spec-exact parser and a reconnecting async client.

Three layers, each usable on its own:

* :class:`SSEParser` turns the bytes of a ``text/event-stream`` body into
  :class:`Event` objects, incrementally and for any chunking, following the WHATWG HTML
  Living Standard §9.2.6 "Interpreting an event stream" to the letter.
* :func:`stream` returns an :class:`EventStream`: an async iterator of events over one
  logical subscription that survives dropped connections (reconnect with exponential
  backoff and full jitter, ``retry:`` honoured, ``Last-Event-ID`` sent, a silent dead
  connection detected by heartbeat timeout), as an ``EventSource`` does (§9.2.3
  "Processing model", "reestablish the connection").
* :func:`iter_events` is the same as a plain iterator for scripts, running the async
  client on a private event loop in a background thread.

Modules, one concern each:

- :mod:`~quoteflow.client.options`: :class:`StreamOptions`, the options of
  ``stream``/``EventStream``/``iter_events``, written once;
- :mod:`~quoteflow.client._http`: one HTTP connection (request, status, error bodies,
  heartbeat watch, the tornado seam);
- :mod:`~quoteflow.client.stream`: :class:`EventStream`, the reconnect / backoff /
  ``Last-Event-ID`` state machine, and :func:`stream`;
- :mod:`~quoteflow.client.sync`: :func:`iter_events`;
- :mod:`~quoteflow.client.history`: :func:`history`, :func:`ahistory`, :class:`History`.

A request/response call of another endpoint (``history(...)`` for ``GET /history``)
belongs in a module of its own beside these (``client/history.py``), re-exported here,
with its one JSON ``GET`` in :mod:`._http` beside :class:`~._http.Connection` and its
errors from ``http_error``.

The parser and :class:`Event` live in :mod:`quoteflow.wire.parser` (the one place where
SSE framing is read; it is written by :mod:`quoteflow.wire.sse`). This package depends
on nothing in quoteflow but the wire format and the error types.
"""

from __future__ import annotations

from quoteflow.client._http import build_request, build_url
from quoteflow.client.history import History, ahistory, history
from quoteflow.client.options import StreamOptions
from quoteflow.client.stream import EventStream, StreamState, backoff_delay, stream
from quoteflow.client.sync import iter_events
from quoteflow.wire.parser import Event, SSEParser

__all__ = [
    "Event",
    "EventStream",
    "History",
    "SSEParser",
    "StreamOptions",
    "StreamState",
    "ahistory",
    "backoff_delay",
    "build_request",
    "build_url",
    "history",
    "iter_events",
    "stream",
]
