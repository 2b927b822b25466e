"""Bad requests get a 4xx (JSON where the app answers) and never disturb another stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest

from tests.integration.fakes import FakeSource, RawStream, request, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TEN_K = ",".join(f"S{i:05d}" for i in range(10_000))

# (method, path, headers, body, expected status, text the JSON error must contain)
CASES: list[tuple[str, str, dict[str, str], bytes | None, int, str]] = [
    ("GET", "/stream?symbols=NOPE", {}, None, 400, "NOPE"),
    ("GET", "/stream?symbols=%ZZ", {}, None, 400, "%ZZ"),
    ("GET", "/stream?symbols=%ff%fe", {}, None, 400, "Invalid unicode"),
    ("GET", "/stream?%%%&&=&symbols=AAA,,%20,NOPE", {}, None, 400, "NOPE"),
    ("GET", "/stream?events=quote", {}, None, 400, "quote"),
    ("GET", "/stream?events=tick&events=reset", {}, None, 400, "reset"),
    ("GET", f"/stream?symbols={TEN_K}", {}, None, 400, "too many symbols"),
    ("GET", "/stream", {"Last-Event-ID": "abc"}, None, 400, "malformed event id"),
    ("GET", "/stream", {"Last-Event-ID": "-1"}, None, 400, "malformed event id"),
    ("GET", "/stream", {"Last-Event-ID": "9" * 50}, None, 400, "malformed event id"),
    (
        "GET",
        "/stream",
        {"Last-Event-ID": "\u0663".encode().decode("latin-1")},
        None,
        400,
        "malformed",
    ),
    ("GET", "/stream?lastEventId=1e3", {}, None, 400, "malformed event id"),
    ("GET", "/snapshot?symbols=AAA,NOPE", {}, None, 400, "NOPE"),
    ("PUT", "/symbols/AAA", {}, b"{not json", 400, "invalid JSON"),
    ("PUT", "/symbols/AAA", {}, b"\xff\xfe", 400, "invalid JSON"),
    ("PUT", "/symbols/AAA", {}, b"[1, 2]", 400, "JSON object"),
    ("PUT", "/symbols/AAA", {}, b"{}", 400, "JSON object"),
    ("PUT", "/symbols/AAA", {}, b'{"sigma": "high"}', 400, "sigma"),
    ("PUT", "/symbols/AAA", {}, b'{"nu": 3}', 400, "nu"),
    ("PUT", "/symbols/NOPE", {}, b'{"sigma": 1}', 404, "NOPE"),
    ("PUT", "/symbols/%ff", {}, b'{"sigma": 1}', 400, "Invalid unicode"),
    ("DELETE", "/symbols/AAA", {}, None, 405, "Method Not Allowed"),
    ("GET", "/nowhere", {}, None, 404, "/nowhere"),
    ("GET", "/static/../../../etc/passwd", {}, None, 403, "Forbidden"),
]


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(10):
            try:
                return await reader.read()
            except ConnectionError:
                return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _ids_contiguous(stream: RawStream) -> list[int]:
    ids = [int(e.id or 0) for e in stream.events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "gap or duplicate in the stream"
    return ids


def test_bad_requests_are_4xx_json_while_a_stream_keeps_flowing() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.003)
        async with serving(source) as server:
            port = server.port
            assert port is not None
            watcher = await RawStream.open(port, "/stream")
            reading = asyncio.create_task(
                watcher.read_until(lambda s: s.eof or len(s.events) >= 10**9, timeout=120)
            )
            results: list[tuple[int, Any]] = []
            for method, path, headers, payload, _, _ in CASES:
                results.append(await request(port, method, path, payload, headers))
            # Transport-level abuse: oversized headers, garbage, an oversized body.
            huge = await raw_exchange(
                port,
                b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
                + b"a" * 200_000
                + b"\r\n\r\n",
            )
            beyond = await raw_exchange(
                port, b"GET /stream HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 400_000 + b"\r\n\r\n"
            )
            garbage = await raw_exchange(port, b"\x00\x01GARBAGE\r\n\r\n")
            fat = await raw_exchange(
                port,
                b"PUT /symbols/AAA HTTP/1.0\r\nContent-Length: 10000000\r\n\r\n" + b"{" * 100_000,
            )
            # The stream goes on: more events after all of that, and no gap.
            n = len(watcher.events)
            await wait_for(
                lambda: len(watcher.events) >= n + 20 or reading.done(), what="more events"
            )
            assert not reading.done(), "the stream ended"
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await watcher.close()
            assert source.params["AAA"] == {"sigma": 0.2}  # no bad PUT changed anything
            status, health = await request(port, "GET", "/healthz")
            assert status == 200 and health["status"] == "ok"

        for (method, path, _, _, want_status, want_text), (status, got) in zip(
            CASES, results, strict=True
        ):
            where = f"{method} {path[:60]}"
            assert status == want_status, (where, status, got)
            assert isinstance(got, dict), (where, got)
            assert want_text in json.dumps(got), (where, got)
            if path.startswith("/stream") and status == 400:
                assert got["known_symbols"] == ["AAA", "BBB", "CCC"], where
        # Header fields over 64 KiB get a JSON 431; beyond the transport limit (256 KiB)
        # tornado closes the connection without a status line; garbage gets its plain 400;
        # a body over max_body_size is refused before it is read.
        assert huge.startswith(b"HTTP/1.1 431"), huge[:80]
        body = json.loads(huge.split(b"\r\n\r\n", 1)[1])
        assert "request header fields too large" in body["error"]
        assert beyond == b""
        assert garbage.startswith(b"HTTP/1.1 400")
        assert not fat.startswith(b"HTTP/1.0 200") and not fat.startswith(b"HTTP/1.1 200")
        _ids_contiguous(watcher)

    run(body)


def test_last_event_id_header_wins_over_query_parameter() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.002, max_batches=20)
        async with serving(source) as server:
            assert server.port is not None
            await wait_for(lambda: source.k == 20, what="all 60 events published")
            s = await RawStream.open(server.port, "/stream?lastEventId=0", {"Last-Event-ID": "30"})
            await s.read_until(lambda st: len(st.events) >= 30)
            await s.close()
        assert [int(e.id or 0) for e in s.events] == list(range(31, 61))

    run(body)


class _BrokenSource(FakeSource):
    def describe(self) -> dict[str, dict[str, Any]]:
        raise RuntimeError("boom")


def test_unexpected_exception_is_json_500_and_streams_survive() -> None:
    async def body() -> None:
        async with serving(_BrokenSource(interval=0.003)) as server:
            assert server.port is not None
            s = await RawStream.open(server.port, "/stream?symbols=AAA")
            await s.read_until(lambda st: len(st.events) >= 3)
            status, err = await request(server.port, "GET", "/symbols")
            assert status == 500
            assert err == {"error": "internal server error; see the server log"}
            n = len(s.events)
            await s.read_until(lambda st: len(st.events) >= n + 5)
            await s.close()
        ids = [int(e.id or 0) for e in s.events]
        assert ids == list(range(ids[0], ids[0] + 3 * len(ids), 3))  # AAA every 3rd id

    run(body)


# ------------------------------------------------------------- defects 7, 8 (issue 10)


def _static_errors(paths: list[str]) -> list[tuple[int, Any]]:
    async def body() -> list[tuple[int, Any]]:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            out = [await request(server.port, "GET", p) for p in paths]
            # The page itself is still served.
            status, page = await request(server.port, "GET", "/static/index.html")
            assert status == 200 and "<html" in page.lower()
            return out

    results: list[list[tuple[int, Any]]] = []

    async def main() -> None:
        results.append(await body())

    run(main)
    return results[0]


def _no_traceback(caplog: pytest.LogCaptureFixture, *words: str) -> None:
    assert "Traceback" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    for word in words:
        assert word not in caplog.text, caplog.text


def test_defect7_static_bad_unicode_is_a_json_400_not_an_attribute_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    results = _static_errors(["/static/%ff", "/static/bokeh/%ff%fe", "/static/nope.js"])
    (s1, e1), (s2, e2), (s3, e3) = results
    assert (s1, s2) == (400, 400), results
    assert isinstance(e1, dict) and "Invalid unicode" in e1["error"], e1
    assert isinstance(e2, dict) and "Invalid unicode" in e2["error"], e2
    assert s3 == 404 and isinstance(e3, dict) and e3["error"], results
    _no_traceback(caplog, "AttributeError", "lists_symbols", "write_error")


def test_defect8_static_nul_byte_is_a_json_400_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    results = _static_errors(
        ["/static/index.html%00.js", "/static/%00", "/static/bokeh/x%00y", "/static/a%0Ab"]
    )
    for status, err in results:
        assert status == 400, results
        assert isinstance(err, dict) and "control characters" in err["error"], results
    _no_traceback(caplog, "ValueError", "embedded null byte")
