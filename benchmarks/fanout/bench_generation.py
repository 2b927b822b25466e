"""Tick generation: can one process make, encode and publish 100,000 quotes per second?

A market of N symbols (default 10,000, ``Market.universe``) ticking R times per second
(default 10) is 100,000 quotes per second. Each tick is one ``Market.step()`` (prices,
quotes, payload dicts and their JSON) followed by one ``MemoryBroker.publish()`` (ids,
SSE framing, replay buffer; no subscribers, so this is the cost of generation alone).
The script runs T ticks back to back and reports the **CPU time per second of simulated
ticking**: CPU seconds spent per tick times R. Below 1.0 the feed is sustainable by one
process on one core, with the rest of the core left for fan-out.

Usage::

    python -m benchmarks.fanout.bench_generation                 # 10,000 symbols x 10/s
    python -m benchmarks.fanout.bench_generation --symbols 1000 --rate 100 --ticks 200
    python -m benchmarks.fanout.bench_generation --quick         # smoke run (small)

It prints one line per repeat and a summary with the median, and exits 0 (it never
judges the number; benchmarks/README.md records it).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Sequence

from quoteflow.broker.memory import MemoryBroker
from quoteflow.market import Market


def measure(symbols: int, rate: float, ticks: int, seed: int = 1) -> dict[str, float]:
    """Run ``ticks`` ticks of a ``symbols``-symbol market through a broker.

    Parameters
    ----------
    symbols : int
        Size of the universe.
    rate : float
        Ticks per second of the simulated feed (sets ``tick_interval`` and the
        normalisation; the loop itself runs as fast as it can).
    ticks : int
        Ticks to time (after two warm-up ticks).
    seed : int
        Market seed.

    Returns
    -------
    dict
        ``cpu_ms_per_tick``, ``wall_ms_per_tick``, ``cores`` (CPU seconds per second
        of simulated ticking), ``events_per_second_capacity``.
    """
    market = Market.universe(symbols, seed=seed, tick_interval=1.0 / rate)
    broker = MemoryBroker()  # default replay buffer: 100,000 events, as `quoteflow serve`
    for _ in range(2):  # warm-up: templates, buffer allocation
        broker.publish(market.step())
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(ticks):
        broker.publish(market.step())
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    per_tick = cpu / ticks
    return {
        "cpu_ms_per_tick": per_tick * 1e3,
        "wall_ms_per_tick": wall / ticks * 1e3,
        "cores": per_tick * rate,
        "events_per_second_capacity": symbols / per_tick,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout.bench_generation",
        description="CPU cost of generating, encoding and publishing a large market's ticks.",
    )
    p.add_argument("--symbols", type=int, default=10_000, help="universe size (default 10000)")
    p.add_argument("--rate", type=float, default=10.0, help="ticks per second (default 10)")
    p.add_argument("--ticks", type=int, default=100, help="ticks per repeat (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1000 symbols, 10 ticks")
    args = p.parse_args(argv)
    if args.quick:
        args.symbols, args.ticks, args.repeats = 1000, 10, 1
    load = os.getloadavg()
    print(
        f"{args.symbols} symbols x {args.rate:g} ticks/s = "
        f"{args.symbols * args.rate:,.0f} quotes/s; {args.ticks} ticks x {args.repeats} "
        f"repeats; load average {load[0]:.2f}; Python {sys.version.split()[0]}"
    )
    runs = []
    for i in range(args.repeats):
        r = measure(args.symbols, args.rate, args.ticks, seed=i + 1)
        runs.append(r)
        print(
            f"  repeat {i + 1}: {r['cpu_ms_per_tick']:.1f} ms CPU per tick "
            f"({r['wall_ms_per_tick']:.1f} ms wall) -> {r['cores']:.2f} core at "
            f"{args.rate:g} ticks/s"
        )
    cores = statistics.median(r["cores"] for r in runs)
    per_tick = statistics.median(r["cpu_ms_per_tick"] for r in runs)
    capacity = statistics.median(r["events_per_second_capacity"] for r in runs)
    print(
        f"median: {per_tick:.1f} ms CPU per tick of {args.symbols} symbols = {cores:.2f} core "
        f"for {args.symbols * args.rate:,.0f} quotes/s (one core would make "
        f"{capacity:,.0f} quotes/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
