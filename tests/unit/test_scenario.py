"""Scenario files and the market side of scenarios, stepped without a clock (ScenarioSource.step)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quoteflow.market import Market
from quoteflow.models import GBM, MeanReversion
from quoteflow.scenario import ACTIONS, Scenario, ScenarioError, ScenarioSource
from quoteflow.sources import MarketEvent
from quoteflow.wire.payload import SESSION_FIELDS, pre_encoded

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))


def _market(seed: int = 3, **options: Any) -> Market:
    ticks = itertools.count()
    return Market(
        {"AAA": GBM(mu=0.0, sigma=0.2), "BBB": MeanReversion(kappa=2.0, theta=50.0, sigma=0.3)},
        s0={"AAA": 100.0, "BBB": 50.0},
        seed=seed,
        tick_interval=0.1,
        bar_interval=0.5,
        # A fake clock: the payloads of a seed are then identical, timestamps included.
        clock=lambda: 1_700_000_000.0 + 0.1 * next(ticks),
        **options,
    )


def _source(steps: list[dict[str, Any]], seed: int = 3) -> ScenarioSource:
    return ScenarioSource(_market(seed), Scenario.from_config({"steps": steps}))


def _run(src: ScenarioSource, n: int) -> list[list[MarketEvent]]:
    return [src.step() for _ in range(n)]


def _ticks(batch: list[MarketEvent], symbol: str) -> list[dict[str, Any]]:
    return [e.data for e in batch if e.event == "tick" and e.symbol == symbol]


# ------------------------------------------------------------------- the file format


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "steps: must be a non-empty list"),
        ({"steps": []}, "steps: must be a non-empty list"),
        ({"steps": [{"at": 1}]}, "steps[0]: action: None is not an action"),
        ({"steps": [{"action": "jmup"}]}, "(did you mean 'jump'?)"),
        ({"steps": [{"action": "jump", "pct": 3}]}, "steps[0] (jump): symbol: required"),
        (
            {"steps": [{"action": "jump", "symbol": "AAA", "pcts": 3}]},
            "steps[0] (jump): 'pcts': unknown key (did you mean 'pct'?)",
        ),
        (
            {"steps": [{"action": "jump", "symbol": "AAA", "pct": -100}]},
            "steps[0] (jump): pct: must be > -100",
        ),
        (
            {"steps": [{"action": "drop"}, {"action": "stall", "duration": 0}]},
            "steps[1] (stall): duration: must be > 0",
        ),
        ({"steps": [{"action": "stall"}]}, "steps[0] (stall): duration: required"),
        (
            {"steps": [{"action": "drop", "at": 1, "after": 2}]},
            "steps[0] (drop): give 'at' or 'after', not both",
        ),
        ({"steps": [{"action": "drop", "at": float("nan")}]}, "steps[0] (drop): at: must be"),
        ({"steps": [{"action": "drop", "at": True}]}, "at: must be a number, got bool"),
        (
            {"steps": [{"action": "refuse", "status": 500}]},
            "steps[0] (refuse): status: must be 503 or 204",
        ),
        ({"steps": [{"action": "retry", "ms": 1.5}]}, "steps[0] (retry): ms: must be an integer"),
        (
            {"steps": [{"action": "burst", "rate": 1e6, "duration": 1}]},
            "steps[0] (burst): rate: must be > 0 and <= 1000",
        ),
        (
            {"steps": [{"action": "list", "symbol": "NEW", "params": {"sigma": -1}}]},
            "steps[0] (list): params.sigma",
        ),
        ({"steps": [{"action": "drop"}], "nmae": "x"}, "'nmae': unknown key"),
        ({"steps": "drop"}, "steps: must be a non-empty list"),
    ],
)
def test_a_bad_scenario_names_the_step_and_the_key(config: Any, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_config(config, source="s.toml")
    text = str(info.value)
    assert text.startswith("s.toml: "), text
    assert message in text, text


def test_a_bad_toml_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "crash.toml"
    bad.write_text('[[steps]]\naction = "jump"\nsymbol = "AAA"\npct = "x"\n')
    with pytest.raises(ScenarioError, match=r"crash.toml: steps\[0\] \(jump\): pct: must be a"):
        Scenario.from_toml(bad)
    bad.write_text("[[steps]\n")
    with pytest.raises(ScenarioError, match=r"crash\.toml: not valid TOML"):
        Scenario.from_toml(bad)
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        Scenario.from_toml(tmp_path / "missing.toml")


def test_at_and_after_resolve_to_one_ordered_timeline() -> None:
    s = Scenario.from_config(
        {
            "steps": [
                {"action": "drop", "at": 5},
                {"action": "retry", "ms": 1, "after": 1.5},
                {"action": "drop", "at": 2},
                {"action": "drop"},
            ]
        }
    )
    assert [(x.index, x.at) for x in s.steps] == [(2, 2.0), (3, 2.0), (0, 5.0), (1, 6.5)]
    assert s.duration == 6.5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_shipped_examples_are_valid(path: Path) -> None:
    scenario = Scenario.from_toml(path)
    assert scenario.steps
    # They run on the default market's symbols.
    used = {s.symbol for s in scenario.steps} - {None}
    assert used <= {"AAPL", "MSFT", "IBM", "GOOG", "NEWCO"}


def test_the_examples_cover_a_flash_crash_a_halt_and_a_reconnect_storm() -> None:
    assert {p.stem for p in EXAMPLES} >= {"flash_crash", "halt", "reconnect_storm"}
    actions = {s.action for p in EXAMPLES for s in Scenario.from_toml(p).steps}
    assert actions == set(ACTIONS)  # every action has a worked example


# --------------------------------------------------------- checks against the market


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"action": "halt", "symbol": "ZZZ"}], "steps[0] (halt): symbol: unknown symbol 'ZZZ'"),
        ([{"action": "halt", "symbol": "AAB"}], "(did you mean 'AAA'?)"),
        (
            [{"action": "delist", "symbol": "AAA"}, {"action": "jump", "symbol": "AAA", "pct": 1}],
            "steps[1] (jump): symbol: unknown symbol 'AAA'",
        ),
        ([{"action": "list", "symbol": "BBB"}], "steps[0] (list): symbol: 'BBB' is already listed"),
        ([{"action": "drop"}], "steps[0] (drop): transport faults need the server"),
    ],
)
def test_a_scenario_that_does_not_fit_the_market_is_refused(
    steps: list[dict[str, Any]], message: str
) -> None:
    src = ScenarioSource(_market())
    with pytest.raises(ScenarioError) as info:
        src.start(Scenario.from_config({"steps": steps}, source="body"))
    assert str(info.value).startswith("body: ")
    assert message in str(info.value)


def test_a_listed_symbol_may_be_used_by_later_steps() -> None:
    src = _source(
        [
            {"action": "list", "symbol": "NEW", "price": 20.0, "at": 0.2},
            {"action": "jump", "symbol": "NEW", "pct": 50, "after": 0.2},
        ]
    )
    batches = _run(src, 6)
    prices = [t["price"] for b in batches for t in _ticks(b, "NEW")]
    assert len(prices) == 4  # listed before the third tick
    assert prices[0] == pytest.approx(20.0, rel=0.05)
    assert prices[2] / prices[1] == pytest.approx(1.5, rel=0.05)
    assert "NEW" in src.symbols and "NEW" in src.describe()


# --------------------------------------------------------------- the market actions


def test_same_seed_and_scenario_give_the_same_payloads() -> None:
    steps: list[dict[str, Any]] = [
        {"action": "jump", "symbol": "AAA", "pct": -8, "at": 0.3},
        {"action": "volatility", "symbol": "BBB", "factor": 4, "duration": 0.5},
        {"action": "halt", "symbol": "BBB", "at": 1.0, "duration": 0.4},
        {"action": "list", "symbol": "NEW", "at": 1.2},
        {"action": "spread", "symbol": "AAA", "factor": 5, "at": 1.5},
        {"action": "burst", "rate": 50, "duration": 0.2, "at": 1.6},
        {"action": "delist", "symbol": "AAA", "at": 2.0},
    ]

    def payloads(seed: int) -> str:
        batches = _run(_source(steps, seed), 40)
        return json.dumps([[(e.event, e.symbol, e.data) for e in b] for b in batches])

    assert payloads(3) == payloads(3)
    assert payloads(3) != payloads(4)


def test_jump_moves_the_price_by_pct() -> None:
    src = _source([{"action": "jump", "symbol": "AAA", "pct": -8.0, "at": 0.5}])
    prices = [_ticks(b, "AAA")[0]["price"] for b in _run(src, 10)]
    moves = np.diff(np.log(prices))
    assert math.exp(moves[4]) == pytest.approx(0.92, abs=0.01)  # one tick's noise ~0.13 %
    assert np.abs(np.delete(moves, 4)).max() < 0.01


def test_volatility_multiplies_the_moves_for_its_duration() -> None:
    src = _source([{"action": "volatility", "symbol": "AAA", "factor": 5.0, "duration": 50.0}])
    batches = _run(src, 1000)
    prices = np.array([_ticks(b, "AAA")[0]["price"] for b in batches])
    r = np.diff(np.log(prices))
    ratio = r[:490].std() / r[510:].std()
    assert ratio == pytest.approx(5.0, rel=0.15)


def test_halt_streams_no_ticks_or_bars_and_says_so() -> None:
    src = _source([{"action": "halt", "symbol": "BBB", "at": 0.2, "duration": 1.0}])
    batches = _run(src, 16)
    sessions = [
        (i, e.data["state"], e.data["symbol"])
        for i, b in enumerate(batches)
        for e in b
        if e.event == "session"
    ]
    assert sessions == [(2, "halted", "BBB"), (12, "open", "BBB")]
    for i, b in enumerate(batches):
        halted = 2 <= i < 12
        assert bool([e for e in b if e.symbol == "BBB" and e.event != "session"]) != halted
        assert _ticks(b, "AAA")  # the others go on
    assert src.halted == frozenset()


def test_delist_removes_the_symbol_from_the_catalog_and_the_stream() -> None:
    src = _source([{"action": "delist", "symbol": "AAA", "at": 0.3}])
    batches = _run(src, 6)
    assert [bool(_ticks(b, "AAA")) for b in batches] == [True] * 3 + [False] * 3
    assert src.symbols == ["BBB"]
    assert "AAA" not in src.describe()
    closed = [e.data for e in batches[3] if e.event == "session"]
    assert [(d["state"], d["symbol"]) for d in closed] == [("closed", "AAA")]


def test_scenario_session_events_have_the_calendar_payload_stamped_with_their_tick() -> None:
    """A halt's session event is shaped and encoded like the market's own (SESSION_FIELDS,
    ts and sim_ts of the tick it precedes), and the batch keeps its pre-encoded JSON."""
    market = _market(start="2024-11-25T15:00:00Z")
    src = ScenarioSource(
        market, Scenario.from_config({"steps": [{"action": "halt", "symbol": "BBB", "at": 0.2}]})
    )
    batch = _run(src, 3)[2]
    assert batch[0].event == "session"
    session = batch[0].data
    assert tuple(session) == SESSION_FIELDS
    tick = _ticks(batch, "AAA")[0]
    assert (session["ts"], session["sim_ts"]) == (tick["ts"], tick["sim_ts"])
    assert session["sim_ts"] != session["ts"]  # simulated time, not the wall clock
    encoded = pre_encoded(batch)
    assert len(encoded) == len(batch)  # nothing left to the broker's generic encoder
    assert [json.loads(text) for _, text in encoded] == [e.data for e in batch]


def test_a_listed_symbol_follows_the_calendar_of_the_market() -> None:
    """A symbol listed into a market with sessions gets its sim_ts and its session events."""
    market = _market(calendar="XNYS", start="2024-11-25T20:59:00Z", speed=5e-5)
    src = ScenarioSource(
        market, Scenario.from_config({"steps": [{"action": "list", "symbol": "NEW"}]})
    )
    batches = _run(src, 400)
    closes = [
        (i, e.symbol, e.data["sim_ts"])
        for i, b in enumerate(batches)
        for e in b
        if e.event == "session" and e.data["state"] == "closed"
    ]
    assert {s for _, s, _ in closes} == {"AAA", "BBB", "NEW"}, closes
    assert len({(i, t) for i, _, t in closes}) == 1  # the same tick, the same close
    for b in batches:
        new, old = _ticks(b, "NEW"), _ticks(b, "AAA")
        assert new and new[0]["sim_ts"] == old[0]["sim_ts"]
        # The market's order: a session's opens, ticks, bars, a session's closes.
        kinds = [f"{e.event}:{e.data.get('state', '')}" for e in b]
        order = ["session:open", "tick:", "bar:", "session:closed"]
        assert kinds == sorted(kinds, key=order.index), kinds


def test_spread_widens_bid_ask_then_restores_it() -> None:
    src = _source([{"action": "spread", "symbol": "AAA", "factor": 10.0, "duration": 0.5}])

    def bps(t: dict[str, Any]) -> float:
        return float((t["ask"] - t["bid"]) / t["price"] * 1e4)

    widths = [bps(_ticks(b, "AAA")[0]) for b in _run(src, 10)]
    assert all(w == pytest.approx(100.0, abs=2.5) for w in widths[:5]), widths
    assert all(w == pytest.approx(10.0, abs=2.5) for w in widths[5:]), widths


def test_burst_changes_the_pace_for_its_duration() -> None:
    src = _source([{"action": "burst", "rate": 200.0, "duration": 0.5, "at": 0.1}])
    paces = []
    for _ in range(120):
        src.step()
        paces.append(src.interval())
    # One normal tick (0.1 s), then 0.5 s at 200 ticks/s = 100 ticks, then normal again.
    assert paces[0] == 0.1
    assert paces[1:101] == [0.005] * 100
    assert paces[101:] == [0.1] * 19


def test_a_cancelled_scenario_fires_no_more_steps() -> None:
    src = _source([{"action": "delist", "symbol": "AAA", "at": 1.0}])
    _run(src, 3)
    assert src.cancel_all() == 1
    _run(src, 20)
    assert src.symbols == ["AAA", "BBB"]
    status = src.status()
    assert status["running"] == 0 and status["scenarios"][0]["fired"] == 0


def test_regression_overflow_a_400_digit_integer_is_a_clear_error() -> None:
    """Defect: float() of a JSON integer of 400 digits raised OverflowError (a 500)."""
    body = json.loads('{"steps": [{"action": "jump", "symbol": "AAA", "pct": ' + "9" * 400 + "}]}")
    with pytest.raises(ScenarioError, match=r"steps\[0\] \(jump\): pct: must be > -100"):
        Scenario.from_config(body)


# ------------------------------------------------------------------ the broker side


def test_memory_broker_restart_ids_forces_a_reset_on_resume() -> None:
    from quoteflow.broker import ALL_EVENTS, MemoryBroker

    broker = MemoryBroker()
    batch = [MarketEvent("tick", "AAA", {"symbol": "AAA", "price": 1.0})] * 3
    broker.publish(batch)
    broker.restart_ids(1000)
    broker.publish(batch)
    assert broker.last_id == "1006"
    sub = broker.subscribe(None, ALL_EVENTS, "3")
    text = sub.take().data.decode()
    assert text.startswith("id: 1006\nevent: reset\n") and '"reason":"evicted"' in text


def test_redis_broker_refuses_restart_ids_with_a_clear_error() -> None:
    from quoteflow.broker import broker_from_url

    broker = broker_from_url("redis://127.0.0.1:1/0", produce=True, consume=True)
    try:
        with pytest.raises(NotImplementedError, match="needs the memory broker"):
            broker.restart_ids(10)
    finally:
        broker.close()
