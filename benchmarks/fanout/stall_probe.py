"""Where do latency spikes come from? Run one S4-like step with every clock watched.

Run from the repository root (needs the Go load generator, built on first use)::

    python -m benchmarks.fanout.stall_probe --interval-ms 35 --duration 60

It starts ``quoteflow serve --universe S --tick-interval T`` pinned to one CPU, with
two observers installed in the server process (``--server-child`` mode of this file):
``gc.callbacks`` (start and length of every collection, by generation) and an
event-loop lag probe (a thread asks the loop to run a callback every 10 ms and records
how late it ran). The load generator (pinned to the other CPU) records every event
later than ``--slow-ms`` with its connection. Meanwhile this process samples the
kernel's TCP counters (``/proc/net/snmp``, ``/proc/net/netstat``: retransmissions,
timeouts, loss probes) and the per-CPU backlog drops (``/proc/net/softnet_stat``)
every 50 ms.

The report lines up, per 100 ms of generation time with a slow event: how many
connections were late, the worst latency, the loop's worst lag, the GC time, and the
kernel counters' change. A server stall (loop lag, GC) delays every connection at
once; a TCP retransmission timeout (200 ms minimum on Linux) delays one socket.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COUNTERS = ("RetransSegs", "TCPTimeouts", "TCPLossProbes", "TCPFastRetrans", "TCPBacklogDrop")


def _install_observers(out_path: str) -> None:
    """In the server process: record GC passes and loop lag, flushed to ``out_path``."""
    # (start ns, generation, seconds, objects collected, objects in generation 0)
    gc_events: list[tuple[int, int, float, int, int]] = []
    lags: list[tuple[int, float]] = []  # (scheduled ns, lag seconds) when lag > 2 ms
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["count0"] = len(gc.get_objects(0))
            started["t"] = time.perf_counter()
            started["wall"] = time.time_ns()
        elif "t" in started:
            secs = time.perf_counter() - started["t"]
            gc_events.append(
                (
                    int(started["wall"]),
                    int(info["generation"]),
                    secs,
                    int(info["collected"]),
                    int(started["count0"]),
                )
            )

    gc.callbacks.append(on_gc)
    original_run = asyncio.run

    def lag_thread(loop: asyncio.AbstractEventLoop) -> None:
        while not loop.is_closed():
            wall = time.time_ns()
            t0 = time.perf_counter()
            done = threading.Event()
            try:
                loop.call_soon_threadsafe(done.set)
            except RuntimeError:
                return
            done.wait(5.0)
            lag = time.perf_counter() - t0
            if lag > 0.002:
                lags.append((wall, lag))
            time.sleep(0.01)

    def flush() -> None:
        Path(out_path).write_text(json.dumps({"gc": gc_events, "lag": lags}))

    def run(main: Any, **kwargs: Any) -> Any:
        async def wrapped() -> Any:
            loop = asyncio.get_running_loop()
            threading.Thread(target=lag_thread, args=(loop,), daemon=True).start()

            async def flusher() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    flush()

            task = asyncio.ensure_future(flusher())
            try:
                return await main
            finally:
                task.cancel()
                flush()

        return original_run(wrapped(), **kwargs)

    asyncio.run = run


def _system_counters(server_pid: int = 0) -> dict[str, int]:
    values: dict[str, int] = {}
    # Steal (the hypervisor ran something else) per CPU, and how long the server waited
    # for a CPU while runnable (schedstat field 2), both in ms.
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            ticks = int(line.split()[8])
            values[f"steal_ms_{line.split()[0]}"] = ticks * 1000 // os.sysconf("SC_CLK_TCK")
    if server_pid:
        try:
            wait_ns = int(Path(f"/proc/{server_pid}/schedstat").read_text().split()[1])
            values["server_runqueue_ms"] = wait_ns // 1_000_000
        except (OSError, IndexError, ValueError):
            pass
    for name in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = Path(name).read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            keys, nums = head.split()[1:], vals.split()[1:]
            for k, v in zip(keys, nums, strict=False):
                if k in COUNTERS:
                    values[k] = int(v)
    drops = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        drops += int(line.split()[1], 16)
    values["softnet_drops"] = drops
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval-ms", type=float, default=35.0)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--loadgen-cpus", default="1")
    parser.add_argument("--out", type=Path, default=Path("stall-probe.json"))
    parser.add_argument("--server-child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)

    if args.server_child:  # inside the server process
        _install_observers(args.server_child)
        from quoteflow.cli import main as cli_main

        return cli_main(rest)

    from benchmarks.fanout.run import LOADGEN_DIR, build_go, free_port

    loadgen = build_go(LOADGEN_DIR, LOADGEN_DIR / "loadgen")
    port = free_port()
    observed = args.out.with_suffix(".server.json")
    server = subprocess.Popen(
        [
            "taskset", "-c", args.server_cpus, sys.executable, "-m",
            "benchmarks.fanout.stall_probe", "--server-child", str(observed),
            "serve", "--universe", str(args.symbols),
            "--tick-interval", f"{args.interval_ms / 1000:g}", "--port", str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    samples: list[tuple[int, dict[str, int]]] = []
    try:
        time.sleep(3.0)
        # stdout to a file, not a pipe: a long slow_events list would fill a pipe and block.
        with tempfile.TemporaryFile() as out:
            lg = subprocess.Popen(
                [
                    "taskset", "-c", args.loadgen_cpus, str(loadgen),
                    "-addr", f"127.0.0.1:{port}", "-c", str(args.connections),
                    "-duration", f"{args.duration:g}", "-warmup", "3",
                    "-slow-ms", f"{args.slow_ms:g}",
                ],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while lg.poll() is None:
                samples.append((time.time_ns(), _system_counters(server.pid)))
                time.sleep(0.05)
            out.seek(0)
            result = json.loads(out.read() or b"{}")
    finally:
        server.terminate()
        server.wait(10)
    observed_data = json.loads(observed.read_text()) if observed.exists() else {}
    report = summarise(result, observed_data, samples, args)
    args.out.write_text(
        json.dumps({"loadgen": result, "server": observed_data, "report": report}, indent=1)
    )
    print("\n".join(report))
    return 0


def summarise(
    result: dict[str, Any],
    observed: dict[str, Any],
    samples: list[tuple[int, dict[str, int]]],
    args: argparse.Namespace,
) -> list[str]:
    lat = result.get("latency", {})
    lines = [
        f"T={args.interval_ms:g} ms, C={args.connections}, S={args.symbols}: "
        f"{result.get('ticks_per_second', 0):,.0f} ticks/s, p99 {lat.get('p99_ms')} ms, "
        f"max {lat.get('max_ms')} ms, lost {result.get('lost_events')}",
    ]
    gcs = observed.get("gc", [])
    lags = observed.get("lag", [])
    by_gen: dict[int, list[float]] = defaultdict(list)
    for _, gen, secs, *_ in gcs:
        by_gen[gen].append(secs)
    for gen in sorted(by_gen):
        v = by_gen[gen]
        lines.append(f"gc gen{gen}: {len(v)} passes, max {1e3 * max(v):.1f} ms")
    if lags:
        lines.append(
            f"loop lag > 2 ms: {len(lags)} probes, max {1e3 * max(x[1] for x in lags):.1f} ms"
        )
    if samples:
        first, last = samples[0][1], samples[-1][1]
        lines.append(
            "kernel counters over the run: "
            + ", ".join(f"{k} +{last[k] - first.get(k, 0)}" for k in sorted(last))
        )
    # Group slow events per 100 ms of generation time.
    buckets: dict[int, dict[str, Any]] = {}
    for conn, gen_ns, lat_us in result.get("slow_events", []):
        b = buckets.setdefault(gen_ns // 100_000_000, {"conns": set(), "n": 0, "max": 0})
        b["conns"].add(conn)
        b["n"] += 1
        b["max"] = max(b["max"], lat_us)
    if not buckets:
        lines.append(f"no event later than {args.slow_ms:g} ms")
    for key in sorted(buckets):
        b = buckets[key]
        t0, t1 = key * 100_000_000, (key + 1) * 100_000_000 + int(1e6 * b["max"] / 1e3)
        lag = max((x[1] for x in lags if t0 - 5e8 <= x[0] <= t1), default=0.0)
        gc_ms = sum(x[2] for x in gcs if t0 - 5e8 <= x[0] <= t1)
        window = [s for s in samples if t0 - 1e8 <= s[0] <= t1 + 3e8]
        delta = (
            {k: window[-1][1][k] - window[0][1][k] for k in window[0][1]} if len(window) > 1 else {}
        )
        changed = ", ".join(f"{k} +{v}" for k, v in delta.items() if v) or "no change"
        lines.append(
            f"{time.strftime('%H:%M:%S', time.gmtime(key / 10))}.{key % 10}: "
            f"{len(b['conns'])} connections late, {b['n']} events, max {b['max'] / 1e3:.0f} ms; "
            f"loop lag max {1e3 * lag:.0f} ms, gc {1e3 * gc_ms:.0f} ms; kernel: {changed}"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
