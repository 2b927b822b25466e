"""The mutation list of scripts/mutate.py still applies to this tree, so it cannot rot.

The mutation run itself is a tool (``make mutate``, docs/testing.md), not part of the
test suite; this only checks that every planted bug's old text is found exactly once in
its file and that the tests it names exist.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "quoteflow_mutate", ROOT / "scripts" / "mutate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mutate = _load()


@pytest.mark.parametrize("mutation", mutate.MUTATIONS, ids=[m.name for m in mutate.MUTATIONS])
def test_mutation_applies_to_the_current_tree(mutation: object) -> None:
    assert mutate.problems(mutation) == []


def test_mutations_cover_the_audited_paths_with_unique_names() -> None:
    names = [m.name for m in mutate.MUTATIONS]
    assert len(set(names)) == len(names)
    areas = {m.area for m in mutate.MUTATIONS}
    assert areas == {"auth", "resume", "slow consumer", "parser EOF", "GARCH likelihood"}
    for m in mutate.MUTATIONS:
        assert m.old != m.new and m.tests, m.name


def test_problems_reports_an_old_text_that_no_longer_matches() -> None:
    stale = mutate.Mutation("stale", "auth", "quoteflow/server/ws.py", "no such text", "x", (), "")
    assert mutate.problems(stale) == ["stale: old text found 0 times in quoteflow/server/ws.py"]
