"""Server logging: text or JSON lines, and one record per stream opened and closed.

``quoteflow serve --log-format json`` writes one JSON object per line on stderr
(``ts``, ``level``, ``logger``, ``msg`` and the record's structured fields), the form log
shippers (Loki, Elasticsearch, CloudWatch) parse without a pattern. The text format is
the default and reads the same information as a sentence.

Every stream (``/stream`` and ``/ws``) logs on the ``quoteflow.connections`` logger:

- ``stream_open`` with ``path``, ``remote``, ``symbols`` (a sorted list, ``null`` for all),
  ``events`` and ``last_event_id`` (the resume point the client sent, or ``null``);
- ``stream_close`` with the same fields plus ``reason`` (a :class:`CloseReason` value:
  ``client_gone``, ``slow_consumer``, ``shutdown``, ``broker_closed``,
  ``token_expired``), ``reason_text`` and ``duration_s``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from quoteflow.broker.base import CloseReason

if TYPE_CHECKING:
    from quoteflow.broker.base import Subscription

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging", "track_connection"]

#: Values of ``--log-format``.
LOG_FORMATS = ("text", "json")

#: Logger of the per-stream records.
connections_log = logging.getLogger("quoteflow.connections")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OURS = "_quoteflow_handler"  # marks the handler configure_logging installed

#: What each close reason means, for people reading the log.
REASON_TEXT = {
    CloseReason.CLIENT_GONE: "client closed the connection",
    CloseReason.SLOW_CONSUMER: "slow consumer: unsent backlog over --max-backlog",
    CloseReason.SHUTDOWN: "server shutting down",
    CloseReason.BROKER_CLOSED: "broker closed",
    CloseReason.TOKEN_EXPIRED: "auth token expired",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, fields.

    Structured fields come from ``extra={"fields": {...}}`` on the logging call.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (never a multi-line message)."""
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send the process's log records to stderr in ``log_format`` at ``level``.

    Parameters
    ----------
    level : str
        ``debug``, ``info``, ``warning`` or ``error``.
    log_format : str
        ``text`` (a sentence per record) or ``json`` (one JSON object per line).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: choose from {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    # Replace the handler of an earlier call; leave others' handlers (pytest's capture).
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def _fields(sub: Subscription, path: str, remote: str, last_event_id: str | None) -> dict[str, Any]:
    return {
        "path": path,
        "remote": remote,
        "symbols": None if sub.symbols is None else sorted(sub.symbols),
        "events": sorted(sub.events),
        "last_event_id": last_event_id,
    }


def track_connection(
    sub: Subscription, *, path: str, remote: str, last_event_id: str | None
) -> None:
    """Log ``stream_open`` now and ``stream_close`` (with its reason) when ``sub`` ends.

    Parameters
    ----------
    sub : Subscription
        The stream's subscription (its first close reason is the one logged).
    path : str
        ``/stream`` or ``/ws``.
    remote : str
        Client address (the proxy's ``X-Real-IP`` with ``--trust-proxy``).
    last_event_id : str or None
        The resume point the client sent.
    """
    if not connections_log.isEnabledFor(logging.INFO):
        return
    fields = _fields(sub, path, remote, last_event_id)
    shown = ",".join(fields["symbols"]) if fields["symbols"] is not None else "*"
    connections_log.info(
        "stream open %s %s symbols=%s events=%s last_event_id=%s",
        path,
        remote,
        shown,
        ",".join(fields["events"]),
        last_event_id,
        extra={"fields": {"event": "stream_open", **fields}},
    )
    opened = time.monotonic()

    def closed(s: Subscription) -> None:
        reason = s.close_reason or CloseReason.CLIENT_GONE
        text = REASON_TEXT.get(reason, reason)
        duration = round(time.monotonic() - opened, 3)
        connections_log.info(
            "stream close %s %s symbols=%s after %.1f s: %s",
            path,
            remote,
            shown,
            duration,
            text,
            extra={
                "fields": {
                    "event": "stream_close",
                    **fields,
                    "reason": reason,
                    "reason_text": text,
                    "duration_s": duration,
                }
            },
        )

    sub.add_close_callback(closed)
