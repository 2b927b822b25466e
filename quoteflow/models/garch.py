"""GARCH(1,1) and GJR-GARCH(1,1,1) on log returns; normal, Student-t or skewed-t innovations.

Model (Bollerslev 1986; Student-t innovations: Bollerslev 1987; asymmetry: Glosten,
Jagannathan & Runkle 1993; skewed t: Hansen 1994), for the scaled log returns
``r_t = scale * (log S_t - log S_{t-1})`` (``scale = 100`` gives percent returns):

    r_t      = mu + e_t,            e_t = sigma_t * eps_t,   eps_t iid, mean 0, variance 1
    sigma2_t = omega + (alpha + gamma * 1{e_{t-1} < 0}) * e_{t-1}**2 + beta * sigma2_{t-1}

``gamma = 0`` is GARCH(1,1) (``o = 0`` in a fit). ``eps_t`` is standard normal, a
Student-t with ``nu > 2`` degrees of freedom rescaled to unit variance, or Hansen's skewed
t with ``eta > 2`` and ``-1 < lambda < 1`` (the field ``lam``: ``lambda`` is a Python
keyword; ``params()`` and the registry call it ``lambda``). The parameters ``mu, omega, alpha, beta`` are *per period of the fit*
(``dt_fit`` years, a trading day by default) and in *scaled-return units*, exactly like
the ``arch`` package, whose estimates this module reproduces (same likelihood, same
backcast of the pre-sample variance, same sandwich standard errors).

Units and time steps. ``model.scale`` says what the returns were multiplied by;
simulated and streamed prices are ``S_t = S_{t-1} exp(r_t / scale)``. A step of length
``dt`` different from ``dt_fit`` spans ``h = dt / dt_fit`` periods; see
:meth:`GARCH.step_coefficients` for how the recursion is mapped to it. At ``dt == dt_fit``
it is the plain recursion above.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from scipy import optimize

from quoteflow.errors import ParameterError
from quoteflow.models._garch_recursion import (
    affine_scan,
    backcast,
    variance_and_gradient,
    variance_filter,
)
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
from quoteflow.models.innovations import INNOVATIONS, Innovation
from quoteflow.models.limits import (
    MAX_SCALE,
    MAX_STEP_DRIFT,
    MAX_STEP_VOL,
    MIN_SCALE,
    finite_param,
    param_in_range,
    positive_param,
    step_bound,
)
from quoteflow.models.means import MEANS as MEAN_PARTS
from quoteflow.models.means import MeanPart

__all__ = ["DISTS", "GARCH", "MEANS", "GARCHConvergenceWarning", "GARCHFitResult", "GARCHStepper"]

#: Innovation distributions (the parts in :data:`quoteflow.models.innovations.INNOVATIONS`).
DISTS: tuple[str, ...] = tuple(INNOVATIONS)
#: Mean models: a constant ``mu`` (estimated) or zero (not estimated).
MEANS: tuple[str, ...] = tuple(MEAN_PARTS)

#: Upper bound of ``alpha + gamma / 2 + beta`` used in estimation. ``arch`` allows ``<= 1``;
#: the model must be covariance stationary (``< 1``) to have an unconditional variance.
_MAX_PERSISTENCE = 1.0 - 1e-6
#: Public names of the shape parameters of some innovation law (``nu``, ``eta``,
#: ``lambda``). A new law's parameter is a field of :class:`GARCH` and a name in its part.
_SHAPE_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(n for part in INNOVATIONS.values() for n in part.parameter_names)
)
#: Asymmetry orders a fit accepts: GARCH(1,1) (``o=0``) and GJR-GARCH(1,1,1) (``o=1``).
ORDERS: tuple[int, ...] = (0, 1)


class GARCHConvergenceWarning(RuntimeWarning):
    """The GARCH optimiser stopped without meeting its convergence criterion."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ParameterError(
            name,
            f"garch: {name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}",
        )
    return value


@dataclass(frozen=True)
class GARCH(PriceModel):
    """GARCH(1,1) price model: log returns with time-varying conditional variance.

    Parameters
    ----------
    mu
        Mean return per period, in scaled units (percent per day with the defaults).
    omega
        Variance intercept per period, scaled units squared, ``> 0``.
    alpha
        ARCH coefficient (reaction to the last squared shock), ``>= 0``.
    beta
        GARCH coefficient (persistence of the last variance), ``>= 0``; the persistence
        ``alpha + kappa gamma + beta < 1`` (covariance stationarity, Bollerslev 1986
        Thm. 1; ``kappa = E[eps**2 1{eps < 0}]``, 1/2 for a symmetric law).
    nu
        Degrees of freedom of the Student-t innovations, ``> 2`` (finite variance); only
        used when ``dist == "t"``.
    dist
        ``"normal"``, ``"t"`` (standardised Student-t, unit variance) or ``"skewt"``
        (Hansen's skewed t, unit variance).
    gamma
        GJR asymmetry: extra reaction to a negative shock (arch's ``gamma[1]``);
        ``alpha + gamma >= 0``. 0 is plain GARCH(1,1).
    eta
        Degrees of freedom of the skewed t, ``> 2``; only used when ``dist == "skewt"``.
    lam
        Skewness ``lambda`` of the skewed t, in ``(-1, 1)`` (negative: longer left tail);
        called ``lambda`` in ``params()``, TOML and ``PUT /symbols``.
    mean
        ``"constant"`` (``mu`` estimated) or ``"zero"`` (``mu`` must be 0).
    scale
        Factor the log returns are multiplied by (100 = percent returns), ``> 0``.
    dt_fit
        Length in years of one period of the parameters (1/252 = a trading day), ``> 0``.

    Raises
    ------
    ValueError
        Naming the parameter and its allowed range.

    References
    ----------
    Bollerslev, T. (1986), "Generalized autoregressive conditional heteroskedasticity",
    *J. Econometrics* 31, 307-327. Bollerslev, T. (1987), "A conditionally heteroskedastic
    time series model for speculative prices and rates of return", *Rev. Econ. Stat.* 69.
    """

    mu: float = 0.05
    omega: float = 0.02
    alpha: float = 0.08
    beta: float = 0.9
    nu: float = 8.0
    dist: str = "normal"
    mean: str = "constant"
    scale: float = 100.0
    dt_fit: float = 1 / 252
    gamma: float = 0.0
    eta: float = 8.0
    lam: float = 0.0

    name: ClassVar[str] = "garch"
    param_names: ClassVar[tuple[str, ...]] = (
        "mu",
        "omega",
        "alpha",
        "gamma",
        "beta",
        "nu",
        "eta",
        "lambda",
    )
    param_aliases: ClassVar[dict[str, str]] = {"lambda": "lam"}

    def __post_init__(self) -> None:
        # Coerce to plain floats (frozen dataclass) so params() is JSON-safe.
        mu = finite_param("garch", "mu", self.mu)
        omega = positive_param("garch", "omega", self.omega)
        alpha = finite_param("garch", "alpha", self.alpha)
        gamma = finite_param("garch", "gamma", self.gamma)
        beta = finite_param("garch", "beta", self.beta)
        nu = finite_param("garch", "nu", self.nu)
        eta = finite_param("garch", "eta", self.eta)
        lam = finite_param("garch", "lambda", self.lam)
        dist = _choice("dist", self.dist, DISTS)
        mean = _choice("mean", self.mean, MEANS)
        scale = param_in_range("garch", "scale", self.scale, MIN_SCALE, MAX_SCALE)
        dt_fit = positive_param("garch", "dt_fit", self.dt_fit)
        if alpha < 0.0:
            raise ParameterError("alpha", f"garch: parameter alpha must be >= 0, got {alpha!r}")
        if beta < 0.0:
            raise ParameterError("beta", f"garch: parameter beta must be >= 0, got {beta!r}")
        if alpha + gamma < 0.0:
            raise ParameterError(
                "gamma",
                f"garch: alpha + gamma must be >= 0 (a negative shock must not lower the "
                f"variance), got alpha={alpha!r} + gamma={gamma!r}",
            )
        shape = self._shape_of(dist, nu=nu, eta=eta, **{"lambda": lam})
        INNOVATIONS[dist].validate(shape)
        kappa = INNOVATIONS[dist].negative_moment(shape)
        if alpha + kappa * gamma + beta >= 1.0:
            what = "alpha + beta" if gamma == 0.0 else f"alpha + {kappa:.4g} gamma + beta"
            raise ParameterError(
                "beta",
                f"garch: {what} must be < 1 (covariance stationarity), got alpha={alpha!r}, "
                f"gamma={gamma!r}, beta={beta!r}: {alpha + kappa * gamma + beta!r}",
            )
        MEAN_PARTS[mean].validate(mu)
        for key, value in (
            ("mu", mu),
            ("omega", omega),
            ("alpha", alpha),
            ("gamma", gamma),
            ("beta", beta),
            ("nu", nu),
            ("eta", eta),
            ("lam", lam),
            ("scale", scale),
            ("dt_fit", dt_fit),
        ):
            object.__setattr__(self, key, value)

    def _shape_of(self, dist: str, **values: float) -> tuple[float, ...]:
        names = INNOVATIONS[dist].parameter_names
        return tuple(
            values[n] if n in values else float(getattr(self, self.field_name(n))) for n in names
        )

    @property
    def innovation(self) -> Innovation:
        """The innovation law (part) named by :attr:`dist`."""
        return INNOVATIONS[self.dist]

    @property
    def mean_part(self) -> MeanPart:
        """The mean part named by :attr:`mean`."""
        return MEAN_PARTS[self.mean]

    @property
    def shape(self) -> tuple[float, ...]:
        """The innovation's shape parameters (``(nu,)`` for ``"t"``, ``(eta, lambda)`` for
        ``"skewt"``, ``()`` for normal)."""
        return self._shape_of(self.dist)

    def params(self) -> dict[str, float]:
        """Parameters as a plain dict; shape parameters (``nu``; ``eta``, ``lambda``) only if
        the law has them, ``gamma`` only for a GJR model (``gamma != 0``)."""
        out = super().params()
        used = self.innovation.parameter_names
        for name in _SHAPE_NAMES:
            if name not in used:
                out.pop(name, None)
        if self.gamma == 0.0:
            out.pop("gamma", None)
        return out

    # ----------------------------------------------------------------- properties

    @property
    def kappa(self) -> float:
        """``E[eps**2 1{eps < 0}]`` of the innovation law (1/2 unless skewed)."""
        return self.innovation.negative_moment(self.shape)

    @property
    def news(self) -> float:
        """``alpha + kappa gamma``: mean reaction of the variance to a squared shock."""
        return self.alpha + self.kappa * self.gamma if self.gamma else self.alpha

    @property
    def persistence(self) -> float:
        """``alpha + kappa gamma + beta``: per-period decay of a variance shock.

        ``E[sigma2_{t+1} | F_{t-1}] = omega + (alpha + kappa gamma + beta) sigma2_t``
        (Glosten et al. 1993); ``alpha + beta`` for GARCH(1,1).
        """
        return self.news + self.beta

    @property
    def unconditional_variance(self) -> float:
        """``omega / (1 - persistence)`` per period, scaled units (Bollerslev 1986, eq. 8)."""
        return self.omega / (1.0 - self.persistence)

    @property
    def annual_volatility(self) -> float:
        """Unconditional volatility of the unscaled log returns per year (a fraction)."""
        return math.sqrt(self.unconditional_variance / self.dt_fit) / self.scale

    def check_step(self, dt: float, changed: Collection[str] = ()) -> None:
        """Check that steps of ``dt`` years can be simulated (see :mod:`quoteflow.models.limits`).

        With ``h = dt / dt_fit`` periods per step and the unconditional per-period variance
        ``sbar = omega / (1 - alpha - beta)`` (Bollerslev 1986, eq. 8), in log-price units:
        the mean step ``|mu h| / scale <= MAX_STEP_DRIFT`` and the unconditional step
        volatility ``sqrt(h sbar) / scale <= MAX_STEP_VOL``. (``scale`` itself is bounded on
        construction.)

        Raises
        ------
        ParameterError
            Naming ``mu``, ``omega``, ``scale``, ``beta`` or ``alpha`` (the one just changed
            if it takes part in the broken rule) and its allowed range.
        """
        skew = self.news - self.alpha
        h = check_dt(dt) / self.dt_fit
        step_bound(
            "garch",
            "|mu * dt / dt_fit| / scale",
            abs(self.mu) * h / self.scale,
            MAX_STEP_DRIFT,
            dt,
            [
                ("mu", self.mu, f"|mu| <= {MAX_STEP_DRIFT * self.scale / h:.6g}"),
                ("scale", self.scale, f"scale >= {abs(self.mu) * h / MAX_STEP_DRIFT:.6g}"),
            ],
            changed,
        )
        room = 1.0 - self.persistence
        step_var = h * self.omega / room
        # (MAX_STEP_VOL * scale)**2 cannot overflow: scale <= MAX_SCALE.
        cap = (MAX_STEP_VOL * self.scale) ** 2 / h
        step_bound(
            "garch",
            "sqrt(dt / dt_fit * omega / (1 - persistence)) / scale",
            math.sqrt(step_var) / self.scale,
            MAX_STEP_VOL,
            dt,
            [
                ("omega", self.omega, f"0 < omega <= {cap * room:.6g}"),
                ("scale", self.scale, f"scale >= {math.sqrt(step_var) / MAX_STEP_VOL:.6g}"),
                # alpha or beta can fix it only when the bound they get is >= 0
                *(
                    (name, value, f"0 <= {name} <= {bound:.6g}")
                    for name, value, bound in (
                        ("beta", self.beta, 1.0 - self.news - self.omega / cap),
                        ("alpha", self.alpha, 1.0 - self.beta - skew - self.omega / cap),
                    )
                    if bound >= 0.0
                ),
            ],
            changed,
        )

    def step_coefficients(self, dt: float) -> tuple[float, float, float, float, float]:
        """Recursion coefficients ``(mu_h, omega_h, alpha_h, gamma_h, beta_h)`` for steps of ``dt``.

        A step spans ``h = dt / dt_fit`` periods. At ``h == 1`` these are the fitted
        ``(mu, omega, alpha, gamma, beta)`` unchanged. Otherwise the step return is
        ``r = mu_h + sqrt(v) eps`` with per-step variance ``v`` following
        ``v' = omega_h + (alpha_h + gamma_h 1{e < 0}) e**2 + beta_h v``, where, with the
        persistence ``phi = alpha + kappa gamma + beta`` and the news coefficient
        ``n = alpha + kappa gamma`` (:attr:`persistence`, :attr:`news`),

        - ``mu_h = mu h`` (the mean scales with time),
        - ``phi_h = phi**h``: a variance shock decays at the same rate per unit of
          *calendar* time, so the variance forecast term structure ``E[sigma2_{t+k}]``
          (Engle & Bollerslev 1986) is the same whatever the step,
        - ``omega_h = h sbar (1 - phi**h)``: the unconditional per-step variance is
          ``h sbar`` (``sbar = omega / (1 - phi)``), variance per unit time is kept,
        - ``n_h = min(n sqrt(h), phi**h)``: the variance of the variance per unit time is
          kept, which is Nelson's (1990) scaling under which GARCH(1,1) converges to a
          diffusion as ``h -> 0``; ``alpha`` and ``gamma`` are scaled alike
          (``alpha_h = alpha n_h / n``), so the asymmetry ratio is kept, and
          ``beta_h = phi_h - n_h``.

        References
        ----------
        Nelson, D. B. (1990), "ARCH models as diffusion approximations", *J. Econometrics*
        45, 7-38. Engle, R. F. & Bollerslev, T. (1986), "Modelling the persistence of
        conditional variances", *Econometric Reviews* 5, 1-50.
        """
        self.check_step(dt)
        h = dt / self.dt_fit
        if math.isclose(h, 1.0, rel_tol=1e-12, abs_tol=0.0):
            return self.mu, self.omega, self.alpha, self.gamma, self.beta
        phi_h = self.persistence**h
        news = self.news
        news_h = min(news * math.sqrt(h), phi_h)
        ratio = news_h / news if news > 0.0 else 0.0
        omega_h = h * self.unconditional_variance * (1.0 - phi_h)
        return self.mu * h, omega_h, self.alpha * ratio, self.gamma * ratio, phi_h - news_h

    # ------------------------------------------------------------------ innovations

    def _draw_innovations(self, rng: np.random.Generator, shape: tuple[int, int]) -> FloatArray:
        """Unit-variance innovations ``eps`` drawn directly from their law."""
        return self.innovation.simulate(self.shape, rng, shape)

    def innovations_from_normal(self, z: FloatArray) -> FloatArray:
        """Map standard-normal shocks to this model's unit-variance innovations.

        Identity for ``dist="normal"``; for ``"t"`` a Gaussian copula
        ``F_t^{-1}(Phi(z)) sqrt((nu-2)/nu)``, for ``"skewt"`` Hansen's inverse CDF of
        ``Phi(z)`` (:class:`~quoteflow.models.innovations.SkewT`), monotone in ``z``, so correlation imposed on
        the normal shocks carries over (as a rank correlation).
        """
        return self.innovation.from_normal(self.shape, np.asarray(z, dtype=np.float64))

    # ------------------------------------------------------------------ simulation

    def simulate(
        self,
        n_steps: int,
        n_paths: int = 1,
        s0: float = 100.0,
        dt: float = 1 / 252,
        seed: int | np.random.Generator | None = None,
    ) -> FloatArray:
        """Simulate price paths driven by GARCH(1,1) / GJR-GARCH(1,1,1) log returns.

        Every path starts at the unconditional variance. Innovations are drawn for all steps
        at once (shape ``(n_steps, n_paths)``), the variance recursion is then the affine
        map ``v_t = omega_h + ((alpha_h + gamma_h 1{eps_{t-1} < 0}) eps_{t-1}**2 + beta_h)
        v_{t-1}`` driven by known
        coefficients, computed by a blocked scan (see ``_garch_recursion.affine_scan``)
        without a Python loop over steps; returns ``r_t = mu_h + sqrt(v_t) eps_t`` and
        prices ``S_t = s0 exp(sum_{j<=t} r_j / scale)``.

        Parameters
        ----------
        n_steps
            Number of steps after the start.
        n_paths
            Number of independent paths.
        s0
            Start price (or one per path).
        dt
            Step length in years; see :meth:`step_coefficients` when it differs from
            ``dt_fit``.
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
        out = np.empty((n_steps + 1, n_paths), dtype=np.float64)
        out[0] = np.log(start)
        if n_steps:
            eps = self._draw_innovations(rng, (n_steps, n_paths))
            v = self._variance_path(eps, dt)
            mu_h = self.step_coefficients(dt)[0]
            body = out[1:]
            np.sqrt(v, out=body)
            body *= eps
            body += mu_h
            body /= self.scale
        np.cumsum(out, axis=0, out=out)
        np.exp(out, out=out)
        out[0] = start
        return out

    def _variance_path(self, eps: FloatArray, dt: float) -> FloatArray:
        """Per-step conditional variances ``v_t`` for innovations ``eps`` (shape ``(T, P)``)."""
        _, omega_h, alpha_h, gamma_h, beta_h = self.step_coefficients(dt)
        v0 = omega_h / (1.0 - _step_persistence(self, alpha_h, gamma_h, beta_h))
        v = np.empty_like(eps)
        v[0] = v0
        if eps.shape[0] > 1:
            a = eps[:-1] ** 2
            if gamma_h:
                a *= np.where(eps[:-1] < 0.0, alpha_h + gamma_h, alpha_h)
            else:
                a *= alpha_h
            a += beta_h
            v[1:] = affine_scan(a, omega_h, np.full(eps.shape[1], v0))
        return v

    def stepper(self, s0: float | FloatArray, dt: float) -> GARCHStepper:
        """Streaming state for ``len(s0)`` paths starting at ``s0`` (see :class:`GARCHStepper`)."""
        return GARCHStepper(self, s0, dt)

    # ------------------------------------------------------------------ estimation

    @classmethod
    def fit(
        cls,
        prices: Any,
        dt: float = 1 / 252,
        dist: str = "normal",
        mean: str = "constant",
        scale: float = 100.0,
        *,
        o: int = 0,
        max_iter: int = 200,
        start: FitResult | Mapping[str, float] | None = None,
    ) -> GARCHFitResult:
        """Quasi-maximum-likelihood fit of GARCH(1,1) (``o=0``) or GJR-GARCH(1,1,1) (``o=1``).

        Likelihood, variance start, bounds and standard errors follow the ``arch`` package
        (``arch_model(r, mean="Constant", vol="GARCH", p=1, o=o, q=1, dist=...)``, ``dist``
        ``"normal"``, ``"t"`` or ``"skewt"``), so the estimates agree with it:

        - returns ``r_t = scale * diff(log prices)``; residuals ``e_t = r_t - mu``;
        - the pre-sample ``e**2`` and ``sigma2`` are both the *backcast*: the mean of the
          first ``min(75, n)`` squared residuals of the starting mean (``mean(r)``) with
          weights ``0.94**i`` normalised to one, held fixed during estimation; the
          pre-sample ``e**2 1{e < 0}`` of the GJR term is half the backcast;
        - normal: ``l_t = -(log 2 pi + log sigma2_t + e_t**2 / sigma2_t) / 2``;
          Student-t with unit variance (Bollerslev 1987):
          ``l_t = log G((nu+1)/2) - log G(nu/2) - log(pi (nu-2))/2 - log(sigma2_t)/2
          - (nu+1)/2 log(1 + e_t**2 / (sigma2_t (nu-2)))``; skewed t: Hansen (1994), see
          :class:`~quoteflow.models.innovations.SkewT`;
        - maximised by SLSQP under ``alpha + gamma / 2 + beta <= 1 - 1e-6`` and
          ``alpha + gamma >= 0`` (arch's constraints; bounds ``alpha, beta`` in [0, 1],
          ``gamma`` in [-1, 2], ``nu`` in [2.05, 500], ``eta`` in [2.05, 300], ``lambda``
          in [-1, 1]) with analytic scores (the variance derivatives are linear filters,
          see ``_garch_recursion``);
        - robust (QML sandwich) covariance ``H^-1 J H^-1 / n`` (Bollerslev & Wooldridge
          1992): ``H`` the Hessian of the mean log-likelihood (central differences of the
          analytic score), ``J`` the covariance of the per-observation scores (``np.cov``,
          i.e. centred with an ``n - 1`` divisor, as ``arch`` does).

        Parameters
        ----------
        prices
            1-D array, list or pandas Series of positive prices, at least 30, equally spaced.
        dt
            Time between two prices in years; becomes the model's ``dt_fit``.
        dist
            ``"normal"``, ``"t"`` or ``"skewt"``.
        mean
            ``"constant"`` (estimate ``mu``) or ``"zero"``.
        scale
            Return scaling; 100 (percent returns) keeps the optimiser well conditioned.
        o
            Asymmetry order: 0 (GARCH(1,1)) or 1 (GJR, estimates ``gamma``).
        max_iter
            Maximum SLSQP iterations.
        start
            Starting values instead of arch's grid search: a previous :class:`FitResult`
            (its ``params``) or a mapping of parameter names to values. A warm start from
            a neighbouring window (rolling backtests, :func:`quoteflow.risk.backtest`)
            needs a few iterations instead of the grid and a cold climb. Names that are
            not estimated here are ignored, missing ones come from the grid search; values
            are moved inside the estimation box. The likelihood and backcast do not depend
            on it, only the path of the optimiser.

        Returns
        -------
        GARCHFitResult
            ``params`` keyed ``mu`` (constant mean only), ``omega``, ``alpha``,
            ``gamma`` (``o=1`` only), ``beta`` (+ ``nu`` for t, ``eta``, ``lambda`` for
            skewt), in per-period scaled units, in arch's order. ``loglik`` is the log-likelihood
            of the *unscaled* log returns, ``loglik_scaled + n log(scale)`` (change of
            variables ``r = scale x``), comparable with GBM and mean reversion;
            ``loglik_scaled`` is ``arch``'s value.

        Raises
        ------
        DataError
            (a ``ValueError``) for NaN, inf, non-positive, constant, too short input.
        ParameterError
            (a ``ValueError``) for an unknown ``dist``, ``mean`` or ``o`` (listing the
            allowed values) or a bad ``scale``.

        Warns
        -----
        GARCHConvergenceWarning
            If the optimiser did not converge; the result then has ``converged=False``.

        References
        ----------
        Bollerslev, T. (1986), *J. Econometrics* 31, 307-327; Bollerslev, T. & Wooldridge,
        J. M. (1992), "Quasi-maximum likelihood estimation and inference in dynamic models
        with time-varying covariances", *Econometric Reviews* 11, 143-172; Glosten, L. R.,
        Jagannathan, R. & Runkle, D. E. (1993), "On the relation between the expected value
        and the volatility of the nominal excess return on stocks", *J. Finance* 48,
        1779-1801; Hansen, B. E. (1994), *International Economic Review* 35, 705-730;
        Sheppard, K.,
        ``arch`` (https://github.com/bashtage/arch), ``arch.univariate``.
        """
        dist = _choice("dist", dist, DISTS)
        mean = _choice("mean", mean, MEANS)
        if isinstance(o, bool) or o not in ORDERS:
            raise ParameterError("o", f"garch: o must be 0 (GARCH) or 1 (GJR), got {o!r}")
        scale = param_in_range("garch", "scale", scale, MIN_SCALE, MAX_SCALE)
        dt = check_dt(dt)
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        p = validate_prices(prices)
        returns = scale * np.diff(np.log(p))
        return _fit_returns(
            cls,
            returns,
            dt=dt,
            dist=dist,
            mean=mean,
            o=int(o),
            scale=scale,
            max_iter=max_iter,
            start=_start_mapping(start),
        )


def _step_persistence(model: GARCH, alpha_h: float, gamma_h: float, beta_h: float) -> float:
    """``alpha_h + kappa gamma_h + beta_h``: the per-step persistence of step coefficients."""
    return alpha_h + model.kappa * gamma_h + beta_h if gamma_h else alpha_h + beta_h


# ---------------------------------------------------------------------- likelihood


@dataclass(frozen=True)
class _Spec:
    """What is estimated: the parts and the layout
    ``[mean params,] omega, alpha, [gamma,] beta[, shape]``."""

    returns: FloatArray
    backcast: float
    dist: str
    mean: str
    o: int = 0

    # Cached: the objective asks for these on every evaluation.
    @cached_property
    def innovation(self) -> Innovation:
        return INNOVATIONS[self.dist]

    @cached_property
    def mean_part(self) -> MeanPart:
        return MEAN_PARTS[self.mean]

    @cached_property
    def with_mu(self) -> bool:
        """Whether the mean has a parameter (the variance gradient then has a ``mu`` row)."""
        return bool(self.mean_part.parameter_names)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return (
            *self.mean_part.parameter_names,
            "omega",
            "alpha",
            *(("gamma",) if self.o else ()),
            "beta",
            *self.innovation.parameter_names,
        )

    @cached_property
    def alpha_index(self) -> int:
        return len(self.mean_part.parameter_names) + 1

    @cached_property
    def beta_index(self) -> int:
        return self.alpha_index + 1 + self.o

    def unpack(self, x: FloatArray) -> tuple[float, float, float, float, float, tuple[float, ...]]:
        """``(mu, omega, alpha, gamma, beta, shape)`` from the parameter vector (gamma 0 if o=0)."""
        k = self.alpha_index - 1
        v = x.tolist()
        gamma = v[k + 2] if self.o else 0.0
        ib = self.beta_index
        return self.mean_part.mu(v[:k]), v[k], v[k + 1], gamma, v[ib], tuple(v[ib + 1 :])


@dataclass(frozen=True)
class _Terms:
    """Per-observation pieces of the log-likelihood at one parameter vector.

    ``ll`` the log-likelihood terms, ``sigma2`` the conditional variances, ``dl_ds`` and
    ``dl_de`` the partial derivatives of ``ll`` in ``sigma2_t`` and ``e_t``, ``dl_dshape``
    the partials in the innovation's shape parameters, ``dsig`` the variance derivatives,
    shape ``(k_var, n)``.
    """

    ll: FloatArray
    sigma2: FloatArray
    dl_ds: FloatArray
    dl_de: FloatArray
    dl_dshape: tuple[FloatArray, ...]
    dsig: FloatArray

    def gradient(self, with_mu: bool) -> FloatArray:
        """Gradient of the *mean* log-likelihood (chain rule, no ``(n, k)`` temporary)."""
        n = self.ll.shape[0]
        g = self.dsig @ self.dl_ds
        parts = [g]
        if with_mu:
            g[0] -= self.dl_de.sum()  # de/dmu = -1
        if self.dl_dshape:
            parts.append(np.array([d.sum() for d in self.dl_dshape]))
        out: FloatArray = np.concatenate(parts) / n
        return out

    def scores(self, with_mu: bool) -> FloatArray:
        """Per-observation scores, shape ``(n, k)``."""
        cols = [self.dsig.T * self.dl_ds[:, np.newaxis]]
        cols.extend(d[:, np.newaxis] for d in self.dl_dshape)
        out = np.concatenate(cols, axis=1)
        if with_mu:
            out[:, 0] -= self.dl_de
        return out


def _loglik_terms(spec: _Spec, x: FloatArray) -> _Terms:
    """Log-likelihood terms and their partial derivatives at ``x``.

    Scores follow by the chain rule ``dl_t/dtheta = dl_t/dsigma2_t dsigma2_t/dtheta``
    (+ the direct terms in ``mu`` and the shape parameters), with the variance derivatives
    of ``variance_and_gradient`` and the innovation's partials.
    """
    mu, omega, alpha, gamma, beta, shape = spec.unpack(x)
    e = spec.returns - mu
    sigma2, dsig = variance_and_gradient(
        omega, alpha, beta, e, spec.backcast, spec.with_mu, gamma if spec.o else None
    )
    part = spec.innovation.loglikelihood(shape, e, sigma2)
    return _Terms(
        ll=part.ll,
        sigma2=sigma2,
        dl_ds=part.dl_ds,
        dl_de=part.dl_de,
        dl_dshape=part.dl_dshape,
        dsig=dsig,
    )


def _objective(spec: _Spec) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    """Mean negative log-likelihood and its gradient (dividing by ``n`` conditions SLSQP)."""

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        # SLSQP may probe points where the variance is not positive or overflows; those
        # are rejected with a large value instead of letting NaN reach the optimiser.
        with np.errstate(all="ignore"):
            terms = _loglik_terms(spec, x)
            f = -float(terms.ll.mean())
            g = -terms.gradient(spec.with_mu)
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            return 1e10, np.zeros_like(x)
        return f, g

    return fun


def _starting_values(spec: _Spec) -> FloatArray:
    """Grid search like ``arch``'s ``GARCH.starting_values`` (Gaussian likelihood).

    ``alpha`` in {0.01, 0.05, 0.1, 0.2}, (GJR: ``gamma`` in the same set),
    ``alpha + gamma / 2 + beta`` in {0.5, 0.7, 0.9, 0.98},
    ``omega = (1 - alpha - gamma / 2 - beta) mean(e**2)``, the first best point in arch's
    order (alpha, gamma, persistence); the mean and shape parameters from their parts
    (``mean(r)``; for the t and skewed t, ``nu``/``eta`` by the method of moments on the
    standardised residuals of the best grid point, ``lambda = 0``).
    """
    head = spec.mean_part.starting_values(spec.returns)
    e = spec.returns - spec.mean_part.mu(head)
    target = float(np.mean(e * e))
    best: tuple[list[float], FloatArray] | None = None
    best_ll = -math.inf
    grid = (0.01, 0.05, 0.1, 0.2)
    for alpha in grid:
        for gamma in grid if spec.o else (0.0,):
            for pers in (0.5, 0.7, 0.9, 0.98):
                omega = (1.0 - pers) * target
                beta = pers - alpha - 0.5 * gamma
                s2 = variance_filter(omega, alpha, beta, e, spec.backcast, gamma)
                ll = -0.5 * float(np.sum(np.log(s2) + e * e / s2))
                if ll > best_ll:
                    vol = [omega, alpha, *([gamma] if spec.o else []), beta]
                    best_ll, best = ll, (vol, s2)
    assert best is not None
    vol, s2 = best
    tail = spec.innovation.starting_values(e / np.sqrt(s2))
    return np.asarray([*head, *vol, *tail], dtype=np.float64)


def _bounds(spec: _Spec, v: float) -> list[tuple[float | None, float | None]]:
    """The estimation box, the same as arch's ``GARCH.bounds`` / ``StudentsT.bounds`` /
    ``SkewStudent.bounds`` (``gamma`` in [-1, 2]).

    ``v`` is the mean squared residual at the starting mean.
    """
    return [
        *spec.mean_part.bounds(),
        (1e-8 * v, 10.0 * v),
        (0.0, 1.0),
        *([(-1.0, 2.0)] if spec.o else []),
        (0.0, 1.0),
        *spec.innovation.bounds(),
    ]


def _hessian(grad: Callable[[FloatArray], FloatArray], x: FloatArray) -> FloatArray:
    """Central differences of the analytic gradient (error O(step**2), step ~1e-5 |x|)."""
    k = x.shape[0]
    h = 1e-5 * np.maximum(np.abs(x), 0.1)
    hess = np.empty((k, k))
    for j in range(k):
        up, down = x.copy(), x.copy()
        up[j] += h[j]
        down[j] -= h[j]
        hess[:, j] = (grad(up) - grad(down)) / (2.0 * h[j])
    return 0.5 * (hess + hess.T)


def _start_mapping(start: Any) -> dict[str, float] | None:
    """``start`` of :meth:`GARCH.fit` as a ``{name: value}`` dict (None: grid search)."""
    if start is None:
        return None
    params = start.params if isinstance(start, FitResult) else start
    if not isinstance(params, Mapping):
        raise ParameterError(
            "start",
            f"garch: start must be a FitResult or a mapping of parameter names to values, "
            f"got {type(start).__name__}",
        )
    out = {}
    for name, value in params.items():
        out[str(name)] = finite_param("garch", f"start[{name!r}]", value)
    return out


def _warm_start(spec: _Spec, start: Mapping[str, float], v: float) -> FloatArray:
    """``start`` as a parameter vector strictly inside the box and the persistence bound."""
    names = spec.names
    x = _starting_values(spec) if any(n not in start for n in names) else np.empty(len(names))
    for i, name in enumerate(names):
        if name in start:
            x[i] = start[name]
    for i, (lo, hi) in enumerate(_bounds(spec, v)):
        low = -math.inf if lo is None else lo
        high = math.inf if hi is None else hi
        # An estimate on a bound (alpha = 0) would start SLSQP on an active constraint.
        pad = 1e-6 * (high - low) if math.isfinite(high - low) else 0.0
        x[i] = min(max(x[i], low + pad), high - pad)
    # By name, not position: the asymmetry term sits between alpha and beta. The
    # constraints are those of _maximise: alpha + gamma / 2 + beta below the bound and,
    # for GJR, alpha + gamma >= 0.
    ia, ib = names.index("alpha"), names.index("beta")
    ig = names.index("gamma") if "gamma" in names else None
    if ig is not None and x[ia] + x[ig] < 0.0:
        x[ig] = -x[ia]
    half_gamma = 0.5 * x[ig] if ig is not None else 0.0
    room = _MAX_PERSISTENCE - 1e-4
    if x[ia] + half_gamma + x[ib] > room:
        x[ib] = max(room - x[ia] - half_gamma, 0.0)
    return x


def _maximise(
    spec: _Spec, v: float, max_iter: int, start: Mapping[str, float] | None = None
) -> tuple[FloatArray, Any]:
    """SLSQP from the grid start (or ``start``) under arch's constraints; ``(x, result)``.

    ``alpha + gamma / 2 + beta <= 1 - 1e-6`` and, for GJR, ``alpha + gamma >= 0``. ``v`` is
    the mean squared residual at the starting mean (it scales the ``omega`` box). The
    returned ``x`` is clipped into the box and the constraints (SLSQP can leave tiny
    violations) so that the model validates.
    """
    bounds = _bounds(spec, v)
    ia, ib = spec.alpha_index, spec.beta_index
    jac = np.zeros(len(spec.names))
    jac[ia] = jac[ib] = -1.0
    if spec.o:
        jac[ia + 1] = -0.5
    constraints = [
        {"type": "ineq", "fun": lambda x: _MAX_PERSISTENCE + jac @ x, "jac": lambda x: jac}
    ]
    if spec.o:
        jac_asym = np.zeros(len(spec.names))
        jac_asym[ia] = jac_asym[ia + 1] = 1.0
        constraints.append(
            {"type": "ineq", "fun": lambda x: jac_asym @ x, "jac": lambda x: jac_asym}
        )
    x0 = _starting_values(spec) if start is None else _warm_start(spec, start, v)
    opt = optimize.minimize(
        _objective(spec),
        x0,
        jac=True,
        method="SLSQP",
        bounds=bounds,
        constraints=constraints,
        options={"maxiter": max_iter, "ftol": 1e-12},
    )
    x = np.asarray(opt.x, dtype=np.float64)
    for i, (lo, hi) in enumerate(bounds):
        x[i] = min(max(x[i], -math.inf if lo is None else lo), math.inf if hi is None else hi)
    if spec.o and x[ia] + x[ia + 1] < 0.0:
        x[ia + 1] = -x[ia]
    if _MAX_PERSISTENCE + jac @ x < 0.0:
        x[ib] = max(_MAX_PERSISTENCE + jac @ x + x[ib], 0.0)
    return x, opt


def _robust_covariance(spec: _Spec, x: FloatArray, scores: FloatArray) -> FloatArray | None:
    """QML sandwich ``H^-1 J H^-1 / n`` (Bollerslev & Wooldridge 1992); None if ``H`` is singular."""

    def mean_grad(y: FloatArray) -> FloatArray:
        with np.errstate(all="ignore"):
            return -_loglik_terms(spec, y).gradient(spec.with_mu)

    hess = _hessian(mean_grad, x)
    try:
        inv_h = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return None
    cov: FloatArray = inv_h @ np.cov(scores.T) @ inv_h / scores.shape[0]
    return cov


def _fit_returns(
    cls: type[GARCH],
    returns: FloatArray,
    *,
    dt: float,
    dist: str,
    mean: str,
    o: int = 0,
    scale: float,
    max_iter: int,
    start: Mapping[str, float] | None = None,
) -> GARCHFitResult:
    """Estimate on scaled returns: parts -> start -> SLSQP -> sandwich -> result."""
    n = returns.shape[0]
    # The backcast is taken from the residuals at the starting mean and then held fixed,
    # as in arch (its fit() calls backcast(resids(starting_values()))).
    mean_part = MEAN_PARTS[mean]
    start_resid = returns - mean_part.mu(mean_part.starting_values(returns))
    spec = _Spec(returns=returns, backcast=backcast(start_resid), dist=dist, mean=mean, o=o)
    if spec.backcast <= 0.0 or float(np.mean(start_resid**2)) <= 0.0:
        raise ValueError("garch: the returns have zero variance; nothing to fit")
    names = spec.names
    x, opt = _maximise(spec, float(np.mean(start_resid**2)), max_iter, start)
    converged = bool(opt.success)
    notes: list[str] = []
    if not converged:
        msg = (
            f"GARCH fit did not converge (dist={dist!r}, mean={mean!r}, o={o}): {opt.message} "
            f"after {opt.nit} iterations; estimates are the last iterate"
        )
        warnings.warn(msg, GARCHConvergenceWarning, stacklevel=3)
        notes.append(msg)

    terms = _loglik_terms(spec, x)
    loglik_scaled = float(terms.ll.sum())
    cov = _robust_covariance(spec, x, terms.scores(spec.with_mu))
    if cov is None:
        cov = np.full((len(names), len(names)), np.nan)
        se = np.full(len(names), np.nan)
        notes.append("Hessian is singular: standard errors are not available")
    else:
        se = np.sqrt(np.where(np.diag(cov) >= 0.0, np.diag(cov), np.nan))
    mu, omega, alpha, gamma, beta, shape = spec.unpack(x)
    kappa = spec.innovation.negative_moment(shape) if o else 0.5
    if alpha + kappa * gamma + beta >= _MAX_PERSISTENCE - 1e-9:
        notes.append("the persistence is at the stationarity bound (integrated GARCH?)")
        # arch's constraint uses gamma / 2; a skewed law puts more than half the variance
        # below zero, and the model (which needs kappa) is then moved just inside.
        beta = min(beta, max(_MAX_PERSISTENCE - alpha - kappa * gamma, 0.0))
    model = cls(
        mu=mu,
        omega=omega,
        alpha=alpha,
        gamma=gamma,
        beta=beta,
        **{
            cls.field_name(k): v
            for k, v in zip(spec.innovation.parameter_names, shape, strict=True)
        },
        dist=dist,
        mean=mean,
        scale=scale,
        dt_fit=dt,
    )
    notes.insert(0, _units_note(model, loglik_scaled))
    resid = returns - mu
    vol = np.sqrt(terms.sigma2)
    return GARCHFitResult(
        model=model,
        params={name: float(val) for name, val in zip(names, x, strict=True)},
        std_err={name: float(s) for name, s in zip(names, se, strict=True)},
        loglik=loglik_scaled + n * math.log(scale),
        nobs=n,
        converged=converged,
        dt=dt,
        notes=tuple(notes),
        extra={
            "loglik_scaled": loglik_scaled,
            "scale": scale,
            "dist": dist,
            "mean": mean,
            "o": o,
            "persistence": model.persistence,
            "annual_volatility": model.annual_volatility,
            "iterations": int(opt.nit),
        },
        loglik_scaled=loglik_scaled,
        returns=returns,
        resid=resid,
        conditional_volatility=vol,
        std_resid=resid / vol,
        cov=cov,
        backcast=spec.backcast,
    )


def _units_note(model: GARCH, loglik_scaled: float) -> str:
    """The first note of a fit: what the units of ``mu``, ``omega`` and ``loglik`` are."""
    scale, dt = model.scale, model.dt_fit
    return (
        f"Units: returns = {scale:g} x log-return per period of {dt:.6g} years "
        f"({'percent' if scale == 100 else 'scaled'}); mu and omega in those units. "
        f"Annualised volatility {model.annual_volatility:.4g}, persistence "
        f"{'alpha+beta' if model.gamma == 0.0 else 'alpha+kappa*gamma+beta'} "
        f"{model.persistence:.4f}. loglik is of the unscaled log returns (arch reports "
        f"{loglik_scaled:.4f} for the scaled ones)."
    )


def _empty() -> FloatArray:
    return np.empty(0)


@dataclass(frozen=True, eq=False)
class GARCHFitResult(FitResult):
    """:class:`~quoteflow.models.base.FitResult` of :meth:`GARCH.fit` with GARCH diagnostics.

    The arrays are aligned with the returns: element ``i`` belongs to the return from
    price ``i`` to price ``i + 1``. All are in scaled units (see ``model.scale``).

    Attributes
    ----------
    loglik_scaled
        Log-likelihood of the *scaled* returns, the number ``arch`` reports;
        ``loglik = loglik_scaled + nobs * log(scale)``.
    returns
        The scaled log returns fitted.
    resid
        Residuals ``returns - mu``.
    conditional_volatility
        ``sigma_t``, the conditional standard deviation of each return.
    std_resid
        (from :class:`FitResult`) Standardised residuals ``resid / sigma_t``.
    cov
        Robust (sandwich) covariance of the estimates, ordered as ``params``.
    backcast
        Pre-sample variance used to start the recursion.
    """

    loglik_scaled: float = math.nan
    returns: FloatArray = field(default_factory=_empty)
    resid: FloatArray = field(default_factory=_empty)
    conditional_volatility: FloatArray = field(default_factory=_empty)
    cov: FloatArray = field(default_factory=_empty)
    backcast: float = math.nan

    def forecast_variance(self, horizon: int) -> FloatArray:
        """Conditional variance forecasts ``E[sigma2_{T+k} | F_T]``, ``k = 1..horizon``.

        ``sigma2_{T+1} = omega + (alpha + gamma 1{e_T < 0}) e_T**2 + beta sigma2_T`` is
        known at ``T``; for ``k >= 2``,
        ``E[sigma2_{T+k}] = sbar + phi**(k-1) (sigma2_{T+1} - sbar)`` with the persistence
        ``phi = alpha + kappa gamma + beta`` and ``sbar = omega / (1 - phi)`` (Engle &
        Bollerslev 1986; Baillie & Bollerslev 1992, eq. 9). Per period of the fit, scaled
        units squared; equals ``arch``'s ``forecast(horizon=h).variance`` at the last
        observation (for the skewed t, arch uses ``kappa = 1/2`` whatever ``lambda``; here
        ``kappa`` is the law's own ``E[eps**2 1{eps < 0}]``).

        Parameters
        ----------
        horizon
            Number of periods ahead, ``>= 1``.

        Returns
        -------
        ndarray
            Shape ``(horizon,)``.
        """
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        m = self.model
        assert isinstance(m, GARCH)
        s_last = float(self.conditional_volatility[-1]) ** 2
        e_last = float(self.resid[-1])
        news = m.alpha + (m.gamma if e_last < 0.0 else 0.0)
        first = m.omega + news * e_last**2 + m.beta * s_last
        sbar = m.unconditional_variance
        k = np.arange(int(horizon), dtype=np.float64)
        out: FloatArray = sbar + m.persistence**k * (first - sbar)
        return out


class GARCHStepper(PathStepper[GARCH]):
    """Streaming GARCH(1,1) / GJR: per-path price and conditional variance, one step at a time.

    Each :meth:`step` maps the given standard-normal shocks to the model's innovations
    (:meth:`GARCH.innovations_from_normal`), then applies
    ``r = mu_h + sqrt(v) eps``, ``S <- S exp(r / scale)``,
    ``v <- omega_h + ((alpha_h + gamma_h 1{eps < 0}) eps**2 + beta_h) v`` with the
    coefficients of
    :meth:`GARCH.step_coefficients` (the plain recursion when ``dt == dt_fit``).
    Paths start at the unconditional variance.

    The state :attr:`variance` is each path's conditional variance of its next step
    return, in the model's scaled units. :meth:`set_model` keeps it (converting it when
    ``scale`` changes), so changing parameters never makes the volatility jump; the new
    parameters then pull it towards their own unconditional level.

    Parameters
    ----------
    model
        The GARCH whose dynamics to follow (changeable later with :meth:`set_model`).
    s0
        Start price(s); one path per price.
    dt
        Step length in years.
    """

    def __init__(self, model: GARCH, s0: float | FloatArray, dt: float) -> None:
        super().__init__(model, s0, dt)
        self.variance = np.full(self.prices.size, self._unconditional())

    def _unconditional(self) -> float:
        """Unconditional per-step variance of the current parameters (scaled units)."""
        _, _, omega_h, _, _, _, phi_h = self._state
        return float(omega_h / (1.0 - phi_h))

    def reseed(self, paths: Any, prices: Any) -> None:
        """Restart paths at ``prices`` and at the unconditional variance (see ``Stepper``)."""
        super().reseed(paths, prices)
        variance = self.variance.copy()
        variance[paths] = self._unconditional()
        self.variance = variance

    @property
    def volatility(self) -> FloatArray:
        """Current conditional volatility of each path, annualised, as a fraction."""
        scale = self.model.scale
        out: FloatArray = np.sqrt(self.variance / self.dt) / scale
        return out

    def set_model(self, model: PriceModel) -> None:
        """Use ``model``'s parameters from the next step on; prices and volatility are kept."""
        model = require_model(self, model, GARCH)
        old: GARCH | None = getattr(self, "_state", (None,))[0]
        mu_h, omega_h, alpha_h, gamma_h, beta_h = model.step_coefficients(self.dt)
        phi_h = _step_persistence(model, alpha_h, gamma_h, beta_h)
        # One tuple assignment: a concurrent step() sees old or new parameters, never a mix.
        self._state: tuple[GARCH, float, float, float, float, float, float] = (
            model,
            mu_h,
            omega_h,
            alpha_h,
            gamma_h,
            beta_h,
            phi_h,
        )
        if old is not None and old.scale != model.scale:
            # Same volatility of the price, expressed in the new return units. (A step()
            # running concurrently with this rare case may use one stale variance.)
            self.variance = self.variance * (model.scale / old.scale) ** 2

    def step(self, z: FloatArray) -> FloatArray:
        """Advance every path one step with standard-normal shocks ``z``; return new prices."""
        model, mu_h, omega_h, alpha_h, gamma_h, beta_h, _ = self._state
        shocks = check_shocks(z, self.prices.size)
        eps = model.innovations_from_normal(shocks)
        v = self.variance
        r = mu_h + np.sqrt(v) * eps
        self.prices = self.prices * np.exp(r / model.scale)
        news = np.where(eps < 0.0, alpha_h + gamma_h, alpha_h) if gamma_h else alpha_h
        self.variance = omega_h + (news * eps * eps + beta_h) * v
        return self.prices

    def gap_variance(self, tau: float) -> FloatArray:
        """Conditional variance of the gap return over ``tau`` years, per path (scaled units).

        The gap spans ``h = tau / dt`` steps. Its variance is the sum of the expected
        per-step variances over those steps given the current one ``v``:
        ``h vbar + (v - vbar) (1 - phi**h) / (1 - phi)``, with ``phi`` the per-step
        persistence (``alpha_h + kappa gamma_h + beta_h``) and ``vbar`` the unconditional per-step variance (the variance forecast of Engle &
        Bollerslev 1986, summed; Baillie & Bollerslev 1992, eq. 9), extended to a
        fractional ``h``.
        """
        _, _, omega_h, _, _, _, phi = self._state
        h = check_gap(tau) / self.dt
        vbar = omega_h / (1.0 - phi)
        decay = (1.0 - phi**h) / (1.0 - phi)
        out: FloatArray = h * vbar + (self.variance - vbar) * decay
        return out

    def gap(self, z: FloatArray, tau: float) -> FloatArray:
        """One move over ``tau`` years: ``r = mu tau / dt_fit + sqrt(V) eps``.

        ``V`` is :meth:`gap_variance`, ``eps`` the model's innovation (Gaussian copula of
        ``z``). The variance state then continues from its forecast at the end of the
        gap, ``vbar + phi**h (v - vbar)``: the gap's own shock does not feed the
        recursion (one news impact for a whole night would be ``h`` steps' worth at once).
        """
        model, _, omega_h, _, _, _, phi = self._state
        shocks = check_shocks(z, self.prices.size)
        eps = model.innovations_from_normal(shocks)
        var = self.gap_variance(tau)
        r = model.mu * tau / model.dt_fit + np.sqrt(var) * eps
        self.prices = self.prices * np.exp(r / model.scale)
        vbar = omega_h / (1.0 - phi)
        self.variance = vbar + phi ** (tau / self.dt) * (self.variance - vbar)
        return self.prices
