"""The simulated market: symbols -> models, correlated shocks, a clock, ticks and bars.

A :class:`Market` holds one price model per symbol. Every tick it

1. draws one standard-normal shock per symbol and correlates them with a factor ``L`` of
   the target correlation matrix ``C = L L^T`` (``z -> L z`` gives ``Cov(L z) = C``;
   Glasserman 2003, *Monte Carlo Methods in Financial Engineering*, §2.3.3);
2. advances every symbol by ``dt = tick_interval * speed`` simulated years with those
   shocks (models with non-normal innovations map them through a Gaussian copula
   themselves, see :class:`quoteflow.models.Stepper`);
3. turns prices into quotes (rounded price, bid/ask around it, a random lot size, a
   timestamp) and, every ``bar_interval`` seconds of ticks, into OHLCV bars.

GBM symbols, the bulk of any large market (``Market.universe``), are stepped together
with per-symbol parameter arrays in one vectorised update, so a tick of 10,000 symbols is
a handful of numpy operations; other models run through their own steppers, one per
distinct parameter set.

Configuration comes from Python (:class:`Market`), a TOML file (:meth:`Market.from_toml`),
a dict (:meth:`Market.from_config`), or ready-made: :meth:`Market.default` (the shipped
tickers, calibrated on the shipped history) and :meth:`Market.universe` (N synthetic GBM
symbols for load tests). See docs/market.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import functools
import gc
import json
import logging
import math
import re
import threading
import time
import tomllib
from collections.abc import (
    AsyncGenerator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from quoteflow.errors import ConfigError, DataError, ParameterError
from quoteflow.models import GARCH, GBM, MODELS, MeanReversion, PriceModel, Stepper
from quoteflow.models.limits import MAX_PRICE, MIN_PRICE, short_repr
from quoteflow.sources import MarketEvent, Source, SymbolFloats, SymbolInts, iso_ms, quote_sides

__all__ = [
    "DEFAULT_SPEED",
    "BarArrays",
    "EncodedBatch",
    "Market",
    "TickArrays",
    "correlation_factor",
]

log = logging.getLogger(__name__)

#: The price guard logs at most one summary line per this many seconds.
GUARD_LOG_INTERVAL = 10.0

#: Default speed: one trading day (1/252 year) of simulated time per wall-clock second.
DEFAULT_SPEED = 1.0 / 252.0

#: Square matrix, shape ``(n_symbols, n_symbols)``.
SquareMatrix = npt.NDArray[np.float64]
#: Integer index array into the market's symbols, shape ``(k,)``.
IndexArray = npt.NDArray[np.intp]

# Tolerances of the correlation checks. Matrices typed into a TOML file carry 2-4 decimals
# and sample correlations are exact to ~1e-15, so 1e-8 accepts rounding noise only.
_SYM_TOL = 1e-8
_PSD_TOL = 1e-8


# ---------------------------------------------------------------------------- correlation


def _pair(names: Sequence[str], i: Any, j: Any) -> str:
    return f"[{names[int(i)]}, {names[int(j)]}]"


def correlation_factor(matrix: Any, names: Sequence[str]) -> SquareMatrix:
    """Validate a correlation matrix and return a factor ``L`` with ``L @ L.T == matrix``.

    The rules are checked in this order and the first one that fails is named in the
    error: square 2-D numeric matrix; one row per symbol; finite entries; symmetric;
    unit diagonal; entries in ``[-1, 1]``; positive semi-definite (smallest eigenvalue
    ``>= -1e-8``, computed with ``numpy.linalg.eigvalsh``).

    A positive-definite matrix gets its Cholesky factor (Golub & Van Loan 2013, §4.2).
    A singular one (e.g. two perfectly correlated symbols) has no Cholesky factor, so it
    gets the symmetric eigen-factor ``L = V diag(sqrt(max(w, 0)))`` from ``C = V diag(w)
    V^T``, which satisfies ``L L^T = C`` all the same (Glasserman 2003, §2.3.3).

    Parameters
    ----------
    matrix
        Array-like of shape ``(n, n)``.
    names
        The ``n`` symbol names, in the matrix's order (for error messages).

    Returns
    -------
    ndarray
        ``L``, shape ``(n, n)``.

    Raises
    ------
    ConfigError
        Naming the rule that failed and, where it applies, the offending pair of symbols.
    """
    try:
        c = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            "correlation: must be a square matrix of numbers (list of equal-length rows)"
        ) from None
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ConfigError(f"correlation: must be a square matrix, got shape {c.shape}")
    n = len(names)
    if c.shape[0] != n:
        raise ConfigError(
            f"correlation: matrix is {c.shape[0]}x{c.shape[1]} but there are {n} symbols "
            f"({', '.join(names)}); it needs one row and column per symbol"
        )
    if not np.all(np.isfinite(c)):
        i, j = np.argwhere(~np.isfinite(c))[0]
        raise ConfigError(
            f"correlation: entries must be finite, got {c[i, j]} at {_pair(names, i, j)}"
        )
    asym = np.abs(c - c.T)
    if asym.max() > _SYM_TOL:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise ConfigError(
            f"correlation: must be symmetric: {_pair(names, i, j)} = {c[i, j]:g} but "
            f"{_pair(names, j, i)} = {c[j, i]:g}"
        )
    diag_err = np.abs(np.diag(c) - 1.0)
    if diag_err.max() > _SYM_TOL:
        i = int(np.argmax(diag_err))
        raise ConfigError(
            f"correlation: diagonal must be 1 (unit diagonal): {_pair(names, i, i)} = {c[i, i]:g}"
        )
    if np.abs(c).max() > 1.0 + _SYM_TOL:
        i, j = np.unravel_index(int(np.argmax(np.abs(c))), c.shape)
        raise ConfigError(
            f"correlation: entries must be in [-1, 1]: {_pair(names, i, j)} = {c[i, j]:g}"
        )
    c = 0.5 * (c + c.T)  # remove sub-tolerance asymmetry so the factor is exact
    w = np.linalg.eigvalsh(c)
    if w[0] < -_PSD_TOL:
        raise ConfigError(
            "correlation: must be positive semi-definite, but its smallest eigenvalue is "
            f"{w[0]:.4g} < 0: no set of returns can have these pairwise correlations "
            "(e.g. A~B and B~C strongly positive but A~C strongly negative); "
            "use an estimated correlation matrix or weaken the entries"
        )
    try:
        factor: SquareMatrix = np.asarray(np.linalg.cholesky(c), dtype=np.float64)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(c)
        factor = np.asarray(v * np.sqrt(np.clip(w, 0.0, None)), dtype=np.float64)
    return factor


def _resolve_correlation(spec: Any, names: Sequence[str]) -> tuple[IndexArray, SquareMatrix] | None:
    """Turn the accepted ``correlation=`` forms into (symbol indices, matrix over them)."""
    if spec is None:
        return None
    pos = {s: i for i, s in enumerate(names)}

    def known(sym: Any, where: str) -> int:
        if sym not in pos:
            raise ConfigError(
                f"correlation: {where}: unknown symbol {sym!r}; known symbols: {_short_list(names)}"
            )
        return pos[sym]

    if isinstance(spec, Mapping):
        if "matrix" in spec:
            extra = set(spec) - {"matrix", "symbols"}
            if extra:
                raise ConfigError(
                    f"correlation: unknown key(s) {sorted(map(str, extra))}; allowed: symbols, matrix"
                )
            syms = spec.get("symbols", list(names))
            if isinstance(syms, str) or not isinstance(syms, Sequence):
                raise ConfigError("correlation: symbols must be a list of symbol names")
            idx = [known(s, "symbols") for s in syms]
            if len(set(idx)) != len(idx):
                raise ConfigError("correlation: symbols lists a symbol twice")
            return np.asarray(idx, dtype=np.intp), spec["matrix"]
        # pairs form: {("AAPL", "MSFT"): 0.5} or {"AAPL/MSFT": 0.5}
        involved: dict[str, int] = {}
        pairs: list[tuple[str, str, Any]] = []
        for key, rho in spec.items():
            a, b = key if isinstance(key, tuple) else re.split(r"[/,:]", str(key), maxsplit=1)
            a, b = str(a).strip(), str(b).strip()
            for s in (a, b):
                known(s, f"pair {key!r}")
                involved.setdefault(s, len(involved))
            pairs.append((a, b, rho))
        if not involved:
            return None
        m = np.eye(len(involved))
        for a, b, rho in pairs:
            if isinstance(rho, bool) or not isinstance(rho, int | float):
                raise ConfigError(f"correlation: pair {a}/{b} must be a number, got {rho!r}")
            m[involved[a], involved[b]] = m[involved[b], involved[a]] = float(rho)
        return np.asarray([pos[s] for s in involved], dtype=np.intp), m
    return np.arange(len(names), dtype=np.intp), spec


# --------------------------------------------------------------------------------- arrays


@dataclass(frozen=True, slots=True)
class BarArrays:
    """The bars that closed on a tick, one entry per symbol (market order)."""

    open: SymbolFloats
    high: SymbolFloats
    low: SymbolFloats
    close: SymbolFloats
    volume: SymbolInts
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class TickArrays:
    """One tick of the whole market as arrays (what :meth:`Market.step` builds events from).

    ``ts`` is the tick time as ISO-8601 UTC with milliseconds, ``ts_ns`` the same instant
    as integer Unix nanoseconds (what latency measurements use: ``ts`` is truncated to
    the millisecond).
    """

    ts: str
    price: SymbolFloats
    bid: SymbolFloats
    ask: SymbolFloats
    size: SymbolInts
    bars: BarArrays | None
    ts_ns: int = 0


class EncodedBatch(list[MarketEvent]):
    """The events of one :meth:`Market.step`, with their payloads already JSON-encoded.

    A plain ``list`` of :class:`~quoteflow.sources.MarketEvent` for every consumer. The
    broker additionally reads :attr:`encoded`: per event, the pair ``(payload, JSON text
    of payload)``, built from per-symbol templates, so it can skip the generic JSON
    encoder (which took more than half the CPU time of publishing a 10,000-symbol tick,
    benchmarks/fanout/bench_generation.py). A pair is used only while its payload is
    still the very dict of the event at that position (``is``), so a caller that edits
    or reorders the batch gets the generic path, never a wrong payload.

    Attributes
    ----------
    encoded : list of (dict, str)
        Pairs aligned with the start of the batch; it is shorter (possibly empty) when
        some events were not pre-encoded (a non-finite price: the broker's generic
        encoder then drops and logs them). The text is compact JSON (``,`` and ``:``
        separators, as the broker writes) of exactly that payload.
    """

    __slots__ = ("encoded",)

    def __init__(self, events: list[MarketEvent], encoded: list[tuple[dict[str, Any], str]]):
        super().__init__(events)
        self.encoded = encoded


@dataclass(slots=True)
class _Group:
    """Non-GBM symbols stepped by one model stepper (same model, same parameters)."""

    model: PriceModel
    stepper: Stepper
    cols: IndexArray  # path positions inside the stepper
    syms: IndexArray  # the market indices of those paths


def _short_list(names: Sequence[str], limit: int = 20) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def _number(value: Any, where: str, *, gt: float | None = None, ge: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(f"{where}: must be finite, got {x!r}")
    if gt is not None and not x > gt:
        raise ConfigError(f"{where}: must be > {gt:g}, got {value!r}")
    if ge is not None and not x >= ge:
        raise ConfigError(f"{where}: must be >= {ge:g}, got {value!r}")
    return x


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


# --------------------------------------------------------------------------------- market


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
        (unlisted pairs 0). Validated by :func:`correlation_factor`.
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
    ) -> None:
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
        self.tick_interval = _number(tick_interval, "market: tick_interval", gt=0.0)
        self.speed = _number(speed, "market: speed", gt=0.0)
        self.dt = self.tick_interval * self.speed
        if bar_interval is None:
            self.bar_interval: float | None = None
            self._bar_ticks = 0
        else:
            self.bar_interval = _number(bar_interval, "market: bar_interval", gt=0.0)
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

        s0 = dict(s0 or {})
        unknown = [s for s in s0 if s not in self._index]
        if unknown:
            raise ConfigError(
                f"market: s0 for unknown symbol(s) {', '.join(map(str, unknown))}; "
                f"symbols: {_short_list(names)}"
            )
        start = np.empty(n)
        for i, (name, model) in enumerate(zip(names, self._models, strict=True)):
            default = model.theta if isinstance(model, MeanReversion) else 100.0
            start[i] = _number(s0.get(name, default), f"market: s0.{name}", gt=0.0)
            if not MIN_PRICE <= start[i] <= MAX_PRICE:
                raise ConfigError(
                    f"market: s0.{name}: must be in [{MIN_PRICE:g}, {MAX_PRICE:g}], "
                    f"got {start[i]:g}"
                )
            _check_step(model, self.dt, f"market: symbols.{name}")
        self._prices: SymbolFloats = start

        if isinstance(spread_bps, Mapping):
            spread = np.full(n, 10.0)
            for name, bps in spread_bps.items():
                if name not in self._index:
                    raise ConfigError(
                        f"market: spread_bps for unknown symbol {name!r}; symbols: {_short_list(names)}"
                    )
                spread[self._index[name]] = _number(bps, f"market: spread_bps.{name}", ge=0.0)
            self._spread: SymbolFloats | float = spread
        else:
            self._spread = _number(spread_bps, "market: spread_bps", ge=0.0)

        resolved = _resolve_correlation(correlation, names)
        self._corr: tuple[IndexArray, SquareMatrix] | None = None
        # Only the correlated block is kept: a dense n x n matrix of a 10,000-symbol
        # universe would take 800 MB for an identity.
        self._corr_block: tuple[IndexArray, SquareMatrix] | None = None
        if resolved is not None:
            idx, matrix = resolved
            factor = correlation_factor(matrix, [names[i] for i in idx])
            c = np.asarray(matrix, dtype=np.float64)  # validated by correlation_factor
            self._corr_block = (idx, 0.5 * (c + c.T))
            if not np.array_equal(factor, np.eye(len(idx))):
                self._corr = (idx, factor)

        seq = np.random.SeedSequence(seed)
        #: The seed in force (the drawn entropy when ``seed=None``), to reproduce a run.
        self.seed: int = int(seq.entropy)  # type: ignore[arg-type]
        shock_seq, size_seq = seq.spawn(2)
        # Separate streams: the lot sizes never change the price path of a given seed.
        self._rng = np.random.default_rng(shock_seq)
        self._size_rng = np.random.default_rng(size_seq)

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

        self._lock = threading.RLock()
        self._last_price, _, _ = quote_sides(self._prices.copy(), 0.0)
        self.ticks = 0
        self.ticks_skipped = 0
        #: Prices the guard replaced since start (see :meth:`_guard`).
        self.prices_reseeded = 0
        self._guard_unlogged: dict[str, int] = {}
        self._guard_logged_at = -math.inf
        self.lag_seconds = 0.0
        # bar accumulators
        self._bar_count = 0
        self._bar_start = ""
        self._bo = np.zeros(n)
        self._bh = np.zeros(n)
        self._bl = np.zeros(n)
        self._bv = np.zeros(n, dtype=np.int64)
        self._json_templates: tuple[list[str], list[str]] | None = None

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
                f"unknown symbol {symbol!r}{did}; known symbols: {_short_list(self._names)}"
            )
        return i

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
        if self._corr_block is not None:
            idx, block = self._corr_block
            out[np.ix_(idx, idx)] = block
        return out

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
            if not isinstance(name, str) or name.lower() not in MODELS:
                raise ConfigError(
                    f"{symbol}: model: unknown model {name!r}; known models: {', '.join(MODELS)}"
                )
            new = _build_model(name.lower(), changes, f"{symbol}", base=current)
            _check_step(new, self.dt, symbol, changes)
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
        _check_step(model, self.dt, symbol)
        with self._lock:
            self._assign(i, model)
        return model.params()

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol ``{"model": name, "params": {...}, "price": last quoted price}``."""
        with self._lock:
            prices = self._last_price.tolist()
            return {
                name: {
                    "model": model.name,
                    "params": model.params(),
                    "price": price if math.isfinite(price) else None,
                }
                for name, model, price in zip(self._names, self._models, prices, strict=True)
            }

    def step_arrays(self, now: float | None = None) -> TickArrays:
        """Advance every symbol one tick and return the quotes (and closed bars) as arrays.

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
            z = self._rng.standard_normal(n)
            if self._corr is not None:
                idx, factor = self._corr
                z[idx] = factor @ z[idx]
            p = self._prices
            # An overflow is not an error here: _guard() restarts what left the range.
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                if self._all_gbm:
                    p *= np.exp(self._drift + self._vol * z)
                else:
                    g = self._gbm_idx
                    if g.size:
                        p[g] *= np.exp(self._drift[g] + self._vol[g] * z[g])
                    for group in self._groups:
                        shocks = np.zeros(group.stepper.prices.size)
                        shocks[group.cols] = z[group.syms]
                        p[group.syms] = group.stepper.step(shocks)[group.cols]
            self._guard(t)
            size = self._size_rng.integers(1, 11, n) * self.lot_size
            price, bid, ask = quote_sides(p, self._spread)
            self._last_price = price
            self.ticks += 1
            bars = self._accumulate_bars(price, size, ts)
        return TickArrays(ts=ts, price=price, bid=bid, ask=ask, size=size, bars=bars, ts_ns=ts_ns)

    def _accumulate_bars(self, price: SymbolFloats, size: SymbolInts, ts: str) -> BarArrays | None:
        if not self._bar_ticks:
            return None
        if self._bar_count == 0:
            self._bo[:] = price
            self._bh[:] = price
            self._bl[:] = price
            self._bv[:] = size
            self._bar_start = ts
        else:
            np.maximum(self._bh, price, out=self._bh)
            np.minimum(self._bl, price, out=self._bl)
            self._bv += size
        self._bar_count += 1
        if self._bar_count < self._bar_ticks:
            return None
        self._bar_count = 0
        return BarArrays(
            open=self._bo.copy(),
            high=self._bh.copy(),
            low=self._bl.copy(),
            close=price,
            volume=self._bv.copy(),
            start=self._bar_start,
            end=ts,
        )

    def step(self, now: float | None = None) -> list[MarketEvent]:
        """Advance one tick synchronously; return its quotes, then the bars it closed.

        The list is an :class:`EncodedBatch`: it also carries the payloads' JSON, which
        the broker uses instead of encoding them again.

        Parameters
        ----------
        now
            POSIX time of the tick (default: the market's clock).

        Returns
        -------
        list of MarketEvent
            One ``tick`` per symbol (market order), followed by one ``bar`` per symbol
            when this tick closes a bar.
        """
        a = self.step_arrays(now)
        ts = a.ts
        with _gc_paused():
            return self._events(a, ts)

    def _templates(self) -> tuple[list[str], list[str]]:
        """Per-symbol %-format templates of the tick and bar JSON (built on first use).

        The symbol is JSON-escaped once here instead of on every tick. Floats go through
        ``%r``, which is ``float.__repr__``, exactly what the json module writes for a
        finite float; the caller checks finiteness first.
        """
        if self._json_templates is None:
            tick, bar = [], []
            for name in self._names:
                sym = json.dumps(name)
                tick.append(
                    '{"symbol":' + sym + ',"price":%r,"bid":%r,"ask":%r,"size":%d,'
                    '"ts":%s,"ts_ns":%d}'
                )
                bar.append(
                    '{"symbol":' + sym + ',"open":%r,"high":%r,"low":%r,"close":%r,'
                    '"volume":%d,"start":%s,"end":%s}'
                )
            self._json_templates = (tick, bar)
        return self._json_templates

    def _events(self, a: TickArrays, ts: str) -> EncodedBatch:
        names = self._names
        price, bid, ask, size = a.price.tolist(), a.bid.tolist(), a.ask.tolist(), a.size.tolist()
        ts_ns = a.ts_ns
        payloads = [
            {"symbol": s, "price": p, "bid": b, "ask": k, "size": q, "ts": ts, "ts_ns": ts_ns}
            for s, p, b, k, q in zip(names, price, bid, ask, size, strict=True)
        ]
        events = [MarketEvent("tick", s, d) for s, d in zip(names, payloads, strict=True)]
        # A model that blew up (inf/NaN price) is not JSON: leave that tick to the broker's
        # generic encoder, which drops the bad events and logs them.
        encodable = bool(
            np.isfinite(a.price).all() and np.isfinite(a.bid).all() and np.isfinite(a.ask).all()
        )
        encoded: list[tuple[dict[str, Any], str]] = []
        if encodable:
            tick_t, bar_t = self._templates()
            ts_json = json.dumps(ts)
            encoded = list(
                zip(
                    payloads,
                    [
                        t % (p, b, k, q, ts_json, ts_ns)
                        for t, p, b, k, q in zip(tick_t, price, bid, ask, size, strict=True)
                    ],
                    strict=True,
                )
            )
        if a.bars is not None:
            bar = a.bars
            start, end = bar.start, bar.end
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
                }
                for s, o, h, lo, c, v in zip(names, bo, bh, bl, bc, bv, strict=True)
            ]
            events.extend(
                MarketEvent("bar", s, d) for s, d in zip(names, bar_payloads, strict=True)
            )
            if encodable and all(np.isfinite(x).all() for x in (bar.open, bar.high, bar.low)):
                tick_t, bar_t = self._templates()
                se = (json.dumps(start), json.dumps(end))
                encoded.extend(
                    zip(
                        bar_payloads,
                        [
                            t % (o, h, lo, c, v, *se)
                            for t, o, h, lo, c, v in zip(bar_t, bo, bh, bl, bc, bv, strict=True)
                        ],
                        strict=True,
                    )
                )
        return EncodedBatch(events, encoded)

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
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            due = start + k * self.tick_interval
            delay = due - loop.time()
            # sleep(0) when late still yields once, so clients get served between ticks.
            await asyncio.sleep(max(delay, 0.0))
            self.lag_seconds = max(0.0, -delay)
            yield self.step()
            k += 1
            behind = loop.time() - (start + k * self.tick_interval)
            if behind > self.tick_interval:
                missed = int(behind // self.tick_interval)
                k += missed
                self.ticks_skipped += missed

    def __repr__(self) -> str:
        return (
            f"Market({len(self._names)} symbols: {_short_list(self._names, 5)}; "
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
        models, s0, corr = _default_calibration()
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
            ``speed``, ``bar_interval``, ``spread_bps``, ``lot_size``, ``clock``); ``None``
            values are ignored, so command-line options can be passed straight through.

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
            return _from_config(cls, config, base_dir, overrides)
        except ConfigError as exc:
            # The constructor's own "market: " prefix would read "file.toml: market: ...".
            raise ConfigError(f"{source}: {str(exc).removeprefix('market: ')}") from None


# ------------------------------------------------------------------------ model building


def _mentioned_param(message: str, names: Iterable[str]) -> str | None:
    """The one parameter name a model's error message mentions, if exactly one."""
    hits = [n for n in names if re.search(rf"\b{re.escape(n)}\b", message)]
    return hits[0] if len(hits) == 1 else None


def _init_fields(cls: type[PriceModel]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


def _build_model(
    name: str, params: Mapping[str, Any], where: str, base: PriceModel | None = None
) -> PriceModel:
    """Build (or, with ``base`` of the same class, modify) a model; errors name the key.

    ``where`` is the dotted path of the symbol (e.g. ``symbols.AAPL``); parameter errors
    are reported at ``<where>.params.<name>``.
    """
    cls = MODELS[name]
    fields = _init_fields(cls)
    allowed = [f.name for f in fields]
    for key, value in params.items():
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{where}.params.{key}: unknown parameter for model {name!r}{did}; "
                f"its parameters: {', '.join(allowed)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(
                f"{where}.params.{key}: must be a number (or a string for categorical "
                f"options), got {type(value).__name__} {short_repr(value)}"
            )
    if base is not None and type(base) is cls:
        make: Callable[[], PriceModel] = functools.partial(base.with_params, **params)
    else:
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in params]
        if missing:
            raise ConfigError(
                f"{where}.params: missing parameter(s) {', '.join(missing)} for model "
                f"{name!r}; its parameters: {', '.join(allowed)}"
            )
        make = functools.partial(cls, **params)
    try:
        return make()
    except ParameterError as exc:
        raise ConfigError(f"{where}.params.{exc.param}: {exc}") from None
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        param = _mentioned_param(msg, allowed)
        key = f"{where}.params.{param}" if param else f"{where}.params"
        raise ConfigError(f"{key}: {msg}") from None


def _check_step(model: PriceModel, dt: float, where: str, changed: Iterable[str] = ()) -> None:
    """``model.check_step(dt)`` with the error at ``<where>.params.<name>`` (see models.limits)."""
    try:
        model.check_step(dt, frozenset(changed))
    except ParameterError as exc:
        raise ConfigError(f"{where}.params.{exc.param}: {exc}") from None


_TOP_KEYS = (
    "seed",
    "tick_interval",
    "speed",
    "bar_interval",
    "spread_bps",
    "lot_size",
    "symbols",
    "correlation",
)
_SYMBOL_KEYS = ("model", "params", "fit", "column", "fit_options", "s0", "spread_bps")


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"{prefix}{key}: unknown key{did}; allowed keys: {', '.join(allowed)}"
            )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table, got {type(value).__name__} {value!r}")
    return value


def _fit_prices(spec: str, column: str | None, where: str, base_dir: Path) -> Any:
    """The price series named by a ``fit`` value: a shipped ticker or a CSV path."""
    from quoteflow import data

    if spec.upper() in data.TICKERS and not (base_dir / spec).exists():
        frame = data.load(spec)
        col = column or "adj_close"
        if col not in frame.columns:
            raise ConfigError(
                f"{where}.column: no column {col!r} in shipped {spec.upper()}; columns: "
                f"{', '.join(frame.columns)}"
            )
        return frame[col]
    path = Path(spec)
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise ConfigError(
            f"{where}.fit: {spec!r} is neither a shipped ticker ({', '.join(data.TICKERS)}) "
            f"nor an existing CSV file (looked for {path})"
        )
    try:
        return data.read_csv(path, column)
    except DataError as exc:
        raise ConfigError(f"{where}.fit: {exc}") from None


def _symbol_from_config(
    name: str, spec: Any, base_dir: Path
) -> tuple[PriceModel, float | None, float | None]:
    where = f"symbols.{name}"
    table = _table(spec, where)
    _check_keys(table, _SYMBOL_KEYS, where)
    if "model" not in table:
        raise ConfigError(f"{where}: missing key 'model' (one of {', '.join(MODELS)})")
    model_name = table["model"]
    if not isinstance(model_name, str) or model_name.lower() not in MODELS:
        hint = difflib.get_close_matches(str(model_name).lower(), list(MODELS), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{where}.model: unknown model {model_name!r}{did}; one of {', '.join(MODELS)}"
        )
    model_name = model_name.lower()
    params = dict(_table(table.get("params", {}), f"{where}.params"))
    fit = table.get("fit")
    column = table.get("column")
    if column is not None and not isinstance(column, str):
        raise ConfigError(f"{where}.column: must be a string (a column name), got {column!r}")
    if column is not None and fit is None:
        raise ConfigError(f'{where}.column: only meaningful with fit = "..."')
    fit_options = dict(_table(table.get("fit_options", {}), f"{where}.fit_options"))
    if fit_options and fit is None:
        raise ConfigError(f'{where}.fit_options: only meaningful with fit = "..."')
    s0 = table.get("s0")
    if s0 is not None:
        s0 = _number(s0, f"{where}.s0", gt=0.0)
    spread = table.get("spread_bps")
    if spread is not None:
        spread = _number(spread, f"{where}.spread_bps", ge=0.0)

    if fit is None:
        if not params:
            raise ConfigError(
                f"{where}: give the model's parameters (params = {{...}}) or calibrate it "
                f'(fit = "TICKER" or fit = "file.csv")'
            )
        return _build_model(model_name, params, where), s0, spread
    if not isinstance(fit, str) or not fit:
        raise ConfigError(f"{where}.fit: must be a shipped ticker or a CSV path, got {fit!r}")
    prices = _fit_prices(fit, column, where, base_dir)
    try:
        result = MODELS[model_name].fit(prices, **fit_options)
    except TypeError as exc:
        raise ConfigError(f"{where}.fit_options: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}.fit: cannot fit {model_name} on {fit!r}: {exc}") from None
    model = result.model
    if params:
        model = _build_model(model_name, params, where, base=model)
    if s0 is None:
        s0 = float(np.asarray(prices, dtype=np.float64)[-1])
    return model, s0, spread


def _from_config(
    cls: type[Market],
    config: Mapping[str, Any],
    base_dir: str | Path | None,
    overrides: Mapping[str, Any],
) -> Market:
    config = _table(config, "config")
    _check_keys(config, _TOP_KEYS, "")
    known_overrides = (*_TOP_KEYS[:6], "clock")
    for key in overrides:
        if key not in known_overrides:
            raise ConfigError(f"override {key!r}: unknown; allowed: {', '.join(known_overrides)}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    kwargs: dict[str, Any] = {}
    if "seed" in config:
        seed = config["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: must be an integer >= 0, got {seed!r}")
        kwargs["seed"] = seed
    for key in ("tick_interval", "speed", "bar_interval"):
        if key in config:
            kwargs[key] = _number(config[key], key, gt=0.0)
    if "spread_bps" in config:
        kwargs["spread_bps"] = _number(config["spread_bps"], "spread_bps", ge=0.0)
    if "lot_size" in config:
        lot = config["lot_size"]
        if isinstance(lot, bool) or not isinstance(lot, int) or lot < 1:
            raise ConfigError(f"lot_size: must be an integer >= 1, got {lot!r}")
        kwargs["lot_size"] = lot
    if "symbols" not in config:
        raise ConfigError("symbols: missing; add at least one [symbols.NAME] table")
    symbols = _table(config["symbols"], "symbols")
    if not symbols:
        raise ConfigError("symbols: empty; add at least one [symbols.NAME] table")
    models: dict[str, PriceModel] = {}
    s0: dict[str, float] = {}
    spreads: dict[str, float] = {}
    for name, spec in symbols.items():
        model, start, spread = _symbol_from_config(str(name), spec, base)
        models[str(name)] = model
        if start is not None:
            s0[str(name)] = start
        if spread is not None:
            spreads[str(name)] = spread
    if spreads:
        default_spread = kwargs.get("spread_bps", 10.0)
        kwargs["spread_bps"] = {s: spreads.get(s, default_spread) for s in models}
    correlation = None
    if "correlation" in config:
        corr = _table(config["correlation"], "correlation")
        _check_keys(corr, ("symbols", "matrix"), "correlation")
        if "matrix" not in corr:
            raise ConfigError("correlation.matrix: missing (a list of rows, one per symbol)")
        correlation = corr
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return cls(models, s0=s0, correlation=correlation, **kwargs)


@functools.cache
def _default_calibration() -> tuple[
    tuple[tuple[str, PriceModel], ...], tuple[tuple[str, float], ...], SquareMatrix
]:
    """Fits, start prices and return correlation of the shipped tickers (once per process)."""
    import warnings

    from quoteflow import data

    fits: dict[str, Callable[[Any], PriceModel]] = {
        "AAPL": lambda p: GARCH.fit(p, dist="t").model,
        "GOOG": lambda p: GBM.fit(p).model,
        "IBM": lambda p: MeanReversion.fit(p).model,
        "MSFT": lambda p: GARCH.fit(p, dist="normal").model,
    }
    models: list[tuple[str, PriceModel]] = []
    s0: list[tuple[str, float]] = []
    for ticker, fit in fits.items():
        prices = data.load(ticker)["adj_close"]
        with warnings.catch_warnings():
            # A fit that stops short of full convergence is still a sensible demo market;
            # the warning belongs to explicit calibration, not to server start-up.
            warnings.simplefilter("ignore")
            models.append((ticker, fit(prices)))
        s0.append((ticker, float(prices.iloc[-1])))
    returns = np.diff(np.log(data.load_all("adj_close")[list(fits)].to_numpy()), axis=0)
    corr: SquareMatrix = np.corrcoef(returns, rowvar=False)
    corr.setflags(write=False)
    return tuple(models), tuple(s0), corr
