"""Hot recursions of the GARCH(1,1) model, each with a plain reference version.

The GARCH(1,1) variance recursion (Bollerslev 1986, eq. 3)

    sigma2[t] = omega + alpha * e[t-1]**2 + beta * sigma2[t-1]

is sequential in ``t``. Two fast forms are used instead of a Python loop:

- Estimation: for a *fixed* parameter vector the recursion is a linear filter with the
  constant coefficient ``beta`` acting on the known input ``omega + alpha * e[t-1]**2``,
  so :func:`scipy.signal.lfilter` runs it in C (:func:`variance_filter`). Its
  derivatives with respect to the parameters are linear filters with the same
  coefficient, which gives analytic scores for free (:func:`variance_and_gradient`).
- Simulation: with pre-drawn shocks ``z`` the recursion becomes the affine map
  ``x[t] = a[t] * x[t-1] + c[t]`` with the time-varying coefficient
  ``a[t] = alpha * z[t-1]**2 + beta``. :func:`affine_scan` splits the time axis into
  blocks that are advanced side by side (vectorised across blocks), then stitches the
  blocks together; only positive numbers are multiplied and added, so there is no
  cancellation and the result agrees with the plain loop to rounding (~1e-15 relative).

The GJR form (Glosten, Jagannathan & Runkle 1993) adds ``gamma * e[t-1]**2 * 1{e[t-1] < 0}``
to the input; the pre-sample value of that term is ``backcast / 2`` (half the squared
residuals are negative on average), as in ``arch``'s ``garch_recursion``. It stays a
linear filter in ``beta``; ``gamma = 0`` is GARCH(1,1).

The ``*_reference`` functions are the plain loops the tests compare against.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = [
    "affine_scan",
    "affine_scan_reference",
    "backcast",
    "variance_and_gradient",
    "variance_filter",
    "variance_reference",
]

FloatArray = npt.NDArray[np.float64]

#: arch's backcast: exponentially weighted mean of the first 75 squared residuals.
BACKCAST_TAU = 75
BACKCAST_DECAY = 0.94


def backcast(resids: FloatArray) -> float:
    """Pre-sample value of ``sigma2`` and ``e**2`` used to start the recursion.

    Weighted mean of the first ``tau = min(75, n)`` squared residuals with weights
    ``0.94**i`` (``i = 0..tau-1``) normalised to sum to one; this is the definition used
    by the ``arch`` package (``GARCH.backcast``), which makes likelihoods comparable.
    """
    tau = min(BACKCAST_TAU, resids.shape[0])
    w = BACKCAST_DECAY ** np.arange(tau, dtype=np.float64)
    w /= w.sum()
    return float(np.dot(w, resids[:tau] ** 2))


def variance_reference(
    omega: float,
    alpha: float,
    beta: float,
    resids: FloatArray,
    backcast_value: float,
    gamma: float = 0.0,
) -> FloatArray:
    """Plain-loop GJR-GARCH(1,1,1) conditional variance (the definition; slow).

    ``sigma2[0] = omega + (alpha + gamma / 2 + beta) * backcast`` because the pre-sample
    squared residual and variance are set to the backcast, and the pre-sample negative
    squared residual to half of it (as in ``arch``).
    """
    n = resids.shape[0]
    sigma2 = np.empty(n)
    prev_e2 = backcast_value
    prev_neg = 0.5 * backcast_value
    prev_s2 = backcast_value
    for t in range(n):
        s2 = omega + alpha * prev_e2 + gamma * prev_neg + beta * prev_s2
        sigma2[t] = s2
        e = float(resids[t])
        prev_e2 = e * e
        prev_neg = prev_e2 if e < 0.0 else 0.0
        prev_s2 = s2
    return sigma2


def _lagged(x: FloatArray, first: float) -> FloatArray:
    """``x`` shifted one step later along axis 0, with ``first`` in front."""
    out = np.empty_like(x)
    out[0] = first
    out[1:] = x[:-1]
    return out


def _negative_squares(resids: FloatArray) -> FloatArray:
    """``e**2 * 1{e < 0}``."""
    out: FloatArray = np.where(resids < 0.0, resids * resids, 0.0)
    return out


def variance_filter(
    omega: float,
    alpha: float,
    beta: float,
    resids: FloatArray,
    backcast_value: float,
    gamma: float = 0.0,
) -> FloatArray:
    """GJR-GARCH(1,1,1) conditional variance via a constant-coefficient linear filter.

    Unrolling the recursion gives ``sigma2[t] = beta * sigma2[t-1] + u[t]`` with the
    known input ``u[t] = omega + alpha * e[t-1]**2 + gamma * e[t-1]**2 1{e[t-1] < 0}``
    (Bollerslev 1986; Glosten et al. 1993), i.e. an IIR filter ``1 / (1 - beta L)`` whose
    initial state ``beta * backcast`` carries the pre-sample variance. Same values as
    :func:`variance_reference`.
    """
    u = omega + alpha * _lagged(resids**2, backcast_value)
    if gamma != 0.0:
        u += gamma * _lagged(_negative_squares(resids), 0.5 * backcast_value)
    out: FloatArray = lfilter([1.0], [1.0, -beta], u, zi=[beta * backcast_value])[0]
    return out


def variance_and_gradient(
    omega: float,
    alpha: float,
    beta: float,
    resids: FloatArray,
    backcast_value: float,
    with_mu: bool,
    gamma: float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Conditional variance and its derivatives with respect to the parameters.

    Differentiating the recursion (Bollerslev 1986; Fiorentini, Calzolari & Panattoni
    1996 give the same analytic scores) gives, with the backcast held fixed as in
    ``arch``,

    - ``d sigma2[t]/d omega = 1 + beta * d sigma2[t-1]/d omega``,
    - ``d sigma2[t]/d alpha = e[t-1]**2 + beta * d sigma2[t-1]/d alpha``,
    - ``d sigma2[t]/d beta  = sigma2[t-1] + beta * d sigma2[t-1]/d beta``,
    - ``d sigma2[t]/d gamma = e[t-1]**2 1{e[t-1] < 0} + beta * d sigma2[t-1]/d gamma``
      (GJR only; pre-sample value ``backcast / 2``),
    - ``d sigma2[t]/d mu    = -2 (alpha + gamma 1{e[t-1] < 0}) e[t-1]
      + beta * d sigma2[t-1]/d mu`` (residual ``e = r - mu``; the indicator's derivative
      is zero almost everywhere),

    all with zero pre-sample derivative: every one is the same ``1 / (1 - beta L)``
    filter, so one ``lfilter`` call over a 2-D input computes them together.

    Returns
    -------
    sigma2
        Shape ``(n,)``.
    grad
        Shape ``(k, n)`` (one contiguous row per parameter, so the filter runs along
        contiguous memory): rows ``[mu,] omega, alpha, [gamma,] beta`` (``mu`` only when
        ``with_mu``, ``gamma`` only when ``gamma`` is given, i.e. for GJR).
    """
    n = resids.shape[0]
    asym = gamma is not None
    k = 3 + int(with_mu) + int(asym)
    inputs = np.empty((k, n))
    row = 0
    if with_mu:
        inputs[0, 0] = 0.0
        np.multiply(resids[:-1], -2.0 * alpha, out=inputs[0, 1:])
        if asym:
            assert gamma is not None
            # + (-2 gamma e[t-1]) where e[t-1] < 0
            inputs[0, 1:] -= 2.0 * gamma * np.minimum(resids[:-1], 0.0)
        row = 1
    e2_lag = inputs[row + 1]
    e2_lag[0] = backcast_value
    np.square(resids[:-1], out=e2_lag[1:])
    u = omega + alpha * e2_lag
    if asym:
        assert gamma is not None
        neg_lag = inputs[row + 2]
        neg_lag[0] = 0.5 * backcast_value
        np.multiply(e2_lag[1:], resids[:-1] < 0.0, out=neg_lag[1:])
        u += gamma * neg_lag
    sigma2: FloatArray = lfilter([1.0], [1.0, -beta], u, zi=[beta * backcast_value])[0]
    inputs[row] = 1.0
    ib = row + 2 + int(asym)
    inputs[ib, 0] = backcast_value
    inputs[ib, 1:] = sigma2[:-1]
    grad: FloatArray = lfilter([1.0], [1.0, -beta], inputs, axis=-1)
    return sigma2, grad


def affine_scan_reference(a: FloatArray, c: FloatArray | float, x0: FloatArray) -> FloatArray:
    """Plain loop ``x[t] = a[t] * x[t-1] + c[t]``, ``x[-1] = x0``; returns ``x[0..T-1]``.

    ``a`` has shape ``(T, P)`` (``P`` independent paths), ``x0`` shape ``(P,)``.
    """
    out = np.empty_like(a)
    cc = np.broadcast_to(np.asarray(c, dtype=np.float64), a.shape)
    x = np.array(x0, dtype=np.float64)
    for t in range(a.shape[0]):
        x = a[t] * x + cc[t]
        out[t] = x
    return out


#: Below this many steps per path the plain vectorised loop is as fast as blocking.
_MIN_BLOCKING_STEPS = 4096


def affine_scan(a: FloatArray, c: FloatArray | float, x0: FloatArray) -> FloatArray:
    """Fast ``x[t] = a[t] * x[t-1] + c[t]`` (same result as :func:`affine_scan_reference`).

    Each step is the affine map ``x -> a x + c``; maps compose associatively,
    ``(a2, c2) o (a1, c1) = (a2 a1, a2 c1 + c2)``. The ``T`` steps of each path are cut into
    ``m`` blocks of ``B ~ sqrt(T)`` steps. One Python loop over the ``B`` positions composes
    the maps inside all ``m * P`` blocks at once (numpy-vectorised across blocks), the block
    start values are then propagated by the same scan on the ``m`` block maps, and finally
    every value is ``A * start + C``. Cost ``O(T P)`` array work with only ``O(sqrt(T))``
    Python iterations.

    Parameters
    ----------
    a
        Coefficients, shape ``(T, P)``, non-negative for GARCH (``alpha z**2 + beta``).
    c
        Intercepts, scalar or shape ``(T, P)``.
    x0
        Values before the first step, shape ``(P,)``.
    """
    t_len, n_paths = a.shape
    if t_len < _MIN_BLOCKING_STEPS or n_paths >= 256:
        # Enough paths to vectorise over already (or too few steps to bother).
        return affine_scan_reference(a, c, x0)
    block = max(16, math.isqrt(t_len))
    m = -(-t_len // block)
    pad = m * block - t_len
    cc = np.broadcast_to(np.asarray(c, dtype=np.float64), a.shape)
    # Padding with the identity map (a=1, c=0) at the end does not touch real values.
    a_p = np.concatenate([a, np.ones((pad, n_paths))]) if pad else a
    c_p = np.concatenate([cc, np.zeros((pad, n_paths))]) if pad else cc
    # (m, B, P) -> (B, m, P) contiguous, so each loop iteration works on one row of blocks.
    a_b = np.ascontiguousarray(a_p.reshape(m, block, n_paths).transpose(1, 0, 2))
    c_b = np.ascontiguousarray(c_p.reshape(m, block, n_paths).transpose(1, 0, 2))
    cum_a = np.empty_like(a_b)
    cum_c = np.empty_like(c_b)
    cum_a[0] = a_b[0]
    cum_c[0] = c_b[0]
    for i in range(1, block):
        np.multiply(cum_a[i - 1], a_b[i], out=cum_a[i])
        np.multiply(cum_c[i - 1], a_b[i], out=cum_c[i])
        cum_c[i] += c_b[i]
    # Start value of each block: scan over the m block maps (recursively fast).
    ends = affine_scan(cum_a[-1], cum_c[-1], x0)
    starts = np.empty((m, n_paths))
    starts[0] = x0
    starts[1:] = ends[:-1]
    x = cum_a * starts[np.newaxis] + cum_c
    out: FloatArray = x.transpose(1, 0, 2).reshape(m * block, n_paths)[:t_len]
    return out
