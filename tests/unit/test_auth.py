from __future__ import annotations

import time

import jwt
import pytest

from quoteflow.server.auth import (
    AuthError,
    check_secret,
    extract_token,
    mint_token,
    parse_ttl,
    symbol_key,
    verify_token,
)

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
    with pytest.raises(ValueError, match="auth secret is empty"):
        mint_token("", ttl=60)


# ------------------------------------------------------------- defect 5 (issue 10)


def _signed(payload: dict[str, object]) -> str:
    """A correctly signed HS256 token carrying ``payload`` exactly as given."""
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.mark.parametrize("value", ["false", "true", [0], 1, {"x": 1}, "yes"])
def test_defect5_admin_claim_that_is_not_true_grants_nothing(value: object) -> None:
    claims = verify_token(_signed({"exp": int(time.time()) + 60, "admin": value}), SECRET)
    assert claims.admin is False


def test_defect5_admin_and_metrics_claims_grant_when_true() -> None:
    exp = int(time.time()) + 60
    assert verify_token(_signed({"exp": exp, "admin": True}), SECRET).admin is True
    assert verify_token(_signed({"exp": exp, "metrics": True}), SECRET).metrics is True
    assert verify_token(_signed({"exp": exp, "metrics": "true"}), SECRET).metrics is False
    assert verify_token(mint_token(SECRET, ttl=60, metrics=True), SECRET).metrics is True


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"exp": 9999999999, "nbf": True},
        {"exp": 9999999999, "iat": False},
        {"exp": 9999999999, "nbf": "0"},
        {"exp": 9999999999.0, "iat": "1"},
    ],
)
def test_defect5_time_claims_must_be_numbers(claims: dict[str, object]) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(_signed(claims), SECRET)
    assert info.value.status == 401
    assert "must be a number" in str(info.value) or "not yet valid" in str(info.value)


def test_defect5_numeric_time_claims_still_work() -> None:
    now = int(time.time())
    claims = verify_token(_signed({"exp": now + 60.5, "nbf": now - 1, "iat": now}), SECRET)
    assert 55 < claims.seconds_left() <= 61


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "empty"),
        (" " * 40, "empty"),
        ("\t\n \r", "empty"),
        ("short" + " " * 40, "too short: 5 bytes"),
        ("a b c d e f g h i j k l m n o p q r s t u v w x y z", "too short: 26 bytes"),
        ("k" * 64, "one character repeated"),
    ],
)
def test_defect5_empty_or_weak_secret_is_refused(secret: str, message: str) -> None:
    from quoteflow.server.app import ServerSettings

    with pytest.raises(ValueError, match=message):
        check_secret(secret)
    with pytest.raises(ValueError, match=message):
        ServerSettings(auth_secret=secret)


def test_defect5_token_symbols_compare_case_insensitively_like_requests() -> None:
    claims = verify_token(mint_token(SECRET, symbols=["aapl", " Msft "], ttl=60), SECRET)
    claims.check_symbols(["AAPL", "msft", "Aapl"])
    assert claims.allows("MSFT") and not claims.allows("GOOG")
    assert symbol_key(" aapl ") == symbol_key("AAPL")
    with pytest.raises(AuthError, match="goog"):
        claims.check_symbols(["goog"])
    comma = verify_token(_signed({"exp": int(time.time()) + 60, "symbols": "aapl,ibm"}), SECRET)
    comma.check_symbols(["AAPL", "IBM"])


@pytest.mark.parametrize(
    "text", ["inf", "nan", "-inf", "infs", "1e400s", "-5m", "0", "0s", "0.5s", "1e300", "3651d"]
)
def test_defect5_ttl_that_is_not_finite_positive_and_sane_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ttl(text)


def test_defect5_mint_token_refuses_a_non_finite_ttl() -> None:
    for ttl in (float("inf"), float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match="lifetime"):
            mint_token(SECRET, ttl=ttl)
