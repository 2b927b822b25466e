"""GJR-GARCH(1,1,1) and Hansen's skewed t: the parts against arch and their definitions,
validation with parameter names, simulation and streaming, construction from TOML and
``PUT``-style updates. Agreement of the fits with arch is in test_garch_arch_agreement.py,
parameter recovery in test_garch_recovery.py."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special

from quoteflow.errors import ParameterError
from quoteflow.market import Market
from quoteflow.models import GARCH, SkewT, build_model
from quoteflow.models import _garch_recursion as rec
from quoteflow.models.garch import _loglik_terms, _Spec
from tests.conftest import require_module

arch = require_module("arch")

SHAPE = (5.0, -0.3)
GJR = GARCH(mu=0.03, omega=0.03, alpha=0.04, gamma=0.1, beta=0.86, dist="skewt", eta=6.0, lam=-0.2)


# ------------------------------------------------------------------- skewed t part


def test_skewt_density_is_arch_skewstudent() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal(500) * 1.5
    s2 = rng.uniform(0.5, 2.0, 500)
    ours = SkewT().loglikelihood(SHAPE, e, s2).ll
    theirs = arch.univariate.SkewStudent().loglikelihood(np.array(SHAPE), e, s2, individual=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [SHAPE, (12.0, 0.4), (2.5, 0.0)])
def test_skewt_has_zero_mean_unit_variance_and_integrates_to_one(
    shape: tuple[float, float],
) -> None:
    part = SkewT()

    def moment(j: int) -> float:
        def f(x: float) -> float:
            return float(x**j * part.pdf(shape, np.array([x]))[0])

        # Split at 0 and at the branch point -a/b (a kink): quad is then exact to ~1e-10.
        return float(sum(integrate.quad(f, lo, hi, limit=200)[0] for lo, hi in _pieces(shape)))

    assert moment(0) == pytest.approx(1.0, abs=1e-8)
    assert moment(1) == pytest.approx(0.0, abs=1e-8)
    if shape[0] > 3.0:  # for eta <= 3 the second-moment integral converges too slowly
        assert moment(2) == pytest.approx(1.0, abs=1e-7)


def _pieces(shape: tuple[float, float]) -> list[tuple[float, float]]:
    from quoteflow.models.innovations import _skewt_constants

    _, a, b = _skewt_constants(*shape)
    cuts = sorted({-a / b, 0.0})
    edges = [-np.inf, *cuts, np.inf]
    return list(itertools.pairwise(edges))


def test_skewt_partials_equal_finite_differences() -> None:
    rng = np.random.default_rng(1)
    e = rng.standard_normal(300) * 1.3
    s2 = rng.uniform(0.5, 2.0, 300)
    part = SkewT()
    t = part.loglikelihood(SHAPE, e, s2)
    h = 1e-6
    for i in range(2):
        up, dn = list(SHAPE), list(SHAPE)
        up[i] += h
        dn[i] -= h
        fd = (part.loglikelihood(up, e, s2).ll - part.loglikelihood(dn, e, s2).ll) / (2 * h)
        np.testing.assert_allclose(t.dl_dshape[i], fd, rtol=1e-6, atol=1e-7)
    fd = (part.loglikelihood(SHAPE, e + h, s2).ll - part.loglikelihood(SHAPE, e - h, s2).ll) / (
        2 * h
    )
    np.testing.assert_allclose(t.dl_de, fd, rtol=1e-6, atol=1e-7)
    fd = (part.loglikelihood(SHAPE, e, s2 + h).ll - part.loglikelihood(SHAPE, e, s2 - h).ll) / (
        2 * h
    )
    np.testing.assert_allclose(t.dl_ds, fd, rtol=1e-6, atol=1e-7)


def test_skewt_copula_is_arch_ppf_and_keeps_both_tails() -> None:
    u = np.linspace(0.001, 0.999, 99)
    ours = SkewT().from_normal(SHAPE, special.ndtri(u))
    theirs = arch.univariate.SkewStudent().ppf(u, np.array(SHAPE))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    z = np.array([-37.0, -30.0, -10.0, 10.0, 30.0, 37.0, 50.0])
    x = SkewT().from_normal(SHAPE, z)
    assert np.all(np.isfinite(x)) and np.all(np.diff(x) >= 0.0)
    assert x[0] < -1e3 and x[-2] > 1e3  # neither tail rounds to a finite cap near 0/1


def test_negative_moment_is_half_for_symmetric_laws_and_the_integral_otherwise() -> None:
    assert GARCH(dist="normal").kappa == 0.5
    assert GARCH(dist="t", nu=5.0).kappa == 0.5
    assert SkewT().negative_moment((6.0, 0.0)) == pytest.approx(0.5, abs=1e-10)
    # A longer left tail (lambda < 0) puts more than half the unit variance below 0,
    # and the mirror image exactly the complement.
    left, right = SkewT().negative_moment((6.0, -0.3)), SkewT().negative_moment((6.0, 0.3))
    assert left > 0.5 and left + right == pytest.approx(1.0, abs=1e-10)


# ------------------------------------------------------------------ GJR recursion


def test_gjr_variance_filter_equals_plain_loop_and_arch() -> None:
    rng = np.random.default_rng(2)
    e = rng.standard_normal(2000) * 1.3
    ref = rec.variance_reference(0.05, 0.05, 0.85, e, 1.7, gamma=0.1)
    np.testing.assert_allclose(rec.variance_filter(0.05, 0.05, 0.85, e, 1.7, 0.1), ref, rtol=1e-12)
    assert ref[0] == pytest.approx(0.05 + (0.05 + 0.05 + 0.85) * 1.7, rel=1e-15)
    # arch's GJR recursion, with its variance bounds wide open.
    sigma2 = np.empty_like(e)
    bounds = np.tile([1e-300, 1e300], (e.size, 1))
    arch.univariate.GARCH(p=1, o=1, q=1).compute_variance(
        np.array([0.05, 0.05, 0.1, 0.85]), e, sigma2, 1.7, bounds
    )
    np.testing.assert_allclose(ref, sigma2, rtol=1e-12)


@pytest.mark.parametrize("with_mu", [True, False])
def test_gjr_variance_gradient_equals_finite_differences(with_mu: bool) -> None:
    rng = np.random.default_rng(3)
    r = 0.1 + rng.standard_normal(500)
    bc = 1.2
    theta = np.array([0.1, 0.05, 0.05, 0.1, 0.85])  # mu, omega, alpha, gamma, beta

    def sig(t: np.ndarray) -> np.ndarray:
        return rec.variance_reference(t[1], t[2], t[4], r - t[0], bc, gamma=t[3])

    _, grad = rec.variance_and_gradient(0.05, 0.05, 0.85, r - 0.1, bc, with_mu, 0.1)
    cols = [0, 1, 2, 3, 4] if with_mu else [1, 2, 3, 4]
    assert grad.shape == (len(cols), r.size)
    for row, j in enumerate(cols):
        h = 1e-6
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        np.testing.assert_allclose(grad[row], (sig(up) - sig(dn)) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mean", ["constant", "zero"])
def test_gjr_skewt_scores_equal_finite_differences_of_loglik(mean: str) -> None:
    r = np.log(GJR.simulate(400, seed=4)[:, 0])
    r = 100 * np.diff(r)
    spec = _Spec(returns=r, backcast=rec.backcast(r), dist="skewt", mean=mean, o=1)
    x = np.array([0.05, 0.05, 0.05, 0.1, 0.85, 6.0, -0.2][(0 if mean == "constant" else 1) :])
    g = _loglik_terms(spec, x).gradient(spec.with_mu)
    for j in range(x.size):
        h = 1e-6 * max(abs(x[j]), 1.0)
        up, dn = x.copy(), x.copy()
        up[j] += h
        dn[j] -= h
        fd = (_loglik_terms(spec, up).ll.mean() - _loglik_terms(spec, dn).ll.mean()) / (2 * h)
        assert g[j] == pytest.approx(fd, rel=1e-5, abs=1e-8), spec.names[j]


# ------------------------------------------------------------------ model and parts


def test_gjr_params_and_persistence() -> None:
    p = GJR.params()
    assert {"gamma", "eta", "lambda"} <= set(p) and "nu" not in p and "lam" not in p
    assert p["lambda"] == -0.2
    assert GJR.persistence == pytest.approx(0.04 + GJR.kappa * 0.1 + 0.86, rel=1e-15)
    assert GJR.unconditional_variance == pytest.approx(0.03 / (1 - GJR.persistence))
    assert "gamma" not in GARCH().params()  # plain GARCH(1,1) keeps its parameter set
    assert GJR.with_params(**{"lambda": 0.1}).params()["lambda"] == 0.1


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"gamma": -0.05, "alpha": 0.04}, "gamma"),  # alpha + gamma < 0
        ({"gamma": 0.3}, "beta"),  # persistence >= 1
        ({"eta": 2.0}, "eta"),
        ({"lam": 1.0}, "lambda"),
        ({"lam": math.nan}, "lambda"),
        ({"gamma": math.inf}, "gamma"),
    ],
)
def test_gjr_skewt_validation_names_the_parameter(changes: dict[str, float], param: str) -> None:
    with pytest.raises(ParameterError) as info:
        GJR.with_params(**{GARCH.public_name(k): v for k, v in changes.items()})
    assert info.value.param == param


def test_fit_refuses_an_unknown_order() -> None:
    prices = GJR.simulate(300, seed=1)[:, 0]
    for bad in (2, True, "1"):
        with pytest.raises(ParameterError) as info:
            GARCH.fit(prices, o=bad)  # type: ignore[arg-type]
        assert info.value.param == "o"


def test_gjr_simulated_variance_equals_plain_recursion() -> None:
    rng = np.random.default_rng(5)
    eps = GJR._draw_innovations(rng, (5000, 3))
    v = GJR._variance_path(eps, 1 / 252)
    ref = np.empty_like(v)
    ref[0] = GJR.unconditional_variance
    for t in range(1, v.shape[0]):
        news = np.where(eps[t - 1] < 0, GJR.alpha + GJR.gamma, GJR.alpha)
        ref[t] = GJR.omega + (news * eps[t - 1] ** 2 + GJR.beta) * ref[t - 1]
    np.testing.assert_allclose(v, ref, rtol=1e-10)


def test_gjr_skewt_stepper_follows_the_recursion_with_copula_shocks() -> None:
    st = GJR.stepper(np.array([100.0, 50.0]), 1 / 252)
    rng = np.random.default_rng(6)
    price, v = st.prices.copy(), st.variance.copy()
    for _ in range(50):
        z = rng.standard_normal(2)
        eps = SkewT().from_normal((GJR.eta, GJR.lam), z)
        r = GJR.mu + np.sqrt(v) * eps
        price = price * np.exp(r / GJR.scale)
        v = (
            GJR.omega
            + (np.where(eps < 0, GJR.alpha + GJR.gamma, GJR.alpha) * eps**2 + GJR.beta) * v
        )
        np.testing.assert_allclose(st.step(z), price, rtol=1e-12)
        np.testing.assert_allclose(st.variance, v, rtol=1e-12)


def test_gjr_step_coefficients_keep_calendar_time_persistence_and_asymmetry() -> None:
    h = 0.25
    mu_h, omega_h, alpha_h, gamma_h, beta_h = GJR.step_coefficients(h / 252)
    assert alpha_h + GJR.kappa * gamma_h + beta_h == pytest.approx(GJR.persistence**h, rel=1e-12)
    assert gamma_h / alpha_h == pytest.approx(GJR.gamma / GJR.alpha, rel=1e-12)
    assert omega_h / (1 - GJR.persistence**h) == pytest.approx(h * GJR.unconditional_variance)
    assert mu_h == pytest.approx(GJR.mu * h)


def test_gjr_long_simulation_has_the_unconditional_variance() -> None:
    # 200 paths x 2000 steps = 4e5 returns, but strongly dependent (persistence 0.96..):
    # the effective sample is ~4e5 (1 - phi) / (1 + phi) ~ 8e3, so the sample variance
    # is within ~5 % (a few standard errors of a kurtotic variance estimate) of omega/(1-phi).
    paths = GJR.simulate(2000, n_paths=200, seed=7)
    r = 100 * np.diff(np.log(paths), axis=0)
    assert float(np.var(r[200:])) == pytest.approx(GJR.unconditional_variance, rel=0.08)


# --------------------------------------------------------------- registry and market


def test_registry_builds_gjr_skewt_with_public_names() -> None:
    params = {"mu": 0.0, "omega": 0.03, "alpha": 0.04, "gamma": 0.1, "beta": 0.86,
              "dist": "skewt", "eta": 6.0, "lambda": -0.2}  # fmt: skip
    model = build_model("garch", params)
    assert isinstance(model, GARCH) and model.lam == -0.2 and model.gamma == 0.1
    assert build_model("garch", model.params()) == model  # round trip through params()
    with pytest.raises(ParameterError) as info:
        build_model("garch", {**params, "lambda": 2.0}, where="symbols.X")
    assert info.value.param == "lambda"
    assert str(info.value).startswith("symbols.X.params.lambda: ")
    with pytest.raises(ParameterError) as info:
        build_model("garch", {**params, "lam": 0.1})
    assert info.value.param == "lam"  # the field name is not a parameter name


def test_gjr_skewt_streams_in_a_market_from_toml_and_updates(tmp_path: Path) -> None:
    cfg = tmp_path / "market.toml"
    cfg.write_text(
        """
seed = 1
[symbols.AAPL]
model = "garch"
params = { mu = 0.0, omega = 0.03, alpha = 0.04, gamma = 0.1, beta = 0.86, dist = "skewt", eta = 6, lambda = -0.2 }
[symbols.MSFT]
model = "garch"
fit = "MSFT"
fit_options = { dist = "skewt", o = 1 }
"""
    )
    m = Market.from_toml(cfg)
    d = m.describe()
    assert d["AAPL"]["params"]["gamma"] == 0.1 and d["AAPL"]["params"]["lambda"] == -0.2
    assert {"gamma", "eta", "lambda"} <= set(d["MSFT"]["params"])
    for _ in range(20):
        events = m.step()
    assert {e.symbol for e in events} == {"AAPL", "MSFT"}
    # PUT /symbols/AAPL goes through Market.update: the public names are accepted ...
    assert m.update("AAPL", {"gamma": 0.05, "lambda": 0.1})["lambda"] == 0.1
    # ... and refused with the parameter's name when out of range.
    with pytest.raises(ParameterError) as info:
        m.update("AAPL", {"gamma": -0.5})
    assert info.value.param == "gamma"
    m.step()


def test_regression_t_copula_gave_inf_at_the_capped_shock_for_small_dof() -> None:
    # scipy's stdtrit(5, 5.7e-300) is +inf (wrong sign, and infinite); the Pareto tail
    # takes over there. Where stdtrit still works (1e-200) the tail formula agrees with it.
    from quoteflow.models.innovations import StudentT, _t_lower_quantile

    x = StudentT().from_normal((5.0,), np.array([-37.0, 37.0]))
    assert np.all(np.isfinite(x)) and x[0] < -1e50 and x[1] == -x[0]
    p = np.array([1e-200])
    log_k = (
        special.gammaln(3.0) + 1.5 * math.log(5.0) - 0.5 * math.log(math.pi) - special.gammaln(2.5)
    )
    tail = -math.exp((log_k - math.log(1e-200)) / 5.0)
    assert float(_t_lower_quantile(5.0, p)[0]) == pytest.approx(tail, rel=1e-12)


def test_cli_fits_gjr_skewt_and_refuses_o_for_other_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from quoteflow.cli import main

    assert main(["fit", "AAPL", "--model", "garch", "--dist", "skewt", "--o", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["params"]) == ["mu", "omega", "alpha", "gamma", "beta", "eta", "lambda"]
    assert out["tail_diagnostics"]["hill_k"] == math.isqrt(out["nobs"])
    assert main(["fit", "AAPL", "--model", "gbm", "--o", "1"]) == 2
    assert "--o only applies to --model garch" in capsys.readouterr().err
