"""The parts models are assembled from: innovation laws, mean parts, standardised residuals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from quoteflow.errors import ParameterError
from quoteflow.models import (
    GARCH,
    GBM,
    INNOVATIONS,
    ConstantMean,
    MeanReversion,
    Normal,
    SkewT,
    StudentT,
    ZeroMean,
)
from quoteflow.models.garch import DISTS, MEANS


def test_every_innovation_has_one_method_set_and_unit_variance() -> None:
    rng = np.random.default_rng(0)
    assert DISTS == tuple(INNOVATIONS) == ("normal", "t", "skewt")
    for part, shape in ((Normal(), ()), (StudentT(), (6.0,)), (SkewT(), (6.0, -0.3))):
        assert len(part.parameter_names) == len(shape) == len(part.bounds())
        draws = part.simulate(shape, rng, (200_000, 1))
        assert float(draws.var()) == pytest.approx(1.0, rel=0.05)
        z = np.linspace(-5.0, 5.0, 101)
        mapped = part.from_normal(shape, z)
        assert np.all(np.diff(mapped) > 0.0)  # monotone: a copula keeps rank correlation
        terms = part.loglikelihood(shape, z, np.full(z.shape, 2.0))
        assert len(terms.dl_dshape) == len(shape)
        assert len(part.starting_values(draws[:, 0])) == len(shape)


def test_student_t_loglikelihood_is_scipy_t_density_rescaled() -> None:
    nu, sigma2 = 5.0, 2.0
    e = np.linspace(-6.0, 6.0, 13)
    scale = math.sqrt(sigma2 * (nu - 2.0) / nu)
    expected = stats.t.logpdf(e, nu, scale=scale)
    got = StudentT().loglikelihood((nu,), e, np.full(e.shape, sigma2)).ll
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_student_t_validates_nu_with_parameter_name() -> None:
    with pytest.raises(ParameterError) as info:
        StudentT().validate((2.0,))
    assert info.value.param == "nu"


def test_mean_parts_name_their_parameters() -> None:
    r = np.array([1.0, 2.0, 3.0])
    assert MEANS == ("constant", "zero")
    assert ConstantMean().parameter_names == ("mu",) and ConstantMean().starting_values(r) == [2.0]
    assert ZeroMean().parameter_names == () and ZeroMean().mu([]) == 0.0
    with pytest.raises(ParameterError) as info:
        ZeroMean().validate(0.1)
    assert info.value.param == "mu"


def test_garch_is_assembled_from_the_parts_its_strings_name() -> None:
    m = GARCH(dist="t", nu=5.0, mean="zero", mu=0.0)
    assert isinstance(m.innovation, StudentT) and isinstance(m.mean_part, ZeroMean)
    assert m.shape == (5.0,) and "nu" in m.params()
    assert GARCH().shape == () and "nu" not in GARCH().params()


@pytest.mark.parametrize("cls", [GBM, MeanReversion, GARCH])
def test_every_fit_result_exposes_standardised_residuals(cls: type) -> None:
    rng = np.random.default_rng(3)
    prices = MeanReversion(kappa=5.0, theta=100.0, sigma=0.2).simulate(600, seed=rng)[:, 0]
    res = cls.fit(prices)
    z = res.std_resid
    assert z.shape == (res.nobs,)
    assert np.all(np.isfinite(z))
    assert float(np.mean(z * z)) == pytest.approx(1.0, rel=0.1)
