"""The README's first command on a stock Debian Python: ``bash scripts/serve.sh``.

Debian's ``/usr/bin/python3`` is marked externally managed (PEP 668): ``pip install`` into
it fails. serve.sh must make and use the project's own ``.venv/`` instead, reach
``/healthz``, and on a second start skip the install (a stamp of pyproject.toml).
The test runs on a copy of the repository so that the work tree's own .venv is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

DEBIAN_PYTHON = Path("/usr/bin/python3")
URL_LINE = re.compile(r"quoteflow serving \d+ symbols on (http://\S+/) \(dashboard\)")


def _externally_managed(python: Path) -> bool:
    code = "import sysconfig, pathlib; print(pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').is_file())"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "True"


def _copy_repo(dest: Path) -> Path:
    """The tracked files of the work tree (plus new ones not ignored), without .venv/."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    for name in files:
        if name.startswith("benchmarks/results/") or not (ROOT / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def _serve_once(repo: Path, env: dict[str, str], hang_guard: float) -> tuple[list[str], float]:
    """Run serve.sh until its URL line, check /healthz, stop it; (output lines, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "scripts/serve.sh", "--port", "0"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = t0 + hang_guard  # a hang guard, not a speed limit
        url = None
        while url is None:
            assert time.monotonic() < deadline, "serve.sh hung:\n" + "".join(lines)
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"serve.sh exited ({proc.wait()}):\n" + "".join(lines))
            lines.append(line)
            match = URL_LINE.search(line)
            if match:
                url = match.group(1)
        elapsed = time.monotonic() - t0
        with urllib.request.urlopen(url + "healthz", timeout=30) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return lines, elapsed


def test_serve_script_on_an_externally_managed_python(tmp_path: Path) -> None:
    if not DEBIAN_PYTHON.is_file() or not _externally_managed(DEBIAN_PYTHON):
        msg = f"{DEBIAN_PYTHON} is not an externally managed Python (Debian's python3)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    # The premise: pip refuses this Python.
    refused = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "install", "--dry-run", "tornado"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr

    repo = _copy_repo(tmp_path / "checkout")
    # Not the environment the suite runs in: the copy makes its own .venv/.
    outer = ("VIRTUAL_ENV", "PYTHONPATH", "QUOTEFLOW_VENV")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    env["PYTHON"] = str(DEBIAN_PYTHON)

    first, first_s = _serve_once(repo, env, hang_guard=800)
    text = "".join(first)
    assert "installing quoteflow into" in text and "(first run, ~1 min" in text, text
    venv_python = repo / ".venv" / "bin" / "python"
    assert venv_python.is_file()
    version = subprocess.run(
        [
            str(venv_python),
            "-c",
            "import sys, quoteflow; print(sys.base_prefix, quoteflow.__file__)",
        ],
        cwd=tmp_path,  # not the work tree: its quoteflow/ would shadow the installed one
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert version[0] == "/usr" and version[1].startswith(str(repo)), version

    second, second_s = _serve_once(repo, env, hang_guard=120)
    assert not any("installing" in line for line in second), "".join(second)
    print(f"serve.sh: first run {first_s:.1f} s, second run {second_s:.1f} s", file=sys.stderr)
