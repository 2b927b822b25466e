"""``GET /history``: completed bars (or recent ticks) of one symbol, and where to resume.

The answer comes from the app's :class:`quoteflow.history.HistoryStore`
(``ServerState.history``), which reads the broker like any client, so its
``last_event_id`` is an id ``/stream`` resumes from with no gap and no overlap.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from quoteflow.server.auth import Claims
from quoteflow.server.handlers import JSONHandler
from quoteflow.server.request import ApiError, allowed_symbols, authorize, symbols_error
from quoteflow.wire.bars import BASE, INTERVALS, iso_ms, valid_intervals

__all__ = ["MAX_LIMIT", "HistoryHandler"]

#: Largest ``limit`` (bars or ticks per answer).
MAX_LIMIT = 10_000
#: ``limit`` when none is given: bars, ticks.
DEFAULT_LIMITS = {"bar": 500, "tick": 1000}


def _parse_time(name: str, value: str) -> int:
    """Unix ms of ``value``: ISO-8601 with a zone (``2026-11-27T02:03:04Z``) or Unix seconds."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not -1e11 < seconds < 1e11:
            raise ApiError(400, f"{name}={value[:40]!r}: Unix seconds out of range")
        return math.floor(seconds * 1000)
    try:
        return iso_ms(text)
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400,
            f"{name}={value[:40]!r} is not a time: give ISO-8601 UTC "
            "(2026-11-27T02:03:04.567Z) or Unix seconds",
        ) from None


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):  # before year 1 or after 9999
        return f"{ms / 1000:g} s"


class HistoryHandler(JSONHandler):
    """``GET /history?symbol=S&interval=1m&from=&to=&limit=`` (or ``&events=tick``)."""

    lists_symbols = True

    def _one(self, name: str) -> str | None:
        values = self.get_arguments(name)
        if len(values) > 1:
            raise ApiError(400, f"give {name!r} once, got {len(values)} values")
        return values[0] if values else None

    def _symbol(self, claims: Claims | None) -> str:
        raw = (self._one("symbol") or "").strip()
        state = self.state
        if not raw:
            raise symbols_error(state, "missing 'symbol': name one symbol, e.g. symbol=AAPL")
        if "," in raw:
            raise symbols_error(state, f"one symbol per request, got {raw[:60]!r}")
        (symbol,) = state.resolve_symbols([raw], lambda message: symbols_error(state, message))
        allowed_symbols(state, claims, frozenset({symbol}))
        return symbol

    def _limit(self, kind: str) -> int:
        raw = self._one("limit")
        if raw is None or not raw.strip():
            return DEFAULT_LIMITS[kind]
        text = raw.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise ApiError(400, f"limit={raw[:40]!r}: give a whole number 1..{MAX_LIMIT}")
        limit = int(text)
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"limit={limit}: give a whole number 1..{MAX_LIMIT}")
        return limit

    def _range(self) -> tuple[int | None, int | None]:
        raw_from, raw_to = self._one("from"), self._one("to")
        start = _parse_time("from", raw_from) if raw_from else None
        end = _parse_time("to", raw_to) if raw_to else None
        if start is not None and end is not None and end <= start:
            raise ApiError(400, f"to ({_iso(end)}) must be after from ({_iso(start)})")
        return start, end

    async def get(self) -> None:
        """Respond ``{"symbol", "interval", "bars": [...], "last_event_id"}`` (or ticks)."""
        claims = authorize(self, self.state)
        events = (self._one("events") or "bar").strip().lower()
        if events not in DEFAULT_LIMITS:
            raise ApiError(
                400, f"events={events[:40]!r}: choose bar (the default) or tick, one per request"
            )
        symbol = self._symbol(claims)
        limit = self._limit(events)
        start, end = self._range()
        store = self.state.history
        body: dict[str, Any]
        if events == "tick":
            if self._one("interval"):
                raise ApiError(400, "interval applies to bars only (events=bar)")
            ticks, last_id = store.ticks(symbol, start, end, limit)
            body = {"symbol": symbol, "events": "tick", "ticks": ticks, "last_event_id": last_id}
            self.write_json(body)
            return
        base = store.base_ms
        interval = (self._one("interval") or "").strip() or BASE
        if interval == BASE:
            interval = self._base_name(base)
        elif interval not in INTERVALS:
            raise ApiError(
                400,
                f"unknown interval {interval[:20]!r}: choose from "
                f"{', '.join(valid_intervals(base) if base else INTERVALS)}",
                valid_intervals=valid_intervals(base) if base else list(INTERVALS),
            )
        try:
            bars, last_id = await store.abars(symbol, interval, start, end, limit)
        except ValueError as exc:  # not a multiple of the market's bar interval
            raise ApiError(400, str(exc), valid_intervals=valid_intervals(base or 1)) from None
        except (LookupError, ConnectionError) as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        self.write_json(
            {
                "symbol": symbol,
                "interval": interval,
                "bars": [b.to_dict() for b in bars],
                "last_event_id": last_id,
                "bar_interval": store.base_ms / 1000 if store.base_ms else None,
            }
        )

    @staticmethod
    def _base_name(base: float | None) -> str:
        """The name of the market's own bars: theirs in :data:`INTERVALS`, else ``base``."""
        for name, ms in INTERVALS.items():
            if base is not None and abs(ms - base) < 1e-3 * ms:
                return name
        return BASE
