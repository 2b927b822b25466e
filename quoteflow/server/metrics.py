"""Prometheus metrics of one server (one app, one registry).

Each app gets its own :class:`prometheus_client.CollectorRegistry` (never the global
default: tests and notebooks create many apps in one process). Two kinds of metric:

- counted by the handlers, per write (not per event and client): connections, events and
  bytes delivered, delivery latency (sampled once per wake-up);
- read at scrape time from the broker's plain integer counters and from the source by a
  custom collector, so the publish hot path pays no Prometheus locking.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from quoteflow.broker.base import BackendLink

if TYPE_CHECKING:
    from quoteflow.broker.base import Broker
    from quoteflow.sources import Catalog

__all__ = ["CONTENT_TYPE", "LatencyHistogram", "ServerMetrics"]

#: Content type of the Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Delivery latency runs from sub-millisecond (idle server, loopback) to seconds (a
# client behind a slow link): log-spaced buckets cover both ends.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class LatencyHistogram:
    """A Prometheus histogram that takes its samples in bulk, without a lock.

    ``prometheus_client.Histogram.observe`` takes a lock and scans the buckets, about
    1 us a sample: at 10,000 writes per publish that is 10 ms of CPU per tick, 6.5 % of
    the server's time in S3 (benchmarks/README.md). The writers hand their samples over
    once per event-loop iteration (:meth:`observe_many`); a large batch is bucketed with
    one ``numpy.searchsorted``. Exported by the registry's collector with Prometheus'
    histogram semantics: bucket ``le=b`` counts samples ``<= b`` (cumulative), plus
    ``+Inf``, ``_count`` and ``_sum``. Only the event-loop thread observes; a scrape
    from another thread may see a batch half added (never a torn integer).

    Parameters
    ----------
    bounds : sequence of float
        Increasing finite upper bounds of the buckets.
    """

    __slots__ = ("_bounds", "_counts", "_np_bounds", "sum")

    #: Batches at least this long are bucketed with numpy (below, bisect is faster).
    NUMPY_FROM = 64

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        self._np_bounds = np.asarray(self._bounds)
        #: Samples per bucket, not cumulative; the last one is above every bound.
        self._counts = [0] * (len(self._bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Add one sample."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self.sum += seconds

    def observe_many(self, samples: Sequence[float]) -> None:
        """Add every sample of ``samples``."""
        counts = self._counts
        if len(samples) >= self.NUMPY_FROM:
            arr = np.asarray(samples, dtype=float)
            # side="left": index i has bounds[i-1] < x <= bounds[i], Prometheus' "le".
            per = np.bincount(
                np.searchsorted(self._np_bounds, arr, side="left"), minlength=len(counts)
            )
            for i, n in enumerate(per.tolist()):
                counts[i] += n
            self.sum += float(arr.sum())
            return
        bounds = self._bounds
        for x in samples:
            counts[bisect_left(bounds, x)] += 1
        self.sum += sum(samples)

    @property
    def count(self) -> int:
        """Number of samples."""
        return sum(self._counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, samples <= bound)`` per bucket, ``inf`` last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram as a metric family, for a collector."""
        buckets = self.cumulative()
        return HistogramMetricFamily(
            name,
            documentation,
            # prometheus_client ships no annotation for it; the label text must be its own.
            buckets=[(floatToGoString(b), n) for b, n in buckets],  # type: ignore[no-untyped-call]
            sum_value=self.sum,
        )


class _BrokerCollector(Collector):
    """Reads broker and source state when Prometheus scrapes."""

    def __init__(
        self, owner: ServerMetrics, broker: Broker, source: Catalog, connections: Callable[[], int]
    ) -> None:
        self._owner = owner
        self._broker = broker
        self._source = source
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "quoteflow_events_delivered",
            "Events written to client sockets (summed per write, replays included).",
            value=self._owner.events_delivered,
        )
        yield CounterMetricFamily(
            "quoteflow_bytes_sent",
            "SSE bytes written to client sockets (events, heartbeats, retry lines).",
            value=self._owner.bytes_sent,
        )
        yield self._owner.delivery_latency.family(
            "quoteflow_delivery_latency_seconds",
            "Time from publish to the end of the socket write, sampled once per write "
            "(the oldest event of the write).",
        )
        stats = self._broker.stats
        published = CounterMetricFamily(
            "quoteflow_events_published",
            "Events published by the source into the broker, by event type.",
            labels=["event"],
        )
        for event, n in sorted(stats.published.items()):
            published.add_metric([event], n)
        yield published
        yield CounterMetricFamily(
            "quoteflow_slow_consumer_disconnects",
            "Streams closed because their unsent backlog exceeded --max-backlog.",
            value=stats.slow_consumer_disconnects,
        )
        yield CounterMetricFamily(
            "quoteflow_replays",
            "Resumed streams served from the replay buffer (Last-Event-ID).",
            value=stats.replays,
        )
        yield CounterMetricFamily(
            "quoteflow_replayed_events",
            "Events re-sent from the replay buffer to resuming streams.",
            value=stats.replayed_events,
        )
        yield GaugeMetricFamily(
            "quoteflow_replay_bytes_in_flight",
            "Replay bytes taken from the buffer and not yet written (bounded by --replay-memory).",
            value=stats.replay_bytes_in_flight,
        )
        yield CounterMetricFamily(
            "quoteflow_replay_waits",
            "Times a resuming stream waited for --replay-memory to free up.",
            value=stats.replay_waits,
        )
        yield CounterMetricFamily(
            "quoteflow_resets",
            "Resumes that could not be served (id evicted or unknown): event 'reset' sent.",
            value=stats.resets,
        )
        yield CounterMetricFamily(
            "quoteflow_events_dropped",
            "Events the broker could not encode (NaN, non-JSON values) and dropped.",
            value=stats.dropped,
        )
        yield GaugeMetricFamily(
            "quoteflow_connections",
            "Open SSE streams.",
            value=self._connections(),
        )
        yield GaugeMetricFamily(
            "quoteflow_subscriptions",
            "Live broker subscriptions.",
            value=self._broker.subscriber_count,
        )
        last = self._broker.last_id
        # Memory ids are integers; a Redis id "ms-n" is shown by its time part.
        try:
            last_value = float(last.split("-", 1)[0]) if last else 0.0
        except ValueError:
            last_value = 0.0
        yield GaugeMetricFamily(
            "quoteflow_last_event_id",
            "Id of the newest published event (0 before the first).",
            value=last_value,
        )
        # Brokers with I/O (Redis) report their link: up/down and how many outages so far.
        broker = self._broker
        if isinstance(broker, BackendLink):
            yield GaugeMetricFamily(
                "quoteflow_broker_up",
                "1 while the broker's backend (Redis) answers, 0 during an outage.",
                value=1.0 if broker.healthy else 0.0,
            )
            yield CounterMetricFamily(
                "quoteflow_broker_outages",
                "Times the broker lost its backend (Redis) since start.",
                value=int(broker.outages),
            )
            yield GaugeMetricFamily(
                "quoteflow_broker_outbox_events",
                "Producer: events waiting to be written to Redis (grows during an outage).",
                value=broker.outbox_size,
            )
        yield CounterMetricFamily(
            "quoteflow_prices_reseeded",
            "Prices the market restarted at their last quote because the model drove them "
            "out of the streamable range or made them non-finite (the price guard).",
            value=int(self._source.prices_reseeded),
        )
        yield GaugeMetricFamily(
            "quoteflow_generation_lag_seconds",
            "How late the source's latest batch was against its wall-clock deadline.",
            value=float(self._source.lag_seconds),
        )


class ServerMetrics:
    """The metrics of one app, in their own registry.

    Parameters
    ----------
    broker : Broker
        Read at scrape time.
    source : Catalog
        Its ``lag_seconds`` is exported as the generation lag.
    connections : callable
        Returns the number of open streams.
    """

    def __init__(self, broker: Broker, source: Catalog, connections: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_BrokerCollector(self, broker, source, connections))
        self.streams_opened = Counter(
            "quoteflow_streams_opened",
            "SSE streams accepted.",
            registry=self.registry,
        )
        self.streams_rejected = Counter(
            "quoteflow_streams_rejected",
            "SSE stream requests refused, by reason.",
            labelnames=["reason"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "quoteflow_connections_refused",
            "Connections answered with 503 before any request was read, by reason "
            "(open_files: the process was at its open-file limit).",
            labelnames=["reason"],
            registry=self.registry,
        )
        #: Plain ints bumped once per socket write (cheaper than a locked Counter at
        #: 10k streams); exported by the collector at scrape time.
        self.events_delivered = 0
        self.bytes_sent = 0
        self.heartbeats = Counter(
            "quoteflow_heartbeats",
            "Keepalive comments queued on idle streams.",
            registry=self.registry,
        )
        #: Exported by the collector as ``quoteflow_delivery_latency_seconds``.
        self.delivery_latency = LatencyHistogram(_LATENCY_BUCKETS)
        self.http_errors = Counter(
            "quoteflow_http_errors",
            "Error responses sent, by status code.",
            labelnames=["code"],
            registry=self.registry,
        )
        self.uptime_start = Gauge(
            "quoteflow_start_time_seconds",
            "Unix time at which the app was created.",
            registry=self.registry,
        )
        self.uptime_start.set_to_current_time()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
