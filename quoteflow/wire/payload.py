"""The JSON payloads of market events: their schema, and how they are encoded (once).

Every ``tick``, ``bar``, ``trade`` and ``session`` event a client receives is a one-line
JSON object whose fields are listed here (:data:`TICK_FIELDS`, :data:`BAR_FIELDS`,
:data:`TRADE_FIELDS`, :data:`SESSION_FIELDS`, plus :data:`SEQ_FIELD`, an int the broker
adds). The text is written once per event:

1. the source writes the payload without ``seq``: :class:`PayloadEncoder` for the
   simulated market (per-symbol %-templates, about 5x faster than the json module at
   10,000 symbols per tick; ``benchmarks/fanout/bench_generation.py``), or
   :func:`encode_payload` for anything else;
2. the broker adds ``seq`` with :func:`with_seq` (or, in one step with the SSE framing,
   :class:`EventFramer`) and frames it for SSE; nobody else splices JSON text.

Standard library only; nothing from quoteflow (the layering test checks it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from quoteflow.wire.sse import encode_event

__all__ = [
    "BAR_FIELDS",
    "EVENT_TYPES",
    "SEQ_FIELD",
    "SESSION_FIELDS",
    "SESSION_STATES",
    "TICK_FIELDS",
    "TRADE_FIELDS",
    "TRADE_SIDES",
    "EncodedBatch",
    "EventFramer",
    "PayloadEncoder",
    "encode_payload",
    "given_ids",
    "pre_encoded",
    "with_seq",
]

#: Fields of a ``tick`` payload, in the order they are written. ``ts`` is ISO-8601 UTC
#: with milliseconds, ``ts_ns`` the same instant as integer Unix nanoseconds, ``sim_ts``
#: the simulated time of the tick, ISO-8601 UTC with milliseconds like ``ts`` (the wall
#: clock when the market runs no simulated clock; docs/market.md "Simulated time").
TICK_FIELDS: tuple[str, ...] = ("symbol", "price", "bid", "ask", "size", "ts", "ts_ns", "sim_ts")
#: Fields of a ``bar`` payload (OHLCV over ``[start, end]``), in the order written;
#: ``sim_ts`` is the simulated time of the bar's last tick.
BAR_FIELDS: tuple[str, ...] = (
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "start",
    "end",
    "sim_ts",
)
#: Fields of a ``trade`` payload: ``size`` shares at ``price``, ``side`` the aggressor.
TRADE_FIELDS: tuple[str, ...] = ("symbol", "price", "size", "side", "ts", "sim_ts")
#: The aggressor side of a trade: a buyer lifting the ask or a seller hitting the bid.
TRADE_SIDES: tuple[str, ...] = ("buy", "sell")
#: Fields of a ``session`` payload: a trading-session boundary for ``symbol``.
SESSION_FIELDS: tuple[str, ...] = ("symbol", "state", "ts", "sim_ts")
#: The states a ``session`` event announces.
SESSION_STATES: tuple[str, ...] = ("open", "closed", "halted")
#: The field the broker adds to every payload: an int that increases with the event id
#: (the id itself on the memory broker, the producer's event counter on Redis).
SEQ_FIELD = "seq"
#: Event types a client may subscribe to (``events=`` query parameter).
EVENT_TYPES: frozenset[str] = frozenset({"tick", "bar", "trade", "session"})

# One encoder for every event: json.dumps() with non-default options builds a new
# JSONEncoder per call, a third of the encoding time at 100k events/s.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

_E = TypeVar("_E")


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Compact JSON of ``payload`` (``,`` and ``:`` separators, no NaN or infinity).

    Raises
    ------
    TypeError
        A value is not JSON-serialisable.
    ValueError
        A float is NaN or infinite (not JSON, RFC 8259 §6).
    """
    return _JSON.encode(payload)


def with_seq(text: str, seq: int) -> str:
    """``text`` (a JSON object from this module, without ``seq``) with ``"seq": seq`` added.

    The object's closing brace is replaced, so the rest is not encoded again.

    Raises
    ------
    ValueError
        ``text`` does not end like a JSON object.
    """
    if not text.endswith("}"):
        raise ValueError("payload is not a JSON object")
    sep = "," if len(text) > 2 else ""
    return f'{text[:-1]}{sep}"seq":{int(seq)}}}'


class EncodedBatch(list[_E]):
    """A batch of events that brings its payloads' JSON along.

    A plain ``list`` of events for every consumer. A broker additionally reads
    :attr:`encoded`: per event, the pair ``(payload, JSON text of payload)``, so it can
    skip the generic JSON encoder (which took more than half the CPU time of publishing
    a 10,000-symbol tick, benchmarks/fanout/bench_generation.py). A pair is used only
    while its payload is still the very dict of the event at that position (``is``), so
    a caller that edits or reorders the batch gets the generic path, never a wrong
    payload.

    Attributes
    ----------
    encoded : list of (dict, str)
        Pairs aligned with the start of the batch; it is shorter (possibly empty) when
        some events were not pre-encoded (a non-finite price: the broker's generic
        encoder then drops and logs them). The text is :func:`encode_payload` of exactly
        that payload.
    ids : list of int or None
        The ids the events must be published with (a replay with its recording's ids,
        ``quoteflow serve --replay F --replay-ids original``), one per event, strictly
        increasing; None (the default): the broker numbers them.
    """

    __slots__ = ("encoded", "ids")

    def __init__(
        self,
        events: list[_E],
        encoded: list[tuple[dict[str, Any], str]],
        ids: list[int] | None = None,
    ):
        super().__init__(events)
        self.encoded = encoded
        self.ids = ids


def pre_encoded(batch: Sequence[Any]) -> Sequence[tuple[Any, str]]:
    """The ``(payload, text)`` pairs a batch brings along (empty for a plain sequence)."""
    return batch.encoded if isinstance(batch, EncodedBatch) else ()


def given_ids(batch: Sequence[Any]) -> list[int] | None:
    """The ids a batch must be published with (None: the broker numbers it)."""
    return batch.ids if isinstance(batch, EncodedBatch) else None


class PayloadEncoder:
    """Fast JSON of tick, bar, trade and session payloads for a fixed list of symbols.

    Per-symbol %-format templates: the symbol is JSON-escaped once here instead of on
    every tick. Floats go through ``%r``, which is ``float.__repr__``, exactly what the
    json module writes for a finite float; the caller checks finiteness first (a NaN
    would be written as ``nan``, which is not JSON).

    Parameters
    ----------
    symbols : sequence of str
        The symbols, in the order of the value lists passed to :meth:`ticks` and
        :meth:`bars`.
    """

    __slots__ = ("_bar", "_symbols", "_tick", "_trade")

    def __init__(self, symbols: Sequence[str]) -> None:
        self._symbols = list(symbols)
        self._tick: list[str] | None = None
        self._bar: list[str] | None = None
        self._trade: list[str] | None = None

    def _templates(self) -> tuple[list[str], list[str]]:
        if self._tick is None or self._bar is None:
            tick, bar = [], []
            for name in self._symbols:
                sym = json.dumps(name)
                tick.append(
                    '{"symbol":' + sym + ',"price":%r,"bid":%r,"ask":%r,"size":%d,'
                    '"ts":%s,"ts_ns":%d,"sim_ts":%s}'
                )
                bar.append(
                    '{"symbol":' + sym + ',"open":%r,"high":%r,"low":%r,"close":%r,'
                    '"volume":%d,"start":%s,"end":%s,"sim_ts":%s}'
                )
            self._tick, self._bar = tick, bar
        return self._tick, self._bar

    def _trade_templates(self) -> list[str]:
        if self._trade is None:
            self._trade = [
                '{"symbol":' + json.dumps(name) + ',"price":%r,"size":%d,"side":%s,'
                '"ts":%s,"sim_ts":%s}'
                for name in self._symbols
            ]
        return self._trade

    def ticks(
        self,
        price: list[float],
        bid: list[float],
        ask: list[float],
        size: list[int],
        ts: str,
        ts_ns: int,
        sim_ts: str,
    ) -> list[str]:
        """The JSON of one tick per symbol (finite floats only); see :data:`TICK_FIELDS`."""
        tick_t, _ = self._templates()
        ts_json = json.dumps(ts)
        sim_json = ts_json if sim_ts == ts else json.dumps(sim_ts)
        return [
            t % (p, b, k, q, ts_json, ts_ns, sim_json)
            for t, p, b, k, q in zip(tick_t, price, bid, ask, size, strict=True)
        ]

    def bars(
        self,
        open: list[float],
        high: list[float],
        low: list[float],
        close: list[float],
        volume: list[int],
        start: str,
        end: str,
        sim_ts: str,
        symbols: Sequence[int] | None = None,
    ) -> list[str]:
        """The JSON of one bar per symbol (finite floats only); see :data:`BAR_FIELDS`.

        ``symbols`` (market positions) names whose bars the value lists hold, when not
        every symbol has one (bars built from trades); default all, in order.
        """
        _, bar_t = self._templates()
        se = (json.dumps(start), json.dumps(end), json.dumps(sim_ts))
        templates = bar_t if symbols is None else [bar_t[i] for i in symbols]
        return [
            t % (o, h, lo, c, v, *se)
            for t, o, h, lo, c, v in zip(templates, open, high, low, close, volume, strict=True)
        ]

    def trades(
        self,
        symbols: Sequence[int],
        price: list[float],
        size: list[int],
        side: Sequence[str],
        ts: str,
        sim_ts: str,
    ) -> list[str]:
        """The JSON of trades (finite prices only); see :data:`TRADE_FIELDS`.

        ``symbols`` holds each trade's market position; ``side`` each one's
        :data:`TRADE_SIDES` value.
        """
        trade_t = self._trade_templates()
        ts_json, sim_json = json.dumps(ts), json.dumps(sim_ts)
        sides = {s: json.dumps(s) for s in TRADE_SIDES}
        return [
            trade_t[i] % (p, q, sides[d], ts_json, sim_json)
            for i, p, q, d in zip(symbols, price, size, side, strict=True)
        ]


class EventFramer:
    """SSE frames of payloads with ``seq`` added: the broker's encode-once step.

    :meth:`frame` of a pre-encoded payload is one %-format of a cached per-type template
    (built by :func:`~quoteflow.wire.sse.encode_event` itself, so SSE framing is still
    written in one place); anything else goes through :func:`encode_payload`.
    """

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        # SSE frame templates per event type: (id, JSON without its closing brace, seq).
        self._frames: dict[str, str] = {}
        for kind in sorted(EVENT_TYPES):
            self._learn(kind)

    def _learn(self, kind: str) -> None:
        if "%" in kind or len(self._frames) >= 64:
            return  # a '%' would break the template; and no unbounded cache of odd types
        self._frames[kind] = encode_event('%s,"seq":%d}', id="%s", event=kind).decode()

    def frame(
        self, kind: str, data: Mapping[str, Any], text: str | None, seq: int, id: int | str
    ) -> bytes:
        """The SSE frame of one event: ``id``, type ``kind``, payload ``data`` + ``seq``.

        Parameters
        ----------
        kind : str
            Event type.
        data : mapping
            The payload, without ``seq``.
        text : str or None
            :func:`encode_payload` of ``data`` if already known (a non-empty object).
        seq : int
            The ``seq`` value.
        id : int or str
            The event id (an int is written in decimal).

        Raises
        ------
        TypeError, ValueError
            The payload is not JSON (a NaN, an unserialisable value) or the type or id
            cannot be framed (a line break).
        """
        template = self._frames.get(kind)
        if text is not None and template is not None and SEQ_FIELD not in data and data:
            return (template % (id, text[:-1], seq)).encode()
        payload = dict(data)
        payload[SEQ_FIELD] = seq
        frame = encode_event(_JSON.encode(payload), id=str(id), event=kind)
        if template is None:
            self._learn(kind)  # only a type the encoder accepted is cached
        return frame
