"""Bad requests get a 4xx (JSON where the app answers) and never disturb another stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from typing import Any

import pytest

from quoteflow.market import Market
from quoteflow.models import GARCH, GBM, MeanReversion
from tests.integration.fakes import (
    FakeSource,
    RawStream,
    payloads,
    request,
    run,
    serving,
    wait_for,
)

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


# ------------------------------------------------ issue 10, defects 3 and 4 (PUT /symbols)


def _market() -> Market:
    """GBM, mean reversion and GARCH symbols on a fast clock (the default dt per tick)."""
    return Market(
        {
            "GOOG": GBM(mu=0.05, sigma=0.3),
            "IBM": MeanReversion(kappa=2.0, theta=100.0, sigma=0.2),
            "MSFT": GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9),
        },
        seed=10,
        tick_interval=0.005,
        speed=0.25 / 252 / 0.005,  # dt of the default market: 0.25 s of a 1/252-year second
        bar_interval=None,
    )


def _tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR]


async def _prices_move(port: int, symbol: str, n: int = 20) -> list[float]:
    """``n`` ticks of ``symbol`` from a fresh stream; asserts they are finite, > 0, moving."""
    s = await RawStream.open(port, f"/stream?symbols={symbol}")
    await s.read_until(lambda st: len(payloads(st.events)) >= n)
    await s.close()
    ticks = payloads(s.events)[:n]
    prices = [t["price"] for t in ticks]
    for t in ticks:
        assert math.isfinite(t["price"]) and t["price"] > 0, t
        assert 0 < t["bid"] <= t["price"] <= t["ask"], t
    assert len(set(prices)) > 1, f"{symbol} frozen at {prices[0]}"
    return prices


def test_defect3_overflowing_put_is_400_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 10 defect 3: GBM ``{"sigma": 1e155}`` answered 500, yet applied half of it
    (GET showed the new sigma) and froze the price; deep nesting and a 400-digit integer
    gave 500 with a traceback. Now: 400 naming the problem, nothing applied."""
    bad: list[tuple[bytes, str]] = [
        (b'{"sigma": 1e155}', "sigma"),
        (b'{"mu": 1' + b"0" * 400 + b"}", "mu"),
        # (20,000 levels: deeper than the recursion limit, within the 64 KiB body limit)
        (b'{"sigma": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested"),
        (b"[" * 20_000 + b"]" * 20_000, "nested"),
        (b'{"sigma": [[[[0.3]]]]}', "sigma"),
        (b'{"sigma": null}', "sigma"),
        (b'{"sigma": true}', "sigma"),
        (b'{"sigma": {"value": 0.3}}', "sigma"),
        (b'{"sigma": NaN}', "NaN"),
        (b'{"sigma": Infinity}', "Infinity"),
        (b'"sigma"', "JSON object"),
        (b"0.3", "JSON object"),
    ]

    async def body() -> None:
        async with serving(_market()) as server:
            port = server.port
            assert port is not None
            _, before = await request(port, "GET", "/symbols")
            for payload, text in bad:
                status, err = await request(port, "PUT", "/symbols/GOOG", payload)
                assert status == 400, (payload[:40], status, err)
                assert text in err["error"], (payload[:40], err)
            status, after = await request(port, "GET", "/symbols")
            assert status == 200
            for name in after:
                assert after[name]["params"] == before[name]["params"], name
            await _prices_move(port, "GOOG")
            # and a valid change still applies
            status, ok = await request(port, "PUT", "/symbols/GOOG", b'{"sigma": 0.4}')
            assert status == 200 and ok["params"]["sigma"] == 0.4

    caplog.set_level(logging.INFO)
    run(body)
    assert _tracebacks(caplog.records) == []


# (symbol, body, the parameter the 400 must name)
EXTREME: list[tuple[str, bytes, str]] = [
    ("GOOG", b'{"mu": 1e300}', "mu"),
    ("GOOG", b'{"mu": 1e6}', "mu"),
    ("GOOG", b'{"mu": -1e6}', "mu"),
    ("GOOG", b'{"sigma": 1e6}', "sigma"),
    ("IBM", b'{"sigma": 1e6}', "sigma"),
    ("IBM", b'{"theta": 1e300}', "theta"),
    ("IBM", b'{"theta": 1e-300}', "theta"),
    ("MSFT", b'{"omega": 1e300}', "omega"),
    ("MSFT", b'{"scale": 1e-300}', "scale"),
    ("MSFT", b'{"scale": 1e-3}', "scale"),
    ("MSFT", b'{"mu": 1e300}', "mu"),
    ("GOOG", b'{"model": "garch", "scale": 1e-300}', "scale"),
]


def test_defect4_extreme_parameters_are_400_and_the_feed_stays_valid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 10 defect 4: ``mu=1e300``, ``mu=1e6``, meanrev ``sigma=1e6``, GARCH
    ``omega=1e300`` or ``scale=1e-300`` were accepted; the price went to inf (ticks vanished)
    or stuck at 0.0 with ask -0.0, sane parameters did not revive it, and ``GET /symbols``
    answered 500 for everyone. Now: 400 naming the parameter and its allowed range, the
    symbols keep streaming valid quotes, and /symbols is valid JSON."""

    async def body() -> None:
        async with serving(_market()) as server:
            port = server.port
            assert port is not None
            for symbol, payload, param in EXTREME:
                status, err = await request(port, "PUT", f"/symbols/{symbol}", payload)
                assert status == 400, (symbol, payload, status, err)
                assert f"parameter {param}" in err["error"], err
                assert "allowed" in err["error"], err
                assert err["symbol"] == symbol
            for symbol in ("GOOG", "IBM", "MSFT"):
                await _prices_move(port, symbol)
            status, symbols = await request(port, "GET", "/symbols")
            assert status == 200 and isinstance(symbols, dict)
            assert all(math.isfinite(symbols[s]["price"]) for s in symbols)
            # At the edge of its range (one e-fold per tick) a price leaves the streamable
            # range within ~25 ticks: the guard restarts it, counts it, nothing bad streams.
            status, ok = await request(port, "PUT", "/symbols/GOOG", b'{"mu": 1000}')
            assert status == 200, ok
            await _prices_move(port, "GOOG", n=60)
            status, text = await request(port, "GET", "/metrics")
            found = re.search(r"^quoteflow_prices_reseeded_total (\S+)$", text, flags=re.M)
            assert found and float(found.group(1)) > 0, text
            # sane values still go through
            for symbol, payload in (
                ("GOOG", b'{"mu": 0.5, "sigma": 1.5}'),
                ("IBM", b'{"sigma": 0.5}'),
                ("MSFT", b'{"omega": 0.05}'),
            ):
                status, ok = await request(port, "PUT", f"/symbols/{symbol}", payload)
                assert status == 200, ok
                await _prices_move(port, symbol)

    caplog.set_level(logging.INFO)
    run(body)
    assert _tracebacks(caplog.records) == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name != "tornado.access"  # (the 400s)
    ]
    assert len(warnings) <= 2 and all("price guard" in w for w in warnings), warnings
