"""Shared test helpers.

``require_executable`` is how a test asks for a real external part (chromium,
redis-server, nginx, go), ``require_module`` for an optional Python package (arch): missing
locally -> skip with the install command; missing in CI (``CI=true``) -> fail, because a
skipped test must never hide a missing part. Both go through :func:`missing_part`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

#: Debian's Chromium, headless. The background-networking flags keep it from dialling out
#: (this machine has no network but the package registries).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_executable(name: str, apt_package: str | None = None) -> str:
    """Path of executable ``name``; skip locally / fail in CI when it is missing."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        missing_part(f"{name} not found: apt-get install {apt_package or name}")
    return path


def require_module(name: str, pip_package: str | None = None) -> ModuleType:
    """Module ``name``, imported; skip locally / fail in CI when it is not installed.

    The CI-aware replacement for ``pytest.importorskip``, which skips in CI too.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        missing_part(f"python module {name} not installed: pip install {pip_package or name}")


def missing_part(msg: str) -> NoReturn:
    """A required part is missing: skip with ``msg`` locally, fail with it in CI."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg, allow_module_level=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
