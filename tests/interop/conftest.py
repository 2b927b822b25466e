"""Fixtures of the interop suite: npm ``eventsource`` installed once per machine."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_executable

#: The npm package under test, pinned (the Python ones are pinned in pyproject's
#: ``interop`` extra).
NPM_EVENTSOURCE = "eventsource@4.1.1"
NODE_DIR = ROOT / ".cache" / "interop-node"
#: When this test session started: results older than this are another session's.
SESSION_START = time.time()


@pytest.fixture(scope="session")
def node_eventsource() -> tuple[str, Path]:
    """(node executable, folder holding node_reader.mjs and node_modules/eventsource)."""
    node = require_executable("node", "nodejs")
    npm = require_executable("npm")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    wanted = NPM_EVENTSOURCE.split("@")[1]
    pkg = NODE_DIR / "node_modules" / "eventsource" / "package.json"
    if not pkg.exists() or f'"version": "{wanted}"' not in pkg.read_text():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), NPM_EVENTSOURCE],
            check=True,
            capture_output=True,
            timeout=300,
        )
    shutil.copy(Path(__file__).with_name("node_reader.mjs"), NODE_DIR / "node_reader.mjs")
    return node, NODE_DIR
