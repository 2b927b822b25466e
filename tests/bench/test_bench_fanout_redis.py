"""Smoke run of ``quoteflow bench fanout --quick --broker redis``: the scale-out path
(redis-server, ``quoteflow generate``, two ``quoteflow serve --broker``, nginx) delivers
every event to every client, in order, with no loss.

No timing is asserted (machines are noisy); the numbers live in benchmarks/README.md.
redis-server, nginx and go are required parts: missing in CI is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quoteflow.broker.redis.producer import XADD_BATCH_LUA, pack_xadd_batch
from tests.conftest import ROOT, require_executable

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.redis]


def test_quick_fanout_on_redis_delivers_without_loss(tmp_path: Path) -> None:
    require_executable("redis-server")
    require_executable("nginx")
    require_executable("go", "golang-go")
    proc = subprocess.run(
        [sys.executable, "-m", "quoteflow", "bench", "fanout", "--quick", "--broker", "redis",
         "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    reports = sorted(tmp_path.glob("fanout-*.json"))
    assert reports, f"no report written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(reports[-1].read_text())
    results = {r["server"]: r for r in report["scenarios"]["quick"]["results"]}
    assert set(results) == {"quoteflow memory", "quoteflow redis + nginx"}, results
    for name, r in results.items():
        assert "error" not in r, f"{name}: {r.get('error')}"
        summary = {k: r[k] for k in ("connected", "events_window", "lost_events", "disconnected")}
        assert r["connected"] == r["connections"] == 20, f"{name}: {summary}"
        assert r["events_window"] > 0 and r["latency"]["samples"] > 0, f"{name}: {summary}"
        assert r["lost_events"] == 0 and r["out_of_order"] == 0, f"{name}: {summary}"
        assert r["disconnected"] == 0, f"{name}: {summary}"
    redis_run = results["quoteflow redis + nginx"]
    stats = redis_run["redis_stats"]
    # The events really went through Redis, and the bar archive wrote to it.
    assert stats["published_per_second"] > 0 and stats["stream_length"] > 0, stats
    assert {"redis", "generator", "serve0", "serve1", "nginx"} <= set(redis_run["commands"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (tmp_path / reports[-1].with_suffix(".md").name).read_text()
    assert "Redis path" in md and "Redis / memory broker" in md


def parse_resp_array(raw: bytes) -> tuple[list[bytes], bytes]:
    """A RESP array of bulk strings (a client request) and the bytes after it."""
    head, _, raw = raw.partition(b"\r\n")
    assert head.startswith(b"*")
    out = []
    for _ in range(int(head[1:])):
        size, _, raw = raw.partition(b"\r\n")
        assert size.startswith(b"$")
        n = int(size[1:])
        out.append(raw[:n])
        assert raw[n : n + 2] == b"\r\n"
        raw = raw[n + 2 :]
    return out, raw


def test_packed_xadd_batch_is_the_eval_request_it_claims() -> None:
    """The hand-packed RESP request parses back to ``EVAL script 1 key cap producer
    e s d n ...`` with every byte of every payload (binary-safe lengths)."""
    items = [
        ("tick", "SYM0001", b'{"price":1.5,"note":"\\r\\n\xc3\xa9"}', 7),
        ("bar", "S", b"{}", 123456789012),
    ]
    raw = pack_xadd_batch("quoteflow:events", 100000, "p1", items)
    args, rest = parse_resp_array(raw)
    assert rest == b""
    assert args[:6] == [b"EVAL", XADD_BATCH_LUA, b"1", b"quoteflow:events", b"100000", b"p1"]
    expected = [f.encode() if isinstance(f, str) else f for item in items for f in item[:3]]
    got = [a for i in range(0, 8, 4) for a in args[6 + i : 9 + i]]
    assert got == expected
    assert [int(args[9]), int(args[13])] == [7, 123456789012]
