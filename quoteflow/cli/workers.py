"""``quoteflow serve --workers N``: one producer, N serving processes on one port.

The parent process (the one the user started) runs the market (or replay, relay) and
numbers every event; N worker processes each run an ordinary quote server with their
own :class:`~quoteflow.broker.memory.MemoryBroker`, fed by the parent over a Unix socket
pair (:mod:`quoteflow.server.link`) with the ids the parent chose. So all workers hand
out the same id for the same event, and each keeps its own replay buffer: a client
that reconnects with ``Last-Event-ID`` resumes on whichever worker the kernel picks,
with no gap and no duplicate. With ``--broker redis://`` the workers are serving-only
Redis instances (ids are the Redis stream's) and the parent produces into Redis when
``--generate`` is given (what ``quoteflow generate`` does).

Port: the parent binds the address first with ``SO_REUSEPORT`` but never listens on it
(so the kernel sends it no connections; it only keeps the port, ``--port 0`` included,
while workers come and go); every worker then binds and listens on the same port with
``SO_REUSEPORT`` and the kernel spreads new connections over the workers' listen
queues.

Lifecycle: the parent prints the URL once every worker listens. A worker that dies is
started again (after a back-off if it keeps dying) with the parent's replay window
(*backlog*), so clients of the dead worker resume on any worker without loss. SIGTERM
or SIGINT to the parent stops the producer, sends SIGTERM to every worker (each drains
its streams as a single server does) and exits 0 once they have exited. A worker whose
parent disappears (link closed) shuts itself down the same way.

Metrics: ``/metrics`` on the public port is the answering worker's own (its
``quoteflow_worker_info`` names it); ``/metrics?aggregate=1`` asks the parent for every
worker's and answers their sum (docs/server.md, "Several workers").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quoteflow.errors import ConfigError
from quoteflow.server.link import Link, LinkReplyError, Payload, encode_frame, read_frame_blocking
from quoteflow.sources import Catalog, MarketEvent, Source
from quoteflow.wire.payload import EncodedBatch, encode_payload, given_ids, pre_encoded

__all__ = [
    "LinkSource",
    "Producer",
    "aggregate_metrics",
    "parse_workers",
    "reserve_port",
    "run_workers",
    "worker_main",
]

log = logging.getLogger(__name__)

#: Bytes the parent may queue for one worker before it is judged stuck and restarted
#: (about 30 s of a 10,000-symbol market at 10 ticks/s; a live worker takes its frames
#: within milliseconds).
MAX_LINK_BACKLOG = 256 * 1024 * 1024
#: Seconds a worker has to listen after it is started.
READY_TIMEOUT = 120.0
#: Seconds the workers have to drain after SIGTERM before they are killed.
DRAIN_TIMEOUT = 20.0
#: Metrics every worker counts for the same events (the feed they all receive), or whose
#: sum means nothing: the aggregate takes their maximum.
_MAX_METRICS = re.compile(
    r"^quoteflow_(events_published|events_dropped|last_event_id|prices_reseeded|"
    r"generation_lag|ticks_skipped)"
)
#: Start times (``*_created``, ``quoteflow_start_time_seconds``): the earliest; broker up: all.
_MIN_METRICS = re.compile(r"(_created|^quoteflow_start_time_seconds|^quoteflow_broker_up)$")


def parse_workers(text: str) -> int:
    """``--workers``: a count ``>= 1``, or ``auto`` (``os.cpu_count()``)."""
    if text.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid worker count {text!r}: give a number >= 1 or 'auto'"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid worker count {text!r}: must be >= 1 or 'auto'")
    return value


def reserve_port(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind ``host:port`` with ``SO_REUSEPORT`` without listening: the port, for the workers.

    A bound socket that does not listen is never handed a connection (the kernel looks
    connections up among listening sockets only), so the parent keeps the port (and
    learns it, for ``port=0``) while its workers listen on it.

    Returns
    -------
    (sockets, port)
        One socket per address ``host`` resolves to, and the port they hold.

    Raises
    ------
    OSError
        The address cannot be bound.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers needs SO_REUSEPORT (Linux, BSD, macOS)")
    held: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        seen: set[tuple[Any, ...]] = set()
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(held) > 1:
                address = (address[0], int(held[0].getsockname()[1]), *address[2:])
            sock.bind(address)
    except OSError as exc:
        for sock in held:
            sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    return held, int(held[0].getsockname()[1])


# ------------------------------------------------------------------------------ metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")


def aggregate_metrics(texts: Sequence[str], workers: int) -> str:
    """Sum Prometheus text expositions of several workers into one.

    Counters, histogram buckets, sums and counts, and additive gauges (connections,
    subscriptions, replay bytes) are summed per series. What every worker counts for the
    same feed (events published and dropped, the last event id) and what has no sum
    (generation lag, broker up) take the maximum (:data:`_MAX_METRICS`); start times
    the minimum;
    ``quoteflow_worker_info`` is replaced by ``quoteflow_workers``, the number of
    workers that answered out of ``workers``.
    """
    order: list[str] = []
    comments: dict[str, list[str]] = {}
    values: dict[str, float] = {}
    family_of: dict[str, str] = {}
    current = ""
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    current = parts[2]
                    if current.startswith("quoteflow_worker_info"):
                        continue
                    block = comments.setdefault(current, [])
                    if line not in block:
                        block.append(line)
                continue
            match = _SAMPLE.match(line)
            if match is None or match.group(1).startswith("quoteflow_worker_info"):
                continue
            key = match.group(1) + (match.group(2) or "")
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            if key not in values:
                order.append(key)
                family_of[key] = current
                values[key] = value
            elif _MAX_METRICS.match(match.group(1)):
                values[key] = max(values[key], value)
            elif _MIN_METRICS.search(match.group(1)):
                values[key] = min(values[key], value)
            else:
                values[key] += value
    out = [
        "# HELP quoteflow_workers Serving processes that answered this aggregate.",
        "# TYPE quoteflow_workers gauge",
        f'quoteflow_workers{{state="answered"}} {float(len(texts))!r}',
        f'quoteflow_workers{{state="configured"}} {float(workers)!r}',
    ]
    written: set[str] = set()
    for key in order:
        family = family_of[key]
        if family not in written:
            written.add(family)
            out.extend(comments.get(family, []))
        out.append(f"{key} {values[key]!r}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- parent: producer


@dataclass(slots=True)
class _Worker:
    index: int
    link: Link | None = None
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, Any]] | None = None
    started: float = 0.0
    failures: int = 0
    reader: asyncio.Task[None] | None = None
    pid: int = 0


@dataclass
class Producer:
    """The parent's half of the memory-broker mode: numbers events, keeps the backlog.

    Ids are those a single :class:`~quoteflow.broker.memory.MemoryBroker` would issue
    (1, 2, 3 ...; an event that cannot be encoded is dropped without using an id; a
    batch with its own ids keeps them, as ``--replay-ids original`` does). The last
    ``buffer_size`` events (not older than ``buffer_age``) are kept to start a worker
    with: the *backlog*.
    """

    source: Source
    buffer_size: int
    buffer_age: float
    clock: Callable[[], float] = time.monotonic
    next_id: int = 1
    dropped: int = 0
    links: dict[int, Link] = field(default_factory=dict)
    #: Called with a worker number whose link is stuck (the supervisor restarts it).
    on_stuck: Callable[[int], None] = lambda index: None
    _ring: collections.deque[tuple[int, str, str, str, float]] = field(
        default_factory=collections.deque
    )
    _n_symbols: int = -1

    def catalog(self) -> dict[str, Any]:
        """What a worker needs to answer ``/symbols`` and ``/history`` for the source."""
        source = self.source
        symbols = list(source.symbols)
        self._n_symbols = len(symbols)
        return {
            "symbols": symbols,
            "describe": source.describe(),
            "bar_interval": source.bar_interval,
            "symbols_known": source.symbols_known,
        }

    def backlog(self) -> tuple[list[int], list[str], list[str], list[str]]:
        """The replay window as parallel lists (ids, kinds, symbols, texts)."""
        self._evict()
        ring = self._ring
        return (
            [e[0] for e in ring],
            [e[1] for e in ring],
            [e[2] for e in ring],
            [e[3] for e in ring],
        )

    def _evict(self) -> None:
        ring = self._ring
        oldest = self.clock() - self.buffer_age
        while ring and (len(ring) > self.buffer_size or ring[0][4] < oldest):
            ring.popleft()

    def publish(self, batch: Sequence[Any]) -> None:
        """Number ``batch``, keep it in the backlog and send it to every live worker."""
        ids_given = given_ids(batch)
        encoded = pre_encoded(batch)
        n_encoded = len(encoded)
        ids: list[int] = []
        kinds: list[str] = []
        syms: list[str] = []
        texts: list[str] = []
        now = self.clock()
        ring = self._ring
        next_id = self.next_id
        for i, ev in enumerate(batch):
            data = ev.data
            text: str | None = None
            if i < n_encoded and encoded[i][0] is data:
                text = encoded[i][1]
            if text is None:
                try:
                    text = encode_payload(data)
                except (TypeError, ValueError) as exc:
                    self.dropped += 1
                    log.warning(
                        "dropping unencodable %s event for %r: %s", ev.event, ev.symbol, exc
                    )
                    continue
            if ids_given is not None and i < len(ids_given):
                if ids_given[i] < next_id:
                    self.dropped += 1
                    continue
                next_id = ids_given[i]
            ids.append(next_id)
            kinds.append(ev.event)
            syms.append(ev.symbol)
            texts.append(text)
            ring.append((next_id, ev.event, ev.symbol, text, now))
            next_id += 1
        self.next_id = next_id
        if len(ring) > self.buffer_size:
            self._evict()
        if not ids:
            return
        source = self.source
        state = (source.lag_seconds, source.ticks_skipped, source.prices_reseeded)
        frame = encode_frame(("batch", ids, kinds, syms, texts, state))
        catalog = None
        if len(source.symbols) != self._n_symbols:  # a relay learns symbols as they come
            catalog = encode_frame(("catalog", self.catalog()))
        for index, link in list(self.links.items()):
            if catalog is not None:
                link.send_frame(catalog)
            link.send_frame(frame)
            if link.buffered > MAX_LINK_BACKLOG:
                log.error(
                    "worker %d does not read its feed (%d bytes queued)", index, link.buffered
                )
                self.on_stuck(index)

    def broadcast(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` to every live worker."""
        frame = encode_frame(message)
        for link in self.links.values():
            link.send_frame(frame)


class Supervisor:
    """Starts, watches, restarts and stops the workers (the parent's main object).

    Parameters
    ----------
    args : argparse.Namespace
        The ``serve`` options (sent to every worker).
    workers : int
        How many serving processes.
    port : int
        The port the parent reserved.
    producer : Producer or None
        Memory mode: the producer that feeds the workers; None with Redis.
    """

    def __init__(
        self, args: argparse.Namespace, workers: int, port: int, producer: Producer | None
    ) -> None:
        self.args = args
        self.port = port
        self.producer = producer
        self.workers = [_Worker(i) for i in range(workers)]
        self.stopping = False
        self.restarts = 0
        self._watchers: list[asyncio.Task[None]] = []
        if producer is not None:
            producer.on_stuck = self._kill

    def _hello(self, worker: _Worker) -> dict[str, Any]:
        hello: dict[str, Any] = {
            "index": worker.index,
            "workers": len(self.workers),
            "args": self.args,
            "port": self.port,
            "mode": "memory" if self.producer is not None else "redis",
        }
        if self.producer is not None:
            hello["catalog"] = self.producer.catalog()
            hello["backlog"] = self.producer.backlog()
            hello["next_id"] = self.producer.next_id
        return hello

    async def _spawn(self, worker: _Worker) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "quoteflow.cli.workers",
                str(child_end.fileno()),
                pass_fds=(child_end.fileno(),),
                # Its own process group: a Ctrl-C reaches the parent only, which then
                # stops the workers in order (no worker restarted while stopping).
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child_end.close()
        worker.process = process
        worker.pid = process.pid
        worker.started = time.monotonic()
        worker.ready = asyncio.get_running_loop().create_future()
        link = await Link.open(parent_end)
        # The hello (with the backlog) and joining the live set happen with no await in
        # between: the worker gets every event exactly once.
        link.send(("hello", self._hello(worker)))
        worker.link = link
        if self.producer is not None:
            self.producer.links[worker.index] = link
        worker.reader = asyncio.get_running_loop().create_task(self._read(worker, link))

    async def _read(self, worker: _Worker, link: Link) -> None:
        try:
            while True:
                message = await link.read()
                kind = message[0]
                if kind == "ready":
                    if worker.ready is not None and not worker.ready.done():
                        worker.ready.set_result(message[1])
                elif kind == "reply":
                    link.answered(*message[1:4])
                elif kind == "ask":
                    asyncio.get_running_loop().create_task(self._answer(link, *message[1:]))
        except (ConnectionError, OSError):
            pass
        finally:
            link.fail_waiting()

    async def _answer(self, link: Link, n: int, what: str, *rest: Any) -> None:
        value: Any = None
        error: str | None = None
        try:
            if what == "update":
                value = await self._update(*rest)
            elif what == "metrics":
                value = await self._metrics()
            else:
                error = f"unknown request {what!r}"
        except ConfigError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("answering a worker's %s request failed", what)
            error = f"{type(exc).__name__}: {exc}"
        link.send(("reply", n, value, error))

    async def _update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        producer = self.producer
        if producer is None:
            raise ConfigError("no producer in this process")
        value = await producer.source.aupdate(symbol, params)
        producer.broadcast(("catalog", producer.catalog()))
        return value

    async def _metrics(self) -> str:
        live = [w for w in self.workers if w.link is not None]

        async def one(w: _Worker) -> str | None:
            assert w.link is not None
            with contextlib.suppress(ConnectionError, LinkReplyError):
                text: str = await w.link.ask("metrics", timeout=3.0)
                return text
            return None

        texts = [t for t in await asyncio.gather(*(one(w) for w in live)) if t is not None]
        return aggregate_metrics(texts, len(self.workers))

    def _kill(self, index: int) -> None:
        worker = self.workers[index]
        if worker.process is not None and worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

    def _forget(self, worker: _Worker) -> None:
        if self.producer is not None:
            self.producer.links.pop(worker.index, None)
        if worker.link is not None:
            worker.link.close()
            worker.link = None

    async def start(self) -> dict[str, Any]:
        """Start every worker; return the first one's ready report once all listen.

        Raises
        ------
        ConfigError
            A worker exited before it listened (its own error is on stderr above).
        """
        for worker in self.workers:
            await self._spawn(worker)
        reports: list[dict[str, Any]] = []
        for worker in self.workers:
            reports.append(await self._wait_ready(worker))
        for worker in self.workers:
            self._watchers.append(asyncio.get_running_loop().create_task(self._watch(worker)))
        return reports[0]

    async def _wait_ready(self, worker: _Worker) -> dict[str, Any]:
        assert worker.ready is not None and worker.process is not None
        exited: asyncio.Future[Any] = asyncio.ensure_future(worker.process.wait())
        waiting: set[asyncio.Future[Any]] = {worker.ready, exited}
        done, _ = await asyncio.wait(
            waiting, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if worker.ready in done:
            exited.cancel()
            report: dict[str, Any] = worker.ready.result()
            return report
        exited.cancel()
        if not done:
            raise ConfigError(f"worker {worker.index} did not listen within {READY_TIMEOUT:g} s")
        raise ConfigError(
            f"worker {worker.index} exited with status {worker.process.returncode} before it "
            "listened (its error is above)"
        )

    async def _watch(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it exits, until the supervisor stops."""
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            self._forget(worker)
            lived = time.monotonic() - worker.started
            worker.failures = worker.failures + 1 if lived < 5.0 else 0
            delay = min(0.25 * 2 ** max(worker.failures - 1, 0), 10.0) if worker.failures else 0
            log.warning(
                "worker %d (pid %d) exited with status %s after %.1f s; starting it again%s",
                worker.index,
                worker.pid,
                code,
                lived,
                f" in {delay:g} s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)
            if self.stopping:
                return
            await self._spawn(worker)
            self.restarts += 1
            with contextlib.suppress(ConfigError):
                await self._wait_ready(worker)

    async def stop(self, timeout: float = DRAIN_TIMEOUT) -> list[int | None]:
        """SIGTERM every worker, wait for them (SIGKILL after ``timeout``); exit codes."""
        self.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        procs = [w.process for w in self.workers if w.process is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout)
        except TimeoutError:
            log.warning("workers still running %g s after SIGTERM: killing them", timeout)
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.cancel()
            self._forget(worker)
        return [p.returncode for p in procs]


def run_workers(args: argparse.Namespace, workers: int) -> int:
    """``quoteflow serve --workers N`` (N >= 2): the parent process, until SIGTERM/SIGINT.

    Parameters
    ----------
    args : argparse.Namespace
        The ``serve`` options (already checked by the caller's settings).
    workers : int
        Number of serving processes.

    Returns
    -------
    int
        0 once every worker has drained and exited; 1 if one did not exit cleanly.
    """
    from quoteflow.cli import serve
    from quoteflow.cli._source import build_source
    from quoteflow.server.runner import run_until_signal

    if getattr(args, "scenario", None):
        raise ConfigError(
            "--scenario needs --workers 1: a scenario's transport faults act on one "
            "server's streams"
        )
    settings = serve._cap_connections(serve._settings(args))
    if settings.metrics_policy == "listener":
        raise ConfigError(
            "--metrics-access listener needs --workers 1: with several workers, scrape "
            "/metrics?aggregate=1 on the main port (--metrics-access open or token)"
        )
    args = copy.copy(args)
    args.max_connections = settings.max_connections
    memory = args.broker in (None, "", "memory")
    held, port = reserve_port(args.host, args.port)
    producer: Producer | None = None
    redis_producer: Any = None
    source: Source | None = None
    if memory:
        if getattr(args, "generate", False):
            raise ConfigError(
                "--generate needs --broker redis://...: the memory broker always generates"
            )
        built = build_source(args)
        source = built
        producer = Producer(built, args.buffer_size, args.buffer_age)
    elif getattr(args, "generate", False):
        source = build_source(args)
    else:
        serve._check_serve_only(args)
    worker_args = copy.copy(args)
    worker_args.generate = False
    worker_args.workers = 1
    supervisor = Supervisor(worker_args, workers, port, producer)
    pump: asyncio.Task[None] | None = None
    codes: list[int | None] = []

    async def start() -> None:
        nonlocal pump, redis_producer
        if not memory and source is not None:
            redis_producer = await _start_redis_producer(args, source)
        report = await supervisor.start()
        host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        print(
            f"quoteflow serving {report['symbols']} symbols on {base} (dashboard), stream at "
            f"{base}stream ({workers} workers)",
            flush=True,
        )
        if producer is not None:
            pump = asyncio.get_running_loop().create_task(_pump(producer))

    async def stop() -> None:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        codes.extend(await supervisor.stop())
        if redis_producer is not None:
            await redis_producer.shutdown(timeout=1.0)
            await redis_producer.close_broker()
        if source is not None:
            await source.aclose()
        for sock in held:
            sock.close()

    async def main() -> None:
        await run_until_signal(start, stop, stopping="stopping the workers")

    asyncio.run(main())
    bad = [c for c in codes if c != 0]
    if bad:
        log.warning("%d of %d workers did not exit cleanly: %s", len(bad), len(codes), bad)
        return 1
    return 0


async def _pump(producer: Producer) -> None:
    try:
        async for batch in producer.source.batches():
            producer.publish(batch)
        log.info("source ended; streams stay open (heartbeats only)")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("source failed; streams stay open but no new events arrive")


async def _start_redis_producer(args: argparse.Namespace, source: Source) -> Any:
    """``--broker redis:// --generate``: produce into Redis as ``quoteflow generate`` does."""
    from quoteflow.broker.factory import broker_from_url
    from quoteflow.server.app import make_app

    broker = broker_from_url(str(args.broker), produce=True, consume=False)
    state = make_app(source, broker, streams=False).settings["quoteflow"]
    await state.start()
    return state


# ------------------------------------------------------------------------- worker side


class LinkSource(Source):
    """A worker's source (memory mode): the parent's batches, with the parent's ids.

    Symbols and parameters are the parent's catalog (sent at start and on every change);
    ``PUT /symbols`` is forwarded to the parent; the price in ``/symbols`` is the latest
    tick this worker has seen.
    """

    def __init__(self, catalog: Mapping[str, Any], broker: Any) -> None:
        self._catalog = dict(catalog)
        self.bar_interval = catalog.get("bar_interval")
        self._broker = broker
        self.link: Link | None = None
        self.queue: asyncio.Queue[EncodedBatch[MarketEvent] | None] = asyncio.Queue()

    def set_catalog(self, catalog: Mapping[str, Any]) -> None:
        """A new catalog from the parent."""
        self._catalog = dict(catalog)
        self.bar_interval = catalog.get("bar_interval")

    @property
    def symbols(self) -> list[str]:
        """The parent's symbols."""
        return list(self._catalog.get("symbols", []))

    @property
    def symbols_known(self) -> bool:
        """As the parent's source says."""
        return bool(self._catalog.get("symbols_known", True))

    def describe(self) -> dict[str, dict[str, Any]]:
        """The parent's description, with this worker's latest prices."""
        out: dict[str, dict[str, Any]] = copy.deepcopy(self._catalog.get("describe", {}))
        latest = self._broker.snapshot()
        for symbol, entry in out.items():
            tick = latest.get(symbol)
            if tick is not None and "price" in tick:
                entry["price"] = tick["price"]
        return out

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Always raises: a worker's changes go to the parent (:meth:`aupdate`)."""
        raise ConfigError("a worker forwards parameter changes to its parent (aupdate)")

    async def aupdate(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the change in the parent (which tells every worker the new catalog)."""
        if self.link is None:
            raise ConnectionError("not connected to the producer yet")
        try:
            value: dict[str, Any] = await self.link.ask("update", symbol, dict(params))
        except LinkReplyError as exc:
            raise ConfigError(str(exc)) from None
        # The parent sent the new catalog before this reply, on the same socket: it is
        # already applied here.
        return value

    async def batches(self) -> Any:
        """Yield the parent's batches as they arrive (ended when the link closes)."""
        while True:
            batch = await self.queue.get()
            if batch is None:
                return
            yield batch


def batch_of(
    ids: list[int], kinds: list[str], syms: list[str], texts: list[str]
) -> EncodedBatch[MarketEvent]:
    """A batch from the link's parallel lists: events with lazy payloads and given ids."""
    events: list[MarketEvent] = []
    pairs: list[tuple[Any, str]] = []
    for kind, sym, text in zip(kinds, syms, texts, strict=True):
        payload = Payload(text)
        events.append(MarketEvent(kind, sym, payload))  # type: ignore[arg-type]
        pairs.append((payload, text))
    return EncodedBatch(events, pairs, list(ids))


async def _worker_link(sock: socket.socket, source: LinkSource | None, server: Any) -> None:
    """The worker's end of the link: feed, catalog, requests; shut down when it closes."""
    link = await Link.open(sock)
    if source is not None:
        source.link = link
    state = server.state
    state.metrics_aggregate = lambda: link.ask("metrics", timeout=10.0)
    link.send(
        ("ready", {"instance": state.settings.instance, "symbols": len(state.source.symbols)})
    )
    try:
        while True:
            message = await link.read()
            kind = message[0]
            if kind == "batch" and source is not None:
                _, ids, kinds, syms, texts, source_state = message
                source.lag_seconds, source.ticks_skipped, source.prices_reseeded = source_state
                source.queue.put_nowait(batch_of(ids, kinds, syms, texts))
            elif kind == "catalog" and source is not None:
                source.set_catalog(message[1])
            elif kind == "reply":
                link.answered(*message[1:4])
            elif kind == "ask":
                n, what = message[1], message[2]
                if what == "metrics":
                    link.send(("reply", n, state.metrics.render().decode(), None))
                else:
                    link.send(("reply", n, None, f"unknown request {what!r}"))
    except (ConnectionError, OSError):
        if not state.closing:
            log.warning("the parent process is gone: shutting down")
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        link.close()
        if source is not None:
            source.queue.put_nowait(None)


def _worker_info(registry: Any, index: int, instance: str) -> None:
    """``quoteflow_worker_info{worker, instance} 1``: which worker's ``/metrics`` this is."""
    from prometheus_client import Gauge

    Gauge(
        "quoteflow_worker_info",
        "This process is worker WORKER (0-based) of quoteflow serve --workers N.",
        ["worker", "instance"],
        registry=registry,
    ).labels(str(index), instance).set(1)


def worker_main(argv: Sequence[str]) -> int:
    """A worker process: ``python -m quoteflow.cli.workers FD`` (started by the parent)."""
    from quoteflow.cli import serve
    from quoteflow.server.logs import configure_logging
    from quoteflow.server.runner import run_server

    sock = socket.socket(fileno=int(argv[0]))
    sock.setblocking(True)
    kind, hello = read_frame_blocking(sock)
    if kind != "hello":
        raise ConnectionError(f"expected a hello from the parent, got {kind!r}")
    args: argparse.Namespace = hello["args"]
    index = int(hello["index"])
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    if getattr(args, "instance_id", None):
        args.instance_id = f"{args.instance_id}-w{index}"
    # The parent already lowered --max-connections to what one process's open-file limit
    # holds; this raises this process's own soft limit the same way (silently).
    settings = serve._cap_connections(serve._settings(args))
    source: Catalog
    link_source: LinkSource | None = None
    if hello["mode"] == "memory":
        from quoteflow.broker.memory import MemoryBroker

        broker: Any = MemoryBroker(
            buffer_size=args.buffer_size,
            buffer_age=args.buffer_age,
            max_backlog_bytes=args.max_backlog,
            replay_memory_bytes=args.replay_memory,
        )
        ids, kinds, syms, texts = hello["backlog"]
        if ids:
            broker.publish(batch_of(ids, kinds, syms, texts))
        link_source = LinkSource(hello["catalog"], broker)
        source = link_source
    else:
        broker = serve._broker(args)
        remote = broker.remote_catalog()
        assert remote is not None
        source = remote

    def ready(server: Any) -> None:
        _worker_info(server.state.metrics.registry, index, settings.instance)
        asyncio.get_running_loop().create_task(_worker_link(sock, link_source, server))

    return run_server(
        source,
        host=args.host,
        port=int(hello["port"]),
        reuse_port=True,
        on_ready=ready,
        broker=broker,
        settings=settings,
        idle_connection_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        history=serve._history(args),
    )


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
