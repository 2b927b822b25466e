from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quoteflow import data
from quoteflow.errors import DataError


def test_load_shipped_tickers() -> None:
    for t in data.TICKERS:
        df = data.load(t)
        assert list(df.columns) == ["open", "high", "low", "close", "volume", "adj_close"]
        assert df.index.name == "date"
        assert df.index.is_monotonic_increasing
        assert (df["adj_close"] > 0).all()
    assert len(data.load("aapl")) == 3270
    assert data.load("AAPL").index[0] == pd.Timestamp("2000-03-01")
    assert data.load("MSFT").index[-1] == pd.Timestamp("2013-03-01")


def test_raw_close_halves_at_split_but_adjusted_does_not() -> None:
    aapl = data.load("AAPL")
    r_close = np.log(aapl["close"]).diff()
    r_adj = np.log(aapl["adj_close"]).diff()
    assert r_close.loc["2000-06-21"] < -0.5  # 2:1 split: log(1/2) = -0.69 plus that day's move
    assert abs(r_adj.loc["2000-06-21"]) < 0.1


def test_unknown_ticker() -> None:
    with pytest.raises(DataError, match="unknown ticker 'NOPE'; shipped tickers: AAPL"):
        data.load("NOPE")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.csv"
    p.write_text(text)
    return p


def test_read_csv_ok(tmp_path: Path) -> None:
    p = write(tmp_path, "Date,Close\n2020-01-03,11\n2020-01-02,10\n")
    s = data.read_csv(p, column="close")
    assert list(s) == [10.0, 11.0]
    assert s.index[0] == pd.Timestamp("2020-01-02")


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "Date,Close\n2020-01-02,10\n",
            "Price",
            "no column 'Price'; columns: \\['Date', 'Close'\\]",
        ),
        ("Date,Close\nyesterday,10\n", "Close", "cannot parse date 'yesterday' .* line 2"),
        ("Date,Close\n2020-01-02,10\n2020-01-03,\n", "Close", "missing value \\(NaN\\) at line 3"),
        ("Date,Close\n2020-01-02,10\n2020-01-03,-1\n", "Close", "must be positive: -1.0 at line 3"),
        ("Date,Close\n2020-01-02,10\n2020-01-03,0\n", "Close", "must be positive: 0.0 at line 3"),
        ("Date,Close\n2020-01-02,ten\n", "Close", "not numeric: 'ten' at line 2"),
    ],
)
def test_read_csv_errors(tmp_path: Path, text: str, column: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        data.read_csv(write(tmp_path, text), column=column)


def test_read_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        data.read_csv(tmp_path / "nope.csv")
