"""What a model can simulate at a step: the per-step rules of quoteflow.models.limits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from quoteflow.errors import ConfigError, ParameterError
from quoteflow.models import GARCH, GBM, MeanReversion, PriceModel
from quoteflow.models.limits import MAX_PRICE, MAX_STEP_VOL, MIN_PRICE

#: The default stream step: a quarter second of ticks at one trading day per second.
DT = 0.25 / 252


@pytest.mark.parametrize(
    ("model", "param", "allowed"),
    [
        (GBM(mu=1e6, sigma=0.2), "mu", "|mu| <= 1008"),
        (GBM(mu=-1e300, sigma=0.2), "mu", "|mu| <= 1008"),
        (GBM(mu=0.0, sigma=1e6), "sigma", "0 < sigma <= 31.749"),
        (GBM(mu=0.0, sigma=1e155), "sigma", "0 < sigma <= 31.749"),
        (MeanReversion(kappa=2.0, theta=100.0, sigma=1e6), "sigma", "0 < sigma <= 31.7"),
        (MeanReversion(kappa=2.0, theta=1e300, sigma=0.2), "theta", "[1e-06, 1e+12]"),
        (MeanReversion(kappa=2.0, theta=1e-300, sigma=0.2), "theta", "[1e-06, 1e+12]"),
        (GARCH(omega=1e300), "omega", "0 < omega <= "),
        (GARCH(mu=1e300), "mu", "|mu| <= "),
        (GARCH(omega=1e5, alpha=0.0, beta=0.0), "omega", "0 < omega <= 40000"),
    ],
)
def test_check_step_names_the_parameter_and_its_allowed_range(
    model: PriceModel, param: str, allowed: str
) -> None:
    with pytest.raises(ParameterError) as info:
        model.check_step(DT)
    assert info.value.param == param
    assert f"parameter {param} = " in str(info.value)
    assert "allowed" in str(info.value) and allowed in str(info.value), str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "model",
    [
        GBM(mu=0.05, sigma=0.2),
        GBM(mu=1000.0, sigma=31.7),  # at the edge: one e-fold per step
        MeanReversion(kappa=2.0, theta=100.0, sigma=0.2),
        MeanReversion(kappa=1e6, theta=MAX_PRICE, sigma=1e3),  # stationary sd ~0.7
        GARCH(),
        GARCH(dist="t", nu=2.05, scale=1.0, omega=2e-6),
    ],
)
def test_sane_and_edge_parameters_pass_and_step_finite(model: PriceModel) -> None:
    model.check_step(DT)
    stepper = model.stepper(np.full(3, 100.0), DT)
    z = np.random.default_rng(0).standard_normal((50, 3))
    for row in z:
        prices = stepper.step(row)
    assert np.all(np.isfinite(prices)) and np.all(prices > 0)


def test_a_rule_of_several_parameters_blames_the_one_just_changed() -> None:
    model = GARCH(mu=0.0, scale=1e-3)  # percent-sized omega at a tiny scale: far too volatile
    with pytest.raises(ParameterError) as info:
        model.check_step(DT)
    assert info.value.param == "omega"
    with pytest.raises(ParameterError) as info:
        model.check_step(DT, changed={"scale"})
    assert info.value.param == "scale" and "scale >= " in str(info.value)
    with pytest.raises(ParameterError) as info:
        GARCH(omega=3e4, alpha=0.05, beta=0.5).check_step(DT, changed={"beta"})
    assert info.value.param == "beta"
    assert "allowed at this dt: 0 <= beta <= 0.2" in str(info.value)
    with pytest.raises(ParameterError) as info:  # no beta >= 0 helps: omega is named
        GARCH(omega=5e4, alpha=0.05, beta=0.5).check_step(DT, changed={"beta"})
    assert info.value.param == "omega"


@pytest.mark.parametrize(
    ("kwargs", "param", "text"),
    [
        ({"scale": 1e-300}, "scale", "allowed: [0.0001, 10000]"),
        ({"scale": 1e300}, "scale", "allowed: [0.0001, 10000]"),
        ({"omega": 10**400}, "omega", "must be finite, got an integer of about 401 digits"),
        ({"dist": "cauchy"}, "dist", "dist must be one of"),
        ({"alpha": 0.5, "beta": 0.5}, "beta", "alpha + beta must be < 1"),
    ],
)
def test_garch_construction_errors_carry_the_parameter(
    kwargs: dict[str, Any], param: str, text: str
) -> None:
    with pytest.raises(ParameterError) as info:
        GARCH(**kwargs)
    assert info.value.param == param and text in str(info.value)


def test_huge_integers_are_not_finite_instead_of_overflowing() -> None:
    for make in (lambda: GBM(mu=10**400, sigma=0.2), lambda: GBM(mu=0.0, sigma=-(10**5000))):
        with pytest.raises(ParameterError, match="must be finite, got an integer of about"):
            make()


def test_simulate_and_steppers_apply_the_same_rule() -> None:
    bad = GBM(mu=0.0, sigma=5.0)
    bad.check_step(1 / 252)  # sigma sqrt(dt) = 0.31
    with pytest.raises(ParameterError, match=r"sigma \* sqrt\(dt\) = 5 exceeds 1"):
        bad.simulate(3, dt=1.0)
    with pytest.raises(ParameterError, match="sigma"):
        bad.stepper(100.0, 1.0)
    ok = GBM(mu=0.0, sigma=0.2).stepper(100.0, 1.0)
    with pytest.raises(ParameterError, match="sigma"):
        ok.set_model(bad)
    assert ok.model == GBM(mu=0.0, sigma=0.2)  # unchanged
    with pytest.raises(ParameterError, match="omega"):
        GARCH(omega=500.0).simulate(3)
    with pytest.raises(ParameterError, match="theta"):
        MeanReversion(1.0, 1e13, 0.2).simulate(3)


def test_reseed_restarts_paths_with_a_fresh_state() -> None:
    model = GARCH(omega=0.02, alpha=0.08, beta=0.9)
    stepper = model.stepper(np.full(3, 100.0), DT)
    stepper.variance = np.array([1.0, math.inf, math.nan])
    stepper.prices = np.array([100.0, math.inf, 0.0])
    stepper.reseed(np.array([1, 2]), np.array([50.0, 60.0]))
    assert stepper.prices.tolist() == [100.0, 50.0, 60.0]
    unconditional = stepper.variance[1]
    assert stepper.variance[0] == 1.0 and stepper.variance[2] == unconditional
    assert math.isfinite(unconditional) and unconditional > 0
    g = GBM(0.0, 0.2).stepper(np.full(2, 1.0), DT)
    g.reseed(0, 2.0)
    assert g.prices.tolist() == [2.0, 1.0]


def test_limits_are_consistent() -> None:
    assert 0 < MIN_PRICE < 1 < MAX_PRICE and MAX_STEP_VOL > 0
