"""Merton jump-diffusion: geometric Brownian motion plus compound Poisson jumps.

``d log S = (mu - sigma^2 / 2 - lambda kappa) dt + sigma dW + J dN`` with a Poisson process
``N`` of intensity ``lambda`` per year and i.i.d. normal log jump sizes
``J ~ N(jump_mean, jump_sd^2)``; ``kappa = E[e^J] - 1 = exp(jump_mean + jump_sd^2 / 2) - 1``
compensates the drift so that ``E[S_t] = S_0 exp(mu t)`` as for GBM (Merton 1976).

A log return over ``dt`` is, given ``k`` jumps, normal with mean
``m + k jump_mean`` (``m = (mu - sigma^2 / 2 - lambda kappa) dt``) and variance
``sigma^2 dt + k jump_sd^2``, and ``k ~ Poisson(lambda dt)``: its density is a Poisson
mixture of normals (Press 1967; Merton 1976, eq. 16),

    f(r) = sum_k  e^{-lambda dt} (lambda dt)^k / k!  phi(r; m + k jump_mean, sigma^2 dt + k jump_sd^2).

The sum is truncated at ``K`` jumps per step, the smallest ``K`` with
``P(N > K) <= 1e-12`` (``N ~ Poisson(lambda dt)``). Every omitted term is a probability
weight times a normal density no larger than ``1 / sqrt(2 pi sigma^2 dt)``, so the
truncated density is below the exact one by at most ``P(N > K) / sqrt(2 pi sigma^2 dt)``
(:func:`truncation_bound`), and never above it.

References
----------
Merton, R. C. (1976), "Option pricing when underlying stock returns are discontinuous",
*J. Financial Economics* 3, 125-144. Press, S. J. (1967), "A compound events model for
security prices", *J. Business* 40(3), 317-335. Ball, C. A. & Torous, W. N. (1983),
"A simplified jump process for common stock returns", *JFQA* 18(1) (MLE of the mixture).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special, stats

from quoteflow.errors import ParameterError
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
    param_in_range,
    positive_param,
    step_bound,
)

__all__ = ["MertonJump", "MertonJumpConvergenceWarning", "MertonJumpStepper", "truncation_bound"]

#: Omitted Poisson tail mass of the truncated mixture (see the module docstring).
TAIL_MASS = 1e-12
#: Largest jump intensity per year (one jump a minute of a 252-day year is ~1e5).
MAX_INTENSITY = 1e5
#: Largest log jump size scale (a jump of e^5 is a 148-fold move).
MAX_JUMP = 5.0
_LOG_2PI = math.log(2.0 * math.pi)


class MertonJumpConvergenceWarning(RuntimeWarning):
    """The MertonJump MLE did not converge, or ended on a bound of the parameter space."""


def jumps_to_keep(lam_dt: float, tail: float = TAIL_MASS) -> int:
    """The smallest ``K`` with ``P(N > K) <= tail`` for ``N ~ Poisson(lam_dt)``."""
    if lam_dt <= 0.0:
        return 0
    k = int(stats.poisson.isf(tail, lam_dt))
    while stats.poisson.sf(k, lam_dt) > tail:
        k += 1
    return max(k, 1)


def truncation_bound(lam_dt: float, sigma2_dt: float, k: int) -> float:
    """Upper bound of ``f(r) - f_K(r)`` for every ``r``: ``P(N > K) / sqrt(2 pi sigma^2 dt)``."""
    return float(stats.poisson.sf(k, lam_dt)) / math.sqrt(2.0 * math.pi * sigma2_dt)


def _components(
    mu: float, sigma: float, lam: float, jm: float, js: float, dt: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Log weights, means and variances of the truncated mixture over ``dt``."""
    lam_dt = lam * dt
    k = np.arange(jumps_to_keep(lam_dt) + 1, dtype=np.float64)
    kappa = math.expm1(jm + 0.5 * js * js)
    drift = (mu - 0.5 * sigma * sigma - lam * kappa) * dt
    if lam_dt > 0.0:
        logw = -lam_dt + k * math.log(lam_dt) - special.gammaln(k + 1.0)
    else:  # no jumps: the diffusion alone (K = 0)
        logw = np.zeros(1)
    return logw, drift + k * jm, sigma * sigma * dt + k * js * js


def _mixture(
    r: FloatArray, theta: FloatArray, dt: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(log c_tk, log f_t, r_t - m_k, v_k)``: the log mixture terms of every observation
    and component, their log sum, and the deviations and variances they were made of."""
    mu, sigma, lam, jm, js = (float(v) for v in theta)
    logw, mean, var = _components(mu, sigma, lam, jm, js, dt)
    dev = r[:, None] - mean[None, :]
    comp = logw[None, :] - 0.5 * (_LOG_2PI + np.log(var)[None, :] + dev * dev / var[None, :])
    return comp, special.logsumexp(comp, axis=1), dev, var


def _loglik_terms(r: FloatArray, theta: FloatArray, dt: float) -> FloatArray:
    """Per-observation log densities at natural parameters ``(mu, sigma, lam, jm, js)``."""
    return _mixture(r, theta, dt)[1]


def _loglik_and_gradient(r: FloatArray, theta: FloatArray, dt: float) -> tuple[float, FloatArray]:
    """Log-likelihood and its gradient in the natural parameters ``(mu, sigma, lam, jm, js)``.

    With ``c_k`` the mixture terms, ``p_k = c_k / f`` (the posterior jump-count weights),
    ``d = r - m_k``, ``v_k = sigma^2 dt + k js^2``: ``dl/dm_k = d / v_k`` and
    ``dl/dv_k = (d^2 / v_k - 1) / (2 v_k)``, chained through
    ``m_k = (mu - sigma^2/2 - lam kappa) dt + k jm`` and ``log w_k = -lam dt + k log(lam dt) - log k!``.
    """
    _, sigma, lam, jm, js = (float(v) for v in theta)
    comp, ll_t, dev, var = _mixture(r, theta, dt)
    k = np.arange(var.size, dtype=np.float64)
    post = np.exp(comp - ll_t[:, None])
    g_m = post * (dev / var[None, :])
    g_v = post * (0.5 * (dev * dev / var[None, :] - 1.0) / var[None, :])
    kappa1 = math.exp(jm + 0.5 * js * js)  # kappa + 1
    sm, sv = g_m.sum(), g_v.sum()
    grad = np.array(
        [
            sm * dt,
            sm * (-sigma * dt) + sv * (2.0 * sigma * dt),
            (post @ (k / lam - dt)).sum() - sm * (kappa1 - 1.0) * dt
            if lam > 0.0
            else -sm * (kappa1 - 1.0) * dt,
            (g_m @ k).sum() - sm * lam * dt * kappa1,
            -sm * lam * dt * js * kappa1 + (g_v @ k).sum() * 2.0 * js,
        ]
    )
    return float(ll_t.sum()), grad


def _to_natural(u: FloatArray) -> FloatArray:
    """Unconstrained ``(mu, log sigma, log lam, jm, log js)`` -> natural parameters."""
    return np.array([u[0], math.exp(u[1]), math.exp(u[2]), u[3], math.exp(u[4])])


@dataclass(frozen=True)
class MertonJump(PriceModel):
    """Merton (1976) jump-diffusion: GBM plus compound Poisson jumps with normal log sizes.

    Parameters
    ----------
    mu
        Annualised drift of the price (``E[S_t] = S_0 exp(mu t)``, jumps compensated).
    sigma
        Annualised diffusion volatility, ``> 0``.
    lam
        Jump intensity, jumps per year, ``>= 0`` (``lambda`` in ``params()``, TOML and
        ``PUT /symbols``).
    jump_mean, jump_sd
        Mean and standard deviation of the log jump size (``jump_sd > 0``).
    """

    mu: float
    sigma: float
    lam: float
    jump_mean: float
    jump_sd: float

    name: ClassVar[str] = "merton"
    param_names: ClassVar[tuple[str, ...]] = ("mu", "sigma", "lambda", "jump_mean", "jump_sd")
    param_aliases: ClassVar[dict[str, str]] = {"lambda": "lam"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", finite_param("merton", "mu", self.mu))
        object.__setattr__(self, "sigma", positive_param("merton", "sigma", self.sigma))
        object.__setattr__(
            self, "lam", param_in_range("merton", "lambda", self.lam, 0.0, MAX_INTENSITY)
        )
        object.__setattr__(
            self,
            "jump_mean",
            param_in_range("merton", "jump_mean", self.jump_mean, -MAX_JUMP, MAX_JUMP),
        )
        object.__setattr__(self, "jump_sd", positive_param("merton", "jump_sd", self.jump_sd))
        if self.jump_sd > MAX_JUMP:
            raise ParameterError(
                "jump_sd",
                f"merton: parameter jump_sd must be in (0, {MAX_JUMP:g}], got {self.jump_sd!r}",
            )

    @property
    def kappa(self) -> float:
        """``E[e^J] - 1``, the mean relative jump (the drift compensator per jump)."""
        return math.expm1(self.jump_mean + 0.5 * self.jump_sd**2)

    def check_step(self, dt: float, changed: Collection[str] = ()) -> None:
        """The GBM rules on the diffusion part (``|mu - lambda kappa| dt <= MAX_STEP_DRIFT``,
        ``sigma sqrt(dt) <= MAX_STEP_VOL``, :mod:`quoteflow.models.limits`) and
        ``lambda dt <= 50`` (the mixture is summed term by term)."""
        dt = check_dt(dt)
        drift = abs(self.mu - self.lam * self.kappa) * dt
        step_bound(
            "merton",
            "|mu - lambda kappa| * dt",
            drift,
            MAX_STEP_DRIFT,
            dt,
            [("mu", self.mu, f"|mu - lambda kappa| <= {MAX_STEP_DRIFT / dt:.6g}"),
             ("lambda", self.lam, "a smaller jump intensity")],
            changed,
        )  # fmt: skip
        step_bound(
            "merton",
            "sigma * sqrt(dt)",
            self.sigma * math.sqrt(dt),
            MAX_STEP_VOL,
            dt,
            [("sigma", self.sigma, f"0 < sigma <= {MAX_STEP_VOL / math.sqrt(dt):.6g}")],
            changed,
        )
        step_bound(
            "merton",
            "lambda * dt",
            self.lam * dt,
            50.0,
            dt,
            [("lambda", self.lam, f"0 <= lambda <= {50.0 / dt:.6g}")],
            changed,
        )

    # -- distribution of one step --------------------------------------------------------

    def logpdf(self, r: Any, dt: float = 1 / 252) -> FloatArray:
        """Log density of a log return over ``dt`` (the truncated mixture)."""
        theta = np.array([self.mu, self.sigma, self.lam, self.jump_mean, self.jump_sd])
        return _loglik_terms(np.atleast_1d(np.asarray(r, dtype=np.float64)), theta, check_dt(dt))

    def _cdf_table(self, tau: float) -> tuple[FloatArray, FloatArray]:
        """``(x, F(x))`` of the log return over ``tau`` on a grid of 8193 points covering
        the mixture's components to 12 of their standard deviations."""
        logw, mean, var = _components(
            self.mu, self.sigma, self.lam, self.jump_mean, self.jump_sd, tau
        )
        sd = np.sqrt(var)
        lo = float(np.min(mean - 12.0 * sd))
        hi = float(np.max(mean + 12.0 * sd))
        x = np.linspace(lo, hi, 8193)
        w = np.exp(logw - special.logsumexp(logw))
        cdf = (w[None, :] * special.ndtr((x[:, None] - mean[None, :]) / sd[None, :])).sum(axis=1)
        return x, np.maximum.accumulate(cdf)

    def log_return_from_normal(self, z: FloatArray, tau: float) -> FloatArray:
        """Log returns over ``tau`` with the MertonJump law, from standard normals ``z`` through
        the normal CDF and the mixture's inverse CDF (a Gaussian copula, as the market
        correlates every model's shocks; docs/market.md). Exact up to the grid's linear
        interpolation (8193 points over +-12 component sds)."""
        x, cdf = self._cdf_table(tau)
        u = special.ndtr(np.asarray(z, dtype=np.float64))
        out: FloatArray = np.interp(u, cdf, x)
        return out

    # -- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(cls, prices: Any, dt: float = 1 / 252, *, max_iter: int = 500) -> FitResult:
        """Exact maximum likelihood on the log returns (the truncated Poisson mixture).

        The optimiser (L-BFGS-B) works on ``(mu, log sigma, log lambda, jump_mean,
        log jump_sd)``; it starts from the best of a grid over ``lambda`` (the likelihood
        has several local optima: few large jumps or many small ones), with ``sigma``
        from the median absolute deviation of the returns (robust to the jumps) and the
        jump variance from the excess variance. Standard errors: the inverse observed
        information (numerical Hessian of the log-likelihood at the estimate, in the
        natural parameters).

        Raises
        ------
        DataError
            Unusable prices (NaN, non-positive, too short, constant returns).
        """
        dt = check_dt(dt)
        p = validate_prices(prices)
        r = np.diff(np.log(p))
        n = r.size
        var = float(np.var(r))
        if var <= 0.0:
            raise ValueError("merton: the log returns have zero variance; nothing to fit")
        mad_sd = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        diff_var = max(min(mad_sd**2, var), 1e-4 * var)
        sigma0 = math.sqrt(diff_var / dt)
        mean_r = float(np.mean(r))

        def objective(u: FloatArray) -> float:
            theta = _to_natural(u)
            with np.errstate(all="ignore"):
                ll = float(np.sum(_loglik_terms(r, theta, dt)))
            return -ll if math.isfinite(ll) else 1e300

        def objective_and_gradient(u: FloatArray) -> tuple[float, FloatArray]:
            theta = _to_natural(u)
            with np.errstate(all="ignore"):
                ll, g = _loglik_and_gradient(r, theta, dt)
            if not (math.isfinite(ll) and np.all(np.isfinite(g))):
                return 1e300, np.zeros(5)
            # d/du: the log-parametrised ones times their value.
            return -ll, -g * np.array([1.0, theta[1], theta[2], 1.0, theta[4]])

        starts = []
        for lam_dt in (0.01, 0.03, 0.1, 0.3):
            jump_var = max(var - diff_var, 0.05 * var) / lam_dt
            lam0 = lam_dt / dt
            u0 = np.array(
                [mean_r / dt + 0.5 * sigma0**2, math.log(sigma0), math.log(lam0), 0.0,
                 0.5 * math.log(jump_var)]
            )  # fmt: skip
            starts.append((objective(u0), u0))
        u_start = min(starts, key=lambda s: s[0])[1]
        bounds = [
            (None, None),
            (math.log(1e-4), math.log(MAX_STEP_VOL / math.sqrt(dt))),
            (math.log(1e-3), math.log(min(MAX_INTENSITY, 50.0 / dt))),
            (-MAX_JUMP, MAX_JUMP),
            (math.log(1e-5), math.log(MAX_JUMP)),
        ]
        opt = optimize.minimize(
            objective_and_gradient, u_start, jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9},
        )  # fmt: skip
        u = np.asarray(opt.x, dtype=np.float64)
        theta = _to_natural(u)
        notes: list[str] = []
        converged = bool(opt.success)
        on_bound = [
            name
            for name, val, (lo, hi) in zip(cls.param_names, u, bounds, strict=True)
            if (lo is not None and val - lo < 1e-6) or (hi is not None and hi - val < 1e-6)
        ]
        if not converged or on_bound:
            msg = (
                f"MertonJump fit did not converge: {opt.message}"
                if not converged
                else f"MertonJump fit ended on a bound of {', '.join(on_bound)}: the jumps are not "
                "identified in this data (too few, or indistinguishable from the diffusion)"
            )
            warnings.warn(msg, MertonJumpConvergenceWarning, stacklevel=2)
            notes.append(msg)
            converged = converged and not on_bound
        terms = _loglik_terms(r, theta, dt)
        loglik = float(np.sum(terms))
        std_err = _observed_information_se(r, theta, dt)
        k = jumps_to_keep(theta[2] * dt)
        bound = truncation_bound(theta[2] * dt, theta[1] ** 2 * dt, k)
        notes.append(
            f"density truncated at {k} jumps per step: omitted Poisson mass <= {TAIL_MASS:g}, "
            f"density error <= {bound:.2e}"
        )
        model = cls(*(float(v) for v in theta))
        params = dict(zip(cls.param_names, (float(v) for v in theta), strict=True))
        # Standardised residuals: the probability integral transform mapped to normal
        # scores (iid N(0, 1) when the model is right; the mixture is not a scale family).
        x, cdf = model._cdf_table(dt)
        u_pit = np.clip(np.interp(r, x, cdf), 1e-15, 1 - 1e-15)
        return FitResult(
            model=model,
            params=params,
            std_err=dict(zip(cls.param_names, std_err, strict=True)),
            loglik=loglik,
            nobs=n,
            converged=converged,
            dt=dt,
            notes=tuple(notes),
            extra={"iterations": int(opt.nit), "jumps_kept": k, "truncation_bound": bound,
                   "jumps_per_year": float(theta[2])},
            std_resid=special.ndtri(u_pit),
        )  # fmt: skip

    # -- simulation and streaming ---------------------------------------------------------

    def simulate(
        self,
        n_steps: int,
        n_paths: int = 1,
        s0: float = 100.0,
        dt: float = 1 / 252,
        seed: int | np.random.Generator | None = None,
    ) -> FloatArray:
        """Exact paths: per step a normal diffusion move, a Poisson number of jumps and
        their summed normal sizes (given ``k`` jumps the sum is ``N(k jump_mean, k jump_sd^2)``)."""
        n_steps, n_paths, dt = check_sim_args(self, n_steps, n_paths, dt)
        start = initial_prices(s0, n_paths)
        rng = np.random.default_rng(seed)
        shape = (n_steps, n_paths)
        drift = (self.mu - 0.5 * self.sigma**2 - self.lam * self.kappa) * dt
        z = rng.standard_normal(shape)
        k = rng.poisson(self.lam * dt, shape)
        jumps = k * self.jump_mean + np.sqrt(k) * self.jump_sd * rng.standard_normal(shape)
        out = np.empty((n_steps + 1, n_paths))
        out[0] = np.log(start)
        out[1:] = drift + self.sigma * math.sqrt(dt) * z + jumps
        np.cumsum(out, axis=0, out=out)
        np.exp(out, out=out)
        out[0] = start
        return out

    def stepper(self, s0: float | FloatArray, dt: float) -> MertonJumpStepper:
        """Streaming state for ``len(s0)`` paths (see :class:`MertonJumpStepper`)."""
        return MertonJumpStepper(self, s0, dt)


def _observed_information_se(r: FloatArray, theta: FloatArray, dt: float) -> list[float]:
    """Square roots of the diagonal of the inverse observed information: the negative
    Hessian of the log-likelihood, by central differences of its analytic gradient (step
    1e-5 relative); NaN where it is not positive definite."""
    k = theta.size
    h = 1e-5 * np.maximum(np.abs(theta), np.array([0.1, 0.01, 1.0, 0.01, 0.01]))
    hess = np.empty((k, k))
    for j in range(k):
        up, down = theta.copy(), theta.copy()
        up[j] += h[j]
        down[j] -= h[j]
        hess[:, j] = (_loglik_and_gradient(r, up, dt)[1] - _loglik_and_gradient(r, down, dt)[1]) / (
            2.0 * h[j]
        )
    hess = 0.5 * (hess + hess.T)
    try:
        cov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        return [math.nan] * k
    return [math.sqrt(v) if v > 0 else math.nan for v in np.diag(cov)]


class MertonJumpStepper(PathStepper[MertonJump]):
    """One step ``S <- S exp(r)`` with ``r`` drawn from the MertonJump law by the inverse CDF of
    the market's standard-normal shock (so correlation and the market's seed carry over)."""

    def set_model(self, model: PriceModel) -> None:
        model = require_model(self, model, MertonJump)
        x, cdf = model._cdf_table(self.dt)
        self._state: tuple[MertonJump, FloatArray, FloatArray] = (model, x, cdf)

    def step(self, z: FloatArray) -> FloatArray:
        _, x, cdf = self._state
        shocks = check_shocks(z, self.prices.size)
        self.prices = self.prices * np.exp(np.interp(special.ndtr(shocks), cdf, x))
        return self.prices

    def gap(self, z: FloatArray, tau: float) -> FloatArray:
        """The MertonJump move over a closed period of ``tau`` years, in one draw."""
        shocks = check_shocks(z, self.prices.size)
        tau = check_gap(tau)
        if tau <= 0.0:
            return self.prices
        self.prices = self.prices * np.exp(self.model.log_return_from_normal(shocks, tau))
        return self.prices
