"""SSE fan-out benchmark: the Go load generator and the driver (``python -m benchmarks.fanout.run``)."""
