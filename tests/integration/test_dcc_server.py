"""GET /symbols over a real server reports the current DCC correlation matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from quoteflow.market import Market
from quoteflow.models import DCC, GBM
from quoteflow.server.openapi import OPENAPI_PATH
from tests.integration.fakes import request, run, serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_symbols_shows_the_moving_dcc_correlation_matrix() -> None:
    names = ("X", "Y", "Z")
    qbar = [[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]]
    market = Market(
        {s: GBM(mu=0.0, sigma=0.2) for s in names},
        correlation=DCC(0.1, 0.85, qbar, names),
        seed=5,
        tick_interval=0.01,
        speed=(1 / 252) / 0.01,
    )
    doc = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    schema = {**doc["components"]["schemas"]["SymbolInfo"], "$defs": {}}
    validator = Draft202012Validator(schema)

    def matrix(described: dict) -> np.ndarray:
        return np.array([[described[a]["correlation"][b] for b in names] for a in names])

    async def body() -> None:
        async with serving(market) as server:
            assert server.port is not None
            await wait_for(lambda: market.ticks >= 3, what="three ticks")
            status, first = await request(server.port, "GET", "/symbols")
            assert status == 200
            for entry in first.values():
                validator.validate(entry)
                assert entry["correlation_model"] == "dcc"
            r1 = matrix(first)
            np.testing.assert_allclose(r1, r1.T, atol=1e-15)
            np.testing.assert_allclose(np.diag(r1), 1.0, atol=1e-15)
            assert np.linalg.eigvalsh(r1)[0] > 0
            ticks = market.ticks
            await wait_for(lambda: market.ticks >= ticks + 3, what="three more ticks")
            status, second = await request(server.port, "GET", "/symbols")
            assert status == 200
            assert not np.allclose(matrix(second), r1)  # R_t moves tick by tick

    run(body)
