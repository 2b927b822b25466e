"""Helpers shared by the notebook and JupyterLab tests: notebook list, kernel, environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

NOTEBOOKS_DIR = ROOT / "notebooks"


def notebooks() -> list[Path]:
    """Every tutorial notebook: the ones in git plus any new ones in the work tree."""
    found = set(NOTEBOOKS_DIR.glob("*.ipynb"))
    try:
        out = subprocess.run(
            ["git", "ls-files", "notebooks/*.ipynb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        found |= {ROOT / line for line in out.splitlines() if line.strip()}
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (e.g. an sdist): the folder is all there is
    return sorted(found)


def ensure_python3_kernelspec() -> None:
    """Install the ``python3`` kernelspec of this interpreter if Jupyter does not list one."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix"],
            check=True,
            capture_output=True,
            timeout=120,
        )


def kernel_env() -> dict[str, str]:
    """Environment for kernels: the work tree importable even without ``pip install -e``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
    return env
