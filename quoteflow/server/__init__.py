"""The Tornado quote server: SSE stream, snapshot, symbols, metrics, dashboard.

Public names are loaded lazily (PEP 562) so that importing a light submodule (such as
:mod:`quoteflow.server.auth`) does not pull in tornado and prometheus_client. The wire
format the brokers use lives below the server, in :mod:`quoteflow.wire`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quoteflow.server.app import ServerSettings, ServerState, make_app
    from quoteflow.server.runner import QuoteServer, run_server

__all__ = ["QuoteServer", "ServerSettings", "ServerState", "make_app", "run_server"]

_WHERE = {
    "QuoteServer": "quoteflow.server.runner",
    "run_server": "quoteflow.server.runner",
    "ServerSettings": "quoteflow.server.app",
    "ServerState": "quoteflow.server.app",
    "make_app": "quoteflow.server.app",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'quoteflow.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
