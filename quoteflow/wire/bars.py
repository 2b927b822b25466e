"""The bar roll-up rule of ``GET /history``, in one home for the server and every client.

The market closes one OHLCV bar per symbol every ``bar_interval`` seconds (the *base*
bars, ``event: bar`` on the stream). History at a longer interval rolls base bars up:

- an interval is one of :data:`INTERVALS` and a whole multiple of the base interval;
- at the base interval a bar *is* the base bar, unchanged;
- at a longer interval, a base bar belongs to the bucket ``floor(start / interval)`` of
  its ``start`` time (Unix milliseconds, so ``1d`` buckets are UTC days and ``1m``
  buckets start on the minute); a bucket's bar has the first base bar's ``open`` and
  ``start``, the last one's ``close`` and ``end``, the ``high`` maximum, ``low``
  minimum and ``volume`` sum;
- a bucket is *complete* when the first base bar of a later bucket arrives; its
  ``last_id`` is the event id of its last base bar.

So a client that takes history (bars and ``last_event_id``), then streams from
``last_event_id`` and feeds the stream's bar events to a :class:`BarBuilder` of the same
interval gets exactly the bars a client connected all along would have built: the first
event after ``last_event_id`` is the first base bar of the next bucket.

Standard library only (``quoteflow.wire`` imports nothing else from quoteflow).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

__all__ = [
    "BASE",
    "INTERVALS",
    "Bar",
    "BarBuilder",
    "interval_ms",
    "iso_ms",
    "roll_up",
    "valid_intervals",
]

#: The intervals ``GET /history`` offers, in milliseconds.
INTERVALS: Final[dict[str, int]] = {
    "1s": 1_000,
    "5s": 5_000,
    "15s": 15_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}


#: The interval name of the market's own bars, unchanged (``/history`` without
#: ``interval``), whatever their length.
BASE: Final = "base"


def iso_ms(ts: str) -> int:
    """Unix milliseconds of an ISO-8601 UTC time such as ``2026-11-27T02:03:04.567Z``.

    Raises
    ------
    ValueError
        ``ts`` is not an ISO-8601 time.
    """
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        raise ValueError(f"time {ts!r} has no time zone (use ...Z for UTC)")
    return math.floor(dt.timestamp() * 1000 + 0.5)


def interval_ms(name: str) -> int:
    """Milliseconds of the interval ``name`` (a key of :data:`INTERVALS`).

    Raises
    ------
    ValueError
        ``name`` is not one of :data:`INTERVALS`.
    """
    ms = INTERVALS.get(name)
    if ms is None:
        raise ValueError(f"unknown interval {name[:20]!r}: choose from {', '.join(INTERVALS)}")
    return ms


def _ratio(ms: int, base_ms: float) -> int:
    """``ms / base_ms`` when it is a whole number >= 1 (to 0.1 % of one base bar), else 0."""
    if not base_ms > 0:  # (also NaN) no interval is a multiple of it
        return 0
    ratio = ms / base_ms
    k = round(ratio)
    return k if k >= 1 and abs(ratio - k) <= 1e-3 else 0


def valid_intervals(base_ms: float) -> list[str]:
    """The names of :data:`INTERVALS` that are whole multiples of ``base_ms``."""
    return [name for name, ms in INTERVALS.items() if _ratio(ms, base_ms)]


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of ``/history`` (times as ISO-8601 UTC strings, like the stream)."""

    start: str
    end: str
    open: float
    high: float
    low: float
    close: float
    volume: int

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Bar:
        """The bar of a ``bar`` event payload (other keys such as ``seq`` are ignored)."""
        return cls(
            start=str(data["start"]),
            end=str(data["end"]),
            open=float(data["open"]),
            high=float(data["high"]),
            low=float(data["low"]),
            close=float(data["close"]),
            volume=int(data["volume"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"start", "end", "open", "high", "low", "close", "volume"}``."""
        return {
            "start": self.start,
            "end": self.end,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    def merge(self, later: Bar) -> Bar:
        """This bar extended by the ``later`` one (same bucket)."""
        return Bar(
            start=self.start,
            end=later.end,
            open=self.open,
            high=max(self.high, later.high),
            low=min(self.low, later.low),
            close=later.close,
            volume=self.volume + later.volume,
        )


class BarBuilder:
    """Rolls base bars up to one interval, incrementally (the rule of this module).

    Parameters
    ----------
    interval : str
        A key of :data:`INTERVALS`, or :data:`BASE` (the base bars as they are).
    base_ms : float
        The market's bar interval in milliseconds.

    Raises
    ------
    ValueError
        ``interval`` is unknown or not a whole multiple of ``base_ms``.
    """

    def __init__(self, interval: str, base_ms: float) -> None:
        if not base_ms > 0:
            raise ValueError(f"the bar interval must be positive, got {base_ms} ms")
        ms = base_ms if interval == BASE else interval_ms(interval)
        k = 1 if interval == BASE else _ratio(int(ms), base_ms)
        if not k:
            raise ValueError(
                f"interval {interval!r} is not a multiple of the market's bar interval "
                f"({base_ms / 1000:g} s): choose from {', '.join(valid_intervals(base_ms))}"
            )
        self.interval = interval
        self.ms = int(ms)
        self.passthrough = k == 1
        self._bucket: int | None = None
        self._bar: Bar | None = None
        self._last_id: str | None = None

    @property
    def pending(self) -> Bar | None:
        """The bar of the bucket still open (not complete yet), if any."""
        return self._bar

    def add(self, bar: Bar, event_id: str | None) -> tuple[Bar, str | None] | None:
        """Account one base bar (its event id); the ``(bar, last_id)`` it completes, if any."""
        if self.passthrough:
            return bar, event_id
        bucket = iso_ms(bar.start) // self.ms
        done: tuple[Bar, str | None] | None = None
        if self._bar is None or bucket != self._bucket:
            if self._bar is not None:
                done = (self._bar, self._last_id)
            self._bucket = bucket
            self._bar = bar
        else:
            self._bar = self._bar.merge(bar)
        self._last_id = event_id
        return done


def roll_up(
    bars: Iterable[tuple[Bar, str | None]], interval: str, base_ms: float
) -> list[tuple[Bar, str | None]]:
    """The complete bars of ``interval`` built from base bars in order (with their ids)."""
    builder = BarBuilder(interval, base_ms)
    out: list[tuple[Bar, str | None]] = []
    for bar, event_id in bars:
        done = builder.add(bar, event_id)
        if done is not None:
            out.append(done)
    return out
