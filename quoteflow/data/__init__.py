"""Shipped public-domain price history and loaders for a user's own CSV files.

``load("AAPL")`` returns the daily OHLCV history of one of the shipped tickers (see
``SOURCES.md`` beside this file for source and licence); ``read_csv(path, column=...)``
reads one price column of a user's file with clear errors for everything that would
make a fit meaningless.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quoteflow.errors import DataError

__all__ = [
    "TICKERS",
    "ColumnNotFound",
    "PricesNotFound",
    "load",
    "load_all",
    "normalise_column",
    "read_csv",
    "resolve_prices",
    "shipped_ticker",
]

#: Tickers shipped with the package.
TICKERS: tuple[str, ...] = ("AAPL", "GOOG", "IBM", "MSFT")

_COLUMNS = {
    "Date": "date",
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Volume": "volume",
    "Adj Close": "adj_close",
}


class PricesNotFound(DataError):
    """A price source that is neither an existing CSV file nor a shipped ticker.

    Attributes
    ----------
    spec : str
        What was asked for.
    path : pathlib.Path
        The file that was looked for.
    """

    def __init__(self, spec: str, path: Path) -> None:
        super().__init__(
            f"no such file: {spec} (nor a shipped ticker); give a CSV path or a shipped "
            f"ticker ({', '.join(TICKERS)})"
        )
        self.spec = spec
        self.path = path


class ColumnNotFound(DataError):
    """A price column that the file or shipped ticker does not have."""


def normalise_column(name: Any) -> str:
    """A column name as a key: case-insensitive, spaces and underscores the same.

    ``"Adj Close"``, ``"adj_close"`` and ``" ADJ CLOSE "`` all give ``"adj_close"``. The one
    normaliser of column names (CSV files, shipped tickers, replay frames).
    """
    return str(name).strip().lower().replace(" ", "_")


def shipped_ticker(spec: Any, base_dir: str | Path | None = None) -> str | None:
    """The shipped ticker ``spec`` names, or None: the one "ticker or CSV?" rule.

    ``spec`` names a shipped ticker if it is one of :data:`TICKERS` (any case) and no file
    of that name exists (relative names against ``base_dir``, default the working
    directory): a user's file wins over the shipped data.
    """
    if not isinstance(spec, str) or spec.upper() not in TICKERS:
        return None
    if (Path(base_dir) / spec if base_dir is not None else Path(spec)).exists():
        return None
    return spec.upper()


def resolve_prices(
    spec: str, column: str | None = None, *, base_dir: str | Path | None = None
) -> pd.Series:
    """Prices from a CSV file or a shipped ticker name (``AAPL``, ``GOOG``, ``IBM``, ``MSFT``).

    Parameters
    ----------
    spec
        A CSV path (relative ones against ``base_dir``) or a shipped ticker; a file of the
        same name as a ticker wins (:func:`shipped_ticker`).
    column
        Price column (see :func:`read_csv`); a shipped ticker gives ``adj_close`` unless
        this says otherwise.
    base_dir
        Directory of relative paths (a TOML file's directory); default the working directory.

    Raises
    ------
    PricesNotFound
        Neither a file nor a shipped ticker.
    ColumnNotFound
        No such column.
    DataError
        Bad values (see :func:`read_csv`).
    """
    ticker = shipped_ticker(spec, base_dir)
    if ticker is not None:
        frame = load(ticker)
        key = "adj_close" if column is None else normalise_column(column)
        if key not in frame.columns:
            raise ColumnNotFound(
                f"ticker {ticker} has no column {column!r}; columns: {', '.join(frame.columns)}"
            )
        series = frame[key].astype(float)
        series.name = f"{ticker} {key}"
        return series
    path = Path(spec)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise PricesNotFound(spec, path)
    return read_csv(path, column=column)


@functools.cache
def _stocks() -> pd.DataFrame:
    path = resources.files("quoteflow.data").joinpath("stocks.csv.gz")
    with resources.as_file(path) as p:
        df = pd.read_csv(p, compression="gzip", parse_dates=["Date"])
    df = df.rename(columns=_COLUMNS).rename(columns={"Ticker": "ticker"})
    return df


def load(ticker: str) -> pd.DataFrame:
    """Daily history of a shipped ticker.

    Parameters
    ----------
    ticker
        One of :data:`TICKERS` (case-insensitive).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``date`` (ascending), columns ``open, high, low, close, volume,
        adj_close``. Prices in USD; ``adj_close`` is split/dividend adjusted and is what
        models should be fitted on.

    Raises
    ------
    DataError
        If the ticker is not shipped (the message lists the shipped ones).
    """
    key = str(ticker).upper()
    if key not in TICKERS:
        raise DataError(f"unknown ticker {ticker!r}; shipped tickers: {', '.join(TICKERS)}")
    df = _stocks()
    out = df.loc[df["ticker"] == key].drop(columns="ticker").set_index("date").sort_index()
    out.index.name = "date"
    return out.copy()


def load_all(column: str = "adj_close") -> pd.DataFrame:
    """One column of every shipped ticker side by side (dates where all four trade)."""
    frames = {t: load(t)[column] for t in TICKERS}
    return pd.DataFrame(frames).dropna()


def read_csv(
    path: str | Path,
    column: str | None = None,
    *,
    date_column: str | None = None,
) -> pd.Series:
    """Read one price column of a CSV file as a date-indexed Series.

    Parameters
    ----------
    path
        CSV file with a header row.
    column
        Price column (case-insensitive; spaces and underscores are interchangeable, so
        ``adj_close`` finds ``Adj Close``). Default: ``adj_close`` if present, else ``close``,
        else the only numeric column.
    date_column
        Date column; default: a column called ``date`` (any case) or ``timestamp``, if any.
        Without one, the series gets a plain integer index.

    Returns
    -------
    pandas.Series
        Float prices, sorted by date, named after the column.

    Raises
    ------
    DataError
        Missing file or column, unparsable dates, non-numeric values, NaN, non-positive
        prices; each message names the column and the row (1-based, as in the file with
        its header at line 1).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a directory, not a CSV file")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {p} as CSV: {exc}") from None
    if df.empty:
        raise DataError(f"{p} has no data rows")

    norm = normalise_column
    by_norm = {norm(c): c for c in df.columns}
    if column is None:
        for cand in ("adj_close", "close", "price"):
            if cand in by_norm:
                column = by_norm[cand]
                break
        else:
            numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
            if len(numeric) != 1:
                raise DataError(
                    f"{p}: say which price column to use (column=...); columns: {list(df.columns)}"
                )
            column = numeric[0]
    elif norm(column) in by_norm:
        column = by_norm[norm(column)]
    else:
        raise ColumnNotFound(f"{p}: no column {column!r}; columns: {list(df.columns)}")

    if date_column is None:
        for cand in ("date", "timestamp", "time", "datetime"):
            if cand in by_norm:
                date_column = by_norm[cand]
                break
    elif norm(date_column) in by_norm:
        date_column = by_norm[norm(date_column)]
    else:
        raise DataError(f"{p}: no date column {date_column!r}; columns: {list(df.columns)}")

    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{p}: column {column!r} is not numeric: {df[column].iloc[i]!r} at line {i + 2}"
        )
    if values.isna().any():
        i = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{p}: column {column!r} has a missing value (NaN) at line {i + 2}")
    if (values <= 0).any():
        i = int(np.flatnonzero((values <= 0).to_numpy())[0])
        raise DataError(
            f"{p}: column {column!r} must be positive: {float(values.iloc[i])!r} at line {i + 2}"
        )
    series = values.astype(float)
    if date_column is not None:
        dates = pd.to_datetime(df[date_column], errors="coerce", format="mixed")
        if dates.isna().any():
            i = int(np.flatnonzero(dates.isna().to_numpy())[0])
            raise DataError(
                f"{p}: cannot parse date {df[date_column].iloc[i]!r} in column "
                f"{date_column!r} at line {i + 2}"
            )
        series.index = pd.DatetimeIndex(dates, name="date")
        series = series.sort_index()
        if series.index.has_duplicates:
            dup: Any = series.index[series.index.duplicated()][0]
            raise DataError(f"{p}: duplicate date {dup.date()} in column {date_column!r}")
    series.name = str(column)
    return series
