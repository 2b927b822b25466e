"""The one model registry and the one way to build a model from a name and parameters.

Every door builds models here: TOML config and ``PUT /symbols/{symbol}`` (through
``quoteflow.market``), ``quoteflow simulate --param`` and :func:`model_from_spec` in Python,
notebook sliders (through the market). The rules are checked once:

1. the model name is a key of :data:`MODELS` (case-insensitive);
2. every parameter is a constructor field of the model (a close match is suggested);
3. every value is a number, or a string for categorical options (``dist``, ``mean``);
4. parameters without a default are given (unless an existing model of the same class is
   modified, ``base``);
5. the model's own construction rules (:mod:`quoteflow.models.limits`), which raise a
   :class:`~quoteflow.errors.ParameterError` carrying the parameter's name.

Errors of rules 2, 3 and 5 are :class:`~quoteflow.errors.ParameterError` with ``.param``
set; a door never parses a message to find the parameter. With ``where`` (the key path of
the symbol, e.g. ``symbols.AAPL``) messages start with ``<where>.params.<name>: ``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from quoteflow.errors import ConfigError, ParameterError
from quoteflow.models.base import PriceModel
from quoteflow.models.garch import GARCH
from quoteflow.models.gbm import GBM
from quoteflow.models.limits import short_repr
from quoteflow.models.meanrev import MeanReversion
from quoteflow.models.merton import MertonJump

__all__ = ["MODELS", "build_model", "model_class", "model_from_spec", "model_parameters"]

#: Model classes by their short name (command line, TOML config, JSON). A new model is
#: one entry here; its parameters are its dataclass fields.
MODELS: dict[str, type[PriceModel]] = {
    cls.name: cls for cls in (GBM, MeanReversion, GARCH, MertonJump)
}


def _did_you_mean(word: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def model_class(name: Any, where: str | None = None) -> type[PriceModel]:
    """The model class named ``name`` (case-insensitive), or a :class:`ConfigError`.

    The error lists the known models and suggests a close match; with ``where`` it starts
    with ``<where>.model: ``.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    cls = MODELS.get(key) if key is not None else None
    if cls is None:
        prefix = f"{where}.model: " if where else ""
        did = _did_you_mean(str(name).lower(), list(MODELS))
        raise ConfigError(f"{prefix}unknown model {name!r}{did}; known models: {', '.join(MODELS)}")
    return cls


def model_parameters(cls: type[PriceModel]) -> list[dataclasses.Field[Any]]:
    """The constructor fields of a model class: its parameters, in order."""
    return [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


def build_model(
    name: Any,
    params: Mapping[str, Any],
    *,
    base: PriceModel | None = None,
    where: str | None = None,
) -> PriceModel:
    """Build a model from its name and parameters, or modify ``base`` if of the same class.

    Parameters
    ----------
    name
        Short model name, one of :data:`MODELS` (case-insensitive).
    params
        Constructor parameters (all required ones unless ``base`` is modified).
    base
        An existing model: if it is of the named class, only ``params`` change.
    where
        Key path of the symbol for messages (``"symbols.AAPL"``, ``"AAPL"``); without it
        messages name the model instead.

    Raises
    ------
    ConfigError
        Unknown model or missing parameters.
    ParameterError
        (a ``ConfigError``) naming the parameter: unknown, of the wrong type or out of range.
    """
    cls = model_class(name, where)
    key = cls.name
    fields = model_parameters(cls)
    allowed = [cls.public_name(f.name) for f in fields]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        if where:
            bad = unknown[0]
            raise ParameterError(
                str(bad),
                f"{where}.params.{bad}: unknown parameter for model {key!r}"
                f"{_did_you_mean(str(bad), allowed)}; its parameters: {', '.join(allowed)}",
            )
        raise ParameterError(
            str(unknown[0]),
            f"unknown parameter(s) {', '.join(sorted(map(str, unknown)))} for model {key!r}; "
            f"its parameters: {', '.join(allowed)}",
        )
    for k, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ParameterError(
                k,
                f"{where or key}.params.{k}: must be a number (or a string for categorical "
                f"options), got {type(value).__name__} {short_repr(value)}",
            )
    modify = base is not None and type(base) is cls
    if not modify:
        required = [
            cls.public_name(f.name)
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in params]
        if missing:
            prefix = f"{where}.params: " if where else ""
            raise ConfigError(
                f"{prefix}missing parameter(s) {', '.join(missing)} for model {key!r}; "
                f"its parameters: {', '.join(allowed)}"
            )
    try:
        if base is not None and modify:
            return base.with_params(**params)
        return cls(**{cls.field_name(k): v for k, v in params.items()})
    except ParameterError as exc:
        if where:
            raise ParameterError(exc.param, f"{where}.params.{exc.param}: {exc}") from None
        # The models' own messages start with the model name ("gbm: parameter ..."): say it once.
        message = f"bad parameter for model {key!r}: {str(exc).removeprefix(f'{key}: ')}"
        raise ParameterError(exc.param, message) from None
    except (TypeError, ValueError) as exc:
        prefix = f"{where}.params" if where else f"bad parameter for model {key!r}"
        raise ConfigError(f"{prefix}: {exc}") from None


def model_from_spec(name: str, **params: Any) -> PriceModel:
    """Build a model from its short name and parameters (Python and ``quoteflow simulate``).

    Parameters
    ----------
    name
        Short model name, one of :data:`MODELS` (case-insensitive).
    **params
        The model's constructor parameters, e.g. ``mu=0.05, sigma=0.2`` for ``"gbm"``.

    Returns
    -------
    PriceModel
        The validated model.

    Raises
    ------
    ConfigError
        (a ``ValueError``) naming an unknown model (and listing the known ones), an unknown
        or missing parameter (listing the model's parameters) or a value out of range; a
        :class:`ParameterError` (with ``.param``) where one parameter is at fault.
    """
    return build_model(name, params)
