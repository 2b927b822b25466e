"""The local transport of ``quoteflow serve --workers N``: producer to worker, three ways.

What the workers need from the producer is every event with its id, in a form their
memory broker can publish (the payload's JSON text, so it is not encoded again). This
measures the cost of getting there, per event, on each side, for three candidates:

- ``link``: what ``--workers`` uses (:mod:`quoteflow.server.link`): one pickled frame
  per batch (ids, types, symbols, JSON texts) on a Unix socket pair; the worker wraps
  each text in a lazy :class:`~quoteflow.server.link.Payload` (no ``json.loads``);
- ``sse``: the :class:`~quoteflow.sources.Relay` way: the producer frames SSE events
  (``id``, ``event``, ``data`` with ``seq``) once per batch on a Unix socket; the worker
  parses them with :class:`~quoteflow.client.SSEParser` and ``json.loads`` each payload
  (the relay needs the fields: it drops ``seq`` and re-publishes);
- ``redis``: a ``redis-server`` the command would start: the producer ``XADD``\\ s one
  entry per event (pipelined per batch, the ``quoteflow generate`` shape), the worker
  ``XREAD``\\ s them (blocking, 1,000 at a time). Skipped when ``redis-server`` or the
  ``redis`` package is missing.

Shared memory was not tried: it saves the kernel copy of the bytes (a 10,000-symbol
batch is about 1.6 MB, copied in well under a millisecond), not the per-event Python
work on either side, which is what the numbers below are made of, and it needs its own
wake-up channel (a pipe or eventfd) anyway.

Each candidate moves ``--batches`` batches of ``--symbols`` tick events from this
process to a consumer subprocess; reported: events per second end to end (from the
first send to the last event made publishable, one clock), and CPU
microseconds per event in the producer, the consumer and (``redis``) the server.

Usage::

    python -m benchmarks.workers.bench_link                      # S=100 and 10,000
    python -m benchmarks.workers.bench_link --symbols 100 --batches 200 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def make_batch(symbols: int, round_: int) -> tuple[list[str], list[str], list[str]]:
    """One tick round: kinds, symbols and JSON texts shaped like the market's ticks."""
    from quoteflow.wire.payload import encode_payload

    kinds = ["tick"] * symbols
    names = [f"SYM{j:05d}" for j in range(symbols)]
    texts = [
        encode_payload(
            {
                "symbol": name,
                "price": 100.0 + j * 0.01 + round_ * 0.001,
                "bid": 99.99,
                "ask": 100.01,
                "size": 100 + j,
                "ts": "2026-12-02T14:00:00.000Z",
                "ts_ns": 1796220000000000000 + round_,
                "sim_ts": "2026-12-02T14:00:00.000Z",
            }
        )
        for j, name in enumerate(names)
    ]
    return kinds, names, texts


# ------------------------------------------------------------------------------ produce


def _produce_link(sock: socket.socket, batches: list[Any]) -> None:
    from quoteflow.server.link import encode_frame

    next_id = 1
    for kinds, names, texts in batches:
        ids = list(range(next_id, next_id + len(texts)))
        next_id += len(texts)
        sock.sendall(encode_frame(("batch", ids, kinds, names, texts, (0.0, 0, 0))))


def _produce_sse(sock: socket.socket, batches: list[Any]) -> None:
    from quoteflow.wire.payload import EventFramer

    framer = EventFramer()
    next_id = 1
    for kinds, _names, texts in batches:
        parts = []
        for kind, text in zip(kinds, texts, strict=True):
            parts.append(framer.frame(kind, json.loads(text), text, next_id, next_id))
            next_id += 1
        sock.sendall(b"".join(parts))


def _produce_redis(url: str, batches: list[Any]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    seq = 1
    for kinds, names, texts in batches:
        pipe = client.pipeline(transaction=False)
        for kind, name, text in zip(kinds, names, texts, strict=True):
            pipe.xadd("bench", {"e": kind, "s": name, "d": text, "q": seq})
            seq += 1
        pipe.execute()
    client.close()


# ------------------------------------------------------------------------------ consume


def consume(kind: str, address: str, total: int) -> dict[str, float]:
    """The worker's side: receive ``total`` events and make each publishable.

    CPU is counted from the connection on (imports excluded).
    """
    if kind == "redis":
        import redis

    from quoteflow.cli.workers import batch_of
    from quoteflow.client import SSEParser
    from quoteflow.server.link import read_frame_blocking
    from quoteflow.sources import MarketEvent

    started = time.process_time()
    got = 0
    if kind == "link":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
        while got < total:
            _, ids, kinds, names, texts, _state = read_frame_blocking(sock)
            got += len(batch_of(ids, kinds, names, texts))
        sock.close()
    elif kind == "sse":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
        parser = SSEParser()
        while got < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            for ev in parser.feed(chunk):
                payload = json.loads(ev.data)
                payload.pop("seq", None)
                MarketEvent(ev.event, payload["symbol"], payload)
                got += 1
        sock.close()
    else:
        client = redis.Redis.from_url(address)
        last = "0-0"
        while got < total:
            reply = client.xread({"bench": last}, count=1000, block=5000)
            if not reply:
                break
            for entry_id, fields in reply[0][1]:
                last = entry_id
                fields[b"d"].decode()
                got += 1
        client.close()
    return {"events": got, "cpu_s": time.process_time() - started, "done_at": time.time()}


# ------------------------------------------------------------------------------ driver


def _redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(kind: str, symbols: int, n_batches: int) -> dict[str, Any] | None:
    """Move ``n_batches`` batches of ``symbols`` events with ``kind``; the numbers."""
    import quoteflow.server.link
    import quoteflow.wire.payload  # noqa: F401  (imported before the clocks start)

    batches = [make_batch(symbols, r) for r in range(n_batches)]
    total = symbols * n_batches
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = None
        if kind == "redis":
            binary = shutil.which("redis-server")
            try:
                import redis  # noqa: F401
            except ImportError:
                return None
            if binary is None:
                return None
            path = os.path.join(tmp, "redis.sock")
            redis_proc = subprocess.Popen(
                [binary, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            address = f"unix://{path}"
            for _ in range(100):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
        else:
            address = os.path.join(tmp, "link.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(1)
        consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.workers.bench_link",
                "--consume",
                kind,
                address,
                str(total),
            ],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        try:
            if kind != "redis":
                conn, _ = listener.accept()
            else:
                time.sleep(1.0)  # the consumer has connected and waits in XREAD
            redis_before = _redis_cpu(redis_proc.pid) if redis_proc else 0.0
            began = time.time()
            cpu = time.process_time()
            if kind == "link":
                _produce_link(conn, batches)
            elif kind == "sse":
                _produce_sse(conn, batches)
            else:
                _produce_redis(address, batches)
            produce_cpu = time.process_time() - cpu
            out, _ = consumer.communicate(timeout=600)
            redis_cpu = _redis_cpu(redis_proc.pid) - redis_before if redis_proc else 0.0
        finally:
            if kind != "redis":
                listener.close()
                with_conn = locals().get("conn")
                if with_conn is not None:
                    with_conn.close()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait()
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    result = json.loads(out)
    wall = result["done_at"] - began  # first byte sent to last event made publishable
    if result["events"] != total:
        raise RuntimeError(f"{kind}: {result['events']} of {total} events arrived")
    return {
        "transport": kind,
        "symbols": symbols,
        "events": total,
        "events_per_s": total / wall,
        "producer_us_per_event": produce_cpu / total * 1e6,
        "worker_us_per_event": result["cpu_s"] / total * 1e6,
        "redis_us_per_event": redis_cpu / total * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every candidate at each ``--symbols``; print a Markdown table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers.bench_link")
    p.add_argument("--symbols", default="100,10000", help="symbols per batch (default 100,10000)")
    p.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    p.add_argument("--transports", default="link,sse,redis")
    p.add_argument("--quick", action="store_true", help="20,000 events per run")
    p.add_argument(
        "--consume", nargs=3, metavar=("KIND", "ADDRESS", "EVENTS"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.consume:
        kind, address, total = args.consume
        print(json.dumps(consume(kind, address, int(total))))
        return 0
    events = 20_000 if args.quick else args.events
    print(
        "| transport | symbols/batch | events/s | producer µs/event | worker µs/event | redis µs/event |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for symbols in (int(s) for s in args.symbols.split(",")):
        for kind in args.transports.split(","):
            row = run_one(kind, symbols, max(1, events // symbols))
            if row is None:
                print(f"| {kind} | {symbols} | skipped (redis-server or redis missing) | | | |")
                continue
            print(
                f"| {kind} | {symbols:,} | {row['events_per_s']:,.0f} | "
                f"{row['producer_us_per_event']:.2f} | {row['worker_us_per_event']:.2f} | "
                f"{row['redis_us_per_event']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
