"""The one place where SSE framing is read: a spec-exact incremental parser and ``Event``.

:class:`SSEParser` turns the bytes of a ``text/event-stream`` body into :class:`Event`
objects, incrementally and for any chunking, following the WHATWG HTML Living Standard
§9.2.6 "Interpreting an event stream" to the letter. The bytes are written by
:mod:`quoteflow.wire.sse`. Standard library only.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Event", "SSEParser"]


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched server-sent event (WHATWG HTML §9.2.6, "dispatch the event").

    Attributes
    ----------
    event : str
        The event type; ``"message"`` when the stream gave no (or an empty) ``event``
        field.
    data : str
        The data buffer with its one trailing LF removed; lines of a multi-line
        payload are joined by LF whatever the stream used (CR, LF or CRLF).
    id : str or None
        The last event ID in force when this event was dispatched. Per §9.2.6 the last
        event ID buffer persists across events, so an event without an ``id`` line
        carries the previous one. ``None`` when no id was ever set or an empty ``id``
        field reset it (the spec's empty string).
    retry : int or None
        The reconnection time in force, in milliseconds, from the latest valid
        ``retry`` field (§9.2.6 "retry"), or ``None`` if the stream never set one.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


# §9.2.6: "Lines must be separated by either a CRLF pair, a single LF, or a single CR."
# CRLF first so that it is one break. Never str.splitlines(): it also breaks on U+2028,
# U+2029, U+0085, VT, FF, FS, GS and RS, which belong inside an SSE line.
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")

# Python refuses int() on more than 4300 digits (CVE-2020-10735 guard); a reconnection
# time that long is absurd anyway, so saturate instead of failing on hostile input.
_MAX_RETRY_DIGITS: Final = 18
_RETRY_SATURATED: Final = 10**_MAX_RETRY_DIGITS - 1


class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG HTML §9.2.6).

    Feed it the body bytes as they arrive, in chunks of any size; it returns the events
    each chunk completes. It implements every rule of §9.2.6 "Interpreting an event
    stream":

    * bytes are decoded as UTF-8 with replacement of invalid sequences ("UTF-8 decode"),
      incrementally, so a character split across chunks is decoded once whole; one
      leading U+FEFF BOM is removed, only at the very start of the stream (the ``bom``
      of the §9.2.5 grammar);
    * lines end with CRLF, LF or CR (§9.2.5 ``end-of-line``), and a CRLF split across two chunks is still one
      line break (no spurious empty line, hence no spurious dispatch); nothing else
      ends a line (U+2028, U+2029, U+0085, VT and FF stay in the line);
    * an empty line dispatches; a line starting with ``:`` is a comment; otherwise the
      field name is up to the first ``:`` and the value after it, minus one leading
      space; a line with no colon is a field name with an empty value;
    * ``event`` sets the event type buffer; ``data`` appends value + LF to the data
      buffer; ``id`` sets the last event ID buffer unless the value contains NUL (an
      empty value resets it); ``retry`` sets the reconnection time if the value is only
      ASCII digits; other fields are ignored;
    * dispatch sets the last event ID, then: empty data buffer -> reset the data and
      event type buffers and dispatch nothing; otherwise remove one trailing LF and
      dispatch with type ``"message"`` when the type buffer is empty;
    * at end of stream (:meth:`finish`) pending data is discarded: an event whose
      blank line never came is not dispatched.

    Parameters
    ----------
    last_event_id : str, optional
        Last event ID carried over from a previous connection (what an ``EventSource``
        keeps across reconnections and sends as ``Last-Event-ID``).
    retry : int, optional
        Reconnection time (ms) carried over from a previous connection.
    on_comment : callable, optional
        Called with the text of each comment line (after the ``:`` and one optional
        space), e.g. to watch ``: keepalive`` heartbeats.

    Attributes
    ----------
    last_event_id : str or None
        The last event ID string as of the latest dispatch step (a blank line), which
        is what a client must send as ``Last-Event-ID`` on reconnection. ``None`` if
        none is in force.
    retry : int or None
        The reconnection time in ms from the latest valid ``retry`` field.
    comments : int
        Number of comment lines seen (heartbeats included).

    Examples
    --------
    >>> p = SSEParser()
    >>> p.feed(b"id: 1\\nevent: tick\\ndata: {}\\n")
    []
    >>> p.feed(b"\\n")
    [Event(event='tick', data='{}', id='1', retry=None)]
    """

    __slots__ = (
        "_after_cr",
        "_data",
        "_decoder",
        "_event_type",
        "_id_buffer",
        "_partial",
        "comments",
        "last_event_id",
        "on_comment",
        "retry",
    )

    def __init__(
        self,
        *,
        last_event_id: str | None = None,
        retry: int | None = None,
        on_comment: Callable[[str], None] | None = None,
    ) -> None:
        self.last_event_id: str | None = last_event_id or None
        self.retry: int | None = retry
        self.on_comment = on_comment
        self.comments = 0
        self._start_stream()

    def _start_stream(self) -> None:
        # "utf-8-sig" is UTF-8 decode (§9.2.6, Encoding Standard): it strips one BOM at
        # the start only, and buffers a BOM or a character split across chunks until it
        # is complete. errors="replace" is the spec's U+FFFD for invalid bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        # Text of the current, not yet terminated line, in pieces (joined lazily so a
        # long line arriving in many chunks costs linear time).
        self._partial: list[str] = []
        # The last chunk ended with CR: an LF at the start of the next one completes a
        # CRLF pair and must not be read as a second (empty) line.
        self._after_cr = False
        # Data buffer as a list of field values: "value + LF" appended per data field
        # and one trailing LF removed at dispatch is exactly "\n".join(values); the
        # buffer is the empty string exactly when the list is empty.
        self._data: list[str] = []
        self._event_type = ""
        # §9.2.6 associates a last event ID buffer with each stream; seeding it with
        # the committed id keeps the id in force across reconnections, as the
        # EventSource's last event ID string is.
        self._id_buffer = self.last_event_id or ""

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse the next chunk of the stream.

        Parameters
        ----------
        chunk : bytes
            The next bytes of the body, split anywhere (inside a line, a CRLF pair or a
            multi-byte UTF-8 character).

        Returns
        -------
        list of Event
            Events dispatched by the blank lines in this chunk, in order (often empty).
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._after_cr:
            self._after_cr = False
            if text[0] == "\n":
                # Second half of a CRLF split across chunks (§9.2.6: CRLF is one break).
                text = text[1:]
                if not text:
                    return []
        if "\n" not in text and "\r" not in text:
            self._partial.append(text)
            return []
        if self._partial:
            self._partial.append(text)
            text = "".join(self._partial)
            self._partial = []
        if text[-1] == "\r":
            self._after_cr = True
        lines = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
        # The piece after the last terminator is an unfinished line ("" if none).
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        return self._process_lines(lines)

    def _process_lines(self, lines: list[str]) -> list[Event]:
        events: list[Event] = []
        for line in lines:
            if not line:
                # §9.2.6 "If the line is empty (a blank line): Dispatch the event".
                # Step 1: the last event ID string takes the buffer's value, whether or
                # not anything is dispatched.
                self.last_event_id = self._id_buffer or None
                if self._data:
                    events.append(
                        Event(
                            self._event_type or "message",
                            "\n".join(self._data),
                            self.last_event_id,
                            self.retry,
                        )
                    )
                    self._data = []
                # Step 2/6: both buffers are reset whether or not data was buffered.
                self._event_type = ""
                continue
            if line[0] == ":":
                # §9.2.6 "If the line starts with a U+003A COLON character: Ignore the
                # line." Counted (and reported) because heartbeats are comments.
                self.comments += 1
                if self.on_comment is not None:
                    text = line[1:]
                    self.on_comment(text[1:] if text[:1] == " " else text)
                continue
            colon = line.find(":")
            if colon < 0:
                # §9.2.6: no colon -> the whole line is the field name, value "".
                name, value = line, ""
            else:
                name = line[:colon]
                value = line[colon + 1 :]
                # §9.2.6: "If value starts with a U+0020 SPACE character, remove it"
                # (exactly one; further spaces are part of the value).
                if value[:1] == " ":
                    value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event_type = value
            elif name == "id":
                # §9.2.6 "id": "If the field value does not contain U+0000 NULL, then
                # set the last event ID buffer to the field value. Otherwise, ignore."
                if "\x00" not in value:
                    self._id_buffer = value
            elif name == "retry" and value.isascii() and value.isdigit():
                # §9.2.6 "retry": only a value of ASCII digits is used (str.isdigit
                # alone would accept "²" or Arabic-Indic digits); anything else,
                # including an empty value, is ignored.
                digits = value.lstrip("0")
                self.retry = (
                    int(digits or "0") if len(digits) <= _MAX_RETRY_DIGITS else _RETRY_SATURATED
                )
            # Any other field name: "The field is ignored."
        return events

    def finish(self) -> None:
        """Signal the end of the stream, discarding any unfinished event.

        §9.2.6: "Once the end of the file is reached, any pending data must be
        discarded. (If the file ends in the middle of an event, before the final empty
        line, the incomplete event is not dispatched.)" The parser is then ready for a
        new stream (a BOM is stripped again), keeping :attr:`last_event_id` and
        :attr:`retry` as an ``EventSource`` keeps them across reconnections.
        """
        self._start_stream()
