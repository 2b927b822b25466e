#!/usr/bin/env python3
"""Strip outputs, execution counts and volatile metadata from Jupyter notebooks, in place.

    python scripts/strip_notebooks.py notebooks/*.ipynb          # strip (what `make strip` runs)
    python scripts/strip_notebooks.py --check notebooks/*.ipynb  # exit 1 if any needs stripping

Why: an executed notebook with a live Bokeh chart carries BokehJS inline (~8 MB) and
widget state that is meaningless outside the kernel that made it; git should hold the
tutorial text and code only. Notebooks are executed in CI instead (tests/notebooks).
Only the standard library is used, so the script runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Notebook-level metadata that records one particular run, not the notebook.
VOLATILE_NOTEBOOK_METADATA = ("widgets", "varInspector", "toc", "execution")
#: Cell-level metadata of the same kind.
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb: dict[str, Any]) -> dict[str, Any]:
    """Return ``nb`` (nbformat 4 JSON) without outputs, execution counts or run metadata."""
    for key in VOLATILE_NOTEBOOK_METADATA:
        nb.get("metadata", {}).pop(key, None)
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            meta.pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def dumps(nb: dict[str, Any]) -> str:
    """Serialise like Jupyter does (1-space indent, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks to strip")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a notebook needs stripping"
    )
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        try:
            text = path.read_text(encoding="utf-8")
            nb = json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read notebook: {exc}", file=sys.stderr)
            return 2
        new = dumps(strip(nb))
        if new != text:
            dirty.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "need stripping" if args.check else "stripped"
    for path in dirty:
        print(f"{path}: {verb}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
