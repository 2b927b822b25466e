"""``quoteflow serve --workers N`` over real sockets: one port, one id space, restarts.

The kernel picks the worker of each connection (``SO_REUSEPORT``), so the tests name the
answering worker with ``--instance-header`` (``X-Quoteflow-Instance: host:pid``) and
reconnect until their cuts land on the workers they need.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from quoteflow.client import SSEParser
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

URL_RE = re.compile(r"quoteflow serving (\d+) symbols on (http://\S+/) \(dashboard\)")
#: Past this a drain or restart is a hang, not slowness (each takes about a second).
HANG_GUARD_S = 30.0
#: Connections tried before giving up on landing on a wanted worker: with 2 workers a
#: connection reaches a given one with probability about 1/2, so 60 tries miss it with
#: probability 2**-60.
MAX_TRIES = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Server:
    """A ``quoteflow serve --workers`` process and the URL it printed."""

    def __init__(self, proc: subprocess.Popen[str], line: str) -> None:
        self.proc = proc
        self.line = line
        match = URL_RE.search(line)
        assert match, line
        self.url = match.group(2)
        parts = urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = int(parts.port or 80)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@contextmanager
def serving(*args: str) -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quoteflow", "serve", "--port", "0", "--instance-header", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(HANG_GUARD_S)
            assert proc.stderr is not None
            pytest.fail(f"serve exited {proc.returncode}: {proc.stderr.read()}")
        yield Server(proc, line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class Stream:
    """One ``GET /stream`` connection, read as SSE events."""

    def __init__(self, server: Server, last_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self.conn.request("GET", "/stream", headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.instance = self.resp.getheader("X-Quoteflow-Instance") or ""
        self.parser = SSEParser()
        #: (seq, id, type, data) per market event.
        self.events: list[tuple[int, str, str, str]] = []
        self.ended = False

    def read(self, n: int, timeout: float = 15.0) -> list[tuple[int, str, str, str]]:
        """Read until ``n`` market events arrived (or the stream ended)."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n and not self.ended:
            assert time.monotonic() < deadline, f"only {len(self.events)} of {n} events"
            try:
                chunk = self.resp.read1(65536)
            except (http.client.IncompleteRead, ConnectionError):
                chunk = b""
            if not chunk:
                self.ended = True
                break
            for ev in self.parser.feed(chunk):
                assert ev.event != "reset", f"unexpected reset: {ev.data}"
                self.events.append((json.loads(ev.data)["seq"], ev.id, ev.event, ev.data))
        return self.events

    def read_to_end(self, timeout: float = HANG_GUARD_S) -> None:
        self.read(10**9, timeout)

    def close(self) -> None:
        self.conn.close()


def reconnect(server: Server, last_id: str) -> Stream:
    """Reconnect as an SSE client does: a reset connection is retried.

    Connections still waiting in a killed worker's listen queue are reset by the kernel
    when its socket closes, a moment after its streams broke; EventSource retries them.
    """
    for attempt in range(5):
        try:
            return Stream(server, last_id)
        except (ConnectionError, http.client.RemoteDisconnected):
            if attempt == 4:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _contiguous(ids: list[int]) -> None:
    gaps = [(a, b) for a, b in itertools.pairwise(ids) if b != a + 1]
    assert not gaps, f"ids not contiguous (gap or duplicate) at {gaps[:5]}"


def _pid(instance: str) -> int:
    return int(instance.rsplit(":", 1)[1])


def test_resume_across_workers_no_gap_no_duplicate() -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    with serving("--workers", "2", "--universe", "4", "--tick-interval", "0.02") as server:
        assert "(2 workers)" in server.line
        cross = same = 0
        for _ in range(MAX_TRIES):
            if cross >= 4 and same >= 1:
                break
            first = Stream(server)
            events = first.read(rng.randint(1, 60))
            cut = rng.randint(1, len(events))  # a random cut point within what arrived
            last_id = events[cut - 1][0]
            assert all(e[1] == str(e[0]) for e in events)  # memory broker: id == seq
            first.close()
            time.sleep(rng.random() * 0.1)  # the feed moves on while the client is away
            second = Stream(server, str(last_id))
            resumed = second.read(rng.randint(5, 80))
            second.close()
            ids = [e[0] for e in events[:cut]] + [e[0] for e in resumed]
            _contiguous(ids)  # every event once: no gap, no duplicate (seed in the name)
            assert resumed[0][0] == last_id + 1, (seed, last_id, resumed[0])
            if first.instance != second.instance:
                cross += 1
            else:
                same += 1
        assert cross >= 4, f"only {cross} resumes landed on another worker (seed {seed})"


def test_every_worker_hands_out_the_same_event_for_an_id() -> None:
    with serving("--workers", "2", "--universe", "3", "--tick-interval", "0.02") as server:
        seen: dict[str, list[tuple[int, str, str, str]]] = {}
        start = Stream(server)
        anchor = start.read(5)[-1][0]
        start.close()
        time.sleep(0.3)
        for _ in range(MAX_TRIES):
            if len(seen) == 2:
                break
            stream = Stream(server, str(anchor))
            if stream.instance not in seen:
                seen[stream.instance] = stream.read(10)[:10]
            stream.close()
        assert len(seen) == 2, seen.keys()
        a, b = seen.values()
        assert a == b  # same ids, types and payload bytes (seq included) on both workers


def test_metrics_per_worker_and_aggregated() -> None:
    with serving("--workers", "2", "--universe", "2", "--tick-interval", "0.05") as server:
        infos = set()
        for _ in range(MAX_TRIES):
            status, _h, body = server.get("/metrics")
            assert status == 200
            infos.update(re.findall(r'quoteflow_worker_info\{[^}]*worker="(\d)"', body.decode()))
            if len(infos) == 2:
                break
        assert infos == {"0", "1"}
        time.sleep(0.3)
        status, _h, body = server.get("/metrics?aggregate=1")
        text = body.decode()
        assert status == 200
        assert 'quoteflow_workers{state="answered"} 2.0' in text
        assert "quoteflow_worker_info" not in text
        published = float(
            re.search(r'^quoteflow_events_published_total\{event="tick"\} (\S+)$', text, re.M)[1]
        )
        assert published > 0
        # one id space: the aggregate's published count is the producer's, not N times it
        last_id = float(re.search(r"^quoteflow_last_event_id (\S+)$", text, re.M)[1])
        assert published <= last_id + 10


def test_sigkill_of_a_worker_restarts_it_and_its_clients_resume_elsewhere() -> None:
    with serving("--workers", "2", "--universe", "4", "--tick-interval", "0.02") as server:
        streams = [Stream(server) for _ in range(8)]
        by_worker: dict[str, list[Stream]] = {}
        for s in streams:
            by_worker.setdefault(s.instance, []).append(s)
        tries = 0
        while len(by_worker) < 2 and tries < MAX_TRIES:
            s = Stream(server)
            streams.append(s)
            by_worker.setdefault(s.instance, []).append(s)
            tries += 1
        assert len(by_worker) == 2
        victim, survivor = sorted(by_worker)
        for s in streams:
            s.read(10)
        os.kill(_pid(victim), signal.SIGKILL)
        for s in by_worker[victim]:
            s.read_to_end()  # the connection breaks
            assert s.ended
        # Its clients reconnect with Last-Event-ID and resume on whichever worker answers.
        landed: set[str] = set()
        for s in by_worker[victim]:
            last = s.events[-1][0]
            again = reconnect(server, str(last))
            landed.add(again.instance)
            resumed = again.read(30)
            again.close()
            _contiguous([e[0] for e in s.events] + [e[0] for e in resumed])
        assert victim not in landed
        # The parent starts a new worker (new pid); a resume there is seamless too: it
        # was started with the parent's replay window.
        deadline = time.monotonic() + HANG_GUARD_S
        newcomer = None
        anchor = by_worker[survivor][0].read(40)[-1][0]
        while newcomer is None:
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            probe = reconnect(server, str(anchor))
            if probe.instance not in (victim, survivor):
                newcomer = probe.instance
                resumed = probe.read(20)
                assert resumed[0][0] == anchor + 1
                _contiguous([e[0] for e in resumed])
            probe.close()
            time.sleep(0.05)
        for s in streams:
            s.close()
        assert server.proc.poll() is None  # the parent is still running


def test_sigterm_drains_every_worker_and_exits_0() -> None:
    with serving("--workers", "2", "--universe", "2", "--tick-interval", "0.05") as server:
        by_worker: dict[str, Stream] = {}
        for _ in range(MAX_TRIES):
            s = Stream(server)
            if s.instance in by_worker:
                s.close()
            else:
                by_worker[s.instance] = s
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2
        for s in by_worker.values():
            s.read(3)
        server.proc.send_signal(signal.SIGTERM)
        for s in by_worker.values():
            s.read_to_end()  # a clean end of stream on every worker
            assert s.ended
            s.close()
        assert server.proc.wait(HANG_GUARD_S) == 0
        for instance in by_worker:
            assert not Path(f"/proc/{_pid(instance)}").exists(), f"worker {instance} left"


def test_workers_1_is_the_single_process_server() -> None:
    with serving("--workers", "1", "--universe", "2", "--tick-interval", "0.05") as server:
        assert "workers" not in server.line
        status, headers, _ = server.get("/healthz")
        assert status == 200
        assert _pid(headers["x-quoteflow-instance"]) == server.proc.pid  # no child serves
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        assert children.read_text().split() == []


@pytest.mark.parametrize(
    ("value", "said"), [("0", "must be >= 1"), ("x", "give a number >= 1 or 'auto'")]
)
def test_bad_worker_counts_are_one_line_errors(value: str, said: str) -> None:
    line = _usage_error("--workers", value)
    assert "--workers" in line and said in line, line


def _usage_error(*args: str) -> str:
    """``quoteflow serve ARGS`` must fail with one line on stderr and status 2; the line."""
    proc = subprocess.run(
        [sys.executable, "-m", "quoteflow", "serve", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.redis
def test_workers_on_redis_resume_across_workers(tmp_path: Path) -> None:
    """``--broker redis:// --generate``: the parent produces into Redis, the workers
    serve it; a resume on another worker continues the producer's sequence."""
    from tests.redis_server import running_redis

    with (
        running_redis(tmp_path) as red,
        serving(
            "--workers", "2", "--broker", red.url, "--generate",
            "--universe", "3", "--tick-interval", "0.02",
        ) as server,
    ):  # fmt: skip
        cross = 0
        for _ in range(MAX_TRIES):
            if cross >= 2:
                break
            first = Stream(server)
            events = first.read(random.randint(1, 30))
            first.close()
            second = Stream(server, events[-1][1])  # a Redis stream id
            resumed = second.read(20)
            second.close()
            _contiguous([e[0] for e in events] + [e[0] for e in resumed])
            cross += first.instance != second.instance
        assert cross >= 2


def test_a_metrics_listener_with_workers_is_a_one_line_error() -> None:
    line = _usage_error(
        "--workers", "2", "--universe", "2", "--metrics-access", "listener", "--metrics-port", "0"
    )
    assert "aggregate=1" in line, line


def test_symbols_changes_reach_every_worker_and_history_is_served() -> None:
    with serving("--workers", "2", "--universe", "2", "--tick-interval", "0.05") as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("PUT", "/symbols/SYM0000", body=json.dumps({"sigma": 0.55}))
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert json.loads(resp.read())["params"]["sigma"] == 0.55
        conn.close()
        seen: dict[str, float] = {}
        for _ in range(MAX_TRIES):
            status, headers, body = server.get("/symbols")
            assert status == 200
            seen[headers["x-quoteflow-instance"]] = json.loads(body)["SYM0000"]["params"]["sigma"]
            if len(seen) == 2:
                break
        assert list(seen.values()) == [0.55, 0.55], seen
        status, _h, body = server.get("/history?symbol=SYM0000&events=tick")
        assert status == 200, body


def test_workers_whose_parent_is_killed_shut_themselves_down() -> None:
    with serving("--workers", "2", "--universe", "2", "--tick-interval", "0.05") as server:
        pids: set[int] = set()
        for _ in range(MAX_TRIES):
            pids.add(_pid(server.get("/healthz")[1]["x-quoteflow-instance"]))
            if len(pids) == 2:
                break
        assert len(pids) == 2
        server.proc.kill()
        server.proc.wait(HANG_GUARD_S)
        deadline = time.monotonic() + HANG_GUARD_S
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            # A worker is not our child: once it exits it is reaped by init, not left a zombie.
            assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
            time.sleep(0.1)


def test_the_open_file_limit_caps_each_worker_and_is_said_once() -> None:
    """Each worker is one process under the per-process open-file limit: the parent
    lowers ``--max-connections`` once, for all of them, and says so once."""
    import resource

    from quoteflow.server.overload import connection_cap

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    asked = 10_000_000
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "quoteflow", "serve", "--workers", "2", "--port", "0",
            "--universe", "2", "--max-connections", str(asked), "--log-level", "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    assert "(2 workers)" in proc.stdout.readline()
    for pid in map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()):
        limits = Path(f"/proc/{pid}/limits").read_text()
        soft = int(re.search(r"Max open files\s+(\d+)", limits)[1])
        ceiling = (
            hard
            if hard != resource.RLIM_INFINITY
            else int(Path("/proc/sys/fs/nr_open").read_text())
        )
        assert soft == ceiling  # each worker's soft limit is raised to the hard one
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0
    lowered = [line for line in err.splitlines() if "--max-connections lowered" in line]
    if hard != resource.RLIM_INFINITY and connection_cap(asked, hard) < asked:
        assert len(lowered) == 1, err
        assert f"to {connection_cap(asked, hard)}:" in lowered[0]
    else:
        assert lowered == []
