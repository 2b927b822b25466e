"""Argument types of the ``quoteflow`` command: each parses one option and says what is wrong."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

__all__ = [
    "DIST_NAMES",
    "MEAN_NAMES",
    "MODEL_NAMES",
    "LazyChoices",
    "parse_dt",
    "parse_param",
    "port",
    "positive",
    "positive_float",
    "positive_int",
]


def positive(
    kind: Callable[[str], Any], what: str, allow_zero: bool = False
) -> Callable[[str], Any]:
    """A parser of ``kind`` (``int`` or ``float``) values ``> 0`` (``>= 0``), finite."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: must be finite")
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: must be {'>= 0' if allow_zero else '> 0'}"
            )
        return value

    return parse


def port(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 0..65535")
    return value


def parse_dt(text: str) -> float:
    """``--dt``: a float (``0.004``) or a fraction (``1/252``) of years, ``> 0``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"invalid dt {text!r}: give years per step as a number or fraction, e.g. 1/252"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid dt {text!r}: must be > 0 years")
    return value


def positive_int(text: str) -> int:
    """A count ``>= 1`` (``--steps``, ``--paths``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be >= 1")
    return value


def positive_float(text: str) -> float:
    """A price ``> 0`` (``--s0``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid price {text!r}: must be > 0")
    return value


def parse_param(text: str) -> tuple[str, Any]:
    """``--param k=v``: numbers become floats, anything else stays a string (``dist=t``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid --param {text!r}: expected NAME=VALUE")
    raw = raw.strip()
    value: Any
    try:
        value = float(raw)
    except ValueError:
        value = raw
    return key.strip(), value


class LazyChoices:
    """``choices=`` for argparse read from a registry only when needed.

    The model and innovation names live in :mod:`quoteflow.models` (one registry); importing
    it pulls in scipy, which ``quoteflow token`` or ``quoteflow serve --help`` should not pay
    for. argparse only iterates or tests membership, which is when this loads them.
    """

    def __init__(self, load: Callable[[], tuple[str, ...]]) -> None:
        self._load = load

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __contains__(self, value: object) -> bool:
        return value in self._load()

    def __len__(self) -> int:
        return len(self._load())


def _model_names() -> tuple[str, ...]:
    from quoteflow.models import MODELS

    return tuple(MODELS)


def _dist_names() -> tuple[str, ...]:
    from quoteflow.models.garch import DISTS

    return DISTS


def _mean_names() -> tuple[str, ...]:
    from quoteflow.models.garch import MEANS

    return MEANS


#: The model names (``quoteflow.models.MODELS``), GARCH innovations and means.
MODEL_NAMES = LazyChoices(_model_names)
DIST_NAMES = LazyChoices(_dist_names)
MEAN_NAMES = LazyChoices(_mean_names)

#: The ``add_subparsers()`` action every command module registers its parser on.
SubParsers: TypeAlias = "argparse._SubParsersAction[Any]"
