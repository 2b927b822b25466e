"""Scripted scenarios for UI testing: a timeline of market events and transport faults.

A :class:`Scenario` is a list of steps, each one action at a time (seconds from the
scenario's start, ``at``, or after the previous step, ``after``), read from TOML
(``quoteflow serve --scenario crash.toml``) or from the JSON body of ``POST /scenario``
(the same shape). docs/scenarios.md lists every action and key.

A :class:`ScenarioSource` wraps a :class:`~quoteflow.market.Market` and runs scenarios
against it. Time is the scenario's own clock, advanced by the pace of every tick
produced (``tick_interval``, or ``1/rate`` during a burst), never by the wall clock: a
step fires before the first tick at or after its time, so the same seed and scenario
give the same payloads (timestamps aside), however loaded the machine is.

Market actions (jump, volatility, halt, resume, list, delist, spread, burst) are
applied here. Transport actions (drop, stall, retry, refuse, restart) act on the
connections of the server in front of the source, through the :class:`Transport` the
server attaches (:meth:`ScenarioSource.attach_transport`;
``quoteflow.server.faults.StreamFaults``).

Halted and delisted symbols stream no events (ticks, trades, bars, the calendar's
session events). A halt and its resume are ``event: session`` events with state
``"halted"`` and ``"open"``, a delisting ``"closed"`` and a listing ``"open"``: the
payload of exchange-calendar sessions (:data:`~quoteflow.wire.payload.SESSION_FIELDS`:
symbol, state, ts, sim_ts, stamped with the tick they precede).
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import logging
import math
import threading
import tomllib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quoteflow.errors import ConfigError
from quoteflow.market import Market
from quoteflow.market.config import short_list
from quoteflow.market.engine import session_event
from quoteflow.models import GBM, build_model
from quoteflow.sources import MarketEvent, Source, paced
from quoteflow.wire.payload import EncodedBatch, pre_encoded

__all__ = [
    "ACTIONS",
    "MAX_RUNNING",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "ScenarioSource",
    "Step",
    "Transport",
]

log = logging.getLogger(__name__)

#: Longest time or duration a step may name, in seconds (a day).
MAX_SECONDS = 86_400.0
#: Most steps one scenario may hold.
MAX_STEPS = 1_000
#: Most scenarios running at once on one source.
MAX_RUNNING = 16
#: Fastest burst, in ticks per second.
MAX_RATE = 1_000.0
#: Largest id gap of a restart.
MAX_GAP = 1_000_000_000
#: Largest ``retry`` a step may send, in ms (an hour).
MAX_RETRY_MS = 3_600_000
#: Most reconnects a refuse step may answer.
MAX_REFUSALS = 10_000
#: Two scenario times closer than this are the same instant (float sums of intervals).
_EPS = 1e-9

_TIME_KEYS = ("at", "after")
#: The model of a listed symbol, and the defaults of a GBM's parameters not given.
_LISTED_GBM = GBM(mu=0.0, sigma=0.3)


class ScenarioError(ConfigError):
    """A scenario that cannot run: the message names the step and the key."""


class Transport(Protocol):
    """The transport faults a server offers a scenario (``quoteflow.server.faults``)."""

    def drop_all(self) -> int:
        """Close every open stream at once; return how many."""
        ...

    def stall(self, seconds: float) -> int:
        """Send nothing at all (no event, no heartbeat) on every open stream for
        ``seconds``, without closing it; return how many streams."""
        ...

    def send_retry(self, ms: int) -> int:
        """Send ``retry: ms`` on every open stream and as the first line of every new
        one; return how many open streams got it."""
        ...

    def refuse_next(self, count: int, status: int) -> None:
        """Answer the next ``count`` stream requests with ``status`` (503 or 204)."""
        ...

    def restart(self, gap: int) -> int:
        """Act out a server restart: drop every stream, lose the replay buffer and
        continue the ids ``gap`` higher, so every resume gets ``event: reset``."""
        ...


# ------------------------------------------------------------------------ validation


def _where(index: int, action: str | None) -> str:
    return f"steps[{index}]" + (f" ({action})" if action else "")


def _num(
    step: Mapping[str, Any],
    key: str,
    where: str,
    *,
    lo: float,
    hi: float,
    lo_open: bool = False,
    default: float | None = None,
) -> float:
    value = step.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}: {key}: required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: {key}: must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:  # a JSON integer of 400 digits
        x = math.inf
    low_ok = x > lo if lo_open else x >= lo
    if not (math.isfinite(x) and low_ok and x <= hi):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ScenarioError(f"{where}: {key}: must be {low} and <= {hi:g}, got {value!r}")
    return x


def _int(
    step: Mapping[str, Any], key: str, where: str, *, lo: int, hi: int, default: int | None = None
) -> int:
    value = step.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}: {key}: required")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key}: must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _symbol(step: Mapping[str, Any], where: str) -> str:
    value = step.get("symbol")
    if value is None:
        raise ScenarioError(f"{where}: symbol: required")
    if not isinstance(value, str) or not value or not value.isprintable() or "," in value:
        raise ScenarioError(
            f"{where}: symbol: must be a non-empty printable name without commas, got {value!r}"
        )
    if len(value) > 64:
        raise ScenarioError(f"{where}: symbol: at most 64 characters")
    return value


def _duration(step: Mapping[str, Any], where: str, *, required: bool) -> float | None:
    if "duration" not in step and not required:
        return None
    return _num(step, "duration", where, lo=0.0, hi=MAX_SECONDS, lo_open=True)


def _check_jump(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"symbol": _symbol(s, w), "pct": _num(s, "pct", w, lo=-100.0, hi=1000.0, lo_open=True)}


def _check_factor(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {
        "symbol": _symbol(s, w),
        "factor": _num(s, "factor", w, lo=0.0, hi=1000.0, lo_open=True),
        "duration": _duration(s, w, required=False),
    }


def _check_halt(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"symbol": _symbol(s, w), "duration": _duration(s, w, required=False)}


def _check_symbol(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"symbol": _symbol(s, w)}


def _check_list(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    model = s.get("model", "gbm")
    if not isinstance(model, str):
        raise ScenarioError(f"{w}: model: must be a model name such as 'gbm', got {model!r}")
    params = s.get("params", {})
    if not isinstance(params, Mapping):
        raise ScenarioError(f"{w}: params: must be a table of model parameters")
    symbol = _symbol(s, w)
    try:
        # A GBM's parameters not given are those of _LISTED_GBM.
        built = build_model(model, dict(params), base=_LISTED_GBM, where=w)
    except (ConfigError, ValueError, TypeError) as exc:
        text = str(exc)
        # "<w>.params.sigma: ..." reads "<w>: params.sigma: ..." like every other key.
        text = f"{w}: {text[len(w) + 1 :]}" if text.startswith(w + ".") else f"{w}: {text}"
        raise ScenarioError(text) from None
    return {
        "symbol": symbol,
        "model": built,
        "price": _num(s, "price", w, lo=0.0, hi=1e9, lo_open=True, default=100.0),
    }


def _check_burst(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {
        "rate": _num(s, "rate", w, lo=0.0, hi=MAX_RATE, lo_open=True),
        "duration": _duration(s, w, required=True),
    }


def _check_none(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {}


def _check_stall(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"duration": _duration(s, w, required=True)}


def _check_retry(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"ms": _int(s, "ms", w, lo=0, hi=MAX_RETRY_MS)}


def _check_refuse(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    status = s.get("status", 503)
    if status not in (503, 204) or isinstance(status, bool):
        raise ScenarioError(f"{w}: status: must be 503 or 204, got {status!r}")
    return {"count": _int(s, "count", w, lo=1, hi=MAX_REFUSALS, default=1), "status": status}


def _check_restart(s: Mapping[str, Any], w: str) -> dict[str, Any]:
    return {"gap": _int(s, "gap", w, lo=1, hi=MAX_GAP, default=1000)}


@dataclass(frozen=True)
class _Action:
    keys: tuple[str, ...]
    check: Callable[[Mapping[str, Any], str], dict[str, Any]]
    transport: bool = False
    summary: str = ""


#: Every action: its keys (besides ``action``, ``at``, ``after``), its check, and
#: whether it acts on the transport. The one table the TOML, the JSON body and the docs
#: follow.
ACTIONS: dict[str, _Action] = {
    "jump": _Action(("symbol", "pct"), _check_jump, summary="price jumps by pct %"),
    "volatility": _Action(
        ("symbol", "factor", "duration"), _check_factor, summary="shocks x factor"
    ),
    "halt": _Action(("symbol", "duration"), _check_halt, summary="trading halt"),
    "resume": _Action(("symbol",), _check_symbol, summary="trading resumes"),
    "list": _Action(("symbol", "model", "params", "price"), _check_list, summary="new symbol"),
    "delist": _Action(("symbol",), _check_symbol, summary="symbol removed"),
    "spread": _Action(("symbol", "factor", "duration"), _check_factor, summary="spread x factor"),
    "burst": _Action(("rate", "duration"), _check_burst, summary="rate ticks/s"),
    "drop": _Action((), _check_none, transport=True, summary="close every stream"),
    "stall": _Action(("duration",), _check_stall, transport=True, summary="silent streams"),
    "retry": _Action(("ms",), _check_retry, transport=True, summary="send retry: ms"),
    "refuse": _Action(("count", "status"), _check_refuse, transport=True, summary="503/204"),
    "restart": _Action(("gap",), _check_restart, transport=True, summary="id gap, reset"),
}


@dataclass(frozen=True)
class Step:
    """One checked step of a scenario.

    Attributes
    ----------
    index : int
        Position in the scenario's ``steps`` (named by error messages).
    at : float
        Scenario time at which it fires, seconds from the scenario's start.
    action : str
        A key of :data:`ACTIONS`.
    args : dict
        The action's checked arguments.
    """

    index: int
    at: float
    action: str
    args: Mapping[str, Any]

    @property
    def where(self) -> str:
        """``steps[i] (action)``, the prefix of this step's errors."""
        return _where(self.index, self.action)

    @property
    def symbol(self) -> str | None:
        """The symbol the step acts on, if any."""
        value = self.args.get("symbol")
        return value if isinstance(value, str) else None


def _check_step(index: int, raw: Any, previous: float) -> Step:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{_where(index, None)}: must be a table with an 'action' key")
    action = raw.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        hint = difflib.get_close_matches(str(action), ACTIONS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ScenarioError(
            f"{_where(index, None)}: action: {action!r} is not an action{did}; "
            f"choose from {', '.join(ACTIONS)}"
        )
    where = _where(index, action)
    spec = ACTIONS[action]
    allowed = ("action", *_TIME_KEYS, *spec.keys)
    for key in raw:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ScenarioError(
                f"{where}: {str(key)[:40]!r}: unknown key{did}; allowed: {', '.join(allowed)}"
            )
    if "at" in raw and "after" in raw:
        raise ScenarioError(f"{where}: give 'at' or 'after', not both")
    if "at" in raw:
        at = _num(raw, "at", where, lo=0.0, hi=MAX_SECONDS)
    else:
        at = previous + _num(raw, "after", where, lo=0.0, hi=MAX_SECONDS, default=0.0)
        if at > MAX_SECONDS:
            raise ScenarioError(f"{where}: after: the step falls beyond {MAX_SECONDS:g} s")
    return Step(index, at, action, spec.check(raw, where))


@dataclass(frozen=True)
class Scenario:
    """A checked timeline of steps (see the module docstring and docs/scenarios.md).

    Attributes
    ----------
    name : str
        Shown by ``GET /scenario`` and in logs.
    steps : tuple of Step
        In firing order (by time, then position).
    source : str
        Where it was read from (the file name, ``body``): the prefix of its errors.
    """

    name: str
    steps: tuple[Step, ...]
    source: str = "scenario"

    @property
    def duration(self) -> float:
        """Scenario time of the last step (its own duration not included)."""
        return self.steps[-1].at if self.steps else 0.0

    @classmethod
    def from_config(cls, config: Any, *, source: str = "scenario") -> Scenario:
        """Check a parsed scenario: ``{"name"?: str, "steps": [{...}, ...]}``.

        Raises
        ------
        ScenarioError
            ``"<source>: steps[3] (halt): symbol: required"``: the step, the key and what
            is allowed.
        """
        try:
            name, steps = cls._from_config(config)
            return cls(name, steps, source)
        except ScenarioError as exc:
            raise ScenarioError(f"{source}: {exc}") from None

    @classmethod
    def _from_config(cls, config: Any) -> tuple[str, tuple[Step, ...]]:
        if not isinstance(config, Mapping):
            raise ScenarioError("must be a table with a 'steps' list")
        for key in config:
            if key not in ("name", "steps"):
                raise ScenarioError(f"{str(key)[:40]!r}: unknown key; allowed: name, steps")
        name = config.get("name", "scenario")
        if not isinstance(name, str) or not name.isprintable() or len(name) > 200:
            raise ScenarioError("name: must be a printable string of at most 200 characters")
        raw = config.get("steps")
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            raise ScenarioError("steps: must be a non-empty list of steps")
        if len(raw) > MAX_STEPS:
            raise ScenarioError(f"steps: at most {MAX_STEPS} steps, got {len(raw)}")
        steps: list[Step] = []
        previous = 0.0
        for i, item in enumerate(raw):
            step = _check_step(i, item, previous)
            previous = step.at
            steps.append(step)
        steps.sort(key=lambda s: (s.at, s.index))
        return name, tuple(steps)

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read and check a scenario file (``[[steps]]`` tables).

        Raises
        ------
        ScenarioError
            Unreadable file, bad TOML, or a bad step: ``crash.toml: steps[2] (jump): pct: ...``.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{p}: cannot read scenario: {exc.strerror or exc}") from None
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
        return cls.from_config(config, source=str(p))


# --------------------------------------------------------------------------- running


@dataclass
class ScenarioRun:
    """A scenario started on a source: its progress (``GET /scenario``)."""

    id: int
    scenario: Scenario
    origin: float
    fired: int = 0
    errors: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def done(self) -> bool:
        """True once every step has fired (or the run was cancelled)."""
        return self.cancelled or self.fired >= len(self.scenario.steps)

    def status(self, clock: float) -> dict[str, Any]:
        """JSON-able progress: name, steps fired of all, scenario seconds elapsed."""
        return {
            "id": self.id,
            "name": self.scenario.name,
            "steps": len(self.scenario.steps),
            "fired": self.fired,
            "elapsed": round(max(clock - self.origin, 0.0), 6),
            "done": self.done,
            "errors": list(self.errors),
        }


#: The ``session`` events the steps of one tick announce, as ``(state, symbol)``: made
#: into events once the tick's time is known (:meth:`ScenarioSource.step`).
_Notes = list[tuple[str, str]]


def _session(state: str, symbol: str) -> tuple[str, str]:
    return (state, symbol)


#: Where each kind of event goes in a batch (the market's order: a session's opens, ticks,
#: trades, bars, a session's closes).
_RANK = {"tick": 1, "trade": 2, "bar": 3}


def _rank(event: MarketEvent) -> int:
    if event.event == "session":
        return 0 if event.data.get("state") == "open" else 4
    return _RANK.get(event.event, 3)


def _times(batch: Sequence[MarketEvent]) -> tuple[str, str]:
    """``(ts, sim_ts)`` of a market's batch: its first event (a tick or a session open)
    carries both."""
    data = batch[0].data if batch else {}
    ts = str(data.get("ts", ""))
    return ts, str(data.get("sim_ts", ts))


def _filtered(batch: Sequence[MarketEvent], hidden: set[str]) -> list[MarketEvent]:
    """``batch`` without the events (ticks, trades, bars, sessions) of ``hidden``
    symbols, pre-encoded JSON kept."""
    encoded = pre_encoded(batch)
    events: list[MarketEvent] = []
    pairs: list[tuple[dict[str, Any], str]] = []
    aligned = True
    for i, ev in enumerate(batch):
        if ev.symbol in hidden:
            continue
        events.append(ev)
        if aligned and i < len(encoded) and encoded[i][0] is ev.data:
            pairs.append(encoded[i])
        else:
            aligned = False
    return EncodedBatch(events, pairs)


class ScenarioSource(Source):
    """A market that runs scripted scenarios: the source ``quoteflow serve`` streams.

    Parameters
    ----------
    market : Market
        The simulated market the scenarios act on.
    scenario : Scenario, optional
        Started with the first tick.
    transport : Transport, optional
        The transport faults of the server in front (the server attaches its own).

    Raises
    ------
    ScenarioError
        ``scenario`` names a symbol the market does not have (and no earlier step lists).
    """

    def __init__(
        self,
        market: Market,
        scenario: Scenario | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.market = market
        self.transport = transport
        self._lock = threading.RLock()
        #: Scenario seconds since the first tick (the clock every step is timed on).
        self.clock = 0.0
        self._timeline: list[tuple[float, int, Callable[[_Notes], None]]] = []
        self._order = itertools.count()
        self._run_ids = itertools.count(1)
        self.runs: list[ScenarioRun] = []
        self._halted: set[str] = set()
        self._delisted: set[str] = set()
        # Symbols listed by a scenario: each its own one-symbol market, stepped with the rest.
        self._listed: dict[str, Market] = {}
        self._rate: float | None = None
        self._rate_token = 0
        self._listings = 0
        if scenario is not None:
            # The server attaches its transport when it starts: transport steps are
            # checked when they fire.
            self._start(scenario, need_transport=False)

    # -- catalog -----------------------------------------------------------------------

    def _all_symbols(self) -> list[str]:
        return [*self.market.symbols, *self._listed]

    @property
    def symbols(self) -> list[str]:
        """The listed symbols: the market's and the scenario-listed, minus the delisted."""
        return [s for s in self._all_symbols() if s not in self._delisted]

    @property
    def halted(self) -> frozenset[str]:
        """Symbols halted right now."""
        return frozenset(self._halted)

    @property
    def prices_reseeded(self) -> int:  # type: ignore[override]
        """The market's price-guard restarts (see ``Market._guard``)."""
        return self.market.prices_reseeded + sum(m.prices_reseeded for m in self._listed.values())

    def _market_of(self, symbol: str) -> Market:
        return self._listed.get(symbol, self.market)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per listed symbol ``{"model", "params", "price"}`` (``GET /symbols``)."""
        out = {k: v for k, v in self.market.describe().items() if k not in self._delisted}
        for symbol, market in self._listed.items():
            if symbol not in self._delisted:
                out.update(market.describe())
        return out

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Change a listed symbol's parameters (``PUT /symbols/{symbol}``)."""
        if symbol in self._delisted:
            raise ConfigError(f"{symbol!r} was delisted by a scenario")
        return self._market_of(symbol).update(symbol, params)

    def attach_transport(self, transport: Transport) -> None:
        """Use ``transport`` for the transport steps (the server calls this at start)."""
        self.transport = transport

    # -- scenarios ---------------------------------------------------------------------

    def check(self, scenario: Scenario, *, need_transport: bool = True) -> None:
        """Raise :class:`ScenarioError` if ``scenario`` cannot run on this source now.

        Every symbol a step names must exist when the step fires (counting the listings
        and delistings of earlier steps); transport steps need a transport (unless
        ``need_transport`` is False).
        """
        try:
            self._check(scenario, need_transport)
        except ScenarioError as exc:
            raise ScenarioError(f"{scenario.source}: {exc}") from None

    def _check(self, scenario: Scenario, need_transport: bool) -> None:
        known = set(self.symbols)
        for step in scenario.steps:
            symbol = step.symbol
            if step.action == "list":
                assert symbol is not None
                if symbol in known or symbol in self._all_symbols():
                    raise ScenarioError(f"{step.where}: symbol: {symbol!r} is already listed")
                known.add(symbol)
            elif symbol is not None and symbol not in known:
                hint = difflib.get_close_matches(symbol, sorted(known), n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ScenarioError(
                    f"{step.where}: symbol: unknown symbol {symbol!r}{did}; "
                    f"listed then: {short_list(sorted(known))}"
                )
            if step.action == "delist":
                known.discard(symbol or "")
            if ACTIONS[step.action].transport and need_transport and self.transport is None:
                raise ScenarioError(
                    f"{step.where}: transport faults need the server in front of the "
                    "market (quoteflow serve, or serve_in_background)"
                )

    def start(self, scenario: Scenario) -> ScenarioRun:
        """Start ``scenario`` now: its time 0 is the next tick.

        Raises
        ------
        ScenarioError
            The scenario does not fit this source (:meth:`check`), or
            :data:`MAX_RUNNING` scenarios are running already.
        """
        return self._start(scenario, need_transport=True)

    def _start(self, scenario: Scenario, *, need_transport: bool) -> ScenarioRun:
        with self._lock:
            running = [r for r in self.runs if not r.done]
            if len(running) >= MAX_RUNNING:
                raise ScenarioError(
                    f"{len(running)} scenarios are running (at most {MAX_RUNNING}); "
                    "wait for one to finish or cancel them (DELETE /scenario)"
                )
            self.check(scenario, need_transport=need_transport)
            run = ScenarioRun(next(self._run_ids), scenario, self.clock)
            # The newest runs stay visible (GET /scenario); every running one is among them.
            self.runs = [*self.runs, run][-2 * MAX_RUNNING :]
            for step in scenario.steps:
                self._schedule(self.clock + step.at, self._firing(run, step))
            return run

    def cancel_all(self) -> int:
        """Stop every running scenario (steps not fired yet never fire); return how many.

        What fired stays in force (a delisted symbol stays delisted); timed undos (the end
        of a halt, a volatility period or a burst) still happen.
        """
        with self._lock:
            running = [r for r in self.runs if not r.done]
            for run in running:
                run.cancelled = True
            return len(running)

    def status(self) -> dict[str, Any]:
        """``GET /scenario``: the clock, the runs, halted and delisted symbols."""
        with self._lock:
            return {
                "clock": round(self.clock, 6),
                "running": sum(1 for r in self.runs if not r.done),
                "scenarios": [r.status(self.clock) for r in self.runs],
                "halted": sorted(self._halted),
                "delisted": sorted(self._delisted),
                "listed": sorted(s for s in self._listed if s not in self._delisted),
                "rate": self._rate,
            }

    def _schedule(self, due: float, action: Callable[[_Notes], None]) -> None:
        heapq.heappush(self._timeline, (due, next(self._order), action))

    def _firing(self, run: ScenarioRun, step: Step) -> Callable[[_Notes], None]:
        def fire(out: _Notes) -> None:
            if run.cancelled:
                return
            run.fired += 1
            try:
                self._apply(step, out)
            except ConfigError as exc:
                # A step that no longer fits (its symbol delisted by another run): say
                # so in the run's status and the log; the other steps go on.
                message = f"{run.scenario.name}: {step.where}: {exc}"
                run.errors.append(message)
                log.warning("scenario step failed: %s", message)
            except Exception as exc:  # a failing step must not stop the market's pump
                message = f"{run.scenario.name}: {step.where}: {type(exc).__name__}: {exc}"
                run.errors.append(message)
                log.exception("scenario step failed: %s", message)
            else:
                log.info("scenario %r: %s at t=%.3fs", run.scenario.name, step.where, step.at)

        return fire

    # -- the actions -------------------------------------------------------------------

    def _apply(self, step: Step, out: _Notes) -> None:
        a = step.args
        action = step.action
        symbol = step.symbol
        if symbol is not None and action != "list" and symbol not in self.symbols:
            raise ScenarioError(f"symbol {symbol!r} is not listed now")
        if ACTIONS[action].transport:
            self._apply_transport(step)
        elif action == "jump":
            assert symbol is not None
            self._market_of(symbol).scale_price(symbol, 1.0 + a["pct"] / 100.0)
        elif action in ("volatility", "spread"):
            assert symbol is not None
            self._scale(action, symbol, a["factor"], a["duration"])
        elif action == "halt":
            assert symbol is not None
            self._halt(symbol, out)
            if a["duration"] is not None:
                self._schedule(self.clock + a["duration"], lambda o: self._resume(symbol, o))
        elif action == "resume":
            assert symbol is not None
            self._resume(symbol, out)
        elif action == "list":
            assert symbol is not None
            self._list(symbol, a["model"], a["price"], out)
        elif action == "delist":
            assert symbol is not None
            self._delisted.add(symbol)
            self._halted.discard(symbol)
            out.append(_session("closed", symbol))
        elif action == "burst":
            self._burst(a["rate"], a["duration"])

    def _apply_transport(self, step: Step) -> None:
        transport = self.transport
        if transport is None:
            raise ScenarioError("transport faults need the server in front of the market")
        a = step.args
        if step.action == "drop":
            transport.drop_all()
        elif step.action == "stall":
            transport.stall(a["duration"])
        elif step.action == "retry":
            transport.send_retry(a["ms"])
        elif step.action == "refuse":
            transport.refuse_next(a["count"], a["status"])
        elif step.action == "restart":
            transport.restart(a["gap"])

    def _scale(self, action: str, symbol: str, factor: float, duration: float | None) -> None:
        market = self._market_of(symbol)
        if action == "volatility":
            market.scale_shocks(symbol, factor)
            if duration is not None:
                self._schedule(self.clock + duration, lambda o: market.scale_shocks(symbol, 1.0))
            return
        before = market.spread_bps(symbol)
        market.set_spread_bps(symbol, before * factor)
        if duration is not None:
            self._schedule(self.clock + duration, lambda o: market.set_spread_bps(symbol, before))

    def _halt(self, symbol: str, out: _Notes) -> None:
        if symbol not in self._halted:
            self._halted.add(symbol)
            out.append(_session("halted", symbol))

    def _resume(self, symbol: str, out: _Notes) -> None:
        if symbol in self._halted:
            self._halted.discard(symbol)
            out.append(_session("open", symbol))

    def _list(self, symbol: str, model: Any, price: float, out: _Notes) -> None:
        if symbol in self._all_symbols():
            raise ScenarioError(f"symbol {symbol!r} is already listed")
        m = self.market
        # A seed of its own per listing, derived from the market's: deterministic.
        seq = np.random.SeedSequence(m.seed, spawn_key=(0x5C, self._listings))
        self._listings += 1
        self._listed[symbol] = Market(
            {symbol: model},
            s0={symbol: price},
            seed=int(seq.generate_state(1)[0]),
            tick_interval=m.tick_interval,
            speed=m.speed,
            bar_interval=m.bar_interval,
            spread_bps=m.spread_bps(m.symbols[0]),
            lot_size=m.lot_size,
            trades=m.trade_settings,
        )
        out.append(_session("open", symbol))

    def _burst(self, rate: float, duration: float | None) -> None:
        self._rate = rate
        self._rate_token += 1
        token = self._rate_token

        def end(_: _Notes) -> None:
            if self._rate_token == token:  # a later burst is in force: it ends itself
                self._rate = None

        assert duration is not None
        self._schedule(self.clock + duration, end)

    # -- producing ---------------------------------------------------------------------

    def interval(self) -> float:
        """Seconds until the next tick: the market's, or ``1/rate`` during a burst."""
        rate = self._rate
        return self.market.tick_interval if rate is None else 1.0 / rate

    def step(self) -> list[MarketEvent]:
        """Fire the steps that are due, advance one tick, return the batch (no clock)."""
        with self._lock:
            notes: _Notes = []
            timeline = self._timeline
            while timeline and timeline[0][0] <= self.clock + _EPS:
                _, _, action = heapq.heappop(timeline)
                action(notes)
            batch = self.market.step()
            ts, sim_ts = _times(batch)
            if self._listed:
                batch = self._with_listed(batch, sim_ts)
            hidden = self._halted | self._delisted
            if hidden:
                batch = _filtered(batch, hidden)
            if notes:
                # The steps' session events first, stamped with the tick's times and
                # encoded as the market encodes its own (engine.session_event).
                made = [session_event(symbol, state, ts, sim_ts) for state, symbol in notes]
                batch = EncodedBatch(
                    [*(event for event, _ in made), *batch],
                    [*(pair for _, pair in made), *pre_encoded(batch)],
                )
            self.clock += self.interval()
            return batch

    def _with_listed(self, batch: list[MarketEvent], sim_ts: str) -> list[MarketEvent]:
        """The market's batch with the listed symbols' events merged in the market's order.

        A listed symbol is a market of its own without a calendar: its events take the
        main market's ``sim_ts``, and it gets the main market's session opens and closes
        (those of its first symbol, copied).
        """
        tick = next((e for e in batch if e.event == "tick"), None)
        stamp = tick.data.get("ts_ns") if tick is not None else None
        now = stamp / 1e9 if isinstance(stamp, int) else None
        template = self.market.symbols[0]
        calendar = [e for e in batch if e.event == "session" and e.symbol == template]
        wall = self.market.sim_clock.is_wall
        merged = list(batch)
        for symbol, market in self._listed.items():
            if symbol in self._delisted:
                continue
            for e in calendar:
                merged.append(
                    session_event(symbol, str(e.data["state"]), e.data["ts"], e.data["sim_ts"])[0]
                )
            for e in market.step(now):
                merged.append(
                    e if wall else MarketEvent(e.event, e.symbol, {**e.data, "sim_ts": sim_ts})
                )
        merged.sort(key=_rank)  # stable: market order within each kind
        return merged

    async def batches(self) -> AsyncGenerator[list[MarketEvent], None]:
        """Yield :meth:`step` at the market's pace (or a burst's), forever."""
        async for batch in paced(self, self.step, self.interval):
            yield batch

    def close(self) -> None:
        """Close the market."""
        self.market.close()
