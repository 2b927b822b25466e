"""HS256 JWT authentication for the quote server (off unless a secret is configured).

A token travels in one of three places, tried in this order: the ``Authorization: Bearer``
header, the ``access_token`` query parameter (the browser's ``EventSource`` cannot set
headers) or the ``access_token`` cookie. Claims used:

- ``exp`` (required, RFC 7519 §4.1.4): checked on connect; a stream ends at expiry.
  ``exp``, ``nbf`` and ``iat`` must be JSON numbers (NumericDate, RFC 7519 §2): a string
  or a boolean is refused, never coerced.
- ``symbols`` (optional): list of symbols the token may subscribe to; absent or ``"*"``
  means all. Matched like request symbols, case-insensitively (:func:`symbol_key`).
- ``admin`` (optional): grants ``PUT /symbols/{symbol}`` (and ``/metrics``) only when it
  is JSON ``true``; ``"false"``, ``1`` or ``[0]`` grant nothing.
- ``metrics`` (optional): JSON ``true`` lets the token read ``/metrics`` when
  ``--metrics-access token``.

This module is pure (no tornado): handlers map :class:`AuthError` to a JSON 401/403.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from quoteflow.errors import QuoteflowError

__all__ = [
    "ALGORITHM",
    "MAX_TTL",
    "MIN_SECRET_BYTES",
    "AuthError",
    "Claims",
    "check_secret",
    "extract_token",
    "mint_token",
    "parse_ttl",
    "symbol_key",
    "verify_token",
]

#: Only HMAC-SHA256 is accepted: never trust the token's own "alg" header (RFC 8725 §3.1).
ALGORITHM = "HS256"


class AuthError(QuoteflowError):
    """Authentication (status 401) or authorisation (status 403) failure."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def symbol_key(name: str) -> str:
    """The form in which a symbol name is compared: request names and token claims alike.

    Symbols are case-insensitive on every door (``?symbols=aapl``, a token's
    ``"symbols": ["aapl"]``), so both sides are compared through this one function.
    """
    return name.strip().upper()


@dataclass(frozen=True)
class Claims:
    """What a verified token allows.

    Attributes
    ----------
    subject : str or None
        The ``sub`` claim.
    symbols : frozenset of str or None
        :func:`symbol_key` of every symbol the token may read; None: every symbol.
    admin : bool
        May change parameters (and read ``/metrics``).
    expires_at : float
        ``exp``, unix seconds.
    metrics : bool
        May read ``/metrics`` (``--metrics-access token``).
    """

    subject: str | None
    symbols: frozenset[str] | None
    admin: bool
    expires_at: float
    metrics: bool = False

    def allows(self, symbol: str) -> bool:
        """Whether the token may read ``symbol`` (compared by :func:`symbol_key`)."""
        return self.symbols is None or symbol_key(symbol) in self.symbols

    def check_symbols(self, wanted: Iterable[str]) -> None:
        """Raise a 403 :class:`AuthError` naming the symbols this token may not read."""
        if self.symbols is None:
            return
        denied = sorted({w for w in wanted if not self.allows(w)})
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


_MAKE_SECRET = "python -c 'import secrets; print(secrets.token_hex(32))'"


def check_secret(secret: str | None) -> str:
    """Return ``secret`` if it is fit to sign HS256 tokens, else raise a clear ``ValueError``.

    An empty or whitespace-only secret is an error, never "auth off": a deployment whose
    secret variable came out empty must not start without auth. A secret with fewer than
    :data:`MIN_SECRET_BYTES` bytes outside whitespace, or one character repeated, is
    refused as guessable.

    Raises
    ------
    ValueError
        Naming what is wrong and how to make a good secret.
    """
    if secret is None or not secret.strip():
        raise ValueError(
            "auth secret is empty (or only whitespace): use a random secret of at least "
            f"{MIN_SECRET_BYTES} bytes, e.g. {_MAKE_SECRET}; to run without auth, unset "
            "QUOTEFLOW_AUTH_SECRET and drop --auth-secret"
        )
    solid = len("".join(secret.split()).encode())
    if solid < MIN_SECRET_BYTES:
        raise ValueError(
            f"auth secret too short: {solid} bytes (whitespace not counted), HS256 needs at "
            f"least {MIN_SECRET_BYTES} (RFC 7518 §3.2); e.g. {_MAKE_SECRET}"
        )
    if len(set(secret)) == 1:
        raise ValueError(
            f"auth secret is one character repeated: anyone could guess it; e.g. {_MAKE_SECRET}"
        )
    return secret


#: Longest token lifetime ``parse_ttl`` accepts (ten years): beyond that is a typo.
MAX_TTL = 3650 * 86400.0


def parse_ttl(text: str) -> float:
    """Parse a duration like ``90``, ``90s``, ``15m``, ``1h``, ``7d`` into seconds.

    Raises
    ------
    ValueError
        Not a number with an optional unit, or not finite, or not in [1 s, :data:`MAX_TTL`]
        (``exp`` has whole seconds: less than one would expire at once).
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 1h or 7d") from None
    if not math.isfinite(value) or not 1 <= value <= MAX_TTL:
        raise ValueError(
            f"bad duration {text!r}: must be at least 1s and at most 3650d "
            "(e.g. 90s, 15m, 1h or 7d)"
        )
    return value


def mint_token(
    secret: str,
    *,
    symbols: Iterable[str] | None = None,
    ttl: float = 3600.0,
    admin: bool = False,
    metrics: bool = False,
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
    metrics
        Whether the token may read ``/metrics`` (``--metrics-access token``).
    subject
        The ``sub`` claim.
    now
        Issue time, unix seconds (default: now).
    """
    check_secret(secret)
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"token lifetime must be a positive number of seconds, got {ttl}")
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {"iat": int(issued), "exp": int(issued + ttl)}
    if symbols is not None:
        payload["symbols"] = sorted(symbols)
    if admin:
        payload["admin"] = True
    if metrics:
        payload["metrics"] = True
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
        without ``exp`` (a token that never expires is refused) or whose ``exp``, ``nbf``
        or ``iat`` is not a number.
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
    for name in ("exp", "nbf", "iat"):
        # PyJWT coerces with int(): "exp": "9999999999" would pass, "nbf": true too.
        value = payload.get(name)
        if value is not None and not (type(value) in (int, float) and math.isfinite(value)):
            raise AuthError(
                401, f"token claim {name!r} must be a number of seconds (NumericDate, RFC 7519 §2)"
            )
    raw = payload.get("symbols")
    symbols: frozenset[str] | None
    if raw is None or raw == "*":
        symbols = None
    elif isinstance(raw, str):
        symbols = frozenset(symbol_key(s) for s in raw.split(",") if s.strip())
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        symbols = frozenset(symbol_key(s) for s in raw)
    else:
        raise AuthError(401, "token claim 'symbols' must be a list of strings")
    subject = payload.get("sub")
    return Claims(
        subject=subject if isinstance(subject, str) else None,
        symbols=symbols,
        # Only JSON true grants: "false", 1 or [0] are truthy but are not a grant.
        admin=payload.get("admin") is True,
        expires_at=float(payload["exp"]),
        metrics=payload.get("metrics") is True,
    )
