"""Mean parts of a return model: what is subtracted from the returns before the variance.

As in ``arch.univariate.mean``, the mean is a part with its parameter names, bounds and
starting values; GARCH is assembled from a mean part, its variance recursion and an
innovation law (:mod:`quoteflow.models.innovations`). ``ConstantMean`` estimates ``mu``;
``ZeroMean`` has no parameter (``mu`` is 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from quoteflow.errors import ParameterError
from quoteflow.models.base import FloatArray

__all__ = ["MEANS", "ConstantMean", "MeanPart", "ZeroMean"]


class MeanPart(ABC):
    """The conditional mean of the returns."""

    #: Short name used by ``GARCH(mean=...)``.
    name: ClassVar[str]
    #: Estimated parameters, in the order of every ``params`` tuple (fields of the model).
    parameter_names: ClassVar[tuple[str, ...]] = ()

    def bounds(self) -> list[tuple[float | None, float | None]]:
        """Bounds of the mean parameters in estimation (``None``: unbounded)."""
        return [(None, None)] * len(self.parameter_names)

    @abstractmethod
    def starting_values(self, returns: FloatArray) -> list[float]:
        """Mean parameters to start the optimiser from."""

    @abstractmethod
    def mu(self, params: Sequence[float]) -> float:
        """The mean return for these parameters."""

    def validate(self, mu: float) -> None:  # noqa: B027 - any finite mu is allowed
        """Raise :class:`ParameterError` if the model's ``mu`` is not allowed by this mean."""


class ConstantMean(MeanPart):
    """``r_t = mu + e_t`` with ``mu`` estimated."""

    name: ClassVar[str] = "constant"
    parameter_names: ClassVar[tuple[str, ...]] = ("mu",)

    def starting_values(self, returns: FloatArray) -> list[float]:
        return [float(returns.mean())]

    def mu(self, params: Sequence[float]) -> float:
        return float(params[0])


class ZeroMean(MeanPart):
    """``r_t = e_t``: no mean parameter."""

    name: ClassVar[str] = "zero"

    def starting_values(self, returns: FloatArray) -> list[float]:
        return []

    def mu(self, params: Sequence[float]) -> float:
        return 0.0

    def validate(self, mu: float) -> None:
        if mu != 0.0:
            raise ParameterError(
                "mu", f"garch: parameter mu must be 0 when mean='zero', got {mu!r}"
            )


#: Mean parts by their ``mean`` name.
MEANS: dict[str, MeanPart] = {part.name: part for part in (ConstantMean(), ZeroMean())}
