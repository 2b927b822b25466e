"""Where market events come from: the event type, the :class:`Source` interface, replay and relay.

Three sources feed the broker through the same small interface (docs/internals.md,
"Events from sources"):

- :class:`quoteflow.market.Market`, the simulated market (models + correlated shocks);
- :class:`Replay`, real daily history (shipped tickers or a user's CSV/DataFrame) played
  back as ticks and daily bars at a chosen speed;
- :class:`Relay`, an upstream SSE feed (another quoteflow server or any SSE URL) whose
  ``tick``/``bar``/``trade``/``session`` events are re-published locally. This is also how a real vendor feed
  would be plugged in.

Every source yields *batches*: one list of :class:`MarketEvent` per tick round, all
symbols' quotes of that round followed by the bars that closed in it. The broker assigns
ids and adds ``"seq"``; sources never do.

The small helpers that turn float prices into quotes (:func:`iso_ms`, :func:`round_prices`,
:func:`quote_sides`) live here so that every source formats quotes the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from quoteflow.errors import ConfigError, DataError
from quoteflow.wire.payload import EVENT_TYPES

__all__ = [
    "Catalog",
    "MarketEvent",
    "Relay",
    "Replay",
    "Source",
    "iso_ms",
    "paced",
    "quote_sides",
    "round_prices",
]

log = logging.getLogger(__name__)

#: 1-D float array with one entry per symbol, shape ``(n_symbols,)``.
SymbolFloats: TypeAlias = npt.NDArray[np.float64]
#: 1-D integer array with one entry per symbol, shape ``(n_symbols,)``.
SymbolInts: TypeAlias = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class MarketEvent:
    """One event produced by a source, before the broker numbers it.

    Attributes
    ----------
    event
        SSE event type: ``"tick"`` or ``"bar"``.
    symbol
        The symbol the event is about (used for per-symbol subscriptions).
    data
        JSON-able payload without ``"seq"``: a tick is
        ``{"symbol", "price", "bid", "ask", "size", "ts"}``, a bar is
        ``{"symbol", "open", "high", "low", "close", "volume", "start", "end"}``.
    """

    event: str
    symbol: str
    data: dict[str, Any]


class Catalog(ABC):
    """What the server asks of any source of symbols: names, descriptions, live changes.

    A :class:`Source` is a catalog that also produces the events. A serving-only
    instance of a cluster (``quoteflow serve --broker redis://...``) has a catalog and
    no events of its own: they reach its broker from another process
    (:class:`quoteflow.broker.redis.StreamSource`).

    ``lag_seconds`` is how late the most recent batch was relative to its wall-clock
    deadline (exported by the server as "generation lag"); sources that are not paced by
    a clock leave it at 0. ``prices_reseeded`` counts prices a model source had to
    restart (see ``Market._guard``).
    """

    #: Lateness of the latest batch against its deadline, in seconds (0 when on time).
    lag_seconds: float = 0.0
    #: Deadlines skipped because the consumer fell more than one interval behind
    #: (see :func:`paced`).
    ticks_skipped: int = 0
    #: Prices the source replaced because its model drove them out of the streamable range
    #: or made them non-finite (the market's price guard); exported as
    #: ``quoteflow_prices_reseeded``. Sources without models leave it at 0.
    prices_reseeded: int = 0
    #: Seconds per OHLCV bar of the source's ``bar`` events (the base of ``/history``);
    #: None when it does not say (a relay, a serving-only cluster member).
    bar_interval: float | None = None

    @property
    @abstractmethod
    def symbols(self) -> list[str]:
        """The symbols this source emits (for a relay: the ones seen so far)."""

    @property
    def symbols_known(self) -> bool:
        """False while the source cannot tell which symbols exist yet (then an unknown
        symbol is answered 503 "retry", not 400)."""
        return True

    @abstractmethod
    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol ``{"model": name, "params": {...}, "price": last price}`` (``GET /symbols``)."""

    @abstractmethod
    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Change a symbol's parameters live; return the new parameters.

        Raises
        ------
        ConfigError
            Naming the unknown symbol or the bad parameter and what is allowed.
        """

    async def aupdate(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`update`, awaitable (what ``PUT /symbols/{symbol}`` calls).

        A source whose changes travel (a serving instance forwarding to its producer)
        overrides this; ``ConnectionError`` then means nobody answered.
        """
        return self.update(symbol, params)

    def close(self) -> None:
        """Release what the source holds (server shutdown); nothing by default."""
        return None

    async def aclose(self) -> None:
        """:meth:`close`, awaitable (what the server calls at shutdown); a source that
        must await its release overrides this."""
        self.close()


class Source(Catalog):
    """Anything that produces market events for the broker (docs/internals.md).

    Subclasses implement :attr:`symbols`, :meth:`batches`, :meth:`describe` and
    :meth:`update`.
    """

    @abstractmethod
    def batches(self) -> AsyncIterator[list[MarketEvent]]:
        """Yield one batch of events per tick round, paced by the wall clock."""


# --------------------------------------------------------------------------- quote helpers


async def paced(
    source: Source,
    step: Callable[[], list[MarketEvent]],
    interval: float | Callable[[], float],
    done: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[list[MarketEvent], None]:
    """Yield ``step()`` every ``interval`` seconds until ``done()``: the one pacing loop.

    Deadline schedule: batch ``k`` is due at ``start + k * interval`` on the event
    loop's monotonic clock, so sleeping late never accumulates drift. At most one batch is
    produced per wake-up. A batch that is late is produced at once and its lateness
    recorded in ``source.lag_seconds``; if the loop has fallen more than one whole
    interval behind, the missed deadlines are skipped (counted in
    ``source.ticks_skipped``) instead of being produced in a burst. Empty batches are not
    yielded.

    ``interval`` may be a function, asked before every batch (a scenario's burst changes
    the pace): a new value applies from the previous batch's deadline on.
    """
    pace: Callable[[], float] = interval if callable(interval) else (lambda: interval)
    loop = asyncio.get_running_loop()
    start = loop.time()
    current = pace()
    k = 0
    while not done():
        now_interval = pace()
        if now_interval != current:
            # Re-base the schedule on the previous deadline: the schedule stays drift-free.
            start += max(k - 1, 0) * current
            k = min(k, 1)
            current = now_interval
        due = start + k * current
        delay = due - loop.time()
        # sleep(0) when late still yields once, so clients get served between batches.
        await asyncio.sleep(max(delay, 0.0))
        source.lag_seconds = max(0.0, -delay)
        batch = step()
        if batch:
            yield batch
        k += 1
        behind = loop.time() - (start + k * current)
        if behind > current:
            missed = int(behind // current)
            k += missed
            source.ticks_skipped += missed


def iso_ms(t: float) -> str:
    """Format a POSIX time as ISO-8601 UTC with milliseconds, e.g. ``2026-11-27T02:03:04.567Z``.

    Milliseconds are truncated, not rounded, so a timestamp never lies in the future of the
    clock reading it came from.

    Parameters
    ----------
    t
        Seconds since the Unix epoch (``time.time()``).
    """
    ms_total = math.floor(t * 1000.0)
    secs, ms = divmod(ms_total, 1000)
    stamp = datetime.fromtimestamp(secs, UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


def _decimal_scale(prices: SymbolFloats) -> SymbolFloats | float:
    """``10**decimals`` per price: cents at or above 1, 4 significant digits below 1."""
    if prices.size == 0 or float(prices.min()) >= 1.0:
        return 100.0  # the common case, kept scalar so the hot path stays one multiply
    safe = np.maximum(prices, 1e-300)
    # 4 significant digits: a price in [10^-k, 10^(1-k)) needs 3 + k decimals.
    decimals = np.where(prices >= 1.0, 2.0, np.clip(3.0 - np.floor(np.log10(safe)), 2.0, 12.0))
    scale: SymbolFloats = 10.0**decimals
    return scale


def round_prices(prices: SymbolFloats) -> SymbolFloats:
    """Round prices to quote precision: cents for prices >= 1, else 4 significant digits.

    ``round(p * 10**d) / 10**d`` returns the double nearest to the decimal quote, so its
    ``repr`` (and therefore its JSON) is the short decimal (``123.45``, not ``123.4500001``).
    """
    scale = _decimal_scale(prices)
    out: SymbolFloats = np.round(prices * scale) / scale
    return out


def quote_sides(
    prices: SymbolFloats, spread_bps: SymbolFloats | float
) -> tuple[SymbolFloats, SymbolFloats, SymbolFloats]:
    """Rounded price, bid and ask for each symbol.

    ``bid = price * (1 - s/2)`` rounded *down* and ``ask = price * (1 + s/2)`` rounded *up*
    to the quote precision, with ``s = spread_bps / 10_000``; so ``bid <= price <= ask``
    always holds on the wire, and ``bid < price < ask`` whenever the spread is positive.

    Parameters
    ----------
    prices
        Model prices, shape ``(n,)``, all > 0.
    spread_bps
        Full bid-ask spread in basis points of the price (scalar or one per symbol).

    Returns
    -------
    tuple of ndarray
        ``(price, bid, ask)``, each shape ``(n,)``.
    """
    scale = _decimal_scale(prices)
    price: SymbolFloats = np.round(prices * scale) / scale
    half = price * (np.asarray(spread_bps, dtype=np.float64) * 0.5e-4)
    # The 1e-6 guard stops float noise (9994.999999999998) from pushing a quote that lies
    # exactly on the grid one tick further out.
    bid: SymbolFloats = np.floor((price - half) * scale + 1e-6) / scale
    ask: SymbolFloats = np.ceil((price + half) * scale - 1e-6) / scale
    return price, bid, ask


# --------------------------------------------------------------------------------- replay


_ALIASES = {
    "ticker": "symbol",
    "adj close": "adj_close",
    "adjclose": "adj_close",
    "timestamp": "date",
    "datetime": "date",
    "time": "date",
}


def _norm_col(name: Any) -> str:
    from quoteflow.data import normalise_column

    key = str(name).strip().lower()
    key = normalise_column(_ALIASES.get(key, key))
    return _ALIASES.get(key, key)


def _long_frame(
    source: pd.DataFrame | str | Path | None,
    symbols: Sequence[str] | None,
) -> pd.DataFrame:
    """Normalise any accepted replay input to a long frame with ``symbol``, ``date``, prices."""
    from quoteflow import data

    if source is None or data.shipped_ticker(source) is not None:
        names = (
            [str(source).upper()]
            if source is not None
            else [s.upper() for s in symbols]
            if symbols
            else list(data.TICKERS)
        )
        frames = []
        for name in names:
            try:
                df = data.load(name)
            except DataError as exc:
                raise ConfigError(f"replay: {exc}") from None
            frames.append(df.reset_index().assign(symbol=name))
        return pd.concat(frames, ignore_index=True)

    label = "DataFrame"
    if isinstance(source, str | Path):
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ConfigError(
                f"replay: no such file {path}; give a CSV path or a shipped ticker "
                f"({', '.join(data.TICKERS)})"
            )
        if path.is_dir():
            raise ConfigError(f"replay: {path} is a directory, not a CSV file")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ConfigError(f"replay: cannot read {path} as CSV: {exc}") from None
    elif isinstance(source, pd.DataFrame):
        frame = source.copy()
        if frame.index.name is not None or isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.reset_index()
    else:
        raise ConfigError(
            f"replay: expected a DataFrame, a CSV path or a shipped ticker, "
            f"got {type(source).__name__}"
        )

    frame = frame.rename(columns={c: _norm_col(c) for c in frame.columns})
    if frame.columns.duplicated().any():
        raise ConfigError(f"replay: {label}: duplicate columns after normalising names")
    if "date" not in frame.columns:
        raise ConfigError(f"replay: {label}: no date column; columns: {list(frame.columns)}")
    if "symbol" not in frame.columns:
        if symbols is None or len(symbols) != 1:
            stem = Path(label).stem.upper() if label != "DataFrame" else None
            if stem is None:
                raise ConfigError(
                    f"replay: {label} has no ticker/symbol column; name its one series with "
                    "symbols=['NAME']"
                )
            frame["symbol"] = stem
        else:
            frame["symbol"] = str(symbols[0])
    frame["symbol"] = frame["symbol"].astype(str)
    dates = pd.to_datetime(frame["date"], errors="coerce", format="mixed")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise ConfigError(
            f"replay: {label}: cannot parse date {frame['date'].iloc[i]!r} in row {i + 1}"
        )
    frame["date"] = dates
    return frame


def _lot(volume: float) -> int:
    return int(volume) if math.isfinite(volume) and volume > 0 else 0


class Replay(Source):
    """Replay real daily history as a live feed: one tick per symbol per row, plus daily bars.

    Every row (trading day) becomes one tick round: each symbol that traded that day emits
    a tick whose ``price`` is the chosen column (``adj_close`` by default, split/dividend
    adjusted), ``bid``/``ask`` a ``spread_bps`` spread around it and ``size`` the day's
    volume; then a ``bar`` with the day's open/high/low/close/volume. When the price column
    is ``adj_close`` the raw open/high/low/close are scaled by ``adj_close / close`` (the
    usual back-adjustment, e.g. Yahoo Finance's), so a bar's ``close`` equals its tick's
    price and a split is not a crash on the chart. Rows without OHLC get a flat bar at
    the price.

    ``ts``, ``start`` and ``end`` are wall-clock times (when the row was replayed), like a
    live feed's, so latency metrics stay meaningful; the historical day is in the extra
    field ``"date"`` (``YYYY-MM-DD``) of ticks and bars, and their ``"sim_ts"`` is that
    day at midnight UTC (``2005-02-28T00:00:00.000Z``).

    Parameters
    ----------
    source
        ``None`` (the shipped tickers, :data:`quoteflow.data.TICKERS`), a shipped ticker
        name, a path to a CSV file, or a DataFrame. A CSV/DataFrame is either *long*
        (a ``ticker`` or ``symbol`` column, a ``date`` column and price columns; column
        names are case-insensitive, ``Adj Close`` = ``adj_close``) or a single series
        (no ticker column; named by ``symbols=["NAME"]`` or, for a file, its stem).
    symbols
        Which symbols to replay (default: all in the data), in this order.
    column
        Price column for ticks (default ``adj_close`` if present, else ``close``).
    rows_per_second
        Replay speed in rows (trading days) per wall second; one tick round every
        ``1 / rows_per_second`` seconds; ``rows_per_second=252`` plays about one year of
        history per wall second.
    spread_bps
        Full bid-ask spread in basis points.
    loop
        Start again from the first row after the last one (prices jump back); otherwise
        :meth:`batches` ends after the last row.
    clock
        Function returning POSIX seconds, for ``ts`` (injectable for tests).

    Raises
    ------
    ConfigError
        Unknown ticker or file, missing columns, unknown symbols, bad prices (naming the
        symbol and date), non-positive speed.
    """

    def __init__(
        self,
        source: pd.DataFrame | str | Path | None = None,
        symbols: Sequence[str] | None = None,
        *,
        column: str | None = None,
        rows_per_second: float = 4.0,
        spread_bps: float = 10.0,
        loop: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(rows_per_second, int | float) and rows_per_second > 0):
            raise ConfigError(f"replay: rows_per_second must be > 0, got {rows_per_second!r}")
        if not (isinstance(spread_bps, int | float) and 0 <= spread_bps < 10_000):
            raise ConfigError(f"replay: spread_bps must be in [0, 10000), got {spread_bps!r}")
        from quoteflow import data

        shipped = source is None or data.shipped_ticker(source) is not None
        if shipped and symbols is not None:
            symbols = [str(s).upper() for s in symbols]  # shipped tickers: any case
        frame = _long_frame(source, symbols)
        if column is None:
            column = "adj_close" if "adj_close" in frame.columns else "close"
        col = _norm_col(column)
        if col not in frame.columns:
            raise ConfigError(
                f"replay: no price column {column!r}; columns: {[c for c in frame.columns]}"
            )
        present = list(dict.fromkeys(frame["symbol"]))
        if symbols is not None and "symbol" in frame.columns:
            wanted = [str(s) for s in symbols]
            unknown = [s for s in wanted if s not in present]
            if unknown:
                raise ConfigError(
                    f"replay: unknown symbol(s) {', '.join(unknown)}; in the data: {', '.join(present)}"
                )
            present = wanted
            frame = frame[frame["symbol"].isin(wanted)]
        self._names = present
        self.column = col
        self.rows_per_second = float(rows_per_second)
        self.tick_interval = 1.0 / self.rows_per_second
        self.spread_bps = float(spread_bps)
        self.loop = loop
        self._clock = clock

        dup = frame.duplicated(subset=["symbol", "date"])
        if dup.any():
            row = frame[dup].iloc[0]
            raise ConfigError(f"replay: duplicate row for {row['symbol']} on {row['date'].date()}")
        wide = frame.pivot(index="date", columns="symbol").sort_index()
        self._dates: list[str] = [d.strftime("%Y-%m-%d") for d in wide.index]

        def matrix(name: str) -> SymbolFloats | None:
            if name not in frame.columns:
                return None
            values = pd.DataFrame(wide[name]).reindex(columns=self._names)
            arr = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            return np.asarray(arr, dtype=np.float64)

        price = matrix(col)
        assert price is not None
        bad = ~np.isnan(price) & ~(np.isfinite(price) & (price > 0))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ConfigError(
                f"replay: {self._names[c]} {col} must be a positive number, got "
                f"{float(price[r, c])!r} on {self._dates[r]}"
            )
        self._price = price
        factor: SymbolFloats | float = 1.0
        raw_close = matrix("close")
        if col == "adj_close" and raw_close is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                factor = np.where(raw_close > 0, price / raw_close, np.nan)
        ohlc = []
        for name in ("open", "high", "low"):
            m = matrix(name)
            ohlc.append(price if m is None else m * factor)
        o, h, lo = ohlc
        # A bar always contains its own close, even if a vendor's high/low disagree.
        with np.errstate(invalid="ignore"):
            self._open = np.where(np.isfinite(o), o, price)
            self._high = np.fmax(np.where(np.isfinite(h), h, price), price)
            self._low = np.fmin(np.where(np.isfinite(lo), lo, price), price)
        vol = matrix("volume")
        self._volume = np.zeros_like(price) if vol is None else np.nan_to_num(vol, nan=0.0)
        self._row = 0
        self._last: dict[str, float] = {}

    @property
    def symbols(self) -> list[str]:
        """The replayed symbols."""
        return list(self._names)

    @property
    def done(self) -> bool:
        """True once every row has been emitted (never with ``loop=True``)."""
        return not self.loop and self._row >= len(self._dates)

    def step(self, now: float | None = None) -> list[MarketEvent]:
        """Emit the next row: ticks of the symbols that traded that day, then their bars.

        Returns an empty list once the history is exhausted (and ``loop`` is off).
        """
        if self._row >= len(self._dates):
            if not self.loop or not self._dates:
                return []
            self._row = 0
        r = self._row
        self._row += 1
        ts = iso_ms(self._clock() if now is None else now)
        day = self._dates[r]
        # Simulated time of a replayed row: its historical day (midnight UTC).
        sim_ts = f"{day}T00:00:00.000Z"
        row = self._price[r]
        have = np.flatnonzero(~np.isnan(row))
        price, bid, ask = quote_sides(row[have], self.spread_bps)
        o = round_prices(self._open[r, have])
        h = round_prices(self._high[r, have])
        lo = round_prices(self._low[r, have])
        ticks: list[MarketEvent] = []
        bars: list[MarketEvent] = []
        for k, j in enumerate(have.tolist()):
            sym = self._names[j]
            p = float(price[k])
            size = _lot(float(self._volume[r, j]))
            self._last[sym] = p
            ticks.append(
                MarketEvent(
                    "tick",
                    sym,
                    {
                        "symbol": sym,
                        "price": p,
                        "bid": float(bid[k]),
                        "ask": float(ask[k]),
                        "size": size,
                        "ts": ts,
                        "sim_ts": sim_ts,
                        "date": day,
                    },
                )
            )
            bars.append(
                MarketEvent(
                    "bar",
                    sym,
                    {
                        "symbol": sym,
                        "open": float(o[k]),
                        "high": max(float(h[k]), p),
                        "low": min(float(lo[k]), p),
                        "close": p,
                        "volume": size,
                        "start": ts,
                        "end": ts,
                        "sim_ts": sim_ts,
                        "date": day,
                    },
                )
            )
        return ticks + bars

    async def batches(self) -> AsyncGenerator[list[MarketEvent], None]:
        """Yield one row every ``1 / rows_per_second`` seconds (deadline schedule, no drift).

        Ends after the last row unless ``loop`` is on. When the consumer is late by more
        than one interval, missed deadlines are dropped (the replay slows down rather than
        bursting) and ``lag_seconds`` records the lateness (see :func:`paced`).
        """
        async for batch in paced(self, self.step, self.tick_interval, lambda: self.done):
            yield batch

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol ``{"model": "replay", "params": {...}, "price": last emitted price}``."""
        out: dict[str, dict[str, Any]] = {}
        for j, sym in enumerate(self._names):
            col = self._price[:, j]
            rows = np.flatnonzero(~np.isnan(col))
            first = self._dates[rows[0]] if rows.size else None
            last = self._dates[rows[-1]] if rows.size else None
            out[sym] = {
                "model": "replay",
                "params": {
                    "column": self.column,
                    "rows_per_second": self.rows_per_second,
                    "first_date": first,
                    "last_date": last,
                    "loop": self.loop,
                },
                "price": self._last.get(sym),
            }
        return out

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Always raises: a replay plays recorded history, whose parameters cannot change."""
        raise ConfigError("replay source: parameters cannot be changed")


# ---------------------------------------------------------------------------------- relay


class Relay(Source):
    """Re-publish an upstream SSE feed (a quoteflow server or any SSE URL) as local events.

    Upstream events of the market types (``tick``, ``bar``, ``trade``, ``session``:
    :data:`quoteflow.wire.EVENT_TYPES`) whose data is a JSON object with a string
    ``"symbol"`` are re-published unchanged except that the upstream ``"seq"`` is dropped:
    the local broker numbers events itself, so local ids are independent of the upstream's.
    Everything else (other event types such as ``reset`` or ``message``, non-JSON data,
    JSON without a symbol) is *skipped and counted* in :attr:`skipped` by reason, never
    passed through: subscribers of a quoteflow stream only ever see market events.

    The connection is :func:`quoteflow.client.stream`: it reconnects with backoff, resumes
    with ``Last-Event-ID`` and detects silent connections, so a relay survives upstream
    restarts.

    Parameters
    ----------
    url
        Upstream stream URL, e.g. ``http://host:8080/stream``.
    symbols
        Only relay these symbols (also sent upstream as ``?symbols=``, and enforced
        locally for feeds that ignore it). Default: everything.
    **client_options
        Passed to :func:`quoteflow.client.stream` (e.g. ``token=...``).
    """

    def __init__(
        self, url: str, symbols: Sequence[str] | None = None, **client_options: Any
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"relay: url must be an http:// or https:// URL, got {url!r}")
        self.url = url
        self._wanted = [str(s) for s in symbols] if symbols else None
        self._client_options = client_options
        self._last: dict[str, float | None] = {}
        #: Upstream events not re-published, by reason (event type or "not-json"/"no-symbol").
        self.skipped: dict[str, int] = {}
        #: Upstream events re-published.
        self.relayed = 0
        #: The live upstream connection (:class:`quoteflow.client.EventStream`) while
        #: :meth:`batches` runs, for status (reconnects, last error); ``None`` before.
        self.upstream: Any = None

    @property
    def symbols(self) -> list[str]:
        """The requested symbols, or (without a filter) the symbols seen so far."""
        return list(self._wanted) if self._wanted is not None else list(self._last)

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def convert(self, event: str, data: str) -> MarketEvent | None:
        """Turn one upstream SSE event into a :class:`MarketEvent`, or ``None`` to skip it."""
        if event not in EVENT_TYPES:
            self._skip(event or "message")
            return None
        try:
            payload = json.loads(data)
        except ValueError:
            self._skip("not-json")
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("symbol"), str):
            self._skip("no-symbol")
            return None
        symbol: str = payload["symbol"]
        if self._wanted is not None and symbol not in self._wanted:
            self._skip("unwanted-symbol")
            return None
        payload.pop("seq", None)
        price = payload.get("close" if event == "bar" else "price")
        if isinstance(price, int | float):
            self._last[symbol] = float(price)
        else:  # a session event: the symbol is known, its price unchanged
            self._last.setdefault(symbol, None)
        self.relayed += 1
        return MarketEvent(event, symbol, payload)

    async def batches(self) -> AsyncGenerator[list[MarketEvent], None]:
        """Yield each relayed upstream event as a one-event batch, as it arrives.

        Pacing is the upstream's; ``lag_seconds`` stays 0. Runs until cancelled or until
        the client gives up (it raises :class:`quoteflow.errors.StreamError` on 204 / 401 /
        403 / 404).
        """
        from quoteflow.client import stream

        # The context manager closes the upstream connection when the consumer stops
        # iterating (aclose / cancellation), so a stopped relay leaves no socket behind.
        async with stream(self.url, symbols=self._wanted, **self._client_options) as upstream:
            self.upstream = upstream
            async for ev in upstream:
                converted = self.convert(ev.event, ev.data)
                if converted is not None:
                    yield [converted]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol seen ``{"model": "relay", "params": {"url": ...}, "price": last}``."""
        return {
            sym: {"model": "relay", "params": {"url": self.url}, "price": self._last.get(sym)}
            for sym in self.symbols
        }

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Always raises: a relayed feed is controlled upstream."""
        raise ConfigError(
            f"relay source: parameters cannot be changed here; change them upstream at {self.url}"
        )
