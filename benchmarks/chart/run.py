"""LiveChart in a real kernel: the highest tick rate it ingests, and what that costs.

    python -m benchmarks.chart.run                      # ladder + soak, ~6 min
    python -m benchmarks.chart.run --rates 2500,5000 --charts 1 --duration 10 --soak 0

A ``quoteflow serve --universe N --tick-interval T`` process (its own CPU, not the
kernel's) offers ``N / T`` ticks/s. A real ipykernel (jupyter_client, the kernel a
notebook would use) creates 1 or 4 ``LiveChart`` s subscribed to every symbol, with
redraws coalesced to ``interval`` (0.05 s: 20 redraws/s per chart), and displays them.
This process is the frontend: it counts every ``comm_msg`` the kernel sends on IOPub
(messages and bytes per second: what JupyterLab would receive), samples the kernel's CPU
(utime + stime from /proc) and RSS each second, and reads the charts' event counters at
the start and the end of each window. "Keeps up" means the charts received at least 95 %
of the offered ticks each. The browser's JS heap: ``benchmarks.chart.lab_soak``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.fanout.run import (
    RESULTS,
    cpu_seconds,
    free_port,
    machine_info,
    memory_kib,
    quoteflow_command,
    running_server,
)

#: Ticks per second per symbol of the offered feed (``--tick-interval 0.01``).
TICKS_PER_SYMBOL = 100

SETUP = """\
import asyncio, os
from IPython.display import display
from quoteflow.notebook import LiveChart
charts = [LiveChart({url!r}, window=600, interval={interval}, key=f"bench-{{i}}")
          for i in range({charts})]
for c in charts:
    display(c)
print(os.getpid())
"""
COUNTS = "print([c.events_received for c in charts], [c.running for c in charts])"
TEARDOWN = "for c in charts: c.close()"


@dataclass
class Point:
    """One window of one configuration."""

    charts: int
    offered_ticks_per_s: float
    received_ticks_per_s_per_chart: float
    keeps_up: bool
    kernel_cpu_percent: float
    comm_msgs_per_s: float
    comm_kib_per_s: float
    redraws_per_s_per_chart: float
    rss_start_mib: float
    rss_end_mib: float
    iopub_rate_warnings: int


class Kernel:
    """A real kernel; a thread counts its comm traffic on IOPub."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.comm_msgs = 0
        self.comm_bytes = 0
        self.stream_msgs = 0  # bokeh ColumnsStreamed patches: the redraws
        self.rate_warnings = 0
        self._outputs: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="iopub", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg":
                body = json.dumps(content, default=str)
                self.comm_msgs += 1
                self.comm_bytes += len(body) + sum(len(b) for b in msg.get("buffers", []))
                if "ColumnsStreamed" in body:
                    self.stream_msgs += 1
            elif kind == "stream":
                text = content.get("text", "")
                if "IOPub data rate exceeded" in text or "IOPub message rate exceeded" in text:
                    self.rate_warnings += 1
                parent = msg["parent_header"].get("msg_id", "")
                self._outputs.setdefault(parent, []).append(text)

    def run(self, code: str) -> str:
        """Execute ``code``; return what it printed."""
        msg_id = self.kc.execute(code)
        reply = self.kc.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=120)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel error: {reply['content']}")
        deadline = time.monotonic() + 10  # hang guard: output follows the reply closely
        while msg_id not in self._outputs and time.monotonic() < deadline:
            time.sleep(0.02)
        return "".join(self._outputs.pop(msg_id, []))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def feed_shape(rate: float, one_symbol: bool) -> tuple[int, float]:
    """(symbols, ticks/s per symbol) of a feed offering about ``rate`` ticks/s."""
    if one_symbol:
        return 1, rate
    return max(1, round(rate / TICKS_PER_SYMBOL)), float(TICKS_PER_SYMBOL)


@contextlib.contextmanager
def feed(rate: float, log_dir: Path, one_symbol: bool = False) -> Iterator[str]:
    """A server offering about ``rate`` ticks/s: symbols x 100 ticks/s each, or one
    symbol ticking ``rate`` times a second (every tick then lands on the drawn line)."""
    symbols, per_symbol = feed_shape(rate, one_symbol)
    port = free_port()
    cmd = [
        *quoteflow_command(),
        "serve",
        "--universe",
        str(symbols),
        "--tick-interval",
        f"{1 / per_symbol:g}",
        "--port",
        str(port),
    ]
    with running_server(cmd, port, log_dir / f"server-{symbols}.log"):
        yield f"http://127.0.0.1:{port}"


def _counts(kernel: Kernel) -> list[int]:
    out = kernel.run(COUNTS).strip().splitlines()[-1]
    return [int(x) for x in out.split("]", 1)[0].strip("[ ").split(",") if x.strip()]


def measure(
    charts: int, rate: float, duration: float, interval: float, log_dir: Path, one_symbol: bool
) -> Point:
    """Run ``charts`` charts on a ``rate`` ticks/s feed for ``duration`` seconds."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with feed(rate, log_dir, one_symbol) as url:
        kernel = Kernel(env)
        try:
            pid = int(
                kernel.run(SETUP.format(url=url, interval=interval, charts=charts))
                .strip()
                .splitlines()[-1]
            )
            time.sleep(3.0)  # warm-up: connect, fill the windows (a measurement interval)
            symbols, per_symbol = feed_shape(rate, one_symbol)
            offered = symbols * per_symbol
            c0, t0 = _counts(kernel), time.monotonic()
            cpu0, rss0 = cpu_seconds(pid), memory_kib(pid)[0]
            m0, b0, s0 = kernel.comm_msgs, kernel.comm_bytes, kernel.stream_msgs
            time.sleep(duration)  # the measurement window
            c1, t1 = _counts(kernel), time.monotonic()
            cpu1, rss1 = cpu_seconds(pid), memory_kib(pid)[0]
            m1, b1, s1 = kernel.comm_msgs, kernel.comm_bytes, kernel.stream_msgs
            kernel.run(TEARDOWN)
        finally:
            kernel.close()
    wall = t1 - t0
    received = [(b - a) / wall for a, b in zip(c0, c1, strict=True)]
    per_chart = min(received) if received else 0.0
    return Point(
        charts=charts,
        offered_ticks_per_s=offered,
        received_ticks_per_s_per_chart=round(per_chart, 1),
        keeps_up=per_chart >= 0.95 * offered,
        kernel_cpu_percent=round(100 * (cpu1 - cpu0) / wall, 1),
        comm_msgs_per_s=round((m1 - m0) / wall, 1),
        comm_kib_per_s=round((b1 - b0) / wall / 1024, 1),
        redraws_per_s_per_chart=round((s1 - s0) / wall / charts, 1),
        rss_start_mib=round(rss0 / 1024, 1),
        rss_end_mib=round(rss1 / 1024, 1),
        iopub_rate_warnings=kernel.rate_warnings,
    )


def soak(rate: float, duration: float, interval: float, log_dir: Path) -> list[tuple[float, float]]:
    """Kernel RSS (MiB) every 5 s over ``duration`` seconds of one chart at ``rate``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    samples: list[tuple[float, float]] = []
    with feed(rate, log_dir) as url:
        kernel = Kernel(env)
        try:
            pid = int(
                kernel.run(SETUP.format(url=url, interval=interval, charts=1))
                .strip()
                .splitlines()[-1]
            )
            start = time.monotonic()
            while (now := time.monotonic() - start) < duration:
                samples.append((round(now, 1), round(memory_kib(pid)[0] / 1024, 1)))
                time.sleep(5.0)  # the sampling interval
            kernel.run(TEARDOWN)
        finally:
            kernel.close()
    return samples


def markdown(points: list[Point], samples: list[tuple[float, float]], args: Any) -> str:
    """The results as the table of benchmarks/README.md."""
    lines = [
        f"# LiveChart ingest, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.duration:g} s windows after 3 s warm-up, redraw interval {args.interval:g} s; "
        f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs.",
        "",
        "| charts | offered ticks/s | received /s per chart | keeps up | kernel CPU % "
        "| comm msgs/s | comm KiB/s | redraws/s per chart | kernel RSS MiB start -> end "
        "| IOPub warnings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shape = (
        "one symbol at the full rate (every tick drawn)"
        if args.one_symbol
        else f"N symbols x {TICKS_PER_SYMBOL} ticks/s, every chart subscribed to all of them "
        f"(all parsed and kept, the shown symbol drawn)"
    )
    lines[2:2] = [f"Feed: {shape}.", ""]
    for p in points:
        lines.append(
            f"| {p.charts} | {p.offered_ticks_per_s:,.0f} | {p.received_ticks_per_s_per_chart:,.0f}"
            f" | {'yes' if p.keeps_up else 'no'} | {p.kernel_cpu_percent:.0f}"
            f" | {p.comm_msgs_per_s:.0f} | {p.comm_kib_per_s:.0f}"
            f" | {p.redraws_per_s_per_chart:.1f} | {p.rss_start_mib:.0f} -> {p.rss_end_mib:.0f}"
            f" | {p.iopub_rate_warnings} |"
        )
    for charts in sorted({p.charts for p in points}):
        ok = [p.offered_ticks_per_s for p in points if p.charts == charts and p.keeps_up]
        best = f"{max(ok):,.0f} ticks/s" if ok else "none of the rates tried"
        lines.append("")
        lines.append(f"Highest rate kept up with, {charts} chart(s): {best}.")
    if samples:
        rss = [r for _, r in samples]
        lines += [
            "",
            f"Soak: one chart at {args.soak_rate:,.0f} ticks/s for {args.soak:g} s: kernel RSS "
            f"{rss[0]:.0f} MiB at start, {rss[len(rss) // 2]:.0f} MiB half-way, "
            f"{rss[-1]:.0f} MiB at the end (max {max(rss):.0f}).",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart.run", description=__doc__)
    parser.add_argument("--rates", default="1000,2500,5000,10000", help="offered ticks/s")
    parser.add_argument("--charts", default="1,4", help="numbers of charts at once")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    parser.add_argument("--interval", type=float, default=0.05, help="redraw interval, s")
    parser.add_argument("--soak", type=float, default=120.0, help="soak seconds (0: none)")
    parser.add_argument("--soak-rate", type=float, default=5000.0, help="soak ticks/s")
    parser.add_argument(
        "--one-symbol",
        action="store_true",
        help="one symbol ticking at the full rate (default: N symbols x 100 ticks/s)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"chart-bench-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    points = []
    for charts in (int(c) for c in args.charts.split(",")):
        for rate in (float(r) for r in args.rates.split(",")):
            p = measure(charts, rate, args.duration, args.interval, logs, args.one_symbol)
            print(json.dumps(asdict(p)), flush=True)
            points.append(p)
    samples = soak(args.soak_rate, args.soak, args.interval, logs) if args.soak > 0 else []
    text = markdown(points, samples, args)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"chart-{stamp}"
    report = {
        "points": [asdict(p) for p in points],
        "soak_rss_mib": samples,
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
