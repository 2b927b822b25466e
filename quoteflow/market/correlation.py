"""Correlated shocks: validating a correlation matrix and factoring it (``C = L L^T``).

The market correlates its standard-normal shocks with a factor ``L`` of the target
correlation matrix: ``z -> L z`` gives ``Cov(L z) = C`` (Glasserman 2003, *Monte Carlo
Methods in Financial Engineering*, §2.3.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from quoteflow.errors import ConfigError
from quoteflow.market.config import short_list

__all__ = ["IndexArray", "SquareMatrix", "correlation_factor", "resolve_correlation"]

#: Square matrix, shape ``(n_symbols, n_symbols)``.
SquareMatrix = npt.NDArray[np.float64]
#: Integer index array into the market's symbols, shape ``(k,)``.
IndexArray = npt.NDArray[np.intp]

# Tolerances of the correlation checks. Matrices typed into a TOML file carry 2-4 decimals
# and sample correlations are exact to ~1e-15, so 1e-8 accepts rounding noise only.
_SYM_TOL = 1e-8
_PSD_TOL = 1e-8


def _pair(names: Sequence[str], i: Any, j: Any) -> str:
    return f"[{names[int(i)]}, {names[int(j)]}]"


def correlation_factor(matrix: Any, names: Sequence[str]) -> SquareMatrix:
    """Validate a correlation matrix and return a factor ``L`` with ``L @ L.T == matrix``.

    The rules are checked in this order and the first one that fails is named in the
    error: square 2-D numeric matrix; one row per symbol; finite entries; symmetric;
    unit diagonal; entries in ``[-1, 1]``; positive semi-definite (smallest eigenvalue
    ``>= -1e-8``, computed with ``numpy.linalg.eigvalsh``).

    A positive-definite matrix gets its Cholesky factor (Golub & Van Loan 2013, §4.2).
    A singular one (e.g. two perfectly correlated symbols) has no Cholesky factor, so it
    gets the symmetric eigen-factor ``L = V diag(sqrt(max(w, 0)))`` from ``C = V diag(w)
    V^T``, which satisfies ``L L^T = C`` all the same (Glasserman 2003, §2.3.3).

    Parameters
    ----------
    matrix
        Array-like of shape ``(n, n)``.
    names
        The ``n`` symbol names, in the matrix's order (for error messages).

    Returns
    -------
    ndarray
        ``L``, shape ``(n, n)``.

    Raises
    ------
    ConfigError
        Naming the rule that failed and, where it applies, the offending pair of symbols.
    """
    try:
        c = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            "correlation: must be a square matrix of numbers (list of equal-length rows)"
        ) from None
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ConfigError(f"correlation: must be a square matrix, got shape {c.shape}")
    n = len(names)
    if c.shape[0] != n:
        raise ConfigError(
            f"correlation: matrix is {c.shape[0]}x{c.shape[1]} but there are {n} symbols "
            f"({', '.join(names)}); it needs one row and column per symbol"
        )
    if not np.all(np.isfinite(c)):
        i, j = np.argwhere(~np.isfinite(c))[0]
        raise ConfigError(
            f"correlation: entries must be finite, got {c[i, j]} at {_pair(names, i, j)}"
        )
    asym = np.abs(c - c.T)
    if asym.max() > _SYM_TOL:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise ConfigError(
            f"correlation: must be symmetric: {_pair(names, i, j)} = {c[i, j]:g} but "
            f"{_pair(names, j, i)} = {c[j, i]:g}"
        )
    diag_err = np.abs(np.diag(c) - 1.0)
    if diag_err.max() > _SYM_TOL:
        i = int(np.argmax(diag_err))
        raise ConfigError(
            f"correlation: diagonal must be 1 (unit diagonal): {_pair(names, i, i)} = {c[i, i]:g}"
        )
    if np.abs(c).max() > 1.0 + _SYM_TOL:
        i, j = np.unravel_index(int(np.argmax(np.abs(c))), c.shape)
        raise ConfigError(
            f"correlation: entries must be in [-1, 1]: {_pair(names, i, j)} = {c[i, j]:g}"
        )
    c = 0.5 * (c + c.T)  # remove sub-tolerance asymmetry so the factor is exact
    w = np.linalg.eigvalsh(c)
    if w[0] < -_PSD_TOL:
        raise ConfigError(
            "correlation: must be positive semi-definite, but its smallest eigenvalue is "
            f"{w[0]:.4g} < 0: no set of returns can have these pairwise correlations "
            "(e.g. A~B and B~C strongly positive but A~C strongly negative); "
            "use an estimated correlation matrix or weaken the entries"
        )
    try:
        factor: SquareMatrix = np.asarray(np.linalg.cholesky(c), dtype=np.float64)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(c)
        factor = np.asarray(v * np.sqrt(np.clip(w, 0.0, None)), dtype=np.float64)
    return factor


def resolve_correlation(spec: Any, names: Sequence[str]) -> tuple[IndexArray, SquareMatrix] | None:
    """Turn the accepted ``correlation=`` forms into (symbol indices, matrix over them)."""
    if spec is None:
        return None
    pos = {s: i for i, s in enumerate(names)}

    def known(sym: Any, where: str) -> int:
        if sym not in pos:
            raise ConfigError(
                f"correlation: {where}: unknown symbol {sym!r}; known symbols: {short_list(names)}"
            )
        return pos[sym]

    if isinstance(spec, Mapping):
        if "matrix" in spec:
            extra = set(spec) - {"matrix", "symbols"}
            if extra:
                raise ConfigError(
                    f"correlation: unknown key(s) {sorted(map(str, extra))}; allowed: symbols, matrix"
                )
            syms = spec.get("symbols", list(names))
            if isinstance(syms, str) or not isinstance(syms, Sequence):
                raise ConfigError("correlation: symbols must be a list of symbol names")
            idx = [known(s, "symbols") for s in syms]
            if len(set(idx)) != len(idx):
                raise ConfigError("correlation: symbols lists a symbol twice")
            return np.asarray(idx, dtype=np.intp), spec["matrix"]
        # pairs form: {("AAPL", "MSFT"): 0.5} or {"AAPL/MSFT": 0.5}
        involved: dict[str, int] = {}
        pairs: list[tuple[str, str, Any]] = []
        for key, rho in spec.items():
            a, b = key if isinstance(key, tuple) else re.split(r"[/,:]", str(key), maxsplit=1)
            a, b = str(a).strip(), str(b).strip()
            for s in (a, b):
                known(s, f"pair {key!r}")
                involved.setdefault(s, len(involved))
            pairs.append((a, b, rho))
        if not involved:
            return None
        m = np.eye(len(involved))
        for a, b, rho in pairs:
            if isinstance(rho, bool) or not isinstance(rho, int | float):
                raise ConfigError(f"correlation: pair {a}/{b} must be a number, got {rho!r}")
            m[involved[a], involved[b]] = m[involved[b], involved[a]] = float(rho)
        return np.asarray([pos[s] for s in involved], dtype=np.intp), m
    return np.arange(len(names), dtype=np.intp), spec
