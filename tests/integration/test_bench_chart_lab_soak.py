"""Smoke run of the JupyterLab + Chromium chart soak (benchmarks/chart/lab_soak.py).

A 15 s run sampling every 5 s: JupyterLab starts, Chromium runs the generated notebook,
the chart receives events, the JS heap and the kernel RSS are read, the table and the JSON
are written. Correctness only; the figures it reports are never judged here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_executable

pytestmark = [
    pytest.mark.bench,
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.notebook,
]

#: Hang guard for the whole run (JupyterLab start, kernel start, 15 s of samples).
RUN_HANG_GUARD_S = 300


def test_short_lab_soak_samples_heap_rss_and_events(tmp_path: Path) -> None:
    require_executable("chromium")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.chart.lab_soak",
            "--duration",
            "15",
            "--every",
            "5",
            "--rate",
            "1000",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = tmp_path.glob("chart-lab-soak-*.json")
    result = json.loads(report.read_text())
    samples = result["samples"]
    assert len(samples) >= 3, samples
    assert all(s["js_heap_after_gc_mib"] > 0 and s["kernel_rss_mib"] > 0 for s in samples)
    assert samples[-1]["events"] > samples[0]["events"], "the chart received nothing"
    assert result["iopub_warnings"] == []
    assert "| end |" in (report.with_suffix(".md")).read_text()
