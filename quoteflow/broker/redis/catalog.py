"""The catalog of a serving-only instance: the producer's symbols, read from Redis."""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quoteflow.broker.redis.ids import CATALOG_PERIOD, UPDATE_TIMEOUT, log
from quoteflow.broker.redis.link import RedisLink
from quoteflow.errors import ConfigError
from quoteflow.sources import Catalog

if TYPE_CHECKING:
    from quoteflow.broker.redis.broker import RedisBroker

__all__ = ["RemoteCatalog", "StreamSource"]


class RemoteCatalog:
    """A serving-only instance's copy of the producer's catalog, and the way back to it.

    The producer writes its catalog to ``<stream>:symbols``; this part reads it (every
    :data:`CATALOG_PERIOD`, and before ingesting a symbol it does not describe yet) and
    forwards ``PUT /symbols`` changes to the producer's control task.

    Parameters
    ----------
    link : RedisLink
        The shared connection.
    """

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        #: The latest catalog read from Redis (None until the first read).
        self.catalog: dict[str, dict[str, Any]] | None = None
        self._catalog_at = -math.inf
        # Symbols (as read from the stream) the catalog describes, and those a fresh
        # read still did not describe (not looked up again until the next refresh).
        self._described: set[bytes] = set()
        self._undescribed: set[bytes] = set()

    def due(self) -> bool:
        """True when a periodic refresh is due (soon, until a catalog was seen)."""
        period = CATALOG_PERIOD if self.catalog is not None else 0.2
        return time.monotonic() - self._catalog_at >= period

    async def read(self) -> None:
        """Read the catalog from Redis."""
        link = self.link
        raw = await link.redis.get(link.catalog_key)
        self._catalog_at = time.monotonic()
        if raw is None:
            return
        try:
            catalog = json.loads(raw)
        except ValueError:
            log.warning("ignoring malformed symbol catalog at %s", link.catalog_key)
            return
        if isinstance(catalog, dict):
            self.catalog = catalog
            self._described = {str(name).encode() for name in catalog}
            self._undescribed.clear()

    async def describe_new_symbols(self, rows: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Read the catalog again before ingesting a symbol it lacks.

        The producer writes its catalog before the events of the same pipeline, so a fresh
        read describes every symbol of ``rows``: ``/symbols`` never shows a symbol that
        ticks here without its model and parameters (defect: a serving instance answered
        ``{"model": null, "params": {}}`` for a symbol seen in the stream before its first
        catalog read). A symbol still missing after the read is not looked up again
        until the next periodic refresh.
        """
        known, missing = self._described, self._undescribed
        fresh = {
            name
            for _, fields in rows
            if (name := fields.get(b"s")) is not None and name not in known and name not in missing
        }
        if not fresh:
            return
        with contextlib.suppress(Exception):  # the next XREAD reports an outage
            await self.read()
        self._undescribed |= fresh - self._described

    async def forward_update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Have the producer apply a parameter change (see :meth:`RedisProducer._control`).

        Returns
        -------
        dict
            The new parameters.

        Raises
        ------
        ConfigError
            The producer refused the change (bad parameter or value).
        ConnectionError
            Redis is unreachable or no producer answered within :data:`UPDATE_TIMEOUT`.
        """
        link = self.link
        if link.redis is None:
            raise ConnectionError("the Redis broker is not started")
        reply = f"{link.stream}:reply:{uuid.uuid4().hex}"
        request = {"reply": reply, "symbol": symbol, "params": dict(params)}
        try:
            await link.redis.rpush(link.control_key, json.dumps(request, allow_nan=False))
            item = await link.redis.blpop([reply], timeout=UPDATE_TIMEOUT)
        except Exception as exc:  # redis-py's connection errors are not OSErrors
            raise ConnectionError(f"cannot reach Redis to forward the change: {exc}") from None
        if item is None:
            # Nobody consumed it: take the request back so it is not applied much later.
            with contextlib.suppress(Exception):
                await link.redis.lrem(link.control_key, 1, json.dumps(request, allow_nan=False))
            raise ConnectionError(
                f"no producer answered within {UPDATE_TIMEOUT:g} s "
                "(is `quoteflow generate` running on this Redis?)"
            )
        answer = json.loads(item[1])
        if "error" in answer:
            raise ConfigError(str(answer["error"]))
        new: dict[str, Any] = answer["params"]
        # Read-your-writes: this instance shows the new parameters at once (the producer
        # publishes its catalog again soon; the next read confirms them).
        if self.catalog is not None and symbol in self.catalog:
            self.catalog[symbol] = {**self.catalog[symbol], "params": dict(new)}
        self._catalog_at = -math.inf
        return new


class StreamSource(Catalog):
    """The source of a serving-only instance: what another process publishes to Redis.

    A serving instance (``quoteflow serve --broker redis://...`` without ``--generate``)
    has no market of its own, hence no events to produce: it is a
    :class:`~quoteflow.sources.Catalog`, not a ``Source`` (the events reach the broker's
    reader from Redis). Its symbols are those of the producer's catalog (refreshed every
    :data:`CATALOG_PERIOD` seconds) plus any symbol seen ticking in the stream, so
    ``/symbols``, ``/snapshot`` and the 400 for an unknown symbol work as on the producer.
    ``PUT /symbols/{symbol}`` is forwarded to the producer (:meth:`aupdate`).

    Parameters
    ----------
    broker : RedisBroker
        The consuming broker.
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    @property
    def symbols(self) -> list[str]:
        """Catalog symbols plus symbols seen in the stream."""
        names = set(self.broker.catalog or ())
        names.update(self.broker.ticked_symbols())
        return sorted(names)

    @property
    def symbols_known(self) -> bool:
        """False until the catalog or a tick has been read (Redis unreachable at start)."""
        return self.broker.catalog is not None or self.broker.last_id is not None

    def describe(self) -> dict[str, dict[str, Any]]:
        """The producer's catalog, with prices from the latest ticks seen here."""
        out = {s: dict(d) for s, d in (self.broker.catalog or {}).items()}
        for symbol, tick in self.broker.snapshot().items():
            entry = out.setdefault(symbol, {"model": None, "params": {}})
            if "price" in tick:
                entry["price"] = tick["price"]
        return dict(sorted(out.items()))

    def update(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Refuse synchronously: changes go through :meth:`aupdate` (an await on Redis)."""
        raise ConfigError(
            "this instance only serves: change parameters through its HTTP API, which "
            "forwards them to the producer"
        )

    async def aupdate(self, symbol: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Forward a parameter change to the producer; see :meth:`RedisBroker.forward_update`."""
        return await self.broker.forward_update(symbol, params)
