"""Auth on ``GET /ws``: the same matrix as ``/stream`` (tests/integration/test_auth_http.py).

With ``--auth-secret`` the WebSocket twin of ``/stream`` must refuse, before the upgrade
and with a JSON error, a request with no token, a bad token or an expired one, and a
subscription to symbols outside the token's ``symbols`` claim; a token's "all symbols"
means its own symbols; a token that expires ends the WebSocket (close code 1008). A
cookie is sent by the browser whatever page opens the socket, so a handshake from a
foreign ``Origin`` is refused even with a valid cookie (cross-site WebSocket hijacking),
while the same cookie from an allowed origin streams.

These tests fail when ``/ws`` skips ``authorize()`` (see docs/testing.md, mutation run).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from quoteflow.server.app import ServerSettings
from quoteflow.server.auth import mint_token
from tests.integration.fakes import FakeSource, request, run, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = "test-secret-for-ws-auth-0123456789abcdef"
ALLOWED_ORIGIN = "https://app.example"
#: Awaiting a WebSocket message or close that normally comes within milliseconds (or,
#: for the expiring token, at its 2 s exp): a hang guard, not a speed requirement.
HANG_GUARD_S = 15.0


def upgrade_headers(**extra: str) -> dict[str, str]:
    """The headers of a WebSocket handshake (RFC 6455 §4.1), plus ``extra``."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **extra,
    }


async def connect(
    port: int, query: str = "", headers: dict[str, str] | None = None
) -> tornado.websocket.WebSocketClientConnection:
    req = tornado.httpclient.HTTPRequest(
        f"ws://127.0.0.1:{port}/ws{query}", headers=headers or {}, request_timeout=HANG_GUARD_S
    )
    return await tornado.websocket.websocket_connect(req)


async def read_messages(
    conn: tornado.websocket.WebSocketClientConnection, n: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while len(out) < n:
            msg = await conn.read_message()
            assert msg is not None, f"closed: {conn.close_code} {conn.close_reason}"
            assert isinstance(msg, str)
            out.append(json.loads(msg))
    return out


async def close(conn: tornado.websocket.WebSocketClientConnection) -> None:
    conn.close()
    async with asyncio.timeout(HANG_GUARD_S):
        while await conn.read_message() is not None:
            pass


def settings() -> ServerSettings:
    return ServerSettings(auth_secret=SECRET, cors_origins=(ALLOWED_ORIGIN,))


def source() -> FakeSource:
    return FakeSource(("AAA", "BBB"), interval=0.005)


# ------------------------------------------------------------------- refused handshakes


#: (case, query, extra headers, status, a word of the error): formatted with the tokens.
REFUSED: list[tuple[str, str, dict[str, str], int, str]] = [
    ("no token", "", {}, 401, "authentication required"),
    ("not a JWT", "?access_token=not-a-token", {}, 401, "invalid token"),
    ("wrong secret", "?access_token={wrong}", {}, 401, "signature"),
    ("expired", "?access_token={expired}", {}, 401, "expired"),
    ("no exp claim", "?access_token={no_exp}", {}, 401, "exp"),
    ("Basic scheme", "", {"Authorization": "Basic dXNlcjpwdw=="}, 401, "Bearer"),
    ("bad bearer", "", {"Authorization": "Bearer {wrong}"}, 401, "signature"),
    ("bad cookie", "", {"Cookie": "access_token={expired}"}, 401, "expired"),
    ("symbol outside the claim", "?symbols=AAA&access_token={only_b}", {}, 403, "AAA"),
    ("one of two outside", "?symbols=AAA,BBB&access_token={only_b}", {}, 403, "AAA"),
]


@pytest.mark.parametrize(
    ("case", "query", "extra", "status", "needle"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_ws_refuses_before_the_upgrade_with_a_json_error(
    case: str, query: str, extra: dict[str, str], status: int, needle: str
) -> None:
    tokens = {
        "wrong": mint_token("another-secret-not-the-servers-0123456789"),
        "expired": mint_token(SECRET, ttl=60, now=time.time() - 3600),
        "no_exp": jwt.encode({"symbols": ["AAA"]}, SECRET, algorithm="HS256"),
        "only_b": mint_token(SECRET, symbols=["BBB"]),
    }
    query = query.format(**tokens)
    extra = {k: v.format(**tokens) for k, v in extra.items()}

    async def body() -> None:
        async with serving(source(), settings=settings()) as server:
            port = server.port
            assert port is not None
            got, payload = await request(
                port, "GET", "/ws" + query, headers=upgrade_headers(**extra)
            )
            assert got == status, (case, payload)
            assert isinstance(payload, dict) and needle in payload["error"], (case, payload)
            # The real client's handshake fails the same way, and nothing stays registered.
            with pytest.raises(tornado.httpclient.HTTPClientError) as err:
                await connect(port, query, extra)
            assert err.value.code == status, case
            assert server.state.streams == set()

    run(body)


# ---------------------------------------------------------------------- accepted tokens


def test_ws_token_in_header_query_or_cookie_streams_only_the_claimed_symbols() -> None:
    only_b = mint_token(SECRET, symbols=["BBB"])

    async def body() -> None:
        async with serving(source(), settings=settings()) as server:
            port = server.port
            assert port is not None
            for query, headers in (
                ("", {"Authorization": f"Bearer {only_b}"}),
                (f"?access_token={only_b}", {}),
                ("", {"Cookie": f"access_token={only_b}"}),
                ("?symbols=bbb", {"Authorization": f"Bearer {only_b}"}),
            ):
                conn = await connect(port, query, headers)
                msgs = await read_messages(conn, 6)
                await close(conn)
                # "All symbols" means the token's symbols.
                assert {m["data"]["symbol"] for m in msgs} == {"BBB"}, (query, headers)

    run(body)


def test_ws_cookie_from_a_foreign_origin_is_refused() -> None:
    """Cross-site WebSocket hijacking: the browser attaches the cookie for any page."""
    token = mint_token(SECRET)
    cookie = {"Cookie": f"access_token={token}"}

    async def body() -> None:
        async with serving(source(), settings=settings()) as server:
            port = server.port
            assert port is not None
            evil = {**cookie, "Origin": "https://evil.example"}
            got, payload = await request(port, "GET", "/ws", headers=upgrade_headers(**evil))
            assert got == 403, payload
            with pytest.raises(tornado.httpclient.HTTPClientError) as err:
                await connect(port, "", evil)
            assert err.value.code == 403
            assert server.state.streams == set()
            # The same cookie from the allowed origin, and from the server's own origin.
            for origin in (ALLOWED_ORIGIN, f"http://127.0.0.1:{port}"):
                conn = await connect(port, "", {**cookie, "Origin": origin})
                assert len(await read_messages(conn, 2)) == 2
                await close(conn)

    run(body)


def test_ws_ends_with_close_code_1008_when_the_token_expires() -> None:
    short = mint_token(SECRET, ttl=2)

    async def body() -> None:
        async with serving(source(), settings=settings()) as server:
            port = server.port
            assert port is not None
            conn = await connect(port, f"?access_token={short}")
            assert await read_messages(conn, 2)
            async with asyncio.timeout(HANG_GUARD_S):
                while await conn.read_message() is not None:
                    pass
            conn.close()  # the server closed it; this releases the client side
            assert (conn.close_code, conn.close_reason) == (1008, "token expired")
            # Reconnecting with the same token is refused now.
            got, payload = await request(
                port, "GET", f"/ws?access_token={short}", headers=upgrade_headers()
            )
            assert got == 401 and "expired" in payload["error"]

    run(body)
