"""Shared parts of every price model: input validation, the result object, the model protocol.

Every model is a frozen dataclass of annualised parameters (``dt`` in years), validated on
construction, with

- ``Model.fit(prices, dt=1/252) -> FitResult`` (classmethod, maximum likelihood),
- ``model.simulate(n_steps, n_paths=1, s0=100.0, dt=1/252, seed=None)`` -> array
  ``(n_steps + 1, n_paths)`` whose first row is ``s0``,
- ``model.stepper(s0, dt)`` -> :class:`Stepper`, the streaming form: state for ``n`` paths
  (symbols) advanced one step at a time by externally supplied standard-normal shocks, so
  that a market can correlate the shocks across symbols.

This module imports numpy only; models never import anything above them (see DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from quoteflow.errors import DataError
from quoteflow.models.tails import MIN_TAIL_OBSERVATIONS, TailDiagnostics, tail_diagnostics

__all__ = [
    "MIN_OBSERVATIONS",
    "FitResult",
    "FloatArray",
    "PriceModel",
    "Stepper",
    "validate_prices",
]

#: 1-D float array, e.g. a price series of shape ``(n,)``.
FloatArray: TypeAlias = npt.NDArray[np.float64]
#: Anything a fit accepts as prices: a 1-D array, list or pandas Series.
PriceLike: TypeAlias = "npt.ArrayLike"

#: Fewer prices than this cannot identify a model's parameters with any confidence.
MIN_OBSERVATIONS = 30


def validate_prices(
    prices: Any, *, name: str = "prices", min_obs: int = MIN_OBSERVATIONS
) -> FloatArray:
    """Return ``prices`` as a clean 1-D float64 array, or raise a clear :class:`DataError`.

    Parameters
    ----------
    prices
        1-D array, list or pandas Series of strictly positive prices.
    name
        What to call the input in error messages.
    min_obs
        Minimum number of prices.

    Raises
    ------
    DataError
        (a ``ValueError``) naming the problem and the index of the first bad value: not 1-D,
        non-numeric, NaN, inf, zero or negative values, too few points, constant series.
    """
    index: Sequence[Any] | None = None
    if hasattr(prices, "index") and hasattr(prices, "to_numpy"):  # pandas Series
        index = list(prices.index)
        prices = prices.to_numpy()
    try:
        arr = np.asarray(prices, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got an array of shape {arr.shape}")

    def where(i: int) -> str:
        label = f" ({index[i]})" if index is not None else ""
        return f"index {i}{label}"

    bad = np.flatnonzero(np.isnan(arr))
    if bad.size:
        raise DataError(
            f"{name} contain NaN at {where(int(bad[0]))} ({bad.size} NaN values in all)"
        )
    bad = np.flatnonzero(np.isinf(arr))
    if bad.size:
        raise DataError(f"{name} contain inf at {where(int(bad[0]))}")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise DataError(
            f"{name} must be positive: value {float(arr[bad[0]])!r} at {where(int(bad[0]))}"
        )
    if arr.size < min_obs:
        raise DataError(f"{name} too short: {arr.size} values, need at least {min_obs}")
    if np.all(arr == arr[0]):
        raise DataError(f"{name} are constant ({float(arr[0])!r}): no returns to fit")
    return arr


class Stepper(ABC):
    """Streaming state of ``n`` independent paths of one model.

    ``prices`` holds the current price of each path (shape ``(n,)``). :meth:`step` advances
    every path by one step of length ``dt`` years using the given standard-normal shocks and
    returns the new prices. Models whose innovations are not normal map the normal shock
    through the normal CDF and their own inverse CDF (a Gaussian copula), so correlation
    applied to the normal shocks carries over.
    """

    prices: FloatArray
    dt: float

    @abstractmethod
    def step(self, z: FloatArray) -> FloatArray:
        """Advance one step with standard-normal shocks ``z`` (shape ``(n,)``); return new prices."""

    def reseed(self, paths: Any, prices: Any) -> None:
        """Restart some paths at given prices, with a fresh model state.

        The market's price guard calls this for a path whose price left the range it can
        stream (``quoteflow.models.limits.MIN_PRICE`` .. ``MAX_PRICE``) or stopped being
        finite: the path continues from ``prices`` as if it had just started there (a
        GARCH path also restarts at its unconditional variance).

        Parameters
        ----------
        paths
            Index (or indices) of the paths in :attr:`prices`.
        prices
            New price(s) of those paths, finite and ``> 0``.
        """
        new = self.prices.copy()
        new[paths] = prices
        self.prices = new

    def set_model(self, model: PriceModel) -> None:
        """Continue the current paths with the parameters of ``model`` from the next step on.

        The market calls this when parameters change while streaming (notebook sliders,
        ``PUT /symbols``). Current prices are kept; only the dynamics change. ``model`` must
        be of the same class as the stepper's model (to switch class, build a new stepper
        from ``new_model.stepper(stepper.prices, stepper.dt)``). Implementations make the
        swap a single attribute assignment so a concurrent :meth:`step` sees either the old
        or the new parameters, never a mix.

        Raises
        ------
        TypeError
            If ``model`` is of another model class.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support changing parameters")

    def gap(self, z: FloatArray, tau: float) -> FloatArray:
        """Advance every path over a closed period worth ``tau`` years of model time, in one step.

        The market calls this for the first tick of a trading session (the overnight or
        weekend gap, docs/market.md "Trading sessions"): one draw per path from the model's
        own distribution over the horizon ``tau``, with the standard-normal shocks ``z``
        (correlated by the market like every other step). ``tau`` is not limited by
        ``check_step``: a gap is one move, and the market's price guard catches a price
        that leaves the streamable range.

        Parameters
        ----------
        z
            Standard-normal shocks, shape ``(n,)``.
        tau
            Model time of the gap in years, ``>= 0``.

        Returns
        -------
        ndarray
            The new prices, shape ``(n,)``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not model a closed-period gap")


_M = TypeVar("_M", bound="PriceModel")


def require_model(stepper: Stepper, model: PriceModel, cls: type[_M]) -> _M:
    """``model`` as a ``cls`` that can be stepped at ``stepper.dt``.

    Raises
    ------
    TypeError
        Saying how to switch model class.
    ParameterError
        From ``model.check_step(stepper.dt)``: a parameter that cannot be simulated at
        this step.
    """
    if not isinstance(model, cls):
        raise TypeError(
            f"{type(stepper).__name__}.set_model needs a {cls.__name__}, got "
            f"{type(model).__name__}; build a new stepper with "
            "model.stepper(stepper.prices, stepper.dt)"
        )
    model.check_step(stepper.dt)
    return model


class PriceModel(ABC):
    """Protocol of the price models. Subclasses are frozen dataclasses of their parameters."""

    #: Short name used on the command line and in JSON: "gbm", "meanrev", "garch".
    name: ClassVar[str]
    #: Parameter names in the order of ``FitResult.params``.
    param_names: ClassVar[tuple[str, ...]]
    #: Public parameter names that are not valid Python identifiers, mapped to the field
    #: holding them (GARCH's skew-t ``lambda`` is the field ``lam``). ``params()``,
    #: :meth:`with_params` and the registry speak the public names.
    param_aliases: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def field_name(cls, public: str) -> str:
        """The dataclass field that holds the parameter called ``public``."""
        return cls.param_aliases.get(public, public)

    @classmethod
    def public_name(cls, field_name: str) -> str:
        """The parameter name of the dataclass field ``field_name`` (inverse of :meth:`field_name`)."""
        for public, name in cls.param_aliases.items():
            if name == field_name:
                return public
        return field_name

    @classmethod
    @abstractmethod
    def fit(cls, prices: Any, dt: float = 1 / 252) -> FitResult:
        """Maximum-likelihood fit on a price series (see the subclass for the likelihood)."""

    @abstractmethod
    def simulate(
        self,
        n_steps: int,
        n_paths: int = 1,
        s0: float = 100.0,
        dt: float = 1 / 252,
        seed: int | np.random.Generator | None = None,
    ) -> FloatArray:
        """Simulate price paths, shape ``(n_steps + 1, n_paths)``, first row ``s0``."""

    @abstractmethod
    def check_step(self, dt: float, changed: Collection[str] = ()) -> None:
        """Check that the model can be simulated with steps of ``dt`` years.

        The rules (per-step drift and volatility of the log price, price levels, scale) are
        in :mod:`quoteflow.models.limits`; ``simulate`` and every stepper apply them, and
        the market calls this before it changes a symbol's model.

        Parameters
        ----------
        dt
            Step length in years.
        changed
            Names of parameters just changed; a rule that several parameters take part in
            blames one of these first.

        Raises
        ------
        ParameterError
            (a ``ValueError``) naming the parameter and its allowed range at this ``dt``.
        """

    @abstractmethod
    def stepper(self, s0: float | FloatArray, dt: float) -> Stepper:
        """Streaming state for ``len(s0)`` paths starting at ``s0``."""

    def params(self) -> dict[str, float]:
        """Parameters as a plain dict (JSON-safe floats; strings for categorical ones)."""
        return {
            self.public_name(f.name): getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def with_params(self, **changes: Any) -> PriceModel:
        """A copy with some parameters changed (validated like a new model)."""
        known = [self.public_name(f.name) for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for {self.name}; known: {known}"
            )
        fields = {self.field_name(k): v for k, v in changes.items()}
        return dataclasses.replace(self, **fields)  # type: ignore[type-var]


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    return f"{x:.6g}"


@dataclass(frozen=True)
class FitResult:
    """Outcome of a maximum-likelihood fit.

    Attributes
    ----------
    model
        The fitted model, ready to simulate or stream.
    params, std_err
        Estimates and their standard errors, keyed by parameter name.
    loglik
        Maximised log-likelihood (of the returns / log-price transitions, see the model).
    nobs
        Number of observations in the likelihood.
    converged
        False when the optimiser did not converge (a warning is issued too).
    dt
        Time step of the data in years.
    extra
        Model-specific results (e.g. GARCH conditional volatility); JSON-unsafe values are
        left out of :meth:`to_dict`.
    std_resid
        Standardised residuals of the fitted likelihood, one per observation: the
        innovations the model implies, ``(r_t - E[r_t]) / sd(r_t)`` given the past, which
        are iid with mean 0 and variance 1 when the model is right (check them for
        autocorrelation, fat tails, ARCH effects).
    tails
        (property) :class:`~quoteflow.models.tails.TailDiagnostics` of ``std_resid``:
        excess kurtosis, Jarque-Bera and the Hill tail index with ``k = floor(sqrt(n))``;
        ``None`` with fewer than 16 finite residuals.
    """

    model: PriceModel
    params: Mapping[str, float]
    std_err: Mapping[str, float]
    loglik: float
    nobs: int
    converged: bool = True
    dt: float = 1 / 252
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    std_resid: FloatArray = field(default_factory=lambda: np.empty(0), compare=False, repr=False)

    @cached_property
    def tails(self) -> TailDiagnostics | None:
        """Tail diagnostics of the standardised residuals (None where they do not apply)."""
        z = np.asarray(self.std_resid, dtype=np.float64)
        if np.count_nonzero(np.isfinite(z)) < MIN_TAIL_OBSERVATIONS:
            return None
        try:
            return tail_diagnostics(z)
        except DataError:  # constant residuals
            return None

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def aic(self) -> float:
        """Akaike information criterion, ``-2 loglik + 2 k``."""
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Bayesian information criterion, ``-2 loglik + k log(nobs)``."""
        return -2.0 * self.loglik + self.n_params * math.log(self.nobs)

    def conf_int(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Wald confidence intervals ``estimate ± z * std_err``."""
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2))
        return {
            k: (v - z * self.std_err[k], v + z * self.std_err[k]) for k, v in self.params.items()
        }

    def summary(self) -> str:
        """Plain-text table: model, fit statistics and parameters with std errors and t-stats."""
        title = f"{type(self.model).__name__} fit ({self.model.name})"
        lines = [
            title,
            "=" * 64,
            f"{'observations':<16}{self.nobs:>12d}    {'log-likelihood':<16}{self.loglik:>12.4f}",
            f"{'AIC':<16}{self.aic:>12.4f}    {'BIC':<16}{self.bic:>12.4f}",
            f"{'converged':<16}{self.converged!s:>12}    {'dt (years)':<16}{self.dt:>12.6g}",
            "-" * 64,
            # .6g prints at most 12 characters ("-1.23457e-17"): every column is wider than
            # that and starts with a space, so exponent-form values never run together.
            f"{'parameter':<12}{'estimate':>14} {'std err':>13} {'t':>13}  95% CI",
        ]
        ci = self.conf_int()
        for k, v in self.params.items():
            se = self.std_err.get(k, math.nan)
            t = v / se if se and math.isfinite(se) and se > 0 else math.nan
            lo, hi = ci[k]
            lines.append(
                f"{k:<12}{_fmt(v):>14} {_fmt(se):>13} {_fmt(t):>13}  [{_fmt(lo)}, {_fmt(hi)}]"
            )
        lines.append("=" * 64)
        if self.tails is not None:
            lines.append("standardised residuals")
            lines.extend(self.tails.lines())
            lines.append("=" * 64)
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td><td>{_fmt(self.std_err.get(k, math.nan))}</td></tr>"
            for k, v in self.params.items()
        )
        notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in self.notes)
        t = self.tails
        if t is not None:
            notes = (
                f"<p>Standardised residuals: excess kurtosis {_fmt(t.excess_kurtosis)}, "
                f"Jarque-Bera {_fmt(t.jarque_bera)} (p {_fmt(t.jarque_bera_pvalue)}), "
                f"Hill tail index {_fmt(t.hill_tail_index)} ± {_fmt(t.hill_se)} "
                f"(k = floor(sqrt(n)) = {t.hill_k})</p>"
            ) + notes
        return (
            f"<div class='quoteflow-fit'><strong>{html.escape(type(self.model).__name__)} fit</strong> "
            f"({self.nobs} obs, log-lik {self.loglik:.4f}, AIC {self.aic:.4f}, BIC {self.bic:.4f}, "
            f"converged: {self.converged})"
            "<table><thead><tr><th>parameter</th><th>estimate</th><th>std err</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{notes}</div>"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats become ``None``)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float | np.floating):
                return float(x) if math.isfinite(x) else None
            if isinstance(x, np.integer):
                return int(x)
            return x

        out: dict[str, Any] = {
            "model": self.model.name,
            "params": {k: clean(v) for k, v in self.params.items()},
            "std_err": {k: clean(v) for k, v in self.std_err.items()},
            "loglik": clean(self.loglik),
            "aic": clean(self.aic),
            "bic": clean(self.bic),
            "nobs": self.nobs,
            "converged": self.converged,
            "dt": self.dt,
            "notes": list(self.notes),
            "tail_diagnostics": None if self.tails is None else self.tails.to_dict(),
        }
        for k, v in self.extra.items():
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                continue
            out[k] = v
        return out
