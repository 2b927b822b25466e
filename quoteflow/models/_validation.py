"""Argument checks shared by every model: time step, simulate() sizes, start prices, shocks.

One home for these rules so that GBM, mean reversion and GARCH (and the next model)
refuse the same bad argument with the same message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quoteflow.models.base import FloatArray, PriceModel
from quoteflow.models.limits import finite_param

__all__ = ["check_dt", "check_gap", "check_shocks", "check_sim_args", "initial_prices"]


def check_dt(dt: Any) -> float:
    x = finite_param("dt", "dt", dt)
    if x <= 0.0:
        raise ValueError(f"dt must be a positive time step in years (e.g. 1/252), got {x!r}")
    return x


def check_gap(tau: Any) -> float:
    """The model time of a closed-period gap (``Stepper.gap``): finite years ``>= 0``."""
    x = finite_param("tau", "tau", tau)
    if x < 0.0:
        raise ValueError(f"tau must be a gap length in years >= 0, got {x!r}")
    return x


def check_sim_args(
    model: PriceModel, n_steps: Any, n_paths: Any, dt: Any
) -> tuple[int, int, float]:
    """Validate the common simulate() arguments (and ``model`` at ``dt``); return them."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
    if isinstance(n_paths, bool) or not isinstance(n_paths, int | np.integer) or n_paths < 1:
        raise ValueError(f"n_paths must be an integer >= 1, got {n_paths!r}")
    dt = check_dt(dt)
    model.check_step(dt)
    return int(n_steps), int(n_paths), dt


def initial_prices(s0: Any, n: int | None = None) -> FloatArray:
    """``s0`` as a float array of positive prices, broadcast to ``n`` paths if given."""
    arr = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"s0 must be a price or a 1-D array of prices, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
        raise ValueError(f"s0 must be finite and > 0, got {s0!r}")
    if n is not None:
        if arr.size not in (1, n):
            raise ValueError(f"s0 has {arr.size} prices but {n} paths were asked for")
        arr = np.broadcast_to(arr, (n,))
    return np.array(arr, dtype=np.float64)  # own, writable copy


def check_shocks(z: Any, n: int) -> FloatArray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"shocks z must have shape ({n},) (one per path), got {arr.shape}")
    return arr
