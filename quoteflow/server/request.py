"""What the API reads from a request, validated: the token, ``symbols`` and ``events``.

Free functions of a :class:`RequestView` (any tornado ``RequestHandler`` is one) and the
app's :class:`~quoteflow.server.app.ServerState`, shared by every endpoint that takes
them: ``/stream`` and ``/ws`` (through :func:`quoteflow.server.streams.open_subscription`),
``/snapshot``, ``/symbols``, ``/metrics``. Each failure is an :class:`ApiError`, which the
handlers turn into a JSON error naming what was wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import tornado.web
from tornado.httputil import HTTPServerRequest

from quoteflow.broker.base import ALL_EVENTS
from quoteflow.server.auth import AuthError, Claims, extract_token, verify_token

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState

__all__ = [
    "ApiError",
    "RequestView",
    "allowed_symbols",
    "authorize",
    "last_argument",
    "parse_events",
    "parse_symbols",
    "symbols_error",
]


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose JSON body is ``{"error": message, **extra}``.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        What was wrong and what to do; becomes ``"error"``.
    headers : dict, optional
        Response headers to send with the error (e.g. ``WWW-Authenticate``).
    quiet_log : bool
        No access-log line for this response (a refusal by a connection limit: those are
        counted and summarised instead, see :func:`quoteflow.server.logs.log_request`).
    **extra
        More JSON fields (e.g. ``known_symbols``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        quiet_log: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(status, log_message=None)
        self.payload: dict[str, Any] = {"error": message, **extra}
        #: Response headers of the error (set in write_error: tornado clears the headers
        #: set before the exception when it starts the error response).
        self.headers: dict[str, str] = dict(headers or {})
        self.quiet_log = quiet_log


class RequestView(Protocol):
    """What validation reads from a request; a tornado ``RequestHandler`` has all of it.

    Query arguments are read through ``get_arguments`` so that they are decoded as
    tornado decodes them (a 400 for bad UTF-8, control characters replaced, stripped).
    """

    request: HTTPServerRequest

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        """Every value of query argument ``name``."""
        ...

    def get_cookie(self, name: str) -> str | None:
        """The value of cookie ``name``."""
        ...


def last_argument(view: RequestView, name: str) -> str | None:
    """The last value of query argument ``name`` (tornado's ``get_argument`` rule)."""
    values = view.get_arguments(name)
    return values[-1] if values else None


def _listed(view: RequestView, name: str) -> list[str]:
    """The comma-separated values of every ``name`` argument (``a=X,Y&a=Z``), stripped."""
    names: list[str] = []
    for value in view.get_arguments(name):
        names.extend(n.strip() for n in value.split(",") if n.strip())
    return names


def symbols_error(state: ServerState, message: str, status: int = 400) -> ApiError:
    """An :class:`ApiError` that lists the known symbols (the wire contract's 400)."""
    return ApiError(status, message, known_symbols=state.known_symbols())


def authorize(
    view: RequestView, state: ServerState, *, admin: bool = False, metrics: bool = False
) -> Claims | None:
    """Verify the request's token when auth is on; None when auth is off.

    The token comes from ``Authorization: Bearer``, the ``access_token`` query
    parameter (EventSource cannot set headers) or the ``access_token`` cookie.

    Parameters
    ----------
    view : RequestView
        The request.
    state : ServerState
        The app's state (its ``settings.auth_secret``).
    admin : bool
        The token must carry ``"admin": true``.
    metrics : bool
        The token must carry ``"metrics": true`` or ``"admin": true``.

    Raises
    ------
    ApiError
        401 (missing, bad or expired token) or 403 (claim needed).
    """
    secret = state.settings.auth_secret
    if secret is None:
        return None
    try:
        token = extract_token(
            view.request.headers,
            last_argument(view, "access_token"),
            view.get_cookie("access_token"),
        )
        claims = verify_token(token, secret)
    except AuthError as exc:
        # RFC 6750 §3: a 401 names the scheme the client should use.
        challenge = {"WWW-Authenticate": 'Bearer realm="quoteflow"'} if exc.status == 401 else {}
        raise ApiError(exc.status, str(exc), headers=challenge) from None
    if admin and not claims.admin:
        raise ApiError(403, "this token may not change parameters (needs the admin claim)")
    if metrics and not (claims.metrics or claims.admin):
        raise ApiError(403, "this token may not read /metrics (needs the metrics or admin claim)")
    return claims


def allowed_symbols(
    state: ServerState, claims: Claims | None, symbols: frozenset[str] | None
) -> frozenset[str] | None:
    """``symbols`` limited by the token: 403 for named symbols it does not allow;
    "all symbols" becomes the token's symbols."""
    if claims is None or claims.symbols is None:
        return symbols
    if symbols is None:
        return frozenset(s for s in state.source.symbols if claims.allows(s))
    try:
        claims.check_symbols(symbols)
    except AuthError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return symbols


def parse_symbols(view: RequestView, state: ServerState) -> frozenset[str] | None:
    """The ``symbols`` query parameter(s), validated; None means all symbols.

    Accepts ``symbols=A,B`` and repeated ``symbols=A&symbols=B``; names are matched
    case-insensitively; an empty value means all symbols.

    Raises
    ------
    ApiError
        400 for too many or unknown symbols.
    """
    names = _listed(view, "symbols")
    if not names:
        return None
    limit = state.settings.max_symbols
    if len(names) > limit:
        raise symbols_error(
            state,
            f"too many symbols: {len(names)} requested, at most {limit} per stream "
            "(omit 'symbols' to receive every symbol)",
        )
    return state.resolve_symbols(names, lambda message: symbols_error(state, message))


def parse_events(view: RequestView, state: ServerState) -> frozenset[str]:
    """The ``events`` query parameter (``tick``, ``bar``; default both).

    Raises
    ------
    ApiError
        400 naming the unknown event types.
    """
    names = [n.lower() for n in _listed(view, "events")]
    if not names:
        return ALL_EVENTS
    bad = sorted(set(names) - ALL_EVENTS)
    if bad:
        shown = ", ".join(repr(b[:40]) for b in bad[:5])
        raise symbols_error(
            state, f"bad events value {shown}: choose from {', '.join(sorted(ALL_EVENTS))}"
        )
    return frozenset(names)
