from __future__ import annotations

import time

import jwt
import pytest

from quoteflow.server.auth import AuthError, extract_token, mint_token, parse_ttl, verify_token

SECRET = "s3cret-for-tests-only-" + "x" * 64


def test_valid_token_roundtrip() -> None:
    tok = mint_token(SECRET, symbols=["MSFT", "AAPL"], ttl=60, admin=True, subject="ana")
    claims = verify_token(tok, SECRET)
    assert claims.symbols == frozenset({"AAPL", "MSFT"})
    assert claims.admin and claims.subject == "ana"
    assert 55 < claims.seconds_left() <= 60
    claims.check_symbols(["AAPL"])


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "authentication required"),
        ("", "authentication required"),
        ("not.a.jwt", "invalid token"),
        (mint_token("other-secret-" + "y" * 64, ttl=60), "signature is invalid"),
        (mint_token(SECRET, ttl=10, now=time.time() - 100), "token expired"),
        (jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), "lacks the 'exp' claim"),
        (jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS512"), "invalid token"),
    ],
)
def test_rejected_tokens_are_401(token: str | None, message: str) -> None:
    with pytest.raises(AuthError, match=message) as info:
        verify_token(token, SECRET)
    assert info.value.status == 401


def test_symbol_not_allowed_is_403() -> None:
    claims = verify_token(mint_token(SECRET, symbols=["AAPL"], ttl=60), SECRET)
    with pytest.raises(AuthError, match="does not allow symbol\\(s\\) MSFT; allowed: AAPL") as info:
        claims.check_symbols(["AAPL", "MSFT"])
    assert info.value.status == 403


def test_token_without_symbols_claim_allows_all() -> None:
    claims = verify_token(mint_token(SECRET, ttl=60), SECRET)
    assert claims.symbols is None
    claims.check_symbols(["ANY"])


def test_extract_order_and_bad_scheme() -> None:
    assert extract_token({"Authorization": "Bearer h"}, "q", "c") == "h"
    assert extract_token({}, "q", "c") == "q"
    assert extract_token({}, None, "c") == "c"
    assert extract_token({}, None, None) is None
    with pytest.raises(AuthError, match="Bearer"):
        extract_token({"Authorization": "Basic abc"}, None, None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)]
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "soon"])
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ttl(text)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="auth secret too short: 5 bytes"):
        mint_token("short", ttl=60)
    with pytest.raises(ValueError, match="auth secret is needed"):
        mint_token("", ttl=60)
