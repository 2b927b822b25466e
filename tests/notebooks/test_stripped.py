"""Notebooks are stored without outputs; scripts/strip_notebooks.py is what strips them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT
from tests.notebooks._kernel import notebooks


def _strip_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "strip_notebooks", ROOT / "scripts" / "strip_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_in_git_has_no_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make strip`"
    assert "widgets" not in nb.get("metadata", {}), (
        f"{path.name}: saved widget state; run `make strip`"
    )
    assert _strip_module().main(["--check", str(path)]) == 0, f"{path.name}: run `make strip`"


def test_strip_removes_outputs_and_is_idempotent(tmp_path: Path) -> None:
    src = notebooks()[0]
    nb = json.loads(src.read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * 1000}]
    code["execution_count"] = 7
    code["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(nb), encoding="utf-8")
    strip = _strip_module()
    assert strip.main(["--check", str(dirty)]) == 1
    assert strip.main([str(dirty)]) == 0
    once = dirty.read_text(encoding="utf-8")
    cleaned = json.loads(once)
    assert all(c.get("outputs", []) == [] for c in cleaned["cells"])
    assert "widgets" not in cleaned["metadata"]
    assert strip.main([str(dirty)]) == 0
    assert dirty.read_text(encoding="utf-8") == once
    shutil.copy(src, tmp_path / "clean.ipynb")
    assert strip.main(["--check", str(tmp_path / "clean.ipynb")]) == 0
