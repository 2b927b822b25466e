"""``quoteflow bench fanout --quick --workers 2``: the fan-out smoke run against two workers.

Correctness only (every client connected, events arrived, none lost or out of order, no
client dropped); speed is never judged here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_executable

pytestmark = [pytest.mark.bench, pytest.mark.integration]


def test_quick_fanout_with_two_workers_delivers_without_loss(tmp_path: Path) -> None:
    require_executable("go", "golang-go")
    proc = subprocess.run(
        [
            sys.executable, "-m", "quoteflow", "bench", "fanout", "--quick", "--workers", "2",
            "--servers", "quoteflow", "--output-dir", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    reports = sorted(tmp_path.glob("fanout-*.json"))
    assert reports, f"no report written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(reports[-1].read_text())
    assert report["settings"]["quoteflow_args"][-2:] == ["--workers", "2"]
    (r,) = report["scenarios"]["quick"]["results"]
    assert "error" not in r, r.get("error")
    assert r["connected"] == r["connections"] == 20, r
    assert r["events_window"] > 0 and r["lost_events"] == 0, r
    assert r["out_of_order"] == 0 and r["disconnected"] == 0, r
    assert proc.returncode == 0, proc.stderr
