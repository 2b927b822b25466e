"""Smoke run of the risk backtest benchmark: every case runs and reports (no timing asserted)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.bench


def test_bench_backtest_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.risk import bench_backtest

    assert bench_backtest.main(["--refits", "5", "--window", "300"]) == 0
    out = capsys.readouterr().out
    for case in ("quoteflow warm", "quoteflow cold", "arch cold", "arch warm", "max |"):
        assert case in out
    assert "nan" not in out.lower()


def test_size_study_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.risk import size_study

    assert size_study.main(["--series", "3", "--window", "300", "--days", "100"]) == 0
    assert "rejections at 5 %" in capsys.readouterr().out
