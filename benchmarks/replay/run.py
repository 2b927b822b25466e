"""Replay throughput: N recorded ticks replayed at ``--speed max`` to a real client.

1. A recording of N ticks (default 1,000,000) is written with
   :class:`quoteflow.recording.Recorder`, the writer of ``quoteflow record``: the events of
   ``Market.universe(S)`` framed as a memory-broker server frames them (payload with
   ``seq``, decimal ids) and stamped ``tick_interval`` apart. (Recording that many events
   from a live server would only add minutes of capture; the files are the same format.)
2. ``quoteflow serve --replay F --speed max --replay-paused`` starts on a free port, as a
   user starts it (its own process).
3. The client is a raw socket in this process: ``GET /stream?events=tick`` over HTTP/1.0
   (no chunked framing), counting ``event: tick`` lines in each received chunk. After the
   stream is open, ``POST /replay {"action": "resume"}`` starts the replay.

Reported: ticks received, ticks/s from the first received tick to the N-th (and from the
resume request to the N-th), and whether the client was dropped. The exit status is 1
when the client did not receive exactly N ticks in order (correctness, never timing).

Usage::

    python -m benchmarks.replay.run                  # 1,000,000 ticks, 100 symbols
    python -m benchmarks.replay.run --ticks 100000   # a quicker run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
URL_RE = re.compile(r"on (http://\S+/) \(dashboard\)")
TICK = b"\nevent: tick\n"


def write_recording(out: Path, ticks: int, symbols: int) -> int:
    """Write ``ticks`` ticks (plus the bars that closed meanwhile); return rows written."""
    from quoteflow.market import Market
    from quoteflow.recording import Recorder
    from quoteflow.wire.payload import encode_payload, pre_encoded, with_seq

    market = Market.universe(symbols, seed=1, tick_interval=0.01)
    rec = Recorder(out, roll_seconds=1e9, roll_bytes=1 << 40, row_group_rows=100_000)
    t_ns = 1_764_000_000_000_000_000
    n_ticks = 0
    next_id = 1
    while n_ticks < ticks:
        batch = market.step()
        pairs = pre_encoded(batch)
        for i, ev in enumerate(batch):
            if ev.event == "tick":
                if n_ticks == ticks:
                    continue
                n_ticks += 1
            text = pairs[i][1] if i < len(pairs) else encode_payload(ev.data)
            rec.add(ev.event, with_seq(text, next_id), str(next_id), t_ns)
            next_id += 1
        t_ns += 10_000_000
    rec.close()
    return next_id - 1


def _start_server(spec: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "quoteflow",
        "serve",
        "--replay",
        str(spec),
        "--speed",
        "max",
        "--replay-paused",
        "--port",
        "0",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = URL_RE.search(line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    port = int(match.group(1).rstrip("/").rsplit(":", 1)[1])
    return proc, port


def measure(port: int, ticks: int) -> dict[str, Any]:
    """Open the stream, resume the replay, count ticks until ``ticks`` arrived."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.sendall(b"GET /stream?events=tick HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    _, _, rest = head.partition(b"\r\n\r\n")
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/replay", data=b'{"action": "resume"}', method="POST"
    )
    t_resume = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as answer:
        assert json.load(answer)["state"] in ("playing", "ended")
    n = 0
    carry = b"\n" + rest
    t_first: float | None = None
    last_id = b""
    while n < ticks:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data = carry + chunk
        got = data.count(TICK)
        if got and t_first is None:
            t_first = time.perf_counter()
        n += got
        carry = data[-(len(TICK) - 1) :]
        idx = data.rfind(b"\nid: ")
        if idx >= 0:
            last_id = data[idx + 5 : data.find(b"\n", idx + 5)]
    t_end = time.perf_counter()
    sock.close()
    first = t_first or t_end
    return {
        "ticks_received": n,
        "ticks_per_s_first_to_last": n / (t_end - first) if t_end > first else None,
        "ticks_per_s_from_resume": n / (t_end - t_resume),
        "seconds_first_to_last": t_end - first,
        "last_id": last_id.decode(errors="replace"),
        "dropped": n < ticks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the recording")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="qf-replay-bench-"))
    out = folder / "bench.parquet"
    t0 = time.perf_counter()
    rows = write_recording(out, args.ticks, args.symbols)
    print(f"recorded {rows} events ({args.ticks} ticks) in {time.perf_counter() - t0:.1f} s")
    proc, port = _start_server(out)
    try:
        result = measure(port, args.ticks)
    finally:
        proc.terminate()
        proc.wait(30)
    result.update(
        ticks=args.ticks,
        symbols=args.symbols,
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
        python=sys.version.split()[0],
    )
    print(json.dumps(result, indent=2))
    return 0 if result["ticks_received"] == args.ticks else 1


if __name__ == "__main__":
    raise SystemExit(main())
