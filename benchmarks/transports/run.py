"""Transports compared: the same feed over SSE (``/stream``), WebSocket (``/ws``) and polling.

One ``quoteflow serve --universe S --tick-interval T`` per transport (a fresh process, so
the server CPU of each is its own), C clients subscribed to every symbol, a warm-up, then
a measurement window of D seconds. The clients are raw sockets in this process (asyncio),
so the byte counts are what crossed the wire:

- ``sse``: ``GET /stream`` on HTTP/1.1; the chunked body is de-framed and parsed with
  :class:`quoteflow.client.SSEParser`;
- ``ws``: ``GET /ws`` upgraded to a WebSocket (RFC 6455), one text frame per event;
- ``poll``: ``GET /snapshot`` every P ms on a keep-alive connection; a quote counts as
  delivered when its ``seq`` is new to that client.

Reported per transport: events delivered per second, latency p50/p99 (receive time minus
the tick's ``ts_ns``; same clock, same machine), bytes on the wire per delivered event
(received bytes, plus what the client sent: the polling requests; events are ticks and
the 5 s bars), requests per second,
server CPU per delivered event (``/proc`` of the server process over the window), and the
ticks a client missed: published in the window (``/metrics``) minus delivered. Streaming
transports miss nothing; polling misses every tick that a newer one replaced before the
next poll.

Usage::

    quoteflow bench transports                   # C=50, S=10, T=100 ms, 10 s windows, poll 100 and 1000 ms
    quoteflow bench transports --quick           # smoke: C=4, S=4, 2 s windows
    python -m benchmarks.transports.run --clients 100 --poll-ms 250 --duration 20

Results: ``benchmarks/results/transports-<UTC time>.json`` and ``.md`` (``--output-dir``;
``--quick`` writes nothing unless given one). The exit status is 1 when a transport
delivered nothing or a streaming transport lost events (a correctness check, never a
timing one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fanout.run import (
    RESULTS,
    cpu_seconds,
    free_port,
    quoteflow_command,
    raise_fd_limit,
    running_server,
)
from quoteflow.client import SSEParser

TRANSPORTS = ("sse", "ws", "poll")


@dataclass(frozen=True)
class Config:
    """One comparison: the feed, the clients and the window."""

    clients: int = 50
    symbols: int = 10
    interval_ms: float = 100.0
    poll_ms: tuple[float, ...] = (100.0, 1000.0)
    duration: float = 10.0
    warmup: float = 2.0
    transports: tuple[str, ...] = TRANSPORTS
    quoteflow_cmd: str = ""
    server_cpus: str = ""


@dataclass
class ClientStats:
    """What one client saw during the window."""

    events: int = 0  # tick events delivered (new ticks, for polling)
    all_events: int = 0  # ticks and bars (streams also carry the 5 s bars)
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    lost: int = 0  # gaps in the id sequence (streaming transports)
    latencies_ms: list[float] = field(default_factory=list)
    last_id: int = 0


class Window:
    """Whether events arriving now are inside the measurement window."""

    def __init__(self) -> None:
        self.open = False
        self.closed = False


# --- clients --------------------------------------------------------------------------


def _tick(data: dict[str, Any], now_ns: int, st: ClientStats) -> None:
    st.events += 1
    st.all_events += 1
    ts_ns = data.get("ts_ns")
    if isinstance(ts_ns, int):
        st.latencies_ms.append((now_ns - ts_ns) / 1e6)


async def _headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, len(head)


class _Dechunker:
    """Incremental decoder of the HTTP/1.1 chunked transfer coding (RFC 9112 §7.1)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while True:
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(self.buf[:eol].split(b";")[0], 16)
            end = eol + 2 + size + 2
            if len(self.buf) < end:
                break
            out.append(self.buf[eol + 2 : eol + 2 + size])
            self.buf = self.buf[end:]
        return b"".join(out)


async def sse_client(port: int, st: ClientStats, win: Window) -> None:
    """``GET /stream`` over HTTP/1.1 (chunked), every tick counted and timed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    req = b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(req)
    status, headers, _ = await _headers(reader)
    if status != 200:
        raise RuntimeError(f"/stream answered {status}")
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    dechunk, parser = _Dechunker(), SSEParser()
    try:
        while not win.closed:
            data = await reader.read(1 << 16)
            if not data:
                break
            now_ns = time.time_ns()
            events = parser.feed(dechunk.feed(data) if chunked else data)
            if not win.open:
                if events and events[-1].id:
                    st.last_id = int(events[-1].id)
                continue
            st.bytes_in += len(data)
            for ev in events:
                _count_id(st, ev.id)
                if ev.event == "tick":
                    _tick(json.loads(ev.data), now_ns, st)
                else:
                    st.all_events += 1
    finally:
        writer.close()


def _count_id(st: ClientStats, raw: str | None) -> None:
    if raw is None:
        return
    i = int(raw)
    if st.last_id and i > st.last_id + 1:
        st.lost += i - st.last_id - 1
    st.last_id = max(st.last_id, i)


async def ws_client(port: int, st: ClientStats, win: Window) -> None:
    """``GET /ws`` upgraded by hand (RFC 6455 §4.1); unmasked server frames parsed here."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status, _, _ = await _headers(reader)
    if status != 101:
        raise RuntimeError(f"/ws answered {status}")
    try:
        while not win.closed:
            head = await reader.readexactly(2)
            n = head[1] & 0x7F
            extra = b""
            if n == 126:
                extra = await reader.readexactly(2)
                n = struct.unpack("!H", extra)[0]
            elif n == 127:
                extra = await reader.readexactly(8)
                n = struct.unpack("!Q", extra)[0]
            payload = await reader.readexactly(n)
            now_ns = time.time_ns()
            opcode = head[0] & 0x0F
            if opcode == 0x8:  # close
                break
            if opcode == 0x9:
                # RFC 6455 §5.5.3: answer with a pong (masked, as every client frame);
                # the server closes clients that do not (--ws-frame-timeout).
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + body)
                continue
            if opcode != 0x1:
                continue
            msg = json.loads(payload)
            if not win.open:
                st.last_id = int(msg["id"])
                continue
            st.bytes_in += 2 + len(extra) + n
            _count_id(st, msg["id"])
            if msg["event"] == "tick":
                _tick(msg["data"], now_ns, st)
            else:
                st.all_events += 1
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


async def poll_client(port: int, st: ClientStats, win: Window, every: float, phase: float) -> None:
    """``GET /snapshot`` every ``every`` seconds on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    req = b"GET /snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
    seen: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    # Clients start spread over one period, as independent pollers would.
    next_at = loop.time() + phase * every
    try:
        while not win.closed:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += every
            writer.write(req)
            status, headers, head_len = await _headers(reader)
            body = await reader.readexactly(int(headers["content-length"]))
            now_ns = time.time_ns()
            if status != 200:
                raise RuntimeError(f"/snapshot answered {status}")
            quotes = json.loads(body)["quotes"]
            counting = win.open
            if counting:
                st.requests += 1
                st.bytes_out += len(req)
                st.bytes_in += head_len + len(body)
            for symbol, q in quotes.items():
                if seen.get(symbol) != q["seq"]:
                    seen[symbol] = q["seq"]
                    if counting:
                        _tick(q, now_ns, st)
    finally:
        writer.close()


# --- one transport against a fresh server -----------------------------------------------


def _metric(text: str, name: str, label: str = "") -> float:
    pattern = re.escape(name) + (r"\{[^}]*" + re.escape(label) + r"[^}]*\}" if label else "")
    m = re.search(r"^" + pattern + r"\s+([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def _published_ticks(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    data = await reader.read()
    writer.close()
    text = data.partition(b"\r\n\r\n")[2].decode()
    return _metric(text, "quoteflow_events_published_total", 'event="tick"')


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(transport: str, cfg: Config, logs: Path) -> dict[str, Any]:
    """Serve a fresh feed, run ``cfg.clients`` clients of ``transport``, summarise."""
    port = free_port()
    cmd = [
        *quoteflow_command(cfg.quoteflow_cmd),
        "serve",
        "--universe",
        str(cfg.symbols),
        "--tick-interval",
        f"{cfg.interval_ms / 1000:g}",
        "--port",
        str(port),
        "--max-connections-per-ip",
        str(cfg.clients + 10),
        "--log-level",
        "warning",
    ]
    if cfg.server_cpus:
        cmd = ["taskset", "-c", cfg.server_cpus, *cmd]
    win = Window()
    stats = [ClientStats() for _ in range(cfg.clients)]
    with running_server(cmd, port, logs / f"transports-{transport}.log") as proc:
        if transport == "sse":
            tasks = [asyncio.create_task(sse_client(port, st, win)) for st in stats]
        elif transport == "ws":
            tasks = [asyncio.create_task(ws_client(port, st, win)) for st in stats]
        else:
            every = cfg.poll_ms[0] / 1000
            tasks = [
                asyncio.create_task(poll_client(port, st, win, every, i / cfg.clients))
                for i, st in enumerate(stats)
            ]
        await asyncio.sleep(cfg.warmup)
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise RuntimeError(f"{transport} client failed: {t.exception()}")
        pub0, cpu0, t0 = await _published_ticks(port), cpu_seconds(proc.pid), time.monotonic()
        win.open = True
        await asyncio.sleep(cfg.duration)
        win.open = False
        pub1, cpu1, t1 = await _published_ticks(port), cpu_seconds(proc.pid), time.monotonic()
        win.closed = True
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
    ]
    if failures:
        raise RuntimeError(f"{transport} client failed: {failures[0]!r}")
    window = t1 - t0
    events = sum(s.events for s in stats)
    latencies = [x for s in stats for x in s.latencies_ms]
    published = pub1 - pub0
    if transport == "poll":
        missed = statistics.mean(max(0.0, published - s.events) for s in stats)
    else:
        missed = statistics.mean(s.lost for s in stats)
    wire = sum(s.bytes_in + s.bytes_out for s in stats)
    delivered = sum(s.all_events for s in stats)
    return {
        "transport": transport if transport != "poll" else f"poll {cfg.poll_ms[0]:g} ms",
        "clients": cfg.clients,
        "window_s": round(window, 3),
        "events_per_second": round(events / window, 1),
        "latency_p50_ms": round(_quantile(latencies, 0.5), 2),
        "latency_p99_ms": round(_quantile(latencies, 0.99), 2),
        "bytes_per_event": round(wire / delivered, 1) if delivered else None,
        "requests_per_second": round(sum(s.requests for s in stats) / window, 1),
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / window, 1),
        "server_cpu_us_per_event": (
            round(1e6 * (cpu1 - cpu0) / delivered, 2) if delivered else None
        ),
        "published_ticks": int(published),
        # Per client: ticks published in the window that it never received. A stream
        # knows exactly (gaps in its id sequence); a poller sees only the latest quote per
        # symbol, so it is the window's published ticks minus the new ones it saw (exact
        # up to the few ticks in flight at the window's edges).
        "missed_per_client": round(missed, 1),
        "missed_percent": round(100 * missed / published, 1) if published else None,
        "lost_ids": sum(s.lost for s in stats),
        "command": " ".join(cmd),
    }


async def compare(cfg: Config, log_dir: Path | None = None) -> list[dict[str, Any]]:
    """Measure every transport of ``cfg`` in turn (usable from a notebook: ``await``).

    Server logs go to ``log_dir`` (kept), else to a temporary folder removed at the end (a
    failing server's log tail is in the error message).
    """
    raise_fd_limit()
    with contextlib.ExitStack() as cleanup:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            logs = log_dir
        else:
            logs = Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="transports-logs-"))
            )
        rows = []
        for t in cfg.transports:
            if t == "poll":  # one run per polling interval
                for every in cfg.poll_ms:
                    rows.append(await measure(t, dataclasses.replace(cfg, poll_ms=(every,)), logs))
            else:
                rows.append(await measure(t, cfg, logs))
        return rows


# --- report ---------------------------------------------------------------------------


def markdown(rows: list[dict[str, Any]], cfg: Config, started: str) -> str:
    """The results as a markdown table with the settings and the machine load."""
    lines = [
        f"# Transports, {started}",
        "",
        f"{cfg.clients} clients per transport, all {cfg.symbols} symbols ticking every "
        f"{cfg.interval_ms:g} ms ({cfg.symbols * 1000 / cfg.interval_ms:,.0f} ticks/s offered "
        f"per client); {cfg.duration:g} s window after {cfg.warmup:g} s warm-up; load "
        f"average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs.",
        "",
        "| transport | events/s | p50 ms | p99 ms | bytes/event | requests/s | server CPU % "
        "| CPU us/event | missed per client (% of ticks) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['transport']} | {r['events_per_second']:,.0f} | {r['latency_p50_ms']} | "
            f"{r['latency_p99_ms']} | {r['bytes_per_event']} | {r['requests_per_second']} | "
            f"{r['server_cpu_percent']} | {r['server_cpu_us_per_event']} | "
            f"{r['missed_per_client']:,.0f} ({r['missed_percent']}%) |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="quoteflow bench transports",
        description="The same feed over SSE, WebSocket and /snapshot polling, side by side.",
    )
    p.add_argument("--clients", type=int, default=None, help="clients per transport (50)")
    p.add_argument("--symbols", type=int, default=None, help="universe size (10)")
    p.add_argument("--interval-ms", type=float, default=100.0, help="tick interval (100)")
    p.add_argument(
        "--poll-ms",
        default="100,1000",
        help="polling intervals, ms, one run each (default 100,1000; quick 500)",
    )
    p.add_argument("--duration", type=float, default=None, help="window, s (10; quick 2)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up, s (2; quick 1)")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="sse,ws,poll")
    p.add_argument("--server-cpus", default="", help="pin the server with taskset, e.g. 0")
    p.add_argument("--quoteflow-cmd", default="", help="how to run quoteflow")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 clients, 4 symbols, 2 s")
    p.add_argument("--output-dir", type=Path, default=None, help="where to write the results")
    p.add_argument(
        "--log-dir", type=Path, default=None, help="keep the server logs here (default: removed)"
    )
    args = p.parse_args(argv)
    transports = tuple(t.strip() for t in args.transports.split(",") if t.strip())
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad:
        p.error(f"unknown transport(s) {', '.join(bad)}: choose from {', '.join(TRANSPORTS)}")
    quick = args.quick
    try:
        poll_ms = tuple(float(v) for v in args.poll_ms.split(",") if v.strip())
    except ValueError:
        p.error(f"--poll-ms {args.poll_ms!r}: give milliseconds, e.g. 100,1000")
    cfg = Config(
        clients=args.clients or (4 if quick else 50),
        symbols=args.symbols or (4 if quick else 10),
        interval_ms=args.interval_ms,
        poll_ms=(500.0,) if quick and args.poll_ms == "100,1000" else poll_ms,
        duration=args.duration or (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 2.0),
        transports=transports,
        quoteflow_cmd=args.quoteflow_cmd,
        server_cpus=args.server_cpus,
    )
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 unless a transport delivered nothing or a stream lost events."""
    cfg, args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    try:
        rows = asyncio.run(compare(cfg, args.log_dir))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(rows, cfg, started.strftime("%Y-%m-%d %H:%M:%S UTC"))
    print(text)
    out_dir = args.output_dir or (None if args.quick else RESULTS)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"transports-{started.strftime('%Y%m%dT%H%M%SZ')}"
        report = {"started": started.isoformat(), "config": asdict(cfg), "results": rows}
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"results: {stem}.json, {stem}.md")
    bad = [r["transport"] for r in rows if not r["events_per_second"]]
    bad += [r["transport"] for r in rows if not r["transport"].startswith("poll") and r["lost_ids"]]
    if bad:
        print(f"FAILED: {', '.join(bad)} delivered nothing or lost events", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
