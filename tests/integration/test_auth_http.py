"""Auth, CORS and the per-IP limit over HTTP (what tests/integration/test_server.py does
not already cover), and ``quoteflow token`` against a real ``quoteflow serve`` process."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from quoteflow.server.app import ServerSettings
from quoteflow.server.auth import AuthError, mint_token, verify_token
from tests.conftest import ROOT
from tests.integration.fakes import FakeSource, RawStream, request, run, serving, wait_for
from tests.redis_server import QuoteflowProcess, quoteflow_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = "test-secret-for-auth-http-0123456789"
#: How long a stream with a 2 s token may run before the test gives up: a hang guard.
EXPIRY_HANG_GUARD_S = 10.0


async def fetch(port: int, method: str, path: str, headers: dict[str, str]) -> HTTPResponse:
    """One request with its headers kept (tornado's client; errors are answers too)."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        body = b"{}" if method == "PUT" else None
        return await client.fetch(
            f"http://127.0.0.1:{port}{path}",
            method=method,
            headers=headers,
            body=body,
            raise_error=False,
            request_timeout=10,
        )
    finally:
        client.close()


def quoteflow_cli(*args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m quoteflow ARGS`` (this checkout), with QUOTEFLOW_AUTH_SECRET=secret if given."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if secret is not None:
        env["QUOTEFLOW_AUTH_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "quoteflow", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def body(resp: HTTPResponse) -> Any:
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    return json.loads(resp.body)


# ------------------------------------------------------------------------------- auth


def test_auth_cases_not_covered_elsewhere() -> None:
    async def main() -> None:
        settings = ServerSettings(auth_secret=SECRET)
        async with serving(FakeSource(interval=0.005), settings=settings) as server:
            port = server.port
            assert port is not None
            resp = await fetch(port, "GET", "/symbols", {})
            assert resp.code == 401 and "authentication required" in body(resp)["error"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            resp = await fetch(port, "GET", "/stream", {"Authorization": "Basic dXNlcjpwdw=="})
            assert resp.code == 401 and "Bearer" in body(resp)["error"]

            import jwt

            no_exp = jwt.encode({"symbols": ["AAA"]}, SECRET, algorithm="HS256")
            status, err = await request(port, "GET", f"/stream?access_token={no_exp}")
            assert status == 401 and "exp" in err["error"]
            expired = mint_token(SECRET, ttl=60, now=time.time() - 3600)
            status, err = await request(port, "GET", f"/stream?access_token={expired}")
            assert status == 401 and "expired" in err["error"]
            # "none" algorithm (RFC 8725 §2.1): refused, whatever the claims say.
            unsigned = jwt.encode({"exp": int(time.time()) + 60}, None, algorithm="none")
            status, err = await request(port, "GET", f"/stream?access_token={unsigned}")
            assert status == 401

            # Valid token in a cookie streams; "all symbols" means the token's symbols.
            only_b = mint_token(SECRET, symbols=["BBB"])
            s = await RawStream.open(port, "/stream", {"Cookie": f"access_token={only_b}"})
            assert s.status == 200
            await s.read_until(lambda st: len(st.events) >= 6)
            await s.close()
            assert {json.loads(e.data)["symbol"] for e in s.events} == {"BBB"}
            status, snap = await request(port, "GET", f"/snapshot?access_token={only_b}")
            assert status == 200 and set(snap["quotes"]) == {"BBB"}
            status, err = await request(port, "GET", f"/snapshot?symbols=AAA&access_token={only_b}")
            assert status == 403 and "AAA" in err["error"]

            # An expiring token: the stream ends cleanly (EOF, not a reset) at exp.
            # (The read's timeout is a hang guard: a stream that ignored exp would run on.)
            short = mint_token(SECRET, ttl=2)
            s = await RawStream.open(port, "/stream", {"Authorization": f"Bearer {short}"})
            await s.read_until(lambda st: st.eof, timeout=EXPIRY_HANG_GUARD_S)
            await s.close()
            assert s.events
            with pytest.raises(AuthError, match="expired"):
                verify_token(short, SECRET)  # the stream ended at exp, not before it

    run(main)


def test_token_cli_output_verifies_and_streams_from_a_real_server(tmp_path: Path) -> None:
    env_run = quoteflow_cli("token", "--symbols", "SYM0001", "--ttl", "1h", secret=SECRET)
    assert env_run.returncode == 0, env_run.stderr
    token = env_run.stdout.strip()
    claims = verify_token(token, SECRET)
    assert claims.symbols == frozenset({"SYM0001"}) and not claims.admin
    assert 3500 < claims.seconds_left() <= 3600

    from quoteflow.cli import main

    assert main(["token", "--secret", SECRET, "--admin", "--ttl", "15m"]) == 0

    with quoteflow_processes(tmp_path) as procs:
        srv = QuoteflowProcess(
            tmp_path,
            "auth",
            "serve",
            "--port",
            "0",
            "--universe",
            "2",
            "--tick-interval",
            "0.02",
            "--auth-secret",
            SECRET,
        )
        procs.append(srv)
        srv.wait_ready()
        assert srv.port is not None

        async def check() -> None:
            port = srv.port
            assert port is not None
            status, _ = await request(port, "GET", "/stream")
            assert status == 401
            s = await RawStream.open(port, f"/stream?access_token={token}")
            await s.read_until(lambda st: len(st.events) >= 3)
            await s.close()
            assert {json.loads(e.data)["symbol"] for e in s.events} == {"SYM0001"}
            status, err = await request(
                port, "GET", f"/stream?symbols=SYM0000&access_token={token}"
            )
            assert status == 403
            status, err = await request(
                port,
                "PUT",
                "/symbols/SYM0001",
                b'{"sigma": 0.3}',
                {"Authorization": f"Bearer {token}"},
            )
            assert status == 403 and "admin" in err["error"]

        run(check)
        srv.signal(signal.SIGTERM)
        assert srv.wait(15) == 0


def test_token_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from quoteflow.cli import main

    for args, needle in (
        (["token", "--secret", "short"], "too short"),
        (["token", "--secret", SECRET, "--ttl", "soon"], "duration"),
        (["token", "--secret", SECRET, "--symbols", ","], "--symbols"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("quoteflow: error:") and needle in err[0]


# ------------------------------------------------------------------------------- CORS


def test_cors_off_by_default_no_headers_and_preflight_refused() -> None:
    async def main() -> None:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            origin = {"Origin": "https://app.example"}
            resp = await fetch(server.port, "GET", "/symbols", origin)
            assert resp.code == 200 and "Access-Control-Allow-Origin" not in resp.headers
            resp = await fetch(server.port, "OPTIONS", "/symbols/AAA", origin)
            assert resp.code == 403 and "not enabled" in body(resp)["error"]

    run(main)


def test_cors_named_origin_preflight_and_stream() -> None:
    async def main() -> None:
        settings = ServerSettings(cors_origins=("https://app.example",))
        async with serving(FakeSource(interval=0.005), settings=settings) as server:
            port = server.port
            assert port is not None
            ok = {"Origin": "https://app.example"}
            resp = await fetch(port, "GET", "/snapshot", ok)
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "Origin" in resp.headers["Vary"]
            # Preflight for a cross-origin PUT with a token.
            pre = {
                **ok,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            resp = await fetch(port, "OPTIONS", "/symbols/AAA", pre)
            assert resp.code == 204
            assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
            allowed = resp.headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            resp = await fetch(port, "PUT", "/symbols/AAA", ok)  # body {} -> 400, with CORS
            assert resp.code == 400 and resp.headers["Access-Control-Allow-Origin"]
            # The stream carries the header too (EventSource from another origin).
            s = await RawStream.open(port, "/stream", ok)
            assert s.headers["access-control-allow-origin"] == "https://app.example"
            await s.close()
            # Another origin: no CORS headers, preflight refused with a JSON reason.
            evil = {"Origin": "https://evil.example"}
            resp = await fetch(port, "GET", "/snapshot", evil)
            assert "Access-Control-Allow-Origin" not in resp.headers
            resp = await fetch(port, "OPTIONS", "/symbols/AAA", evil)
            assert resp.code == 403 and "evil.example" in body(resp)["error"]

    run(main)


def test_cors_wildcard_without_credentials() -> None:
    async def main() -> None:
        settings = ServerSettings(cors_origins=("*",))
        async with serving(FakeSource(), settings=settings) as server:
            assert server.port is not None
            resp = await fetch(server.port, "GET", "/symbols", {"Origin": "https://x.example"})
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in resp.headers
            resp = await fetch(server.port, "OPTIONS", "/stream", {"Origin": "https://x.example"})
            assert resp.code == 204 and "GET" in resp.headers["Access-Control-Allow-Methods"]

    run(main)


# ------------------------------------------------------------------------- per-IP limit


def test_per_ip_limit_gives_429_json_and_frees_up() -> None:
    async def main() -> None:
        settings = ServerSettings(max_connections_per_ip=2)
        async with serving(FakeSource(), settings=settings) as server:
            port = server.port
            assert port is not None
            a = await RawStream.open(port)
            b = await RawStream.open(port)
            assert (a.status, b.status) == (200, 200)
            status, err = await request(port, "GET", "/stream")
            assert status == 429 and "too many streams from 127.0.0.1" in err["error"]
            # Without --trust-proxy a forged X-Real-IP changes nothing.
            status, _ = await request(port, "GET", "/stream", headers={"X-Real-IP": "10.0.0.9"})
            assert status == 429
            # Other endpoints are not limited.
            assert (await request(port, "GET", "/snapshot"))[0] == 200
            await a.close()
            await wait_for(lambda: len(server.state.streams) == 1, what="a slot to free")
            c = await RawStream.open(port)
            assert c.status == 200
            await b.close()
            await c.close()
            await wait_for(lambda: not server.state.streams_by_ip, what="per-IP counts to clear")

    run(main)


def test_per_ip_limit_behind_a_trusted_proxy_uses_x_real_ip() -> None:
    async def main() -> None:
        settings = ServerSettings(max_connections_per_ip=1, trust_proxy=True)
        async with serving(FakeSource(), settings=settings) as server:
            port = server.port
            assert port is not None
            a = await RawStream.open(port, "/stream", {"X-Real-IP": "10.0.0.1"})
            b = await RawStream.open(port, "/stream", {"X-Real-IP": "10.0.0.2"})
            assert (a.status, b.status) == (200, 200)
            status, err = await request(port, "GET", "/stream", headers={"X-Real-IP": "10.0.0.1"})
            assert status == 429 and "10.0.0.1" in err["error"]
            await a.close()
            await b.close()

    run(main)


# ------------------------------------------------------------- defect 5 (issue 10)


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_defect5_access_token_never_reaches_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = mint_token(SECRET, symbols=["AAA"])
    bad = "eyJhbGciOiJIUzI1NiJ9.not-a-real-token.SIGNATURE-SHOULD-NOT-LEAK"

    async def main() -> None:
        async with serving(
            FakeSource(interval=0.005), settings=ServerSettings(auth_secret=SECRET)
        ) as server:
            port = server.port
            assert port is not None
            s = await RawStream.open(port, f"/stream?symbols=AAA&access_token={good}")
            await s.read_until(lambda st: len(st.events) >= 2)
            await s.close()
            assert (await request(port, "GET", f"/snapshot?access_token={bad}"))[0] == 401
            # 400 (logged as a warning), an encoded parameter name, a 404, and a 403.
            assert (await request(port, "GET", f"/stream?symbols=NOPE&access_token={good}"))[
                0
            ] == 400
            assert (await request(port, "GET", f"/snapshot?access%5Ftoken={bad}&x=1"))[0] == 401
            assert (await request(port, "GET", f"/nowhere?access_token={bad}"))[0] == 404
            assert (await request(port, "GET", f"/stream?symbols=BBB&access_token={good}"))[
                0
            ] == 403
            await wait_for(lambda: not server.state.streams, what="the stream to close")

    run(main)
    text = caplog.text
    for secret in (good, bad, good.split(".")[2], bad.split(".")[2]):
        assert secret not in text, text
    assert "access_token=REDACTED" in text and "access%5Ftoken=REDACTED&x=1" in text
    assert "/stream?symbols=AAA&access_token=REDACTED" in text
    _no_traceback(caplog)


def test_defect5_admin_claim_string_false_cannot_change_parameters() -> None:
    import jwt

    exp = int(time.time()) + 60
    fake_admins = [
        jwt.encode({"exp": exp, "admin": v}, SECRET, algorithm="HS256")
        for v in ("false", [0], 1, "true")
    ]

    async def main() -> None:
        source = FakeSource()
        async with serving(source, settings=ServerSettings(auth_secret=SECRET)) as server:
            port = server.port
            assert port is not None
            for tok in fake_admins:
                status, err = await request(
                    port,
                    "PUT",
                    "/symbols/AAA",
                    b'{"sigma": 0.9}',
                    {"Authorization": f"Bearer {tok}"},
                )
                assert status == 403 and "admin" in err["error"], (tok, status, err)
            assert source.params["AAA"] == {"sigma": 0.2}
            real = mint_token(SECRET, admin=True)
            status, _ = await request(
                port, "PUT", "/symbols/AAA", b'{"sigma": 0.9}', {"Authorization": f"Bearer {real}"}
            )
            assert status == 200

    run(main)


def test_defect5_time_claims_as_strings_or_booleans_are_401() -> None:
    import jwt

    far = 9_999_999_999
    tokens = [
        jwt.encode(c, SECRET, algorithm="HS256")
        for c in ({"exp": str(far)}, {"exp": far, "nbf": True}, {"exp": far, "iat": False})
    ]

    async def main() -> None:
        async with serving(FakeSource(), settings=ServerSettings(auth_secret=SECRET)) as server:
            port = server.port
            assert port is not None
            for tok in tokens:
                status, err = await request(port, "GET", f"/snapshot?access_token={tok}")
                assert status == 401 and "must be a number" in err["error"], (status, err)

    run(main)


def test_defect5_token_symbols_are_case_insensitive_like_request_symbols() -> None:
    lower = mint_token(SECRET, symbols=["aaa", "bbb"])

    async def main() -> None:
        async with serving(
            FakeSource(interval=0.005), settings=ServerSettings(auth_secret=SECRET)
        ) as server:
            port = server.port
            assert port is not None
            await wait_for(lambda: server.broker.last_id is not None, what="a first tick")
            status, snap = await request(port, "GET", f"/snapshot?symbols=AAA&access_token={lower}")
            assert status == 200 and set(snap["quotes"]) == {"AAA"}, snap
            status, snap = await request(port, "GET", f"/snapshot?access_token={lower}")
            assert status == 200 and set(snap["quotes"]) == {"AAA", "BBB"}, snap
            s = await RawStream.open(port, f"/stream?symbols=Bbb&access_token={lower}")
            assert s.status == 200
            await s.read_until(lambda st: len(st.events) >= 3)
            await s.close()
            assert {json.loads(e.data)["symbol"] for e in s.events} == {"BBB"}
            status, err = await request(port, "GET", f"/snapshot?symbols=ccc&access_token={lower}")
            assert status == 403 and "CCC" in err["error"]

    run(main)


def test_defect5_metrics_needs_a_token_when_auth_is_on_and_access_is_configurable() -> None:
    plain = mint_token(SECRET)
    scraper = mint_token(SECRET, metrics=True)
    admin = mint_token(SECRET, admin=True)

    async def main() -> None:
        async with serving(FakeSource(), settings=ServerSettings(auth_secret=SECRET)) as server:
            port = server.port
            assert port is not None
            status, err = await request(port, "GET", "/metrics")
            assert status == 401 and "authentication required" in err["error"]
            status, err = await request(port, "GET", f"/metrics?access_token={plain}")
            assert status == 403 and "metrics" in err["error"]
            for tok in (scraper, admin):
                resp = await fetch(port, "GET", "/metrics", {"Authorization": f"Bearer {tok}"})
                assert resp.code == 200 and b"quoteflow_connections" in resp.body
        # Explicitly open with auth on.
        settings = ServerSettings(auth_secret=SECRET, metrics_access="open")
        async with serving(FakeSource(), settings=settings) as server:
            assert server.port is not None
            assert (await request(server.port, "GET", "/metrics"))[0] == 200
        # Auth off: open by default.
        async with serving(FakeSource()) as server:
            assert server.port is not None
            assert (await request(server.port, "GET", "/metrics"))[0] == 200
        # A separate listener: not on the main port at all.
        settings = ServerSettings(auth_secret=SECRET, metrics_access="listener", metrics_port=0)
        async with serving(FakeSource(), settings=settings) as server:
            assert server.port is not None and server.metrics_port is not None
            status, err = await request(server.port, "GET", f"/metrics?access_token={admin}")
            assert status == 404 and "--metrics-port" in err["error"]
            status, text = await request(server.metrics_port, "GET", "/metrics")
            assert status == 200 and "quoteflow_connections" in text
            assert (await request(server.metrics_port, "GET", "/stream"))[0] == 404
            assert (await request(server.port, "GET", "/healthz"))[0] == 200

    run(main)
    for bad in (
        {"metrics_access": "token"},  # token without auth
        {"metrics_access": "listener"},  # no port
        {"metrics_port": 9100},  # port without listener
        {"metrics_access": "sometimes"},
    ):
        with pytest.raises(ValueError, match="metrics"):
            ServerSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env_secret", "needle"),
    [("", "empty"), ("   ", "empty"), ("x" * 40, "one character"), ("abc", "too short")],
)
def test_defect5_empty_or_weak_secret_is_a_startup_error(env_secret: str, needle: str) -> None:
    """Before: an empty QUOTEFLOW_AUTH_SECRET started the server with auth off."""
    done = quoteflow_cli("serve", "--port", "0", "--universe", "1", secret=env_secret)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quoteflow: error:"), done.stderr
    assert needle in lines[0] and "serving" not in done.stdout
    flag = quoteflow_cli("serve", "--port", "0", "--auth-secret", env_secret)
    assert flag.returncode == 2 and needle in flag.stderr, flag.stderr


@pytest.mark.parametrize("ttl", ["inf", "nan", "-1h", "0", "1e300", "99999d"])
def test_defect5_token_ttl_inf_is_one_line_and_exit_2(ttl: str) -> None:
    done = quoteflow_cli("token", f"--ttl={ttl}", secret=SECRET)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quoteflow: error:"), done.stderr
    assert "duration" in lines[0] and done.stdout == ""
