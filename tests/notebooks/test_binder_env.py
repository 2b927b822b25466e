"""Binder's build, for real: a fresh venv of binder/runtime.txt's Python gets exactly what
binder/requirements.txt pins, binder/postBuild runs, and then every notebook runs top to
bottom with that venv's kernel (offline: no output may load from a CDN).

repo2docker reads ``binder/runtime.txt`` (``python-3.11``) for the interpreter; without
it, it uses its own default Python, which ``requires-python >= 3.11`` refuses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.notebooks._kernel import notebooks

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

RUNNER = Path(__file__).with_name("run_notebooks.py")


def _run(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    # 1800 s: a hang guard for a cold pip cache, not a speed requirement.
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _runtime_python() -> str:
    """The interpreter binder/runtime.txt names (``python-3.11`` -> ``python3.11``)."""
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt: {runtime!r} is not repo2docker's python-X.Y"
    version = match.group(1)
    found = shutil.which(f"python{version}")
    if found is None:
        pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
        found = str(pyenv[-1]) if pyenv else None
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"python{version} (binder/runtime.txt) is not installed")
        pytest.skip(f"python{version} (binder/runtime.txt) is not installed")
    return found


def test_binder_environment_builds_and_runs_every_notebook(tmp_path: Path) -> None:
    python = _runtime_python()
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / "bin"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    for leak in ("PYTHONPATH", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTERHUB_SERVICE_PREFIX"):
        env.pop(leak, None)
    py = str(bindir / "python")
    version = _run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], env)
    assert version.strip() == python.rsplit("python", 1)[1]
    _run([py, "-m", "pip", "install", "-q", "-r", str(ROOT / "binder" / "requirements.txt")], env)
    _run(["bash", str(ROOT / "binder" / "postBuild")], env)

    # Exactly the pinned versions, nothing upgraded behind our back by postBuild.
    freeze = _run([py, "-m", "pip", "freeze"], env).lower().replace("_", "-")
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert line.lower().replace("_", "-") in freeze, f"{line} not installed"

    out = _run(
        [py, "-c", "import quoteflow.notebook, quoteflow; print(quoteflow.__file__)"],
        env,
        cwd=tmp_path,
    )
    assert str(ROOT / "quoteflow") in out
    ext = _run([str(bindir / "jupyter"), "labextension", "list"], env, cwd=tmp_path)
    line = next((ln for ln in ext.splitlines() if "@bokeh/jupyter_bokeh" in ln), "")
    assert "enabled" in line and "OK" in line, ext
    server_ext = _run([str(bindir / "jupyter"), "server", "extension", "list"], env, cwd=tmp_path)
    assert "jupyter_server_proxy" in server_ext and "enabled" in server_ext
    config = (home / ".jupyter" / "jupyter_server_config.py").read_text()
    assert "quoteflow" in config and "ServerProxy" in config

    # Every notebook, with the venv's own kernel, from notebooks/ as on Binder (copies:
    # the executed notebooks are never written back).
    work = tmp_path / "notebooks"
    work.mkdir()
    copies = [str(shutil.copy(p, work / p.name)) for p in notebooks()]
    proc = subprocess.run(
        [py, str(RUNNER), str(ROOT / "notebooks"), *copies],
        cwd=ROOT / "notebooks",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # hang guard
    )
    reports = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert {r["notebook"] for r in reports} == {p.name for p in notebooks()}, proc.stderr[-3000:]
    failed = [r for r in reports if r["problems"]]
    assert proc.returncode == 0 and not failed, failed or proc.stderr[-3000:]
