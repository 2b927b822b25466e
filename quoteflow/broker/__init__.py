"""Fan-out and replay of market events: the broker interface and its implementations.

:class:`MemoryBroker` (one process) is the default; a Redis Streams broker implements
the same :class:`Broker` interface for several server instances.
"""

from __future__ import annotations

from quoteflow.broker.base import (
    ALL_EVENTS,
    Broker,
    BrokerStats,
    CloseReason,
    Delivery,
    EventIdError,
    EventLike,
    Subscription,
    SubscriptionWriter,
)
from quoteflow.broker.memory import MemoryBroker

__all__ = [
    "ALL_EVENTS",
    "Broker",
    "BrokerStats",
    "CloseReason",
    "Delivery",
    "EventIdError",
    "EventLike",
    "MemoryBroker",
    "Subscription",
    "SubscriptionWriter",
]
