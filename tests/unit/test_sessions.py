"""Trading sessions in simulated time: a week of XNYS, the half day, session events, the gap."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quoteflow.errors import ConfigError
from quoteflow.market import Market
from quoteflow.market.sessions import SIM_SECONDS_PER_YEAR, SimClock, iso_from_ns, parse_start
from quoteflow.models import GARCH, GBM, MeanReversion
from quoteflow.sources import MarketEvent
from quoteflow.wire import encode_payload

#: Thanksgiving week 2024 on the New York Stock Exchange, in UTC: regular sessions
#: 09:30-16:00 ET (14:30-21:00 UTC), closed on Thursday 28 November (Thanksgiving), and
#: Friday 29 November is a half day closing at 13:00 ET (18:00 UTC).
THANKSGIVING_WEEK = [
    ("2024-11-25T14:30:00.000Z", "2024-11-25T21:00:00.000Z"),
    ("2024-11-26T14:30:00.000Z", "2024-11-26T21:00:00.000Z"),
    ("2024-11-27T14:30:00.000Z", "2024-11-27T21:00:00.000Z"),
    ("2024-11-29T14:30:00.000Z", "2024-11-29T18:00:00.000Z"),
]
STEP_S = 60.0  # one simulated minute per tick


def speed_for(step_seconds: float, tick_interval: float) -> float:
    """The ``speed`` (model years per wall second) that makes one tick ``step_seconds`` long."""
    return step_seconds / SIM_SECONDS_PER_YEAR / tick_interval


#: Simulated minutes per bar: 390- and 210-minute sessions are not whole numbers of bars,
#: so the last bar of each session is closed early by the close.
BAR_MINUTES = 45


def week_market(**options: Any) -> Market:
    tick = 0.001
    return Market(
        {"A": GBM(0.05, 0.3), "B": GARCH(), "C": MeanReversion(2.0, 100.0, 0.2)},
        seed=5,
        tick_interval=tick,
        speed=speed_for(STEP_S, tick),
        bar_interval=BAR_MINUTES * tick,
        calendar="XNYS",
        start="2024-11-25",
        **options,
    )


def run_week(market: Market) -> list[list[MarketEvent]]:
    """Batches until the session of Monday 2 December opens (a week and a weekend)."""
    batches = []
    for k in range(10_000):
        batch = market.step(now=1_800_000_000.0 + k * 0.001)
        if batch[0].event == "session" and batch[0].data["sim_ts"].startswith("2024-12-02"):
            return batches
        batches.append(batch)
    raise AssertionError("the week did not end within 10,000 ticks")


def _ns(iso: str) -> int:
    return parse_start(iso)


def test_a_week_of_xnys_ticks_only_in_sessions_with_the_half_day() -> None:
    batches = run_week(week_market())
    ticks = [e.data for b in batches for e in b if e.event == "tick" and e.symbol == "A"]
    sessions = [(_ns(o), _ns(c)) for o, c in THANKSGIVING_WEEK]
    by_session: list[list[int]] = [[] for _ in sessions]
    for t in ticks:
        t_ns = _ns(t["sim_ts"])
        inside = [i for i, (o, c) in enumerate(sessions) if o <= t_ns < c]
        assert inside, f"tick outside every session: {t['sim_ts']}"
        by_session[inside[0]].append(t_ns)
    # No tick on Thanksgiving, none after 18:00 UTC on the half day.
    assert not any(t["sim_ts"].startswith("2024-11-28") for t in ticks)
    step = round(STEP_S * 1e9)
    for (o, c), stamps in zip(sessions, by_session, strict=True):
        # Every minute from the open to the last minute before the close, in order.
        assert stamps == list(range(o, c, step))
    assert [len(s) for s in by_session] == [390, 390, 390, 210]


def test_session_events_at_every_boundary_for_every_symbol() -> None:
    batches = run_week(week_market())
    for symbol in ("A", "B", "C"):
        events = [(e.event, e.data) for b in batches for e in b if e.symbol == symbol]
        boundaries = [d for kind, d in events if kind == "session"]
        want = [
            (state, stamp)
            for o, c in THANKSGIVING_WEEK
            for state, stamp in (("open", o), ("closed", c))
        ]
        assert [(d["state"], d["sim_ts"]) for d in boundaries] == want
        assert all(d["symbol"] == symbol and "ts" in d for d in boundaries)
    # In its batch, an open comes before the session's first quotes, a close after the
    # last quotes and bars; between them the market is open, afterwards closed.
    for batch in batches:
        kinds = [e.event for e in batch]
        if "session" not in kinds:
            continue
        states = [e.data["state"] for e in batch if e.event == "session"]
        if states[0] == "open":
            assert kinds[:3] == ["session"] * 3 and kinds[3] == "tick"
        if states[-1] == "closed":
            assert kinds[-3:] == ["session"] * 3 and kinds[-4] in ("tick", "bar")


def test_bars_close_at_the_session_close_and_never_span_a_closed_market() -> None:
    batches = run_week(week_market())
    bars = [e.data for b in batches for e in b if e.event == "bar" and e.symbol == "A"]
    ticks = {e.data["ts"]: e.data["sim_ts"] for b in batches for e in b if e.event == "tick"}
    for bar in bars:
        start, end = _ns(ticks[bar["start"]]), _ns(ticks[bar["end"]])
        assert end - start < BAR_MINUTES * round(STEP_S * 1e9)
        assert ticks[bar["start"]][:10] == ticks[bar["end"]][:10] == bar["sim_ts"][:10]
    # 390 minutes = 8 bars of 45 and one of 30 closed by the close; the half day's
    # 210 minutes = 4 of 45 and one of 30. Each day's first bar starts at the open.
    per_day: dict[str, list[str]] = {}
    for bar in bars:
        per_day.setdefault(bar["sim_ts"][:10], []).append(ticks[bar["start"]][11:16])
    assert {d: len(b) for d, b in per_day.items()} == {
        "2024-11-25": 9,
        "2024-11-26": 9,
        "2024-11-27": 9,
        "2024-11-29": 5,
    }
    assert all(starts[0] == "14:30" for starts in per_day.values())
    assert per_day["2024-11-29"][-1] == "17:30" and bars[-1]["sim_ts"] == "2024-11-29T17:59:00.000Z"


def test_every_event_is_pre_encoded_exactly_as_the_json_module_would() -> None:
    market = week_market(trades={"rate": 200.0})
    for batch in run_week(market)[380:400]:  # across the first close and the next open
        encoded = batch.encoded  # type: ignore[attr-defined]
        assert len(encoded) == len(batch)
        for event, (payload, text) in zip(batch, encoded, strict=True):
            assert payload is event.data
            assert text == encode_payload(event.data)


def test_overnight_gap_variance_matches_the_rule_over_many_symbols() -> None:
    """The move from Monday's last tick to Tuesday's open, over 20,000 GBM symbols.

    Rule (docs/market.md): the gap spans ``((close - last tick) + closed_fraction *
    (open - close)) / SIM_SECONDS_PER_YEAR`` model years, so a GBM log move has variance
    ``sigma^2 tau``. With N = 20,000 independent symbols the sample variance has a
    relative standard error of sqrt(2/N) = 1 %; the bound is 5 of them. Rounding of the
    quotes to cents (around 100) adds ~2e-9 to a variance of ~1e-4: negligible.
    """
    n, sigma, tick = 20_000, 0.4, 0.01
    step_s = 30 * 60.0
    market = Market(
        {f"S{i}": GBM(0.0, sigma) for i in range(n)},
        seed=9,
        tick_interval=tick,
        speed=speed_for(step_s, tick),
        bar_interval=None,
        calendar="XNYS",
        start="2024-11-25",
        closed_fraction=0.25,
    )
    last = None
    while True:
        a = market.step_arrays(now=0.0)
        if a.opens and last is not None:
            break
        last = a
    assert last.sim_ts == "2024-11-25T20:30:00.000Z" and a.sim_ts == "2024-11-26T14:30:00.000Z"
    closed = 17.5 * 3600
    tau = (30 * 60 + 0.25 * closed) / SIM_SECONDS_PER_YEAR
    r = np.log(a.price / last.price)
    assert r.var(ddof=1) == pytest.approx(sigma**2 * tau, rel=5 * math.sqrt(2 / n))
    # A regular step (Tuesday's second tick) has the step's variance, not the gap's.
    b = market.step_arrays(now=0.0)
    step_var = sigma**2 * market.dt
    assert np.log(b.price / a.price).var(ddof=1) == pytest.approx(
        step_var, rel=5 * math.sqrt(2 / n)
    )


def test_without_a_calendar_sim_time_runs_from_start_or_is_the_wall_clock() -> None:
    tick = 0.25
    m = Market(
        {"A": GBM(0.0, 0.2)},
        seed=1,
        tick_interval=tick,
        speed=speed_for(90.0, tick),
        start="2024-01-02",
    )
    stamps = [m.step(now=1_800_000_000.0)[0].data["sim_ts"] for _ in range(3)]
    assert stamps == [
        "2024-01-02T00:00:00.000Z",
        "2024-01-02T00:01:30.000Z",
        "2024-01-02T00:03:00.000Z",
    ]
    wall = Market({"A": GBM(0.0, 0.2)}, seed=1)
    tick_data = wall.step(now=1_795_000_000.25)[0].data
    assert tick_data["sim_ts"] == tick_data["ts"] == "2026-11-18T11:06:40.250Z"
    assert [e.event for e in wall.step()] == ["tick"]  # no session events without a calendar


def test_a_start_inside_a_session_begins_there() -> None:
    clock = SimClock(600.0, calendar="XNYS", start="2024-11-29T17:00:00Z")
    first, second = clock.tick(0), clock.tick(0)
    assert iso_from_ns(first.sim_ns) == "2024-11-29T17:00:00.000Z" and first.opens
    assert iso_from_ns(second.sim_ns) == "2024-11-29T17:10:00.000Z"
    while not clock.tick(0).closes:
        pass
    following = clock.tick(0)
    assert iso_from_ns(following.sim_ns) == "2024-12-02T14:30:00.000Z" and following.opens
    # the rest of Friday's session (17:50 -> 18:00) plus the closed weekend
    closed = datetime(2024, 12, 2, 14, 30, tzinfo=UTC) - datetime(2024, 11, 29, 18, tzinfo=UTC)
    want = (600 + 0.1 * closed.total_seconds()) / SIM_SECONDS_PER_YEAR
    assert following.gap_years == pytest.approx(want, rel=1e-12)


def test_sessions_keep_coming_past_the_first_chunk_of_the_calendar() -> None:
    # A step of a whole session: one tick per trading day, for more than a year.
    clock = SimClock(6.5 * 3600, calendar="XNYS", start="2024-01-02")
    days = [iso_from_ns(clock.tick(0).sim_ns)[:10] for _ in range(300)]
    assert days[0] == "2024-01-02" and len(set(days)) == 300
    assert days == sorted(days) and days[-1].startswith("2025-03")


def test_a_lunch_break_is_a_closed_period() -> None:
    clock = SimClock(30 * 60.0, calendar="XHKG", start="2024-01-02")
    states = []
    for _ in range(16):
        t = clock.tick(0)
        states.append((iso_from_ns(t.sim_ns)[11:16], t.opens, t.closes))
    # Hong Kong: 09:30-12:00 and 13:00-16:00 HKT = 01:30-04:00 and 05:00-08:00 UTC
    assert states[:6] == [
        ("01:30", True, False),
        ("02:00", False, False),
        ("02:30", False, False),
        ("03:00", False, False),
        ("03:30", False, True),
        ("05:00", True, False),
    ]


def test_the_toml_keys_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'seed = 1\ncalendar = "XNYS"\nstart = 2024-11-29\nclosed_fraction = 0.2\n'
        "tick_interval = 0.01\nspeed = 0.05\n"
        '[trades]\nrate = 3.0\nsize = "geometric"\nsize_p = 0.05\n'
        '[symbols.A]\nmodel = "gbm"\nparams = { mu = 0.0, sigma = 0.2 }\n'
    )
    m = Market.from_toml(path)
    assert m.sim_clock.calendar == "XNYS" and m.sim_clock.closed_fraction == 0.2
    assert m.trade_settings is not None and m.trade_settings.size == "geometric"
    first = m.step(now=0.0)
    assert first[0].event == "session" and first[0].data["sim_ts"] == "2024-11-29T14:30:00.000Z"
    # the command line's --trade-rate changes the rate, keeps the file's size law
    faster = Market.from_toml(path, trades={"rate": 9.0})
    assert faster.trade_settings is not None
    assert (faster.trade_settings.rate, faster.trade_settings.size) == (9.0, "geometric")

    def error(extra: str) -> str:
        bad = tmp_path / "bad.toml"
        bad.write_text(extra + '[symbols.A]\nmodel = "gbm"\nparams = { mu = 0.0, sigma = 0.2 }\n')
        with pytest.raises(ConfigError) as info:
            Market.from_toml(bad)
        return str(info.value)

    assert "calendar: unknown exchange calendar 'xnys' (did you mean 'XNYS'?)" in error(
        'calendar = "xnys"\n'
    )
    assert "start: not a date or date-time: 'Monday'" in error('start = "Monday"\n')
    assert "start: must be from 1970-01-01 to before 2200-01-01" in error("start = 1800-01-01\n")
    assert "closed_fraction: must be >= 0" in error("closed_fraction = -1\n")
    assert "trades.rate: must be > 0" in error("[trades]\nrate = 0\n")
    assert "trades.sise: unknown key (did you mean 'size'?)" in error("[trades]\nsise = 1\n")
    assert "trades.size: must be one of lognormal, geometric" in error(
        '[trades]\nsize = "pareto"\n'
    )
    assert "trades.size_p: must be in (0, 1]" in error("[trades]\nsize_p = 2.0\n")
    assert "below sim_ts's millisecond resolution" in error('calendar = "XNYS"\nspeed = 1e-12\n')


def test_the_shipped_sessions_example_opens_on_the_monday_of_thanksgiving_week() -> None:
    m = Market.from_toml(Path(__file__).resolve().parents[2] / "examples" / "sessions.toml")
    assert m.sim_clock.step_ns == pytest.approx(60e9, rel=1e-9)  # one minute per tick
    first = m.step(now=0.0)
    assert [e.data["state"] for e in first if e.event == "session"] == ["open"] * 3
    assert first[3].data["sim_ts"] == "2024-11-25T14:30:00.000Z"
