"""Smoke run of the SSE fan-out benchmark (benchmarks/fanout): every server runs.

``python -m benchmarks.fanout.run --quick`` starts floor-c, seed-go, tornado-naive,
sse-starlette and ``quoteflow serve`` in turn, each with 20 clients on 10 symbols
ticking every 100 ms for 3 s, and the Go load generator reports what arrived.
This test checks correctness only (every client connected, events arrived, none
lost, none out of order, no client dropped); it never judges speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, require_executable

pytestmark = [pytest.mark.bench, pytest.mark.integration]

SERVERS = ("floor-c", "seed-go", "tornado-naive", "sse-starlette", "quoteflow")
GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
LOADGEN = ROOT / "benchmarks" / "fanout" / "loadgen"


def _require(ok: bool, msg: str) -> None:
    """Skip locally / fail in CI when a part the benchmark needs is missing."""
    if not ok:
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def test_quick_fanout_every_server_delivers_without_loss(tmp_path: Path) -> None:
    require_executable("go", "golang-go")
    require_executable("gcc", "gcc")
    _require(GIN.is_dir(), "Gin not found: apt-get install golang-github-gin-gonic-gin-dev")
    for module in ("sse_starlette", "uvicorn", "uvloop", "httptools"):
        _require(
            importlib.util.find_spec(module) is not None,
            f"{module} not installed: pip install sse-starlette uvicorn uvloop httptools",
        )

    tmp = tmp_path / "tmp"  # the run's TMPDIR: its temporary log folder must be gone after
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fanout.run", "--quick", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    reports = sorted(tmp_path.glob("fanout-*.json"))
    assert reports, f"no report written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(reports[-1].read_text())
    results = {r["server"]: r for r in report["scenarios"]["quick"]["results"]}

    assert set(results) == set(SERVERS)
    for name in SERVERS:
        r = results[name]
        assert "error" not in r, f"{name}: {r.get('error')}"
        summary = {k: r[k] for k in ("connected", "events_window", "lost_events", "disconnected")}
        assert r["connected"] == r["connections"] == 20, f"{name}: {summary}"
        assert r["events_window"] > 0, f"{name}: {summary}"
        assert r["lost_events"] == 0, f"{name}: {summary}"
        assert r["out_of_order"] == 0, f"{name}: {summary}"
        assert r["disconnected"] == 0, f"{name}: {summary}"
        # Timestamps were found and parsed (the latency values themselves are not judged).
        assert r["latency"]["samples"] > 0, f"{name}: {r['latency']}"
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / reports[-1].with_suffix(".md").name).exists()
    assert not list(tmp.iterdir()), "benchmark left temporary files behind"


def test_loadgen_parser_and_histogram_go_tests(tmp_path: Path) -> None:
    """The load generator's own Go tests: SSE parsing, id gaps, timestamps, quantiles."""
    go = require_executable("go", "golang-go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(tmp_path / "gopath"),
        "GOPROXY": "off",
        "GOFLAGS": "",
    }
    proc = subprocess.run(
        [go, "test", "-count=1", "."],
        cwd=LOADGEN,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stall_probe_watches_the_collector_the_loop_and_late_events(tmp_path: Path) -> None:
    """benchmarks/fanout/stall_probe.py: a short run records what its report is built from."""
    require_executable("go", "golang-go")
    require_executable("taskset", "util-linux")
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.fanout.stall_probe",
            "--interval-ms", "50", "--symbols", "10", "--connections", "5",
            "--duration", "2", "--server-cpus", "0", "--loadgen-cpus", "0",
            "--slow-ms", "0.001", "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    lg = data["loadgen"]
    assert lg["connected"] == 5 and lg["events_window"] > 0 and lg["lost_events"] == 0
    # Every timed event is later than 1 us, so each is listed: (connection, gen ns, lat us).
    slow = lg["slow_events"]
    assert len(slow) == min(lg["latency"]["samples"], 5 * 2000) > 0
    assert {conn for conn, _, _ in slow} == set(range(5))
    # The server process ran with the observers: GC passes (start-up makes some).
    assert any(gen == 2 for _, gen, *_ in data["server"]["gc"])
    report = "\n".join(data["report"])
    assert "kernel counters over the run" in report
    assert "connections late" in report
    assert proc.stdout.strip().splitlines()[0].startswith("T=50 ms, C=5, S=10:")
