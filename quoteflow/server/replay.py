"""``GET``/``POST /replay``: the state of a replay, and pause / resume / seek / speed.

Only a server replaying something (``quoteflow serve --replay ...``, a source with the
:class:`~quoteflow.playback.ReplayControl` methods) has a replay to steer; any other
answers 404. ``POST`` needs an admin token when auth is on (it changes what every
client receives), ``GET`` any valid token.
"""

from __future__ import annotations

from quoteflow.playback import ReplayControl, ReplayControlError
from quoteflow.server.handlers import JSONHandler, parse_params_body
from quoteflow.server.request import ApiError, authorize

__all__ = ["ReplayHandler"]

_EXAMPLE = '{"action": "pause"}, {"action": "seek", "to": "2026-12-02T06:50:00Z"}'


class ReplayHandler(JSONHandler):
    """``GET /replay`` (status) and ``POST /replay`` (control)."""

    cors_methods = "GET, POST, OPTIONS"

    def _replay(self) -> ReplayControl:
        source = self.state.source
        if not isinstance(source, ReplayControl):
            raise ApiError(
                404,
                "this server is not replaying; start it with quoteflow serve --replay "
                "F.parquet (or a ticker) to steer a replay",
            )
        return source

    def get(self) -> None:
        """Respond with the replay's status."""
        authorize(self, self.state)
        self.write_json(self._replay().replay_status())

    def post(self) -> None:
        """Apply one control request; respond with the new status."""
        authorize(self, self.state, admin=True)
        replay = self._replay()
        body = parse_params_body(self.request.body)
        if not isinstance(body, dict):
            raise ApiError(400, f"body must be a JSON object, e.g. {_EXAMPLE}")
        try:
            status = replay.control(body)
        except ReplayControlError as exc:
            raise ApiError(exc.status, str(exc)) from None
        self.write_json(status)
