"""deploy/prometheus and deploy/grafana: promtool accepts the config and the rules, the
rules' unit tests pass, and the dashboard is well-formed JSON whose queries use only the
series quoteflow exports. (Each panel query is run against a real Prometheus in
tests/integration/test_prometheus.py.)
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT, require_executable

PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "quoteflow.json"

#: Every metric family /metrics exports (quoteflow/server/metrics.py).
EXPORTED = {
    "quoteflow_events_delivered_total",
    "quoteflow_bytes_sent_total",
    "quoteflow_events_published_total",
    "quoteflow_slow_consumer_disconnects_total",
    "quoteflow_replays_total",
    "quoteflow_replayed_events_total",
    "quoteflow_resets_total",
    "quoteflow_events_dropped_total",
    "quoteflow_connections",
    "quoteflow_subscriptions",
    "quoteflow_last_event_id",
    "quoteflow_broker_up",
    "quoteflow_broker_outages_total",
    "quoteflow_broker_outbox_events",
    "quoteflow_generation_lag_seconds",
    "quoteflow_streams_opened_total",
    "quoteflow_streams_rejected_total",
    "quoteflow_heartbeats_total",
    "quoteflow_delivery_latency_seconds_bucket",
    "quoteflow_delivery_latency_seconds_count",
    "quoteflow_delivery_latency_seconds_sum",
    "quoteflow_http_errors_total",
    "quoteflow_start_time_seconds",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_executable("promtool", "prometheus")
    return subprocess.run(
        [promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    proc = _promtool(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", (PROM / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    assert alerts == {
        "QuoteflowInstanceDown",
        "QuoteflowDeliveryLatencyHigh",
        "QuoteflowSlowConsumerDrops",
        "QuoteflowGeneratorLagging",
        "QuoteflowRedisDegraded",
    }
    assert alerts <= tested, alerts - tested


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bquoteflow_[a-z_]+", expr))


def test_dashboard_is_valid_and_covers_what_operators_watch() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for p in panels:
        assert p["title"] and p["targets"], p
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"]
            used |= _metrics_in(t["expr"])
    assert used <= EXPORTED, used - EXPORTED
    for needed in (
        "quoteflow_connections",
        "quoteflow_events_published_total",
        "quoteflow_events_delivered_total",
        "quoteflow_delivery_latency_seconds_bucket",
        "quoteflow_slow_consumer_disconnects_total",
        "quoteflow_replays_total",
    ):
        assert needed in used, needed
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "by (instance" in exprs  # per-instance series
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "instance"}


def test_alert_rules_use_exported_series() -> None:
    text = (PROM / "alerts.yml").read_text()
    assert _metrics_in(text) <= EXPORTED, _metrics_in(text) - EXPORTED
