"""quoteflow.server.streams.open_subscription: the one admission path of /stream and /ws.

Driven with a plain :class:`RequestView` (a tornado ``HTTPServerRequest`` and its query
arguments) and a real ``ServerState`` (market, memory broker, metrics); the endpoints
themselves are covered over real sockets in tests/integration (test_server, test_ws,
test_ws_auth, test_auth_http, test_resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from quoteflow.broker import CloseReason
from quoteflow.broker.factory import broker_from_url
from quoteflow.market import Market
from quoteflow.server.app import ServerSettings, ServerState
from quoteflow.server.auth import mint_token
from quoteflow.server.handlers import StreamHandler
from quoteflow.server.request import ApiError
from quoteflow.server.streams import OpenStream, open_subscription
from quoteflow.server.ws import WebSocketStreamHandler

SECRET = "unit-test-secret-0123456789abcdef"


class View:
    """A request as open_subscription reads it (what a tornado handler provides)."""

    def __init__(self, uri: str, headers: dict[str, str] | None = None, ip: str = "10.0.0.1"):
        line = RequestStartLine("GET", uri, "HTTP/1.1")
        fields = HTTPHeaders({"Host": "127.0.0.1", **(headers or {})})
        self.request = HTTPServerRequest(start_line=line, headers=fields)
        self.request.remote_ip = ip

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        values = [v.decode() for v in self.request.query_arguments.get(name, [])]
        return [v.strip() for v in values] if strip else values

    def get_cookie(self, name: str) -> str | None:
        return None


def state(**settings: object) -> ServerState:
    return ServerState(
        Market.universe(3, seed=1),
        broker_from_url(None),
        ServerSettings(**settings),  # type: ignore[arg-type]
    )


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def test_the_websocket_handler_is_not_a_stream_handler() -> None:
    """Both endpoints share open_subscription, not a class: /ws does not inherit /stream."""
    assert not issubclass(WebSocketStreamHandler, StreamHandler)


def test_a_stream_is_registered_counted_and_released_once() -> None:
    async def body() -> None:
        st = state()
        stream = open_subscription(View("/stream?symbols=sym0001&events=tick"), st)
        other = open_subscription(View("/ws"), st)
        assert st.streams == {stream, other} and st.streams_by_ip == {"10.0.0.1": 2}
        assert stream.sub.symbols == frozenset({"SYM0001"})
        assert stream.sub.events == frozenset({"tick"})
        # The handler's paths (connection closed, writer done, refused handshake) may all
        # call close(): the slot is freed once, the first reason is kept.
        stream.close(CloseReason.CLIENT_GONE)
        stream.close(CloseReason.SHUTDOWN)
        assert st.streams == {other} and st.streams_by_ip == {"10.0.0.1": 1}
        assert stream.sub.close_reason == CloseReason.CLIENT_GONE
        assert st.broker.subscriber_count == 1
        other.close(CloseReason.CLIENT_GONE)
        assert st.streams == set() and st.streams_by_ip == {}

    run(body)


def test_the_last_event_id_header_wins_over_the_query() -> None:
    async def body() -> None:
        st = state()
        st.broker.publish(st.source.step())  # type: ignore[attr-defined]
        st.broker.publish(st.source.step())  # type: ignore[attr-defined]
        # Resuming after the header's id 1: the query's 0 would replay twice as much.
        view = View("/stream?lastEventId=0", headers={"Last-Event-ID": "1"})
        stream = open_subscription(view, st)
        data = stream.sub.take().data
        assert b"id: 2\n" in data and b"id: 1\n" not in data
        stream.close(CloseReason.CLIENT_GONE)

    run(body)


@pytest.mark.parametrize(
    ("uri", "status", "words"),
    [
        ("/stream?symbols=NOPE", 400, "unknown symbol"),
        ("/stream?events=quote", 400, "bad events value"),  # not a market event type
        ("/stream?lastEventId=abc", 400, "known_symbols"),
    ],
)
def test_bad_requests_are_refused_and_leave_nothing_behind(
    uri: str, status: int, words: str
) -> None:
    async def body() -> None:
        st = state()
        with pytest.raises(ApiError) as err:
            open_subscription(View(uri), st)
        assert err.value.status_code == status
        assert words in str(err.value.payload)
        assert "known_symbols" in err.value.payload  # the wire contract's 400
        assert st.streams == set() and st.streams_by_ip == {}
        assert st.broker.subscriber_count == 0

    run(body)


def test_limit_refusals_are_quiet_and_checked_before_subscribing() -> None:
    async def body() -> None:
        st = state(max_connections=2, max_connections_per_ip=1)
        first = open_subscription(View("/stream", ip="10.0.0.1"), st)
        with pytest.raises(ApiError) as per_ip:
            open_subscription(View("/ws", ip="10.0.0.1"), st)  # /ws counts the same
        assert per_ip.value.status_code == 429 and per_ip.value.quiet_log
        second = open_subscription(View("/ws", ip="10.0.0.2"), st)
        with pytest.raises(ApiError) as full:
            open_subscription(View("/stream", ip="10.0.0.3"), st)
        assert full.value.status_code == 503 and full.value.quiet_log
        assert st.broker.subscriber_count == 2
        first.close(CloseReason.CLIENT_GONE)
        second.close(CloseReason.CLIENT_GONE)

    run(body)


def test_shutting_down_refuses_before_looking_at_the_token() -> None:
    async def body() -> None:
        st = state(auth_secret=SECRET)
        st.closing = True
        with pytest.raises(ApiError) as err:
            open_subscription(View("/stream"), st)  # no token at all
        assert err.value.status_code == 503

    run(body)


def test_a_token_limits_symbols_and_its_expiry_ends_the_stream() -> None:
    async def body() -> None:
        st = state(auth_secret=SECRET)
        with pytest.raises(ApiError) as err:
            open_subscription(View("/ws"), st)
        assert err.value.status_code == 401
        assert "WWW-Authenticate" in err.value.headers
        token = mint_token(SECRET, symbols=["SYM0002"], ttl=1)
        stream = open_subscription(View(f"/ws?access_token={token}"), st)
        assert stream.sub.symbols == frozenset({"SYM0002"})  # "all" became the claim's
        closed = asyncio.Event()
        stream.sub.add_close_callback(lambda _: closed.set())
        await asyncio.wait_for(closed.wait(), 10)  # hang guard, not a speed bound
        assert stream.sub.close_reason == CloseReason.TOKEN_EXPIRED
        stream.close(CloseReason.CLIENT_GONE)
        assert st.streams == set()

    run(body)


def test_closing_cancels_the_expiry_timer() -> None:
    async def body() -> None:
        st = state(auth_secret=SECRET)
        token = mint_token(SECRET, ttl=3600)
        stream = open_subscription(
            View("/stream", headers={"Authorization": f"Bearer {token}"}), st
        )
        timer = stream._expiry
        assert timer is not None
        stream.close(CloseReason.CLIENT_GONE)
        assert timer.cancelled()

    run(body)


def test_heartbeat_when_idle_and_the_watch_on_every_tick() -> None:
    async def body() -> None:
        st = state()
        ticks: list[float] = []
        stream: OpenStream = open_subscription(View("/ws"), st, watch=ticks.append)
        last = stream.sub.last_activity
        assert not stream.heartbeat(last + 1.0, 15.0, b": keepalive\n\n")
        assert stream.heartbeat(last + 20.0, 15.0, b": keepalive\n\n")
        assert ticks == [last + 1.0, last + 20.0]
        assert stream.sub.take().data == b": keepalive\n\n"
        stream.end()
        assert stream.sub.close_reason == CloseReason.SHUTDOWN
        stream.close(CloseReason.CLIENT_GONE)

    run(body)
