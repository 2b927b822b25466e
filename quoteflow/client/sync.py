"""The blocking front: :func:`iter_events`, the async client as a plain iterator.

The async client (:func:`quoteflow.client.stream`) runs on a private event loop in a
daemon thread and hands events over a queue, for scripts and other synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Generator
from typing import Any

from quoteflow.client.options import StreamOptions, keyword_signature, resolve_options
from quoteflow.client.stream import END, EventStream, _End
from quoteflow.wire.parser import Event

__all__ = ["iter_events"]

logger = logging.getLogger(__name__)


@keyword_signature
def iter_events(
    url: str, options: StreamOptions | None = None, **kwargs: Any
) -> Generator[Event, None, None]:
    """Iterate over a stream from synchronous code.

    The async client (:func:`stream`) runs on a private event loop in a daemon thread
    and hands events over a queue, so this works from scripts and also from a thread
    that is running its own event loop (but it blocks that thread while waiting; in a
    notebook or other async code use :func:`stream` instead).

    Parameters
    ----------
    url : str
        Stream URL.
    options : StreamOptions, optional
        The options as one value; keyword arguments override its fields.
    **kwargs
        The keyword arguments of :func:`stream`. An ``on_status`` callback runs in
        the background thread.

    Yields
    ------
    Event
        Events in order.

    Raises
    ------
    StreamError
        As :func:`stream`.
    TypeError, ValueError
        At once, in the caller's thread: an unknown option, or one out of range.

    Notes
    -----
    Leaving the loop (``break``, an exception, or ``close()`` on the generator) closes
    the connection and stops the thread. Events arrive in an unbounded queue: a
    consumer slower than the feed accumulates them in memory.
    """
    # Validated here, in the caller's thread, before any thread starts.
    return _iter_events(url, resolve_options("iter_events", options, kwargs))


def _iter_events(url: str, options: StreamOptions) -> Generator[Event, None, None]:
    items: queue.Queue[Event | _End | BaseException] = queue.Queue()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def pump() -> None:
        es = EventStream(url, options)
        holder["loop"] = asyncio.get_running_loop()
        holder["stream"] = es
        ready.set()
        try:
            async for ev in es:
                items.put(ev)
            items.put(END)
        except Exception as exc:
            items.put(exc)
        finally:
            await es.close()
            # Set on the loop thread: a close scheduled from the reader after this point
            # must not create a task while asyncio.run() is already shutting down.
            holder["done"] = True

    def run() -> None:
        try:
            asyncio.run(pump())
        except BaseException as exc:  # e.g. loop creation failure: never hang the reader
            items.put(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="quoteflow-sse-client", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, Event):
                yield item
            elif isinstance(item, _End):
                return
            else:
                raise item
    finally:
        ready.wait()
        loop: asyncio.AbstractEventLoop | None = holder.get("loop")
        es: EventStream | None = holder.get("stream")
        if loop is not None and es is not None and thread.is_alive():
            stream_ = es

            def schedule_close() -> None:
                if not holder.get("done"):
                    loop.create_task(stream_.close())

            # call_soon_threadsafe, not run_coroutine_threadsafe: if the loop has just
            # finished it raises before any coroutine exists (none left un-awaited).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(schedule_close)
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - would mean close() hangs
            logger.warning("SSE client thread did not stop within 10 s")
