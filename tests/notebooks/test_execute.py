"""Every tutorial notebook runs top to bottom in a real kernel, headless.

How long each takes (the STYLE goal is under a minute) is a figure, not an assertion:
it is recorded as the test's ``seconds`` property (``--junitxml``) and printed (``-s``);
the per-cell timeout is only a hang guard.

This proves the notebooks' code works and stops what it starts; it cannot prove that a
chart is live in a browser (a widget that fails to render passes here), which is what
tests/browser/test_jupyterlab.py is for.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebooks._kernel import ensure_python3_kernelspec, kernel_env, notebooks

pytestmark = [
    pytest.mark.notebook,
    # zmq/tornado inside jupyter_client warn about loop policies on some versions.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:zmq.*"),
]

#: nbclient's per-cell timeout: a hang guard (a stuck cell fails the test instead of
#: hanging it), not a speed requirement. Each cell takes seconds.
CELL_HANG_GUARD_S = 300.0

LEFTOVER_CHECK = """\
import threading
from quoteflow.notebook import running_servers
_left = [t.name for t in threading.enumerate() if t.name.startswith("quoteflow-server")]
assert not _left and not running_servers(), f"servers left running: {_left} {running_servers()}"
"""


def test_there_are_notebooks() -> None:
    names = {p.name for p in notebooks()}
    assert {
        "01_quickstart.ipynb",
        "02_calibrate.ipynb",
        "03_live_market.ipynb",
        "04_transports.ipynb",
    } <= names


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_executes(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    ensure_python3_kernelspec()
    for key, value in kernel_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    work = tmp_path / path.name
    shutil.copy(path, work)  # run beside a copy: whatever a notebook writes stays out of git
    nb = nbformat.read(work, as_version=4)
    # A last cell that fails if the notebook left a server running: each must stop what
    # it started.
    nb.cells.append(nbformat.v4.new_code_cell(LEFTOVER_CHECK))
    client = NotebookClient(
        nb,
        timeout=int(CELL_HANG_GUARD_S),
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start
    record_property("seconds", round(elapsed, 1))
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [
        (i, out.get("ename"), out.get("evalue"))
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
        or (
            out.get("output_type") == "stream"
            and out.get("name") == "stderr"
            and "Traceback" in out.get("text", "")
        )
    ]
    assert not errors, f"{path.name}: error outputs {errors}"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells)
