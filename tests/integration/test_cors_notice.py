"""A refused cross-origin request tells the operator which flag to set, once per origin."""

from __future__ import annotations

import logging

import pytest

from quoteflow.server.app import ServerSettings
from quoteflow.server.cors import RefusedOriginLog
from tests.integration.fakes import FakeSource, RawStream, run, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "quoteflow.server.cors"]


def test_refused_origin_logs_the_flag_once_per_origin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="quoteflow.server.cors")

    async def body() -> None:
        async with serving(FakeSource(interval=0.01)) as server:
            assert server.port is not None
            for _ in range(3):  # an EventSource retries: one line, not three
                s = await RawStream.open(
                    server.port, "/stream", headers={"Origin": "http://page.test:8080"}
                )
                await s.read_until(lambda r: len(r.events) >= 1)
                assert "access-control-allow-origin" not in s.headers
                await s.close()
            other = await RawStream.open(server.port, "/snapshot", {"Origin": "http://b.test"})
            await other.body()
            await other.close()
            same = await RawStream.open(server.port, "/snapshot", {"Origin": "http://127.0.0.1"})
            await same.body()  # same origin (Host 127.0.0.1): nothing to say
            await same.close()

    run(body)
    lines = _notices(caplog)
    assert len(lines) == 2, lines
    assert "--cors-origin http://page.test:8080" in lines[0]
    assert "/stream" in lines[0]
    assert "--cors-origin http://b.test" in lines[1]


def test_allowed_origin_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="quoteflow.server.cors")

    async def body() -> None:
        settings = ServerSettings(cors_origins=("http://page.test",))
        async with serving(FakeSource(interval=0.01), settings=settings) as server:
            assert server.port is not None
            s = await RawStream.open(server.port, "/stream", {"Origin": "http://page.test"})
            await s.read_until(lambda r: len(r.events) >= 1)
            assert s.headers["access-control-allow-origin"] == "http://page.test"
            await s.close()
            s = await RawStream.open(server.port, "/snapshot", {"Origin": "http://evil.test"})
            await s.body()
            await s.close()

    run(body)
    lines = _notices(caplog)
    assert len(lines) == 1, lines  # only the origin not in the list
    assert "does not allow it" in lines[0]
    assert "--cors-origin http://evil.test" in lines[0]


def test_refused_origin_log_interval_and_bound() -> None:
    now = [0.0]
    notes = RefusedOriginLog(interval=60.0, max_origins=2, clock=lambda: now[0])
    assert notes.refused("http://a", "/stream", cors_enabled=False)
    assert not notes.refused("http://a", "/stream", cors_enabled=False)
    now[0] = 61.0
    assert notes.refused("http://a", "/stream", cors_enabled=False)  # interval over
    assert notes.refused("http://b", "/stream", cors_enabled=False)
    assert notes.refused("http://c", "/stream", cors_enabled=False)  # table cleared
    assert len(notes._last) == 1
    assert notes.refused("http://" + "x" * 10_000, "/s", cors_enabled=True)
    assert max(len(k) for k in notes._last) <= 100
