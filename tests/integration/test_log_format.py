"""``quoteflow serve --log-format json``: one JSON object per line, one per stream open/close.

A real server process; three streams end for three reasons (the client closed, a stalled
reader over --max-backlog, the server's shutdown) and each close record says which, with
the subscription it carried.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.integration.fakes import RawStream, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

URL_RE = re.compile(r"quoteflow serving \d+ symbols on http://127\.0\.0\.1:(\d+)/")


def _records(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def _await_record(log: Path, match: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout  # hang guard
    while time.monotonic() < deadline:
        for rec in _records(log):
            if all(rec.get(k) == v for k, v in match.items()):
                return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log record {match} in:\n{log.read_text()[-3000:]}")


def test_json_log_has_one_record_per_stream_open_and_close_with_its_reason(
    tmp_path: Path,
) -> None:
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "quoteflow", "serve", "--port", "0", "--seed", "1",
                "--universe", "300", "--tick-interval", "0.005", "--max-backlog", "65536",
                "--log-format", "json",
            ],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = URL_RE.search(proc.stdout.readline())
        assert match, log.read_text()
        port = int(match.group(1))

        async def body() -> None:
            first = await RawStream.open(port, "/stream?symbols=SYM0001,SYM0002&events=tick")
            await first.read_until(lambda s: len(s.events) >= 3)
            resume = first.events[-1].id
            await first.close()
            gone = await _await_record(log, {"event": "stream_close", "reason": "client_gone"})
            assert gone["symbols"] == ["SYM0001", "SYM0002"] and gone["events"] == ["tick"]
            assert gone["last_event_id"] is None and gone["path"] == "/stream"
            assert gone["reason_text"] == "client closed the connection"
            assert gone["duration_s"] >= 0 and gone["level"] == "info"

            kept = await RawStream.open(
                port, "/stream?symbols=SYM0003", headers={"Last-Event-ID": str(resume)}
            )
            await kept.read_until(lambda s: len(s.events) >= 1)
            opened = await _await_record(log, {"event": "stream_open", "last_event_id": resume})
            # no events= parameter: every event type, sorted (quoteflow.wire.payload.EVENT_TYPES)
            assert opened["symbols"] == ["SYM0003"]
            assert opened["events"] == ["bar", "session", "tick", "trade"]

            stalled = await RawStream.open(port, "/stream", rcvbuf=4096)  # never reads
            slow = await _await_record(log, {"event": "stream_close", "reason": "slow_consumer"})
            assert slow["symbols"] is None  # all symbols
            stalled.abort()

            proc.send_signal(signal.SIGTERM)
            await _await_record(
                log, {"event": "stream_close", "reason": "shutdown", "last_event_id": resume}
            )
            await kept.close()

        run(body)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    records = _records(log)
    opens = [r for r in records if r.get("event") == "stream_open"]
    closes = [r for r in records if r.get("event") == "stream_close"]
    assert len(opens) == len(closes) == 3, records
    for rec in records:
        assert {"ts", "level", "logger", "msg"} <= set(rec), rec


def test_text_log_is_the_default_and_says_the_same_in_words(tmp_path: Path) -> None:
    from quoteflow.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.log_format == "text"
    args = build_parser().parse_args(["generate", "--broker", "redis://x", "--log-format", "json"])
    assert args.log_format == "json"


def test_json_formatter_puts_fields_beside_the_message() -> None:
    import logging

    from quoteflow.server.logs import JsonFormatter

    record = logging.LogRecord("quoteflow.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.fields = {"event": "stream_close", "reason": "shutdown"}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "a b" and out["level"] == "warning" and out["logger"] == "quoteflow.x"
    assert out["event"] == "stream_close" and out["reason"] == "shutdown"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])
