"""The market engine: symbols -> models, correlated shocks, a clock, ticks and bars.

See :mod:`quoteflow.market` for the whole picture; this module holds :class:`Market`
itself (model bookkeeping, the GBM fast path, the price guard, stepping, events).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import math
import threading
import time
import tomllib
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quoteflow.errors import ConfigError
from quoteflow.market.bars import BarAccumulator, BarArrays, TickArrays, TradeBarAccumulator
from quoteflow.market.config import check_step, market_from_config, number, short_list
from quoteflow.market.correlation import (
    IndexArray,
    SquareMatrix,
    correlation_factor,
    resolve_correlation,
)
from quoteflow.market.defaults import default_calibration
from quoteflow.market.sessions import SIM_SECONDS_PER_YEAR, SimClock, iso_from_ns
from quoteflow.market.trades import TradeArrays, TradeSettings, draw_trades
from quoteflow.models import GBM, MeanReversion, PriceModel, Stepper, build_model
from quoteflow.models.base import FitResult
from quoteflow.models.dcc import DCC, DCCFitResult, DCCTracker
from quoteflow.models.limits import MAX_PRICE, MIN_PRICE
from quoteflow.sources import (
    MarketEvent,
    Source,
    SymbolFloats,
    iso_ms,
    paced,
    quote_sides,
)
from quoteflow.wire.payload import TRADE_SIDES, EncodedBatch, PayloadEncoder, encode_payload

__all__ = ["DEFAULT_SPEED", "GUARD_LOG_INTERVAL", "Market", "session_event"]

log = logging.getLogger("quoteflow.market")

#: The price guard logs at most one summary line per this many seconds.
GUARD_LOG_INTERVAL = 10.0

#: Default speed: one trading day (1/252 year) of simulated time per wall-clock second.
DEFAULT_SPEED = 1.0 / 252.0


def session_event(
    symbol: str, state: str, ts: str, sim_ts: str
) -> tuple[MarketEvent, tuple[dict[str, Any], str]]:
    """A ``session`` event (:data:`~quoteflow.wire.payload.SESSION_FIELDS`) and its JSON.

    The one builder of session payloads: the calendar's opens and closes here, a
    scenario's halts, resumes, listings and delistings (:mod:`quoteflow.scenario`).
    """
    data = {"symbol": symbol, "state": state, "ts": ts, "sim_ts": sim_ts}
    return MarketEvent("session", symbol, data), (data, encode_payload(data))


@dataclass(slots=True)
class _Group:
    """Non-GBM symbols stepped by one model stepper (same model, same parameters)."""

    model: PriceModel
    stepper: Stepper
    cols: IndexArray  # path positions inside the stepper
    syms: IndexArray  # the market indices of those paths


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a batch of events is built.

    A 10,000-symbol tick allocates 10,000 GC-tracked events (none in a reference cycle).
    Left alone, the collector would run ~14 young-generation passes per tick, and the
    older generations, which hold the broker's replay buffer, proportionally more often;
    measured, that doubles (with a replay buffer, triples) the CPU time of a tick. Pausing
    it lets one pass run after the batch. A collector that was already disabled by the
    application stays disabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _checked_names(symbols: Any) -> list[str]:
    """The symbol names of a ``{symbol: model}`` mapping, or a ``ConfigError``."""
    if not isinstance(symbols, Mapping) or not symbols:
        raise ConfigError("market: symbols must be a non-empty mapping {symbol: model}")
    names = [str(s) for s in symbols]
    for name, model in symbols.items():
        if not isinstance(name, str) or not name or not name.isprintable() or "," in name:
            raise ConfigError(
                f"market: bad symbol name {name!r}: use a non-empty printable name without commas"
            )
        if not isinstance(model, PriceModel):
            raise ConfigError(
                f"market: symbols.{name}: expected a model (GBM, MeanReversion, GARCH), "
                f"got {type(model).__name__}"
            )
    return names


class Market(Source):
    """A simulated market: one price model per symbol, correlated shocks, ticks and bars.

    Parameters
    ----------
    symbols
        ``{symbol: model}``; at least one.
    s0
        Start price per symbol (default: ``theta`` for mean reversion, else 100).
    correlation
        Correlation of the shocks: ``None`` (independent); an ``(n, n)`` array-like in the
        order of ``symbols``; ``{"symbols": [...], "matrix": [[...]]}`` for a subset (the
        rest independent); or pairs ``{("AAPL", "MSFT"): 0.6}`` / ``{"AAPL/MSFT": 0.6}``
        (unlisted pairs 0). Validated by :func:`correlation_factor`. Or a
        :class:`~quoteflow.models.DCC` over some of the symbols: correlations that move
        with the DCC(1,1) recursion (each tick's shocks are drawn with the current ``R_t``,
        which then updates with those shocks).
    seed
        Seed of the shocks and lot sizes. The same seed and configuration give the same
        sequence of payloads (timestamps aside). ``None`` draws fresh entropy, readable
        afterwards as :attr:`seed` so a run can be reproduced.
    tick_interval
        Wall-clock seconds between ticks (the pace of :meth:`batches`), > 0.
    speed
        Simulated years per wall-clock second, > 0; each tick advances the models by
        ``dt = tick_interval * speed`` years. Default :data:`DEFAULT_SPEED`, one trading
        day (1/252 y) per second: a 30 % vol stock moves ~1.9 % per second.
    bar_interval
        Wall-clock seconds per OHLCV bar, rounded to a whole number of ticks (at least
        one); ``None`` disables bars.
    spread_bps
        Full bid-ask spread in basis points of the price: a scalar or ``{symbol: bps}``
        (others get the default, 10).
    lot_size
        Quote sizes are ``lot_size`` times a uniform random integer in 1..10.
    clock
        Function returning POSIX seconds for timestamps (default ``time.time``);
        inject a fake one for deterministic tests.
    calendar
        An exchange calendar (``exchange_calendars`` name, e.g. ``"XNYS"``): the market
        then trades in simulated sessions only, with an overnight gap, early closes and
        ``session`` events (docs/market.md, "Trading sessions"). ``None``: always open.
    start
        Start of simulated time (``"2024-11-25"``, an ISO date-time, a ``date``); default
        with a calendar: today; without one, ``sim_ts`` is the wall clock.
    closed_fraction
        Model time per second of closed market, as a fraction of a session second
        (``>= 0``, default 0.1): the horizon of the overnight gap.
    trades
        ``None`` (default: no trades) or the trade settings (:class:`TradeSettings` or a
        mapping of its fields, the ``[trades]`` table): the market then emits ``trade``
        events and builds its bars from them.

    Raises
    ------
    ConfigError
        For an empty or malformed ``symbols`` mapping, bad start prices, an invalid
        correlation matrix (naming the rule), non-positive intervals or speed.

    Notes
    -----
    Thread safety: :meth:`step`, :meth:`update`, :meth:`set_model` and :meth:`describe`
    take one lock, so notebook sliders (another thread) and ``PUT /symbols`` can change
    parameters while the server's event loop steps the market; a change applies from the
    next tick on.
    """

    def __init__(
        self,
        symbols: Mapping[str, PriceModel],
        s0: Mapping[str, float] | None = None,
        correlation: Any = None,
        seed: int | None = None,
        tick_interval: float = 0.25,
        speed: float = DEFAULT_SPEED,
        bar_interval: float | None = 5.0,
        spread_bps: float | Mapping[str, float] = 10.0,
        lot_size: int = 100,
        clock: Callable[[], float] = time.time,
        calendar: str | None = None,
        start: Any = None,
        closed_fraction: float = 0.1,
        trades: TradeSettings | Mapping[str, Any] | None = None,
    ) -> None:
        names = _checked_names(symbols)
        self.tick_interval = number(tick_interval, "market: tick_interval", gt=0.0)
        self.speed = number(speed, "market: speed", gt=0.0)
        self.dt = self.tick_interval * self.speed
        if bar_interval is None:
            self.bar_interval: float | None = None
            self._bar_ticks = 0
        else:
            self.bar_interval = number(bar_interval, "market: bar_interval", gt=0.0)
            if self.bar_interval < self.tick_interval * (1 - 1e-9):
                raise ConfigError(
                    f"market: bar_interval ({self.bar_interval:g} s) must be at least "
                    f"tick_interval ({self.tick_interval:g} s)"
                )
            self._bar_ticks = max(1, round(self.bar_interval / self.tick_interval))
        if isinstance(lot_size, bool) or not isinstance(lot_size, int) or lot_size < 1:
            raise ConfigError(f"market: lot_size must be an integer >= 1, got {lot_size!r}")
        self.lot_size = lot_size
        self._clock = clock

        n = len(names)
        self._names = names
        self._index = {s: i for i, s in enumerate(names)}
        self._models: list[PriceModel] = list(symbols.values())

        self._prices: SymbolFloats = self._start_prices(s0)

        self._spread: SymbolFloats | float = self._spreads(spread_bps)

        self._set_correlation(correlation)

        seq = np.random.SeedSequence(seed)
        #: The seed in force (the drawn entropy when ``seed=None``), to reproduce a run.
        self.seed: int = int(seq.entropy)  # type: ignore[arg-type]
        shock_seq, size_seq = seq.spawn(2)
        # Separate streams: the lot sizes never change the price path of a given seed.
        self._rng = np.random.default_rng(shock_seq)
        self._size_rng = np.random.default_rng(size_seq)
        # A third stream for trades (spawned after the others: their draws are unchanged).
        self._trade_rng = np.random.default_rng(seq.spawn(1)[0])
        #: The trade settings in force, or None when the market does not trade.
        self.trade_settings = None if trades is None else TradeSettings.from_config(trades)
        #: The simulated clock (sessions of ``calendar``, or free-running from ``start``).
        self.sim_clock = SimClock(
            self.dt * SIM_SECONDS_PER_YEAR,
            calendar=calendar,
            start=start,
            closed_fraction=number(closed_fraction, "market: closed_fraction", ge=0.0),
        )

        self._build_steppers()

        self._lock = threading.RLock()
        self._last_price, _, _ = quote_sides(self._prices.copy(), 0.0)
        self.ticks = 0
        self.ticks_skipped = 0
        #: Prices the guard replaced since start (see :meth:`_guard`).
        self.prices_reseeded = 0
        self._guard_unlogged: dict[str, int] = {}
        self._guard_logged_at = -math.inf
        self.lag_seconds = 0.0
        self._bars = BarAccumulator(n, self._bar_ticks)
        self._trade_bars = TradeBarAccumulator(n, self._bar_ticks)
        self._encoder = PayloadEncoder(self._names)
        # Per-symbol multiplier of the shocks (a scenario's volatility step); None: all 1.
        self._shock_scale: SymbolFloats | None = None

    # -------------------------------------------------------------------- construction

    def _start_prices(self, s0: Mapping[str, float] | None) -> SymbolFloats:
        """Start price per symbol (default ``theta`` for mean reversion, else 100), checked."""
        names = self._names
        n = len(names)
        s0 = dict(s0 or {})
        unknown = [s for s in s0 if s not in self._index]
        if unknown:
            raise ConfigError(
                f"market: s0 for unknown symbol(s) {', '.join(map(str, unknown))}; "
                f"symbols: {short_list(names)}"
            )
        start = np.empty(n)
        for i, (name, model) in enumerate(zip(names, self._models, strict=True)):
            default = model.theta if isinstance(model, MeanReversion) else 100.0
            start[i] = number(s0.get(name, default), f"market: s0.{name}", gt=0.0)
            if not MIN_PRICE <= start[i] <= MAX_PRICE:
                raise ConfigError(
                    f"market: s0.{name}: must be in [{MIN_PRICE:g}, {MAX_PRICE:g}], "
                    f"got {start[i]:g}"
                )
            check_step(model, self.dt, f"market: symbols.{name}")
        return start

    def _spreads(self, spread_bps: float | Mapping[str, float]) -> SymbolFloats | float:
        """The spread in bps: one for all, or per symbol (others 10)."""
        names = self._names
        n = len(names)
        if isinstance(spread_bps, Mapping):
            spread = np.full(n, 10.0)
            for name, bps in spread_bps.items():
                if name not in self._index:
                    raise ConfigError(
                        f"market: spread_bps for unknown symbol {name!r}; symbols: {short_list(names)}"
                    )
                spread[self._index[name]] = number(bps, f"market: spread_bps.{name}", ge=0.0)
            return spread
        return number(spread_bps, "market: spread_bps", ge=0.0)

    def _set_correlation(self, correlation: Any) -> None:
        """Validate and factor the shock correlation; keep only the correlated block."""
        names = self._names
        self._corr: tuple[IndexArray, SquareMatrix] | None = None
        # Only the correlated block is kept: a dense n x n matrix of a 10,000-symbol
        # universe would take 800 MB for an identity.
        self._corr_block: tuple[IndexArray, SquareMatrix] | None = None
        #: DCC correlations (symbol indices, the recursion's state), or None.
        self._dcc: tuple[IndexArray, DCCTracker] | None = None
        if isinstance(correlation, DCC):
            idx = np.asarray([self._symbol_index(s) for s in correlation.symbols], dtype=np.intp)
            self._dcc = (idx, correlation.tracker(self.dt))
            return
        resolved = resolve_correlation(correlation, names)
        if resolved is not None:
            idx, matrix = resolved
            factor = correlation_factor(matrix, [names[i] for i in idx])
            c = np.asarray(matrix, dtype=np.float64)  # validated by correlation_factor
            self._corr_block = (idx, 0.5 * (c + c.T))
            if not np.array_equal(factor, np.eye(len(idx))):
                self._corr = (idx, factor)

    def _build_steppers(self) -> None:
        """GBM symbols into the vectorised arrays, the others into shared-stepper groups."""
        n = len(self._names)
        # GBM symbols: per-symbol drift and volatility of the exact log-normal step.
        self._drift: SymbolFloats = np.zeros(n)
        self._vol: SymbolFloats = np.zeros(n)
        self._is_gbm = np.zeros(n, dtype=bool)
        self._groups: list[_Group] = []
        self._group_of: dict[int, _Group] = {}
        # Symbols with equal models (same class and parameters) share one stepper.
        by_model: dict[Any, tuple[PriceModel, list[int]]] = {}
        for i, model in enumerate(self._models):
            if isinstance(model, GBM):
                self._set_gbm(i, model)
                continue
            try:
                key: Any = (type(model), hash(model), model)
            except TypeError:  # a model with unhashable fields is stepped on its own
                key = id(model)
            by_model.setdefault(key, (model, []))[1].append(i)
        for model, members in by_model.values():
            self._new_group(model, members)
        self._refresh_gbm_index()

    # ----------------------------------------------------------------- model bookkeeping

    def _set_gbm(self, i: int, model: GBM) -> None:
        # Exact solution of GBM over one step (Glasserman 2003, eq. 3.15), the same update
        # as GBMStepper, but with per-symbol parameters so all GBM symbols step together.
        self._drift[i], self._vol[i] = model.step_coefficients(self.dt)
        self._is_gbm[i] = True

    def _refresh_gbm_index(self) -> None:
        self._gbm_idx: IndexArray = np.flatnonzero(self._is_gbm)
        self._all_gbm = bool(self._is_gbm.all())

    def _make_group(self, model: PriceModel, members: list[int]) -> _Group:
        idx = np.asarray(members, dtype=np.intp)
        return _Group(
            model=model,
            stepper=model.stepper(self._prices[idx].copy(), self.dt),
            cols=np.arange(len(members), dtype=np.intp),
            syms=idx,
        )

    def _add_group(self, group: _Group) -> None:
        self._groups.append(group)
        for i in group.syms.tolist():
            self._group_of[i] = group

    def _new_group(self, model: PriceModel, members: list[int]) -> None:
        self._add_group(self._make_group(model, members))

    def _assign(self, i: int, model: PriceModel) -> None:
        """Make ``model`` drive symbol ``i`` from the next tick on, keeping its price.

        All or nothing: whatever can fail (building a stepper, the step coefficients) runs
        before the first change to the market's state. A symbol alone in its stepper keeps
        the stepper's state (e.g. GARCH variance) when the model class is unchanged. A
        symbol that shared a stepper with others gets a fresh stepper of its own starting
        at its current price (its old path in the shared stepper is left running unread,
        since stepper state cannot be split generically).
        """
        # A degenerate price restarts first.
        self._guard(self._guard_logged_at, np.asarray([i], dtype=np.intp))
        group = self._group_of.get(i)
        if group is not None and len(group.syms) == 1 and type(group.model) is type(model):
            group.stepper.set_model(model)  # validates, then one assignment
            group.model = model
            self._models[i] = model
            return
        if isinstance(model, GBM):
            fresh, coefficients = None, model.step_coefficients(self.dt)
        else:
            fresh, coefficients = self._make_group(model, [i]), (0.0, 0.0)
        # Nothing below raises.
        if group is not None:
            del self._group_of[i]
            keep = group.syms != i
            group.cols, group.syms = group.cols[keep], group.syms[keep]
            if not len(group.syms):
                self._groups.remove(group)
        self._models[i] = model
        self._drift[i], self._vol[i] = coefficients
        self._is_gbm[i] = fresh is None
        if fresh is not None:
            self._add_group(fresh)
        self._refresh_gbm_index()

    def _guard(self, now: float, candidates: IndexArray | None = None) -> None:
        """Keep every price streamable: finite and in ``[MIN_PRICE, MAX_PRICE]``.

        A price outside (parameters at the edge of what the model can simulate, driven
        there over many steps, or a freak heavy-tailed shock) restarts at its last quoted
        price, clipped into the range, with a fresh model state (:meth:`Stepper.reseed`),
        so nothing non-finite or non-positive is ever streamed. Each restart is counted in
        :attr:`prices_reseeded` (exported by the server as ``quoteflow_prices_reseeded``)
        and summarised in one log line per :data:`GUARD_LOG_INTERVAL` seconds, never one
        per tick.

        Parameters
        ----------
        now
            Time of the tick (POSIX seconds, the market's clock), which paces the log.
        candidates
            Only check these symbols (default: all).
        """
        p = self._prices if candidates is None else self._prices[candidates]
        ok = (p >= MIN_PRICE) & (p <= MAX_PRICE)  # NaN fails both
        if ok.all():
            return
        bad = np.flatnonzero(~ok)
        if candidates is not None:
            bad = candidates[bad]
        restart = np.clip(self._last_price[bad], MIN_PRICE, MAX_PRICE)
        restart[~np.isfinite(restart)] = MIN_PRICE
        self._prices[bad] = restart
        for i, price in zip(bad.tolist(), restart.tolist(), strict=True):
            group = self._group_of.get(i)
            if group is not None:
                group.stepper.reseed(group.cols[group.syms == i], price)
            name = self._names[i]
            self._guard_unlogged[name] = self._guard_unlogged.get(name, 0) + 1
        self.prices_reseeded += bad.size
        if not now - self._guard_logged_at < GUARD_LOG_INTERVAL:  # (first time: -inf)
            counts = sorted(self._guard_unlogged.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{s} x{k}" for s, k in counts[:5])
            more = f" and {len(counts) - 5} more symbols" if len(counts) > 5 else ""
            log.warning(
                "price guard: restarted %d price(s) that left [%g, %g] or were not finite "
                "(%s%s) at their last quote; their parameters drive them out of range "
                "(quoteflow_prices_reseeded counts them)",
                sum(k for _, k in counts),
                MIN_PRICE,
                MAX_PRICE,
                shown,
                more,
            )
            self._guard_unlogged.clear()
            self._guard_logged_at = now

    def _symbol_index(self, symbol: str) -> int:
        i = self._index.get(symbol)
        if i is None:
            hint = difflib.get_close_matches(str(symbol), self._names, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"unknown symbol {symbol!r}{did}; known symbols: {short_list(self._names)}"
            )
        return i

    # ------------------------------------------------------------------ scenario hooks
    # Small primitives the scripted scenarios (quoteflow.scenario) drive; each applies
    # from the next tick on.

    def scale_price(self, symbol: str, factor: float) -> float:
        """Multiply ``symbol``'s price by ``factor`` (a jump); return the new price.

        The new price is clipped into ``[MIN_PRICE, MAX_PRICE]``. A symbol stepped by a
        model stepper restarts its path there (``Stepper.reseed``: fresh model state).
        """
        i = self._symbol_index(symbol)
        factor = number(factor, f"{symbol}: price factor", gt=0.0)
        with self._lock:
            price = float(np.clip(self._prices[i] * factor, MIN_PRICE, MAX_PRICE))
            self._prices[i] = price
            group = self._group_of.get(i)
            if group is not None:
                group.stepper.reseed(group.cols[group.syms == i], price)
            return price

    def scale_shocks(self, symbol: str, factor: float) -> None:
        """Multiply ``symbol``'s standard-normal shocks by ``factor`` (1 restores them).

        Scaling the shocks scales the volatility of one step by ``factor`` for GBM and
        mean reversion; a GARCH variance also feeds on the larger residuals.
        """
        i = self._symbol_index(symbol)
        factor = number(factor, f"{symbol}: shock factor", gt=0.0)
        with self._lock:
            scale = self._shock_scale
            if scale is None:
                scale = np.ones(len(self._names))
            scale[i] = factor
            self._shock_scale = None if bool((scale == 1.0).all()) else scale

    def spread_bps(self, symbol: str) -> float:
        """The full bid-ask spread of ``symbol`` in basis points."""
        i = self._symbol_index(symbol)
        spread = self._spread
        return float(spread if isinstance(spread, float) else spread[i])

    def set_spread_bps(self, symbol: str, bps: float) -> None:
        """Set the full bid-ask spread of ``symbol`` in basis points (>= 0)."""
        i = self._symbol_index(symbol)
        bps = number(bps, f"{symbol}: spread_bps", ge=0.0)
        with self._lock:
            spread = self._spread
            if isinstance(spread, float):
                spread = np.full(len(self._names), spread)
            spread[i] = bps
            self._spread = spread

    # ------------------------------------------------------------------------ public API

    @property
    def symbols(self) -> list[str]:
        """The market's symbols, in order."""
        return list(self._names)

    @property
    def correlation_matrix(self) -> SquareMatrix:
        """The full correlation matrix of the shocks, market order (identity where none given).

        Built on request, ``(n, n)``: avoid it for very large universes.
        """
        n = len(self._names)
        out: SquareMatrix = np.eye(n)
        block = self._correlated_block()
        if block is not None:
            idx, matrix = block
            out[np.ix_(idx, idx)] = matrix
        return out

    def _correlated_block(self) -> tuple[IndexArray, SquareMatrix] | None:
        """(symbol indices, current correlation among them): constant, or DCC's ``R_t``."""
        if self._dcc is not None:
            idx, tracker = self._dcc
            return idx, tracker.correlation
        return self._corr_block

    @property
    def dcc(self) -> DCC | None:
        """The DCC model driving the correlations, or None (constant or no correlation)."""
        return None if self._dcc is None else self._dcc[1].model

    def model(self, symbol: str) -> PriceModel:
        """The model currently driving ``symbol``."""
        return self._models[self._symbol_index(symbol)]

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Change some parameters of a symbol's model while streaming; return the new ones.

        Parameters
        ----------
        symbol
            A symbol of this market.
        params
            Parameters to change, e.g. ``{"sigma": 0.4}``; the others keep their values.
            A ``"model"`` key naming another class (``"gbm"``, ``"meanrev"``, ``"garch"``)
            switches the symbol to a new model built from the remaining keys alone.

        Returns
        -------
        dict
            The symbol's parameters after the change.

        Raises
        ------
        ConfigError
            Unknown symbol (listing the known ones), unknown parameter or value out of
            range (the model's own validation, naming the parameter).
        """
        i = self._symbol_index(symbol)
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"{symbol}: parameters must be an object, got {type(params).__name__}"
            )
        changes = dict(params)
        with self._lock:
            current = self._models[i]
            name = changes.pop("model", current.name)
            new = build_model(name, changes, base=current, where=symbol)
            check_step(new, self.dt, symbol, changes)
            self._assign(i, new)
            return new.params()

    def set_model(self, symbol: str, model: PriceModel) -> dict[str, Any]:
        """Replace a symbol's model entirely (e.g. with a freshly fitted one), keeping its price.

        Returns
        -------
        dict
            The new model's parameters.

        Raises
        ------
        ConfigError
            Unknown symbol, or ``model`` is not a price model.
        """
        i = self._symbol_index(symbol)
        if not isinstance(model, PriceModel):
            raise ConfigError(
                f"{symbol}: expected a model (GBM, MeanReversion, GARCH), got {type(model).__name__}"
            )
        check_step(model, self.dt, symbol)
        with self._lock:
            self._assign(i, model)
        return model.params()

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol ``{"model": name, "params": {...}, "price": last quoted price}``.

        A correlated symbol also has ``"correlation"``: its row of the current correlation
        matrix of the shocks, ``{other symbol: rho}`` over the correlated symbols (DCC's
        ``R_t`` of the next tick, or the constant matrix), and ``"correlation_model"``
        (``"dcc"`` or ``"constant"``).
        """
        with self._lock:
            prices = self._last_price.tolist()
            out = {
                name: {
                    "model": model.name,
                    "params": model.params(),
                    "price": price if math.isfinite(price) else None,
                }
                for name, model, price in zip(self._names, self._models, prices, strict=True)
            }
            block = self._correlated_block()
            if block is not None:
                idx, matrix = block
                kind = "constant" if self._dcc is None else "dcc"
                members = [self._names[i] for i in idx.tolist()]
                for row, name in zip(matrix.tolist(), members, strict=True):
                    out[name]["correlation"] = dict(zip(members, row, strict=True))
                    out[name]["correlation_model"] = kind
            return out

    def _move(self, z: SymbolFloats, tau: float | None) -> None:
        """Advance every price with shocks ``z``: one step of ``dt``, or a gap of ``tau`` years."""
        p = self._prices
        # An overflow is not an error here: _guard() restarts what left the range.
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            g = self._gbm_idx
            if tau is None and self._all_gbm:
                p *= np.exp(self._drift + self._vol * z)
                return
            if tau is None:
                drift, vol = self._drift[g], self._vol[g]
            else:
                coefficients = []
                for i in g.tolist():
                    model = self._models[i]
                    assert isinstance(model, GBM)
                    coefficients.append(model.exact_coefficients(tau))
                drift, vol = np.asarray(coefficients, dtype=np.float64).reshape(-1, 2).T
            if g.size:
                p[g] *= np.exp(drift + vol * z[g])
            for group in self._groups:
                shocks = np.zeros(group.stepper.prices.size)
                shocks[group.cols] = z[group.syms]
                moved = (
                    group.stepper.step(shocks) if tau is None else group.stepper.gap(shocks, tau)
                )
                p[group.syms] = moved[group.cols]

    def step_arrays(self, now: float | None = None) -> TickArrays:
        """Advance every symbol one tick and return the quotes (and closed bars) as arrays.

        With a calendar, the tick is the next one in simulated session time: the first
        tick of a session moves the prices across the closed period (the gap), the last
        one closes the bars.

        Parameters
        ----------
        now
            POSIX time of the tick (default: the market's clock).
        """
        if now is None and self._clock is time.time:
            # One clock read gives both forms; time_ns() keeps the nanoseconds that a
            # float of ~1.8e9 s cannot hold.
            ts_ns = time.time_ns()
            t = ts_ns / 1e9
        else:
            t = self._clock() if now is None else now
            ts_ns = round(t * 1e9)
        ts = iso_ms(t)
        n = len(self._names)
        with self._lock:
            at = self.sim_clock.tick(ts_ns)
            sim_ts = ts if self.sim_clock.is_wall else iso_from_ns(at.sim_ns)
            z = self._rng.standard_normal(n)
            if self._corr is not None:
                idx, factor = self._corr
                z[idx] = factor @ z[idx]
            elif self._dcc is not None:
                # Correlated by the current R_t; the recursion then takes the shocks drawn.
                idx, tracker = self._dcc
                drawn = tracker.factor() @ z[idx]
                z[idx] = drawn
                tracker.update(drawn)
            if self._shock_scale is not None:
                z *= self._shock_scale
            self._move(z, at.gap_years)
            self._guard(t)
            size = self._size_rng.integers(1, 11, n) * self.lot_size
            price, bid, ask = quote_sides(self._prices, self._spread)
            self._last_price = price
            self.ticks += 1
            trades: TradeArrays | None = None
            if self.trade_settings is None:
                bars = self._bars.add(price, size, ts, sim_ts, at.closes)
            else:
                trades = draw_trades(
                    self.trade_settings, self._trade_rng, self.tick_interval, bid, ask
                )
                bars = self._trade_bars.add(trades, ts, sim_ts, at.closes)
        return TickArrays(
            ts=ts,
            price=price,
            bid=bid,
            ask=ask,
            size=size,
            bars=bars,
            ts_ns=ts_ns,
            sim_ts=sim_ts,
            opens=at.opens,
            closes=at.closes,
            closed_sim_ts="" if at.close_ns is None else iso_from_ns(at.close_ns),
            trades=trades,
        )

    def step(self, now: float | None = None) -> list[MarketEvent]:
        """Advance one tick synchronously; return its events.

        The list is a :class:`~quoteflow.wire.payload.EncodedBatch`: it also carries the
        payloads' JSON (:class:`~quoteflow.wire.payload.PayloadEncoder`), which the broker
        uses instead of encoding them again.

        Parameters
        ----------
        now
            POSIX time of the tick (default: the market's clock).

        Returns
        -------
        list of MarketEvent
            In this order: a ``session`` ``open`` per symbol if the tick opens a session;
            one ``tick`` per symbol (market order); the tick's ``trade`` events if the
            market trades; one ``bar`` per symbol (per symbol that traded, for bars from
            trades) when this tick closes a bar; a ``session`` ``closed`` per symbol if
            the tick is the last of its session.
        """
        a = self.step_arrays(now)
        with _gc_paused():
            return self._events(a)

    def _session_events(
        self, state: str, ts: str, sim_ts: str
    ) -> list[tuple[MarketEvent, tuple[dict[str, Any], str]]]:
        return [session_event(s, state, ts, sim_ts) for s in self._names]

    def _events(self, a: TickArrays) -> EncodedBatch[MarketEvent]:
        names = self._names
        ts, sim_ts, ts_ns = a.ts, a.sim_ts, a.ts_ns
        events: list[MarketEvent] = []
        # Pairs (payload, JSON) aligned with the start of the batch: pairing stops at the
        # first event not pre-encoded (a non-finite price, left to the broker's encoder).
        encoded: list[tuple[dict[str, Any], str]] = []
        if a.opens:
            for event, pair in self._session_events("open", ts, sim_ts):
                events.append(event)
                encoded.append(pair)
        price, bid, ask, size = a.price.tolist(), a.bid.tolist(), a.ask.tolist(), a.size.tolist()
        payloads = [
            {
                "symbol": s,
                "price": p,
                "bid": b,
                "ask": k,
                "size": q,
                "ts": ts,
                "ts_ns": ts_ns,
                "sim_ts": sim_ts,
            }
            for s, p, b, k, q in zip(names, price, bid, ask, size, strict=True)
        ]
        events.extend(MarketEvent("tick", s, d) for s, d in zip(names, payloads, strict=True))
        # A model that blew up (inf/NaN price) is not JSON: leave that tick to the broker's
        # generic encoder, which drops the bad events and logs them.
        aligned = bool(
            np.isfinite(a.price).all() and np.isfinite(a.bid).all() and np.isfinite(a.ask).all()
        )
        if aligned:
            texts = self._encoder.ticks(price, bid, ask, size, ts, ts_ns, sim_ts)
            encoded.extend(zip(payloads, texts, strict=True))
        if a.trades is not None:
            aligned = self._trade_events(a.trades, ts, sim_ts, events, encoded, aligned)
        if a.bars is not None:
            aligned = self._bar_events(a.bars, events, encoded, aligned)
        if a.closes:
            for event, pair in self._session_events("closed", ts, a.closed_sim_ts or sim_ts):
                events.append(event)
                if aligned:
                    encoded.append(pair)
        return EncodedBatch(events, encoded)

    def _trade_events(
        self,
        trades: TradeArrays,
        ts: str,
        sim_ts: str,
        events: list[MarketEvent],
        encoded: list[tuple[dict[str, Any], str]],
        aligned: bool,
    ) -> bool:
        names = self._names
        syms = trades.symbols.tolist()
        price, size = trades.price.tolist(), trades.size.tolist()
        buy, sell = TRADE_SIDES
        side = [buy if b else sell for b in trades.buy.tolist()]
        payloads = [
            {"symbol": names[i], "price": p, "size": q, "side": d, "ts": ts, "sim_ts": sim_ts}
            for i, p, q, d in zip(syms, price, size, side, strict=True)
        ]
        events.extend(MarketEvent("trade", d["symbol"], d) for d in payloads)
        if aligned and np.isfinite(trades.price).all():
            texts = self._encoder.trades(syms, price, size, side, ts, sim_ts)
            encoded.extend(zip(payloads, texts, strict=True))
            return True
        return False

    def _bar_events(
        self,
        bar: BarArrays,
        events: list[MarketEvent],
        encoded: list[tuple[dict[str, Any], str]],
        aligned: bool,
    ) -> bool:
        names = self._names
        which = None if bar.symbols is None else bar.symbols.tolist()
        syms = names if which is None else [names[i] for i in which]
        start, end, sim_ts = bar.start, bar.end, bar.sim_ts
        bo, bh, bl, bc, bv = (
            bar.open.tolist(),
            bar.high.tolist(),
            bar.low.tolist(),
            bar.close.tolist(),
            bar.volume.tolist(),
        )
        bar_payloads = [
            {
                "symbol": s,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
                "start": start,
                "end": end,
                "sim_ts": sim_ts,
            }
            for s, o, h, lo, c, v in zip(syms, bo, bh, bl, bc, bv, strict=True)
        ]
        events.extend(MarketEvent("bar", s, d) for s, d in zip(syms, bar_payloads, strict=True))
        finite = all(np.isfinite(x).all() for x in (bar.open, bar.high, bar.low, bar.close))
        if aligned and finite:
            texts = self._encoder.bars(bo, bh, bl, bc, bv, start, end, sim_ts, which)
            encoded.extend(zip(bar_payloads, texts, strict=True))
            return True
        return False

    async def batches(self) -> AsyncGenerator[list[MarketEvent], None]:
        """Yield :meth:`step` every ``tick_interval`` seconds, forever.

        Deadline schedule: tick ``k`` is due at ``start + k * tick_interval`` on the event
        loop's monotonic clock, so sleeping late never accumulates drift. At most one tick
        is produced per wake-up. A tick that is late is produced at once and its lateness
        recorded in :attr:`lag_seconds`; if the loop has fallen more than one whole
        interval behind, the missed deadlines are skipped (counted in
        :attr:`ticks_skipped`) instead of being emitted in a burst. Simulated time advances
        ``dt`` per tick produced, so an overloaded server slows the simulation down rather
        than making prices jump.
        """
        async for batch in paced(self, self.step, self.tick_interval):
            yield batch

    def __repr__(self) -> str:
        return (
            f"Market({len(self._names)} symbols: {short_list(self._names, 5)}; "
            f"tick_interval={self.tick_interval:g}s, speed={self.speed:g}y/s, seed={self.seed})"
        )

    # -------------------------------------------------------------------- constructors

    @classmethod
    def universe(
        cls,
        n: int,
        seed: int | None = None,
        *,
        tick_interval: float = 0.25,
        **options: Any,
    ) -> Market:
        """``n`` synthetic GBM symbols ``SYM0000``... for load tests.

        Parameters are drawn once from ``seed`` (independently of the shock stream):
        ``mu ~ U(-0.05, 0.15)``, ``sigma ~ U(0.15, 0.6)``, start price log-uniform in
        [5, 500]. No correlation. All symbols are stepped in one vectorised update.

        Parameters
        ----------
        n
            Number of symbols, >= 1.
        seed
            Seed of both the parameters and the shocks.
        tick_interval, **options
            As for :class:`Market` (``speed``, ``bar_interval``, ``spread_bps``, ``clock``...).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"universe: n must be an integer >= 1, got {n!r}")
        width = max(4, len(str(n - 1)))
        # A spawn key of its own: the parameter draws never overlap the market's shock stream.
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x51D,)))
        mu = rng.uniform(-0.05, 0.15, n)
        sigma = rng.uniform(0.15, 0.6, n)
        s0 = np.round(np.exp(rng.uniform(math.log(5.0), math.log(500.0), n)), 2)
        names = [f"SYM{i:0{width}d}" for i in range(n)]
        models = {
            s: GBM(mu=m, sigma=v)
            for s, m, v in zip(names, mu.tolist(), sigma.tolist(), strict=True)
        }
        start = dict(zip(names, s0.tolist(), strict=True))
        return cls(models, s0=start, seed=seed, tick_interval=tick_interval, **options)

    @classmethod
    def from_fit(
        cls,
        fit: FitResult | DCCFitResult,
        *,
        symbol: str = "FIT",
        s0: float | Mapping[str, float] | None = None,
        **options: Any,
    ) -> Market:
        """A market driven by a fit: its model, and for a DCC fit its moving correlations.

        Parameters
        ----------
        fit
            A univariate :class:`~quoteflow.models.FitResult` (one symbol, named
            ``symbol``, driven by ``fit.model``), or a
            :class:`~quoteflow.models.DCCFitResult`: one symbol per fitted series, each
            driven by its univariate GARCH, the shocks correlated by the DCC recursion
            (each tick's shocks drawn with the current ``R_t``, which then updates with
            them; docs/market.md, "DCC correlations").
        symbol
            Name of the symbol of a univariate fit.
        s0
            Start price(s): a number for a univariate fit, ``{symbol: price}`` for a DCC
            fit (default: 100, and the last fitted price of each series for DCC).
        **options
            As for :class:`Market` (``seed``, ``tick_interval``, ``speed``, ...).

        Raises
        ------
        ConfigError
            If ``fit`` is neither kind of fit, or for the :class:`Market` rules.
        """
        if isinstance(fit, DCCFitResult):
            start = dict(fit.last_prices)
            if s0 is not None:
                if not isinstance(s0, Mapping):
                    raise ConfigError("from_fit: s0 of a DCC fit is a mapping {symbol: price}")
                start.update(s0)
            models = {s: f.model for s, f in fit.univariate.items()}
            return cls(models, s0=start, correlation=fit.model, **options)
        if isinstance(fit, FitResult):
            if isinstance(s0, Mapping):
                raise ConfigError("from_fit: s0 of a univariate fit is one number")
            start_one = {} if s0 is None else {symbol: s0}
            return cls({symbol: fit.model}, s0=start_one, **options)
        raise ConfigError(
            f"from_fit: expected a FitResult or DCCFitResult, got {type(fit).__name__}"
        )

    @classmethod
    def default(
        cls,
        seed: int | None = None,
        tick_interval: float = 0.25,
        **options: Any,
    ) -> Market:
        """A ready market of the shipped tickers, calibrated on the shipped history.

        AAPL follows a GARCH(1,1) with Student-t innovations, MSFT a GARCH(1,1) with normal
        innovations, IBM mean reversion and GOOG GBM, each fitted by maximum likelihood on
        its daily ``adj_close`` (fits are computed once per process and cached). Start
        prices are the last shipped ``adj_close``; the shocks are correlated with the
        empirical correlation of the four tickers' daily log returns over their common
        dates.

        Parameters
        ----------
        seed, tick_interval, **options
            As for :class:`Market`.
        """
        models, s0, corr = default_calibration()
        return cls(
            dict(models),
            s0=dict(s0),
            correlation=corr.copy(),
            seed=seed,
            tick_interval=tick_interval,
            **options,
        )

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Market:
        """Build a market from a TOML file (format in docs/market.md).

        Parameters
        ----------
        path
            The TOML file. Relative ``fit = "file.csv"`` paths are resolved against its
            directory.
        **overrides
            Top-level settings that win over the file (``seed``, ``tick_interval``,
            ``speed``, ``bar_interval``, ``spread_bps``, ``lot_size``, ``calendar``,
            ``start``, ``closed_fraction``, ``trades``, ``clock``); ``None`` values are
            ignored, so command-line options can be passed straight through. A ``trades``
            mapping is merged into the file's ``[trades]`` table.

        Raises
        ------
        ConfigError
            Unreadable file, TOML syntax error, or any invalid value; the message starts
            with the file name and the dotted key, e.g.
            ``market.toml: symbols.AAPL.params.alpha: ...``.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read market config: {exc.strerror or exc}") from None
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        return cls.from_config(config, source=str(p), base_dir=p.parent, **overrides)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        source: str = "config",
        base_dir: str | Path | None = None,
        **overrides: Any,
    ) -> Market:
        """Build a market from a parsed configuration (the TOML format, as a dict).

        Parameters
        ----------
        config
            ``{"seed": ..., "tick_interval": ..., "symbols": {name: {...}}, "correlation":
            {...}}``; see docs/market.md for every key.
        source
            Name used as the prefix of error messages (the file name for TOML).
        base_dir
            Directory against which relative ``fit`` paths are resolved (default: cwd).
        **overrides
            As for :meth:`from_toml`.

        Raises
        ------
        ConfigError
            ``"<source>: <dotted.key>: <what is wrong and what is allowed>"``.
        """
        try:
            return market_from_config(cls, config, base_dir, overrides)
        except ConfigError as exc:
            # The constructor's own "market: " prefix would read "file.toml: market: ...".
            raise ConfigError(f"{source}: {str(exc).removeprefix('market: ')}") from None
