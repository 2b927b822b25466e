"""Every tutorial notebook runs top to bottom in a real kernel, headless.

How long each takes (the STYLE goal is under a minute) is a figure, not an assertion:
it is recorded as the test's ``seconds`` property (``--junitxml``) and printed (``-s``);
the per-cell timeout is only a hang guard.

This proves the notebooks' code works, stops what it starts and loads nothing from a CDN;
it cannot prove that a chart is live in a browser (a widget that fails to render passes
here), which is what tests/browser/test_jupyterlab.py is for.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.notebooks._kernel import ensure_python3_kernelspec, kernel_env, notebooks
from tests.notebooks.run_notebooks import execute, problems, widget_views

pytestmark = [
    pytest.mark.notebook,
    # zmq/tornado inside jupyter_client warn about loop policies on some versions.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:zmq.*"),
]

#: nbclient's per-cell timeout: a hang guard (a stuck cell fails the test instead of
#: hanging it), not a speed requirement. Each cell takes seconds.
CELL_HANG_GUARD_S = 300.0

#: Static figures each notebook draws (at least): they must survive an HTML export.
STATIC_FIGURES = {"02_calibrate.ipynb": 3, "04_transports.ipynb": 1, "05_scenarios.ipynb": 1, "06_risk.ipynb": 1}


def test_there_are_notebooks() -> None:
    names = {p.name for p in notebooks()}
    assert {
        "01_quickstart.ipynb",
        "02_calibrate.ipynb",
        "03_live_market.ipynb",
        "04_transports.ipynb",
        "05_scenarios.ipynb",
        "06_risk.ipynb",
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
    nb, elapsed = execute(work, tmp_path, timeout=CELL_HANG_GUARD_S)
    record_property("seconds", round(elapsed, 1))
    print(f"{path.name}: {elapsed:.1f} s")
    assert not problems(nb), f"{path.name}: {problems(nb)}"
    # Run All ends by freezing every live widget into static HTML: a widget view left in
    # the saved notebook reopens as "Error displaying widget: model not found".
    views = widget_views(nb)
    assert not views, f"{path.name}: cells {views} keep a widget view after the stop cell"
    # The static figures are in an HTML export too (widgets would need a kernel).
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(nb)
    assert page.count("quoteflow-static") >= STATIC_FIGURES.get(path.name, 0)
