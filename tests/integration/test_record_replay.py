"""Recording real sessions and replaying them (issue 14 item 3), over real sockets.

The recorder is the real ``quoteflow record`` process; the servers are real Tornado
servers (in this process, or ``quoteflow serve`` processes); clients read raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from quoteflow.broker.factory import broker_from_url
from quoteflow.client import stream
from quoteflow.market import Market
from quoteflow.playback import SessionReplay
from quoteflow.recording import Recorder, read_recording, recording_files
from quoteflow.server.auth import mint_token
from tests.conftest import ROOT
from tests.integration.fakes import FakeSource, RawStream, request, run, serving, wait_for
from tests.integration.test_serve_cli import serving as serving_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

#: Generous guards against a hang (a busy 2-core machine starts Python slowly); never a
#: statement about speed.
HANG_GUARD_S = 60.0
SECRET = "test-secret-for-record-replay-0123456789"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _record_cmd(url: str, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "quoteflow", "record", url, "--out", str(out), *args]


def _without_seq(data: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(data)
    payload.pop("seq", None)
    return payload


def _recorded(out: Path) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload without seq) of every tick and bar of a recording, in order."""
    table = read_recording(out)
    return [
        (kind, _without_seq(data))
        for kind, data in zip(
            table.column("event").to_pylist(), table.column("data").to_pylist(), strict=True
        )
        if kind in ("tick", "bar")
    ]


def _write_session(
    out: Path,
    n: int,
    gap_s: float,
    ids: list[int] | None = None,
    t0: int = 1_764_000_000_000_000_000,
) -> list[str]:
    """A recording of ``n`` ticks (two symbols, ``gap_s`` apart) written by the Recorder."""
    rec = Recorder(out, roll_seconds=3600)
    texts = []
    for k in range(n):
        sym = "AAA" if k % 2 == 0 else "BBB"
        data = json.dumps(
            {"symbol": sym, "price": 100.0 + k, "size": k, "k": k, "seq": k + 1},
            separators=(",", ":"),
        )
        texts.append(data)
        rec.add("tick", data, str(ids[k] if ids else k + 1), t0 + int(k * gap_s * 1e9))
    rec.add("message", "not json at all", None, t0 + int(n * gap_s * 1e9))
    rec.close()
    return texts


def _ks(events: list[Any]) -> list[int]:
    return [json.loads(e.data)["k"] for e in events if e.event == "tick"]


# ------------------------------------------------------------- record a live server, replay


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(8.0, id="8s"), pytest.param(60.0, id="60s", marks=pytest.mark.slow)],
)
def test_recording_a_live_server_then_replaying_at_max_speed_gives_the_same_payloads(
    tmp_path: Path, seconds: float
) -> None:
    out = tmp_path / "session.parquet"

    async def record_live() -> None:
        market = Market.universe(20, seed=7, tick_interval=0.05, bar_interval=1.0)
        async with serving(market) as server:
            url = f"http://127.0.0.1:{server.port}/stream"
            proc = await asyncio.create_subprocess_exec(
                *_record_cmd(url, out, "--duration", str(seconds), "--roll-interval", "3"),
                env=_env(),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(proc.communicate(), seconds + HANG_GUARD_S)
            assert proc.returncode == 0, stderr.decode()
            assert b"recorded" in stdout

    run(record_live)
    files = recording_files(out)
    assert len(files) >= 2, files  # rolled by time
    assert not list(tmp_path.glob("*.partial")), "a clean stop finishes every file"
    recorded = _recorded(out)
    assert {k for k, _ in recorded} == {"tick", "bar"}
    table = pq.read_table(files[0])
    assert {"id", "event", "data", "received_ns", "payload.price", "payload.symbol"} <= set(
        table.column_names
    )

    with serving_cli("--replay", str(out), "--speed", "max", "--port", "0") as (_proc, match):
        port = int(match.group(2).rsplit(":", 1)[1].strip("/"))

        got: list[tuple[str, dict[str, Any]]] = []

        async def body() -> None:
            # The project's client, from the first event on (Last-Event-ID 0): at max
            # speed a reader that falls behind is dropped as a slow consumer and resumes
            # from the replay buffer, so it still gets every event once, in order.
            url = f"http://127.0.0.1:{port}/stream"
            async with stream(url, last_event_id="0", backoff_initial=0.05) as events:
                async with asyncio.timeout(HANG_GUARD_S):
                    async for ev in events:
                        got.append((ev.event, _without_seq(ev.data)))
                        if len(got) >= len(recorded):
                            break

        run(body)
    assert got[: len(recorded)] == recorded


def test_sigkill_of_a_recorder_leaves_readable_files_missing_at_most_the_last_roll(
    tmp_path: Path,
) -> None:
    out = tmp_path / "killed.parquet"
    roll = 1.0
    # A recorder descheduled on a loaded machine receives late: allowed on top of the roll.
    load_slack_s = 3.0
    found: dict[str, Any] = {}

    async def body() -> None:
        market = Market.universe(10, seed=3, tick_interval=0.05)
        async with serving(market) as server:
            url = f"http://127.0.0.1:{server.port}/stream"
            proc = subprocess.Popen(
                _record_cmd(url, out, "--roll-interval", str(roll)),
                env=_env(),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await wait_for(
                    lambda: len(recording_files_or_none(out)) >= 3,
                    HANG_GUARD_S,
                    "three finished files",
                )
                os.kill(proc.pid, signal.SIGKILL)
                found["killed_ns"] = time.time_ns()
                found["server_last_id"] = int(server.broker.last_id or 0)
            finally:
                proc.kill()
                proc.wait(10)

    run(body)
    files = recording_files(out)
    assert sorted(tmp_path.glob("*.parquet")) == files
    tables = [pq.read_table(f) for f in files]  # every .parquet file is complete
    ids = [int(i) for t in tables for i in t.column("id").to_pylist()]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "no gap inside the finished files"
    last_ns = max(t.column("received_ns").to_pylist()[-1] for t in tables)
    lost_s = (found["killed_ns"] - last_ns) / 1e9
    assert lost_s <= roll + load_slack_s, f"lost {lost_s:.2f} s of events (roll {roll} s)"
    assert found["server_last_id"] > ids[-1]  # the events of the killed file are the loss


def recording_files_or_none(out: Path) -> list[Path]:
    try:
        return recording_files(out)
    except Exception:
        return []


# ------------------------------------------------------------------------ POST /replay


def test_pause_resume_speed_and_seek_steer_a_replay(tmp_path: Path) -> None:
    out = tmp_path / "steer.parquet"
    _write_session(out, 40, gap_s=1.0)
    replay = SessionReplay.from_recording(out, speed=1.0)
    assert replay.skipped == {"not-market-event": 1}

    async def body() -> None:
        async with serving(replay) as server:
            port = server.port
            assert port is not None
            client = await RawStream.open(port, headers={"Last-Event-ID": "0"})
            await client.read_until(lambda c: len(c.events) >= 1, HANG_GUARD_S)

            status, paused = await request(port, "POST", "/replay", b'{"action": "pause"}')
            assert status == 200 and paused["state"] == "paused", paused
            position = paused["position"]
            await client.read_until(lambda c: len(c.events) >= position, HANG_GUARD_S)
            # An observation window longer than the recorded gap (1 s): nothing may come.
            await asyncio.sleep(1.5)
            _, still = await request(port, "GET", "/replay")
            assert still["position"] == position and still["state"] == "paused"
            assert len(client.events) == position

            # 40 events 1 s apart: at speed 1 this would take 40 s; at 1000x it is quick.
            status, fast = await request(
                port, "POST", "/replay", b'{"action": "speed", "speed": 1000}'
            )
            assert status == 200 and fast["speed"] == 1000.0 and fast["state"] == "paused"
            status, resumed = await request(port, "POST", "/replay", b'{"action": "resume"}')
            assert status == 200 and resumed["state"] == "playing"
            await client.read_until(lambda c: len(c.events) >= 40, HANG_GUARD_S)
            assert _ks(client.events) == list(range(40))
            await wait_for(lambda: replay.done, HANG_GUARD_S, "the end of the replay")
            _, ended = await request(port, "GET", "/replay")
            assert ended["state"] == "ended" and ended["position"] == 40

            # Seek back to event 10 (its recorded time): events 10.. come again, fresh ids.
            to = (1_764_000_000_000_000_000 + 10 * 10**9) / 1e9
            status, sought = await request(
                port, "POST", "/replay", json.dumps({"action": "seek", "to": to}).encode()
            )
            assert status == 200 and sought["position"] == 10, sought
            await client.read_until(lambda c: len(c.events) >= 70, HANG_GUARD_S)
            assert _ks(client.events)[40:] == list(range(10, 40))
            ids = [int(e.id) for e in client.events if e.id is not None]
            assert ids == sorted(set(ids)), "fresh ids keep increasing after a seek back"

            # An ISO-8601 time works the same way; speed max plays the rest at once.
            status, _ = await request(
                port, "POST", "/replay", b'{"action": "speed", "speed": "max"}'
            )
            assert status == 200
            status, iso = await request(
                port,
                "POST",
                "/replay",
                json.dumps({"action": "seek", "to": "2025-11-24T16:00:30Z"}).encode(),
            )
            assert status == 200 and iso["speed"] == "max", iso
            await client.read_until(lambda c: len(c.events) >= 80, HANG_GUARD_S)
            assert _ks(client.events)[70:80] == list(range(30, 40))
            await client.close()

    run(body)


BAD_BODIES = [
    (b"", 400, "invalid JSON body"),
    (b"not json", 400, "invalid JSON body"),
    (b'{"action": NaN}', 400, "not JSON"),
    (b"[1, 2]", 400, "body must be a JSON object"),
    (b'"pause"', 400, "body must be a JSON object"),
    (b"{}", 400, "action must be one of pause, resume, seek, speed"),
    (b'{"action": "rewind"}', 400, "action must be one of"),
    (b'{"action": 1}', 400, "action must be one of"),
    (b'{"action": "pause", "speed": 2}', 400, "unexpected key(s) speed"),
    (b'{"action": "seek"}', 400, "seek needs 'to'"),
    (b'{"action": "seek", "to": "yesterday"}', 400, "ISO-8601"),
    (b'{"action": "seek", "to": true}', 400, "ISO-8601"),
    (b'{"action": "seek", "to": 1e300}', 400, "ISO-8601"),
    (b'{"action": "seek", "to": "1999-01-01T00:00:00Z"}', 400, "outside the recording"),
    (b'{"action": "speed"}', 400, "speed needs 'speed'"),
    (b'{"action": "speed", "speed": 0}', 400, "from 0.1 to 1000"),
    (b'{"action": "speed", "speed": 5000}', 400, "from 0.1 to 1000"),
    (b'{"action": "speed", "speed": "fast"}', 400, "or 'max'"),
    (b'{"action": "speed", "speed": null}', 400, "must be a number or 'max'"),
    (b'{"action": "speed", "speed": [1]}', 400, "must be a number or 'max'"),
    (b'{"action": "speed", "speed": 1' + b"0" * 400 + b"}", 400, "from 0.1 to 1000"),
    (b'{"action": "speed", "speed": 1e999}', 400, "from 0.1 to 1000"),
    (b'{"action": "seek", "to": 1' + b"0" * 400 + b"}", 400, "ISO-8601"),
    (b'{"action": "seek", "to": "2025-11-24T16:00:00+99:00"}', 400, "ISO-8601"),
    (b"[" * 10_000, 400, "nested too deeply"),
]


def test_bad_control_bodies_get_json_400s_and_the_replay_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "bad.parquet"
    _write_session(out, 20, gap_s=0.001, t0=1_764_000_000_000_123_456)  # not a whole ms
    replay = SessionReplay.from_recording(out, speed=1.0)

    async def body() -> None:
        async with serving(replay) as server:
            port = server.port
            assert port is not None
            for raw, want, fragment in BAD_BODIES:
                status, answer = await request(port, "POST", "/replay", raw)
                assert status == want, (raw[:40], status, answer)
                assert isinstance(answer, dict) and fragment in answer["error"], (raw[:40], answer)
            client = await RawStream.open(port, headers={"Last-Event-ID": "0"})
            await client.read_until(lambda c: len(c.events) >= 20, HANG_GUARD_S)
            assert _ks(client.events) == list(range(20))
            # Regression (seek_to_the_shown_from_time): "from" is shown truncated to the
            # millisecond, which lay before the first event and was refused as outside.
            _, status = await request(port, "GET", "/replay")
            seek = json.dumps({"action": "seek", "to": status["from"]}).encode()
            code, sought = await request(port, "POST", "/replay", seek)
            assert code == 200 and sought["position"] == 0, sought
            await client.close()

    run(body)


def test_replay_endpoint_is_404_when_the_server_is_not_replaying() -> None:
    async def body() -> None:
        async with serving(FakeSource()) as server:
            assert server.port is not None
            for method, raw in (("GET", None), ("POST", b'{"action": "pause"}')):
                status, answer = await request(server.port, method, "/replay", raw)
                assert status == 404 and "not replaying" in answer["error"], answer

    run(body)


def test_replay_control_needs_an_admin_token_when_auth_is_on(tmp_path: Path) -> None:
    out = tmp_path / "auth.parquet"
    _write_session(out, 10, gap_s=0.5)
    replay = SessionReplay.from_recording(out)
    pause = b'{"action": "pause"}'

    async def body() -> None:
        async with serving(replay, auth_secret=SECRET) as server:
            port = server.port
            assert port is not None
            user = {"Authorization": f"Bearer {mint_token(SECRET)}"}
            admin = {"Authorization": f"Bearer {mint_token(SECRET, admin=True)}"}
            assert (await request(port, "POST", "/replay", pause))[0] == 401
            status, answer = await request(port, "POST", "/replay", pause, user)
            assert status == 403 and "admin" in answer["error"]
            assert (await request(port, "GET", "/replay", None, user))[0] == 200
            status, answer = await request(port, "POST", "/replay", pause, admin)
            assert status == 200 and answer["state"] == "paused"

    run(body)


# --------------------------------------------------------------------------- original ids


def test_original_ids_are_kept_and_a_resume_inside_an_id_gap_continues(tmp_path: Path) -> None:
    out = tmp_path / "ids.parquet"
    ids = [1000 + k + (5 if k >= 10 else 0) for k in range(20)]  # a gap: 1009 -> 1015
    _write_session(out, 20, gap_s=0.001, ids=ids)
    replay = SessionReplay.from_recording(out, speed=1.0, ids="original")
    broker = broker_from_url(None, given_ids=True)

    async def body() -> None:
        async with serving(replay, broker=broker) as server:
            port = server.port
            assert port is not None
            client = await RawStream.open(port, headers={"Last-Event-ID": "999"})
            await client.read_until(lambda c: len(c.events) >= 20, HANG_GUARD_S)
            assert [int(e.id) for e in client.events if e.id] == ids
            assert [json.loads(e.data)["seq"] for e in client.events] == ids
            await client.close()
            # Regression (resume_inside_an_id_gap): the replay position was computed as
            # id - oldest, which skipped events once ids had gaps.
            resumed = await RawStream.open(port, headers={"Last-Event-ID": "1012"})
            await resumed.read_until(lambda c: len(c.events) >= 10, HANG_GUARD_S)
            assert [int(e.id) for e in resumed.events if e.id] == ids[10:]
            await resumed.close()
            status, answer = await request(
                port, "POST", "/replay", b'{"action": "seek", "to": 1764000000}'
            )
            assert status == 409 and "backwards" in answer["error"], answer

    run(body)


def test_original_ids_need_the_memory_broker_and_decimal_increasing_ids(tmp_path: Path) -> None:
    from quoteflow.errors import ConfigError

    with pytest.raises(ConfigError, match="needs --broker memory"):
        broker_from_url("redis://127.0.0.1:1/0", given_ids=True)
    out = tmp_path / "down.parquet"
    _write_session(out, 5, gap_s=0.1, ids=[5, 6, 7, 7, 8])
    with pytest.raises(ConfigError, match="event 4 has id 7, not above the previous 7"):
        SessionReplay.from_recording(out, ids="original")


# ------------------------------------------------------------------- the shipped history


def test_shipped_daily_history_replays_through_the_same_path() -> None:
    replay = SessionReplay.from_history("AAPL", rows_per_second=200.0)

    async def body() -> None:
        async with serving(replay) as server:
            port = server.port
            assert port is not None
            client = await RawStream.open(port, headers={"Last-Event-ID": "0"})
            await client.read_until(lambda c: len(c.events) >= 20, HANG_GUARD_S)
            ticks = [json.loads(e.data) for e in client.events if e.event == "tick"]
            assert ticks[0]["date"] == "2000-03-01" and ticks[0]["symbol"] == "AAPL"
            # ts is the replay's wall clock (as Replay always did), the day is in "date".
            assert ticks[0]["ts"][:4] == time.strftime("%Y", time.gmtime())
            status, paused = await request(port, "POST", "/replay", b'{"action": "pause"}')
            assert status == 200 and paused["state"] == "paused"
            assert paused["source"] == "daily history AAPL"
            await client.close()

    run(body)


# ------------------------------------------------------------------------- any SSE feed


def test_any_sse_feed_is_recorded_with_its_raw_text(tmp_path: Path) -> None:
    """A feed that is not quoteflow: no ids, a custom type, plain text, multi-line data."""
    from quoteflow.recording import record

    body = (
        b"data: plain text\n\n"
        b'event: news\ndata: {"symbol": "X", "headline": "up"}\n\n'
        b'id: a-1\nevent: tick\ndata: {"symbol":"X","price":2.5}\n\n'
        b"data: line one\ndata: line two\n\n"
    )

    async def feed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + body)
        await writer.drain()
        await reader.read()  # hold the stream open until the recorder leaves
        writer.close()

    out = tmp_path / "foreign.parquet"

    async def main() -> None:
        server = await asyncio.start_server(feed, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            stats = await asyncio.wait_for(
                record(f"http://127.0.0.1:{port}/", Recorder(out), max_events=4), HANG_GUARD_S
            )
        assert stats.events == 4

    run(main)
    rows = read_recording(out).to_pylist()
    assert [(r["event"], r["data"], r["id"]) for r in rows] == [
        ("message", "plain text", None),
        ("news", '{"symbol": "X", "headline": "up"}', None),
        ("tick", '{"symbol":"X","price":2.5}', "a-1"),
        ("message", "line one\nline two", "a-1"),
    ]
    assert [r["symbol"] for r in rows] == [None, "X", "X", None]


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "--speed", "max"], "--speed max only applies to --replay"),
        (["serve", "--replay-ids", "original"], "--replay-ids only applies to --replay"),
        (["serve", "--replay-paused"], "--replay-paused only applies to --replay"),
        (["serve", "--replay", "{dir}/nope.parquet"], "no recording"),
        (["serve", "--replay", "{rec}", "--tick-interval", "1"], "do not apply to a recording"),
        (["serve", "--replay", "{rec}", "--speed", "5000"], "from 0.1 to 1000"),
        (
            ["serve", "--replay", "{rec}", "--replay-ids", "original", "--broker", "redis://h:1"],
            "needs --broker memory",
        ),
        (["record", "ftp://host/x", "--out", "{dir}/a.parquet"], "http:// or https://"),
        (["record", "http://127.0.0.1:1/s", "--out", "{dir}/a.csv"], "NAME.parquet"),
        (["record", "http://127.0.0.1:1/s", "--out", "{rec}"], "already exists"),
        (
            ["record", "http://h/s", "--out", "{dir}/b.parquet", "--roll-size", "lots"],
            "invalid size",
        ),
    ],
)
def test_replay_and_record_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    from quoteflow.cli import main

    rec = tmp_path / "r.parquet"
    _write_session(rec, 4, gap_s=0.1)
    argv = [a.format(dir=tmp_path, rec=rec) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("quoteflow: error: ") and fragment in err, err


@pytest.mark.redis
def test_a_recording_replays_through_the_redis_broker_with_fresh_ids(tmp_path: Path) -> None:
    from tests.redis_server import running_redis

    out = tmp_path / "redis.parquet"
    texts = _write_session(out, 30, gap_s=0.001)
    replay = SessionReplay.from_recording(out, speed="max", paused=True)

    async def body() -> None:
        with running_redis(tmp_path) as redis:
            broker = broker_from_url(redis.url, produce=True, consume=True)
            async with serving(replay, broker=broker) as server:
                port = server.port
                assert port is not None
                client = await RawStream.open(port)
                assert client.status == 200
                status, _ = await request(port, "POST", "/replay", b'{"action": "resume"}')
                assert status == 200
                await client.read_until(lambda c: len(c.events) >= 30, HANG_GUARD_S)
                assert [_without_seq(e.data) for e in client.events] == [
                    _without_seq(t) for t in texts
                ]
                _, snap = await request(port, "GET", "/snapshot")
                assert snap["quotes"]["BBB"]["k"] == 29
                await client.close()

    run(body)
