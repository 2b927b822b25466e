"""Execute tutorial notebooks with a real kernel and list what went wrong.

Importable (tests/notebooks/test_execute.py) and runnable as a script by any interpreter
that has nbclient (tests/notebooks/test_binder_env.py runs it with the Binder venv's
Python, so the kernel is that venv's): ``python run_notebooks.py CWD NB...`` prints one
JSON list of problems per notebook and exits 1 if any notebook had one. It imports
nothing from quoteflow or tests.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

#: Appended as a last cell: each notebook must stop what it started.
LEFTOVER_CHECK = """\
import threading
from quoteflow.notebook import running_servers
_left = [t.name for t in threading.enumerate() if t.name.startswith("quoteflow-server")]
assert not _left and not running_servers(), f"servers left running: {_left} {running_servers()}"
"""

#: An output that loads a script or BokehJS from elsewhere does not work offline. (Inline
#: BokehJS itself mentions jsdelivr URLs for optional MathJax and icon fonts; those are
#: fetched only by models we never use, so a plain URL in the bundle is no finding.)
CDN = re.compile(r"cdn\.bokeh\.org|<script[^>]*\bsrc=\\*[\"']https?://")


#: The mime type of a widget's output: a reference to a model in the kernel. Saved and
#: reopened without the kernel, it shows "Error displaying widget: model not found".
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_views(nb: Any) -> list[int]:
    """Indices of the cells of ``nb`` (a notebook or its JSON) that keep a widget view."""
    return [
        i
        for i, cell in enumerate(nb["cells"])
        for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    ]


def problems(nb: Any) -> list[str]:
    """Error outputs, tracebacks on stderr, CDN references and unexecuted cells of ``nb``."""
    found: list[str] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {i} did not run")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("name") == "stderr" and "Traceback" in out.get("text", ""):
                found.append(f"cell {i}: traceback on stderr: {out['text'][-400:]}")
            text = json.dumps(out.get("data", {}))
            if CDN.search(text):
                found.append(f"cell {i}: output loads from the internet: {CDN.findall(text)[:3]}")
    return found


def execute(path: Path, cwd: Path, timeout: float = 60.0) -> tuple[Any, float]:
    """Run ``path`` top to bottom (plus :data:`LEFTOVER_CHECK`) in ``cwd``; (nb, seconds)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(LEFTOVER_CHECK))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    start = time.monotonic()
    client.execute()
    return nb, time.monotonic() - start


def main(argv: list[str]) -> int:
    cwd, paths = Path(argv[0]), [Path(p) for p in argv[1:]]
    failed = False
    for path in paths:
        nb, seconds = execute(path, cwd)
        found = problems(nb)
        failed |= bool(found)
        print(json.dumps({"notebook": path.name, "seconds": round(seconds, 1), "problems": found}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
