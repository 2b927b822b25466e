"""The part every model's stepper starts with (see :class:`PathStepper`)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

from quoteflow.models._validation import check_dt, initial_prices
from quoteflow.models.base import FloatArray, PriceModel, Stepper

__all__ = ["PathStepper"]

_ModelT = TypeVar("_ModelT", bound=PriceModel)


class PathStepper(Stepper, Generic[_ModelT]):
    """What every model's stepper starts with: a checked ``dt``, one path per start price,
    and the model, held first in the ``_state`` tuple that ``set_model`` swaps at once."""

    _state: tuple[Any, ...]

    def __init__(self, model: _ModelT, s0: float | FloatArray, dt: float) -> None:
        self.dt = check_dt(dt)
        self.prices = initial_prices(s0)
        self.set_model(model)

    @property
    def model(self) -> _ModelT:
        """The model currently driving the paths."""
        return cast(_ModelT, self._state[0])
