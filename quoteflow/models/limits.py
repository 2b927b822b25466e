"""What a price model can simulate: the parameter rules every door checks.

A model's parameters are checked twice, by the same functions whatever the door (Python,
``PUT /symbols/{symbol}``, TOML config, ``quoteflow simulate --param``, notebook sliders):

1. on construction, without a time step: every number is a finite real (an integer too
   large for a float is refused, not overflowed), positive where the model needs it, and
   categorical options are among their values (:func:`finite_param`,
   :func:`positive_param`, :func:`param_in_range`);
2. for the step ``dt`` (years) it is simulated or streamed at, by
   ``PriceModel.check_step(dt)``: each figure of one step must stay in a range where a
   price is still a price after the step (:func:`step_bound`):

   - the drift of the log price over one step, at most :data:`MAX_STEP_DRIFT` (one
     e-fold) in absolute value (GBM ``|mu| dt``, GARCH ``|mu h| / scale``);
   - the standard deviation of the log price over one step, at most :data:`MAX_STEP_VOL`
     (GBM ``sigma sqrt(dt)``, mean reversion ``sd`` of its exact AR(1) step, GARCH the
     unconditional per-step volatility ``sqrt(h omega / (1 - alpha - beta)) / scale``);
   - levels in price units (mean-reversion ``theta``, start prices) within
     [:data:`MIN_PRICE`, :data:`MAX_PRICE`];
   - GARCH ``scale`` within [:data:`MIN_SCALE`, :data:`MAX_SCALE`].

A violation is a :class:`~quoteflow.errors.ParameterError` naming the parameter, its value
and its allowed range given the other parameters and ``dt``. The bounds are about what can
be simulated, not about what is plausible: at the default stream step (a quarter of a
trading day per tick, ``dt = 1/1008``) GBM accepts ``|mu| <= 1008`` and ``sigma <= 31.7``.
A path of valid parameters can still leave the price range after many steps (a drift of one
e-fold per step doubles the exponent fast); the market guards that case itself (see
``quoteflow.market``, "Price guard" in docs/market.md).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from quoteflow.errors import ParameterError

__all__ = [
    "MAX_PRICE",
    "MAX_SCALE",
    "MAX_STEP_DRIFT",
    "MAX_STEP_VOL",
    "MIN_PRICE",
    "MIN_SCALE",
    "finite_param",
    "param_in_range",
    "positive_param",
    "short_repr",
    "step_bound",
]

#: Largest absolute drift of the log price over one step (one e-fold).
MAX_STEP_DRIFT = 1.0
#: Largest standard deviation of the log price over one step: a 6-sigma shock then moves
#: the price by at most a factor ``e**7``, well inside the float range.
MAX_STEP_VOL = 1.0
#: Price levels (start prices, mean-reversion ``theta``) and the range the market keeps
#: every streamed price in. Below 1e-6 a quote loses its 4 significant digits (quotes have
#: at most 12 decimals); above 1e12 cents no longer fit exactly in a float's 53 bits with
#: the spread arithmetic.
MIN_PRICE = 1e-6
MAX_PRICE = 1e12
#: GARCH ``scale``: 1 (fractions), 100 (percent) and 10,000 (basis points) all fit.
MIN_SCALE = 1e-4
MAX_SCALE = 1e4


def finite_param(model: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or a :class:`ParameterError` naming ``model`` and ``name``.

    Booleans and non-numbers are refused; an integer beyond the float range (e.g. 400
    digits from a JSON body) is refused as not finite instead of raising ``OverflowError``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ParameterError(
            name,
            f"{model}: parameter {name} must be a real number, got {type(value).__name__} "
            f"{short_repr(value)}",
        )
    try:
        x = float(value)
    except OverflowError:
        x = math.inf if value > 0 else -math.inf
    if not math.isfinite(x):
        raise ParameterError(
            name, f"{model}: parameter {name} must be finite, got {short_repr(value)}"
        )
    return x


def positive_param(model: str, name: str, value: Any) -> float:
    """``value`` as a finite float ``> 0``, or a :class:`ParameterError` naming it."""
    x = finite_param(model, name, value)
    if x <= 0.0:
        raise ParameterError(name, f"{model}: parameter {name} must be > 0 (finite), got {x!r}")
    return x


def param_in_range(model: str, name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as a finite float in ``[lo, hi]``, or a :class:`ParameterError` naming it."""
    x = finite_param(model, name, value)
    if not lo <= x <= hi:
        raise ParameterError(
            name, f"{model}: parameter {name} = {x:.6g} is out of range; allowed: [{lo:g}, {hi:g}]"
        )
    return x


def step_bound(
    model: str,
    quantity: str,
    value: float,
    limit: float,
    dt: float,
    blame: Sequence[tuple[str, float, str]],
    changed: Collection[str] = (),
) -> None:
    """Check one per-step rule ``value <= limit`` (a NaN fails it too).

    Parameters
    ----------
    model
        Short model name for the message.
    quantity
        What ``value`` is, as a formula (e.g. ``"sigma * sqrt(dt)"``).
    value, limit
        The per-step figure computed from the parameters, and its bound.
    dt
        The step in years.
    blame
        Candidate parameters ``(name, current value, allowed range at this dt)``, most
        likely culprit first.
    changed
        Parameters the caller just changed: the first candidate among them is named, so
        that ``PUT {"scale": 0.001}`` blames ``scale``, not ``omega``.

    Raises
    ------
    ParameterError
        Naming the parameter, its value, the rule and the allowed range.
    """
    if value <= limit:
        return
    name, current, allowed = next((b for b in blame if b[0] in changed), blame[0])
    raise ParameterError(
        name,
        f"{model}: parameter {name} = {current:.6g} cannot be simulated at a step of "
        f"dt = {dt:.6g} years: {quantity} = {value:.4g} exceeds {limit:g}; "
        f"allowed at this dt: {allowed}",
    )


def short_repr(value: Any) -> str:
    """``repr`` of a value, shortened (a 400-digit integer is not worth echoing)."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = int(abs(value).bit_length() * math.log10(2)) + 1  # no str(): 4300-digit cap
        if digits > 30:
            return f"an integer of about {digits} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
