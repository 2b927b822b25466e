"""scripts/serve.sh and scripts/test.sh: the Python they pick and the lines they print.

The full path (a fresh .venv made from Debian's externally managed Python, install, serve)
is tests/integration/test_serve_script.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }  # outer env
    env["QUOTEFLOW_VENV"] = str(tmp_path / "venv")
    env.update(extra)
    return env


def test_minimum_python_is_the_one_pyproject_requires() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.search(r'^QF_MIN_PY="([0-9.]+)"', (SCRIPTS / "_venv.sh").read_text(), re.M)
    assert match is not None
    assert requires == f">={match.group(1)}"


@pytest.mark.parametrize("script", ["serve.sh", "test.sh", "_venv.sh"])
def test_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True, timeout=30)


def _fake_python(path: Path, version: str) -> Path:
    """An executable that answers the version probe like an old Python would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def _serve_sh(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / "serve.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def test_too_old_python_is_one_clear_line(tmp_path: Path) -> None:
    old = _fake_python(tmp_path / "python3.8", "3.8")
    proc = _serve_sh(_env(tmp_path, PYTHON=str(old)))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: PYTHON={old} is Python 3.8; quoteflow needs Python >= 3.11"
    )
    assert not (tmp_path / "venv").exists()


def test_an_active_virtual_environment_that_is_too_old_is_refused(tmp_path: Path) -> None:
    venv = tmp_path / "oldenv"
    _fake_python(venv / "bin" / "python", "3.10")
    proc = _serve_sh(_env(tmp_path, VIRTUAL_ENV=str(venv)))
    assert proc.returncode == 1
    assert "active virtual environment is Python 3.10; quoteflow needs Python >= 3.11" in (
        proc.stderr
    )


def test_system_package_step_says_what_and_how_long() -> None:
    text = (SCRIPTS / "test.sh").read_text()
    assert "may take a few minutes): ${missing[*]}" in text
    assert "prometheus" in text
    assert "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1" in text
