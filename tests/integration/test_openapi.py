"""The OpenAPI description cannot drift from the server: served as checked in, valid
OpenAPI 3.1, and describing exactly the routes and methods the app implements."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tornado.web
from openapi_spec_validator import validate
from tornado.routing import PathMatches

from quoteflow.server.app import make_app
from quoteflow.server.handlers import NotFoundHandler
from quoteflow.server.openapi import OPENAPI_PATH
from tests.integration.fakes import FakeSource, request, run, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

_HTTP_METHODS = ("get", "head", "post", "put", "delete", "patch", "options")


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return doc


def _implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    """Methods a handler class defines itself (tornado's defaults answer 405)."""
    return {
        m
        for m in (name.lower() for name in handler.SUPPORTED_METHODS)
        if getattr(handler, m, None) is not getattr(tornado.web.RequestHandler, m, None)
    }


def _routes() -> dict[str, set[str]]:
    """``{OpenAPI path template: methods}`` of the app's routing table."""
    app = make_app(FakeSource())
    out: dict[str, set[str]] = {}
    for rule in app.wildcard_router.rules:
        matcher = rule.matcher
        assert isinstance(matcher, PathMatches), rule
        groups = matcher.regex.groups
        # reverse() fills each capture group; the placeholder becomes the path parameter.
        path = matcher.reverse(*(["PARAM"] * groups))
        assert path is not None, f"route {matcher.regex.pattern} cannot be reversed"
        template = path.replace("/symbols/PARAM", "/symbols/{symbol}").replace("PARAM", "{path}")
        handler = rule.target
        assert isinstance(handler, type) and issubclass(handler, tornado.web.RequestHandler)
        out[template] = _implemented(handler)
    return out


def test_openapi_document_is_valid_openapi_3_1() -> None:
    doc = _document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises OpenAPIValidationError naming the first problem


def test_every_route_and_method_is_described_and_nothing_else() -> None:
    doc = _document()
    described = {
        path: {m for m in item if m in _HTTP_METHODS} for path, item in doc["paths"].items()
    }
    routes = _routes()
    assert set(routes) == set(described), (
        f"routed but not described: {sorted(set(routes) - set(described))}; "
        f"described but not routed: {sorted(set(described) - set(routes))}"
    )
    for path, methods in routes.items():
        assert methods == described[path], (
            f"{path}: implements {methods}, describes {described[path]}"
        )
    assert make_app(FakeSource()).settings["default_handler_class"] is NotFoundHandler


def test_served_document_equals_the_checked_in_file() -> None:
    async def body() -> None:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            status, served = await request(server.port, "GET", "/openapi.json")
            status404, missing = await request(server.port, "GET", "/no/such/path")
        assert status == 200
        assert served == _document()
        assert status404 == 404
        assert set(missing["endpoints"]) <= set(_document()["paths"])

    run(body)
