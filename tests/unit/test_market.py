"""The simulated market: correlation, reproducibility, live updates, bars, config, pacing."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quoteflow.errors import ConfigError
from quoteflow.market import (
    DEFAULT_SPEED,
    GUARD_LOG_INTERVAL,
    Market,
    _default_calibration,
    correlation_factor,
)
from quoteflow.models import GARCH, GBM, MeanReversion
from quoteflow.sources import MarketEvent, Source

ROOT = Path(__file__).resolve().parents[2]


def fake_clock(start: float = 1_800_000_000.0, step: float = 0.25) -> Any:
    """A deterministic clock: start, start + step, ..."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


def payloads(events: list[MarketEvent], drop_ts: bool = False) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for e in events:
        data = dict(e.data)
        if drop_ts:
            for k in ("ts", "ts_ns", "start", "end", "sim_ts"):
                data.pop(k, None)
        out.append((e.event, data))
    return out


def quoted_log_returns(market: Market, n_ticks: int) -> np.ndarray:
    """Log returns of the quoted prices, shape (n_ticks, n_symbols)."""
    prices = np.array([market.step_arrays(now=0.0).price for _ in range(n_ticks + 1)])
    return np.diff(np.log(prices), axis=0)


# ------------------------------------------------------------------------------ correlation

NAMES3 = ["A", "B", "C"]


@pytest.mark.parametrize(
    ("matrix", "rule"),
    [
        ([[1, 0.5, 0], [0.5, 1, 0]], "must be a square matrix"),
        ([1, 0.5, 0.5], "must be a square matrix"),
        ([[1, 0.5], [0.5, 1]], "there are 3 symbols"),
        ([[1, 0.5, 0], [0.5, 1, 0], [0, 0, float("nan")]], "must be finite"),
        ([[1, 0.5, 0], [0.4, 1, 0], [0, 0, 1]], "must be symmetric: [A, B] = 0.5 but [B, A] = 0.4"),
        (
            [[1, 0.5, 0], [0.5, 0.9, 0], [0, 0, 1]],
            "diagonal must be 1 (unit diagonal): [B, B] = 0.9",
        ),
        ([[1, 1.2, 0], [1.2, 1, 0], [0, 0, 1]], "entries must be in [-1, 1]: [A, B] = 1.2"),
        ([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]], "must be positive semi-definite"),
        ([["a", "b", "c"]] * 3, "square matrix of numbers"),
    ],
)
def test_correlation_rules_name_the_failed_rule(matrix: Any, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        correlation_factor(matrix, NAMES3)
    assert rule in str(info.value)
    assert isinstance(info.value, ValueError)


def test_correlation_factor_reproduces_matrix_including_singular() -> None:
    dense = np.array([[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1]])
    L = correlation_factor(dense, NAMES3)
    np.testing.assert_allclose(L @ L.T, dense, atol=1e-12)
    assert np.allclose(L, np.tril(L))  # Cholesky for positive definite
    # PSD but singular: A and B perfectly correlated -> no Cholesky, eigen factor instead.
    singular = np.array([[1, 1, 0.3], [1, 1, 0.3], [0.3, 0.3, 1]])
    L = correlation_factor(singular, NAMES3)
    np.testing.assert_allclose(L @ L.T, singular, atol=1e-12)


def test_perfectly_correlated_symbols_move_together() -> None:
    m = Market({"A": GBM(0.0, 0.3), "B": GBM(0.0, 0.3)}, correlation=[[1, 1], [1, 1]], seed=5)
    r = quoted_log_returns(m, 200)
    assert np.corrcoef(r.T)[0, 1] > 0.999


@pytest.mark.parametrize("form", ["array", "subset", "pairs"])
def test_empirical_correlation_matches_target(form: str) -> None:
    # Sample correlation of n i.i.d. normal pairs has standard error ~ (1 - rho^2)/sqrt(n)
    # (Fisher 1915). With n = 10,000 that is <= 0.01, so 0.04 is 4 se: a correct market
    # fails this with probability < 1e-4, a wrong factor (e.g. L.T) fails it surely.
    target = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.0], [-0.3, 0.0, 1.0]])
    models = {s: GBM(0.0, 0.5) for s in NAMES3}
    spec: Any = {
        "array": target,
        "subset": {"symbols": ["A", "B", "C"], "matrix": target.tolist()},
        "pairs": {("A", "B"): 0.6, "A/C": -0.3},
    }[form]
    m = Market(models, correlation=spec, seed=11)
    np.testing.assert_allclose(m.correlation_matrix, target)
    r = quoted_log_returns(m, 10_000)
    np.testing.assert_allclose(np.corrcoef(r.T), target, atol=0.04)


def test_correlation_on_a_subset_leaves_others_independent() -> None:
    models = {s: GBM(0.0, 0.5) for s in ["A", "B", "C", "D"]}
    m = Market(models, correlation={"symbols": ["B", "D"], "matrix": [[1, 0.8], [0.8, 1]]}, seed=2)
    r = quoted_log_returns(m, 10_000)
    c = np.corrcoef(r.T)
    assert abs(c[1, 3] - 0.8) < 0.015  # se (1 - 0.64)/100 = 0.0036
    assert abs(c[0, 1]) < 0.04 and abs(c[0, 2]) < 0.04  # se 1/100 = 0.01


def test_correlation_with_unknown_symbol_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown symbol 'ZZZ'"):
        Market({"A": GBM(0, 0.2)}, correlation={"A/ZZZ": 0.5})


# ------------------------------------------------------------------- stepping and quotes


def test_gbm_vectorised_step_equals_model_stepper() -> None:
    models = {"A": GBM(0.1, 0.3), "B": GBM(-0.05, 0.6)}
    m = Market(models, s0={"A": 50.0, "B": 120.0}, seed=3, tick_interval=0.5, speed=0.01)
    rng = copy.deepcopy(m._rng)  # the same shock stream the market will draw
    steppers = [models["A"].stepper(50.0, 0.005), models["B"].stepper(120.0, 0.005)]
    for _ in range(50):
        z = rng.standard_normal(2)
        expected = [float(s.step(z[i : i + 1])[0]) for i, s in enumerate(steppers)]
        m.step_arrays(now=0.0)
        np.testing.assert_allclose(m._prices, expected, rtol=1e-12)


def test_quote_fields_and_spread() -> None:
    m = Market({"A": GBM(0.0, 0.2), "P": GBM(0.0, 0.2)}, s0={"P": 0.012345}, seed=1, spread_bps=20)
    events = m.step(now=1_795_000_000.1234)
    assert [e.event for e in events] == ["tick", "tick"]
    a, p = events[0].data, events[1].data
    assert list(a) == ["symbol", "price", "bid", "ask", "size", "ts", "ts_ns", "sim_ts"]
    assert a["sim_ts"] == a["ts"]  # no calendar, no start: simulated time is the wall clock
    assert a["ts"] == "2026-11-18T11:06:40.123Z"  # 1_795_000_000 s after the epoch
    assert abs(a["ts_ns"] - 1_795_000_000_123_400_000) < 1_000  # float seconds -> ns
    assert a["price"] == round(a["price"], 2)
    assert a["bid"] < a["price"] < a["ask"]
    assert a["ask"] - a["bid"] == pytest.approx(a["price"] * 20e-4, abs=0.011)
    assert a["size"] % 100 == 0 and 100 <= a["size"] <= 1000
    # small prices keep 4 significant digits instead of collapsing to 0.01
    assert 0.01 < p["price"] < 0.02 and len(repr(p["price"]).split(".")[1]) <= 6
    assert p["bid"] < p["price"] < p["ask"]


def test_same_seed_same_payloads_and_other_seed_differs() -> None:
    def run(seed: int, clock: Any = None) -> list[Any]:
        kw = {"clock": clock} if clock else {}
        m = Market.universe(20, seed=seed, bar_interval=0.5, **kw)
        return [payloads(m.step(), drop_ts=clock is None) for _ in range(12)]

    assert run(7) == run(7)
    assert run(7, fake_clock()) == run(7, fake_clock())  # timestamps included
    assert run(7) != run(8)


def test_default_seed_is_recorded_for_reproduction() -> None:
    m1 = Market({"A": GBM(0.0, 0.2)})
    m2 = Market({"A": GBM(0.0, 0.2)}, seed=m1.seed)
    assert payloads(m1.step(now=0)) == payloads(m2.step(now=0))


def test_universe_shape_and_timing() -> None:
    m = Market.universe(10_000, seed=1, tick_interval=0.1)
    assert m.symbols[0] == "SYM0000" and m.symbols[-1] == "SYM9999"
    events = m.step()
    assert len(events) == 10_000 and all(e.event == "tick" for e in events)

    def best_ms(f: Any) -> float:
        times = []
        for _ in range(10):
            t0 = time.process_time()
            f()
            times.append(time.process_time() - t0)
        return min(times) * 1e3

    # Informational (not asserted: CI machines vary); CPU time, best of 10.
    arrays_ms, step_ms = best_ms(m.step_arrays), best_ms(m.step)
    print(f"\nuniverse(10000): step_arrays {arrays_ms:.2f} ms, step (with events) {step_ms:.2f} ms")
    params = {e["params"]["sigma"] for e in m.describe().values()}
    assert len(params) > 9000  # varied, not one sigma for all


# ------------------------------------------------------------------------------------ bars


def test_bars_aggregate_ticks_exactly() -> None:
    m = Market(
        {"A": GBM(0.0, 0.8), "B": MeanReversion(3.0, 20.0, 0.5)},
        seed=4,
        tick_interval=0.25,
        bar_interval=1.0,
        clock=fake_clock(),
    )
    ticks: list[dict[str, Any]] = []
    bars_seen = 0
    for k in range(12):
        events = m.step()
        kinds = [e.event for e in events]
        ticks.extend(e.data for e in events if e.event == "tick")
        bars = [e.data for e in events if e.event == "bar"]
        if (k + 1) % 4:
            assert kinds == ["tick", "tick"]
            continue
        assert kinds == ["tick", "tick", "bar", "bar"]  # closed by this tick, after its quotes
        bars_seen += 1
        for bar in bars:
            mine = [t for t in ticks if t["symbol"] == bar["symbol"]][-4:]
            assert bar["open"] == mine[0]["price"]
            assert bar["close"] == mine[-1]["price"]
            assert bar["high"] == max(t["price"] for t in mine)
            assert bar["low"] == min(t["price"] for t in mine)
            assert bar["volume"] == sum(t["size"] for t in mine)
            assert bar["start"] == mine[0]["ts"] and bar["end"] == mine[-1]["ts"]
            assert list(bar) == [
                *("symbol", "open", "high", "low", "close", "volume", "start", "end", "sim_ts")
            ]
            assert bar["sim_ts"] == mine[-1]["sim_ts"]
    assert bars_seen == 3


def test_bars_can_be_disabled_and_must_span_a_tick() -> None:
    m = Market({"A": GBM(0, 0.2)}, bar_interval=None, tick_interval=0.1)
    assert all(e.event == "tick" for _ in range(100) for e in m.step())
    with pytest.raises(ConfigError, match="bar_interval"):
        Market({"A": GBM(0, 0.2)}, bar_interval=0.05, tick_interval=0.1)


# ------------------------------------------------------------------------- live changes


def test_update_doubling_sigma_doubles_realised_vol() -> None:
    # Ratio of two sample std devs from n = 8000 normal returns each: relative se
    # sqrt(1/(2n) + 1/(2n)) = 1.1 %, so +-8 % is ~7 se. Cent rounding of a ~100 price adds
    # noise of ~0.003 against a per-tick std of 0.5*sqrt(dt)*100 ~ 1.6: negligible.
    m = Market({"X": GBM(0.0, 0.5), "Y": GBM(0.0, 0.5)}, seed=9)
    before = quoted_log_returns(m, 8000)
    assert m.update("X", {"sigma": 1.0}) == {"mu": 0.0, "sigma": 1.0}
    after = quoted_log_returns(m, 8000)
    ratio_x = after[:, 0].std() / before[:, 0].std()
    ratio_y = after[:, 1].std() / before[:, 1].std()
    assert ratio_x == pytest.approx(2.0, rel=0.08)
    assert ratio_y == pytest.approx(1.0, rel=0.08)  # the other symbol is untouched
    assert m.describe()["X"]["params"]["sigma"] == 1.0


@pytest.mark.parametrize(
    ("symbol", "params", "message"),
    [
        ("NOPE", {"sigma": 0.1}, "unknown symbol 'NOPE'; known symbols: G, M"),
        ("GG", {"sigma": 0.1}, "did you mean 'G'?"),
        (
            "G",
            {"sgma": 0.1},
            "G.params.sgma: unknown parameter for model 'gbm' (did you mean 'sigma'?)",
        ),
        ("G", {"sigma": -1}, "G.params.sigma: gbm: parameter sigma must be > 0"),
        ("G", {"sigma": "high"}, "G.params.sigma"),
        ("M", {"kappa": 0}, "M.params.kappa"),
        ("G", {"model": "heston"}, "unknown model 'heston'"),
        ("G", {"model": "meanrev", "kappa": 1.0}, "missing parameter(s) theta, sigma"),
    ],
)
def test_update_errors_name_the_problem(symbol: str, params: dict[str, Any], message: str) -> None:
    m = Market({"G": GBM(0.0, 0.2), "M": MeanReversion(1.0, 100.0, 0.2)})
    before = m.describe()
    with pytest.raises(ConfigError) as info:
        m.update(symbol, params)
    assert message in str(info.value)
    assert m.describe() == before  # nothing changed


def test_update_can_switch_model_class_keeping_price() -> None:
    m = Market({"G": GBM(0.0, 0.2)}, seed=1)
    m.step(now=0)
    price = m.describe()["G"]["price"]
    new = m.update("G", {"model": "meanrev", "kappa": 50.0, "theta": 10.0, "sigma": 0.01})
    assert new == {"kappa": 50.0, "theta": 10.0, "sigma": 0.01}
    assert m.describe()["G"]["model"] == "meanrev"
    first = m.step(now=0)[0].data["price"]
    assert abs(math.log(first / price)) < 0.2  # continues from the current price
    for _ in range(2000):
        last = m.step(now=0)[0].data["price"]
    assert last == pytest.approx(10.0, rel=0.05)  # then reverts to the new theta
    # The notebook's "push fitted model" over HTTP sends {"model": name, **params()}.
    garch = GARCH.fit(np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, 300)))).model
    assert m.update("G", {"model": "garch", **garch.params()}) == garch.params()
    assert m.model("G") == garch


def test_set_model_replaces_and_keeps_price_and_garch_state() -> None:
    garch = GARCH(mu=0.0, omega=0.05, alpha=0.1, beta=0.85)
    m = Market({"A": garch, "B": GBM(0.0, 0.2)}, s0={"A": 50.0}, seed=3)
    for _ in range(5):
        m.step(now=0)
    stepper = m._group_of[0].stepper
    m.update("A", {"alpha": 0.05})  # same class, alone in its stepper: state kept
    assert m._group_of[0].stepper is stepper
    price = m.describe()["B"]["price"]
    m.set_model("B", MeanReversion(1.0, 80.0, 0.3))
    assert m.describe()["B"] == {
        "model": "meanrev",
        "params": {"kappa": 1.0, "theta": 80.0, "sigma": 0.3},
        "price": price,
    }
    m.step(now=0)
    with pytest.raises(ConfigError, match="expected a model"):
        m.set_model("B", "gbm")  # type: ignore[arg-type]


def test_update_of_a_shared_stepper_splits_only_that_symbol() -> None:
    model = MeanReversion(2.0, 100.0, 0.3)
    m = Market({"A": model, "B": model, "C": model}, seed=1)
    assert len(m._groups) == 1
    m.update("B", {"sigma": 0.6})
    assert len(m._groups) == 2
    d = m.describe()
    assert d["A"]["params"]["sigma"] == 0.3 and d["C"]["params"]["sigma"] == 0.3
    assert d["B"]["params"]["sigma"] == 0.6
    r = quoted_log_returns(m, 4000)
    s = r.std(axis=0)
    assert s[1] / s[0] == pytest.approx(2.0, rel=0.1)  # rel se ~ 1.6 %
    assert s[2] / s[0] == pytest.approx(1.0, rel=0.1)


def test_concurrent_updates_are_safe() -> None:
    m = Market.universe(200, seed=1, bar_interval=None)
    errors: list[BaseException] = []
    sigmas = [0.1 + 0.001 * i for i in range(300)]

    def writer() -> None:
        try:
            for s in sigmas:
                m.update("SYM0007", {"sigma": s})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    steps = 0
    while t.is_alive() or steps < 50:
        events = m.step(now=0)
        assert len(events) == 200
        assert all(math.isfinite(e.data["price"]) and e.data["price"] > 0 for e in events)
        steps += 1
    t.join()
    assert not errors
    assert m.describe()["SYM0007"]["params"]["sigma"] == sigmas[-1]


# ------------------------------------------------------------------------------- default


def test_default_market_builds_and_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from quoteflow import data

    m = Market.default(seed=1)
    assert isinstance(m, Source)
    assert m.symbols == ["AAPL", "GOOG", "IBM", "MSFT"]
    d = m.describe()
    assert {s: (v["model"], v["params"].get("dist")) for s, v in d.items()} == {
        "AAPL": ("garch", "t"),
        "GOOG": ("gbm", None),
        "IBM": ("meanrev", None),
        "MSFT": ("garch", "normal"),
    }
    for s in m.symbols:
        assert d[s]["price"] == pytest.approx(data.load(s)["adj_close"].iloc[-1], abs=0.006)
    r = np.diff(np.log(data.load_all()[m.symbols].to_numpy()), axis=0)
    np.testing.assert_allclose(m.correlation_matrix, np.corrcoef(r.T), atol=1e-12)
    events = m.step()
    assert [e.symbol for e in events] == m.symbols
    # The calibrated models stream at their own scale (GARCH percent units, dt handling):
    # annualised vol of 10,000 ticks (~10 simulated years) vs each model's implied vol.
    # GBM / mean reversion: se of a sample std is 1/sqrt(2n) = 0.7 %, so 5 % is 7 se.
    # GARCH-t variance clusters (persistence ~0.99) and its tails are heavy, so one run's
    # realised vol wanders (-15 %..+20 % over seeds 1-8); 30 % still catches a
    # percent-vs-fraction or dt mix-up, which is off by a factor of 10 or more.
    m2 = Market.default(seed=3, bar_interval=None)
    r_sim = quoted_log_returns(m2, 10_000)
    vol_sim = r_sim.std(axis=0) / math.sqrt(m2.dt)
    models = [m2.model(s) for s in m2.symbols]
    implied = [g.annual_volatility if isinstance(g, GARCH) else g.sigma for g in models]  # type: ignore[attr-defined]
    for sym, model, got, want in zip(m2.symbols, models, vol_sim, implied, strict=True):
        tol = 0.3 if isinstance(model, GARCH) else 0.05
        assert got == pytest.approx(want, rel=tol), sym
    # Correlated shocks -> correlated returns. The standard error of a sample correlation
    # of n iid pairs is (1 - rho^2) / sqrt(n): 0.0067-0.0083 here (n = 10,000). For the
    # GBM / mean-reversion pair (GOOG, IBM) returns are iid given the shocks: 5 se, 0.04.
    # A GARCH leg scales its shock by a clustered sigma_t, which (a) lowers the return
    # correlation below the shock correlation by the factor E[sigma] / sqrt(E[sigma^2])
    # and (b) widens the spread: over seeds 1-40, the GARCH pairs sat 0.018-0.030 below
    # rho with sd 0.009-0.014 (up to 1.8x the iid se). Their band is 5 sd either side of
    # that: -0.10 .. +0.07. Uncorrelated shocks would miss by 0.41-0.58 (rho itself).
    got_corr = np.corrcoef(r_sim.T)
    garch_leg = [isinstance(model, GARCH) for model in models]
    for i, j in itertools.combinations(range(len(models)), 2):
        rho = m.correlation_matrix[i, j]
        gap = got_corr[i, j] - rho
        pair = (m2.symbols[i], m2.symbols[j], round(float(gap), 4))
        if garch_leg[i] or garch_leg[j]:
            assert -0.10 < gap < 0.07, pair
        else:
            assert abs(gap) < 5 * (1 - rho**2) / math.sqrt(len(r_sim)), pair
    # A cached calibration: the second default market does not refit (no fit is called,
    # the cache answers).
    fits: list[str] = []

    def counting(cls: type[Any], name: str) -> Any:
        original = cls.fit

        def fit(*args: Any, **kwargs: Any) -> Any:
            fits.append(name)
            return original(*args, **kwargs)

        return fit

    for cls in (GARCH, GBM, MeanReversion):
        monkeypatch.setattr(cls, "fit", counting(cls, cls.__name__))
    hits = _default_calibration.cache_info().hits
    Market.default(seed=2)
    assert fits == []
    assert _default_calibration.cache_info().hits == hits + 1


# ---------------------------------------------------------------------------------- TOML

GOOD = """
seed = 42
tick_interval = 0.25
speed = 0.004
bar_interval = 5.0
[symbols.AAPL]
model = "garch"
s0 = 120.0
params = { mu = 0.05, omega = 0.02, alpha = 0.08, beta = 0.9, dist = "t", nu = 6 }
[symbols.MSFT]
model = "gbm"
params = { mu = 0.05, sigma = 0.25 }
[correlation]
symbols = ["AAPL", "MSFT"]
matrix = [[1, 0.5], [0.5, 1]]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "market.toml"
    p.write_text(text)
    return p


def test_toml_good_config(tmp_path: Path) -> None:
    m = Market.from_toml(write(tmp_path, GOOD))
    assert m.symbols == ["AAPL", "MSFT"]
    assert (m.tick_interval, m.speed, m.bar_interval, m.seed) == (0.25, 0.004, 5.0, 42)
    assert m.dt == pytest.approx(0.001)
    assert m.describe()["AAPL"]["price"] == 120.0
    assert m.describe()["MSFT"]["price"] == 100.0
    assert m.correlation_matrix[0, 1] == 0.5
    # overrides (as the CLI passes them), None meaning "not given"
    m2 = Market.from_toml(write(tmp_path, GOOD), seed=7, tick_interval=None)
    assert (m2.seed, m2.tick_interval) == (7, 0.25)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("speed = 0.004", "sped = 0.004"),
            "market.toml: sped: unknown key (did you mean 'speed'?)",
        ),
        (
            ("tick_interval = 0.25", 'tick_interval = "fast"'),
            "market.toml: tick_interval: must be a number, got str 'fast'",
        ),
        (
            ("tick_interval = 0.25", "tick_interval = 0"),
            "market.toml: tick_interval: must be > 0, got 0",
        ),
        (("seed = 42", "seed = 1.5"), "market.toml: seed: must be an integer >= 0"),
        (
            ("alpha = 0.08", "alpha = -1"),
            "market.toml: symbols.AAPL.params.alpha: garch: parameter alpha must be >= 0",
        ),
        (
            ("alpha = 0.08", "alpa = 0.08"),
            "market.toml: symbols.AAPL.params.alpa: unknown parameter for model 'garch' (did you mean 'alpha'?)",
        ),
        (
            ("alpha = 0.08", "alpha = true"),
            "market.toml: symbols.AAPL.params.alpha: must be a number",
        ),
        (
            ('model = "garch"', 'model = "garh"'),
            "market.toml: symbols.AAPL.model: unknown model 'garh' (did you mean 'garch'?)",
        ),
        (
            ('model = "garch"\n', ""),
            "market.toml: symbols.AAPL: missing key 'model' (one of gbm, meanrev, garch, merton)",
        ),
        (("s0 = 120.0", "s0 = -5"), "market.toml: symbols.AAPL.s0: must be > 0, got -5"),
        (
            ("s0 = 120.0", "parms = 1"),
            "market.toml: symbols.AAPL.parms: unknown key (did you mean 'params'?)",
        ),
        (
            ("params = { mu = 0.05, sigma = 0.25 }", ""),
            "market.toml: symbols.MSFT: give the model's parameters",
        ),
        (
            ("params = { mu = 0.05, sigma = 0.25 }", "params = { mu = 0.05 }"),
            "market.toml: symbols.MSFT.params: missing parameter(s) sigma",
        ),
        (
            ("params = { mu = 0.05, sigma = 0.25 }", 'fit = "NOPE"'),
            "market.toml: symbols.MSFT.fit: 'NOPE' is neither a shipped ticker",
        ),
        (
            (
                "params = { mu = 0.05, sigma = 0.25 }",
                'column = "close"\nparams = { mu = 0.05, sigma = 0.25 }',
            ),
            "market.toml: symbols.MSFT.column: only meaningful with fit",
        ),
        (
            ("[[1, 0.5], [0.5, 1]]", "[[1, 0.5], [0.4, 1]]"),
            "market.toml: correlation: must be symmetric: [AAPL, MSFT] = 0.5 but [MSFT, AAPL] = 0.4",
        ),
        (
            ("[[1, 0.5], [0.5, 1]]", "[[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]]"),
            "market.toml: correlation: matrix is 3x3 but there are 2 symbols",
        ),
        (
            ('symbols = ["AAPL", "MSFT"]', 'symbols = ["AAPL", "IBM"]'),
            "market.toml: correlation: symbols: unknown symbol 'IBM'",
        ),
        (
            ("matrix =", "matrx ="),
            "market.toml: correlation.matrx: unknown key (did you mean 'matrix'?)",
        ),
        (("speed = 0.004", "speed = 0.004 0.005"), "market.toml: not valid TOML"),
        (
            ("[correlation]", "[corelation]"),
            "market.toml: corelation: unknown key (did you mean 'correlation'?)",
        ),
    ],
)
def test_toml_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        Market.from_toml(write(tmp_path, text))
    assert message in str(info.value)


def test_toml_missing_symbols_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="symbols: missing"):
        Market.from_toml(write(tmp_path, "seed = 1\n"))
    with pytest.raises(ConfigError, match="symbols: must be a table, got int 3"):
        Market.from_toml(write(tmp_path, "symbols = 3\n"))
    with pytest.raises(ConfigError, match="cannot read market config"):
        Market.from_toml(tmp_path / "nope.toml")


def test_toml_fit_on_shipped_ticker_and_csv(tmp_path: Path) -> None:
    from quoteflow import data

    aapl = data.load("AAPL")
    aapl[["adj_close"]].iloc[-300:].reset_index().to_csv(tmp_path / "mine.csv", index=False)
    text = """
seed = 1
[symbols.IBM]
model = "meanrev"
fit = "IBM"
[symbols.MINE]
model = "gbm"
fit = "mine.csv"
params = { mu = 0.0 }
[symbols.T]
model = "garch"
fit = "MSFT"
fit_options = { dist = "t" }
"""
    m = Market.from_toml(write(tmp_path, text))
    d = m.describe()
    assert d["IBM"]["model"] == "meanrev"
    assert d["IBM"]["price"] == pytest.approx(data.load("IBM")["adj_close"].iloc[-1], abs=0.006)
    assert d["MINE"]["params"]["mu"] == 0.0  # fitted, then overridden
    assert d["MINE"]["params"]["sigma"] == pytest.approx(
        GBM.fit(aapl["adj_close"].iloc[-300:]).params["sigma"]
    )
    assert d["MINE"]["price"] == pytest.approx(aapl["adj_close"].iloc[-1], abs=0.006)
    assert d["T"]["params"]["dist"] == "t"


def test_shipped_example_config_loads_and_steps() -> None:
    m = Market.from_toml(ROOT / "examples" / "market.toml")
    events = m.step()
    assert {e.symbol for e in events} == set(m.symbols)
    assert len(m.symbols) >= 4


def test_constructor_validation() -> None:
    with pytest.raises(ConfigError, match="non-empty mapping"):
        Market({})
    with pytest.raises(ConfigError, match=r"symbols\.A: expected a model"):
        Market({"A": 3})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="s0 for unknown symbol"):
        Market({"A": GBM(0, 0.2)}, s0={"B": 1.0})
    with pytest.raises(ConfigError, match=r"s0.A: must be > 0"):
        Market({"A": GBM(0, 0.2)}, s0={"A": 0.0})
    with pytest.raises(ConfigError, match="speed: must be > 0"):
        Market({"A": GBM(0, 0.2)}, speed=0)
    with pytest.raises(ConfigError, match="bad symbol name"):
        Market({"A,B": GBM(0, 0.2)})


def test_mean_reversion_starts_at_theta_by_default() -> None:
    m = Market({"M": MeanReversion(1.0, 42.0, 0.2)})
    assert m.describe()["M"]["price"] == 42.0
    assert pytest.approx(1 / 252) == DEFAULT_SPEED


# ------------------------------------------------------------------------------ pacing


def test_batches_follow_a_deadline_schedule() -> None:
    m = Market({"A": GBM(0, 0.2)}, tick_interval=0.02, seed=1)

    async def collect(n: int) -> tuple[list[list[MarketEvent]], float]:
        out: list[list[MarketEvent]] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        gen = m.batches()
        async for batch in gen:
            out.append(batch)
            if len(out) == n:
                break
        await gen.aclose()
        return out, loop.time() - t0

    batches, elapsed = asyncio.run(collect(10))
    assert len(batches) == 10 and all(len(b) == 1 for b in batches)
    # tick k is due at k * 0.02 s: the 10th at 0.18 s, never earlier. (How much later is
    # the loop's business; "no drift" is checked on a virtual clock below.)
    assert elapsed >= 0.18 - 1e-3
    assert m.lag_seconds >= 0.0 and m.ticks == 10


class VirtualClock:
    """Stands in for ``asyncio`` inside quoteflow.market: the loop clock and ``sleep``.

    Every sleep oversleeps by ``oversleep`` seconds (a loaded loop wakes late), and
    :meth:`block` moves time on as a blocking call would, so the schedule is checked
    exactly, with no wall clock involved.
    """

    def __init__(self, oversleep: float = 0.0) -> None:
        self.now = 0.0
        self.oversleep = oversleep
        self.wakeups: list[float] = []

    def get_running_loop(self) -> VirtualClock:
        return self

    def time(self) -> float:
        return self.now

    def block(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, delay: float) -> None:
        self.now += max(delay, 0.0) + self.oversleep
        self.wakeups.append(self.now)


def test_batches_late_wakeups_do_not_accumulate_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Market({"A": GBM(0, 0.2)}, tick_interval=0.02, seed=1)
    clock = VirtualClock(oversleep=0.005)  # every wake-up 5 ms late
    monkeypatch.setattr("quoteflow.sources.asyncio", clock)

    async def main() -> None:
        gen = m.batches()
        async for _ in gen:
            if m.ticks == 10:
                break
        await gen.aclose()

    asyncio.run(main())
    # Deadlines stay at k * 0.02: each tick is 5 ms late, not 5 ms later than the last
    # (a sleep(interval) loop would wake at k * 0.025).
    assert clock.wakeups == pytest.approx([k * 0.02 + 0.005 for k in range(10)], abs=1e-12)
    assert m.ticks == 10 and m.ticks_skipped == 0


def test_batches_skip_missed_deadlines_on_a_virtual_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Binary-exact times (1/8 s ticks), so the schedule can be compared exactly.
    m = Market({"A": GBM(0, 0.2)}, tick_interval=0.125, seed=1)
    clock = VirtualClock()
    monkeypatch.setattr("quoteflow.sources.asyncio", clock)
    lags: list[float] = []

    async def main() -> None:
        gen = m.batches()
        async for _ in gen:
            lags.append(m.lag_seconds)
            if len(lags) == 1:
                clock.block(1.0625)  # the consumer blocks: deadlines 0.125..0.875 pass
            if len(lags) == 4:
                break
        await gen.aclose()

    asyncio.run(main())
    # The seven missed deadlines are skipped, not emitted in a burst: one tick late (for
    # the deadline 1.0, lag 0.0625), then back on the schedule at 1.125 and 1.25.
    assert m.ticks_skipped == 7
    assert clock.wakeups == [0.0, 1.0625, 1.125, 1.25]
    assert lags == [0.0, 0.0625, 0.0, 0.0] and m.ticks == 4


def test_batches_skip_missed_deadlines_instead_of_bursting() -> None:
    m = Market({"A": GBM(0, 0.2)}, tick_interval=0.01, seed=1)

    async def run() -> int:
        gen = m.batches()
        got = 0
        async for _ in gen:
            got += 1
            if got == 1:
                time.sleep(0.1)  # block the loop: ~10 deadlines pass
            if got == 3:
                break
        await gen.aclose()
        return got

    asyncio.run(run())
    # ~10 deadlines passed during the block; a count, not a time (the exact schedule is
    # checked on a virtual clock above).
    assert m.ticks_skipped >= 5 and m.ticks == 3


# ------------------------------------------- issue 10, defects 3 and 4: limits and the guard


def _three(**options: Any) -> Market:
    return Market(
        {
            "G": GBM(0.05, 0.3),
            "M": MeanReversion(2.0, 100.0, 0.2),
            "H": GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9),
        },
        seed=4,
        **options,
    )


@pytest.mark.parametrize(
    ("symbol", "params", "message"),
    [
        (
            "G",
            {"sigma": 1e155},
            "G.params.sigma: gbm: parameter sigma = 1e+155 cannot be simulated at a step of "
            "dt = 0.000992063 years: sigma * sqrt(dt) = 3.15e+153 exceeds 1; "
            "allowed at this dt: 0 < sigma <= 31.749",
        ),
        ("G", {"mu": 1e6}, "G.params.mu: gbm: parameter mu = 1e+06 cannot be simulated"),
        ("G", {"mu": 10**400}, "G.params.mu: gbm: parameter mu must be finite"),
        ("M", {"sigma": 1e6}, "M.params.sigma: meanrev: parameter sigma = 1e+06 cannot be"),
        ("M", {"theta": 1e300}, "M.params.theta: meanrev: parameter theta = 1e+300 is out of"),
        ("H", {"omega": 1e300}, "H.params.omega: garch: parameter omega = 1e+300 cannot be"),
        ("H", {"scale": 1e-300}, "H.params.scale: garch: parameter scale = 1e-300 is out of"),
        ("H", {"mu": 0.0, "scale": 0.01}, "H.params.scale: garch: parameter scale = 0.01 cannot"),
        ("G", {"model": "garch", "omega": 1e300}, "G.params.omega: garch: parameter omega"),
    ],
)
def test_defect4_extreme_update_is_refused_whole(
    symbol: str, params: dict[str, Any], message: str
) -> None:
    """Issue 10 defects 3/4: an update the model cannot simulate at the market's dt is a
    ConfigError naming the parameter and its range, and it changes nothing at all."""
    m = _three(tick_interval=0.25)
    m.step(now=0)
    before = m.describe()
    arrays = (m._drift.copy(), m._vol.copy(), m._is_gbm.copy())
    groups = list(m._groups)
    with pytest.raises(ConfigError) as info:
        m.update(symbol, params)
    assert message in str(info.value)
    assert m.describe() == before
    after = (m._drift, m._vol, m._is_gbm)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, after, strict=True))
    assert m._groups == groups
    prices = np.array([m.step_arrays(now=0).price for _ in range(20)])
    assert np.all(np.isfinite(prices)) and np.all(prices > 0)
    assert np.all(np.diff(prices, axis=0) != 0, axis=0).any()  # moving, not frozen


def test_defect4_toml_door_gives_the_same_message(tmp_path: Path) -> None:
    text = GOOD.replace("sigma = 0.25", "sigma = 1e6", 1)
    with pytest.raises(ConfigError) as info:
        Market.from_toml(write(tmp_path, text))
    assert (
        "market.toml: symbols.MSFT.params.sigma: gbm: parameter sigma = 1e+06 cannot be "
        "simulated at a step of dt = 0.001 years" in str(info.value)
    ), str(info.value)
    assert "allowed at this dt: 0 < sigma <= 31.6228" in str(info.value)
    # The step is the market's: the same sigma is fine in a slower market.
    slow = GOOD.replace("sigma = 0.25", "sigma = 20", 1)
    Market.from_toml(write(tmp_path, slow))
    with pytest.raises(ConfigError, match=r"symbols\.MSFT\.params\.sigma: .*sigma <= 6\.32456"):
        Market.from_toml(write(tmp_path, slow), speed=0.1)
    big = GOOD.replace("omega = 0.02", "omega = 1e300", 1)
    with pytest.raises(ConfigError, match=r"market\.toml: symbols\.AAPL\.params\.omega: garch"):
        Market.from_toml(write(tmp_path, big))
    with pytest.raises(ConfigError, match=r"market\.toml: s0\.AAPL: must be in \[1e-06, 1e\+12\]"):
        Market.from_toml(write(tmp_path, GOOD.replace("s0 = 120.0", "s0 = 1e300", 1)))


def test_defect4_guard_keeps_every_price_streamable_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A valid drift at its bound (one e-fold per tick) reaches the top of the price range
    in ~20 ticks: the guard restarts it at its last quote, counts it and logs once."""
    m = Market(
        {"UP": GBM(mu=1000.0, sigma=0.01), "DOWN": GBM(mu=-1000.0, sigma=0.01)},
        seed=1,
        tick_interval=0.25,
        bar_interval=0.25,
    )
    with caplog.at_level("WARNING", logger="quoteflow.market"):
        events = [e for _ in range(200) for e in m.step(now=0)]
    for e in events:
        values = [e.data[k] for k in ("price", "bid", "ask", "open", "high", "low") if k in e.data]
        assert all(math.isfinite(v) and v > 0 for v in values), e
        assert math.copysign(1.0, e.data.get("ask", 1.0)) == 1.0  # never -0.0
    assert max(e.data["price"] for e in events if e.event == "tick") <= 1e12
    assert min(e.data["price"] for e in events if e.event == "tick") >= 1e-6
    assert m.prices_reseeded > 300  # both symbols, nearly every tick after the first ~20
    lines = [r.getMessage() for r in caplog.records]
    # 200 ticks at one instant: the first restart is logged, the rest wait for the next
    # interval (of tick time), whose first restart logs the summary.
    assert len(lines) == 1 and "price guard: restarted 1 price(s)" in lines[0], lines
    with caplog.at_level("WARNING", logger="quoteflow.market"):
        m.step(now=GUARD_LOG_INTERVAL - 0.001)
        assert len(caplog.records) == 1
        m.step(now=GUARD_LOG_INTERVAL)
    summary = caplog.records[-1].getMessage()
    assert len(caplog.records) == 2 and f"restarted {m.prices_reseeded - 1} price(s)" in summary
    assert "UP x" in summary and "DOWN x" in summary
    # Sane parameters revive it, from its last quote.
    last = m.describe()["UP"]["price"]
    m.update("UP", {"mu": 0.05, "sigma": 0.2})
    count = m.prices_reseeded
    nxt = [m.step_arrays(now=0).price[0] for _ in range(20)]
    assert abs(math.log(nxt[0] / last)) < 0.1 and len(set(nxt)) > 1
    assert m.prices_reseeded <= count + 20  # DOWN goes on being restarted, UP not
    assert json.dumps(m.describe(), allow_nan=False)


@pytest.mark.parametrize("symbol", ["G", "M", "H"])
def test_defect4_a_degenerate_symbol_is_revived_by_a_valid_update(symbol: str) -> None:
    """From a state where the price is already broken (inf / 0), a valid update restarts
    it at its last good quote and the feed goes on."""
    m = _three(tick_interval=0.25)
    for _ in range(3):
        m.step(now=0)
    i = m.symbols.index(symbol)
    good = m.describe()[symbol]["price"]
    m._prices[i] = math.inf if symbol != "M" else 0.0
    group = m._group_of.get(i)
    if group is not None:
        group.stepper.prices = np.full(group.stepper.prices.size, math.nan)
        if isinstance(group.model, GARCH):
            group.stepper.variance = np.full(group.stepper.prices.size, math.inf)  # type: ignore[attr-defined]
    assert json.dumps(m.describe(), allow_nan=False)
    m.update(symbol, dict(m.model(symbol).params()) if symbol == "H" else {"sigma": 0.25})
    ticks = [m.step(now=0)[i].data for _ in range(20)]
    assert abs(math.log(ticks[0]["price"] / good)) < 0.2
    assert all(math.isfinite(t["price"]) and 0 < t["bid"] <= t["price"] <= t["ask"] for t in ticks)
    assert len({t["price"] for t in ticks}) > 1
    assert m.prices_reseeded == 1
