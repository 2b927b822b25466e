"""Fan-out benchmark driver: quoteflow's SSE server against four peers.

For every server (``floor-c``, ``seed-go``, ``tornado-naive``, ``sse-starlette``,
``quoteflow``) and every scenario, the driver starts the server as a subprocess on a free port,
waits until it accepts connections, samples its idle memory, runs the Go load
generator (``loadgen/main.go``) against ``/stream``, samples the server's CPU time
at the edges of the measurement window and its memory at the end, stops it and
moves on. ``floor-c`` (``peers/floor-c/floor.c``) is the floor, not a competitor: one
epoll loop that sends the same pre-encoded chunk to every connection with one ``send()``
each, in quoteflow's wire format; quoteflow's ratio to it is how far it is from what the
machine allows. quoteflow is started exactly as a user would start it::

    quoteflow serve --universe S --tick-interval T/1000 --port P --max-connections 20000 \
        --max-connections-per-ip 20000

Scenarios (C connections, S symbols ticking every T ms):

- S1: C=100, S=100, T=100 ms (wide universe, 1000 events/s per client)
- S2: C=1000, S=10, T=100 ms (many clients)
- S3: C=10000, S=1, T=1 s (connection count: memory per connection)
- S4: saturation, C=100, S=100, T shrinking 100, 71, 50, 35, 25 ... ms until p99
  latency exceeds 100 ms, an event is lost, a client is dropped or the delivered
  rate falls below 90% of the offered rate; reports the highest passing rate.

Usage::

    python -m benchmarks.fanout.run                       # everything, results in benchmarks/results/
    python -m benchmarks.fanout.run --scenarios S1,S2 --servers quoteflow,seed-go
    python -m benchmarks.fanout.run --scenarios S3 --servers floor-c,quoteflow
    python -m benchmarks.fanout.run --quick               # smoke: every server runs, no loss

``--quick`` (C=20, S=10, T=100 ms, 3 s per server) checks only that every server
connected every client, delivered events and lost none; the exit status is 1
otherwise. It never judges timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
RESULTS = BENCH / "results"
LOADGEN_DIR = HERE / "loadgen"
SEED_GO_DIR = PEERS / "seed-go"
FLOOR_C_DIR = PEERS / "floor-c"

SERVERS = ("floor-c", "seed-go", "tornado-naive", "sse-starlette", "quoteflow")
PEER_NAMES = SERVERS[:-1]
SATURATION_INTERVALS_MS = (100, 71, 50, 35, 25, 18, 12, 9, 6, 4, 3, 2, 1)
CLK_TCK = os.sysconf("SC_CLK_TCK")
Result = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """C connections to a server whose S symbols tick every T ms."""

    name: str
    connections: int
    symbols: int
    interval_ms: float
    title: str
    saturation: bool = False

    @property
    def offered_per_client(self) -> float:
        """Events per second the generator offers each client."""
        return self.symbols * 1000.0 / self.interval_ms


SCENARIOS = {
    "S1": Scenario("S1", 100, 100, 100, "wide universe: C=100, S=100, T=100 ms"),
    "S2": Scenario("S2", 1000, 10, 100, "many clients: C=1000, S=10, T=100 ms"),
    "S3": Scenario("S3", 10000, 1, 1000, "many connections: C=10000, S=1, T=1 s"),
    "S4": Scenario("S4", 100, 100, 100, "saturation: C=100, S=100, T shrinking", True),
}
QUICK = Scenario("quick", 20, 10, 100, "smoke: C=20, S=10, T=100 ms")


class BenchError(RuntimeError):
    """A server or the load generator could not be built, started or run."""


# --- building the Go parts ---------------------------------------------------------


def _stale(binary: Path, source_dir: Path, pattern: str) -> bool:
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(p.stat().st_mtime > built for p in source_dir.glob(pattern))


def build_go(source_dir: Path, binary: Path, *, tool: str = "go", pattern: str = "*.go") -> Path:
    """Run ``build.sh`` in ``source_dir`` when ``binary`` is missing or older than the source
    (files matching ``pattern``); ``tool`` is the compiler it needs (``gcc`` for floor-c)."""
    if _stale(binary, source_dir, pattern):
        if shutil.which(tool) is None:
            raise BenchError(
                f"{tool} not found: apt-get install {'golang-go' if tool == 'go' else tool}"
            )
        proc = subprocess.run(
            ["bash", str(source_dir / "build.sh"), str(binary)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"building {source_dir.name} failed:\n{proc.stderr.strip()}")
    return binary


# --- processes ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one (inherited by the children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quoteflow_command(override: str = "") -> list[str]:
    """``override`` if given, else the ``quoteflow`` script of this interpreter's
    environment, else ``python -m quoteflow``.

    Not the first ``quoteflow`` on PATH: with several environments (a venv run without
    activating it, a system install) that can be another installation's code.
    """
    if override:
        return shlex.split(override)
    exe = Path(sys.executable).with_name("quoteflow")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "quoteflow"]


def server_command(
    name: str,
    port: int,
    symbols: int,
    interval_ms: float,
    quoteflow_args: Sequence[str] = (),
    quoteflow_cmd: str = "",
) -> list[str]:
    """The command line that starts server ``name``."""
    peer_args = [
        "--port",
        str(port),
        "--symbols",
        str(symbols),
        "--interval-ms",
        f"{interval_ms:g}",
    ]
    if name == "floor-c":
        return [str(FLOOR_C_DIR / "floor-c"), *peer_args]
    if name == "seed-go":
        return [str(SEED_GO_DIR / "seed-go"), *peer_args]
    if name == "tornado-naive":
        return [sys.executable, str(PEERS / "tornado_naive.py"), *peer_args]
    if name == "sse-starlette":
        return [sys.executable, str(PEERS / "sse_starlette_peer.py"), *peer_args]
    if name == "quoteflow":
        return [
            *quoteflow_command(quoteflow_cmd),
            "serve",
            "--universe",
            str(symbols),
            "--tick-interval",
            f"{interval_ms / 1000:g}",
            "--port",
            str(port),
            *quoteflow_args,
        ]
    raise BenchError(f"unknown server {name!r}: choose from {', '.join(SERVERS)}")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (/proc/<pid>/stat fields 14, 15)."""
    total = 0
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB summed over ``pid`` and its descendants."""
    rss = hwm = 0
    for p in _process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return rss, hwm


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running_server(
    cmd: list[str], port: int, log: Path, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, yield the process once 127.0.0.1:``port`` accepts, stop it afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{shlex.join(cmd)} exited with status {proc.returncode}:\n{_tail(log)}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                # Several workers (quoteflow serve --workers N): the first one listening
                # is not all of them; the URL line is printed once every one listens.
                if "--workers" not in cmd or "quoteflow serving" in _tail(log, 50):
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{shlex.join(cmd)} did not listen within {timeout:g}s")
            time.sleep(0.1)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- one measurement ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how hard each run is."""

    duration: float
    warmup: float
    ramp_rate: float
    connect_timeout: float
    quoteflow_args: tuple[str, ...]
    quoteflow_cmd: str
    loadgen: Path
    server_cpus: str
    loadgen_cpus: str
    logs: Path


def run_loadgen(port: int, connections: int, cfg: Settings, sample: Callable[[str], None]) -> str:
    """Run the load generator against 127.0.0.1:``port``/stream; its JSON report.

    ``sample("measure")`` and ``sample("done")`` are called at the edges of the
    measurement window (when the load generator says so on stderr).
    """
    lg_cmd = [
        *(["taskset", "-c", cfg.loadgen_cpus] if cfg.loadgen_cpus else []),
        str(cfg.loadgen),
        "-addr",
        f"127.0.0.1:{port}",
        "-path",
        "/stream",
        "-c",
        str(connections),
        "-duration",
        f"{cfg.duration:g}",
        "-warmup",
        f"{cfg.warmup:g}",
        "-ramp-rate",
        f"{cfg.ramp_rate:g}",
        "-connect-timeout",
        f"{cfg.connect_timeout:g}",
    ]
    sampled: set[str] = set()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(lg_cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        # A watchdog, so that a wedged run cannot hang the whole benchmark.
        limit = cfg.connect_timeout + cfg.warmup + cfg.duration + 120.0
        watchdog = threading.Timer(limit, proc.kill)
        watchdog.start()
        errors: list[str] = []
        for line in proc.stderr:
            for phase in ("measure", "done"):
                if line.startswith(f"loadgen: phase={phase}"):
                    sample(phase)
                    sampled.add(phase)
            if not line.startswith("loadgen: "):
                errors.append(line.rstrip())
        status = proc.wait()
        watchdog.cancel()
        out.seek(0)
        raw = out.read().decode()
    if status != 0 or "done" not in sampled:
        raise BenchError(f"loadgen failed (status {status}): {' '.join(errors)[-2000:]}")
    return raw


def measure(server: str, scenario: Scenario, interval_ms: float, cfg: Settings) -> Result:
    """Run the load generator once against a fresh ``server``; loadgen JSON plus server samples."""
    port = free_port()
    cmd = server_command(
        server, port, scenario.symbols, interval_ms, cfg.quoteflow_args, cfg.quoteflow_cmd
    )
    if cfg.server_cpus:
        cmd = ["taskset", "-c", cfg.server_cpus, *cmd]
    log = cfg.logs / f"{server}-{scenario.name}-{interval_ms:g}ms.log"
    result: Result = {
        "server": server,
        "scenario": scenario.name,
        "connections": scenario.connections,
        "symbols": scenario.symbols,
        "interval_ms": interval_ms,
        "offered_events_per_second": round(
            scenario.connections * scenario.symbols * 1000.0 / interval_ms, 1
        ),
        "command": shlex.join(cmd),
    }
    with running_server(cmd, port, log) as server_proc:
        pid = server_proc.pid
        time.sleep(1.0)  # let start-up allocation settle before the idle sample
        rss_idle, _ = memory_kib(pid)
        samples: dict[str, float] = {}

        def sample(phase: str) -> None:
            # Sample the server exactly at the edges of the measurement window.
            if phase == "measure":
                samples["cpu0"], samples["t0"] = cpu_seconds(pid), time.monotonic()
            else:
                samples["cpu1"], samples["t1"] = cpu_seconds(pid), time.monotonic()
                samples["rss"], samples["hwm"] = memory_kib(pid)

        raw = run_loadgen(port, scenario.connections, cfg, sample)
        if server_proc.poll() is not None:
            raise BenchError(
                f"{server} exited with status {server_proc.returncode} during the run:\n"
                + _tail(log)
            )
        result.update(json.loads(raw))
    window = samples["t1"] - samples["t0"]
    server_cpu = samples["cpu1"] - samples["cpu0"]
    connected = max(int(result["connected"]), 1)
    events = max(int(result["events_window"]), 1)
    result["server_stats"] = {
        "cpu_seconds_window": round(server_cpu, 3),
        "cpu_percent": round(100.0 * server_cpu / window, 1),
        "cpu_us_per_event": round(1e6 * server_cpu / events, 3),
        "rss_idle_mib": round(rss_idle / 1024, 1),
        "rss_loaded_mib": round(samples["rss"] / 1024, 1),
        "rss_peak_mib": round(samples["hwm"] / 1024, 1),
        "rss_per_connection_kib": round((samples["rss"] - rss_idle) / connected, 2),
    }
    result["delivered_ratio"] = round(
        float(result["ticks_per_second"]) / result["offered_events_per_second"], 4
    )
    return result


def clean(result: Result) -> bool:
    """Every client connected, stayed connected, and saw every event in order."""
    return (
        result.get("connected") == result.get("connections")
        and int(result.get("events_window", 0)) > 0
        and result.get("lost_events") == 0
        and result.get("out_of_order") == 0
        and result.get("disconnected") == 0
    )


def saturation(server: str, scenario: Scenario, cfg: Settings, p99_limit_ms: float) -> Result:
    """Shrink the tick interval until the server stops keeping up; the best passing run."""
    steps: list[Result] = []
    best: Result | None = None
    for interval in SATURATION_INTERVALS_MS:
        try:
            run = measure(server, scenario, interval, cfg)
        except BenchError as exc:  # e.g. the server fell over at this rate
            steps.append({"interval_ms": interval, "error": str(exc), "passed": False})
            print(f"  {server} S4 T={interval}ms: error: {exc}")
            break
        ok = (
            clean(run)
            and run["latency"]["p99_ms"] <= p99_limit_ms
            and run["delivered_ratio"] >= 0.9
        )
        run["passed"] = ok
        steps.append(run)
        print(f"  {server} S4 T={interval}ms: {_brief(run)} {'pass' if ok else 'FAIL'}")
        if not ok:
            break
        best = run
    return {
        "server": server,
        "scenario": scenario.name,
        "p99_limit_ms": p99_limit_ms,
        "max_events_per_second": best["ticks_per_second"] if best else 0.0,
        "best_interval_ms": best["interval_ms"] if best else None,
        "steps": steps,
    }


def _retries(r: Result) -> str:
    n = int(r.get("connect_errors", 0))
    return f" ({n} retries)" if n else ""


def _brief(r: Result) -> str:
    return (
        f"{r['connected']}/{r['connections']} conns{_retries(r)}, "
        f"{r['ticks_per_second']:.0f} ticks/s, "
        f"p99 {r['latency']['p99_ms']:.1f} ms, lost {r['lost_events']}, "
        f"dropped {r['disconnected']}, cpu {r['server_stats']['cpu_percent']}%"
    )


# --- machine info and report ---------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU, load, versions."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    go = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    versions: dict[str, str | None] = {}
    for pkg in (
        "quoteflow",
        "tornado",
        "sse-starlette",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg": list(os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "go": go,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "versions": versions,
        "commit": commit,
    }


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table per scenario, saturation, ratios, machine."""
    m = report["machine"]
    lines = [
        f"# Fan-out benchmark, {report['started']}",
        "",
        f"{m['nproc']} CPUs ({m['cpu_model']}), load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'])}; Python {m['python']}; {m['go']}; "
        f"commit {m['commit'] or '?'}. Window {report['settings']['duration']:g} s after "
        f"{report['settings']['warmup']:g} s warm-up. Latency = receive time - generation "
        "time in the event (same clock); lost = gaps in the per-connection id sequence.",
        "",
    ]
    header = (
        "| server | connected | ticks/s (offered) | p50 ms | p99 ms | max ms | lost | "
        "dropped | server CPU % | CPU us/event | RSS idle -> loaded MiB | RSS/conn KiB | "
        "loadgen CPU % |"
    )
    for name, runs in report["scenarios"].items():
        if name in ("S4", "G"):  # saturation below; G (--broker redis): redis_run.py
            continue
        lines += [f"## {name}: {runs['title']}", "", header, "|" + "---|" * 13]
        for r in runs["results"]:
            if "error" in r:
                lines.append(f"| {r['server']} | error: {r['error'].splitlines()[0]} |")
                continue
            s, lat = r["server_stats"], r["latency"]
            lines.append(
                f"| {r['server']} | {r['connected']}/{r['connections']}{_retries(r)} | "
                f"{_fmt(r['ticks_per_second'], 0)} ({_fmt(r['offered_events_per_second'], 0)}) | "
                f"{lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['max_ms']:.1f} | "
                f"{r['lost_events']} | {r['disconnected']} | {s['cpu_percent']} | "
                f"{s['cpu_us_per_event']:.2f} | {s['rss_idle_mib']} -> {s['rss_loaded_mib']} | "
                f"{s['rss_per_connection_kib']} | {r['cpu_percent_window']:.1f} |"
            )
        lines.append("")
    sat = report["scenarios"].get("S4")
    if sat:
        lines += [
            f"## S4: {sat['title']}",
            "",
            f"Highest delivered tick rate with p99 <= {report['settings']['p99_limit_ms']:g} ms, "
            "no loss, no dropped client, >= 90% of the offered rate.",
            "",
            "| server | max ticks/s | at T ms | first failing step |",
            "|---|---|---|---|",
        ]
        for r in sat["results"]:
            if "error" in r:
                lines.append(f"| {r['server']} | error: {r['error'].splitlines()[0]} | | |")
                continue
            fail = next((s for s in r["steps"] if not s["passed"]), None)
            if fail is None:
                failing = "none"
            elif "error" in fail:
                failing = f"T={fail['interval_ms']:g} ms: error: {fail['error'].splitlines()[0]}"
            else:
                failing = f"T={fail['interval_ms']:g} ms: {_brief(fail)}"
            lines.append(
                f"| {r['server']} | {_fmt(r['max_events_per_second'], 0)} | "
                f"{_fmt(r['best_interval_ms'], 0)} | {failing} |"
            )
        lines.append("")
    ratios = report.get("ratios")
    if ratios:
        lines += [
            "## quoteflow / peer",
            "",
            "Throughput: >1 is better for quoteflow; CPU per event, p99 and RSS per "
            "connection: <1 is better for quoteflow.",
            "",
            "| scenario | peer | ticks/s | CPU us/event | p99 | RSS/conn | max ticks/s (S4) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in ratios:
            lines.append(
                f"| {row['scenario']} | {row['peer']} | {row.get('ticks_per_second', '-')} | "
                f"{row.get('cpu_us_per_event', '-')} | {row.get('p99_ms', '-')} | "
                f"{row.get('rss_per_connection', '-')} | {row.get('max_events_per_second', '-')} |"
            )
        lines.append("")
    return "\n".join(lines)


def ratios(report: dict[str, Any]) -> list[dict[str, str]]:
    """quoteflow's numbers divided by each peer's, per scenario."""
    rows: list[dict[str, str]] = []
    for name, runs in report["scenarios"].items():
        by_server = {r["server"]: r for r in runs["results"] if "error" not in r}
        qf = by_server.get("quoteflow")
        if qf is None:
            continue
        for peer in PEER_NAMES:
            p = by_server.get(peer)
            if p is None:
                continue
            if name == "S4":
                rows.append(
                    {
                        "scenario": name,
                        "peer": peer,
                        "max_events_per_second": _ratio(
                            qf["max_events_per_second"], p["max_events_per_second"]
                        ),
                    }
                )
                continue
            rows.append(
                {
                    "scenario": name,
                    "peer": peer,
                    "ticks_per_second": _ratio(qf["ticks_per_second"], p["ticks_per_second"]),
                    "cpu_us_per_event": _ratio(
                        qf["server_stats"]["cpu_us_per_event"],
                        p["server_stats"]["cpu_us_per_event"],
                    ),
                    "p99_ms": _ratio(qf["latency"]["p99_ms"], p["latency"]["p99_ms"]),
                    "rss_per_connection": _ratio(
                        qf["server_stats"]["rss_per_connection_kib"],
                        p["server_stats"]["rss_per_connection_kib"],
                    ),
                }
            )
    return rows


# --- command line ------------------------------------------------------------------


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the driver."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout.run",
        description=(
            "SSE fan-out benchmark: quoteflow against floor-c (the floor), seed-go, "
            "tornado-naive, sse-starlette."
        ),
    )
    p.add_argument(
        "--scenarios", type=_csv, default=list(SCENARIOS), help="e.g. S1,S2 (default all)"
    )
    p.add_argument("--servers", type=_csv, default=list(SERVERS), help="e.g. quoteflow,seed-go")
    p.add_argument(
        "--duration", type=float, default=None, help="measurement window, s (default 30; quick 3)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="warm-up after connecting, s (default 5; quick 1)",
    )
    p.add_argument(
        "--ramp-rate", type=float, default=2000.0, help="new connections per second (default 2000)"
    )
    p.add_argument(
        "--connect-timeout", type=float, default=120.0, help="give up connecting after, s"
    )
    p.add_argument(
        "--p99-limit-ms", type=float, default=100.0, help="S4 latency bound (default 100)"
    )
    p.add_argument(
        "--quoteflow-args",
        default="--max-connections 20000 --max-connections-per-ip 20000 --log-level warning",
        help="extra 'quoteflow serve' options (default: %(default)s)",
    )
    p.add_argument(
        "--server-cpus",
        default="",
        help="pin the server to these CPUs with taskset, e.g. 0 (default: no pinning)",
    )
    p.add_argument(
        "--loadgen-cpus",
        default="",
        help="pin the load generator to these CPUs with taskset, e.g. 1",
    )
    p.add_argument(
        "--quoteflow-cmd",
        default="",
        help="how to run quoteflow (default: 'quoteflow' on PATH, else 'python -m quoteflow')",
    )
    p.add_argument(
        "--workers",
        default="1",
        metavar="N|auto",
        help="quoteflow serve --workers: serving processes (default 1)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: C=20, S=10, T=100 ms, 3 s, all servers"
    )
    p.add_argument(
        "--broker",
        choices=("memory", "redis"),
        default="memory",
        help="redis: quoteflow only, on the scale-out path (redis-server, quoteflow generate, "
        "2 x quoteflow serve --broker, nginx), S1 and S2 next to the memory broker "
        "(benchmarks/fanout/redis_run.py)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write fanout-<time>.json/.md (default benchmarks/results; quick: none)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="keep the server logs here (default: a temporary folder, removed at the end)",
    )
    args = p.parse_args(argv)
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        p.error(f"unknown server(s) {', '.join(unknown)}: choose from {', '.join(SERVERS)}")
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad and not args.quick:
        p.error(f"unknown scenario(s) {', '.join(bad)}: choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run completed (quick: and every run was clean)."""
    args = parse_args(argv)
    fd_limit = raise_fd_limit()
    started = dt.datetime.now(dt.UTC)
    if args.broker == "redis" and not args.quick and args.scenarios == list(SCENARIOS):
        args.scenarios = ["S1", "S2"]
    scenarios = [QUICK] if args.quick else [SCENARIOS[s] for s in args.scenarios]
    need = max(s.connections for s in scenarios) + 64
    if need > fd_limit:
        print(
            f"warning: open-file limit {fd_limit} is below the {need} a run needs", file=sys.stderr
        )
    try:
        loadgen = build_go(LOADGEN_DIR, LOADGEN_DIR / "loadgen")
        if "seed-go" in args.servers and args.broker == "memory":
            build_go(SEED_GO_DIR, SEED_GO_DIR / "seed-go")
        if "floor-c" in args.servers:
            build_go(FLOOR_C_DIR, FLOOR_C_DIR / "floor-c", tool="gcc", pattern="*.c")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.output_dir or (None if args.quick else RESULTS)
    # Server logs go to --log-dir (kept) or to a temporary folder removed on exit: a
    # failure quotes the log's tail in its message, so nothing is lost.
    with contextlib.ExitStack() as cleanup:
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            logs = args.log_dir
        else:
            logs = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fanout-logs-")))
        cfg = Settings(
            duration=args.duration or (3.0 if args.quick else 30.0),
            warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0),
            ramp_rate=args.ramp_rate,
            connect_timeout=args.connect_timeout,
            quoteflow_args=tuple(shlex.split(args.quoteflow_args))
            + (("--workers", args.workers) if args.workers != "1" else ()),
            quoteflow_cmd=args.quoteflow_cmd,
            server_cpus=args.server_cpus,
            loadgen_cpus=args.loadgen_cpus,
            loadgen=loadgen,
            logs=logs,
        )
        report: dict[str, Any] = {
            "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "machine": machine_info(),
            "settings": {
                **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                "p99_limit_ms": args.p99_limit_ms,
                "quick": args.quick,
            },
            "scenarios": {},
        }
        failures: list[str] = []
        if args.broker == "redis":
            from benchmarks.fanout import redis_run

            report["scenarios"], failures = redis_run.run_scenarios(scenarios, cfg, args.quick)
            report["nginx"] = redis_run.nginx_binary() is not None
        for sc in scenarios if args.broker == "memory" else ():
            print(f"{sc.name}: {sc.title}")
            results: list[Result] = []
            for server in args.servers:
                try:
                    if sc.saturation:
                        r = saturation(server, sc, cfg, args.p99_limit_ms)
                    else:
                        r = measure(server, sc, sc.interval_ms, cfg)
                        print(f"  {server}: {_brief(r)}")
                        if args.quick and not clean(r):
                            failures.append(f"{server}: {_brief(r)}")
                except BenchError as exc:
                    r = {"server": server, "scenario": sc.name, "error": str(exc)}
                    print(f"  {server}: error: {exc}", file=sys.stderr)
                    failures.append(f"{server}: {exc}")
                results.append(r)
            report["scenarios"][sc.name] = {"title": sc.title, "results": results}
        report["ratios"] = ratios(report)
        if args.log_dir is not None:
            report["logs"] = str(logs)
        text = markdown(report)
        if args.broker == "redis":
            from benchmarks.fanout import redis_run

            text += "\n" + redis_run.markdown_redis(report)
        print()
        print(text)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            stem = out_dir / f"fanout-{started.strftime('%Y%m%dT%H%M%SZ')}"
            stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
            stem.with_suffix(".md").write_text(text + "\n")
            print(f"results: {stem}.json, {stem}.md")
        if failures:
            print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
