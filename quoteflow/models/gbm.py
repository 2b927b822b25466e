"""Geometric Brownian motion: the Black-Scholes price model.

``d log S = (mu - sigma^2 / 2) dt + sigma dW`` with annualised ``mu`` (drift of the price,
``E[S_t] = S_0 exp(mu t)``) and ``sigma`` (volatility), ``dt`` in years (Black & Scholes
1973; Glasserman 2003, *Monte Carlo Methods in Financial Engineering*, §3.2).

The log returns ``r_i = log S_i - log S_{i-1}`` of prices sampled every ``dt`` are i.i.d.
``N((mu - sigma^2/2) dt, sigma^2 dt)``, so the exact maximum-likelihood fit is closed form.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

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
    MAX_STEP_DRIFT,
    MAX_STEP_VOL,
    finite_param,
    positive_param,
    step_bound,
)

__all__ = ["GBM", "GBMStepper"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GBM(PriceModel):
    """Geometric Brownian motion ``d log S = (mu - sigma^2/2) dt + sigma dW``.

    Parameters
    ----------
    mu
        Annualised drift of the price (``E[S_t] = S_0 exp(mu t)``), any finite real.
    sigma
        Annualised volatility, ``> 0``.

    Raises
    ------
    ValueError
        If a parameter is not finite or ``sigma <= 0``; the message names it and the range.

    References
    ----------
    Black, F. & Scholes, M. (1973), "The pricing of options and corporate liabilities",
    *J. Political Economy* 81(3). Glasserman, P. (2003), *Monte Carlo Methods in Financial
    Engineering*, Springer, §3.2.
    """

    mu: float
    sigma: float

    name: ClassVar[str] = "gbm"
    param_names: ClassVar[tuple[str, ...]] = ("mu", "sigma")

    def __post_init__(self) -> None:
        # Frozen dataclass: coerce numpy scalars/ints to plain floats so params() is JSON-safe.
        object.__setattr__(self, "mu", finite_param("gbm", "mu", self.mu))
        object.__setattr__(self, "sigma", positive_param("gbm", "sigma", self.sigma))

    def check_step(self, dt: float, changed: Collection[str] = ()) -> None:
        """Check that steps of ``dt`` years can be simulated (see :mod:`quoteflow.models.limits`).

        Rules: ``|mu| dt <= MAX_STEP_DRIFT`` and ``sigma sqrt(dt) <= MAX_STEP_VOL`` (both 1:
        one e-fold of the price per step).

        Raises
        ------
        ParameterError
            Naming ``mu`` or ``sigma`` and its allowed range at this ``dt``.
        """
        dt = check_dt(dt)
        mu_max = MAX_STEP_DRIFT / dt
        step_bound(
            "gbm",
            "|mu| * dt",
            abs(self.mu) * dt,
            MAX_STEP_DRIFT,
            dt,
            [("mu", self.mu, f"|mu| <= {mu_max:.6g}")],
            changed,
        )
        sigma_max = MAX_STEP_VOL / math.sqrt(dt)
        step_bound(
            "gbm",
            "sigma * sqrt(dt)",
            self.sigma * math.sqrt(dt),
            MAX_STEP_VOL,
            dt,
            [("sigma", self.sigma, f"0 < sigma <= {sigma_max:.6g}")],
            changed,
        )

    def step_coefficients(self, dt: float) -> tuple[float, float]:
        """``(drift, vol)`` of the exact log step: ``log S' = log S + drift + vol * z``.

        ``drift = mu dt - vol**2 / 2`` and ``vol = sigma sqrt(dt)`` (Glasserman 2003,
        eq. 3.15), computed without squaring ``sigma`` (which overflows before ``vol``
        does). Validates ``dt`` with :meth:`check_step` first.
        """
        self.check_step(dt)
        return self.exact_coefficients(dt)

    def exact_coefficients(self, tau: float) -> tuple[float, float]:
        """``(drift, vol)`` of the exact log move over ``tau >= 0`` years, unchecked.

        ``log S_tau - log S_0 ~ N(drift, vol**2)`` with ``drift = (mu - sigma**2 / 2) tau``
        and ``vol = sigma sqrt(tau)`` (Glasserman 2003, eq. 3.15): what a step and a
        closed-period gap (:meth:`GBMStepper.gap`) both draw from.
        """
        vol = self.sigma * math.sqrt(tau)
        return self.mu * tau - 0.5 * vol * vol, vol

    @classmethod
    def fit(cls, prices: Any, dt: float = 1 / 252) -> FitResult:
        """Exact maximum-likelihood fit on the log returns of ``prices``.

        With ``r_i = log S_i - log S_{i-1}`` (``i = 1..n``), ``m = mean(r)`` and
        ``s2 = mean((r - m)^2)`` (the MLE, divided by ``n``):
        ``sigma^2 = s2 / dt`` and ``mu = m / dt + sigma^2 / 2``.

        The log-likelihood is the Gaussian log-density of the log returns,
        ``loglik = -n/2 (log(2 pi s2) + 1)`` (no Jacobian to prices), the same data every
        quoteflow model scores, so AIC/BIC are comparable across models.

        Standard errors come from the inverse Fisher information of ``(m, s2)``:
        ``var(m) = s2/n``, ``var(s2) = 2 s2^2/n``, independent (Hamilton 1994, §5.2), mapped
        by the delta method: ``se(sigma) = sigma / sqrt(2n)`` and
        ``se(mu) = sqrt(s2/n (1 + s2/2)) / dt``.

        Parameters
        ----------
        prices
            1-D array, list or pandas Series of positive prices, at least 30, equally
            spaced in time.
        dt
            Time between two prices in years (1/252 for trading days).

        Returns
        -------
        FitResult
            ``params`` ``{"mu", "sigma"}`` (annualised), their std errors, ``nobs = n``
            (number of returns).

        Raises
        ------
        DataError
            (a ``ValueError``) for NaN, inf, non-positive, constant, too short or 2-D input.

        References
        ----------
        Hamilton, J. D. (1994), *Time Series Analysis*, Princeton, §5.2 (Gaussian i.i.d.
        MLE); Campbell, Lo & MacKinlay (1997), *The Econometrics of Financial Markets*,
        §9.3.2 (MLE of GBM from log returns).
        """
        dt = check_dt(dt)
        p = validate_prices(prices)
        r = np.diff(np.log(p))
        n = r.size
        m = float(r.mean())
        s2 = float(np.mean((r - m) ** 2))
        if s2 <= 0.0:
            # validate_prices rejects constant prices; constant *returns* (exact exponential
            # growth) still leave no variance to estimate.
            raise ValueError("prices grow at a constant rate: log returns have zero variance")
        sigma2 = s2 / dt
        sigma = math.sqrt(sigma2)
        mu = m / dt + sigma2 / 2.0
        se_sigma = sigma / math.sqrt(2.0 * n)
        se_mu = math.sqrt(s2 / n * (1.0 + s2 / 2.0)) / dt
        loglik = -0.5 * n * (_LOG_2PI + math.log(s2) + 1.0)
        model = cls(mu=mu, sigma=sigma)
        return FitResult(
            model=model,
            params={"mu": mu, "sigma": sigma},
            std_err={"mu": se_mu, "sigma": se_sigma},
            loglik=loglik,
            nobs=n,
            converged=True,
            dt=dt,
            std_resid=(r - m) / math.sqrt(s2),
        )

    def simulate(
        self,
        n_steps: int,
        n_paths: int = 1,
        s0: float = 100.0,
        dt: float = 1 / 252,
        seed: int | np.random.Generator | None = None,
    ) -> FloatArray:
        """Simulate exact GBM paths.

        ``log S_t = log s0 + sum_{j<=t} ((mu - sigma^2/2) dt + sigma sqrt(dt) Z_j)``,
        the exact solution sampled on the grid (Glasserman 2003, eq. 3.15), so there is no
        discretisation error for any ``dt``.

        Parameters
        ----------
        n_steps
            Number of steps after the start.
        n_paths
            Number of independent paths.
        s0
            Start price (or one start price per path).
        dt
            Step length in years.
        seed
            ``int``, ``numpy.random.Generator`` or ``None``; the same seed gives the same
            paths.

        Returns
        -------
        ndarray
            Shape ``(n_steps + 1, n_paths)``, first row ``s0``.
        """
        n_steps, n_paths, dt = check_sim_args(self, n_steps, n_paths, dt)
        start = initial_prices(s0, n_paths)
        rng = np.random.default_rng(seed)
        drift, vol = self.step_coefficients(dt)
        # One preallocated buffer, transformed in place: normals -> log increments ->
        # log prices -> prices. Any full-size temporary would cost as much as the draw itself.
        out = np.empty((n_steps + 1, n_paths), dtype=np.float64)
        out[0] = np.log(start)
        body = out[1:]
        rng.standard_normal(out=body)
        body *= vol
        body += drift
        np.cumsum(out, axis=0, out=out)
        np.exp(out, out=out)
        out[0] = start  # exactly s0, not exp(log(s0))
        return out

    def stepper(self, s0: float | FloatArray, dt: float) -> GBMStepper:
        """Streaming state for ``len(s0)`` paths starting at ``s0`` (see :class:`GBMStepper`)."""
        return GBMStepper(self, s0, dt)


class GBMStepper(PathStepper[GBM]):
    """Exact one-step GBM update ``S <- S exp((mu - sigma^2/2) dt + sigma sqrt(dt) z)``.

    Parameters
    ----------
    model
        The GBM whose dynamics to follow (changeable later with :meth:`set_model`).
    s0
        Start price(s); one path per price.
    dt
        Step length in years.
    """

    def set_model(self, model: PriceModel) -> None:
        """Use ``model``'s parameters from the next step on (current prices are kept)."""
        model = require_model(self, model, GBM)
        drift, vol = model.step_coefficients(self.dt)
        # One tuple assignment: a concurrent step() sees old or new parameters, never a mix.
        self._state: tuple[GBM, float, float] = (model, drift, vol)

    def step(self, z: FloatArray) -> FloatArray:
        """Advance every path one step with standard-normal shocks ``z``; return new prices."""
        _, drift, vol = self._state
        shocks = check_shocks(z, self.prices.size)
        self.prices = self.prices * np.exp(drift + vol * shocks)
        return self.prices

    def gap(self, z: FloatArray, tau: float) -> FloatArray:
        """The exact GBM move over ``tau`` years: log-return variance ``sigma**2 tau``."""
        drift, vol = self.model.exact_coefficients(check_gap(tau))
        shocks = check_shocks(z, self.prices.size)
        self.prices = self.prices * np.exp(drift + vol * shocks)
        return self.prices
