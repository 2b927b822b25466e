"""quoteflow: calibrate price models, stream them over Server-Sent Events, watch them live.

The public API is re-exported here, lazily (PEP 562), so that ``import quoteflow`` stays
light (numpy/scipy are loaded on first use of a model, tornado on first use of the
server, ipywidgets and bokeh on first use of the notebook layer)::

    import quoteflow as qf

    market = qf.Market.default()
    fit = qf.GARCH.fit(prices)
    for event in qf.iter_events("http://127.0.0.1:8080/stream", symbols=["AAPL"]): ...

``tests/unit/test_packaging.py`` checks that every name in ``__all__`` resolves to the
object of its home module.
"""

from __future__ import annotations

import importlib
from typing import Any

from quoteflow.errors import ConfigError, DataError, ParameterError, QuoteflowError, StreamError

__version__ = "0.1.0"

#: Public name -> the module it lives in.
_HOMES: dict[str, str] = {
    # models
    "GBM": "quoteflow.models",
    "MeanReversion": "quoteflow.models",
    "GARCH": "quoteflow.models",
    "DCC": "quoteflow.models",
    "MertonJump": "quoteflow.models",
    "FitResult": "quoteflow.models",
    "compare": "quoteflow.models",
    "model_from_spec": "quoteflow.models",
    # market and sources
    "Market": "quoteflow.market",
    "MarketEvent": "quoteflow.sources",
    "Catalog": "quoteflow.sources",
    "Source": "quoteflow.sources",
    "Replay": "quoteflow.sources",
    "Relay": "quoteflow.sources",
    # recordings (docs/recording.md)
    "Recorder": "quoteflow.recording",
    "read_recording": "quoteflow.recording",
    "SessionReplay": "quoteflow.playback",
    # brokers
    "Broker": "quoteflow.broker",
    "MemoryBroker": "quoteflow.broker",
    "broker_from_url": "quoteflow.broker",
    # server
    "QuoteServer": "quoteflow.server",
    "ServerSettings": "quoteflow.server",
    "make_app": "quoteflow.server",
    "run_server": "quoteflow.server",
    # client
    "Event": "quoteflow.client",
    "EventStream": "quoteflow.client",
    "SSEParser": "quoteflow.client",
    "iter_events": "quoteflow.client",
    "stream": "quoteflow.client",
    # notebook
    "LiveChart": "quoteflow.notebook",
    "serve_in_background": "quoteflow.notebook",
}

# Kept literal (tools read it); test_public_api_is_reexported checks it against _HOMES.
__all__ = [
    "DCC",
    "GARCH",
    "GBM",
    "Broker",
    "Catalog",
    "ConfigError",
    "DataError",
    "Event",
    "EventStream",
    "FitResult",
    "LiveChart",
    "Market",
    "MarketEvent",
    "MeanReversion",
    "MemoryBroker",
    "MertonJump",
    "ParameterError",
    "QuoteServer",
    "QuoteflowError",
    "Recorder",
    "Relay",
    "Replay",
    "SSEParser",
    "ServerSettings",
    "SessionReplay",
    "Source",
    "StreamError",
    "__version__",
    "broker_from_url",
    "compare",
    "iter_events",
    "make_app",
    "model_from_spec",
    "read_recording",
    "run_server",
    "serve_in_background",
    "stream",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'quoteflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
