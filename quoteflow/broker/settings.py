"""Defaults of the brokers' bounds, written once.

The brokers' constructors, :class:`quoteflow.server.runner.QuoteServer` and the
``quoteflow serve`` / ``quoteflow generate`` options all take their defaults from these
dataclasses, so a default changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BufferSettings", "RedisSettings"]


@dataclass(frozen=True)
class BufferSettings:
    """Bounds of a broker's replay log and of each subscriber.

    Attributes
    ----------
    buffer_size : int
        Events kept for ``Last-Event-ID`` resume.
    buffer_age : float
        Seconds the oldest replayable event may be old.
    max_backlog_bytes : int
        Unsent bytes after which a slow subscriber is disconnected.
    replay_memory_bytes : int
        Replay bytes in flight to all resuming subscribers together.
    """

    buffer_size: int = 100_000
    buffer_age: float = 300.0
    max_backlog_bytes: int = 1 << 20
    replay_memory_bytes: int = 64 << 20


@dataclass(frozen=True)
class RedisSettings:
    """Bounds of the Redis producer and consumer.

    Attributes
    ----------
    maxlen : int
        Approximate cap of the Redis stream (``XADD MAXLEN ~``).
    outbox_size : int
        Events a producer keeps while Redis is unreachable.
    catch_up_timeout : float
        Seconds a resume ahead of this instance waits for the id to arrive.
    """

    maxlen: int = 100_000
    outbox_size: int = 100_000
    catch_up_timeout: float = 5.0
