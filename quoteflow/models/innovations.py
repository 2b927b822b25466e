"""Innovation distributions of a conditional-variance model, as parts with one method set.

A GARCH return is ``r_t = mu_t + sigma_t eps_t`` with ``eps_t`` iid, mean 0, variance 1.
The law of ``eps`` is a part (as in ``arch.univariate.distribution``): each part names its
shape parameters and gives their bounds, starting values and validation, the
log-likelihood with its partial derivatives, and the two ways to draw innovations (directly
and from standard-normal shocks through a Gaussian copula). A new law (skew-t) is one more
class here plus its shape parameter on the model; the estimator and the stepper do not
change.

Parameters are passed as a tuple of floats in :attr:`Innovation.parameter_names` order.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import special, stats

from quoteflow.errors import ParameterError
from quoteflow.models.base import FloatArray

__all__ = ["INNOVATIONS", "Innovation", "InnovationTerms", "Normal", "StudentT"]

_LOG_2PI = math.log(2.0 * math.pi)
#: Largest |z| mapped through the Gaussian copula (Phi(-37) ~ 6e-300 > 0).
_MAX_ABS_Z = 37.0


@dataclass(frozen=True)
class InnovationTerms:
    """Per-observation log-likelihood of ``e_t`` given ``sigma2_t`` and its partials.

    ``ll`` the log-density terms, ``dl_ds`` and ``dl_de`` the partial derivatives in
    ``sigma2_t`` and ``e_t``, ``dl_dshape`` one array per shape parameter.
    """

    ll: FloatArray
    dl_ds: FloatArray
    dl_de: FloatArray
    dl_dshape: tuple[FloatArray, ...]


class Innovation(ABC):
    """A unit-variance innovation law: the part a GARCH model is assembled with."""

    #: Short name used by ``GARCH(dist=...)``, TOML and the command line.
    name: ClassVar[str]
    #: Shape parameters, in the order of every ``shape`` tuple (fields of the model).
    parameter_names: ClassVar[tuple[str, ...]] = ()
    #: Estimation box of each shape parameter.
    shape_bounds: ClassVar[tuple[tuple[float, float], ...]] = ()

    def bounds(self) -> list[tuple[float, float]]:
        """Bounds of the shape parameters in estimation."""
        return list(self.shape_bounds)

    def validate(self, shape: Sequence[float]) -> None:  # noqa: B027 - no shape: nothing to check
        """Raise :class:`ParameterError` naming a shape parameter outside its domain."""

    @abstractmethod
    def starting_values(self, std_resid: FloatArray) -> list[float]:
        """Shape parameters to start the optimiser from, given standardised residuals."""

    @abstractmethod
    def loglikelihood(
        self, shape: Sequence[float], e: FloatArray, sigma2: FloatArray
    ) -> InnovationTerms:
        """Log-density of ``e_t = sigma_t eps_t`` and its partial derivatives."""

    @abstractmethod
    def simulate(
        self, shape: Sequence[float], rng: np.random.Generator, size: tuple[int, int]
    ) -> FloatArray:
        """Unit-variance innovations drawn directly from the law."""

    @abstractmethod
    def from_normal(self, shape: Sequence[float], z: FloatArray) -> FloatArray:
        """Map standard-normal shocks to innovations, monotonically (``F^{-1}(Phi(z))``).

        Monotone, so a correlation imposed on the normal shocks carries over (as a rank
        correlation).
        """


class Normal(Innovation):
    """Standard normal innovations (no shape parameter)."""

    name: ClassVar[str] = "normal"

    def starting_values(self, std_resid: FloatArray) -> list[float]:
        return []

    def loglikelihood(
        self, shape: Sequence[float], e: FloatArray, sigma2: FloatArray
    ) -> InnovationTerms:
        """``l_t = -(log 2 pi + log sigma2_t + e_t**2 / sigma2_t) / 2``."""
        inv_s = 1.0 / sigma2
        ratio = e * e * inv_s
        ll = -0.5 * (_LOG_2PI + np.log(sigma2) + ratio)
        dl_ds = 0.5 * (ratio - 1.0) * inv_s
        dl_de = -e * inv_s
        return InnovationTerms(ll=ll, dl_ds=dl_ds, dl_de=dl_de, dl_dshape=())

    def simulate(
        self, shape: Sequence[float], rng: np.random.Generator, size: tuple[int, int]
    ) -> FloatArray:
        return rng.standard_normal(size=size)

    def from_normal(self, shape: Sequence[float], z: FloatArray) -> FloatArray:
        return np.asarray(z, dtype=np.float64)


class StudentT(Innovation):
    """Student-t innovations with ``nu > 2`` degrees of freedom, rescaled to unit variance.

    References
    ----------
    Bollerslev, T. (1987), "A conditionally heteroskedastic time series model for
    speculative prices and rates of return", *Rev. Econ. Stat.* 69, 542-547.
    """

    name: ClassVar[str] = "t"
    parameter_names: ClassVar[tuple[str, ...]] = ("nu",)
    #: Bounds of ``nu`` in estimation, as in ``arch.univariate.StudentsT``.
    shape_bounds: ClassVar[tuple[tuple[float, float], ...]] = ((2.05, 500.0),)

    def validate(self, shape: Sequence[float]) -> None:
        (nu,) = shape
        if nu <= 2.0:
            raise ParameterError("nu", f"garch: parameter nu must be > 2 when dist='t', got {nu!r}")

    def starting_values(self, std_resid: FloatArray) -> list[float]:
        """``nu = max((4k - 6)/(k - 3), 4)`` from the kurtosis ``k`` if ``k > 3.75``, else 12.

        Method of moments for the t, as ``arch``'s ``StudentsT.starting_values``.
        """
        kurt = float(stats.kurtosis(std_resid, fisher=False))
        return [max((4.0 * kurt - 6.0) / (kurt - 3.0) if kurt > 3.75 else 12.0, 4.0)]

    def loglikelihood(
        self, shape: Sequence[float], e: FloatArray, sigma2: FloatArray
    ) -> InnovationTerms:
        """``l_t = log G((nu+1)/2) - log G(nu/2) - log(pi (nu-2))/2 - log(sigma2_t)/2
        - (nu+1)/2 log(1 + e_t**2 / (sigma2_t (nu-2)))`` (Bollerslev 1987)."""
        (nu,) = shape
        inv_s = 1.0 / sigma2
        q = e * e * inv_s / (nu - 2.0)
        const = (
            special.gammaln((nu + 1.0) / 2.0)
            - special.gammaln(nu / 2.0)
            - 0.5 * math.log(math.pi * (nu - 2.0))
        )
        log1q = np.log1p(q)
        w = q / (1.0 + q)
        dl_dnu = (
            0.5 * float(special.digamma((nu + 1.0) / 2.0) - special.digamma(nu / 2.0))
            - 0.5 / (nu - 2.0)
            - 0.5 * log1q
            + 0.5 * (nu + 1.0) / (nu - 2.0) * w
        )
        ll = const - 0.5 * np.log(sigma2) - 0.5 * (nu + 1.0) * log1q
        dl_ds = 0.5 * ((nu + 1.0) * w - 1.0) * inv_s
        dl_de = -(nu + 1.0) * e * inv_s / ((nu - 2.0) * (1.0 + q))
        return InnovationTerms(ll=ll, dl_ds=dl_ds, dl_de=dl_de, dl_dshape=(dl_dnu,))

    def simulate(
        self, shape: Sequence[float], rng: np.random.Generator, size: tuple[int, int]
    ) -> FloatArray:
        (nu,) = shape
        # Var of Student-t(nu) is nu/(nu-2); rescale to unit variance.
        draws: FloatArray = rng.standard_t(nu, size=size)
        return draws * math.sqrt((nu - 2.0) / nu)

    def from_normal(self, shape: Sequence[float], z: FloatArray) -> FloatArray:
        """Gaussian copula: ``F_t^{-1}(Phi(z))`` scaled to unit variance.

        Uses the symmetry of both laws, ``sign(z) * -F_t^{-1}(Phi(-|z|))``, so the
        lower-tail probability stays representable for large ``|z|`` (``Phi(z)`` would
        round to 1). ``|z|`` is capped at 37 (a probability of ~6e-300, the smallest
        ``Phi`` represents comfortably) so that a freak shock gives a huge but finite
        innovation, never inf.
        """
        (nu,) = shape
        z = np.asarray(z, dtype=np.float64)
        p = special.ndtr(-np.minimum(np.abs(z), _MAX_ABS_Z))
        x: FloatArray = -np.sign(z) * special.stdtrit(nu, p)
        return x * math.sqrt((nu - 2.0) / nu)


#: Innovation laws by their ``dist`` name.
INNOVATIONS: dict[str, Innovation] = {part.name: part for part in (Normal(), StudentT())}
