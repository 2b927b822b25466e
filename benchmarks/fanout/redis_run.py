"""``--broker redis``: the fan-out scenarios on the scale-out path, on a real redis-server.

Per scenario and variant the driver starts, each on a free port:

- ``redis-server`` (no persistence, like ``tests/redis_server.py``),
- ``quoteflow generate --broker redis://... --universe S --tick-interval T/1000`` (the
  producer; ``--port`` only for its health check),
- two ``quoteflow serve --broker redis://... --trust-proxy`` instances,
- nginx with ``deploy/nginx.conf`` (its ports and paths replaced, one worker) in front of
  them when ``nginx`` is installed; without it the load generator runs twice, C/2
  clients against each instance, and the report says so (latency then is the worse of
  the two runs' quantiles).

The load generator is the memory-broker run's, with the same scenario definitions, and
its numbers go into the same table. On top it samples, at the edges of the measurement
window: the CPU time of every process (``/proc/<pid>/stat``), Redis's ``INFO`` (CPU,
memory, ``cmdstat_zadd`` calls) and the stream's ``entries-added``.

Variants: ``redis`` (defaults, the ``/history`` bar archive on: every serving instance
``ZADD``\\ s each completed base bar into Redis) and ``redis, no history`` (serve with
``--history-bars 0 --history-ticks 0``): the difference is the cost of history.
Scenario ``G`` (publish only): ``quoteflow generate`` alone at 1,000 symbols x 10 ms =
100,000 ticks/s into Redis, no serving instance, no client: can one producer feed Redis
at that rate, and at how much CPU (target: < 1 core)?
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.fanout import run as base

STREAM_KEY = "quoteflow:events"
#: Publish-only scenario: 1,000 symbols every 10 ms = 100,000 ticks/s into Redis.
PUBLISH = base.Scenario("G", 0, 1000, 10, "publish only: S=1000, T=10 ms, no clients")
VARIANTS = {"redis": (), "redis, no history": ("--history-bars", "0", "--history-ticks", "0")}


def _redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def redis_sample(port: int) -> dict[str, float]:
    """Redis CPU seconds, used memory, ZADD calls and stream entries added so far."""
    client = _redis_client(port)
    try:
        info = client.info("all")
        try:
            added = float(client.xinfo_stream(STREAM_KEY)["entries-added"])
        except Exception:  # no stream yet
            added = 0.0
    finally:
        client.close()
    return {
        "cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "mem": float(info["used_memory"]),
        "zadd": float(info.get("cmdstat_zadd", {}).get("calls", 0)),
        "added": added,
        "xlen": float(info.get("db0", {}).get("keys", 0)),
    }


def stream_length(port: int) -> int:
    client = _redis_client(port)
    try:
        return int(client.xlen(STREAM_KEY))
    finally:
        client.close()


def nginx_conf(workdir: Path, listen: int, upstreams: list[int]) -> Path:
    """deploy/nginx.conf with this run's ports and paths (everything else unchanged)."""
    text = (base.ROOT / "deploy" / "nginx.conf").read_text()
    text = text.replace("/tmp/quoteflow-nginx", str(workdir / "ng"))
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    servers = iter(upstreams)
    text = re.sub(r"server 127\.0\.0\.1:\d+", lambda _m: f"server 127.0.0.1:{next(servers)}", text)
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


def nginx_binary() -> str | None:
    """nginx on PATH or in /usr/sbin (Debian), else None."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@contextlib.contextmanager
def cluster(
    sc: base.Scenario, cfg: base.Settings, serve_args: tuple[str, ...], tag: str, instances: int
) -> Iterator[dict[str, Any]]:
    """redis-server, the generator, ``instances`` serving instances and nginx, running."""
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(redis_server).exists():
        raise base.BenchError("redis-server not found: apt-get install redis-server")
    work = cfg.logs / f"redis-{sc.name}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    qf = base.quoteflow_command(cfg.quoteflow_cmd)
    rport = base.free_port()
    url = f"redis://127.0.0.1:{rport}/0"
    procs: dict[str, int] = {}
    commands: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        def start(name: str, cmd: list[str], port: int) -> None:
            proc = stack.enter_context(base.running_server(cmd, port, work / f"{name}.log"))
            procs[name] = proc.pid
            commands[name] = shlex.join(cmd)

        start(
            "redis",
            [redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(work)],
            rport,
        )  # fmt: skip
        mem0 = redis_sample(rport)["mem"]
        gport = base.free_port()
        start(
            "generator",
            [*qf, "generate", "--broker", url, "--universe", str(sc.symbols),
             "--tick-interval", f"{sc.interval_ms / 1000:g}", "--port", str(gport),
             "--log-level", "warning"],
            gport,
        )  # fmt: skip
        ports = []
        for i in range(instances):
            port = base.free_port()
            cmd = [*qf, "serve", "--broker", url, "--port", str(port), "--trust-proxy",
                   "--instance-id", f"i{i}", *cfg.quoteflow_args, *serve_args]  # fmt: skip
            start(f"serve{i}", cmd, port)
            ports.append(port)
        front: list[int] = ports
        ng = nginx_binary()
        if instances and ng is not None:
            listen = base.free_port()
            conf = nginx_conf(work, listen, ports)
            cmd = [ng, "-p", str(work), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
            start("nginx", cmd, listen)
            front = [listen]
        yield {
            "procs": procs,
            "commands": commands,
            "redis_port": rport,
            "front": front,
            "nginx": ng is not None,
            "redis_mem_idle": mem0,
        }


def _cpu(procs: dict[str, int]) -> dict[str, float]:
    return {name: base.cpu_seconds(pid) for name, pid in procs.items()}


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Two load generators' reports as one: counts summed, latency quantiles the worse."""
    if len(reports) == 1:
        return reports[0]
    out = dict(reports[0])
    for key in ("connected", "connections", "events_window", "lost_events", "out_of_order",
                "disconnected", "connect_errors", "ticks_per_second", "events_per_second"):  # fmt: skip
        out[key] = sum(float(r.get(key, 0)) for r in reports)
        if key not in ("ticks_per_second", "events_per_second"):
            out[key] = int(out[key])
    lat = {k: max(float(r["latency"][k]) for r in reports) for k in ("p50_ms", "p99_ms", "max_ms")}
    out["latency"] = {**reports[0]["latency"], **lat}
    out["latency"]["samples"] = sum(int(r["latency"]["samples"]) for r in reports)
    out["cpu_percent_window"] = sum(float(r.get("cpu_percent_window", 0)) for r in reports)
    return out


def measure_redis(sc: base.Scenario, cfg: base.Settings, variant: str) -> base.Result:
    """One scenario on the Redis path: loadgen report plus per-process and Redis samples."""
    import json

    publish_only = sc.connections == 0
    with cluster(sc, cfg, VARIANTS[variant], variant.replace(", ", "-").replace(" ", "-"),
                 0 if publish_only else 2) as c:  # fmt: skip
        procs, rport = c["procs"], c["redis_port"]
        time.sleep(1.0)
        serving = [n for n in procs if n.startswith("serve")]
        rss_idle = sum(base.memory_kib(procs[n])[0] for n in serving)
        samples: dict[str, Any] = {}
        lock = threading.Lock()

        def sample(phase: str) -> None:
            with lock:
                if phase in samples:  # the second load generator: already sampled
                    return
                samples[phase] = {
                    "t": time.monotonic(),
                    "cpu": _cpu(procs),
                    "redis": redis_sample(rport),
                    "rss": sum(base.memory_kib(procs[n])[0] for n in serving),
                }

        if publish_only:
            time.sleep(cfg.warmup)
            sample("measure")
            time.sleep(cfg.duration)
            sample("done")
            report: dict[str, Any] = {"connections": 0, "connected": 0}
        else:
            fronts = c["front"]
            per = sc.connections // len(fronts)
            raws: list[str] = [""] * len(fronts)
            errors: list[BaseException] = []

            def one(i: int, port: int) -> None:
                try:
                    raws[i] = base.run_loadgen(port, per, cfg, sample)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(fronts)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise base.BenchError(str(errors[0]))
            report = _merge([json.loads(r) for r in raws])
        xlen = stream_length(rport)
        for name, pid in procs.items():
            if not Path(f"/proc/{pid}").exists():
                raise base.BenchError(f"{name} exited during the run")
    s0, s1 = samples["measure"], samples["done"]
    window = s1["t"] - s0["t"]
    cpu = {n: s1["cpu"][n] - s0["cpu"][n] for n in procs}
    r0, r1 = s0["redis"], s1["redis"]
    added = r1["added"] - r0["added"]
    redis_cpu = r1["cpu"] - r0["cpu"]
    serve_cpu = sum(cpu[n] for n in serving)
    offered = sc.connections * sc.symbols * 1000.0 / sc.interval_ms
    result: base.Result = {
        "server": f"quoteflow {variant}" + (" + nginx" if c["nginx"] and serving else ""),
        "scenario": sc.name,
        "variant": variant,
        "nginx": c["nginx"],
        "connections": sc.connections,
        "symbols": sc.symbols,
        "interval_ms": sc.interval_ms,
        "offered_events_per_second": round(offered, 1),
        "commands": c["commands"],
        **report,
    }
    events = max(int(result.get("events_window", 0)), 1)
    connected = max(int(result.get("connected", 0)), 1)
    result["server_stats"] = {
        "cpu_seconds_window": round(serve_cpu, 3),
        "cpu_percent": round(100.0 * serve_cpu / window, 1),
        "cpu_us_per_event": round(1e6 * serve_cpu / events, 3),
        "rss_idle_mib": round(rss_idle / 1024, 1),
        "rss_loaded_mib": round(s1["rss"] / 1024, 1),
        "rss_per_connection_kib": round((s1["rss"] - rss_idle) / connected, 2),
    }
    per100k = 1e5 / max(added, 1.0)
    result["redis_stats"] = {
        "published_per_second": round(added / window, 1),
        "generator_cpu_percent": round(100.0 * cpu["generator"] / window, 1),
        "generator_us_per_published": round(1e6 * cpu["generator"] / max(added, 1.0), 3),
        "redis_cpu_percent": round(100.0 * redis_cpu / window, 1),
        "redis_cpu_ms_per_100k": round(1e3 * redis_cpu * per100k, 1),
        "redis_mib_per_100k_entries": round(
            (r1["mem"] - c["redis_mem_idle"]) / max(xlen, 1) * 1e5 / 2**20, 1
        ),
        "stream_length": xlen,
        "zadd_per_second": round((r1["zadd"] - r0["zadd"]) / window, 1),
        "nginx_cpu_percent": round(100.0 * cpu.get("nginx", 0.0) / window, 1),
    }
    if offered:
        result["delivered_ratio"] = round(float(result["ticks_per_second"]) / offered, 4)
    return result


def _line(r: base.Result) -> str:
    x = r["redis_stats"]
    return (
        f"{r['connected']}/{r['connections']} conns, {r.get('ticks_per_second', 0):.0f} ticks/s"
        f" ({r.get('delivered_ratio', 0):.1%}), p99 {r['latency']['p99_ms']:.1f} ms, "
        f"lost {r['lost_events']}, serve cpu {r['server_stats']['cpu_percent']}%, "
        f"generator {x['generator_cpu_percent']}%, redis {x['redis_cpu_percent']}%"
        if r["connections"]
        else f"published {x['published_per_second']:.0f}/s, generator "
        f"{x['generator_cpu_percent']}%, redis {x['redis_cpu_percent']}%"
    )


def run_scenarios(
    scenarios: list[base.Scenario], cfg: base.Settings, quick: bool
) -> tuple[dict[str, Any], list[str]]:
    """Every scenario: memory broker, Redis, Redis without history (quick: the first two),
    then the publish-only run (not in quick)."""
    out: dict[str, Any] = {}
    failures: list[str] = []
    variants = ["redis"] if quick else list(VARIANTS)
    todo = [*scenarios, *([] if quick else [PUBLISH])]
    for sc in todo:
        print(f"{sc.name}: {sc.title}")
        results: list[base.Result] = []
        runs: list[tuple[str, str | None]] = [("quoteflow", None)] if sc.connections else []
        # G has no serving instance, so no history to switch off: one run.
        runs += [(f"quoteflow {v}", v) for v in (variants if sc.connections else variants[:1])]
        for name, variant in runs:
            try:
                if variant is None:
                    r = base.measure("quoteflow", sc, sc.interval_ms, cfg)
                    r["server"] = "quoteflow memory"
                    print(f"  {r['server']}: {base._brief(r)}")
                else:
                    r = measure_redis(sc, cfg, variant)
                    print(f"  {r['server']}: {_line(r)}")
                if sc.connections and not base.clean(r):
                    failures.append(f"{sc.name} {r['server']}: not clean: {base._brief(r)}")
            except base.BenchError as exc:
                r = {"server": name, "scenario": sc.name, "error": str(exc)}
                print(f"  {name}: error: {exc}")
                failures.append(f"{sc.name} {name}: {exc}")
            results.append(r)
        out[sc.name] = {"title": sc.title, "results": results}
    return out, failures


def markdown_redis(report: dict[str, Any]) -> str:
    """The Redis part of the report: the cluster's own numbers and the ratios to memory."""
    lines = [
        "## Redis path: producer, Redis, history",
        "",
        "| scenario | run | delivered / offered | published/s | generator CPU % | generator "
        "us/published | Redis CPU % | Redis CPU ms / 100k events | Redis MiB / 100k entries "
        "| ZADD/s | nginx CPU % |",
        "|" + "---|" * 11,
    ]
    ratio_rows = []
    for name, runs in report["scenarios"].items():
        by = {r["server"]: r for r in runs["results"] if "error" not in r}
        mem = by.get("quoteflow memory")
        for r in runs["results"]:
            if "redis_stats" not in r:
                continue
            x = r["redis_stats"]
            delivered = f"{r['delivered_ratio']:.1%}" if r.get("connections") else "-"
            lines.append(
                f"| {name} | {r['server']} | {delivered} | {x['published_per_second']:,.0f} | "
                f"{x['generator_cpu_percent']} | {x['generator_us_per_published']:.2f} | "
                f"{x['redis_cpu_percent']} | {x['redis_cpu_ms_per_100k']} | "
                f"{x['redis_mib_per_100k_entries']} | {x['zadd_per_second']} | "
                f"{x['nginx_cpu_percent']} |"
            )
            if mem is not None:
                ratio_rows.append(
                    f"| {name} | {r['server']} | "
                    f"{base._ratio(r['ticks_per_second'], mem['ticks_per_second'])} | "
                    f"{base._ratio(r['latency']['p99_ms'], mem['latency']['p99_ms'])} | "
                    f"{base._ratio(r['server_stats']['cpu_us_per_event'], mem['server_stats']['cpu_us_per_event'])} |"
                )
    lines.append("")
    if ratio_rows:
        lines += [
            "## Redis / memory broker (same run)",
            "",
            "CPU us/event: both serving instances together against the one memory-broker server.",
            "",
            "| scenario | run | ticks/s | p99 | serving CPU us/event |",
            "|---|---|---|---|---|",
            *ratio_rows,
            "",
        ]
    if not report.get("nginx", True):
        lines += ["nginx not installed: the load generator split the clients over the two "
                  "instances (latency: the worse of the two runs).", ""]  # fmt: skip
    return "\n".join(lines)
