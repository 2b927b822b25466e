"""Replay of recorded sessions (and of the shipped daily history) as a steerable source.

:class:`SessionReplay` plays a *timeline* (one row per event: type, symbol, payload JSON,
recorded time, recorded id) tick by tick at a multiple of the recorded inter-arrival
times, or as fast as the server can publish (``speed="max"``), and can be paused,
resumed, sped up or slowed down and moved to another time while it runs
(:meth:`SessionReplay.control`, ``POST /replay``). Two timelines feed it:

- a recording of ``quoteflow record`` (:func:`SessionReplay.from_recording`, Parquet via
  :mod:`quoteflow.recording`);
- the shipped daily history or a CSV (:func:`SessionReplay.from_history`): the
  :class:`quoteflow.sources.Replay` rows laid out one every ``1 / rows_per_second``
  seconds, with ``ts``/``start``/``end`` stamped at replay time as before.

So ``quoteflow serve --replay AAPL`` and ``--replay session.parquet`` take the same path
(docs/recording.md).

Only market events (``tick``, ``bar``, ``trade``, ``session``:
:data:`quoteflow.wire.payload.EVENT_TYPES`) whose payload is a JSON object with a string
``"symbol"`` are replayed (what a quoteflow stream carries); the rest is counted in
:attr:`SessionReplay.skipped` by reason. A recorded ``"seq"`` is removed: the broker
adds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from quoteflow.errors import ConfigError, QuoteflowError
from quoteflow.sources import MarketEvent, Replay, Source, iso_ms
from quoteflow.wire.payload import EVENT_TYPES, SEQ_FIELD, EncodedBatch, encode_payload

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ACTIONS",
    "MAX_BATCH",
    "SPEED_RANGE",
    "ReplayControl",
    "ReplayControlError",
    "SessionReplay",
    "parse_speed",
]

#: Speeds a replay accepts (a multiple of the recorded pace), besides ``"max"``.
SPEED_RANGE = (0.1, 1000.0)
#: Most events handed to the broker in one batch (at ``speed="max"``, or when far behind).
MAX_BATCH = 2048
#: ``POST /replay`` actions and the keys each takes besides ``action``.
ACTIONS: dict[str, tuple[str, ...]] = {
    "pause": (),
    "resume": (),
    "seek": ("to",),
    "speed": ("speed",),
}
#: Payload fields that hold the time of an event (restamped by a history replay).
_TIME_FIELDS = ("ts", "start", "end")

#: Recorded times, Unix ns, one per event, non-decreasing: shape ``(n_events,)``.
EventTimes = npt.NDArray[np.int64]


class RecordedPayload(Mapping[str, Any]):
    """A recorded payload: its JSON text, decoded only when someone reads it.

    The broker frames the text as it is (``EncodedBatch``), so at ``--speed max`` most
    payloads are never decoded; only a snapshot or a status reads one. Built only from
    the text of a non-empty JSON object from which :func:`_without_seq` has removed any
    top-level ``"seq"``, so the two questions the broker asks of every payload (is it
    non-empty, does it hold ``seq``) are answered without decoding.
    """

    __slots__ = ("_obj", "text")

    _obj: dict[str, Any]

    def __init__(self, text: str) -> None:
        # Only the text: one of these is made per replayed event, most are never read.
        self.text = text

    def _decoded(self) -> dict[str, Any]:
        try:
            return self._obj
        except AttributeError:
            pass
        try:
            obj = json.loads(self.text)
        except ValueError:  # a hand-made file whose data is not the JSON it claims
            obj = {}
        self._obj = obj if isinstance(obj, dict) else {}
        return self._obj

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __bool__(self) -> bool:
        return True

    def __contains__(self, key: object) -> bool:
        if key == SEQ_FIELD:
            return False  # removed at load (_without_seq)
        return key in self._decoded()


class ReplayControlError(QuoteflowError):
    """A control request that cannot be applied: ``status`` 400 (bad request) or 409
    (not possible in the replay's state)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class ReplayControl(Protocol):
    """What ``GET``/``POST /replay`` needs from a source (a replaying server only)."""

    def replay_status(self) -> dict[str, Any]:
        """The replay's state as JSON."""
        ...

    def control(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one ``POST /replay`` body; return the new status.

        Raises
        ------
        ReplayControlError
        """
        ...


def parse_speed(value: Any, where: str = "speed") -> float | None:
    """A replay speed: a number in :data:`SPEED_RANGE` or ``"max"`` (returned as None).

    Raises
    ------
    ConfigError
        Naming the value and the allowed range.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "max":
            return None
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                f"{where} {value!r}: give a number from {SPEED_RANGE[0]:g} to "
                f"{SPEED_RANGE[1]:g} or 'max'"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number or 'max', got {type(value).__name__}")
    lo, hi = SPEED_RANGE
    try:
        speed = float(value)
    except OverflowError:  # an integer of hundreds of digits (JSON allows it)
        raise ConfigError(f"{where}: must be from {lo:g} to {hi:g}, or 'max'") from None
    if not (math.isfinite(speed) and lo <= speed <= hi):
        raise ConfigError(f"{where} {value!r}: must be from {lo:g} to {hi:g}, or 'max'")
    return speed


def _iso_ns(t_ns: int) -> str:
    return iso_ms(t_ns / 1e9)


def _parse_time(value: Any) -> int:
    """``"to"`` of a seek: ISO-8601 (``2026-12-02T06:50:00Z``) or Unix seconds -> ns."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return round(float(value) * 1e9)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return round(stamp.timestamp() * 1e6) * 1000
    raise ValueError(f"expected an ISO-8601 string or Unix seconds, got {type(value).__name__}")


class SessionReplay(Source):
    """Play a timeline of recorded events at a chosen speed, under remote control.

    Parameters
    ----------
    table : pyarrow.Table
        The timeline: columns ``id``, ``event``, ``data``, ``received_ns``, ``symbol``,
        ``seq`` (what :func:`quoteflow.recording.read_recording` returns).
    speed : float, "max" or None
        Multiple of the recorded pace, :data:`SPEED_RANGE`; ``"max"`` or None (as fast
        as the broker takes batches; slow clients are dropped by its backlog bound and
        resume with ``Last-Event-ID``).
    ids : {"fresh", "original"}
        ``fresh``: the broker numbers events as usual. ``original``: each event keeps its
        recorded id (decimal integers, strictly increasing; the memory broker publishes
        them, see ``broker_from_url(given_ids=True)``); seeking backwards is then refused
        (409), since ids on a stream never go back.
    restamp : bool
        Replace ``ts``/``ts_ns``/``start``/``end`` by the replay's wall clock (the daily
        history's behaviour); otherwise payloads are replayed as recorded.
    label : str
        What is replayed (``GET /symbols``, ``GET /replay``).
    paused : bool
        Start paused (``POST /replay {"action": "resume"}`` starts it), so clients can
        connect before the first event.
    clock : callable
        Unix seconds, for restamping.

    Raises
    ------
    ConfigError
        No replayable event, ids that cannot be kept, a bad speed or ids value.
    """

    def __init__(
        self,
        table: pa.Table,
        *,
        speed: float | str | None = 1.0,
        ids: str = "fresh",
        restamp: bool = False,
        label: str = "recording",
        paused: bool = False,
        clock: Any = time.time,
    ) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if ids not in ("fresh", "original"):
            raise ConfigError(f"replay ids {ids!r}: choose 'fresh' or 'original'")
        pace = None if speed is None else parse_speed(speed)
        self.label = label
        self.restamp = restamp
        self._clock = clock
        #: Recorded events not replayed, by reason.
        self.skipped: dict[str, int] = {}
        total = table.num_rows
        kind_ok = pc.is_in(table.column("event"), value_set=pa.array(sorted(EVENT_TYPES)))
        has_symbol = pc.is_valid(table.column("symbol"))
        keep = pc.and_(kind_ok, has_symbol)
        n_kind = total - pc.sum(kind_ok.cast(pa.int64())).as_py() if total else 0
        if n_kind:
            self.skipped["not-market-event"] = n_kind
        n_sym = total - n_kind - (pc.sum(keep.cast(pa.int64())).as_py() if total else 0)
        if n_sym:
            self.skipped["no-symbol"] = n_sym
        table = table.filter(keep).combine_chunks()
        if table.num_rows == 0:
            raise ConfigError(
                f"replay: {label} holds no market event (tick, bar, trade, session) with a "
                f"JSON payload naming its symbol ({total} events recorded)"
            )
        self._symbols_col = table.column("symbol").combine_chunks()
        self._kinds = table.column("event").combine_chunks()
        self._texts = _without_seq(table.column("data").combine_chunks())
        times = table.column("received_ns").to_numpy().astype(np.int64, copy=False)
        # A wall clock may step back (NTP): replay time never does.
        self._t: EventTimes = np.maximum.accumulate(times)
        self._ids: npt.NDArray[np.int64] | None = None
        if ids == "original":
            self._ids = _original_ids(table.column("id").combine_chunks(), label)
        self.ids = ids
        self._names: list[str] = list(dict.fromkeys(pc.unique(self._symbols_col).to_pylist()))
        #: The latest event per symbol (for the price in describe()).
        self._last: dict[str, MarketEvent] = {}
        self._n = table.num_rows
        self._pos = 0
        self._speed = pace
        self._paused = bool(paused)
        # The replay clock: at loop time _anchor_wall, recorded time was _anchor_t.
        self._anchor_wall = 0.0
        self._anchor_t = int(self._t[0])
        self._loop_time = time.monotonic
        self._changed: asyncio.Event | None = None
        self.published = 0

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_recording(
        cls, spec: str | Path | Sequence[str | Path], **kwargs: Any
    ) -> SessionReplay:
        """A replay of ``quoteflow record`` files (see
        :func:`quoteflow.recording.recording_files` for ``spec``)."""
        from quoteflow.recording import read_recording, recording_files

        files = recording_files(spec)
        label = (
            str(files[0]) if len(files) == 1 else f"{files[0]} .. {files[-1]} ({len(files)} files)"
        )
        return cls(read_recording(files), label=label, **kwargs)

    @classmethod
    def from_history(
        cls,
        source: Any = None,
        *,
        rows_per_second: float = 4.0,
        speed: float | str | None = 1.0,
        **kwargs: Any,
    ) -> SessionReplay:
        """The daily history (a shipped ticker, ``None`` for all, a CSV, a DataFrame) as
        a timeline: row ``k`` of :class:`~quoteflow.sources.Replay` at ``k /
        rows_per_second`` seconds, restamped at replay time (so ``ts`` is the wall clock
        and the historical day is in ``"date"``, as with ``Replay``).

        Parameters
        ----------
        source
            As for :class:`~quoteflow.sources.Replay`.
        rows_per_second : float
            The pace at speed 1 (trading days per wall second).
        speed : float or None
            Multiple of that pace, or None for as fast as possible.
        **kwargs
            ``ids`` and ``clock`` (see the class); ``symbols``, ``column``, ``spread_bps``
            go to :class:`~quoteflow.sources.Replay`.
        """
        import pyarrow as pa

        replay_opts = {k: kwargs.pop(k) for k in ("symbols", "column", "spread_bps") if k in kwargs}
        history = Replay(source, rows_per_second=rows_per_second, **replay_opts)
        step_ns = 1e9 / history.rows_per_second
        kinds: list[str] = []
        syms: list[str] = []
        texts: list[str] = []
        times: list[int] = []
        k = 0
        while not history.done:
            for ev in history.step(now=0.0):
                kinds.append(ev.event)
                syms.append(ev.symbol)
                texts.append(encode_payload(ev.data))
                times.append(int(k * step_ns))
            k += 1
        n = len(kinds)
        table = pa.table(
            {
                "id": pa.array([str(i + 1) for i in range(n)], pa.string()),
                "event": pa.array(kinds, pa.string()),
                "data": pa.array(texts, pa.string()),
                "received_ns": pa.array(times, pa.int64()),
                "symbol": pa.array(syms, pa.string()),
                "seq": pa.nulls(n, pa.int64()),
            }
        )
        label = "daily history " + ", ".join(history.symbols)
        return cls(table, speed=speed, restamp=True, label=label, **kwargs)

    # -- Source ------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """The symbols of the recording, in order of first appearance."""
        return list(self._names)

    @property
    def done(self) -> bool:
        """True when every event up to the end has been published (a seek can restart)."""
        return bool(self._pos >= self._n)

    def _batch(self, i: int, j: int) -> list[MarketEvent]:
        kinds = self._kinds.slice(i, j - i).to_pylist()
        syms = self._symbols_col.slice(i, j - i).to_pylist()
        texts = self._texts.slice(i, j - i).to_pylist()
        ids = None if self._ids is None else self._ids[i:j].tolist()
        if self.restamp:
            return self._restamped(kinds, syms, texts, ids)
        # MarketEvent.data is declared a dict; the brokers only read payloads (their
        # EventLike.data is a Mapping), so a lazily decoded mapping stands in for one.
        payloads = cast(list[dict[str, Any]], list(map(RecordedPayload, texts)))
        events = list(map(MarketEvent, kinds, syms, payloads))
        last = self._last
        for ev in events[-2 * len(self._names) :]:
            last[ev.symbol] = ev
        return EncodedBatch(events, list(zip(payloads, texts, strict=True)), ids)

    def _restamped(
        self, kinds: list[str], syms: list[str], texts: list[str], ids: list[int] | None
    ) -> list[MarketEvent]:
        """Events whose time fields are the wall clock now (the daily history)."""
        now = self._clock()
        stamp = iso_ms(now)
        now_ns = int(now * 1e9)
        # One json.loads for the whole batch: half the cost of one call per payload.
        payloads: list[dict[str, Any]] = json.loads("[" + ",".join(texts) + "]")
        for d in payloads:
            for name in _TIME_FIELDS:
                if name in d:
                    d[name] = stamp
            if "ts_ns" in d:
                d["ts_ns"] = now_ns
        events = list(map(MarketEvent, kinds, syms, payloads))
        for ev in events[-2 * len(self._names) :]:
            self._last[ev.symbol] = ev
        return EncodedBatch(events, [], ids) if ids is not None else events

    def _now_t(self) -> int:
        """The replay clock: the recorded time (Unix ns) playing now."""
        if self._paused or self._speed is None:
            return self._anchor_t
        elapsed = self._loop_time() - self._anchor_wall
        return self._anchor_t + int(elapsed * self._speed * 1e9)

    def _anchor(self, t_ns: int) -> None:
        self._anchor_wall = self._loop_time()
        self._anchor_t = t_ns

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self, timeout: float | None) -> None:
        """Sleep until a control request or ``timeout`` seconds."""
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    async def batches(self) -> AsyncGenerator[list[MarketEvent], None]:
        """Yield the events as their recorded times come due on the replay clock.

        Every event due by the time the loop wakes is in one batch (at most
        :data:`MAX_BATCH`), so close events (one tick round) stay together. At ``"max"``
        speed, batches of :data:`MAX_BATCH` follow each other with one pass of the event
        loop between them (clients are written to in that pass). After the last event the
        replay waits for a control request (a seek restarts it); it never ends by itself.
        """
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._changed = asyncio.Event()
        self._anchor(int(self._t[self._pos]) if self._pos < self._n else self._anchor_t)
        while True:
            i = self._pos
            if self._paused or i >= self._n:
                await self._wait_change(None)
                continue
            if self._speed is None:
                j = min(self._n, i + MAX_BATCH)
                self.lag_seconds = 0.0
            else:
                now_t = self._now_t()
                due = int(self._t[i])
                if due > now_t:
                    await self._wait_change((due - now_t) / 1e9 / self._speed)
                    continue  # re-read the state: a request may have changed it
                j = int(np.searchsorted(self._t, now_t, side="right"))
                j = max(i + 1, min(j, i + MAX_BATCH))
                self.lag_seconds = (now_t - due) / 1e9 / self._speed
            batch = self._batch(i, j)
            self._pos = j
            if self._speed is None:
                self._anchor(int(self._t[j - 1]))
            self.published += len(batch)
            yield batch
            if self._speed is None:
                await asyncio.sleep(0)  # let the loop write to the clients

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per symbol ``{"model": "recording", "params": {...}, "price": last price}``."""
        params = {
            "source": self.label,
            "from": _iso_ns(int(self._t[0])),
            "to": _iso_ns(int(self._t[-1])),
            "ids": self.ids,
        }
        return {
            sym: {"model": "recording", "params": dict(params), "price": self._price(sym)}
            for sym in self._names
        }

    def _price(self, symbol: str) -> float | None:
        ev = self._last.get(symbol)
        if ev is None:
            return None
        price = ev.data.get("close" if ev.event == "bar" else "price")  # ticks, trades
        return float(price) if isinstance(price, int | float) else None

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Always raises: a recording cannot be changed (steer it with ``POST /replay``)."""
        raise ConfigError("replay source: parameters cannot be changed; use POST /replay")

    # -- control -----------------------------------------------------------------------

    def replay_status(self) -> dict[str, Any]:
        """``GET /replay``: state, speed, position and the recorded time playing."""
        if self._pos >= self._n:
            state = "ended"
        elif self._paused:
            state = "paused"
        else:
            state = "playing"
        now_t = min(max(self._now_t(), int(self._t[0])), int(self._t[-1]))
        return {
            "state": state,
            "speed": "max" if self._speed is None else self._speed,
            "position": self._pos,
            "events": self._n,
            "at": _iso_ns(now_t),
            "from": _iso_ns(int(self._t[0])),
            "to": _iso_ns(int(self._t[-1])),
            "ids": self.ids,
            "source": self.label,
        }

    def control(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``{"action": "pause"|"resume"|"seek"|"speed", "to": t, "speed": x}``.

        ``to`` is an ISO-8601 time (``2026-12-02T06:50:00.250Z``, UTC when no offset
        is given) or Unix seconds, within the recording; ``speed`` a number in
        :data:`SPEED_RANGE` or ``"max"``. Returns :meth:`replay_status`.

        Raises
        ------
        ReplayControlError
            400 for a bad body (naming the key and what is allowed), 409 for a backward
            seek with original ids.
        """
        if not isinstance(request, Mapping):
            raise ReplayControlError(400, 'body must be a JSON object, e.g. {"action": "pause"}')
        action = request.get("action")
        if not isinstance(action, str) or action not in ACTIONS:
            raise ReplayControlError(
                400,
                f"action must be one of {', '.join(ACTIONS)}; got {json.dumps(action)[:60]}",
            )
        wanted = ACTIONS[action]
        extra = sorted(set(request) - {"action", *wanted})
        if extra:
            allowed = ", ".join(wanted) if wanted else "no other key"
            raise ReplayControlError(
                400, f"{action}: unexpected key(s) {', '.join(extra)[:120]} (takes {allowed})"
            )
        for key in wanted:
            if key not in request:
                raise ReplayControlError(400, f"{action} needs {key!r}")
        if action == "pause":
            if not self._paused:
                self._anchor(self._now_t())
                self._paused = True
        elif action == "resume":
            if self._paused:
                self._paused = False
                self._anchor(self._anchor_t)
        elif action == "speed":
            try:
                speed = parse_speed(request["speed"])
            except ConfigError as exc:
                raise ReplayControlError(400, str(exc)) from None
            now_t = self._now_t()
            self._speed = speed
            self._anchor(now_t)
        else:
            self._seek(request["to"])
        self._notify()
        return self.replay_status()

    def _seek(self, value: Any) -> None:
        try:
            to = _parse_time(value)
        except (ValueError, OverflowError, OSError) as exc:
            raise ReplayControlError(
                400,
                f"to {json.dumps(value)[:60]}: {exc}; give an ISO-8601 time or Unix seconds",
            ) from None
        first, last = int(self._t[0]), int(self._t[-1])
        # Times are shown with milliseconds, truncated: the shown "from" must seek too.
        if not first - first % 1_000_000 <= to <= last:
            raise ReplayControlError(
                400,
                f"to {json.dumps(value)[:60]} is outside the recording "
                f"({_iso_ns(first)} to {_iso_ns(last)})",
            )
        pos = int(np.searchsorted(self._t, to, side="left"))
        if self._ids is not None and pos < self._pos:
            raise ReplayControlError(
                409,
                "cannot seek backwards with --replay-ids original: ids on a stream never "
                "go back; seek forward, or serve with fresh ids (the default)",
            )
        self._pos = pos
        self._anchor(to)


def _without_seq(texts: pa.Array) -> pa.Array:
    """``texts`` (JSON objects) with any top-level ``"seq"`` removed: the broker adds its own.

    quoteflow writes ``seq`` last, which one vectorised regex removes; a text that still
    mentions ``"seq"`` (another feed, another position) is decoded and encoded again.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    stripped = pc.replace_substring_regex(texts, pattern=r',"seq":-?[0-9]+}$', replacement="}")
    still = pc.fill_null(pc.match_substring(stripped, f'"{SEQ_FIELD}"'), False)
    rows = np.flatnonzero(still.to_numpy(zero_copy_only=False))
    if rows.size == 0:
        return stripped
    values = stripped.to_pylist()
    for r in rows.tolist():
        try:
            obj = json.loads(values[r])
        except ValueError:
            continue
        if isinstance(obj, dict) and SEQ_FIELD in obj:
            del obj[SEQ_FIELD]
            values[r] = encode_payload(obj)
    return pa.array(values, pa.string())


def _original_ids(ids: pa.Array, label: str) -> npt.NDArray[np.int64]:
    """The recorded ids as int64, checked: decimal, strictly increasing.

    Raises
    ------
    ConfigError
        Naming the first id that cannot be kept and why.
    """
    import pyarrow.compute as pc

    decimal = pc.match_substring_regex(ids, pattern=r"^[0-9]{1,18}$")
    ok = pc.fill_null(decimal, False).to_numpy(zero_copy_only=False)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ConfigError(
            f"--replay-ids original: {label}: event {row + 1} has id "
            f"{ids[row].as_py()!r}, not a decimal integer (the memory broker's ids); "
            "replay with fresh ids (the default)"
        )
    values = pc.cast(ids, "int64").to_numpy()
    steps = np.diff(values)
    if steps.size and not (steps > 0).all():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ConfigError(
            f"--replay-ids original: {label}: event {row + 1} has id {int(values[row])}, "
            f"not above the previous {int(values[row - 1])} (ids must strictly increase); "
            "replay with fresh ids (the default)"
        )
    out: npt.NDArray[np.int64] = values.astype(np.int64, copy=False)
    return out
