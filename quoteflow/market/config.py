"""Market configuration: TOML / dict parsing, with errors that name the dotted key.

:func:`market_from_config` checks every key of the format in docs/market.md and builds the
models through the one model registry (:func:`quoteflow.models.build_model`); price
sources for ``fit = "..."`` go through :func:`quoteflow.data.resolve_prices`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quoteflow.errors import ConfigError, DataError, ParameterError
from quoteflow.models import MODELS, PriceModel, build_model
from quoteflow.models.registry import model_class

if TYPE_CHECKING:
    from quoteflow.market.engine import Market

__all__ = ["check_keys", "check_step", "market_from_config", "number", "short_list"]


def short_list(names: Sequence[str], limit: int = 20) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def number(value: Any, where: str, *, gt: float | None = None, ge: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(f"{where}: must be finite, got {x!r}")
    if gt is not None and not x > gt:
        raise ConfigError(f"{where}: must be > {gt:g}, got {value!r}")
    if ge is not None and not x >= ge:
        raise ConfigError(f"{where}: must be >= {ge:g}, got {value!r}")
    return x


def check_step(model: PriceModel, dt: float, where: str, changed: Iterable[str] = ()) -> None:
    """``model.check_step(dt)`` with the error at ``<where>.params.<name>`` (see models.limits)."""
    try:
        model.check_step(dt, frozenset(changed))
    except ParameterError as exc:
        raise ParameterError(exc.param, f"{where}.params.{exc.param}: {exc}") from None


_TOP_KEYS = (
    "seed",
    "tick_interval",
    "speed",
    "bar_interval",
    "spread_bps",
    "lot_size",
    "calendar",
    "start",
    "closed_fraction",
    "trades",
    "symbols",
    "correlation",
)
#: Settings a caller (the command line) may override: every top-level setting but the
#: symbols and their correlation.
_OVERRIDES = (*_TOP_KEYS[:10], "clock")
_SYMBOL_KEYS = ("model", "params", "fit", "column", "fit_options", "s0", "spread_bps")


def check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"{prefix}{key}: unknown key{did}; allowed keys: {', '.join(allowed)}"
            )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table, got {type(value).__name__} {value!r}")
    return value


def _fit_prices(spec: str, column: str | None, where: str, base_dir: Path) -> Any:
    """The price series named by a ``fit`` value: a shipped ticker or a CSV path."""
    from quoteflow import data

    try:
        return data.resolve_prices(spec, column, base_dir=base_dir)
    except data.PricesNotFound as exc:
        raise ConfigError(
            f"{where}.fit: {spec!r} is neither a shipped ticker ({', '.join(data.TICKERS)}) "
            f"nor an existing CSV file (looked for {exc.path})"
        ) from None
    except data.ColumnNotFound as exc:
        raise ConfigError(f"{where}.column: {exc}") from None
    except DataError as exc:
        raise ConfigError(f"{where}.fit: {exc}") from None


def _symbolmarket_from_config(
    name: str, spec: Any, base_dir: Path
) -> tuple[PriceModel, float | None, float | None]:
    where = f"symbols.{name}"
    table = _table(spec, where)
    check_keys(table, _SYMBOL_KEYS, where)
    if "model" not in table:
        raise ConfigError(f"{where}: missing key 'model' (one of {', '.join(MODELS)})")
    model_cls = model_class(table["model"], where)
    model_name = model_cls.name
    params = dict(_table(table.get("params", {}), f"{where}.params"))
    fit = table.get("fit")
    column = table.get("column")
    if column is not None and not isinstance(column, str):
        raise ConfigError(f"{where}.column: must be a string (a column name), got {column!r}")
    if column is not None and fit is None:
        raise ConfigError(f'{where}.column: only meaningful with fit = "..."')
    fit_options = dict(_table(table.get("fit_options", {}), f"{where}.fit_options"))
    if fit_options and fit is None:
        raise ConfigError(f'{where}.fit_options: only meaningful with fit = "..."')
    s0 = table.get("s0")
    if s0 is not None:
        s0 = number(s0, f"{where}.s0", gt=0.0)
    spread = table.get("spread_bps")
    if spread is not None:
        spread = number(spread, f"{where}.spread_bps", ge=0.0)

    if fit is None:
        if not params:
            raise ConfigError(
                f"{where}: give the model's parameters (params = {{...}}) or calibrate it "
                f'(fit = "TICKER" or fit = "file.csv")'
            )
        return build_model(model_name, params, where=where), s0, spread
    if not isinstance(fit, str) or not fit:
        raise ConfigError(f"{where}.fit: must be a shipped ticker or a CSV path, got {fit!r}")
    prices = _fit_prices(fit, column, where, base_dir)
    try:
        result = model_cls.fit(prices, **fit_options)
    except TypeError as exc:
        raise ConfigError(f"{where}.fit_options: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}.fit: cannot fit {model_name} on {fit!r}: {exc}") from None
    model = result.model
    if params:
        model = build_model(model_name, params, base=model, where=where)
    if s0 is None:
        s0 = float(np.asarray(prices, dtype=np.float64)[-1])
    return model, s0, spread


_DCC_KEYS = ("model", "symbols", "a", "b", "qbar", "fit_options")


def _dcc_from_config(
    table: Mapping[str, Any], symbols: Mapping[str, Any], names: list[str], base: Path
) -> Any:
    """The ``[correlation] model = "dcc"`` table (or ``correlation = "dcc"``) as a DCC.

    ``a``, ``b`` and ``qbar`` given are used as they are; whatever is missing comes from
    a DCC fit (:meth:`quoteflow.models.DCC.fit`, ``fit_options`` passed on) on the price
    history of the listed symbols: each symbol's own ``fit = "..."`` source, else the
    shipped ticker of its name, joined on common dates.
    """
    import pandas as pd

    from quoteflow.models import DCC

    check_keys(table, _DCC_KEYS, "correlation")
    syms = table.get("symbols", names)
    if isinstance(syms, str) or not isinstance(syms, Sequence):
        raise ConfigError("correlation.symbols: must be a list of symbol names")
    for sym in syms:
        if sym not in names:
            raise ConfigError(
                f"correlation.symbols: unknown symbol {sym!r}; known symbols: {short_list(names)}"
            )
    given = {k: table[k] for k in ("a", "b", "qbar") if k in table}
    fit_options = dict(_table(table.get("fit_options", {}), "correlation.fit_options"))
    if len(given) < 3:
        frames = {}
        for sym in syms:
            entry = symbols[sym]
            source = entry.get("fit", sym) if isinstance(entry, Mapping) else sym
            column = entry.get("column") if isinstance(entry, Mapping) else None
            frames[sym] = _fit_prices(str(source), column, f"correlation (prices of {sym})", base)
        try:
            with_fit = DCC.fit(pd.DataFrame(frames).dropna(), **fit_options).model
        except TypeError as exc:
            raise ConfigError(f"correlation.fit_options: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"correlation: cannot fit DCC: {exc}") from None
        given = {"a": with_fit.a, "b": with_fit.b, "qbar": with_fit.qbar, **given}
    try:
        return DCC(symbols=tuple(syms), **given)
    except ParameterError as exc:
        raise ParameterError(exc.param, f"correlation.{exc.param}: {exc}") from None


def market_from_config(
    cls: type[Market],
    config: Mapping[str, Any],
    base_dir: str | Path | None,
    overrides: Mapping[str, Any],
) -> Market:
    config = _table(config, "config")
    check_keys(config, _TOP_KEYS, "")
    for key in overrides:
        if key not in _OVERRIDES:
            raise ConfigError(f"override {key!r}: unknown; allowed: {', '.join(_OVERRIDES)}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    kwargs: dict[str, Any] = {}
    if "seed" in config:
        seed = config["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: must be an integer >= 0, got {seed!r}")
        kwargs["seed"] = seed
    for key in ("tick_interval", "speed", "bar_interval"):
        if key in config:
            kwargs[key] = number(config[key], key, gt=0.0)
    if "spread_bps" in config:
        kwargs["spread_bps"] = number(config["spread_bps"], "spread_bps", ge=0.0)
    if "lot_size" in config:
        lot = config["lot_size"]
        if isinstance(lot, bool) or not isinstance(lot, int) or lot < 1:
            raise ConfigError(f"lot_size: must be an integer >= 1, got {lot!r}")
        kwargs["lot_size"] = lot
    # Checked where they are used (sessions, trades): the same rules for Python and TOML.
    for key in ("calendar", "start", "trades"):
        if key in config:
            kwargs[key] = config[key]
    if "closed_fraction" in config:
        kwargs["closed_fraction"] = number(config["closed_fraction"], "closed_fraction", ge=0.0)
    if "symbols" not in config:
        raise ConfigError("symbols: missing; add at least one [symbols.NAME] table")
    symbols = _table(config["symbols"], "symbols")
    if not symbols:
        raise ConfigError("symbols: empty; add at least one [symbols.NAME] table")
    models: dict[str, PriceModel] = {}
    s0: dict[str, float] = {}
    spreads: dict[str, float] = {}
    for name, spec in symbols.items():
        model, start, spread = _symbolmarket_from_config(str(name), spec, base)
        models[str(name)] = model
        if start is not None:
            s0[str(name)] = start
        if spread is not None:
            spreads[str(name)] = spread
    if spreads:
        default_spread = kwargs.get("spread_bps", 10.0)
        kwargs["spread_bps"] = {s: spreads.get(s, default_spread) for s in models}
    correlation: Any = None
    if "correlation" in config:
        spec = config["correlation"]
        if spec == "dcc" or (isinstance(spec, Mapping) and spec.get("model") == "dcc"):
            table = {} if isinstance(spec, str) else spec
            correlation = _dcc_from_config(table, symbols, list(models), base)
        else:
            corr = _table(spec, "correlation")
            check_keys(corr, ("symbols", "matrix", "model"), "correlation")
            if corr.get("model", "constant") != "constant":
                raise ConfigError(
                    f"correlation.model: must be 'constant' or 'dcc', got {corr['model']!r}"
                )
            if "matrix" not in corr:
                raise ConfigError("correlation.matrix: missing (a list of rows, one per symbol)")
            correlation = {k: v for k, v in corr.items() if k != "model"}
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(given.get("trades"), Mapping) and isinstance(kwargs.get("trades"), Mapping):
        # --trade-rate changes the rate of the file's [trades] table, not its size law.
        given["trades"] = {**kwargs["trades"], **given["trades"]}
    kwargs.update(given)
    return cls(models, s0=s0, correlation=correlation, **kwargs)
