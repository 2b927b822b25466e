"""``quoteflow generate`` and ``quoteflow serve --broker redis://`` as real processes:
the serving-only API, Redis restarted mid-stream, Redis down at start."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from quoteflow.client import Event, stream
from tests.conftest import free_port
from tests.redis_server import QuoteflowProcess, RedisServer, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(120)]

SYMBOL = "SYM0001"
STREAM_KEY = "quoteflow:events"


def http(
    method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert m, f"{name} missing"
    return float(m.group(1))


def poll(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def apoll(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def generator(workdir: Path, url: str) -> QuoteflowProcess:
    return QuoteflowProcess(
        workdir,
        "generator",
        "generate",
        "--broker",
        url,
        "--universe",
        "3",
        "--seed",
        "2",
        "--tick-interval",
        "0.05",
        "--port",
        "0",
    )


def server(workdir: Path, url: str, name: str = "A", *extra: str) -> QuoteflowProcess:
    return QuoteflowProcess(
        workdir,
        name,
        "serve",
        "--broker",
        url,
        "--port",
        "0",
        "--instance-id",
        name,
        "--instance-header",
        "--heartbeat",
        "0.3",
        *extra,
    )


@contextmanager
def producer_and_server(workdir: Path) -> Iterator[tuple[RedisServer, QuoteflowProcess, str, str]]:
    red = RedisServer(workdir)
    red.start()
    try:
        with quoteflow_processes(workdir) as procs:
            gen = generator(workdir, red.url)
            srv = server(workdir, red.url)
            procs += [gen, srv]
            gen.wait_ready()
            srv.wait_ready()
            gen_base = f"http://127.0.0.1:{gen.port}"
            base = f"http://127.0.0.1:{srv.port}"
            # Until the instance has heard from the producer it answers /stream with 503
            # (symbols not known yet; a client retries): wait for that to pass.
            poll(lambda: SYMBOL in http("GET", base + "/symbols")[1], "the producer's symbols")
            yield red, gen, gen_base, base
            # Graceful exits, no traceback anywhere.
            for p in (srv, gen):
                p.signal(signal.SIGTERM)
                assert p.wait(15) == 0, p.log()
                assert "Traceback" not in p.log(), p.log()
    finally:
        red.stop()


def test_serving_only_instance_knows_symbols_snapshot_and_forwards_put(tmp_path: Path) -> None:
    with producer_and_server(tmp_path) as (_red, _gen, gen_base, base):
        # Symbols come from the producer's catalog (the instance has no market).
        poll(lambda: http("GET", base + "/symbols")[1].get(SYMBOL, {}).get("model"), "catalog")
        status, symbols, headers = http("GET", base + "/symbols")
        assert status == 200 and headers["X-Quoteflow-Instance"] == "A"
        assert sorted(symbols) == ["SYM0000", "SYM0001", "SYM0002"]
        assert symbols[SYMBOL]["model"] == "gbm" and "sigma" in symbols[SYMBOL]["params"]

        poll(
            lambda: SYMBOL in http("GET", base + f"/snapshot?symbols={SYMBOL}")[1]["quotes"], "tick"
        )
        status, snap, _ = http("GET", base + f"/snapshot?symbols={SYMBOL.lower()}")
        assert status == 200 and list(snap["quotes"]) == [SYMBOL]
        assert re.fullmatch(r"\d+-\d+", snap["last_id"])

        status, err, _ = http("GET", base + "/stream?symbols=SYM0001,NOPE")
        assert status == 400 and "NOPE" in err["error"]
        assert err["known_symbols"] == ["SYM0000", "SYM0001", "SYM0002"]

        # PUT on a serving instance is applied by the producer, through Redis.
        status, changed, _ = http("PUT", base + f"/symbols/{SYMBOL}", {"sigma": 0.5})
        assert status == 200 and changed["params"]["sigma"] == 0.5, changed
        poll(
            lambda: http("GET", base + f"/symbols/{SYMBOL}")[1]["params"]["sigma"] == 0.5,
            "the new parameters in the catalog",
        )
        status, err, _ = http("PUT", base + f"/symbols/{SYMBOL}", {"sigma": -1})
        assert status == 400 and "sigma" in err["error"]
        status, err, _ = http("PUT", base + "/symbols/NOPE", {"sigma": 1})
        assert status == 404

        # The producer's own endpoints: health and metrics only.
        status, health, _ = http("GET", gen_base + "/healthz")
        assert status == 200 and health["broker"]["redis"] == "ok"
        assert re.fullmatch(r"\d+-\d+", health["last_event_id"])  # the newest id it wrote
        assert metric(gen_base, "quoteflow_broker_up") == 1
        assert http("GET", gen_base + "/stream")[0] == 404
        status, health, _ = http("GET", base + "/healthz")
        assert status == 200 and health["status"] == "ok" and health["instance"] == "A"


def test_redis_restart_mid_stream_clients_stay_and_nothing_published_after_is_lost(
    tmp_path: Path,
) -> None:
    with producer_and_server(tmp_path) as (red, _gen, gen_base, base):

        async def main() -> None:
            got: list[Event] = []
            async with stream(
                base + "/stream", symbols=[SYMBOL], heartbeat_timeout=5.0, backoff_max=0.5
            ) as s:

                async def collect() -> None:
                    async for ev in s:
                        got.append(ev)

                task = asyncio.create_task(collect())
                await apoll(lambda: len(got) >= 20, "20 events")

                red.kill()
                # Every process notices and says so: readiness fails, the gauge drops.
                await apoll(lambda: http("GET", base + "/healthz")[0] == 503, "degraded A")
                _, health, _ = http("GET", base + "/healthz")
                assert health["status"] == "degraded" and health["broker"]["redis"] == "down"
                assert http("GET", base + "/livez")[0] == 200  # liveness: no restart
                assert metric(base, "quoteflow_broker_up") == 0
                await apoll(lambda: http("GET", gen_base + "/healthz")[0] == 503, "degraded gen")
                # Hold the outage for two seconds of feed (120 events in the producer's
                # outbox) so that a loss would show as a gap far beyond the 50 ms ticks.
                await apoll(
                    lambda: metric(gen_base, "quoteflow_broker_outbox_events") >= 120, "outbox"
                )
                during = s.bytes_received
                await apoll(lambda: s.bytes_received > during, "a heartbeat during the outage")
                assert s.reconnects == 0 and s.connected  # the client stayed connected
                n_before = len(got)

                red.start()  # same port, empty: the worst case (no persistence)
                await apoll(lambda: http("GET", base + "/healthz")[0] == 200, "A healthy again")
                await apoll(lambda: len(got) >= n_before + 60, "60 events after the restart")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                assert s.reconnects == 0

            assert metric(base, "quoteflow_broker_outages_total") >= 1
            ids = [ev.id or "" for ev in got]
            keys = [tuple(int(x) for x in i.split("-")) for i in ids]
            assert keys == sorted(set(keys)), "ids not strictly increasing"
            ticks = [json.loads(ev.data) for ev in got if ev.event == "tick"]
            stamps = [t["ts_ns"] if "ts_ns" in t else t["ts"] for t in ticks]
            assert len(set(stamps)) == len(stamps), "a tick arrived twice"
            # Nothing lost, even while Redis was down: the producer held the events.
            # Ticks are 50 ms apart and the outage lasted over two seconds; 1 s tolerates
            # a producer stalled by a busy machine and still catches any lost stretch.
            times = [
                datetime.fromisoformat(t["ts"].replace("Z", "+00:00")).timestamp() for t in ticks
            ]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert max(gaps) < 1.0, max(gaps)
            # Everything in the restarted Redis reached the client, in order.
            client = redis.Redis.from_url(red.url)
            try:
                rows = client.xrange(STREAM_KEY, max=ids[-1])
            finally:
                client.close()
            feed = [r[0].decode() for r in rows if r[1][b"s"].decode() == SYMBOL]
            assert feed and ids[-len(feed) :] == feed

        asyncio.run(asyncio.wait_for(main(), 90))


def test_serving_instance_started_before_redis_waits_then_serves(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with quoteflow_processes(tmp_path) as procs:
        srv = server(tmp_path, url)
        procs.append(srv)
        srv.wait_ready()
        base = f"http://127.0.0.1:{srv.port}"
        status, health, _ = http("GET", base + "/healthz")
        assert status == 503 and health["status"] == "degraded"
        status, err, _ = http("GET", base + f"/stream?symbols={SYMBOL}")
        assert status == 503 and "not known yet" in err["error"]
        red = RedisServer(tmp_path, port=port)
        red.start()
        try:
            gen = generator(tmp_path, url)
            procs.append(gen)
            gen.wait_ready()
            poll(lambda: http("GET", base + "/healthz")[0] == 200, "A healthy")
            poll(lambda: SYMBOL in http("GET", base + "/symbols")[1], "symbols")
        finally:
            for p in procs:
                p.signal(signal.SIGTERM)
                assert p.wait(15) == 0, p.log()
            red.stop()
        assert "unreachable" in srv.log()  # logged clearly, once per outage
        assert srv.log().count("unreachable") == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("serve", "--broker", "redis://127.0.0.1:1/0", "--seed", "3"), "--seed"),
        (("serve", "--broker", "redis://127.0.0.1:1/0", "--universe", "3"), "generate"),
        (("generate", "--broker", "memory"), "redis://"),
        (("generate", "--universe", "2"), "--broker"),
        (("serve", "--cors-origin", "example.com"), "CORS origin"),
        (("serve", "--broker", "redis://127.0.0.1:1/0", "--catch-up-timeout", "0"), "catch-up"),
        (("serve", "--broker", "redis://127.0.0.1:1/0", "--catch-up-timeout", "inf"), "finite"),
    ],
)
def test_bad_scaleout_options_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    from quoteflow.cli import main

    code = main(list(args))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("quoteflow: error:"), err
    assert needle in lines[0]


def test_defect3_bad_put_on_a_serving_instance_is_400_and_the_producer_keeps_answering(
    tmp_path: Path,
) -> None:
    """Issue 10 defect 3 (Redis): ``PUT {"sigma": 1e155}`` to a serving instance silently
    killed the producer's control task, so every later PUT answered 503 until restart. Now
    the producer answers the error (the instance returns 400 with its message), logs it, and
    keeps applying changes."""
    with producer_and_server(tmp_path) as (_red, gen, _gen_base, base):
        for body in ({"sigma": 1e155}, {"mu": 1e300}, {"mu": 10**400}, {"sigma": [[1]]}):
            status, err, _ = http("PUT", base + f"/symbols/{SYMBOL}", body)
            assert status == 400, (body, status, err)
            assert "sigma" in err["error"] or "mu" in err["error"], err
        status, err, _ = http("PUT", base + f"/symbols/{SYMBOL}", {"sigma": 1e155})
        assert status == 400 and "allowed" in err["error"], err
        poll(lambda: "refused parameter change" in gen.log(), "the producer's log line")
        status, changed, _ = http("PUT", base + f"/symbols/{SYMBOL}", {"sigma": 0.45})
        assert status == 200 and changed["params"]["sigma"] == 0.45, changed
        status, symbols, _ = http("GET", base + "/symbols")
        assert status == 200 and symbols[SYMBOL]["model"] == "gbm"
