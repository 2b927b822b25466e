"""Tail diagnostics of standardised residuals: excess kurtosis, Hill tail index, Jarque-Bera.

Every :class:`~quoteflow.models.base.FitResult` with standardised residuals reports these
(``FitResult.tails``, shown in its summary and ``to_dict()``): if the model is right the
residuals are iid with the innovation law, so a normal model should show excess kurtosis
near 0, a Jarque-Bera statistic near its chi-square(2) law and a large Hill tail index;
daily returns fitted with normal innovations typically fail all three.

numpy only, like :mod:`quoteflow.models.base` (the chi-square(2) survival function is
``exp(-x / 2)``, no scipy needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from quoteflow.errors import DataError

__all__ = ["MIN_TAIL_OBSERVATIONS", "TailDiagnostics", "hill_k", "tail_diagnostics"]

#: Fewer residuals than this give no tail diagnostics (``FitResult.tails`` is None): the
#: Hill estimator would use k = floor(sqrt(n)) < 4 order statistics.
MIN_TAIL_OBSERVATIONS = 16


def hill_k(n: int) -> int:
    """Number of upper order statistics the Hill estimator uses: ``k = floor(sqrt(n))``.

    ``k`` must grow with ``n`` while ``k / n -> 0`` for consistency (Hill 1975; Embrechts,
    Klüppelberg & Mikosch 1997, sec. 6.4); ``sqrt(n)`` is the usual rule of thumb that
    does both (it is not tuned to a particular data set).
    """
    return math.isqrt(n)


@dataclass(frozen=True)
class TailDiagnostics:
    """Tail diagnostics of ``n`` standardised residuals ``z``.

    Attributes
    ----------
    nobs
        Number of residuals used (the finite ones).
    excess_kurtosis
        ``m4 / m2**2 - 3`` with the biased central moments ``m_j = mean((z - mean z)**j)``
        (``scipy.stats.kurtosis`` with its defaults); 0 for a normal law, ``6 / (nu - 4)``
        for a Student-t with ``nu > 4``.
    skewness
        ``m3 / m2**1.5`` (``scipy.stats.skew``), which enters Jarque-Bera.
    hill_tail_index
        Hill's (1975) estimate ``alpha = 1 / H`` of the tail index of ``|z|``, with
        ``H = mean(log X_(i), i = 1..k) - log X_(k+1)`` over the order statistics
        ``X_(1) >= X_(2) >= ...`` of ``|z|`` and ``k = hill_k(n) = floor(sqrt(n))``. For a
        Student-t the tail index is ``nu``; for a normal law it is infinite (the estimate
        then grows with ``n``).
    hill_se
        Asymptotic standard error ``alpha / sqrt(k)`` (Hall 1982).
    hill_k
        The ``k`` used.
    jarque_bera
        ``n / 6 (S**2 + (K - 3)**2 / 4)`` (Jarque & Bera 1980), ``S`` skewness, ``K``
        kurtosis; chi-square(2) under normality.
    jarque_bera_pvalue
        ``P(chi2(2) > JB) = exp(-JB / 2)``.
    """

    nobs: int
    excess_kurtosis: float
    skewness: float
    hill_tail_index: float
    hill_se: float
    hill_k: int
    jarque_bera: float
    jarque_bera_pvalue: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats become ``None``)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        return out

    def lines(self) -> list[str]:
        """The rows the FitResult summary prints (64 columns, like the rest of it)."""
        return [
            f"{'excess kurtosis':<20}{self.excess_kurtosis:>12.4f}    "
            f"{'skewness':<16}{self.skewness:>12.4f}",
            f"{'Jarque-Bera':<20}{self.jarque_bera:>12.4g}    "
            f"{'JB p-value':<16}{self.jarque_bera_pvalue:>12.4g}",
            f"{'Hill tail index':<20}{self.hill_tail_index:>12.4f}    "
            f"{'Hill std err':<16}{self.hill_se:>12.4f}",
            f"  (Hill: k = floor(sqrt(n)) = {self.hill_k} largest |std resid| of n = {self.nobs})",
        ]


def tail_diagnostics(std_resid: Any) -> TailDiagnostics:
    """Excess kurtosis, skewness, Hill tail index and Jarque-Bera of standardised residuals.

    Parameters
    ----------
    std_resid
        1-D array of standardised residuals; non-finite values are dropped.

    Returns
    -------
    TailDiagnostics

    Raises
    ------
    DataError
        Fewer than :data:`MIN_TAIL_OBSERVATIONS` finite residuals, or all equal.

    References
    ----------
    Hill, B. M. (1975), "A simple general approach to inference about the tail of a
    distribution", *Ann. Statist.* 3, 1163-1174. Hall, P. (1982), "On some simple
    estimates of an exponent of regular variation", *J. R. Stat. Soc. B* 44, 37-42.
    Jarque, C. M. & Bera, A. K. (1980), "Efficient tests for normality,
    homoscedasticity and serial independence of regression residuals", *Economics
    Letters* 6, 255-259.
    """
    z = np.asarray(std_resid, dtype=np.float64).ravel()
    z = z[np.isfinite(z)]
    n = int(z.size)
    if n < MIN_TAIL_OBSERVATIONS:
        raise DataError(
            f"tail diagnostics need at least {MIN_TAIL_OBSERVATIONS} finite standardised "
            f"residuals, got {n}"
        )
    d = z - z.mean()
    m2 = float(np.mean(d * d))
    if m2 <= 0.0:
        raise DataError("tail diagnostics: the standardised residuals are constant")
    skew = float(np.mean(d**3)) / m2**1.5
    kurt = float(np.mean(d**4)) / m2**2
    jb = n / 6.0 * (skew * skew + (kurt - 3.0) ** 2 / 4.0)
    k = hill_k(n)
    top = np.sort(np.abs(z))[::-1][: k + 1]
    if top[k] > 0.0:
        h = float(np.mean(np.log(top[:k]))) - math.log(float(top[k]))
        alpha = 1.0 / h if h > 0.0 else math.inf
    else:  # more than n - k residuals are exactly 0: no tail to measure
        alpha = math.nan
    return TailDiagnostics(
        nobs=n,
        excess_kurtosis=kurt - 3.0,
        skewness=skew,
        hill_tail_index=alpha,
        hill_se=alpha / math.sqrt(k),
        hill_k=k,
        jarque_bera=jb,
        jarque_bera_pvalue=math.exp(-0.5 * jb),
    )
