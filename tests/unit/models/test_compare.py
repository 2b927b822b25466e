"""The public surface of quoteflow.models: exports, registry, model_from_spec, compare()."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import quoteflow.models as models
from quoteflow import data
from quoteflow.errors import ConfigError, DataError
from quoteflow.models import (
    GARCH,
    GBM,
    MODELS,
    Comparison,
    FitResult,
    MeanReversion,
    PriceModel,
    Stepper,
    compare,
    model_from_spec,
)


def test_all_is_complete_and_importable() -> None:
    public = {
        name
        for name, obj in vars(models).items()
        if not name.startswith("_")
        and not isinstance(obj, type(models))  # submodules
        and getattr(obj, "__module__", "quoteflow.models").startswith("quoteflow.models")
        and name not in {"annotations"}
    }
    assert public <= set(models.__all__), public - set(models.__all__)
    for name in models.__all__:
        assert hasattr(models, name), name
    required = {"GBM", "MeanReversion", "GARCH", "FitResult", "PriceModel", "Stepper"}
    assert required | {"compare", "MODELS", "model_from_spec"} <= set(models.__all__)


def test_registry_names_match_classes() -> None:
    from quoteflow.models import MertonJump

    assert {"gbm": GBM, "meanrev": MeanReversion, "garch": GARCH, "merton": MertonJump} == MODELS
    for name, cls in MODELS.items():
        assert cls.name == name
        assert issubclass(cls, PriceModel)


def test_model_from_spec_builds_validated_models() -> None:
    assert model_from_spec("gbm", mu=0.1, sigma=0.3) == GBM(0.1, 0.3)
    assert model_from_spec(" MeanRev ", kappa=2, theta=50, sigma=0.2) == MeanReversion(2, 50, 0.2)
    g = model_from_spec("garch", omega=0.03, alpha=0.05, beta=0.9, dist="t", nu=6)
    assert isinstance(g, GARCH) and g.dist == "t"
    st = model_from_spec("gbm", mu=0.0, sigma=0.2).stepper(np.ones(3), 1 / 252)
    assert isinstance(st, Stepper)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("heston", {}, r"unknown model 'heston'.*; known models: gbm, meanrev, garch, merton"),
        ("gbm", {"mu": 0.1, "sigma": 0.2, "vol": 1}, r"unknown parameter\(s\) vol .*: mu, sigma"),
        ("gbm", {"mu": 0.1}, r"missing parameter\(s\) sigma for model 'gbm'"),
        ("gbm", {"mu": 0.1, "sigma": -0.2}, r"bad parameter for model 'gbm': .*sigma must be > 0"),
        ("meanrev", {"kappa": 1, "theta": "x", "sigma": 1}, r"theta must be a real number"),
        ("garch", {"alpha": 0.5, "beta": 0.6}, r"alpha \+ beta must be < 1"),
    ],
)
def test_model_from_spec_errors(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model_from_spec(name, **params)


def test_compare_on_gbm_data_ranks_by_aic_and_lists_failures() -> None:
    # A GBM path with strong drift: meanrev has phi >= 1 or fits; either way compare must
    # return all four rows, ranked by AIC, failures last with their message.
    prices = GBM(0.5, 0.2).simulate(2000, seed=1)[:, 0]
    cmp = compare(prices)
    assert isinstance(cmp, Comparison)
    table = cmp.table
    assert set(table["model"]) == {
        "gbm", "meanrev", "garch-normal", "garch-t", "garch-skewt", "gjr-t", "gjr-skewt",
        "merton",
    }  # fmt: skip
    for col in ("model", "loglik", "k", "aic", "bic", "converged"):
        assert col in table.columns
    ok = table[table["error"].eq("") | table["aic"].notna()]
    assert ok["aic"].is_monotonic_increasing
    assert table.loc[0, "delta_aic"] == 0.0
    # AIC/BIC recomputed from loglik and k: same data, same n for every model.
    fitted = table[table["aic"].notna()]
    np.testing.assert_allclose(fitted["aic"], -2 * fitted["loglik"] + 2 * fitted["k"].astype(float))
    np.testing.assert_allclose(
        fitted["bic"], -2 * fitted["loglik"] + fitted["k"].astype(float) * math.log(2000)
    )
    assert (fitted["nobs"] == 2000).all()
    # se of the GBM sigma estimate: sigma / sqrt(2n), i.e. 1/sqrt(4000) = 1.6 % relative
    # (measured sd over seeds 1-40: 1.56 %); 8 % is 5 se.
    assert cmp.fits["gbm"].params["sigma"] == pytest.approx(0.2, rel=0.08)
    assert isinstance(cmp.best, FitResult)


def test_compare_lists_a_failing_model_with_its_error() -> None:
    # AAPL's adjusted close has phi >= 1: mean reversion cannot be fitted.
    cmp = compare(data.load("AAPL")["adj_close"])
    row = cmp.table.set_index("model").loc["meanrev"]
    assert "no mean reversion detected" in row["error"]
    assert not row["converged"] and pd.isna(row["aic"])
    assert cmp.table.iloc[-1]["model"] == "meanrev"
    assert "meanrev" not in cmp.fits
    # Heavy-tailed, asymmetric daily returns: GJR with skewed t wins (delta AIC 1.5 to
    # gjr-t, 3.3 to garch-t), and every fat-tailed GARCH beats the normal one by a wide
    # margin.
    assert cmp.table.iloc[0]["model"] == "gjr-skewt"
    assert cmp.best is cmp.fits["gjr-skewt"]
    ranked = list(cmp.table["model"])
    assert ranked.index("garch-normal") > max(
        ranked.index(m) for m in ("garch-t", "garch-skewt", "gjr-t", "gjr-skewt")
    )
    aic = cmp.table.set_index("model")["aic"]
    assert aic["garch-normal"] - aic["garch-t"] > 100
    html = cmp._repr_html_()
    assert "<table" in html and "gjr-skewt" in html
    assert "garch-normal" in str(cmp)
    d = cmp.to_dict()
    json.dumps(d, allow_nan=False)
    assert next(r["model"] for r in d["ranking"]) == "gjr-skewt"
    assert d["ranking"][-1]["aic"] is None


def test_compare_rejects_bad_prices() -> None:
    with pytest.raises(DataError, match="NaN"):
        compare([1.0, 2.0, math.nan] * 20)
