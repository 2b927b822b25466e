"""Redis Streams broker: one feed and one id space shared by many server instances.

Scale-out (DESIGN.md, "Scale-out"): exactly one process *produces* (``quoteflow generate
--broker URL`` or ``quoteflow serve --broker URL --generate``): it ``XADD``\\ s every event to
one capped stream (``MAXLEN ~``). Every serving instance *consumes*: a background task
reads the stream with blocking ``XREAD`` and fans the events out locally through the
same :class:`~quoteflow.broker.fanout.LocalFanout` as
:class:`~quoteflow.broker.memory.MemoryBroker` (mercure's clustered transport around its
local one).

:class:`RedisBroker` is composed of parts, not switched by flags: a
:class:`RedisProducer` (outbox, writer and control tasks, catalog) when it produces, a
:class:`RedisConsumer` (reader into the local fan-out, held resumes, snapshot) when it
consumes, a :class:`RemoteCatalog` when it only serves, and one :class:`RedisLink` (the
connection and its health) that they share.

The event id on the wire is the Redis stream id (``"1764212345678-0"``), so a client can
resume with ``Last-Event-ID`` on any instance. Each instance keeps a local replay buffer
(primed from the stream at start with ``XREVRANGE``), so ``subscribe`` stays synchronous
and gap-free exactly as in the memory broker.

Instances read the stream independently, so the one a client resumes on may not have read
as far as the one it left (it was paused, busy, or reconnecting to Redis). An id newer than
this instance's newest is therefore not "unknown": the subscription is *held* (heartbeats
only, not in the fan-out) until the reader has ingested that id, then replayed from the
local buffer and made live, so nothing at or below the client's id is ever sent. Meanwhile
one ``XREVRANGE + - COUNT 1`` asks Redis for its newest id: when even Redis holds nothing
that new, the id was never issued by this stream (made up, another deployment's, or a
stream lost by a Redis restart without persistence) and the client gets ``event: reset``
at once, as on a single server. When the instance has not caught up within
``catch_up_timeout`` (Redis unreachable, say) the stream ends cleanly and the client comes
back with the same id: neither a false reset nor a duplicate.

Entries carry the producer's run id and a counter (``p``, ``n``). A repeated counter is a
re-sent pipeline (dropped); a jump is a hole, events this instance will never read (a
Redis restart without persistence, an overflowing producer outbox): a replay across it
is answered with ``event: reset`` (``reason: gap``) instead of being silently incomplete.

Failures: when Redis is down or restarting the reader and the writer retry with
exponential backoff, log once per outage, report ``healthy = False`` (``/healthz``,
``/metrics``), keep every client connected (heartbeats continue), and resume from the
last id when Redis is back. The producer keeps unsent events in a bounded outbox and
sends them, in order, once Redis answers again.

Redis command semantics used: XADD, XREAD BLOCK, XREVRANGE (https://redis.io/docs/latest/
develop/data-types/streams/). Stream ids are ``<milliseconds>-<sequence>``, strictly
increasing within a stream.

Modules: :mod:`~quoteflow.broker.redis.broker` (:class:`RedisBroker`, the composition),
:mod:`~quoteflow.broker.redis.producer`, :mod:`~quoteflow.broker.redis.consumer`,
:mod:`~quoteflow.broker.redis.catalog` (:class:`RemoteCatalog`, :class:`StreamSource`),
:mod:`~quoteflow.broker.redis.link` (:class:`RedisLink`) and
:mod:`~quoteflow.broker.redis.ids` (stream ids, key names, timings).
"""

from __future__ import annotations

from quoteflow.broker.redis.broker import RedisBroker
from quoteflow.broker.redis.catalog import RemoteCatalog, StreamSource
from quoteflow.broker.redis.consumer import RedisConsumer
from quoteflow.broker.redis.ids import (
    CATALOG_PERIOD,
    CATCH_UP_TIMEOUT,
    DEFAULT_STREAM,
    UPDATE_TIMEOUT,
    parse_stream_id,
)
from quoteflow.broker.redis.link import RedisLink
from quoteflow.broker.redis.producer import RedisProducer

__all__ = [
    "CATALOG_PERIOD",
    "CATCH_UP_TIMEOUT",
    "DEFAULT_STREAM",
    "UPDATE_TIMEOUT",
    "RedisBroker",
    "RedisConsumer",
    "RedisLink",
    "RedisProducer",
    "RemoteCatalog",
    "StreamSource",
    "parse_stream_id",
]
