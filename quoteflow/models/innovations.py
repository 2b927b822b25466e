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

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import integrate, special, stats

from quoteflow.errors import ParameterError
from quoteflow.models.base import FloatArray

__all__ = ["INNOVATIONS", "Innovation", "InnovationTerms", "Normal", "SkewT", "StudentT"]

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

    def negative_moment(self, shape: Sequence[float]) -> float:
        """``E[eps**2 1{eps < 0}]``: how much of the unit variance lies below zero.

        The GJR news term ``gamma e**2 1{e < 0}`` adds ``gamma`` times this to the
        persistence (Glosten, Jagannathan & Runkle 1993). 1/2 for a law symmetric about 0.
        """
        return 0.5

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


def _t_lower_quantile(nu: float, p: FloatArray) -> FloatArray:
    """Student-t(nu) quantile ``T^{-1}(p)`` for ``p <= 1/2``, finite down to ``p ~ 1e-300``.

    ``scipy.special.stdtrit`` overflows (returns +-inf) far in the tail of a small ``nu``
    (e.g. ``nu = 5`` at ``p = 1e-300``, where the quantile is ~ -1e60). There the Pareto
    tail ``T(-y) = K y**-nu (1 + O(y**-2))`` with
    ``K = G((nu+1)/2) nu**((nu-2)/2) / (sqrt(pi) G(nu/2))`` is exact to rounding
    (``y > 1e30``), and inverting it gives ``y = (K / p)**(1/nu)``.
    """
    q = np.asarray(special.stdtrit(nu, p), dtype=np.float64)
    bad = ~np.isfinite(q) | (q > 0.0)
    if np.any(bad):
        log_k = (
            special.gammaln((nu + 1.0) / 2.0)
            + 0.5 * (nu - 2.0) * math.log(nu)
            - 0.5 * math.log(math.pi)
            - special.gammaln(nu / 2.0)
        )
        q = np.where(bad, -np.exp((log_k - np.log(np.where(bad, p, 0.5))) / nu), q)
    return q


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
        x: FloatArray = -np.sign(z) * _t_lower_quantile(nu, p)
        return x * math.sqrt((nu - 2.0) / nu)


def _skewt_constants(eta: float, lam: float) -> tuple[float, float, float]:
    """Hansen's (1994) ``(log c, a, b)`` of the skewed t with ``eta`` dof and skewness ``lam``.

    ``c = G((eta+1)/2) / (sqrt(pi (eta-2)) G(eta/2))``, ``a = 4 lam c (eta-2)/(eta-1)``,
    ``b = sqrt(1 + 3 lam**2 - a**2)`` (Hansen 1994, eqs. 11-13).
    """
    log_c = float(
        special.gammaln((eta + 1.0) / 2.0)
        - special.gammaln(eta / 2.0)
        - 0.5 * math.log(math.pi * (eta - 2.0))
    )
    a = 4.0 * lam * math.exp(log_c) * (eta - 2.0) / (eta - 1.0)
    return log_c, a, math.sqrt(1.0 + 3.0 * lam * lam - a * a)


class SkewT(Innovation):
    """Hansen's (1994) skewed Student-t with ``eta > 2`` dof and skewness ``-1 < lambda < 1``.

    Zero mean and unit variance for every ``(eta, lambda)``; ``lambda = 0`` is the
    standardised t of :class:`StudentT`, ``lambda < 0`` a longer left tail. The density is

        f(z) = b c (1 + ((b z + a) / (1 + lambda s))**2 / (eta - 2))**(-(eta + 1)/2),

    ``s = sign(z + a/b)``, with the constants of :func:`_skewt_constants`. The names
    ``eta``, ``lambda`` are ``arch``'s (``arch.univariate.SkewStudent``), as are the
    estimation bounds ``eta`` in [2.05, 300] and ``lambda`` in [-1, 1] (the likelihood
    moves ``|lambda| = 1`` in by 1e-6, as arch does).

    References
    ----------
    Hansen, B. E. (1994), "Autoregressive conditional density estimation",
    *International Economic Review* 35, 705-730.
    """

    name: ClassVar[str] = "skewt"
    parameter_names: ClassVar[tuple[str, ...]] = ("eta", "lambda")
    shape_bounds: ClassVar[tuple[tuple[float, float], ...]] = ((2.05, 300.0), (-1.0, 1.0))

    def validate(self, shape: Sequence[float]) -> None:
        eta, lam = shape
        if eta <= 2.0:
            raise ParameterError(
                "eta", f"garch: parameter eta must be > 2 when dist='skewt', got {eta!r}"
            )
        if not -1.0 < lam < 1.0:
            raise ParameterError(
                "lambda",
                f"garch: parameter lambda must be in (-1, 1) when dist='skewt', got {lam!r}",
            )

    def starting_values(self, std_resid: FloatArray) -> list[float]:
        """``eta`` by the t's method of moments (as :class:`StudentT`), ``lambda = 0`` (arch)."""
        return [*StudentT().starting_values(std_resid), 0.0]

    def loglikelihood(
        self, shape: Sequence[float], e: FloatArray, sigma2: FloatArray
    ) -> InnovationTerms:
        """``l_t = log f(e_t / sigma_t) - log(sigma2_t) / 2`` and its partials.

        With ``d = 1 + lambda s``, ``u = (b z + a) / d`` and ``q = u**2 / (eta - 2)``:
        ``dl/dz = -(eta+1) b u / ((eta-2) d (1+q))``; the partials in ``lambda`` and
        ``eta`` go through ``a``, ``b``, ``c`` and ``d`` (``s`` is locally constant; ``u``
        is 0 where it flips, so the derivatives are continuous there).
        """
        eta, lam = shape
        lam = max(min(lam, 1.0 - 1e-6), -1.0 + 1e-6)
        log_c, a, b = _skewt_constants(eta, lam)
        c = math.exp(log_c)
        sd = np.sqrt(sigma2)
        z = e / sd
        s = np.where(z < -a / b, -1.0, 1.0)
        d = 1.0 + lam * s
        u = (b * z + a) / d
        em2 = eta - 2.0
        q = u * u / em2
        ll = math.log(b) + log_c - 0.5 * np.log(sigma2) - 0.5 * (eta + 1.0) * np.log1p(q)
        # d l / d u, then chain rules.
        dl_du = -(eta + 1.0) * u / (em2 * (1.0 + q))
        dl_dz = dl_du * b / d
        dl_de = dl_dz / sd
        dl_ds = -0.5 / sigma2 - 0.5 * dl_dz * z / sigma2
        # lambda: a_l = a / lam (a is linear in lam), b_l from b**2 = 1 + 3 lam**2 - a**2.
        a_l = 4.0 * c * em2 / (eta - 1.0)
        b_l = (3.0 * lam - a * a_l) / b
        du_dl = (b_l * z + a_l) / d - u * s / d
        dl_dlam = b_l / b + dl_du * du_dl
        # eta: through log c, a, b and the (eta - 2) in q.
        dlogc = 0.5 * float(special.digamma((eta + 1.0) / 2.0) - special.digamma(eta / 2.0)) - (
            0.5 / em2
        )
        a_e = 4.0 * lam * c * (dlogc * em2 / (eta - 1.0) + 1.0 / (eta - 1.0) ** 2)
        b_e = -a * a_e / b
        du_de = (b_e * z + a_e) / d
        dl_deta = (
            b_e / b
            + dlogc
            - 0.5 * np.log1p(q)
            + dl_du * du_de
            + 0.5 * (eta + 1.0) * q / (em2 * (1.0 + q))
        )
        return InnovationTerms(ll=ll, dl_ds=dl_ds, dl_de=dl_de, dl_dshape=(dl_deta, dl_dlam))

    def simulate(
        self, shape: Sequence[float], rng: np.random.Generator, size: tuple[int, int]
    ) -> FloatArray:
        """``F^{-1}(Phi(Z))`` with ``Z`` standard normal: exactly skew-t distributed."""
        return self.from_normal(shape, rng.standard_normal(size=size))

    def from_normal(self, shape: Sequence[float], z: FloatArray) -> FloatArray:
        """Gaussian copula ``F^{-1}(Phi(z))`` by Hansen's inverse CDF.

        ``F(x) = (1 - lambda) T(y)`` below the mode point ``-a/b`` and
        ``1 - (1 + lambda) T(-y)`` above, ``T`` the Student-t(eta) CDF and
        ``y = (b x + a) / (1 -/+ lambda) sqrt(eta / (eta - 2))``. Each branch is inverted
        from its own tail probability (``Phi(z)`` below, ``Phi(-z)`` above) so neither tail
        rounds to 0 or 1; ``|z|`` is capped at 37 as in :class:`StudentT`.
        """
        eta, lam = shape
        _, a, b = _skewt_constants(eta, lam)
        z = np.clip(np.asarray(z, dtype=np.float64), -_MAX_ABS_Z, _MAX_ABS_Z)
        lower = special.ndtr(z)
        upper = special.ndtr(-z)
        below = lower < 0.5 * (1.0 - lam)
        y = np.where(
            below,
            _t_lower_quantile(eta, np.where(below, lower, 0.5) / (1.0 - lam)),
            -_t_lower_quantile(eta, np.where(below, 0.5, upper) / (1.0 + lam)),
        )
        d = np.where(below, 1.0 - lam, 1.0 + lam)
        out: FloatArray = (y * d * math.sqrt((eta - 2.0) / eta) - a) / b
        return out

    def negative_moment(self, shape: Sequence[float]) -> float:
        """``E[eps**2 1{eps < 0}]`` by quadrature of the density (cached per shape)."""
        return _skewt_negative_moment(float(shape[0]), float(shape[1]))

    def pdf(self, shape: Sequence[float], x: FloatArray) -> FloatArray:
        """Density of the unit-variance skewed t at ``x``."""
        terms = self.loglikelihood(shape, np.asarray(x, dtype=np.float64), np.ones(np.shape(x)))
        out: FloatArray = np.exp(terms.ll)
        return out


@functools.lru_cache(maxsize=256)
def _skewt_negative_moment(eta: float, lam: float) -> float:
    part = SkewT()

    def integrand(x: float) -> float:
        return x * x * float(part.pdf((eta, lam), np.array([x]))[0])

    # The mode point -a/b splits the two branches of the density (a kink in f').
    _, a, b = _skewt_constants(eta, lam)
    kink = min(-a / b, 0.0)
    value = integrate.quad(integrand, -np.inf, kink)[0]
    if kink < 0.0:
        value += integrate.quad(integrand, kink, 0.0)[0]
    return float(value)


#: Innovation laws by their ``dist`` name.
INNOVATIONS: dict[str, Innovation] = {part.name: part for part in (Normal(), StudentT(), SkewT())}
