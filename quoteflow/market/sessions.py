"""Simulated time: a clock that steps with the market, trading sessions from an exchange calendar.

Without a calendar or a start date the simulated time of an event is its wall-clock time.
With ``start`` it begins there and advances one market step per tick, around the clock.
With ``calendar`` (an ``exchange_calendars`` name such as ``"XNYS"``) it advances one step
per tick *inside* sessions only: ticks fall at ``open + k * step`` while before the close
(or a lunch break), and the tick after the last one of a session is the first of the next
session, at its open: closed periods take no wall time. Early closes and breaks come from
the calendar. The rules, and how the market draws the gap across a closed period, are in
docs/market.md ("Trading sessions").

A market step of ``dt`` model years is ``dt * SIM_SECONDS_PER_YEAR`` simulated seconds:
the models are calibrated on daily data (``dt = 1/252`` is one trading day), and a
trading day is taken as one regular NYSE session of 6.5 hours.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import difflib
import warnings
from dataclasses import dataclass
from typing import Any

from quoteflow.errors import ConfigError

__all__ = [
    "SIM_SECONDS_PER_YEAR",
    "ClockTick",
    "SimClock",
    "calendar_sessions",
    "iso_from_ns",
    "parse_start",
]

#: Simulated seconds per model year: 252 trading days of one 6.5-hour session each.
SIM_SECONDS_PER_YEAR: float = 252 * 6.5 * 3600.0

_NS = 1_000_000_000
#: Sessions are read from the calendar this many days at a time, as the clock needs them.
_CHUNK_DAYS = 366
#: A calendar with no session in this many chunks in a row is treated as exhausted.
_MAX_EMPTY_CHUNKS = 4
#: The range a start of simulated time must lie in (Unix ns): 1970-01-01 .. 2200-01-01.
_EARLIEST, _LATEST = 0, 7_258_118_400 * _NS


def iso_from_ns(ns: int) -> str:
    """Unix nanoseconds as ISO-8601 UTC with milliseconds (truncated), like ``ts``.

    Integer arithmetic: a simulated time on a whole millisecond is never written one
    millisecond early by float rounding.
    """
    secs, rem = divmod(int(ns), _NS)
    stamp = _dt.datetime.fromtimestamp(secs, _dt.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{rem // 1_000_000:03d}Z"


def parse_start(value: Any, where: str = "start") -> int:
    """A start of simulated time as Unix nanoseconds.

    Parameters
    ----------
    value
        A date (``"2024-11-25"`` or a TOML/Python ``date``: midnight UTC) or a date-time
        (``"2024-11-25T14:30:00Z"``, with an offset, or naive = UTC; a ``datetime``).
    where
        The key named in errors.

    Raises
    ------
    ConfigError
        Not a date or date-time.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                value = _dt.date.fromisoformat(text)
            else:
                value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f'{where}: not a date or date-time: {value!r} (use "2024-11-25" or '
                '"2024-11-25T14:30:00Z")'
            ) from None
    delta: _dt.timedelta
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        delta = value - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    elif isinstance(value, _dt.date):
        delta = _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC) - _dt.datetime(
            1970, 1, 1, tzinfo=_dt.UTC
        )
    else:
        raise ConfigError(
            f"{where}: must be a date or date-time, got {type(value).__name__} {value!r}"
        )
    ns = (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1_000
    if not _EARLIEST <= ns < _LATEST:
        # Bounded so that a clock running for centuries still formats as a date.
        raise ConfigError(f"{where}: must be from 1970-01-01 to before 2200-01-01, got {value}")
    return ns


def _calendar(name: Any, where: str) -> Any:
    """The ``exchange_calendars`` class registered as ``name``, or a ``ConfigError``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f'{where}: must be an exchange calendar name such as "XNYS", got {name!r}'
        )
    try:
        import exchange_calendars as xc
    except ImportError:  # pragma: no cover - a base dependency
        raise ConfigError(
            f"{where}: needs the exchange-calendars package (pip install exchange-calendars)"
        ) from None
    names = xc.get_calendar_names(include_aliases=True)
    if name not in names:
        hint = difflib.get_close_matches(name.upper(), names, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{where}: unknown exchange calendar {name!r}{did}; e.g. XNYS (New York), "
            "XLON (London), XTKS (Tokyo), XHKG (Hong Kong); exchange_calendars.get_calendar_names() "
            "lists them all"
        )
    return name


def calendar_sessions(name: str, first: _dt.date, last: _dt.date) -> list[tuple[int, int]]:
    """The trading intervals ``(open_ns, close_ns)`` of calendar ``name`` between two dates.

    A session with a break (lunch) gives two intervals, ``open .. break_start`` and
    ``break_end .. close``; early closes are the calendar's own close times.

    Raises
    ------
    ConfigError
        The calendar cannot give sessions for those dates (outside its supported range).
    """
    import exchange_calendars as xc
    import pandas as pd

    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.x uses pandas APIs that pandas 3 deprecates: its
            # warnings say nothing to a quoteflow user (and are errors in our tests).
            warnings.simplefilter("ignore")
            cal = xc.get_calendar(name, start=first.isoformat(), end=last.isoformat())
            sched = cal.schedule
    except Exception as exc:  # the library's own errors for out-of-range dates
        raise ConfigError(
            f"calendar {name}: no sessions between {first} and {last}: {exc}"
        ) from None
    out: list[tuple[int, int]] = []
    for open_, b_start, b_end, close in zip(
        sched["open"], sched["break_start"], sched["break_end"], sched["close"], strict=True
    ):
        o, c = pd.Timestamp(open_).value, pd.Timestamp(close).value
        if pd.isna(b_start) or pd.isna(b_end):
            out.append((o, c))
        else:
            out.append((o, pd.Timestamp(b_start).value))
            out.append((pd.Timestamp(b_end).value, c))
    return [(o, c) for o, c in out if c > o]


@dataclass(frozen=True, slots=True)
class ClockTick:
    """Where one market tick falls in simulated time.

    Attributes
    ----------
    sim_ns
        Simulated time of the tick, Unix nanoseconds.
    opens
        The tick is the first of a session (a ``session`` ``open`` event precedes it).
    closes
        The tick is the last of its session (bars close with it, a ``session`` ``closed``
        event follows it).
    gap_years
        Model time in years that this tick's move spans across a closed period (the
        first tick of every session but the first); ``None`` for a regular step of ``dt``.
    close_ns
        With ``closes``: the session's scheduled close (or break), Unix ns (the
        simulated time of the ``session`` ``closed`` event).
    """

    sim_ns: int
    opens: bool = False
    closes: bool = False
    gap_years: float | None = None
    close_ns: int | None = None


class SimClock:
    """The simulated clock of a market: wall time, a free-running clock, or exchange sessions.

    Parameters
    ----------
    step_seconds
        Simulated seconds per tick (``dt * SIM_SECONDS_PER_YEAR``).
    calendar
        An ``exchange_calendars`` name (``"XNYS"``), or None for no sessions.
    start
        Start of simulated time (see :func:`parse_start`), or None: with a calendar, the
        current date; without one, simulated time is wall time.
    closed_fraction
        Model time that one second of closed market counts as, in session seconds
        (``>= 0``): what the gap across a closed period is drawn over.

    Raises
    ------
    ConfigError
        Unknown calendar, bad start, a step below one millisecond, no sessions after
        ``start``.
    """

    def __init__(
        self,
        step_seconds: float,
        calendar: str | None = None,
        start: Any = None,
        closed_fraction: float = 0.1,
    ) -> None:
        self.calendar = None if calendar is None else _calendar(calendar, "calendar")
        self.closed_fraction = closed_fraction
        self._start_ns = None if start is None else parse_start(start)
        self.step_ns = round(step_seconds * _NS)
        #: True when ``sim_ts`` is the wall clock (no calendar, no start).
        self.is_wall = self.calendar is None and self._start_ns is None
        if not self.is_wall and self.step_ns < 1_000_000:
            raise ConfigError(
                f"calendar/start: a tick advances simulated time by {step_seconds:.3g} s "
                "(dt * 5,896,800 s per model year), below sim_ts's millisecond resolution: "
                "raise speed or tick_interval"
            )
        self._k = 0
        self._sessions: list[tuple[int, int]] = []
        self._i = 0
        self._t: int | None = None
        self._in_session = False
        if self.calendar is not None:
            begin = self._start_ns
            if begin is None:
                today = _dt.datetime.now(_dt.UTC).date()
                begin = self._start_ns = parse_start(today)
            self._next_day = _dt.datetime.fromtimestamp(begin // _NS, _dt.UTC).date()
            self._load()
            # The first interval that is still open at the start.
            closes = [c for _, c in self._sessions]
            self._i = bisect.bisect_right(closes, begin)
            self._ensure()

    @property
    def is_open(self) -> bool:
        """Whether the market is in a session (always, without a calendar): between a tick
        that opened a session and the one that closed it."""
        return self.calendar is None or self._in_session

    def _load(self) -> None:
        assert self.calendar is not None
        for _ in range(_MAX_EMPTY_CHUNKS):
            first = self._next_day
            last = first + _dt.timedelta(days=_CHUNK_DAYS - 1)
            self._next_day = last + _dt.timedelta(days=1)
            after = self._sessions[-1][1] if self._sessions else -1
            fresh = [s for s in calendar_sessions(self.calendar, first, last) if s[0] >= after]
            if fresh:
                self._sessions.extend(fresh)
                return
        raise ConfigError(
            f"calendar {self.calendar}: no sessions in the {_MAX_EMPTY_CHUNKS * _CHUNK_DAYS} "
            f"days from {first}"
        )

    def _ensure(self) -> None:
        """Read more sessions when the clock reaches the end of those read so far."""
        while self._i >= len(self._sessions):
            # Drop what is behind; keep indexes small on a feed that runs for years.
            del self._sessions[: self._i]
            self._i = 0
            self._load()

    def tick(self, wall_ns: int) -> ClockTick:
        """Advance to the next tick; where it falls in simulated time.

        Parameters
        ----------
        wall_ns
            Wall-clock time of the tick (Unix ns): the simulated time when the clock is
            the wall clock.
        """
        if self.calendar is None:
            if self._start_ns is None:
                return ClockTick(wall_ns)
            t = self._start_ns + self._k * self.step_ns
            self._k += 1
            return ClockTick(t)
        gap: float | None = None
        if self._t is None:
            open_, close = self._sessions[self._i]
            assert self._start_ns is not None
            self._t = max(open_, self._start_ns)
            opens = True
        else:
            close = self._sessions[self._i][1]
            nxt = self._t + self.step_ns
            if nxt < close:
                self._t, opens = nxt, False
            else:
                last = self._t
                self._i += 1
                self._ensure()
                open_, close_next = self._sessions[self._i]
                # The rest of the session runs at the session rate, the closed period at
                # closed_fraction of it (docs/market.md, "The overnight gap").
                seconds = (close - last) + self.closed_fraction * (open_ - close)
                gap = seconds / _NS / SIM_SECONDS_PER_YEAR
                self._t, opens, close = open_, True, close_next
        closes = self._t + self.step_ns >= close
        self._in_session = not closes
        return ClockTick(
            self._t,
            opens=opens,
            closes=closes,
            gap_years=gap,
            close_ns=close if closes else None,
        )
