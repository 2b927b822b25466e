"""scripts/screenshot.py: the docs' dashboard picture, taken through Playwright (a plain
``chromium --screenshot`` never finishes on an SSE page)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_executable

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(180)]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head[:8]
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize("chart", ["line", "candles"])
def test_screenshot_script_writes_the_dashboard_png(tmp_path: Path, chart: str) -> None:
    require_executable("chromium")
    out = tmp_path / f"dashboard-{chart}.png"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "screenshot.py"), "--out", str(out),
            "--chart", chart, "--ticks", "40", "--width", "1000", "--height", "700",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    assert _png_size(out) == (1000, 700)
    assert out.stat().st_size > 10_000  # a drawn page, not a blank one


def test_screenshot_script_names_a_missing_browser(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "screenshot.py"),
            "--chromium", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"error: no browser at {tmp_path / 'nope'}: apt-get install chromium"
    )
