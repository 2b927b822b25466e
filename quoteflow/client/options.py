"""The options of a subscription, declared once: :class:`StreamOptions`.

:func:`quoteflow.client.stream`, :class:`~quoteflow.client.EventStream` and
:func:`quoteflow.client.iter_events` all take these options as keyword arguments (as they
always have) or as one :class:`StreamOptions` value. The fields below are the only place
where the parameters, their defaults and their checks are written; the keyword signature
that ``help()``, ``inspect.signature`` and notebook completion show is generated from
them (:func:`keyword_signature`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from quoteflow.client.stream import EventStream

__all__ = ["StreamOptions", "keyword_signature", "resolve_options"]


def _frozen_csv(value: str | Iterable[str] | None) -> str | tuple[str, ...] | None:
    # A generator would be consumed by the first URL built from it; keep a tuple.
    if value is None or isinstance(value, str):
        return value
    return tuple(value)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How to subscribe to an SSE endpoint and keep the subscription alive.

    Parameters
    ----------
    symbols : str or iterable of str, optional
        Symbols to subscribe to (``symbols=AAPL,MSFT`` query parameter).
    events : str or iterable of str, optional
        Event types (``events=tick,bar`` query parameter).
    last_event_id : str, optional
        Resume after this id: sent as ``Last-Event-ID`` on the first connection.
    token : str, optional
        Bearer token (``Authorization: Bearer <token>``).
    heartbeat_timeout : float or None, default 45.0
        Seconds without any byte (events or ``: keepalive`` comments) after which the
        connection is presumed dead, cut and re-established. Keep it well above the
        server's heartbeat interval (15 s by default). ``None`` disables the watch.
    max_retries : int or None, default None
        Give up (StreamError) after this many consecutive reconnection attempts that
        delivered no event; ``None`` retries forever.
    backoff_initial : float, default 0.5
        First backoff ceiling in seconds, unless the server sent ``retry:``.
    backoff_max : float, default 30.0
        Backoff ceiling in seconds.
    connect_timeout : float, default 10.0
        Seconds allowed to establish each connection.
    headers : mapping, optional
        Extra request headers.
    on_status : callable, optional
        Called with the :class:`~quoteflow.client.EventStream` whenever its ``state``
        changes (connecting, connected, backoff, closed), on the event loop running the
        stream, e.g. to update a status line.
    max_queue : int, default 10000
        Received events waiting for the consumer beyond which reading pauses.
    seed : int, optional
        Seed of the backoff jitter (reproducible tests).

    Raises
    ------
    ValueError
        A timeout, retry count, backoff time or queue bound out of range, named.
    """

    symbols: str | Iterable[str] | None = None
    events: str | Iterable[str] | None = None
    last_event_id: str | None = None
    token: str | None = None
    heartbeat_timeout: float | None = 45.0
    max_retries: int | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    headers: Mapping[str, str] | None = None
    on_status: Callable[[EventStream], None] | None = None
    max_queue: int = 10_000
    seed: int | None = None

    def __post_init__(self) -> None:
        hb = self.heartbeat_timeout
        if hb is not None and hb <= 0:
            raise ValueError(f"heartbeat_timeout must be > 0 or None, got {hb!r}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {self.max_retries!r}")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff_initial and backoff_max must be >= 0 seconds")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue!r}")
        # Frozen: normalise through object.__setattr__ (the dataclass documentation's way).
        object.__setattr__(self, "symbols", _frozen_csv(self.symbols))
        object.__setattr__(self, "events", _frozen_csv(self.events))
        object.__setattr__(self, "last_event_id", self.last_event_id or None)
        if self.headers is not None:
            object.__setattr__(self, "headers", dict(self.headers))


_NAMES = frozenset(f.name for f in dataclasses.fields(StreamOptions))


def resolve_options(
    where: str, options: StreamOptions | None, overrides: Mapping[str, Any]
) -> StreamOptions:
    """The options of one call: ``options`` (or the defaults) with keyword ``overrides``.

    Parameters
    ----------
    where : str
        The public callable's name, for the error message.
    options : StreamOptions, optional
        A base set of options.
    overrides : mapping
        Keyword arguments given to the call; each must be a :class:`StreamOptions`
        field.

    Returns
    -------
    StreamOptions
        Validated options.

    Raises
    ------
    TypeError
        ``options`` is not a StreamOptions, or a keyword is not an option (as Python
        itself reports an unexpected keyword argument).
    ValueError
        From :class:`StreamOptions`.
    """
    if options is not None and not isinstance(options, StreamOptions):
        raise TypeError(
            f"{where}() takes its options as keyword arguments or one StreamOptions, "
            f"got {type(options).__name__}"
        )
    unknown = sorted(set(overrides) - _NAMES)
    if unknown:
        raise TypeError(
            f"{where}() got an unexpected keyword argument {unknown[0]!r} "
            f"(options: {', '.join(sorted(_NAMES))})"
        )
    if options is None:
        return StreamOptions(**overrides)
    return dataclasses.replace(options, **overrides) if overrides else options


_F = TypeVar("_F", bound=Callable[..., Any])


def keyword_signature(func: _F) -> _F:
    """Show the :class:`StreamOptions` fields as keyword parameters of ``func``.

    ``func`` is written ``(url, options=None, **kwargs)``; its ``__signature__`` becomes
    ``(url, options=None, *, symbols=None, ..., seed=None)`` with the fields' defaults
    and annotations, which is what ``help()``, ``inspect.signature`` and notebook
    completion read. Only the presentation changes; :func:`resolve_options` checks the
    keywords at call time.
    """
    sig = inspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    keywords = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=f.type,
        )
        for f in dataclasses.fields(StreamOptions)
    ]
    func.__signature__ = sig.replace(parameters=[*fixed, *keywords])  # type: ignore[attr-defined]
    return func
