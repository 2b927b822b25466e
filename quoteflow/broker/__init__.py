"""Fan-out and replay of market events: the broker interface and its implementations.

:class:`MemoryBroker` (one process) is the default; a Redis Streams broker
(:mod:`quoteflow.broker.redis`) implements the same :class:`Broker` interface for several
server instances. Both are built around one :class:`LocalFanout` (replay log, groups,
subscriptions; :mod:`quoteflow.broker.fanout`). :func:`broker_from_url` picks one from a
``--broker`` URL.
"""

from __future__ import annotations

from quoteflow.broker.base import (
    ALL_EVENTS,
    BackendLink,
    Broker,
    BrokerStats,
    CloseReason,
    Delivery,
    EventIdError,
    EventLike,
    Framing,
    Subscription,
    SubscriptionWriter,
)
from quoteflow.broker.factory import broker_from_url
from quoteflow.broker.fanout import LocalFanout
from quoteflow.broker.memory import MemoryBroker

__all__ = [
    "ALL_EVENTS",
    "BackendLink",
    "Broker",
    "BrokerStats",
    "CloseReason",
    "Delivery",
    "EventIdError",
    "EventLike",
    "Framing",
    "LocalFanout",
    "MemoryBroker",
    "Subscription",
    "SubscriptionWriter",
    "broker_from_url",
]
