"""Mean reversion: an Ornstein-Uhlenbeck process on the log price (exponential OU).

``X = log S``, ``dX = kappa (log theta - X) dt + sigma dW`` with annualised speed ``kappa``,
long-run level ``theta`` (in price units: ``X`` reverts to ``log theta``) and volatility
``sigma``; ``dt`` in years. Its exact discretisation is a Gaussian AR(1)
(Vasicek 1977; Glasserman 2003, §3.3.1)::

    X_{t+1} = c + phi X_t + eps_t,   phi = exp(-kappa dt),   c = (1 - phi) log theta,
    eps_t ~ N(0, s2),                s2 = sigma^2 (1 - phi^2) / (2 kappa).

so the conditional maximum-likelihood fit is the OLS regression of ``X_{t+1}`` on
``(1, X_t)`` (Hamilton 1994, §5.2) mapped back to ``(kappa, theta, sigma)``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.signal import lfilter

from quoteflow.errors import DataError
from quoteflow.models._stepper import PathStepper
from quoteflow.models._validation import (
    check_dt,
    check_gap,
    check_shocks,
    check_sim_args,
    initial_prices,
)
from quoteflow.models.base import (
    FitResult,
    FloatArray,
    PriceModel,
    require_model,
    validate_prices,
)
from quoteflow.models.limits import (
    MAX_PRICE,
    MAX_STEP_VOL,
    MIN_PRICE,
    param_in_range,
    positive_param,
    step_bound,
)

__all__ = ["MeanReversion", "MeanReversionStepper"]

_LOG_2PI = math.log(2.0 * math.pi)

#: Below this many mean-reversion times (kappa * n * dt) in the sample, kappa is weakly
#: identified and its MLE strongly biased upward (see docs/models.md); the fit says so.
WEAK_IDENTIFICATION_HORIZON = 20.0

#: simulate() switches from lfilter to a loop over steps at this many paths (measured: the
#: loop costs ~1.5 us per step, lfilter ~10 ns per element along a strided axis).
_ROW_LOOP_MIN_PATHS = 256


def _ou_discretisation(kappa: float, sigma: float, dt: float) -> tuple[float, float]:
    """``(phi, sd(eps))`` of the exact AR(1) step of length ``dt`` (Glasserman 2003, eq. 3.46)."""
    phi = math.exp(-kappa * dt)
    # -expm1(-2 kappa dt) = 1 - phi^2 without cancellation for small kappa dt; sigma is
    # kept out of the square root so that a huge sigma cannot overflow before the check.
    return phi, sigma * math.sqrt(-math.expm1(-2.0 * kappa * dt) / (2.0 * kappa))


@dataclass(frozen=True)
class MeanReversion(PriceModel):
    """Exponential Ornstein-Uhlenbeck price: ``d log S = kappa (log theta - log S) dt + sigma dW``.

    Parameters
    ----------
    kappa
        Speed of mean reversion per year, ``> 0`` (half-life ``log(2) / kappa`` years).
    theta
        Long-run price level, ``> 0``, in price units (the log price reverts to
        ``log theta``).
    sigma
        Annualised volatility of the log price, ``> 0``.

    Raises
    ------
    ValueError
        If a parameter is not finite or not ``> 0``; the message names it and the range.

    References
    ----------
    Vasicek, O. (1977), "An equilibrium characterization of the term structure",
    *J. Financial Economics* 5(2). Glasserman, P. (2003), *Monte Carlo Methods in Financial
    Engineering*, Springer, §3.3.1. Brigo, D. & Mercurio, F. (2006), *Interest Rate Models*,
    2nd ed., §3.2.1.
    """

    kappa: float
    theta: float
    sigma: float

    name: ClassVar[str] = "meanrev"
    param_names: ClassVar[tuple[str, ...]] = ("kappa", "theta", "sigma")

    def __post_init__(self) -> None:
        for name in self.param_names:
            object.__setattr__(self, name, positive_param("meanrev", name, getattr(self, name)))

    def check_step(self, dt: float, changed: Collection[str] = ()) -> None:
        """Check that steps of ``dt`` years can be simulated (see :mod:`quoteflow.models.limits`).

        Rules: ``theta`` (the long-run price) in ``[MIN_PRICE, MAX_PRICE]``; the standard
        deviation of the exact AR(1) step of the log price,
        ``sigma sqrt((1 - exp(-2 kappa dt)) / (2 kappa))``, at most ``MAX_STEP_VOL``. The
        drift needs no bound: the step contracts the distance to ``log theta``.

        Raises
        ------
        ParameterError
            Naming ``theta`` or ``sigma`` and its allowed range.
        """
        dt = check_dt(dt)
        param_in_range("meanrev", "theta", self.theta, MIN_PRICE, MAX_PRICE)
        _, sd = _ou_discretisation(self.kappa, 1.0, dt)
        step_bound(
            "meanrev",
            "sigma * sqrt((1 - exp(-2 kappa dt)) / (2 kappa))",
            self.sigma * sd,
            MAX_STEP_VOL,
            dt,
            [
                (
                    "sigma",
                    self.sigma,
                    f"0 < sigma <= {MAX_STEP_VOL / sd:.6g} at kappa={self.kappa:g}",
                )
            ],
            changed,
        )

    @property
    def half_life(self) -> float:
        """Half-life of a deviation from ``log theta``, in years: ``log(2) / kappa``."""
        return math.log(2.0) / self.kappa

    @classmethod
    def fit(cls, prices: Any, dt: float = 1 / 252) -> FitResult:
        """Conditional maximum-likelihood fit (exact, closed form) on log prices.

        With ``x = log prices``, ``n`` transitions ``(x_{t-1}, x_t)``, centred sums
        ``Sxx = sum (x_{t-1} - m0)^2`` and ``Sxy = sum (x_{t-1} - m0)(x_t - m1)``:
        ``phi = Sxy / Sxx``, ``c = m1 - phi m0``, ``s2 = mean(residual^2)`` (divided by
        ``n``), the Gaussian AR(1) conditional MLE = OLS (Hamilton 1994, §5.2). Then
        ``kappa = -log(phi) / dt``, ``theta = exp(c / (1 - phi))``,
        ``sigma = sqrt(2 kappa s2 / (1 - phi^2))``.

        The log-likelihood ``-n/2 (log(2 pi s2) + 1)`` is the density of the log returns
        ``r_t = x_t - x_{t-1}`` given ``x_{t-1}`` (the transition density of ``x``; the shift
        by ``x_{t-1}`` has unit Jacobian), the same data GBM and GARCH score.

        Standard errors: the inverse Fisher information of ``(c, phi, s2)`` is
        ``s2 (X'X)^{-1}`` for ``(c, phi)`` with ``X = [1, x_{t-1}]``, and ``2 s2^2 / n`` for
        ``s2``, independent (Hamilton 1994, §5.2 and §8.2), mapped to
        ``(kappa, theta, sigma)`` by the delta method with the Jacobian of the map above.

        Parameters
        ----------
        prices
            1-D array, list or pandas Series of positive prices, at least 30, equally
            spaced in time.
        dt
            Time between two prices in years.

        Returns
        -------
        FitResult
            ``params`` ``{"kappa", "theta", "sigma"}``; ``extra`` holds ``phi``, ``c``,
            ``s2`` (the AR(1) form) and ``half_life`` (years). When ``kappa n dt`` (the
            number of mean-reversion times in the sample, estimated) is below 20, ``notes`` warns that
            kappa is weakly identified and biased upward (see docs/models.md).

        Raises
        ------
        DataError
            (a ``ValueError``) for bad input (NaN, inf, non-positive, constant, too short,
            2-D), and when the data show no mean reversion: ``phi >= 1`` (kappa would be
            ``<= 0``: a random walk or trend, fit GBM instead), ``phi <= 0`` (log price
            anti-correlated step to step, not an OU process) or a long-run level outside
            floating-point range.
        """
        dt = check_dt(dt)
        p = validate_prices(prices)
        x = np.log(p)
        x0, x1 = x[:-1], x[1:]
        n = x0.size
        m0, m1 = float(x0.mean()), float(x1.mean())
        # Centred sums: the raw normal equations lose ~8 digits when log prices sit far
        # from 0 with little spread.
        d0 = x0 - m0
        sxx = float(d0 @ d0)
        if sxx <= 0.0:
            raise DataError("prices are constant except for the last value: nothing to regress")
        phi = float(d0 @ (x1 - m1)) / sxx
        c = m1 - phi * m0
        resid = x1 - c - phi * x0
        s2 = float(resid @ resid) / n
        if not phi < 1.0:
            raise DataError(
                f"no mean reversion detected: AR(1) coefficient of log price phi={phi:.6g} >= 1 "
                "(kappa would be <= 0); these prices look like a random walk or a trend: "
                "fit GBM instead"
            )
        if not phi > 0.0:
            raise DataError(
                f"log price is negatively autocorrelated (phi={phi:.6g} <= 0): not a "
                "mean-reverting diffusion sampled at this dt; fit GBM, or check dt and the data"
            )
        if s2 <= 0.0:
            raise DataError("log prices follow an exact AR(1) line: residual variance is zero")
        one_m_phi = 1.0 - phi
        log_theta = c / one_m_phi
        if not abs(log_theta) < 700.0:  # exp() overflows at ~709.8
            raise DataError(
                f"implied long-run level exp({log_theta:.4g}) is out of range (phi={phi:.8g} is "
                "too close to 1): no usable mean reversion in these prices, fit GBM instead"
            )
        log_phi = math.log(phi)
        kappa = -log_phi / dt
        theta = math.exp(log_theta)
        # g(phi) = -2 log(phi) / (1 - phi^2), so sigma^2 = s2 g(phi) / dt.
        one_m_phi2 = one_m_phi * (1.0 + phi)
        g = -2.0 * log_phi / one_m_phi2
        sigma = math.sqrt(s2 * g / dt)

        # Inverse Fisher information of (c, phi, s2) (Hamilton 1994, §5.2 / §8.2).
        var_phi = s2 / sxx
        cov = np.zeros((3, 3))
        cov[0, 0] = s2 / n + m0 * m0 * var_phi
        cov[0, 1] = cov[1, 0] = -m0 * var_phi
        cov[1, 1] = var_phi
        cov[2, 2] = 2.0 * s2 * s2 / n
        # Jacobian of (kappa, theta, sigma) with respect to (c, phi, s2).
        dg_dphi = (-2.0 / phi * one_m_phi2 - 4.0 * phi * log_phi) / one_m_phi2**2
        jac = np.array(
            [
                [0.0, -1.0 / (phi * dt), 0.0],
                [theta / one_m_phi, theta * log_theta / one_m_phi, 0.0],
                [0.0, sigma * dg_dphi / (2.0 * g), sigma / (2.0 * s2)],
            ]
        )
        var = np.diag(jac @ cov @ jac.T)
        se = np.sqrt(np.maximum(var, 0.0))

        loglik = -0.5 * n * (_LOG_2PI + math.log(s2) + 1.0)
        horizon = kappa * n * dt
        notes: tuple[str, ...] = ()
        if horizon < WEAK_IDENTIFICATION_HORIZON:
            notes = (
                f"kappa is weakly identified: the sample spans only kappa*n*dt = {horizon:.3g} "
                "mean-reversion times; the kappa estimate is biased upward by about "
                f"4/(n dt) = {4.0 / (n * dt):.3g}/year or more (see docs/models.md)",
            )
        model = cls(kappa=kappa, theta=theta, sigma=sigma)
        return FitResult(
            model=model,
            params={"kappa": kappa, "theta": theta, "sigma": sigma},
            std_err={"kappa": float(se[0]), "theta": float(se[1]), "sigma": float(se[2])},
            loglik=loglik,
            nobs=n,
            converged=True,
            dt=dt,
            notes=notes,
            extra={"phi": phi, "c": c, "s2": s2, "half_life": model.half_life},
            std_resid=resid / math.sqrt(s2),
        )

    def simulate(
        self,
        n_steps: int,
        n_paths: int = 1,
        s0: float = 100.0,
        dt: float = 1 / 252,
        seed: int | np.random.Generator | None = None,
    ) -> FloatArray:
        """Simulate paths with the exact AR(1) transition of the log price.

        ``Y_t = log S_t - log theta`` follows ``Y_{t+1} = phi Y_t + sd Z_t`` exactly
        (Glasserman 2003, eq. 3.46), run for all paths at once along the time axis with an
        IIR filter (``scipy.signal.lfilter``; for many paths a loop over steps, vectorised across paths), started at ``Y_0 = log(s0 / theta)``.

        Parameters
        ----------
        n_steps
            Number of steps after the start.
        n_paths
            Number of independent paths.
        s0
            Start price (or one per path).
        dt
            Step length in years.
        seed
            ``int``, ``numpy.random.Generator`` or ``None``; same seed, same paths.

        Returns
        -------
        ndarray
            Shape ``(n_steps + 1, n_paths)``, first row ``s0``.
        """
        n_steps, n_paths, dt = check_sim_args(self, n_steps, n_paths, dt)
        start = initial_prices(s0, n_paths)
        rng = np.random.default_rng(seed)
        phi, sd = _ou_discretisation(self.kappa, self.sigma, dt)
        log_theta = math.log(self.theta)
        out = np.empty((n_steps + 1, n_paths), dtype=np.float64)
        out[0] = start
        if n_steps == 0:
            return out
        y = rng.standard_normal((n_steps, n_paths))
        y *= sd
        y0 = np.log(start) - log_theta
        if n_paths >= _ROW_LOOP_MIN_PATHS:
            # Many paths: a Python loop over steps, each a vector op across paths, beats
            # lfilter, which would filter one strided column at a time (~6x slower here).
            y[0] += phi * y0
            tmp = np.empty(n_paths)
            for t in range(1, n_steps):
                np.multiply(y[t - 1], phi, out=tmp)
                y[t] += tmp
        else:
            # Few paths: filter each path's contiguous row of the transpose in C.
            # lfilter's zi is the state before the first sample: y_1 = phi y_0 + u_1.
            y = lfilter([1.0], [1.0, -phi], y.T, axis=-1, zi=(phi * y0)[:, np.newaxis])[0].T
        y += log_theta
        np.exp(y, out=out[1:])
        return out

    def stepper(self, s0: float | FloatArray, dt: float) -> MeanReversionStepper:
        """Streaming state for ``len(s0)`` paths (see :class:`MeanReversionStepper`)."""
        return MeanReversionStepper(self, s0, dt)


class MeanReversionStepper(PathStepper[MeanReversion]):
    """Exact one-step update of the log price ``x <- log theta + phi (x - log theta) + sd z``.

    Parameters
    ----------
    model
        The model to follow (changeable later with :meth:`set_model`).
    s0
        Start price(s); one path per price.
    dt
        Step length in years.
    """

    def set_model(self, model: PriceModel) -> None:
        """Use ``model``'s parameters from the next step on (current prices are kept)."""
        model = require_model(self, model, MeanReversion)
        phi, sd = _ou_discretisation(model.kappa, model.sigma, self.dt)
        # One tuple assignment: a concurrent step() sees old or new parameters, never a mix.
        self._state: tuple[MeanReversion, float, float, float] = (
            model,
            phi,
            sd,
            math.log(model.theta),
        )

    def step(self, z: FloatArray) -> FloatArray:
        """Advance every path one step with standard-normal shocks ``z``; return new prices."""
        _, phi, sd, log_theta = self._state
        shocks = check_shocks(z, self.prices.size)
        # The state is read from .prices each step (not cached in log space) so a caller that
        # resets .prices is honoured; the exp/log round trip costs ~1 ulp per step.
        y = np.log(self.prices) - log_theta
        self.prices = np.exp(log_theta + phi * y + sd * shocks)
        return self.prices

    def gap(self, z: FloatArray, tau: float) -> FloatArray:
        """The exact AR(1) move of the log price over ``tau`` years.

        ``x' = log theta + exp(-kappa tau) (x - log theta) + sd z`` with
        ``sd**2 = sigma**2 (1 - exp(-2 kappa tau)) / (2 kappa)`` (Glasserman 2003,
        eq. 3.46): the log-return variance of the gap, given the current price.
        """
        model, _, _, log_theta = self._state
        phi, sd = _ou_discretisation(model.kappa, model.sigma, check_gap(tau))
        shocks = check_shocks(z, self.prices.size)
        y = np.log(self.prices) - log_theta
        self.prices = np.exp(log_theta + phi * y + sd * shocks)
        return self.prices
