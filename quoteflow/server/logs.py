"""What the server writes about a request to its logs, with secrets taken out.

A token may travel in the query string (``?access_token=``: the browser's
``EventSource`` cannot set headers), and tornado's access log and exception log print the
request URI verbatim. Logs are shipped, shared and kept far longer than a token lives, so
every log line that names a request goes through :func:`request_summary`, which
replaces the value of each secret query parameter with ``REDACTED``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    import tornado.httputil
    import tornado.web

__all__ = ["REDACTED", "SECRET_PARAMETERS", "log_request", "redact_uri", "request_summary"]

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
