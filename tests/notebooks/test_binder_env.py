"""Binder's pip side, built for real: a fresh venv gets what binder/ lists, then postBuild
runs, then the notebook layer imports with jupyter_bokeh's lab extension active."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _run(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_binder_environment_builds_and_imports(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / "bin"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    py = str(bindir / "python")
    _run([py, "-m", "pip", "install", "-q", "-r", str(ROOT / "binder" / "requirements.txt")], env)
    _run(["bash", str(ROOT / "binder" / "postBuild")], env)

    out = _run(
        [
            py,
            "-c",
            "import quoteflow.notebook, jupyter_bokeh, quoteflow;"
            "print(quoteflow.__file__); print(quoteflow.notebook.serve_in_background.__name__)",
        ],
        env,
        cwd=tmp_path,
    )
    assert str(ROOT / "quoteflow") in out and "serve_in_background" in out
    ext = _run([str(bindir / "jupyter"), "labextension", "list"], env, cwd=tmp_path)
    line = next((ln for ln in ext.splitlines() if "@bokeh/jupyter_bokeh" in ln), "")
    assert "enabled" in line and "OK" in line, ext
    server_ext = _run([str(bindir / "jupyter"), "server", "extension", "list"], env, cwd=tmp_path)
    assert "jupyter_server_proxy" in server_ext and "enabled" in server_ext
    config = (home / ".jupyter" / "jupyter_server_config.py").read_text()
    assert "quoteflow" in config and "ServerProxy" in config
