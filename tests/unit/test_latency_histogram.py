"""LatencyHistogram: the bulk histogram behind quoteflow_delivery_latency_seconds."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.registry import Collector

from quoteflow.server.metrics import LatencyHistogram

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _exposition(collector: Collector) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    return [ln for ln in lines if "_bucket" in ln or "_count" in ln]


class _One(Collector):
    def __init__(self, hist: LatencyHistogram) -> None:
        self.hist = hist

    def collect(self):  # type: ignore[no-untyped-def]
        yield self.hist.family("lat_seconds", "latency")


def test_bulk_and_single_samples_bucket_exactly_like_prometheus_client() -> None:
    rng = np.random.default_rng(7)
    # Samples on every bound (the "le" edge), between them, and beyond the last one;
    # batches on both sides of the numpy threshold.
    samples = [*BOUNDS, *(b * 1.000001 for b in BOUNDS), 20.0, 0.0]
    samples += list(rng.lognormal(-4.0, 2.0, 500))
    ref_registry = CollectorRegistry(auto_describe=False)
    ref = Histogram("lat_seconds", "latency", buckets=BOUNDS, registry=ref_registry)
    ours = LatencyHistogram(BOUNDS)
    for x in samples:
        ref.observe(x)
    ours.observe(samples[0])
    ours.observe_many(samples[1:10])  # bisect path
    ours.observe_many(samples[10:])  # numpy path
    assert len(samples[10:]) >= LatencyHistogram.NUMPY_FROM > len(samples[1:10])
    expected = [
        ln
        for ln in generate_latest(ref_registry).decode().splitlines()
        if "_bucket" in ln or "_count" in ln
    ]
    assert _exposition(_One(ours)) == expected
    assert ours.count == len(samples)
    assert abs(ours.sum - sum(samples)) <= 1e-9 * sum(samples)


def test_empty_histogram_exports_zero_buckets() -> None:
    hist = LatencyHistogram(BOUNDS)
    hist.observe_many([])
    assert hist.count == 0
    assert [n for _, n in hist.cumulative()] == [0] * (len(BOUNDS) + 1)
