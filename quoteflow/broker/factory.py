"""One place that turns a ``--broker`` URL into a broker.

The server, the command line and the notebook name brokers by URL only; this is the
only module that chooses a concrete class (mercure's transport factory does the same).
"""

from __future__ import annotations

from typing import Any

from quoteflow.broker.base import Broker
from quoteflow.errors import ConfigError

__all__ = ["REDIS_SCHEMES", "broker_from_url"]

#: URL schemes of a Redis server (TCP, TLS, Unix socket).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def broker_from_url(
    url: str | None,
    *,
    produce: bool = True,
    consume: bool = True,
    given_ids: bool = False,
    **options: Any,
) -> Broker:
    """The broker for ``url``: ``None``, ``""`` or ``"memory"`` -> in-process, else Redis.

    Parameters
    ----------
    url : str or None
        ``"memory"`` (or None/empty) for :class:`~quoteflow.broker.memory.MemoryBroker`,
        ``redis://host:port/db`` (``rediss://``, ``unix://``) for
        :class:`~quoteflow.broker.redis.RedisBroker`.
    produce, consume : bool
        Redis only: whether this process publishes to the stream, and whether it reads
        it to serve clients. A memory broker always does both.
    given_ids : bool
        The source brings its own ids (``quoteflow serve --replay F --replay-ids
        original``); only the memory broker publishes them
        (:attr:`~quoteflow.wire.payload.EncodedBatch.ids`).
    **options
        Bounds passed to the broker (``buffer_size``, ``buffer_age``,
        ``max_backlog_bytes``, ``replay_memory_bytes``; Redis also ``maxlen``,
        ``outbox_size``, ``catch_up_timeout``, ...).

    Raises
    ------
    ConfigError
        An unknown scheme, ``produce=False`` with the memory broker, ``given_ids``
        with Redis, or the Redis
        client library is not installed; each message says what to do.
    """
    if url in (None, "", "memory"):
        if not produce:
            raise ConfigError(
                "--generate needs --broker redis://...: the memory broker always generates"
            )
        from quoteflow.broker.memory import MemoryBroker

        memory_options = {k: v for k, v in options.items() if k in _MEMORY_OPTIONS}
        return MemoryBroker(**memory_options)
    assert url is not None
    if given_ids:
        raise ConfigError(
            f"--replay-ids original needs --broker memory, not {url}: Redis assigns stream "
            "ids itself (one id space shared by every instance); replay with fresh ids "
            "(the default)"
        )
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"--broker {url!r}: use 'memory' or a redis://host:port/db URL")
    try:
        import redis  # noqa: F401  (the client library is an optional dependency)
    except ImportError as exc:
        raise ConfigError(
            f"--broker {url}: the Redis client is not installed ({exc}); "
            "pip install 'quoteflow[scale]'"
        ) from None
    from quoteflow.broker.redis import RedisBroker

    return RedisBroker(url, produce=produce, consume=consume, **options)


_MEMORY_OPTIONS = frozenset(
    {"buffer_size", "buffer_age", "max_backlog_bytes", "replay_memory_bytes", "clock"}
)
