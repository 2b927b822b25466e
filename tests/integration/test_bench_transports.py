"""Smoke run of the transports benchmark (benchmarks/transports): correctness only.

``quoteflow bench transports --quick`` serves a small feed three times (SSE, WebSocket,
``/snapshot`` polling) to a few raw-socket clients. The test checks that every transport
delivered events, that the streams lost nothing and missed nothing, and that polling
reports the ticks it missed; it never judges latency or CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(180)]


def test_quick_transports_every_transport_delivers_and_polling_misses(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"  # the run's TMPDIR: its temporary log folder must be gone after
    tmp.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "quoteflow",
            "bench",
            "transports",
            "--quick",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = tmp_path.glob("transports-*.json")
    rows = {r["transport"].split()[0]: r for r in json.loads(report.read_text())["results"]}
    assert set(rows) == {"sse", "ws", "poll"}
    for name, r in rows.items():
        assert r["events_per_second"] > 0, (name, r)
        assert r["bytes_per_event"] > 0 and r["published_ticks"] > 0, (name, r)
    for name in ("sse", "ws"):
        assert rows[name]["lost_ids"] == 0 and rows[name]["missed_per_client"] == 0, rows[name]
        assert rows[name]["requests_per_second"] == 0
    # Polling every 500 ms a feed that ticks every 100 ms cannot see every tick.
    assert rows["poll"]["missed_per_client"] > 0 and rows["poll"]["requests_per_second"] > 0
    assert (tmp_path / report.with_suffix(".md").name).exists()
    assert not list(tmp.iterdir()), "benchmark left temporary files behind"
