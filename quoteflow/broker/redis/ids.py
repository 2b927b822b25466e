"""Names and ids every part of the Redis broker shares: stream ids, keys, timings."""

from __future__ import annotations

import logging
import re

from quoteflow.broker.base import EventIdError
from quoteflow.broker.settings import RedisSettings

__all__ = [
    "CATALOG_PERIOD",
    "CATCH_UP_TIMEOUT",
    "DEFAULT_STREAM",
    "UPDATE_TIMEOUT",
    "format_id",
    "log",
    "parse_stream_id",
]

#: The stream key every instance uses unless told otherwise.
DEFAULT_STREAM = "quoteflow:events"
#: Seconds between refreshes of the symbol catalog (producer writes, consumers read):
#: ``GET /symbols`` on a serving instance shows parameters at most this old.
CATALOG_PERIOD = 2.0
#: Seconds a serving instance waits for the producer to apply a forwarded parameter change.
UPDATE_TIMEOUT = 5.0
#: Default seconds a resume with an id this instance has not read yet waits for its reader
#: (``--catch-up-timeout``).
CATCH_UP_TIMEOUT = RedisSettings.catch_up_timeout

log = logging.getLogger("quoteflow.broker.redis")

_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
# Internal sort key of a stream id: the sequence part stays far below 2**32 in practice
# (it counts entries added within one millisecond).
_SEQ_BITS = 32


def parse_stream_id(s: str) -> int:
    """Sort key of a Redis stream id ``"<ms>-<seq>"``.

    Raises
    ------
    EventIdError
        ``s`` is not of that form.
    """
    m = _ID_RE.fullmatch(s)
    if m is None or int(m.group(2)) >= 1 << _SEQ_BITS:
        shown = s if len(s) <= 40 else s[:40] + "..."
        raise EventIdError(
            f"malformed event id {shown!r}: ids on this server are Redis stream ids like "
            "'1764212345678-0'; reconnect without Last-Event-ID to start fresh"
        )
    return (int(m.group(1)) << _SEQ_BITS) | int(m.group(2))


def format_id(key: int) -> str:
    """The stream id of a sort key (the inverse of :func:`parse_stream_id`)."""
    return f"{key >> _SEQ_BITS}-{key & ((1 << _SEQ_BITS) - 1)}"
