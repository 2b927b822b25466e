"""Smoke run of the model benchmark through the CLI: it runs and reports every case.

No timing is asserted here (machines are noisy); the numbers live in benchmarks/README.md.
"""

from __future__ import annotations

import pytest

from quoteflow.cli import main

pytestmark = pytest.mark.bench


def test_quoteflow_bench_models_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "models", "--quick", "--no-save"]) == 0
    out = capsys.readouterr().out
    for case in ("GARCH", "GJR-GARCH fit, skewt", "simulate", "GBM"):
        assert case in out
    assert "nan" not in out.lower()


def test_unknown_suite_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err
