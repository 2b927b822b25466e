"""Server-Sent Events framing: the one place where SSE bytes are written.

Pure functions, standard library only (no tornado), each returning the UTF-8 bytes of
one complete block of an ``text/event-stream`` body. The rules they follow are those a
receiver applies in the WHATWG HTML Living Standard, §9.2.6 "Interpreting an event
stream" (and §9.2.5 for how the stream is parsed by an ``EventSource``):

* a line ends with CRLF, LF or CR (and with nothing else: U+2028, U+2029, U+0085,
  VT and FF are ordinary characters inside a line);
* ``name: value`` sets a field; the receiver strips exactly one space after the colon,
  so writing ``"data: " + line`` keeps a leading space that is part of the value;
* every ``data`` line appends ``value + LF`` to the data buffer, and one trailing LF is
  removed at dispatch, so a payload with *n* line breaks is written as *n + 1* lines;
* a blank line dispatches the event; a line starting with ``:`` is a comment.

Only :func:`encode_event` (and :func:`encode_fields` by default) end with a blank line.
The ``retry`` line and heartbeat comments are written as bare lines that join the next
event's block: a data-less block dispatches nothing in WHATWG terms, but some clients
(httpx-sse 0.4) report one as an empty event, so the server never writes one.

The parser that reads these bytes back is :class:`quoteflow.wire.parser.SSEParser`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "encode_comment",
    "encode_event",
    "encode_fields",
    "encode_retry",
    "event_data",
    "split_lines",
]

# §9.2.6: "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED
# (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a single U+000D
# CARRIAGE RETURN (CR) character." CRLF must come first in the alternation so that it
# counts as one break, not two. str.splitlines() is wrong here: it also splits on
# U+2028/U+2029/U+0085/VT/FF/FS/GS/RS, which an SSE receiver keeps inside the line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Split ``text`` on the SSE line terminators CRLF, LF and CR only.

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    list of str
        The lines, without terminators. A trailing terminator yields a final empty
        string (``"a\\n"`` -> ``["a", ""]``), because in a ``data`` payload that empty
        last line is content and must be written (WHATWG HTML §9.2.6: each ``data``
        line adds ``value + LF``, and only one LF is removed at dispatch).

    Notes
    -----
    U+2028, U+2029, U+0085, VT and FF are not line terminators in an event stream
    (§9.2.6 defines only CRLF, LF and CR), so they stay inside the line, unlike
    ``str.splitlines()``.
    """
    if "\n" not in text and "\r" not in text:
        return [text]
    return _LINE_BREAK.split(text)


def _check_single_line(kind: str, value: str, *, allow_nul: bool = True) -> None:
    # A CR or LF in a one-line field would end the line early on the receiver
    # (§9.2.6), letting the rest of the value forge new fields or a dispatch.
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {kind} must be a single line, got {value!r}")
    # §9.2.6: an "id" field whose value contains U+0000 NULL is ignored by the
    # receiver, so the id would silently not take effect; refuse it instead.
    if not allow_nul and "\x00" in value:
        raise ValueError(f"SSE {kind} must not contain NUL, got {value!r}")


def encode_event(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """Encode one event: optional ``id`` and ``event`` lines, ``data`` lines, blank line.

    Parameters
    ----------
    data : str
        The payload. Split on CRLF, LF and CR into one ``data:`` line each (WHATWG HTML
        §9.2.6: each ``data`` field appends its value and a LF, one trailing LF is
        removed at dispatch). ``""`` is written as ``data: `` and arrives as an event
        with empty data; it is *not* lost, because the receiver's data buffer is then
        ``"\\n"``, not empty. Breaks written as CR or CRLF arrive as LF.
    id : str, optional
        The event id. Sets the receiver's last event ID buffer (§9.2.6 "id"), which an
        ``EventSource`` sends back as ``Last-Event-ID`` when it reconnects. ``""`` is
        written as ``id: `` and resets the receiver's last event id.
    event : str, optional
        The event type (§9.2.6 "event"); the receiver uses ``"message"`` when absent or
        empty.

    Returns
    -------
    bytes
        UTF-8 encoded block, ending in a blank line (the dispatch, §9.2.6).

    Raises
    ------
    ValueError
        If ``id`` or ``event`` contains CR or LF, or ``id`` contains NUL (the receiver
        would ignore that id, §9.2.6), or the text cannot be UTF-8 encoded (a lone
        surrogate; ``UnicodeEncodeError`` is a ``ValueError``).

    Examples
    --------
    >>> encode_event('{"p": 1}', id="7", event="tick")
    b'id: 7\\nevent: tick\\ndata: {"p": 1}\\n\\n'
    """
    # Fast path first: the broker encodes every event once, ~100k/s, and almost all
    # payloads are one-line JSON. Two substring scans and one concat beat a regex.
    if "\n" in data or "\r" in data:
        body = "".join(["data: " + line + "\n" for line in _LINE_BREAK.split(data)])
    else:
        body = "data: " + data + "\n"
    if event is not None:
        _check_single_line("event type", event)
        body = "event: " + event + "\n" + body
    if id is not None:
        _check_single_line("event id", id, allow_nul=False)
        body = "id: " + id + "\n" + body
    return (body + "\n").encode("utf-8")


def event_data(frame: bytes) -> bytes:
    """The data of an event written by :func:`encode_event` with one-line data.

    The exact inverse of the framing above for the frames a broker stores (every payload
    is one-line JSON): the bytes between ``data: `` and the final ``\n\n``. It lets a
    stored frame be sent in another framing (a WebSocket message, :mod:`quoteflow.wire.ws`)
    without keeping a second copy of the payload. It is not a parser: anything else is
    refused (:class:`~quoteflow.wire.parser.SSEParser` reads arbitrary streams).

    Parameters
    ----------
    frame : bytes
        ``encode_event(data, id=..., event=...)`` with ``data`` free of CR and LF.

    Returns
    -------
    bytes
        ``data``, UTF-8 encoded.

    Raises
    ------
    ValueError
        ``frame`` is not such a frame (no data line, several lines of data).

    Examples
    --------
    >>> event_data(encode_event('{"p": 1}', id="7", event="tick"))
    b'{"p": 1}'
    """
    # The id and event lines cannot hold a line break (encode_event refuses one), so the
    # first line that starts with "data: " is the data line.
    if frame.startswith(b"data: "):
        start = 6
    else:
        start = frame.find(b"\ndata: ") + 7
        if start == 6:
            raise ValueError(f"not an SSE event frame: {frame[:60]!r}")
    end = len(frame) - 2
    if end < start or not frame.endswith(b"\n\n") or frame.find(b"\n", start, end) != -1:
        raise ValueError(f"not an SSE event frame with one line of data: {frame[:60]!r}")
    return frame[start:end]


def encode_retry(ms: int) -> bytes:
    """Encode a ``retry`` field: the receiver's reconnection time, in milliseconds.

    Parameters
    ----------
    ms : int
        Reconnection time in milliseconds, ``>= 0``.

    Returns
    -------
    bytes
        ``b"retry: <ms>\\n"``: one field line, *without* a blank line. It joins the block
        of the next event (a receiver applies ``retry`` when it reads the line, §9.2.6, so
        it takes effect at once), and no data-less block is ever dispatched. A blank line
        here would be harmless to a WHATWG receiver (empty data buffer: nothing is
        dispatched, §9.2.6 dispatch step 2), but httpx-sse 0.4 turns such a block into an
        empty ``message`` event once an id or retry is set, and ``sse.json()`` then fails
        (issue 18; tests/interop checks every common client).

    Raises
    ------
    ValueError
        If ``ms`` is negative or not an ``int``: the receiver ignores a ``retry`` value
        that is not only ASCII digits (§9.2.6 "retry"), so it would silently not apply.
    """
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"retry must be a non-negative integer of milliseconds, got {ms!r}")
    return b"retry: %d\n" % ms


def encode_comment(text: str = "keepalive") -> bytes:
    """Encode a comment block, e.g. the ``: keepalive`` heartbeat.

    Parameters
    ----------
    text : str, default "keepalive"
        Comment text. Each of its lines (split on CRLF, LF, CR) gets its own ``: ``
        prefix, since a line not starting with a colon would be read as a field
        (§9.2.6: "If the line starts with a U+003A COLON character (:) — Ignore the
        line").

    Returns
    -------
    bytes
        ``b": keepalive\\n"`` for the default: comment lines only, *without* a blank line.
        A receiver ignores comment lines wherever they are (§9.2.6), so no dispatch is
        needed, and sent between two events they simply precede the next event's fields.
        No blank line, so no data-less block that a client such as httpx-sse 0.4 would
        report as an empty event (see :func:`encode_retry`). Bytes still flow, which is
        what a heartbeat is for (a client's silence timeout, a proxy's idle timeout).
    """
    if "\n" in text or "\r" in text:
        body = "".join([": " + line + "\n" for line in _LINE_BREAK.split(text)])
    else:
        body = ": " + text + "\n"
    return body.encode("utf-8")


def encode_fields(fields: Iterable[tuple[str, str]], *, dispatch: bool = True) -> bytes:
    """Encode arbitrary ``name: value`` field lines, for tests and unusual blocks.

    Parameters
    ----------
    fields : iterable of (str, str)
        Field names (``event``, ``data``, ``id``, ``retry`` or any other name, which a
        receiver ignores per §9.2.6) and single-line values, written in order.
    dispatch : bool, default True
        Whether to end with the blank line that dispatches the event (§9.2.6).

    Returns
    -------
    bytes
        The UTF-8 encoded lines.

    Raises
    ------
    ValueError
        If a name is empty, starts with ``:`` or contains ``:``, CR or LF, or a value
        contains CR or LF (either would change how the receiver splits the line,
        §9.2.6), or an ``id`` value contains NUL.
    """
    parts: list[str] = []
    for name, value in fields:
        if not name or ":" in name:
            raise ValueError(f"SSE field name must be non-empty without ':', got {name!r}")
        _check_single_line("field name", name)
        _check_single_line(f"{name!r} value", value, allow_nul=name != "id")
        parts.append(name + ": " + value + "\n")
    if dispatch:
        parts.append("\n")
    return "".join(parts).encode("utf-8")
