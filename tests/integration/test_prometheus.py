"""A real Prometheus scraping real quoteflow processes: the series docs/observability.md
promises carry the values this test causes.

Set-up (module fixture): redis-server, ``quoteflow generate`` and two ``quoteflow serve
--broker redis://`` instances (A, B), plus one memory-broker ``quoteflow serve`` (single),
scraped every second by Debian's ``prometheus`` with a config made from
deploy/prometheus/prometheus.yml (its jobs and alert rules, our targets). The test then
opens streams, resumes one on the other instance, stalls a reader until it is dropped,
stops the single instance and then Redis, and reads every effect back through
Prometheus's HTTP API. The Grafana dashboard's queries are run against the same server.

Auth is off here: /metrics answers without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port, require_executable
from tests.integration.fakes import RawStream, run
from tests.redis_server import QuoteflowProcess, RedisServer, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(240)]

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "quoteflow.json"


@dataclass
class Stack:
    """The running parts: Prometheus's base URL, the processes by name, Redis."""

    prom: str
    redis: RedisServer
    procs: dict[str, QuoteflowProcess] = field(default_factory=dict)

    def port(self, name: str) -> int:
        port = self.procs[name].port
        assert port is not None
        return port

    def query(self, expr: str) -> dict[str, Any]:
        """``GET /api/v1/query``: the decoded answer (status, data)."""
        url = f"{self.prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: the answer says why
            answer = json.loads(exc.read())
        return answer

    def value(self, expr: str) -> float | None:
        """The single sample of an instant vector or scalar, None when there is none."""
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def await_value(
        self, expr: str, ok: Callable[[float], bool], what: str, timeout: float = 30.0
    ) -> float:
        """Poll ``expr`` until ``ok(value)``; a hang guard, not a speed requirement."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and ok(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"{what}: {expr} is {last} after {timeout} s")


def _prometheus_config(targets: dict[str, tuple[str, int]], workdir: Path) -> Path:
    """deploy/prometheus/prometheus.yml with a 1 s interval and the test's targets."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        job["static_configs"] = []
    for name, (job, port) in targets.items():
        jobs[job]["static_configs"].append(
            {"targets": [f"127.0.0.1:{port}"], "labels": {"name": name}}
        )
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _prometheus(config: Path, workdir: Path) -> Iterator[str]:
    binary = require_executable("prometheus")
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # hang guard
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited ({proc.returncode}):\n"
                    + (workdir / "prometheus.log").read_text()
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/-/ready", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus")
    red = RedisServer(workdir)
    red.start()
    try:
        with quoteflow_processes(workdir) as started:
            common = ("--seed", "2", "--tick-interval", "0.05")
            gen = QuoteflowProcess(
                workdir, "gen", "generate", "--broker", red.url, "--universe", "3", *common,
                "--port", "0",
            )  # fmt: skip
            a = QuoteflowProcess(
                workdir, "A", "serve", "--broker", red.url, "--port", "0", "--instance-id", "A"
            )
            b = QuoteflowProcess(
                workdir, "B", "serve", "--broker", red.url, "--port", "0", "--instance-id", "B"
            )
            # A fast, wide feed so that a reader that stalls passes --max-backlog quickly.
            single = QuoteflowProcess(
                workdir, "single", "serve", "--port", "0", "--universe", "200",
                "--tick-interval", "0.01", "--max-backlog", "65536",
            )  # fmt: skip
            procs = {"gen": gen, "A": a, "B": b, "single": single}
            started += procs.values()
            for p in procs.values():
                p.wait_ready()
            targets = {
                name: ("quoteflow-generator" if name == "gen" else "quoteflow", p.port or 0)
                for name, p in procs.items()
            }
            config = _prometheus_config(targets, workdir)
            with _prometheus(config, workdir) as base:
                yield Stack(prom=base, redis=red, procs=procs)
    finally:
        red.stop()


def _sel(name: str) -> str:
    return f'{{name="{name}"}}'


def test_prometheus_sees_the_activity_the_test_causes(stack: Stack) -> None:
    for name in stack.procs:
        stack.await_value(f"up{_sel(name)}", lambda v: v == 1, f"{name} scraped")
    stack.await_value(
        "count(ALERTS) or vector(0)", lambda v: v >= 0, "the shipped alert rules are loaded"
    )
    rules = json.loads(urllib.request.urlopen(stack.prom + "/api/v1/rules", timeout=10).read())
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"QuoteflowInstanceDown", "QuoteflowRedisDegraded"} <= names, names

    received: dict[str, int] = {}

    async def activity() -> None:
        # Three clients on A, each until it has seen a few events.
        clients = [
            await RawStream.open(stack.port("A"), "/stream?symbols=SYM0000") for _ in range(3)
        ]
        for c in clients:
            await c.read_until(lambda s: len(s.events) >= 3, timeout=30)
        received["A"] = sum(len(c.events) for c in clients)
        # One resume on B from A's id: a replay from the shared Redis stream.
        resume = clients[0].events[0].id
        resumed = await RawStream.open(
            stack.port("B"), "/stream?symbols=SYM0000", headers={"Last-Event-ID": str(resume)}
        )
        await resumed.read_until(lambda s: len(s.events) >= 2, timeout=30)
        # A reader that never reads, on the fast single instance: dropped as slow.
        stalled = await RawStream.open(stack.port("single"), "/stream", rcvbuf=4096)
        try:
            await asyncio.to_thread(
                stack.await_value,
                f"quoteflow_slow_consumer_disconnects_total{_sel('single')}",
                lambda v: v == 1,
                "one slow consumer dropped",
            )
            # While the streams are open: connections per instance.
            await asyncio.to_thread(
                stack.await_value, f"quoteflow_connections{_sel('A')}", lambda v: v == 3, "A's 3"
            )
            await asyncio.to_thread(
                stack.await_value, f"quoteflow_connections{_sel('B')}", lambda v: v == 1, "B's 1"
            )
        finally:
            stalled.abort()
            for c in [*clients, resumed]:
                await c.close()

    run(activity)

    stack.await_value(f"quoteflow_replays_total{_sel('B')}", lambda v: v == 1, "B's replay")
    stack.await_value(f"quoteflow_replays_total{_sel('A')}", lambda v: v == 0, "A: no replay")
    stack.await_value(
        f"quoteflow_events_delivered_total{_sel('A')}",
        lambda v: v >= received["A"],
        "events A's clients received",
    )
    stack.await_value(f"quoteflow_bytes_sent_total{_sel('A')}", lambda v: v > 0, "bytes A wrote")
    stack.await_value(
        'sum(quoteflow_events_published_total{name="gen", event="tick"})',
        lambda v: v >= 3,
        "ticks the generator published",
    )
    stack.await_value(
        f"quoteflow_generation_lag_seconds{_sel('gen')}", lambda v: v >= 0, "generation lag"
    )
    stack.await_value(
        f"quoteflow_delivery_latency_seconds_count{_sel('A')}",
        lambda v: v > 0,
        "delivery latency samples on A",
    )
    p99 = stack.await_value(
        "histogram_quantile(0.99, sum by (le) "
        f"(quoteflow_delivery_latency_seconds_bucket{_sel('A')}))",
        lambda v: v > 0,
        "p99 delivery latency",
    )
    assert p99 <= 10.0  # inside the histogram's buckets
    for name in ("A", "B", "gen"):
        stack.await_value(f"quoteflow_broker_up{_sel(name)}", lambda v: v == 1, f"{name}: Redis up")
    stack.await_value(f"quoteflow_connections{_sel('A')}", lambda v: v == 0, "A's streams closed")

    # An instance that goes away is down for Prometheus.
    stack.procs["single"].signal(signal.SIGTERM)
    assert stack.procs["single"].wait(30) == 0
    stack.await_value(f"up{_sel('single')}", lambda v: v == 0, "the stopped instance is down")

    # Redis goes away: every Redis-backed process reports its broker down.
    stack.redis.stop()
    for name in ("A", "B", "gen"):
        stack.await_value(
            f"quoteflow_broker_up{_sel(name)}", lambda v: v == 0, f"{name}: Redis down", 60
        )
    stack.await_value(
        f"quoteflow_broker_outages_total{_sel('A')}", lambda v: v >= 1, "A counted the outage"
    )


def _panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, Grafana variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            expr = re.sub(r"\$\{?instance\}?", ".*", expr)
            expr = re.sub(r"\$\{?job\}?", "quoteflow.*", expr)
            out.append((panel["title"], expr))
    return out


def test_every_dashboard_query_is_accepted_by_prometheus(stack: Stack) -> None:
    queries = _panel_queries()
    assert len(queries) >= 8
    for title, expr in queries:
        assert "$" not in expr, (title, expr)
        answer = stack.query(expr)
        assert answer["status"] == "success", (title, expr, answer)
