"""``GET /openapi.json``: the OpenAPI 3.1 description of the HTTP API.

The document is a checked-in file, ``quoteflow/server/openapi.json`` (package data),
served byte for byte. tests/integration/test_openapi.py keeps it honest: the served
document equals the file, it validates against the OpenAPI 3.1 schema, every route of
:func:`quoteflow.server.app.make_app` is described with exactly the methods its handler
implements, and tests/integration/test_fuzz_api.py fuzzes every operation from it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from quoteflow.server.handlers import JSONHandler

__all__ = ["OPENAPI_PATH", "OpenAPIHandler", "openapi_document"]

#: The checked-in document.
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


@functools.cache
def openapi_document() -> bytes:
    """The bytes of :data:`OPENAPI_PATH` (read once per process)."""
    return OPENAPI_PATH.read_bytes()


class OpenAPIHandler(JSONHandler):
    """``GET /openapi.json``: the API description (open also when auth is on)."""

    def get(self) -> None:
        """Serve the checked-in document as ``application/json``."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(openapi_document())
