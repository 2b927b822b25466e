"""Transport faults for scripted scenarios, and ``GET``/``POST``/``DELETE /scenario``.

:class:`StreamFaults` is the server side of :class:`quoteflow.scenario.Transport`: one
per app (``ServerState.faults``), attached to a scenario source when the server starts.
The stream endpoints consult it at one point only (:meth:`StreamFaults.admit`, first in
:func:`quoteflow.server.streams.open_subscription`, so for ``/stream`` and ``/ws`` alike;
the SSE handler also asks :meth:`StreamFaults.retry_ms` for its first ``retry:`` line);
everything else acts on the open streams (``state.streams``) from here:

- ``drop``: every stream connection is closed at once (no clean end of the chunked
  body: what a crashed server or a cut network looks like);
- ``stall``: every open stream's writer is swapped for a :class:`_Gate` that takes
  nothing for ``t`` seconds, so not a byte (no event, no ``: keepalive``) reaches the
  client while the connection stays open, the silent dead connection. The events queue
  in the subscription as backlog (the slow-consumer bound still applies) and are all
  written when the gate opens; streams opened meanwhile are not stalled;
- ``retry``: ``retry: r`` on every open stream, and as the first line of every stream
  opened from then on (instead of ``--retry-ms``);
- ``refuse``: the next ``k`` stream requests (``/stream`` and ``/ws``) get 503 (with
  ``Retry-After``) or 204 (which tells an SSE client to stop);
- ``restart``: every stream is dropped and the broker forgets its replay buffer and goes
  on ``gap`` ids higher (``Broker.restart_ids``), so every resume gets ``event: reset``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import tornado.web

from quoteflow.broker.base import Framing, Subscription, SubscriptionWriter
from quoteflow.errors import ConfigError
from quoteflow.scenario import MAX_REFUSALS, Scenario, ScenarioError, ScenarioRun, Transport
from quoteflow.server.handlers import JSONHandler, parse_params_body
from quoteflow.server.request import ApiError, RequestView, authorize
from quoteflow.wire.sse import encode_retry

if TYPE_CHECKING:
    from quoteflow.server.app import ServerState

__all__ = ["ScenarioHandler", "ScenarioHost", "StreamFaults"]

log = logging.getLogger(__name__)


@runtime_checkable
class ScenarioHost(Protocol):
    """What ``/scenario`` needs from the source (:class:`quoteflow.scenario.ScenarioSource`)."""

    def start(self, scenario: Scenario) -> ScenarioRun:
        """Start a scenario now."""
        ...

    def cancel_all(self) -> int:
        """Stop every running scenario."""
        ...

    def status(self) -> dict[str, Any]:
        """Progress of the scenarios."""
        ...

    def attach_transport(self, transport: Transport) -> None:
        """Use ``transport`` for the transport steps."""
        ...


class _Gate:
    """A writer that writes nothing until opened (a stalled stream; see the module doc)."""

    __slots__ = ("inner", "sub")

    def __init__(self, sub: Subscription, inner: SubscriptionWriter) -> None:
        self.sub = sub
        self.inner = inner

    def try_write(self, chunk: bytes, n_events: int, published_at: float) -> bool:
        return False  # queue it: counted as backlog, written when the gate opens

    def wake(self) -> None:
        if self.sub.closed:
            # The stream ended meanwhile (client gone, slow consumer, shutdown): let the
            # real writer finish the response.
            self.inner.wake()

    def open(self) -> None:
        if self.sub.writer is self:
            self.sub.set_writer(self.inner)
            self.sub.wake()


class StreamFaults:
    """The transport faults of one app (see the module docstring).

    Parameters
    ----------
    state : ServerState
        The app's state: its open streams and its broker.
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._refusals: collections.deque[int] = collections.deque()
        self._gates: list[_Gate] = []
        self._retry_ms: int | None = None
        #: Stream requests refused so far, by status.
        self.refused: collections.Counter[int] = collections.Counter()

    def admit(self, view: RequestView) -> None:
        """Refuse this stream request if a ``refuse`` step says so (else nothing).

        Parameters
        ----------
        view : RequestView
            The stream request (its handler: a 204 sets the handler's status).

        Raises
        ------
        ApiError
            503 with ``Retry-After``.
        tornado.web.Finish
            After setting status 204 (an empty answer: "stop reconnecting").
        """
        if not self._refusals:
            return
        status = self._refusals.popleft()
        self.refused[status] += 1
        left = len(self._refusals)
        if status == 503:
            raise ApiError(
                503,
                f"scenario: refusing this stream request ({left} more to refuse); retry",
                headers={"Retry-After": "1"},
            )
        if isinstance(view, tornado.web.RequestHandler):
            view.set_status(204)
        raise tornado.web.Finish()

    def drop_all(self) -> int:
        """Close every open stream connection now; return how many."""
        streams = list(self._state.streams)
        for stream in streams:
            stream.cut()
        log.info("scenario: dropped %d stream(s)", len(streams))
        return len(streams)

    def stall(self, seconds: float) -> int:
        """Write nothing on the open streams for ``seconds``; return how many."""
        gates: list[_Gate] = []
        for stream in list(self._state.streams):
            sub = stream.sub
            if sub.closed:
                continue
            writer = sub.writer
            if writer is None or isinstance(writer, _Gate):
                continue
            gate = _Gate(sub, writer)
            sub.set_writer(gate)
            gates.append(gate)
        self._gates.extend(gates)
        asyncio.get_running_loop().call_later(seconds, self._open, gates)
        log.info("scenario: stalled %d stream(s) for %g s", len(gates), seconds)
        return len(gates)

    def _open(self, gates: list[_Gate]) -> None:
        for gate in gates:
            gate.open()
        self._gates = [g for g in self._gates if g not in gates]

    def retry_ms(self, default: int) -> int:
        """The ``retry:`` of a new stream: a scenario's, else ``default`` (``--retry-ms``)."""
        return default if self._retry_ms is None else self._retry_ms

    def send_retry(self, ms: int) -> int:
        """Send ``retry: ms`` on every open SSE stream, and to new streams; return how many.

        A WebSocket has no reconnection time to set: ``/ws`` streams get nothing.
        """
        self._retry_ms = ms
        chunk = encode_retry(ms)
        n = 0
        for stream in list(self._state.streams):
            sub = stream.sub
            if not sub.closed and sub.framing is Framing.SSE:
                sub.push_preamble(chunk)
                n += 1
        return n

    def refuse_next(self, count: int, status: int) -> None:
        """Answer the next ``count`` stream requests with ``status`` (503 or 204)."""
        room = MAX_REFUSALS - len(self._refusals)
        self._refusals.extend([status] * max(0, min(count, room)))

    def restart(self, gap: int) -> int:
        """Drop every stream; the broker forgets its buffer and skips ``gap`` ids."""
        try:
            self._state.broker.restart_ids(gap)
        except NotImplementedError as exc:
            raise ScenarioError(str(exc)) from None
        return self.drop_all()

    def release(self) -> None:
        """Open every stalled stream and forget pending refusals (server shutdown)."""
        self._open(list(self._gates))
        self._refusals.clear()


class ScenarioHandler(JSONHandler):
    """``/scenario``: ``GET`` progress, ``POST`` start one (admin), ``DELETE`` cancel (admin)."""

    cors_methods = "GET, POST, DELETE, OPTIONS"

    def _host(self) -> ScenarioHost:
        source = self.state.source
        if not isinstance(source, ScenarioHost):
            raise ApiError(
                409,
                f"this server's source ({type(source).__name__}) runs no scenarios: "
                "`quoteflow serve` with a simulated market does (--config, --universe or "
                "the default market)",
            )
        return source

    def get(self) -> None:
        """Respond with the scenarios' progress (``ScenarioSource.status``)."""
        authorize(self, self.state)
        self.write_json(self._host().status())

    def post(self) -> None:
        """Start the scenario of the JSON body; 202 with its run's status."""
        authorize(self, self.state, admin=True)
        host = self._host()
        body = parse_params_body(self.request.body)
        try:
            scenario = Scenario.from_config(body, source="body")
            run = host.start(scenario)
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        self.write_json({"scenario": run.status(run.origin)}, status=202)

    def delete(self) -> None:
        """Cancel every running scenario; respond ``{"cancelled": n}``."""
        authorize(self, self.state, admin=True)
        self.write_json({"cancelled": self._host().cancel_all()})
