"""docs/clients.md cannot drift from what the interop suite measures.

Runs after the scenario files (pytest orders files by name), so the results it reads are
this session's; a row missing or left from an earlier session fails in CI (skips
locally, naming the command to run the whole suite).
"""

from __future__ import annotations

import inspect

import pytest

from tests.conftest import IN_CI
from tests.interop import recipes
from tests.interop.conftest import SESSION_START
from tests.interop.table import DOC, EXPECTED, block, checked_in, load, result_path

pytestmark = [pytest.mark.interop]


def test_checked_in_table_matches_the_measured_results() -> None:
    stale = [
        k
        for k in EXPECTED
        if not result_path(k).exists() or result_path(k).stat().st_mtime < SESSION_START
    ]
    if stale:
        msg = f"no result of this session for {stale}: run `pytest tests/interop` whole"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    rows = load()
    assert checked_in() == block(rows), (
        "docs/clients.md's table differs from the suite's results: "
        "run `python -m tests.interop.table --write` and review the change"
    )


@pytest.mark.parametrize(
    "recipe",
    [recipes.httpx_sse_events, recipes.sseclient_events, recipes.aiohttp_sse_client_events],
)
def test_docs_show_the_tested_recipe(recipe: object) -> None:
    source = inspect.getsource(recipe)  # type: ignore[arg-type]
    assert source in DOC.read_text(), f"docs/clients.md must show {recipe} as tested"
