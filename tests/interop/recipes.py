"""Reconnect loops with ``Last-Event-ID`` for Python SSE clients that have none.

docs/clients.md shows these functions verbatim (tests/interop/test_table.py checks that),
and the interop suite runs them against a proxy that cuts the connection, so the
recipe a user copies is the one that was tested.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any


# --- recipe: httpx-sse ---
def httpx_sse_events(url: str) -> Iterator[Any]:
    """Every event of ``url`` with httpx-sse, reconnecting with Last-Event-ID."""
    import httpx
    from httpx_sse import connect_sse

    last_id, delay = None, 1.0
    with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(client, "GET", url, headers=headers) as source:
                    source.response.raise_for_status()
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            delay = sse.retry / 1000
                        if sse.id:
                            last_id = sse.id
                        yield sse
            except httpx.TransportError:
                pass  # dropped, reset or cut: reconnect below
            time.sleep(delay)


# --- end recipe ---


# --- recipe: sseclient-py ---
def sseclient_events(url: str) -> Iterator[Any]:
    """Every event of ``url`` with sseclient-py and requests, reconnecting."""
    import requests
    import sseclient

    last_id, delay = None, 1.0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            with requests.get(url, stream=True, headers=headers, timeout=(10, 60)) as resp:
                resp.raise_for_status()
                # chunk_size=None: hand over bytes as they arrive, not in 128-byte reads.
                for event in sseclient.SSEClient(resp.iter_content(chunk_size=None)).events():
                    if event.retry and event.retry.isdigit():
                        delay = int(event.retry) / 1000
                    if event.id:
                        last_id = event.id
                    yield event
        except requests.RequestException:
            pass  # dropped, reset or cut: reconnect below
        time.sleep(delay)


# --- end recipe ---


# --- recipe: aiohttp-sse-client ---
async def aiohttp_sse_client_events(url: str) -> AsyncIterator[Any]:
    """Every event of ``url`` with aiohttp-sse-client, reconnecting after any drop."""
    import asyncio

    import aiohttp
    from aiohttp_sse_client.client import EventSource

    last_id, delay = None, 1.0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with EventSource(url, headers=headers, max_connect_retry=0) as source:
                async for event in source:
                    if event.last_event_id:
                        last_id = event.last_event_id
                    yield event
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass  # dropped, reset or cut: reconnect below
        await asyncio.sleep(delay)


# --- end recipe ---
