"""``quoteflow backtest``: the table on stdout, progress on stderr, one-line errors."""

from __future__ import annotations

import json

import pytest

from quoteflow import data, risk
from quoteflow.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_backtest_prints_the_table_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["backtest", "AAPL", "--model", "garch", "--dist", "t", "--refit-every", "200"], capsys
    )
    assert code == 0, err
    assert "LR_uc" in out and "LR_cc" in out and "Z2" in out
    assert "model garch, window 1000, refit every 200 days, 12 refits, 2269 days" in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("backtest: refit 1/12")
    assert lines[-1].startswith("backtest: refit 12/12")


def test_backtest_json_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", "MSFT", "--model", "gbm", "--window", "expanding", "--min-window"]
    argv += ["500", "--refit-every", "250", "--alpha", "0.025", "--simulations", "99", "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    doc = json.loads(out)
    lib = risk.backtest(
        data.resolve_prices("MSFT"),
        "gbm",
        window="expanding",
        min_window=500,
        refit_every=250,
        alpha=0.025,
        es_simulations=99,
    )
    (row,) = doc["table"]
    assert row["alpha"] == 0.025 and doc["window"] == "expanding"
    assert row["exceedances"] == lib.table.loc[0.025, "exceedances"]
    assert row["LR_cc"] == pytest.approx(lib.table.loc[0.025, "LR_cc"], rel=1e-12)
    assert row["p_Z2"] == pytest.approx(lib.table.loc[0.025, "p_Z2"], rel=1e-12)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--window", "5000"], "prices too short for the backtest"),
        (["--window", "10"], "invalid window '10': must be >= 30"),
        (["--window", "big"], "invalid window 'big'"),
        (["--alpha", "0.01,0.7"], "invalid alpha '0.7'"),
        (["--alpha", "0.01,x"], "invalid alpha 'x'"),
        (["--refit-every", "0"], "must be >= 1"),
        (["--model", "gbm", "--dist", "t"], "--dist only applies to --model garch"),
        (["--window", "expanding", "--min-window", "expanding"], "argument --min-window"),
    ],
)
def test_backtest_user_mistakes_are_one_line(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["backtest", "AAPL", *argv], capsys)
    assert code == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("quoteflow: error: ") and match in line


def test_backtest_unknown_ticker(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["backtest", "NOPE_NOT_A_FILE"], capsys)
    assert code == 2 and err.startswith("quoteflow: error: ") and len(err.strip().splitlines()) == 1
