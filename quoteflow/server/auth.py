"""HS256 JWT authentication for the quote server (off unless a secret is configured).

A token travels in one of three places, tried in this order: the ``Authorization: Bearer``
header, the ``access_token`` query parameter (the browser's ``EventSource`` cannot set
headers) or the ``access_token`` cookie. Claims used:

- ``exp`` (required, RFC 7519 §4.1.4): checked on connect; a stream ends at expiry.
- ``symbols`` (optional): list of symbols the token may subscribe to; absent or ``"*"``
  means all.
- ``admin`` (optional, bool): needed for ``PUT /symbols/{symbol}``.

This module is pure (no tornado): handlers map :class:`AuthError` to a JSON 401/403.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from quoteflow.errors import QuoteflowError

__all__ = [
    "ALGORITHM",
    "AuthError",
    "Claims",
    "check_secret",
    "extract_token",
    "mint_token",
    "parse_ttl",
    "verify_token",
]

#: Only HMAC-SHA256 is accepted: never trust the token's own "alg" header (RFC 8725 §3.1).
ALGORITHM = "HS256"


class AuthError(QuoteflowError):
    """Authentication (status 401) or authorisation (status 403) failure."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Claims:
    """What a verified token allows."""

    subject: str | None
    symbols: frozenset[str] | None  # None: every symbol
    admin: bool
    expires_at: float  # unix seconds

    def check_symbols(self, wanted: Iterable[str]) -> None:
        """Raise a 403 :class:`AuthError` naming the symbols this token may not read."""
        if self.symbols is None:
            return
        denied = sorted(set(wanted) - self.symbols)
        if denied:
            raise AuthError(
                403,
                f"token does not allow symbol(s) {', '.join(denied)}; "
                f"allowed: {', '.join(sorted(self.symbols))}",
            )

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def _jwt() -> Any:
    try:
        import jwt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise QuoteflowError(
            "auth needs PyJWT: pip install 'quoteflow[scale]' (or pip install PyJWT)"
        ) from exc
    return jwt


#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
MIN_SECRET_BYTES = 32


def check_secret(secret: str | None) -> str:
    """Return ``secret`` if it is long enough for HS256, else raise a clear ``ValueError``."""
    if not secret:
        raise ValueError("an auth secret is needed (--auth-secret or QUOTEFLOW_AUTH_SECRET)")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"auth secret too short: {len(secret.encode())} bytes, HS256 needs at least "
            f"{MIN_SECRET_BYTES} (RFC 7518 §3.2); e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return secret


def parse_ttl(text: str) -> float:
    """Parse a duration like ``90``, ``90s``, ``15m``, ``1h``, ``7d`` into seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 1h or 7d") from None
    if value <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return value


def mint_token(
    secret: str,
    *,
    symbols: Iterable[str] | None = None,
    ttl: float = 3600.0,
    admin: bool = False,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """Create an HS256 token (what ``quoteflow token`` prints).

    Parameters
    ----------
    secret
        Shared secret of the servers (``--auth-secret`` / ``QUOTEFLOW_AUTH_SECRET``).
    symbols
        Symbols the token may subscribe to; None for all.
    ttl
        Lifetime in seconds.
    admin
        Whether the token may change parameters (``PUT /symbols/...``).
    """
    check_secret(secret)
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {"iat": int(issued), "exp": int(issued + ttl)}
    if symbols is not None:
        payload["symbols"] = sorted(symbols)
    if admin:
        payload["admin"] = True
    if subject:
        payload["sub"] = subject
    token: str = _jwt().encode(payload, secret, algorithm=ALGORITHM)
    return token


def extract_token(
    headers: Mapping[str, str], query_token: str | None, cookie_token: str | None
) -> str | None:
    """The token from the request, header first, then query parameter, then cookie."""
    auth = headers.get("Authorization", "")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError(401, "Authorization header must be 'Bearer <token>'")
        return value.strip()
    return query_token or cookie_token or None


def verify_token(token: str | None, secret: str, *, leeway: float = 0.0) -> Claims:
    """Verify an HS256 token and return its :class:`Claims`.

    Raises
    ------
    AuthError
        401 for a missing, malformed, wrongly signed or expired token; 401 for a token
        without ``exp`` (a token that never expires is refused).
    """
    if not token:
        raise AuthError(
            401, "authentication required: send 'Authorization: Bearer <token>' or ?access_token="
        )
    jwt = _jwt()
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]}, leeway=leeway
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None
    raw = payload.get("symbols")
    symbols: frozenset[str] | None
    if raw is None or raw == "*":
        symbols = None
    elif isinstance(raw, str):
        symbols = frozenset(s for s in raw.split(",") if s)
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        symbols = frozenset(raw)
    else:
        raise AuthError(401, "token claim 'symbols' must be a list of strings")
    return Claims(
        subject=payload.get("sub"),
        symbols=symbols,
        admin=bool(payload.get("admin", False)),
        expires_at=float(payload["exp"]),
    )
