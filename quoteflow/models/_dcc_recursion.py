"""The DCC(1,1) correlation recursion and its log-likelihood, vectorised over time.

Engle (2002), "Dynamic conditional correlation", *J. Business & Economic Statistics* 20,
339-350, eqs. (23)-(26): for standardised residuals ``z_t`` (shape ``(N,)``),

    Q_t = (1 - a - b) Qbar + a z_{t-1} z_{t-1}' + b Q_{t-1},   Q_1 = Qbar
    R_t = diag(Q_t)^-1/2 Q_t diag(Q_t)^-1/2
    l_t = -(log|R_t| + z_t' R_t^-1 z_t - z_t' z_t) / 2            (correlation part)

Because ``a`` and ``b`` are scalars the recursion is a linear filter applied to every
element of ``z z'`` at once: with ``D_s = z_s z_s' - Qbar``,

    Q_t = Qbar + a F_t,   F_t = sum_{s<t} b^(t-1-s) D_s,

so ``F`` (and ``dF/db``) are :func:`scipy.signal.lfilter` runs along time over the
``(T, N*N)`` array, in C; the per-``t`` work left is one batched ``N x N`` inverse and
log-determinant. No Python loop over time or symbol pairs. The tests compare this with a
plain loop over ``t`` written independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = [
    "CorrelationTerms",
    "correlation_terms",
    "dcc_filter",
    "loglik_gradient_z",
    "outer_dev",
    "qbar_of",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]


def qbar_of(z: FloatArray) -> FloatArray:
    """The correlation target: the sample correlation of ``z`` (shape ``(T, N)``).

    The uncentred second moment ``z'z / T`` (Engle 2002's ``Qbar``; the standardised
    residuals have mean ~0) scaled to a unit diagonal, so ``Qbar`` is a correlation
    matrix and ``R_1 = Qbar``.
    """
    s = z.T @ z / z.shape[0]
    d = np.sqrt(np.diag(s))
    out: FloatArray = s / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def outer_dev(z: FloatArray, qbar: FloatArray) -> FloatArray:
    """``D_t = z_t z_t' - Qbar``, flattened to shape ``(T, N*N)``.

    It does not depend on ``(a, b)``: an optimiser computes it once and passes it as
    ``d=`` (for 50 symbols it is 40 MB, the largest array of an evaluation).
    """
    t, n = z.shape
    out: FloatArray = np.einsum("ti,tj->tij", z, z).reshape(t, n * n)
    out -= qbar.reshape(1, n * n)
    return out


def dcc_filter(
    a: float,
    b: float,
    z: FloatArray,
    qbar: FloatArray,
    *,
    derivatives: bool = False,
    d: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """``Q_t`` for ``t = 1..T`` (shape ``(T, N, N)``), and ``dQ/da``, ``dQ/db`` if asked.

    ``F_t = sum_{s<t} b^(t-1-s) D_s`` is the filter ``1 / (1 - b L)`` applied to the lagged
    ``D`` (``F_1 = 0``), ``dF/db`` the filter ``L / (1 - b L)^2`` of the lagged ``D``.
    """
    t, n = z.shape
    if d is None:
        d = outer_dev(z, qbar)
    f = lfilter([0.0, 1.0], [1.0, -b], d, axis=0)
    q = a * f
    q += qbar.reshape(1, n * n)
    if not derivatives:
        return q.reshape(t, n, n), None, None
    df_db = lfilter([0.0, 0.0, 1.0], [1.0, -2.0 * b, b * b], d, axis=0)
    return q.reshape(t, n, n), f.reshape(t, n, n), (a * df_db).reshape(t, n, n)


@dataclass(frozen=True)
class CorrelationTerms:
    """Per-observation correlation log-likelihood, scores and the path ``R_t``.

    ``ll`` shape ``(T,)`` (``-inf`` everywhere if some ``R_t`` is not positive definite),
    ``scores`` shape ``(T, 2)`` (``dl_t/da``, ``dl_t/db``; ``None`` unless asked),
    ``r`` shape ``(T, N, N)``.
    """

    ll: FloatArray
    scores: FloatArray | None
    r: FloatArray


def _normalise(q: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(R, s)``: ``R = Q / (s s')``, ``s = sqrt(diag Q)``, batched over the first axis."""
    s = np.sqrt(np.einsum("tii->ti", q))
    inv = 1.0 / s
    r = q * inv[:, :, None]
    r *= inv[:, None, :]
    return r, s


def _dl_dq(r: FloatArray, s: FloatArray, rinv: FloatArray, w: FloatArray) -> FloatArray:
    """``dl_t/dQ_t`` (symmetric), by the chain rule through the normalisation (see below)."""
    n = r.shape[1]
    g = np.einsum("ti,tj->tij", w, w)
    g -= rinv
    g *= 0.5  # G = -(R^-1 - w w') / 2
    diag_term = np.einsum("tij,tij->ti", g, r) / (s * s)
    inv = 1.0 / s
    g *= inv[:, :, None]
    g *= inv[:, None, :]
    g[:, np.arange(n), np.arange(n)] -= diag_term
    out: FloatArray = g
    return out


def correlation_terms(
    a: float,
    b: float,
    z: FloatArray,
    qbar: FloatArray,
    *,
    scores: bool = False,
    d: FloatArray | None = None,
) -> CorrelationTerms:
    """Engle's (2002) correlation log-likelihood terms ``l_t`` at ``(a, b)``.

    Scores by the chain rule through ``R_t = Q_t / (s s')``, ``s = sqrt(diag Q_t)``:
    ``dl/dR = G = -(R^-1 - w w') / 2`` with ``w = R^-1 z`` (Magnus & Neudecker 1999,
    ch. 8), and ``dl/dQ = G / (s s') - diag(rowsum(G * R) / diag Q)``; then
    ``dl_t/da = <dl/dQ_t, dQ_t/da>`` and the same for ``b``. ``d`` is
    :func:`outer_dev` of ``(z, qbar)`` if already computed.
    """
    t, n = z.shape
    q, dqa, dqb = dcc_filter(a, b, z, qbar, derivatives=scores, d=d)
    r, s = _normalise(q)
    try:
        chol = np.linalg.cholesky(r)
    except np.linalg.LinAlgError:
        return CorrelationTerms(np.full(t, -np.inf), None if not scores else np.zeros((t, 2)), r)
    logdet = 2.0 * np.log(np.einsum("tii->ti", chol)).sum(axis=1)
    if scores:
        rinv: FloatArray = np.asarray(np.linalg.inv(r), dtype=np.float64)
        w: FloatArray = (rinv @ z[:, :, None])[:, :, 0]
    else:
        w = np.asarray(np.linalg.solve(r, z[:, :, None])[:, :, 0], dtype=np.float64)
    quad = np.einsum("ti,ti->t", z, w)
    ll: FloatArray = -0.5 * (logdet + quad - np.einsum("ti,ti->t", z, z))
    if not scores:
        return CorrelationTerms(ll, None, r)
    assert dqa is not None and dqb is not None
    k = _dl_dq(r, s, rinv, w).reshape(t, n * n)
    out = np.empty((t, 2))
    out[:, 0] = np.einsum("tk,tk->t", k, dqa.reshape(t, n * n))
    out[:, 1] = np.einsum("tk,tk->t", k, dqb.reshape(t, n * n))
    return CorrelationTerms(ll, out, r)


def loglik_gradient_z(a: float, b: float, z: FloatArray) -> FloatArray:
    """Gradient of ``L_C = sum_t l_t`` in every ``z_ti``, with ``Qbar = qbar_of(z)``.

    Reverse mode (the adjoint of the recursion), shape ``(T, N)``. Three paths:

    - directly, ``dl_t/dz_t = z_t - R_t^-1 z_t``;
    - through the future ``Q_t`` (``t > s``) that ``z_s z_s'`` enters with weight
      ``a b^(t-1-s)``: ``2 a Lambda_s z_s``, ``Lambda_s = sum_{t>s} b^(t-1-s) K_t``
      (``K_t = dl_t/dQ_t``), the same filter as ``F`` run backwards in time;
    - through ``Qbar``, which enters ``Q_t`` with weight ``1 - a (1 - b^(t-1)) / (1 - b)``:
      ``M = sum_t (that weight) K_t``, then through the normalisation ``Qbar = S / (d d')``
      of ``S = z'z / T`` (the same chain rule as ``R`` from ``Q``) to ``dL/dS``, and
      ``dL/dz_t = 2 (dL/dS) z_t / T``.

    The two-step standard errors need the derivative of the ``(a, b)`` scores in the
    first-step parameters; that is this gradient differentiated in ``a`` and ``b``
    (``quoteflow.models.dcc``), so ``2 N k`` score evaluations become four of these.
    """
    t, n = z.shape
    qbar = qbar_of(z)
    q, _, _ = dcc_filter(a, b, z, qbar)
    r, s = _normalise(q)
    rinv: FloatArray = np.asarray(np.linalg.inv(r), dtype=np.float64)
    w: FloatArray = (rinv @ z[:, :, None])[:, :, 0]
    k = _dl_dq(r, s, rinv, w)
    grad: FloatArray = z - w
    lam = lfilter([0.0, 1.0], [1.0, -b], k.reshape(t, n * n)[::-1], axis=0)[::-1]
    grad += 2.0 * a * np.einsum("tij,tj->ti", lam.reshape(t, n, n), z)
    weight = 1.0 - a * (1.0 - b ** np.arange(t)) / (1.0 - b)
    m = np.einsum("t,tij->ij", weight, k)
    sm = z.T @ z / t
    d = np.sqrt(np.diag(sm))
    ds = m / np.outer(d, d)
    ds[np.diag_indices(n)] -= np.einsum("ij,ij->i", m, qbar) / (d * d)
    grad += 2.0 * (z @ ds) / t
    return grad
