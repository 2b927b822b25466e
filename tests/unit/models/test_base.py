"""Shared model machinery: input validation through every fit, FitResult, Stepper protocol."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quoteflow.errors import DataError
from quoteflow.models import GBM, MODELS, FitResult, MeanReversion, PriceModel, Stepper
from quoteflow.models.base import MIN_OBSERVATIONS, FloatArray

GOOD = GBM(0.05, 0.2).simulate(99, seed=0)[:, 0]


def _with(i: int, value: float) -> FloatArray:
    p = GOOD.copy()
    p[i] = value
    return p


BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("nan", _with(7, math.nan), r"NaN at index 7"),
    ("inf", _with(8, math.inf), r"inf at index 8"),
    ("zero", _with(9, 0.0), r"must be positive: value 0.0 at index 9"),
    ("negative", _with(10, -5.0), r"must be positive: value -5.0 at index 10"),
    ("too short", GOOD[: MIN_OBSERVATIONS - 1], r"too short: 29 values, need at least 30"),
    ("constant", np.full(50, 7.0), r"constant"),
    (
        "2-D",
        np.ones((40, 2)) + np.arange(40)[:, None],
        r"must be 1-D, got an array of shape \(40, 2\)",
    ),
    ("non-numeric", ["a"] * 40, r"must be numeric"),
]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("case", "prices", "match"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_every_fit_rejects_bad_input_with_a_clear_value_error(
    name: str, case: str, prices: Any, match: str
) -> None:
    with pytest.raises(DataError, match=match) as info:
        MODELS[name].fit(prices)
    assert isinstance(info.value, ValueError)


def test_bad_value_in_a_series_names_its_date() -> None:
    s = pd.Series(_with(3, math.nan), index=pd.date_range("2020-01-01", periods=GOOD.size))
    with pytest.raises(DataError, match=r"NaN at index 3 \(2020-01-04"):
        GBM.fit(s)


def test_fit_accepts_list_array_and_series_alike() -> None:
    a = GBM.fit(GOOD)
    b = GBM.fit(list(GOOD))
    c = GBM.fit(pd.Series(GOOD, index=pd.date_range("2020-01-01", periods=GOOD.size)))
    assert a.params == b.params == c.params


def test_fit_result_summary_dict_and_intervals() -> None:
    res = MeanReversion.fit(MeanReversion(5.0, 100.0, 0.2).simulate(2000, seed=1)[:, 0])
    text = res.summary()
    for word in ("MeanReversion fit (meanrev)", "kappa", "theta", "sigma", "AIC", "std err"):
        assert word in text
    d = res.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["model"] == "meanrev" and set(d["params"]) == {"kappa", "theta", "sigma"}
    assert d["phi"] == res.extra["phi"]
    lo, hi = res.conf_int()["kappa"]
    assert lo < res.params["kappa"] < hi
    assert hi - res.params["kappa"] == pytest.approx(1.959964 * res.std_err["kappa"], rel=1e-5)
    assert "<table>" in res._repr_html_()
    assert res.n_params == 3


def test_stepper_set_model_default_is_an_explicit_not_implemented() -> None:
    class Frozen(Stepper):
        def __init__(self) -> None:
            self.prices = np.ones(1)
            self.dt = 1.0

        def step(self, z: FloatArray) -> FloatArray:
            return self.prices

    with pytest.raises(NotImplementedError, match="Frozen does not support changing"):
        Frozen().set_model(GBM(0.0, 0.1))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_honours_the_protocol(name: str) -> None:
    cls = MODELS[name]
    # Mean-reverting prices, so that every model (meanrev too) can be fitted.
    res = cls.fit(MeanReversion(5.0, 100.0, 0.2).simulate(1000, seed=3)[:, 0])
    assert isinstance(res, FitResult)
    model: PriceModel = res.model
    assert isinstance(model, cls) and model.name == name
    assert set(res.params) <= set(model.params())
    paths = model.simulate(10, n_paths=3, s0=50.0, seed=1)
    assert paths.shape == (11, 3) and np.all(paths[0] == 50.0)
    st = model.stepper(np.array([50.0, 60.0]), 1 / 252)
    assert st.step(np.zeros(2)).shape == (2,)
    st.set_model(model)
