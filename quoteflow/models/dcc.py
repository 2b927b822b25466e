"""DCC(1,1): dynamic conditional correlations of several price series (Engle 2002).

Two-step quasi-maximum likelihood. Step 1 fits a univariate GARCH(1,1)
(:meth:`quoteflow.models.GARCH.fit`, with ``dist=`` and ``mean=`` passed on) to each
series and keeps its standardised residuals ``z_it = e_it / sigma_it``. Step 2 maximises
Engle's correlation log-likelihood (2002, eq. 26)

    L_C(a, b) = -1/2 sum_t (log|R_t| + z_t' R_t^-1 z_t - z_t' z_t)

over the correlation dynamics ``a, b`` (``a, b >= 0``, ``a + b < 1``) with

    Q_t = (1 - a - b) Qbar + a z_{t-1} z_{t-1}' + b Q_{t-1},   Q_1 = Qbar,
    R_t = diag(Q_t)^-1/2 Q_t diag(Q_t)^-1/2,

``Qbar`` the sample correlation of ``z`` (correlation targeting). The recursion runs as
linear filters over all pairs at once (:mod:`quoteflow.models._dcc_recursion`).

Standard errors of ``a, b`` are the two-step sandwich of Engle & Sheppard (2001, Prop. 2;
the two-step GMM covariance of Newey & McFadden 1994, Thm. 6.1): with the stacked
per-observation scores ``s_t = (s1_t(theta), s2_t(theta, phi))`` of the univariate
parameters ``theta`` and of ``phi = (a, b)``,

    A = [[H11, 0], [H21, H22]],   B = (1/T) sum_t s_t s_t',   Cov = A^-1 B A^-T / T,

``H11`` the block-diagonal Hessian of the mean univariate log-likelihoods, ``H22`` the
Hessian of the mean correlation log-likelihood in ``phi`` and ``H21`` its cross derivative
in ``theta`` (the second step's dependence on the first-step estimates, through ``z`` and
``Qbar``). The ``phi`` block is reported; ``extra["std_err_naive"]`` holds the second step
alone (``H22^-1 J22 H22^-1 / T``), which ignores the first-step estimation. ``Qbar`` is
treated as a function of ``theta`` (its dependence on the first step is in ``H21``); its own
sampling error at fixed ``theta`` is not propagated, as in Engle & Sheppard.

References
----------
Engle, R. F. (2002), "Dynamic conditional correlation: a simple class of multivariate
GARCH models", *J. Business & Economic Statistics* 20, 339-350. Engle, R. F. & Sheppard, K.
(2001), "Theoretical and empirical properties of dynamic conditional correlation
multivariate GARCH", NBER working paper 8554. Newey, W. K. & McFadden, D. (1994), "Large
sample estimation and hypothesis testing", *Handbook of Econometrics* IV, ch. 36.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from quoteflow.errors import DataError, ParameterError
from quoteflow.models._dcc_recursion import (
    CorrelationTerms,
    correlation_terms,
    loglik_gradient_z,
    outer_dev,
    qbar_of,
)
from quoteflow.models._validation import check_dt
from quoteflow.models.base import MIN_OBSERVATIONS, FloatArray, validate_prices
from quoteflow.models.garch import (
    GARCH,
    GARCHFitResult,
    _hessian,
    _loglik_terms,
    _Spec,
)
from quoteflow.models.limits import finite_param

__all__ = ["DCC", "UNIVARIATE", "DCCConvergenceWarning", "DCCFitResult", "DCCTracker"]

#: First-step models by name (``univariate=``).
UNIVARIATE: tuple[str, ...] = ("garch",)
#: Upper bound of ``a + b`` in estimation (the recursion must be mean reverting).
_MAX_PERSISTENCE = 1.0 - 1e-6
_PD_TOL = 1e-10


class DCCConvergenceWarning(RuntimeWarning):
    """The DCC optimiser stopped without meeting its convergence criterion."""


def _check_qbar(qbar: Any, n: int | None) -> FloatArray:
    try:
        q = np.array(qbar, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("qbar", "dcc: qbar must be a square matrix of numbers") from None
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] < 2:
        raise ParameterError(
            "qbar", f"dcc: qbar must be a square matrix, at least 2x2, got shape {q.shape}"
        )
    if n is not None and q.shape[0] != n:
        raise ParameterError(
            "qbar", f"dcc: qbar is {q.shape[0]}x{q.shape[0]} but there are {n} symbols"
        )
    if not np.all(np.isfinite(q)):
        raise ParameterError("qbar", "dcc: qbar entries must be finite")
    if np.abs(q - q.T).max() > 1e-8 or np.abs(np.diag(q) - 1.0).max() > 1e-8:
        raise ParameterError(
            "qbar", "dcc: qbar must be a symmetric correlation matrix (unit diagonal)"
        )
    q = 0.5 * (q + q.T)
    if np.linalg.eigvalsh(q)[0] <= _PD_TOL:
        raise ParameterError("qbar", "dcc: qbar must be positive definite")
    return q


@dataclass(frozen=True)
class DCC:
    """DCC(1,1) correlation dynamics over named symbols.

    Parameters
    ----------
    a
        News coefficient, ``>= 0``.
    b
        Persistence coefficient, ``>= 0``; ``a + b < 1``.
    qbar
        Unconditional correlation target, an ``(N, N)`` positive-definite correlation
        matrix in the order of ``symbols`` (stored as nested tuples).
    symbols
        The ``N >= 2`` symbol names.
    dt_fit
        Years per period of ``a`` and ``b`` (1/252: daily).

    Raises
    ------
    ParameterError
        Naming ``a``, ``b``, ``qbar`` or ``symbols``.
    """

    a: float
    b: float
    qbar: Any
    symbols: tuple[str, ...]
    dt_fit: float = 1 / 252

    name = "dcc"

    def __post_init__(self) -> None:
        a = finite_param("dcc", "a", self.a)
        b = finite_param("dcc", "b", self.b)
        if a < 0.0:
            raise ParameterError("a", f"dcc: parameter a must be >= 0, got {a!r}")
        if b < 0.0:
            raise ParameterError("b", f"dcc: parameter b must be >= 0, got {b!r}")
        if a + b >= 1.0:
            raise ParameterError("b", f"dcc: a + b must be < 1, got a={a!r} + b={b!r}")
        syms = tuple(str(s) for s in self.symbols)
        if len(syms) < 2 or len(set(syms)) != len(syms):
            raise ParameterError(
                "symbols", f"dcc: needs at least 2 distinct symbols, got {list(syms)}"
            )
        q = _check_qbar(self.qbar, len(syms))
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "symbols", syms)
        object.__setattr__(self, "qbar", tuple(tuple(row) for row in q.tolist()))
        object.__setattr__(self, "dt_fit", check_dt(self.dt_fit))

    @property
    def qbar_matrix(self) -> FloatArray:
        """``Qbar`` as an array, shape ``(N, N)``."""
        return np.array(self.qbar, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        """``{"a", "b", "qbar", "symbols"}``, JSON-safe."""
        return {
            "a": self.a,
            "b": self.b,
            "qbar": [list(r) for r in self.qbar],
            "symbols": list(self.symbols),
        }

    def step_coefficients(self, dt: float) -> tuple[float, float]:
        """``(a_h, b_h)`` for steps of ``dt`` years, ``h = dt / dt_fit`` periods per step.

        The same mapping as :meth:`GARCH.step_coefficients`: ``a_h + b_h = (a + b)**h``
        (a correlation shock decays at the same rate per unit of calendar time, so the
        forecast ``E[Q_{t+k}]`` term structure is kept) and ``a_h = min(a sqrt(h),
        (a + b)**h)`` (Nelson 1990 scaling); the plain ``(a, b)`` at ``h == 1``.
        """
        h = check_dt(dt) / self.dt_fit
        if math.isclose(h, 1.0, rel_tol=1e-12, abs_tol=0.0):
            return self.a, self.b
        phi = (self.a + self.b) ** h
        a_h = min(self.a * math.sqrt(h), phi)
        return a_h, phi - a_h

    def tracker(self, dt: float | None = None) -> DCCTracker:
        """Streaming state of the recursion at steps of ``dt`` years (default ``dt_fit``)."""
        return DCCTracker(self, self.dt_fit if dt is None else dt)

    def simulate_shocks(
        self, n_steps: int, n_paths: int = 1, seed: int | np.random.Generator | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Draw standardised shocks from the DCC recursion, ``z_t = chol(R_t) u_t``.

        Parameters
        ----------
        n_steps, n_paths
            Steps per path and independent paths (vectorised over paths: one batched
            Cholesky per step).
        seed
            Seed or generator.

        Returns
        -------
        z, r
            Shocks of shape ``(n_steps, n_paths, N)`` and the correlations ``R_t`` they
            were drawn with, ``(n_steps, n_paths, N, N)``.
        """
        rng = np.random.default_rng(seed)
        n = len(self.symbols)
        qbar = self.qbar_matrix
        q = np.broadcast_to(qbar, (n_paths, n, n)).copy()
        z = np.empty((n_steps, n_paths, n))
        r = np.empty((n_steps, n_paths, n, n))
        c = 1.0 - self.a - self.b
        for t in range(n_steps):
            s = np.sqrt(np.einsum("pii->pi", q))
            r[t] = q / (s[:, :, None] * s[:, None, :])
            u = rng.standard_normal((n_paths, n))
            z[t] = np.einsum("pij,pj->pi", np.linalg.cholesky(r[t]), u)
            q = c * qbar + self.a * (z[t][:, :, None] * z[t][:, None, :]) + self.b * q
        return z, r

    @classmethod
    def fit(
        cls,
        prices: Any,
        univariate: str = "garch",
        dist: str = "normal",
        mean: str = "constant",
        dt: float = 1 / 252,
        *,
        o: int = 0,
        max_iter: int = 200,
    ) -> DCCFitResult:
        """Two-step QML fit of DCC(1,1) on the log returns of several price series.

        Parameters
        ----------
        prices
            A pandas DataFrame with one column of positive prices per symbol (at least 2
            columns, the same dates), or a mapping ``{symbol: Series}`` with identical
            indexes.
        univariate
            First-step model; ``"garch"`` (:meth:`GARCH.fit`).
        dist, mean, o
            Passed on to every univariate fit (see :meth:`GARCH.fit`; ``o=1``: GJR).
        dt
            Years between two prices.
        max_iter
            Maximum SLSQP iterations (both steps).

        Returns
        -------
        DCCFitResult

        Raises
        ------
        DataError
            Fewer than 2 symbols, misaligned series, NaN / inf / non-positive prices
            (naming the symbol and the index), too short.
        ParameterError
            Unknown ``univariate``, ``dist`` or ``mean``.
        """
        if univariate not in UNIVARIATE:
            raise ParameterError(
                "univariate",
                f"dcc: univariate must be one of {', '.join(map(repr, UNIVARIATE))}, got {univariate!r}",
            )
        dt = check_dt(dt)
        names, columns, index = _price_columns(prices)
        fits: dict[str, GARCHFitResult] = {}
        for sym, p in zip(names, columns, strict=True):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fits[sym] = GARCH.fit(p, dt=dt, dist=dist, mean=mean, o=o, max_iter=max_iter)
            for w in caught:  # re-issued with the symbol it is about
                warnings.warn(f"{sym}: {w.message}", w.category, stacklevel=2)
        z = np.column_stack([fits[s].std_resid for s in names])
        qbar = qbar_of(z)
        x, opt = _maximise(z, qbar, max_iter)
        converged = bool(opt.success)
        notes: list[str] = []
        if not converged:
            msg = f"DCC fit did not converge: {opt.message} after {opt.nit} iterations"
            warnings.warn(msg, DCCConvergenceWarning, stacklevel=2)
            notes.append(msg)
        if x[0] < 1e-6 or x.sum() >= _MAX_PERSISTENCE - 1e-9:
            notes.append(
                "a or a + b is at the edge of the parameter space (no correlation dynamics, "
                "or integrated ones): the standard errors are not reliable there"
            )
        terms = correlation_terms(x[0], x[1], z, qbar, scores=True)
        cov, naive = _two_step_covariance(fits, names, z, x, terms)
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        se_naive = np.sqrt(np.clip(np.diag(naive), 0.0, None))
        model = cls(a=float(x[0]), b=float(x[1]), qbar=qbar, symbols=tuple(names), dt_fit=dt)
        ll_c = float(terms.ll.sum())
        return DCCFitResult(
            model=model,
            params={"a": float(x[0]), "b": float(x[1])},
            std_err={"a": float(se[0]), "b": float(se[1])},
            loglik=ll_c + sum(f.loglik for f in fits.values()),
            loglik_correlation=ll_c,
            nobs=z.shape[0],
            converged=converged,
            univariate=fits,
            correlation=terms.r,
            std_resid=z,
            cov=cov,
            last_prices={s: float(p[-1]) for s, p in zip(names, columns, strict=True)},
            index=index,
            notes=tuple(notes),
            extra={
                "std_err_naive": {"a": float(se_naive[0]), "b": float(se_naive[1])},
                "iterations": int(opt.nit),
            },
        )


def _price_columns(prices: Any) -> tuple[list[str], list[FloatArray], Any]:
    """Symbol names, validated price arrays and the returns' index (dates, if any)."""
    if isinstance(prices, Mapping):
        items = list(prices.items())
        first: Any = items[0][1] if items else None
        for name, series in items[1:]:
            if (
                hasattr(first, "index")
                and hasattr(series, "index")
                and not first.index.equals(series.index)
            ):
                raise DataError(
                    f"prices are misaligned: {name!r} has {len(series.index)} dates, "
                    f"{items[0][0]!r} {len(first.index)} (or other dates); join them on common "
                    "dates first (e.g. pandas.DataFrame(series).dropna())"
                )
            if len(series) != len(first):
                raise DataError(
                    f"prices are misaligned: {name!r} has {len(series)} values, {items[0][0]!r} {len(first)}"
                )
    elif hasattr(prices, "columns") and hasattr(prices, "items"):
        items = list(prices.items())
    else:
        raise DataError(
            f"DCC.fit needs a pandas DataFrame (one price column per symbol) or a mapping "
            f"{{symbol: prices}}, got {type(prices).__name__}"
        )
    if len(items) < 2:
        raise DataError(
            f"DCC.fit needs at least 2 symbols, got {len(items)}: {[str(k) for k, _ in items]}"
        )
    names = [str(k) for k, _ in items]
    if len(set(names)) != len(names):
        raise DataError(f"DCC.fit: symbol names must be distinct, got {names}")
    columns = [
        validate_prices(v, name=f"prices of {k!r}", min_obs=MIN_OBSERVATIONS) for k, v in items
    ]
    first_values = items[0][1]
    index = list(first_values.index[1:]) if hasattr(first_values, "index") else None
    return names, columns, index


def _objective(z: FloatArray, qbar: FloatArray, d: FloatArray) -> Any:
    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        with np.errstate(all="ignore"):
            terms = correlation_terms(float(x[0]), float(x[1]), z, qbar, scores=True, d=d)
            assert terms.scores is not None
            f = -float(terms.ll.mean())
            g = -terms.scores.mean(axis=0)
        if not (math.isfinite(f) and np.all(np.isfinite(g))):
            return 1e10, np.zeros(2)
        return f, g

    return fun


def _maximise(z: FloatArray, qbar: FloatArray, max_iter: int) -> tuple[FloatArray, Any]:
    """SLSQP from the best point of a 3 x 3 grid, under ``a + b <= 1 - 1e-6``."""
    best, best_ll = (0.02, 0.9), -math.inf
    d = outer_dev(z, qbar)
    for a in (0.01, 0.03, 0.08):
        for pers in (0.7, 0.9, 0.97):
            with np.errstate(all="ignore"):
                ll = float(correlation_terms(a, pers - a, z, qbar, d=d).ll.sum())
            if ll > best_ll:
                best, best_ll = (a, pers - a), ll
    opt = optimize.minimize(
        _objective(z, qbar, d),
        np.asarray(best),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0), (0.0, 1.0)],
        constraints=[
            {
                "type": "ineq",
                "fun": lambda x: _MAX_PERSISTENCE - x[0] - x[1],
                "jac": lambda x: np.array([-1.0, -1.0]),
            }
        ],
        options={"maxiter": max_iter, "ftol": 1e-12},
    )
    x = np.clip(np.asarray(opt.x, dtype=np.float64), 0.0, 1.0)
    if x.sum() > _MAX_PERSISTENCE:
        x[1] = _MAX_PERSISTENCE - x[0]
    return x, opt


def _mean_score(z: FloatArray, qbar: FloatArray, x: FloatArray) -> FloatArray:
    terms = correlation_terms(float(x[0]), float(x[1]), z, qbar, scores=True)
    assert terms.scores is not None
    out: FloatArray = terms.scores.mean(axis=0)
    return out


def _first_step(fit: GARCHFitResult) -> tuple[_Spec, FloatArray]:
    """The estimation spec and parameter vector of a univariate fit."""
    spec = _Spec(
        returns=fit.returns,
        backcast=fit.backcast,
        dist=str(fit.extra["dist"]),
        mean=str(fit.extra["mean"]),
        o=int(fit.extra.get("o", 0)),
    )
    return spec, np.asarray([fit.params[name] for name in spec.names], dtype=np.float64)


def _dz_dtheta(spec: _Spec, theta: FloatArray) -> FloatArray:
    """``d z_t / d theta`` of one series, shape ``(k, T)``; ``z = (r - mu) / sigma``.

    ``dz = -dmu / sigma - z dsigma2 / (2 sigma2)``, with the variance derivatives of the
    GARCH recursion (``_garch_recursion.variance_and_gradient``, rows ``[mu,] omega, alpha,
    beta``); the shape parameters (``nu``) do not move ``z``.
    """
    terms = _loglik_terms(spec, theta)
    sigma = np.sqrt(terms.sigma2)
    z = (spec.returns - spec.unpack(theta)[0]) / sigma
    out = np.zeros((theta.size, z.size))
    k_var = terms.dsig.shape[0]
    out[:k_var] = -z * terms.dsig / (2.0 * terms.sigma2)
    if spec.with_mu:
        out[0] -= 1.0 / sigma
    return out


def cross_derivative(
    fits: Mapping[str, GARCHFitResult], names: Sequence[str], z: FloatArray, x: FloatArray
) -> list[FloatArray]:
    """``d(mean (a, b) score) / d theta_i`` per symbol, each ``(2, k_i)`` (``H21``).

    The score moves with ``theta_i`` only through ``z_i`` (and ``Qbar``, a function of
    ``z``): ``sum_t d(score)/dz_ti dz_ti/dtheta_i``. ``d(score)/dz`` is the adjoint
    gradient ``loglik_gradient_z`` differentiated in ``a`` and ``b`` by central
    differences (step 1e-6: truncation ~1e-12, rounding ~1e-10 relative), four adjoint
    passes in all whatever the number of symbols.
    """
    t = z.shape[0]
    h = 1e-6
    dscore = np.empty((2, *z.shape))
    for k in range(2):
        step = np.zeros(2)
        step[k] = h
        up = loglik_gradient_z(float(x[0] + step[0]), float(x[1] + step[1]), z)
        down = loglik_gradient_z(float(x[0] - step[0]), float(x[1] - step[1]), z)
        dscore[k] = (up - down) / (2.0 * h * t)
    out = []
    for i, name in enumerate(names):
        spec, theta = _first_step(fits[name])
        out.append(dscore[:, :, i] @ _dz_dtheta(spec, theta).T)
    return out


def _two_step_covariance(
    fits: Mapping[str, GARCHFitResult],
    names: Sequence[str],
    z: FloatArray,
    x: FloatArray,
    terms: CorrelationTerms,
) -> tuple[FloatArray, FloatArray]:
    """Engle & Sheppard (2001) two-step covariance of ``(a, b)`` and the naive one (module doc)."""
    t = z.shape[0]
    qbar = qbar_of(z)
    assert terms.scores is not None
    s2 = terms.scores
    h22 = _hessian(lambda y: _mean_score(z, qbar, y), x)
    blocks_h: list[FloatArray] = []
    scores1: list[FloatArray] = []
    for name in names:
        spec, theta = _first_step(fits[name])

        def grad(y: FloatArray, spec: _Spec = spec) -> FloatArray:
            with np.errstate(all="ignore"):
                return _loglik_terms(spec, y).gradient(spec.with_mu)

        blocks_h.append(_hessian(grad, theta))
        scores1.append(_loglik_terms(spec, theta).scores(spec.with_mu))
    cross = cross_derivative(fits, names, z, x)
    k1 = sum(h.shape[0] for h in blocks_h)
    a_mat = np.zeros((k1 + 2, k1 + 2))
    pos = 0
    for h, c in zip(blocks_h, cross, strict=True):
        m = h.shape[0]
        a_mat[pos : pos + m, pos : pos + m] = h
        a_mat[k1:, pos : pos + m] = c
        pos += m
    a_mat[k1:, k1:] = h22
    s = np.concatenate([*scores1, s2], axis=1)
    b_mat = s.T @ s / t
    a_inv = np.linalg.inv(a_mat)
    full = a_inv @ b_mat @ a_inv.T / t
    h22_inv = np.linalg.inv(h22)
    naive = h22_inv @ (s2.T @ s2 / t) @ h22_inv.T / t
    cov: FloatArray = full[k1:, k1:]
    return cov, naive


def _empty() -> FloatArray:
    return np.empty(0)


@dataclass(frozen=True, eq=False)
class DCCFitResult:
    """Outcome of :meth:`DCC.fit`.

    Attributes
    ----------
    model
        The fitted :class:`DCC` (``a``, ``b``, ``Qbar``, symbols), ready to drive a market
        (``Market.from_fit(fit)``).
    params, std_err
        ``{"a", "b"}`` and their two-step sandwich standard errors (module docstring).
    loglik
        Sum of the univariate log-likelihoods (of the unscaled log returns) and the
        correlation log-likelihood ``loglik_correlation`` (Engle 2002, eq. 26): the
        Gaussian log-likelihood of the returns when ``dist="normal"``.
    nobs
        Returns per symbol.
    univariate
        The first-step fits, ``{symbol: GARCHFitResult}``.
    correlation
        The fitted correlation path ``R_t``, shape ``(nobs, N, N)``; ``R_t`` is the
        correlation of return ``t`` given the past.
    std_resid
        The standardised residuals ``z``, shape ``(nobs, N)``.
    cov
        Covariance of ``(a, b)``, 2x2.
    last_prices
        Last price of each symbol (where a market driven by the fit starts).
    """

    model: DCC
    params: Mapping[str, float]
    std_err: Mapping[str, float]
    loglik: float
    loglik_correlation: float
    nobs: int
    converged: bool
    univariate: Mapping[str, GARCHFitResult]
    correlation: FloatArray = field(default_factory=_empty, repr=False)
    std_resid: FloatArray = field(default_factory=_empty, repr=False)
    cov: FloatArray = field(default_factory=_empty, repr=False)
    last_prices: Mapping[str, float] = field(default_factory=dict)
    index: Any = field(default=None, repr=False)
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        return list(self.model.symbols)

    def conf_int(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Wald intervals ``estimate ± z * std_err`` for ``a`` and ``b``."""
        from scipy.stats import norm

        q = float(norm.ppf(0.5 + level / 2))
        return {
            k: (v - q * self.std_err[k], v + q * self.std_err[k]) for k, v in self.params.items()
        }

    def pair_correlation(self, first: str, second: str) -> FloatArray:
        """The fitted path of one pair's correlation ``R_t[first, second]``, shape ``(nobs,)``.

        Raises
        ------
        DataError
            If a symbol is not one of the fit's.
        """
        for sym in (first, second):
            if sym not in self.model.symbols:
                raise DataError(f"{sym!r} is not a symbol of this fit; symbols: {self.symbols}")
        i, j = (self.model.symbols.index(s) for s in (first, second))
        out: FloatArray = self.correlation[:, i, j]
        return out

    def correlation_frame(self) -> Any:
        """Every pair's fitted correlation path as a pandas DataFrame (for plotting).

        Columns ``"A/B"`` for each pair ``A < B`` in symbol order; the index is the dates
        of the returns (the prices' index without its first entry) when the prices had one.
        """
        import pandas as pd

        syms = self.model.symbols
        cols = {
            f"{a}/{b}": self.correlation[:, i, j]
            for i, a in enumerate(syms)
            for j, b in enumerate(syms)
            if i < j
        }
        return pd.DataFrame(cols, index=self.index)

    def summary(self) -> str:
        """Plain-text table of ``a``, ``b``, the univariate fits and ``Qbar``."""
        lines = [
            f"DCC(1,1) fit, two-step QML ({len(self.symbols)} symbols: {', '.join(self.symbols)})",
            "=" * 64,
            f"{'observations':<16}{self.nobs:>12d}    {'log-likelihood':<16}{self.loglik:>12.4f}",
            f"{'corr. loglik':<16}{self.loglik_correlation:>12.4f}    {'converged':<16}{self.converged!s:>12}",
            "-" * 64,
            f"{'parameter':<12}{'estimate':>14} {'std err':>13} {'naive se':>13}",
        ]
        naive = self.extra.get("std_err_naive", {})
        for k, v in self.params.items():
            lines.append(
                f"{k:<12}{v:>14.6g} {self.std_err[k]:>13.6g} {naive.get(k, math.nan):>13.6g}"
            )
        lines.append("-" * 64)
        for s, f in self.univariate.items():
            p = ", ".join(f"{k}={v:.4g}" for k, v in f.params.items())
            lines.append(f"{s:<8} garch ({f.extra['dist']}): {p}")
        lines.append("=" * 64)
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return f"<pre class='quoteflow-fit'>{html.escape(self.summary())}</pre>"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: parameters, std errors, ``Qbar``, univariate fits."""
        return {
            "model": "dcc",
            "symbols": self.symbols,
            "params": dict(self.params),
            "std_err": dict(self.std_err),
            "qbar": [list(r) for r in self.model.qbar],
            "loglik": self.loglik,
            "loglik_correlation": self.loglik_correlation,
            "nobs": self.nobs,
            "converged": self.converged,
            "univariate": {s: f.to_dict() for s, f in self.univariate.items()},
            "notes": list(self.notes),
        }


class DCCTracker:
    """The DCC recursion as streaming state: the current ``R_t``, updated by each step's shocks.

    :meth:`factor` gives the Cholesky factor of the current correlation (the market
    correlates its next shocks with it); :meth:`update` feeds the standardised shocks
    actually drawn, ``Q <- (1 - a_h - b_h) Qbar + a_h z z' + b_h Q`` with the per-step
    coefficients of :meth:`DCC.step_coefficients`. Starts at ``Q = Qbar``.
    """

    def __init__(self, model: DCC, dt: float) -> None:
        self.model = model
        self.a_h, self.b_h = model.step_coefficients(dt)
        self._qbar = model.qbar_matrix
        self.q = self._qbar.copy()
        self._set_r()

    def _set_r(self) -> None:
        s = np.sqrt(np.diag(self.q))
        r = self.q / np.outer(s, s)
        np.fill_diagonal(r, 1.0)
        self.r: FloatArray = r
        self._chol: FloatArray = np.linalg.cholesky(r)

    @property
    def correlation(self) -> FloatArray:
        """The current ``R_t``, the correlation of the next shocks."""
        return self.r.copy()

    def factor(self) -> FloatArray:
        """Cholesky factor ``L`` of the current ``R_t`` (``L L' = R_t``)."""
        return self._chol

    def update(self, z: FloatArray) -> None:
        """Advance the recursion with the standardised shocks ``z`` (shape ``(N,)``) drawn."""
        c = 1.0 - self.a_h - self.b_h
        self.q = c * self._qbar + self.a_h * np.outer(z, z) + self.b_h * self.q
        self._set_r()
