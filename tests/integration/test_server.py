"""The quote server over real sockets: wire format, endpoints, limits, metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quoteflow.server.app import ServerSettings
from quoteflow.server.runner import QuoteServer
from tests.conftest import free_port, require_executable
from tests.integration.fakes import FakeSource, RawStream, payloads, request, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from Prometheus text."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await request(port, "GET", "/metrics")
    assert status == 200
    assert isinstance(text, str)
    return metric_values(text)


#: curl's own --max-time is 1 s; past this the test fails instead of hanging.
CURL_HANG_GUARD_S = 10.0


def test_curl_sees_retry_then_spec_formatted_events_within_a_second() -> None:
    curl = require_executable("curl")
    source = FakeSource(interval=0.01)
    with QuoteServer(source, port=free_port()) as server:
        # curl stops itself after 1 s; the subprocess timeout is only a hang guard.
        proc = subprocess.run(
            [curl, "-sN", "-i", "--max-time", "1", server.stream_url + "?symbols=AAA,bbb"],
            capture_output=True,
            check=False,
            timeout=CURL_HANG_GUARD_S,
        )
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert "content-type: text/event-stream; charset=utf-8" in headers
    assert "cache-control: no-cache" in headers
    assert "x-accel-buffering: no" in headers
    # The retry line has no blank line after it (issue 18: httpx-sse reports a data-less
    # block as an empty event): it is the first line of the first event's block.
    assert body.startswith(b"retry: 2000\nid: ")
    blocks = body[len(b"retry: 2000\n") :].split(b"\n\n")
    complete = blocks[:-1]  # the last block may be cut by --max-time
    assert len(complete) >= 10, body[:300]
    last = 0
    for block in complete:
        lines = block.split(b"\n")
        assert [ln.split(b":", 1)[0] for ln in lines] == [b"id", b"event", b"data"], block
        ev_id = int(lines[0][len(b"id: ") :])
        assert ev_id > last
        last = ev_id
        assert lines[1] == b"event: tick"
        data = json.loads(lines[2][len(b"data: ") :])
        assert data["symbol"] in {"AAA", "BBB"}
        assert data["seq"] == ev_id


def test_unknown_symbol_is_400_json_naming_known_symbols() -> None:
    async def body() -> None:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            status, payload = await request(server.port, "GET", "/stream?symbols=AAA,NOPE")
            assert status == 400
            assert "NOPE" in payload["error"]
            assert payload["known_symbols"] == ["AAA", "BBB", "CCC"]
            status, payload = await request(server.port, "GET", "/stream?events=tick,quote")
            assert status == 400
            assert "quote" in payload["error"]
            assert "known_symbols" in payload
            status, payload = await request(server.port, "GET", "/snapshot?symbols=ZZZ")
            assert status == 400 and "ZZZ" in payload["error"]

    run(body)


def test_endpoints_snapshot_symbols_put_healthz_dashboard() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.005)
        async with serving(source) as server:
            port = server.port
            assert port is not None
            await wait_for(lambda: source.k >= 3, what="three batches")
            status, snap = await request(port, "GET", "/snapshot?symbols=BBB")
            assert status == 200
            assert list(snap["quotes"]) == ["BBB"]
            assert snap["quotes"]["BBB"]["symbol"] == "BBB"
            assert int(snap["last_id"]) >= snap["quotes"]["BBB"]["seq"]

            status, described = await request(port, "GET", "/symbols")
            assert status == 200 and described["AAA"]["params"] == {"sigma": 0.2}

            status, changed = await request(port, "PUT", "/symbols/aaa", b'{"sigma": 0.5}')
            assert status == 200
            assert changed == {"symbol": "AAA", "params": {"sigma": 0.5}}
            assert source.params["AAA"]["sigma"] == 0.5

            status, err = await request(port, "PUT", "/symbols/AAA", b"{not json")
            assert status == 400 and "invalid JSON" in err["error"]
            status, err = await request(port, "PUT", "/symbols/AAA", b'{"sigma": -1}')
            assert status == 400 and "sigma" in err["error"]
            status, err = await request(port, "PUT", "/symbols/AAA", b'{"kappa": 1}')
            assert status == 400 and "kappa" in err["error"]
            status, err = await request(port, "PUT", "/symbols/NOPE", b'{"sigma": 1}')
            assert status == 404 and err["known_symbols"] == ["AAA", "BBB", "CCC"]

            status, health = await request(port, "GET", "/healthz")
            assert status == 200
            assert health["status"] == "ok"
            assert health["connections"] == 0
            assert int(health["last_event_id"]) >= 9

            status, page = await request(port, "GET", "/")
            assert status == 200 and "<html" in page.lower()
            status, err = await request(port, "GET", "/no/such/path")
            assert status == 404 and "/no/such/path" in err["error"]
            status, err = await request(port, "POST", "/stream", b"")
            assert status == 405 and "error" in err

    run(body)


def test_bokehjs_is_served_locally() -> None:
    async def body() -> None:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            status, js = await request(server.port, "GET", "/static/bokeh/js/bokeh.min.js")
            assert status == 200
            assert isinstance(js, str) and len(js) > 100_000

    run(body)


def test_metrics_count_connections_events_and_bytes() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.005)
        async with serving(source) as server:
            port = server.port
            assert port is not None
            s1 = await RawStream.open(port, "/stream")
            s2 = await RawStream.open(port, "/stream?symbols=AAA")
            await s1.read_until(lambda s: len(s.events) >= 30)
            await s2.read_until(lambda s: len(s.events) >= 10)
            m = await scrape(port)
            assert m[("quoteflow_connections", ())] == 2
            assert m[("quoteflow_streams_opened_total", ())] == 2
            assert m[("quoteflow_events_published_total", (("event", "tick"),))] >= 30
            # delivered/bytes are counted when a write completes: at least what we read
            assert m[("quoteflow_events_delivered_total", ())] >= 40
            assert m[("quoteflow_bytes_sent_total", ())] >= len(s1.raw) + len(s2.raw) - 65536
            assert m[("quoteflow_delivery_latency_seconds_count", ())] >= 1
            assert ("quoteflow_generation_lag_seconds", ()) in m
            await s1.close()
            await s2.close()
            await wait_for(lambda: not server.state.streams, what="streams to close")
            m = await scrape(port)
            assert m[("quoteflow_connections", ())] == 0
            # What stays is the /history store's own subscription (quoteflow/history.py).
            assert m[("quoteflow_subscriptions", ())] == 1

    run(body)


def test_max_connections_gives_503_json_and_frees_up() -> None:
    async def body() -> None:
        settings = ServerSettings(max_connections=2)
        async with serving(FakeSource(), settings=settings) as server:
            port = server.port
            assert port is not None
            a = await RawStream.open(port)
            b = await RawStream.open(port)
            assert (a.status, b.status) == (200, 200)
            status, err = await request(port, "GET", "/stream")
            assert status == 503 and "too many connections" in err["error"]
            m = await scrape(port)
            assert m[("quoteflow_streams_rejected_total", (("reason", "max_connections"),))] == 1
            await a.close()
            await wait_for(lambda: len(server.state.streams) == 1, what="a slot to free")
            c = await RawStream.open(port)
            assert c.status == 200
            await b.close()
            await c.close()

    run(body)


def test_heartbeat_on_an_idle_filtered_stream_only() -> None:
    async def body() -> None:
        # No bars ever: a bar-only stream is idle and must get keepalives; a tick stream
        # is busy and must not.
        settings = ServerSettings(heartbeat=0.3)
        async with serving(FakeSource(interval=0.01), settings=settings) as server:
            assert server.port is not None
            idle = await RawStream.open(server.port, "/stream?events=bar")
            busy = await RawStream.open(server.port, "/stream?events=tick")
            await idle.read_until(lambda s: s.raw.count(b": keepalive\n") >= 2, timeout=5)
            await busy.read_until(lambda s: len(s.events) >= 100, timeout=5)
            assert idle.events == []
            # Bare lines, no blank line after either (issue 18: no data-less blocks).
            assert idle.raw.startswith(b"retry: 2000\n: keepalive\n: keepalive\n")
            assert b"keepalive" not in busy.raw
            await idle.close()
            await busy.close()

    run(body)


def _strip_times(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k not in ("ts", "ts_ns", "start", "end", "sim_ts")}


def test_same_seed_same_payloads_on_two_servers() -> None:
    from quoteflow.market import Market

    async def collect(seed: int) -> list[tuple[str, dict[str, Any]]]:
        market = Market.universe(3, seed=seed, tick_interval=0.01, bar_interval=0.05)
        async with serving(market) as server:
            assert server.port is not None
            # lastEventId=0 replays from the first event, whenever we connect
            s = await RawStream.open(server.port, "/stream?lastEventId=0")
            await s.read_until(lambda st: len(st.events) >= 60)
            await s.close()
        return [(e.event, _strip_times(json.loads(e.data))) for e in s.events[:60]]

    async def body() -> None:
        a = await collect(11)
        b = await collect(11)
        c = await collect(12)
        assert a == b
        assert {ev for ev, _ in a} == {"tick", "bar"}
        assert [p["seq"] for _, p in a] == list(range(1, 61))
        assert a != c

    run(body)


def test_the_real_client_reads_the_stream() -> None:
    from quoteflow.client import stream

    async def body() -> None:
        async with serving(FakeSource(interval=0.005)) as server:
            got = []
            async with asyncio.timeout(10):
                async for ev in stream(server.stream_url, symbols=["CCC"]):
                    got.append(ev)
                    if len(got) >= 5:
                        break
            assert [json.loads(e.data)["symbol"] for e in got] == ["CCC"] * 5
            assert got[0].retry == 2000
            ticks = payloads(got)
            assert [t["n"] for t in ticks] == list(range(ticks[0]["n"], ticks[0]["n"] + 5))

    run(body)


SECRET = "test-secret-for-the-server-0123456789"


def test_auth_tokens_limit_symbols_admin_and_expiry() -> None:
    from quoteflow.server.auth import mint_token

    async def body() -> None:
        settings = ServerSettings(auth_secret=SECRET)
        async with serving(FakeSource(interval=0.005), settings=settings) as server:
            port = server.port
            assert port is not None
            status, err = await request(port, "GET", "/stream")
            assert status == 401 and "authentication required" in err["error"]
            status, err = await request(
                port, "GET", "/stream", headers={"Authorization": "Bearer x.y.z"}
            )
            assert status == 401 and "invalid token" in err["error"]
            wrong = mint_token("wrong-secret-" + SECRET)
            status, err = await request(port, "GET", f"/snapshot?access_token={wrong}")
            assert status == 401 and "signature" in err["error"]

            only_a = mint_token(SECRET, symbols=["AAA"])
            status, err = await request(port, "GET", f"/stream?symbols=BBB&access_token={only_a}")
            assert status == 403 and "BBB" in err["error"]
            s = await RawStream.open(port, "/stream", {"Authorization": f"Bearer {only_a}"})
            await s.read_until(lambda st: len(st.events) >= 5)
            await s.close()
            assert {json.loads(e.data)["symbol"] for e in s.events} == {"AAA"}

            status, err = await request(
                port, "PUT", "/symbols/AAA", b'{"sigma": 1}', {"Cookie": f"access_token={only_a}"}
            )
            assert status == 403 and "admin" in err["error"]
            admin = mint_token(SECRET, admin=True)
            status, ok = await request(
                port, "PUT", "/symbols/AAA", b'{"sigma": 1}', {"Authorization": f"Bearer {admin}"}
            )
            assert status == 200 and ok["params"] == {"sigma": 1}
            # health stays open; /metrics needs a token by default when auth is on
            assert (await request(port, "GET", "/healthz"))[0] == 200
            assert (await request(port, "GET", "/metrics"))[0] == 401
            status, _ = await request(port, "GET", f"/metrics?access_token={admin}")
            assert status == 200

            short = mint_token(SECRET, ttl=1.5)
            s = await RawStream.open(port, f"/stream?access_token={short}")
            await s.read_until(lambda st: st.eof, timeout=10)  # ends cleanly at expiry
            await s.close()
            assert len(s.events) > 0
            status, err = await request(port, "GET", f"/stream?access_token={short}")
            assert status == 401 and "expired" in err["error"]

    run(body)


def test_stop_ends_streams_with_a_clean_eof_and_closes_the_source() -> None:
    async def body() -> None:
        source = FakeSource(interval=0.005)
        server = QuoteServer(source, port=0)
        await server.start()
        assert server.port is not None
        streams = [await RawStream.open(server.port, "/stream") for _ in range(3)]
        for s in streams:
            await s.read_until(lambda st: len(st.events) >= 6)
        readers = [
            asyncio.create_task(s.read_until(lambda st: st.eof, timeout=10)) for s in streams
        ]
        await server.stop()
        await asyncio.gather(*readers)  # a reset would raise ConnectionResetError here
        assert source.closed
        for s in streams:
            ids = [int(e.id or 0) for e in s.events]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            await s.close()
        with pytest.raises(OSError):
            await request(server.port, "GET", "/healthz")  # no longer listening

    run(body)


def test_symbols_shows_nu_only_for_student_t_garch() -> None:
    from quoteflow.market import Market
    from quoteflow.models import GARCH

    market = Market(
        symbols={"NORM": GARCH(dist="normal"), "FAT": GARCH(dist="t", nu=5.0)},
        s0={"NORM": 100.0, "FAT": 100.0},
        seed=1,
    )

    async def body() -> None:
        async with serving(market) as server:
            assert server.port is not None
            status, described = await request(server.port, "GET", "/symbols")
            assert status == 200
            assert described["NORM"]["params"]["dist"] == "normal"
            assert "nu" not in described["NORM"]["params"]
            assert described["FAT"]["params"]["nu"] == 5.0

    run(body)
