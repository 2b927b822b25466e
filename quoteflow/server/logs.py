"""What the server writes to its logs: formats, per-stream records, no secrets.

Secrets
-------
What the server writes about a request to its logs, with secrets taken out.

A token may travel in the query string (``?access_token=``: the browser's
``EventSource`` cannot set headers), and tornado's access log and exception log print the
request URI verbatim. Logs are shipped, shared and kept far longer than a token lives, so
every log line that names a request goes through :func:`request_summary`, which
replaces the value of each secret query parameter with ``REDACTED``.

Formats and streams
-------------------
Server logging: text or JSON lines, and one record per stream opened and closed.

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
from urllib.parse import unquote

from quoteflow.broker.base import CloseReason

if TYPE_CHECKING:
    import tornado.httputil
    import tornado.web

    from quoteflow.broker.base import Subscription

__all__ = [
    "LOG_FORMATS",
    "REDACTED",
    "SECRET_PARAMETERS",
    "JsonFormatter",
    "configure_logging",
    "log_request",
    "redact_uri",
    "request_summary",
    "track_connection",
]

#: Query parameters whose values never reach a log.
SECRET_PARAMETERS = frozenset({"access_token"})

#: What a secret value is replaced with.
REDACTED = "REDACTED"

access_log = logging.getLogger("tornado.access")


def redact_uri(uri: str) -> str:
    """``uri`` with the values of :data:`SECRET_PARAMETERS` replaced by ``REDACTED``.

    The parameter name is compared after percent-decoding (``access%5Ftoken`` is the same
    parameter to the server, RFC 3986 §2.1), so an encoded name cannot smuggle a token into
    the log. Everything else is kept byte for byte.

    Parameters
    ----------
    uri : str
        Request target as received (path and query).

    Returns
    -------
    str
        The same target, safe to log.
    """
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    query, hash_sep, fragment = query.partition("#")
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if unquote(name.replace("+", " ")) in SECRET_PARAMETERS:
            parts[i] = f"{name}{eq or '='}{REDACTED}"
    return f"{path}?{'&'.join(parts)}{hash_sep}{fragment}"


def request_summary(request: tornado.httputil.HTTPServerRequest) -> str:
    """``METHOD URI (client address)`` with secrets redacted (tornado's summary, made safe)."""
    return f"{request.method} {redact_uri(request.uri or '')} ({request.remote_ip})"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The application's ``log_function``: one access-log line per finished request.

    Same levels and format as tornado's own (info below 400, warning below 500, error
    from 500), on the ``tornado.access`` logger, but with :func:`request_summary`; and
    nothing for a request refused by a connection limit (``handler.quiet_log``): in a
    flood those would write one line each, so they are counted in ``/metrics`` and
    summarised once per interval by the handler instead.
    """
    if getattr(handler, "quiet_log", False):
        # Not a capability probe: tornado may hand us its own handlers (no such flag).
        return
    status = handler.get_status()
    if status < 400:
        level = logging.INFO
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    if access_log.isEnabledFor(level):
        ms = 1000.0 * handler.request.request_time()
        access_log.log(level, "%d %s %.2fms", status, request_summary(handler.request), ms)


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
