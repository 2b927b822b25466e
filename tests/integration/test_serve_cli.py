"""``quoteflow serve`` as a real process: printed URL, streaming, graceful SIGTERM, errors."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from quoteflow.client import SSEParser
from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: A clean shutdown takes well under a second; past this the test fails instead of hanging.
SHUTDOWN_HANG_GUARD_S = 10.0

URL_RE = re.compile(
    r"quoteflow serving (\d+) symbols on (http://\S+/) \(dashboard\), stream at (\S+)"
)


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "quoteflow", "serve", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no output within {timeout} s")
        return proc.stdout.readline()
    finally:
        sel.close()


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    proc = subprocess.Popen(
        serve_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        line = _read_line(proc, 60)
        match = URL_RE.search(line)
        assert match, (
            f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}"
        )
        yield proc, match
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_serve_port_0_streams_and_sigterm_ends_streams_cleanly_exit_0() -> None:
    with serving(
        "--port",
        "0",
        "--universe",
        "3",
        "--seed",
        "5",
        "--tick-interval",
        "0.02",
        "--retry-ms",
        "1500",
    ) as (proc, match):
        assert match.group(1) == "3"
        base = urlsplit(match.group(2))
        assert base.hostname == "127.0.0.1" and base.port and base.port != 0
        assert match.group(3) == match.group(2) + "stream"
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
        conn.request("GET", "/stream?symbols=SYM0001")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        parser = SSEParser()
        events = []
        head = b""
        while len(events) < 5:
            chunk = resp.read1(65536)
            assert chunk, "stream ended early"
            head += chunk
            events += parser.feed(chunk)
        # The retry line joins the first event's block (issue 18: no data-less block).
        assert head.startswith(b"retry: 1500\nid: ")
        proc.send_signal(signal.SIGTERM)
        # http.client raises IncompleteRead if the chunked body ends without its final
        # chunk, i.e. if the server reset or dropped the connection instead of finishing.
        rest = resp.read()
        events += parser.feed(rest)
        conn.close()
        assert proc.wait(SHUTDOWN_HANG_GUARD_S) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(set(ids))
    assert all(json.loads(e.data)["symbol"] == "SYM0001" for e in events)


def test_serve_explicit_port_and_flags_reach_the_server() -> None:
    port = free_port()
    with serving(
        "--port",
        str(port),
        "--universe",
        "2",
        "--heartbeat",
        "0.2",
        "--max-symbols",
        "1",
        "--tick-interval",
        "0.05",
    ) as (proc, match):
        assert match.group(2) == f"http://127.0.0.1:{port}/"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stream?symbols=SYM0000,SYM0001")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 400 and "too many symbols" in body["error"]
        conn.request("GET", "/stream?events=bar&symbols=SYM0000")
        resp = conn.getresponse()
        got = b""
        while b": keepalive" not in got:  # bars every 5 s: idle, so heartbeats come first
            chunk = resp.read1(1024)
            assert chunk
            got += chunk
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def _main_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``quoteflow serve ARGS`` in-process; it must fail with exit 2, one line."""
    from quoteflow.cli import main

    capsys.readouterr()
    code = main(["serve", *args])
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("quoteflow: error:"), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--config", "/nonexistent/market.toml"), "market.toml"),
        (("--relay", "http://127.0.0.1:9/stream", "--seed", "3"), "--seed"),
        (("--replay", "AAPL", "--bar-interval", "3"), "--bar-interval"),
        (("--replay", "NOPE_NO_SUCH_TICKER"), "NOPE_NO_SUCH_TICKER"),
        (("--broker", "kafka://x"), "--broker"),
        (("--port", "70000"), "port"),
        (("--heartbeat", "0"), "heartbeat"),
        (("--universe", "-3"), "universe"),
    ],
)
def test_serve_bad_option_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    assert needle in _main_fails(capsys, *args)


def test_serve_port_in_use_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _main_fails(capsys, "--port", str(port), "--universe", "1")
    assert "in use" in line.lower()


def test_serve_bad_flag_in_a_real_process_exits_2() -> None:
    proc = subprocess.run(
        serve_cmd("--port", "70000"),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "port" in proc.stderr
