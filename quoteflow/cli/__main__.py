"""``python -m quoteflow.cli``: the same as the ``quoteflow`` command."""

from __future__ import annotations

from quoteflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
