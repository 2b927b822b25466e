"""Price models and their calibration: GBM, mean reversion (exponential OU), GARCH(1,1);
DCC(1,1) correlations of several series (:class:`DCC`).

Every model scores the same data, the log returns ``r_i = log S_i - log S_{i-1}`` of the
price series (conditionally on the previous price where the model needs it), so their
log-likelihoods, AIC and BIC are directly comparable; :func:`compare` ranks them.
See docs/models.md for the likelihoods, standard errors and known biases.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from quoteflow.models.base import FitResult, PriceModel, Stepper, validate_prices
from quoteflow.models.dcc import DCC, DCCConvergenceWarning, DCCFitResult, DCCTracker
from quoteflow.models.garch import GARCH, GARCHConvergenceWarning, GARCHFitResult
from quoteflow.models.gbm import GBM
from quoteflow.models.innovations import INNOVATIONS, Innovation, Normal, SkewT, StudentT
from quoteflow.models.meanrev import MeanReversion
from quoteflow.models.means import ConstantMean, MeanPart, ZeroMean
from quoteflow.models.merton import MertonJump, MertonJumpConvergenceWarning
from quoteflow.models.registry import MODELS, build_model, model_from_spec

__all__ = [
    "DCC",
    "GARCH",
    "GBM",
    "INNOVATIONS",
    "MODELS",
    "Comparison",
    "ConstantMean",
    "DCCConvergenceWarning",
    "DCCFitResult",
    "DCCTracker",
    "FitResult",
    "GARCHConvergenceWarning",
    "GARCHFitResult",
    "Innovation",
    "MeanPart",
    "MeanReversion",
    "MertonJump",
    "MertonJumpConvergenceWarning",
    "Normal",
    "PriceModel",
    "SkewT",
    "Stepper",
    "StudentT",
    "ZeroMean",
    "build_model",
    "compare",
    "model_from_spec",
    "validate_prices",
]

#: What compare() fits: label -> fit function.
_CANDIDATES: dict[str, Callable[[Any, float], FitResult]] = {
    "gbm": lambda p, dt: GBM.fit(p, dt=dt),
    "meanrev": lambda p, dt: MeanReversion.fit(p, dt=dt),
    "garch-normal": lambda p, dt: GARCH.fit(p, dt=dt, dist="normal"),
    "garch-t": lambda p, dt: GARCH.fit(p, dt=dt, dist="t"),
    "garch-skewt": lambda p, dt: GARCH.fit(p, dt=dt, dist="skewt"),
    "gjr-t": lambda p, dt: GARCH.fit(p, dt=dt, dist="t", o=1),
    "gjr-skewt": lambda p, dt: GARCH.fit(p, dt=dt, dist="skewt", o=1),
    "merton": lambda p, dt: MertonJump.fit(p, dt=dt),
}

_COLUMNS = ["model", "loglik", "k", "aic", "bic", "delta_aic", "converged", "nobs", "error"]


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`: a ranked table plus the fits themselves.

    Attributes
    ----------
    table
        One row per candidate, ranked by AIC (best first; failed fits last), columns
        ``model, loglik, k, aic, bic, delta_aic, converged, nobs, error``. ``error`` holds
        the message of a fit that failed on this data, or the warnings a fit raised.
    fits
        The successful fits by label (``"gbm"``, ``"meanrev"``, ``"garch-normal"``,
        ``"garch-t"``).
    """

    table: pd.DataFrame
    fits: dict[str, FitResult] = field(default_factory=dict)

    @property
    def best(self) -> FitResult:
        """The fit with the lowest AIC."""
        if not self.fits:
            raise ValueError("no model could be fitted to these prices; see .table['error']")
        return self.fits[str(self.table.iloc[0]["model"])]

    def __str__(self) -> str:
        return self.table.to_string(index=False, float_format=lambda x: f"{x:.4f}")

    def _repr_html_(self) -> str:
        head = "<p><strong>Model comparison</strong> (ranked by AIC; lower is better)</p>"
        return head + self.table.to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: the ranking as a list of rows (non-finite floats become ``None``)."""
        rows: list[dict[str, Any]] = []
        for rec in self.table.to_dict(orient="records"):
            row: dict[str, Any] = {}
            for k, v in rec.items():
                if isinstance(v, float | np.floating):
                    row[str(k)] = float(v) if math.isfinite(v) else None
                elif isinstance(v, np.integer | np.bool_):
                    row[str(k)] = v.item()
                else:
                    row[str(k)] = v
            rows.append(row)
        return {"ranking": rows}


def compare(prices: Any, dt: float = 1 / 252) -> Comparison:
    """Fit every model to ``prices`` and rank them by AIC.

    Candidates: GBM, mean reversion, GARCH(1,1) with normal, Student-t and Hansen's
    skewed-t innovations, GJR-GARCH(1,1,1) (``o=1``) with t and skewed t, and the
    MertonJump jump-diffusion. All
    log-likelihoods are of the same data, the log returns
    (see docs/models.md), so AIC ``= -2 loglik + 2k`` (Akaike 1974) and BIC
    ``= -2 loglik + k log(nobs)`` (Schwarz 1978) are comparable across the table.

    Parameters
    ----------
    prices
        1-D array, list or pandas Series of positive prices.
    dt
        Time between two prices in years.

    Returns
    -------
    Comparison
        ``.table`` ranked by AIC; a model that cannot be fitted to this data (e.g. mean
        reversion on a trending series) is listed last with its error instead of raising.
        Warnings raised by a fit (e.g. non-convergence) are recorded in the ``error`` column
        rather than emitted.

    Raises
    ------
    DataError
        If the prices themselves are unusable (NaN, non-positive, too short, ...).
    """
    p = validate_prices(prices)
    rows: list[dict[str, Any]] = []
    fits: dict[str, FitResult] = {}
    for label, fit in _CANDIDATES.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = fit(p, dt)
            except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
                rows.append({"model": label, "converged": False, "error": str(exc)})
                continue
        fits[label] = res
        rows.append(
            {
                "model": label,
                "loglik": res.loglik,
                "k": res.n_params,
                "aic": res.aic,
                "bic": res.bic,
                "converged": bool(res.converged),
                "nobs": res.nobs,
                "error": "; ".join(str(w.message) for w in caught),
            }
        )
    table = pd.DataFrame(rows).reindex(columns=_COLUMNS)
    table = table.sort_values("aic", na_position="last", kind="stable").reset_index(drop=True)
    table["delta_aic"] = table["aic"] - table["aic"].min()
    table["k"] = table["k"].astype("Int64")
    table["nobs"] = table["nobs"].astype("Int64")
    table["error"] = table["error"].fillna("")
    return Comparison(table=table, fits=fits)
