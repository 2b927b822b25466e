"""SSEParser against every rule of WHATWG HTML §9.2.6 "Interpreting an event stream".

Each case is fed three ways: in the chunks given, as one chunk, and byte by byte (which
splits every CRLF pair and every multi-byte UTF-8 character across chunks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from quoteflow.client import Event, SSEParser

E = Event

# (case id, chunks, expected events, expected parser attributes after finish())
CASES: list[tuple[str, list[bytes], list[Event], dict[str, Any]]] = [
    # -- BOM: one U+FEFF removed, only at the very start (UTF-8 decode) -------------
    ("bom-stripped", [b"\xef\xbb\xbfdata: x\n\n"], [E(data="x")], {}),
    ("bom-split-across-chunks", [b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [E(data="x")], {}),
    # A second BOM is part of the first line: field "\ufeffdata" is unknown -> ignored.
    ("only-one-bom-stripped", [b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"], [], {}),
    ("bom-later-is-not-stripped", [b"data: x\n\n\xef\xbb\xbfdata: y\n\n"], [E(data="x")], {}),
    ("bom-inside-data-kept", [b"data: \xef\xbb\xbfx\n\n"], [E(data="\ufeffx")], {}),
    # -- line terminators: CRLF, LF, CR ---------------------------------------------
    ("lf", [b"data: a\n\n"], [E(data="a")], {}),
    ("crlf", [b"data: a\r\n\r\n"], [E(data="a")], {}),
    ("cr", [b"data: a\r\r"], [E(data="a")], {}),
    ("mixed-terminators", [b"data: a\rdata: b\r\ndata: c\n\r\n"], [E(data="a\nb\nc")], {}),
    # A CR ending one chunk and the LF starting the next are ONE break: no extra blank
    # line, so no spurious dispatch between "a" and "b".
    ("crlf-split-no-spurious-dispatch", [b"data: a\r", b"\ndata: b\n\n"], [E(data="a\nb")], {}),
    ("crlf-split-blank-line", [b"data: a\r\n\r", b"\n"], [E(data="a")], {}),
    (
        "crlf-split-then-data",
        [b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"],
        [E(data="a"), E(data="b")],
        {},
    ),
    # A CR at the end of a chunk followed by something else is a complete break.
    ("cr-at-chunk-end-then-field", [b"data: a\r", b"data: b\r", b"\r"], [E(data="a\nb")], {}),
    ("cr-at-chunk-end-then-cr", [b"data: a\r", b"\r"], [E(data="a")], {}),
    ("lf-cr-is-two-breaks", [b"data: a\n\r"], [E(data="a")], {}),
    # -- not line terminators: U+2028, U+2029, U+0085, VT, FF, FS -----------------------
    (
        "unicode-separators-kept-in-line",
        ["data: a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\n\n".encode()],
        [E(data="a\u2028b\u2029c\x85d\x0be\x0cf\x1cg")],
        {},
    ),
    # -- comments -----------------------------------------------------------------------
    ("comments-ignored", [b": hello\ndata: x\n:\n: bye\n\n"], [E(data="x")], {"comments": 3}),
    ("comment-only-block", [b": keepalive\n\n"], [], {"comments": 1}),
    ("colon-not-first-is-field", [b" : x\ndata: y\n\n"], [E(data="y")], {"comments": 0}),
    # -- fields -------------------------------------------------------------------------
    ("event-type", [b"event: tick\ndata: x\n\n"], [E("tick", "x")], {}),
    ("multi-line-data", [b"data: a\ndata: b\ndata: c\n\n"], [E(data="a\nb\nc")], {}),
    ("trailing-empty-data-line", [b"data: a\ndata\n\n"], [E(data="a\n")], {}),
    ("field-without-colon-data", [b"data\n\n"], [E(data="")], {}),
    ("field-without-colon-event", [b"event\ndata: x\n\n"], [E(data="x")], {}),
    ("one-space-stripped-only", [b"data:  two\n\n"], [E(data=" two")], {}),
    ("no-space-after-colon", [b"data:x\n\n"], [E(data="x")], {}),
    ("tab-not-stripped", [b"data:\tx\n\n"], [E(data="\tx")], {}),
    ("colon-in-value", [b"data: a: b:c\n\n"], [E(data="a: b:c")], {}),
    ("unknown-field-ignored", [b"foo: bar\ndata: x\nfoo\n\n"], [E(data="x")], {}),
    ("field-names-case-sensitive", [b"DATA: y\nData: z\ndata: x\n\n"], [E(data="x")], {}),
    ("leading-space-field-name", [b" data: y\ndata: x\n\n"], [E(data="x")], {}),
    # -- empty data and dispatch rules --------------------------------------------------
    ("empty-data-colon", [b"data:\n\n"], [E(data="")], {}),
    ("empty-data-space", [b"data: \n\n"], [E(data="")], {}),
    ("no-data-no-dispatch", [b"event: x\nid: 1\n\n"], [], {"last_event_id": "1"}),
    # Dispatch with an empty data buffer still resets the event type buffer.
    ("event-type-reset-without-data", [b"event: x\n\ndata: y\n\n"], [E(data="y")], {}),
    (
        "event-type-reset-after-dispatch",
        [b"event: x\ndata: 1\n\ndata: 2\n\n"],
        [E("x", "1"), E(data="2")],
        {},
    ),
    ("empty-event-type-is-message", [b"event:\ndata: x\n\n"], [E("message", "x")], {}),
    ("blank-lines-only", [b"\n\n\r\n\r"], [], {}),
    # -- id --------------------------------------------------------------------------------
    (
        "id-persists",
        [b"id: 1\ndata: a\n\ndata: b\n\n"],
        [E(data="a", id="1"), E(data="b", id="1")],
        {"last_event_id": "1"},
    ),
    (
        "empty-id-resets",
        [b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 3\ndata: c\n\nid: \ndata: d\n\n"],
        [E(data="a", id="1"), E(data="b"), E(data="c", id="3"), E(data="d")],
        {"last_event_id": None},
    ),
    (
        "id-with-nul-ignored",
        [b"id: 1\ndata: a\n\nid: 2\x00x\ndata: b\n\n"],
        [E(data="a", id="1"), E(data="b", id="1")],
        {"last_event_id": "1"},
    ),
    ("id-spaces-kept", [b"id:  a b \ndata: x\n\n"], [E(data="x", id=" a b ")], {}),
    ("id-last-wins", [b"id: 1\nid: 2\ndata: x\n\n"], [E(data="x", id="2")], {}),
    ("id-unicode", ["id: ü€\ndata: x\n\n".encode()], [E(data="x", id="ü€")], {}),
    # -- retry ------------------------------------------------------------------------------
    (
        "retry-sets",
        [b"retry: 2500\ndata: x\n\ndata: y\n\n"],
        [E(data="x", retry=2500), E(data="y", retry=2500)],
        {"retry": 2500},
    ),
    ("retry-alone", [b"retry: 10\n\n"], [], {"retry": 10}),
    ("retry-not-digits-ignored", [b"retry: 12a\ndata: x\n\n"], [E(data="x")], {"retry": None}),
    (
        "retry-bad-keeps-previous",
        [b"retry: 1000\nretry: 12a\nretry: -5\nretry: 1.5\ndata: x\n\n"],
        [E(data="x", retry=1000)],
        {"retry": 1000},
    ),
    ("retry-empty-ignored", [b"retry\nretry:\ndata: x\n\n"], [E(data="x")], {"retry": None}),
    ("retry-extra-space-ignored", [b"retry:  100\ndata: x\n\n"], [E(data="x")], {"retry": None}),
    (
        "retry-non-ascii-digits-ignored",
        ["retry: ١٢\nretry: ²\ndata: x\n\n".encode()],
        [E(data="x")],
        {"retry": None},
    ),
    ("retry-leading-zeros", [b"retry: 007\n\n"], [], {"retry": 7}),
    ("retry-applies-before-dispatch", [b"data: x\nretry: 5\n\n"], [E(data="x", retry=5)], {}),
    # -- UTF-8 --------------------------------------------------------------------------
    ("multibyte-split", [b"data: \xe2", b"\x82\xac\xf0\x9f", b"\x98\x80\n\n"], [E(data="€😀")], {}),
    ("invalid-utf8-replaced", [b"data: a\xffb\n\n"], [E(data="a\ufffdb")], {}),
    ("nul-in-data-kept", [b"data: a\x00b\n\n"], [E(data="a\x00b")], {}),
    # -- end of stream -----------------------------------------------------------------
    ("unfinished-event-discarded", [b"data: x\n\ndata: y\n"], [E(data="x")], {}),
    ("unfinished-line-discarded", [b"data: x\n\ndata: y"], [E(data="x")], {}),
    (
        "unfinished-id-not-committed",
        [b"id: 1\ndata: x\n\nid: 2\ndata: y\n"],
        [E(data="x", id="1")],
        {"last_event_id": "1"},
    ),
    ("unfinished-typed-event-discarded", [b"data: x\n\nevent: tick\ndata: y\n"], [E(data="x")], {}),
    ("unfinished-multiline-discarded", [b"data: a\n\ndata: b\ndata: c\n"], [E(data="a")], {}),
    ("unfinished-after-cr-endings", [b"data: x\r\rdata: y\r"], [E(data="x")], {}),
    ("unfinished-crlf-endings", [b"data: x\r\n\r\ndata: y\r\n"], [E(data="x")], {}),
    ("unfinished-field-name-only", [b"data: x\n\nda"], [E(data="x")], {}),
    ("unfinished-only-event", [b"data: y"], [], {"last_event_id": None}),
    # retry takes effect when its line is read (§9.2.6 field processing), not at dispatch.
    ("unfinished-retry-still-applies", [b"data: x\n\nretry: 5\n"], [E(data="x")], {"retry": 5}),
]


def _one_chunk(chunks: list[bytes]) -> list[bytes]:
    return [b"".join(chunks)]


def _bytewise(chunks: list[bytes]) -> list[bytes]:
    blob = b"".join(chunks)
    return [blob[i : i + 1] for i in range(len(blob))]


def _as_given(chunks: list[bytes]) -> list[bytes]:
    return chunks


FEEDERS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "as-given": _as_given,
    "one-chunk": _one_chunk,
    "bytewise": _bytewise,
}


@pytest.mark.parametrize("feeder", FEEDERS, ids=list(FEEDERS))
@pytest.mark.parametrize(
    ("chunks", "expected", "attrs"),
    [(c, e, a) for _, c, e, a in CASES],
    ids=[name for name, *_ in CASES],
)
def test_parser_rules(
    chunks: list[bytes], expected: list[Event], attrs: dict[str, Any], feeder: str
) -> None:
    parser = SSEParser()
    got: list[Event] = []
    for chunk in FEEDERS[feeder](chunks):
        got.extend(parser.feed(chunk))
    parser.finish()
    assert got == expected
    for name, value in attrs.items():
        assert getattr(parser, name) == value, name


def test_finish_discards_pending_event_for_good() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n\ndata: y\n") == [Event(data="x")]
    parser.finish()
    # The blank line that would have dispatched "y" arrives on a *new* stream.
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: z\n\n") == [Event(data="z")]


@pytest.mark.parametrize(
    "pending",
    [
        b"data: y\n",
        b"data: y\ndata: w\n",
        b"event: custom\n",
        b"id: 9\n",
        b"id: 9\ndata: y\nevent: custom\n",
        b"data: y\r",
        b"data: y",
        b"da",
    ],
    ids=["data", "two-data", "event", "id", "all-three", "cr", "open-line", "open-name"],
)
def test_unfinished_event_at_eof_leaves_nothing_for_the_next_stream(pending: bytes) -> None:
    """Whatever shape the unfinished tail has, the next stream's first event is its own:
    no data, type or id of the discarded event carries over (only the committed id)."""
    parser = SSEParser()
    assert parser.feed(b"id: 1\ndata: x\n\n" + pending) == [Event(data="x", id="1")]
    parser.finish()
    assert parser.last_event_id == "1"
    assert parser.feed(b"data: z\n\n") == [Event(data="z", id="1")]


def test_finish_starts_a_new_stream_bom_stripped_again() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb\xbfid: 1\ndata: a\n\n") == [Event(data="a", id="1")]
    parser.finish()
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [Event(data="b", id="1")]


def test_finish_forgets_pending_cr() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\r")
    parser.finish()
    # A new stream starting with LF: that LF is a blank line of its own, not the second
    # half of the previous stream's CR.
    assert parser.feed(b"data: b\n") == []
    assert parser.feed(b"\n") == [Event(data="b")]


def test_seeded_last_event_id_and_retry_carry_over() -> None:
    """What a reconnecting client hands to the parser of its next connection."""
    parser = SSEParser(last_event_id="41", retry=3000)
    assert parser.feed(b"data: a\n\n") == [Event(data="a", id="41", retry=3000)]
    assert parser.feed(b"id: 42\ndata: b\n\n") == [Event(data="b", id="42", retry=3000)]
    assert parser.last_event_id == "42"


def test_empty_seed_means_no_id() -> None:
    parser = SSEParser(last_event_id="")
    assert parser.last_event_id is None
    assert parser.feed(b"data: a\n\n") == [Event(data="a")]


def test_on_comment_receives_text_one_space_stripped() -> None:
    seen: list[str] = []
    parser = SSEParser(on_comment=seen.append)
    parser.feed(b": keepalive\n:raw\n:  two\n:\n\n")
    assert seen == ["keepalive", "raw", " two", ""]
    assert parser.comments == 4


def test_last_event_id_committed_at_blank_line_only() -> None:
    parser = SSEParser()
    parser.feed(b"id: 1\n")
    assert parser.last_event_id is None  # not dispatched yet
    parser.feed(b"\n")
    assert parser.last_event_id == "1"


def test_huge_retry_saturates_instead_of_failing() -> None:
    parser = SSEParser()
    parser.feed(b"retry: " + b"9" * 5000 + b"\n\n")
    assert parser.retry is not None
    assert parser.retry > 10**15


def test_long_line_in_tiny_chunks() -> None:
    """A long line arriving in many chunks is assembled once (linear, not quadratic).

    Checked as a count, not a time: until its line break arrives, the line is held as
    one piece per chunk, none of them copied again, so the total copying is one join of
    the whole line. A parser that re-joined the text so far on every chunk (quadratic)
    would hold a single piece.
    """
    payload = "x" * 200_000
    wire = f"data: {payload}\n\n".encode()
    chunks = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    parser = SSEParser()
    got: list[Event] = []
    line_chunks = 0
    for chunk in chunks:
        if b"\n" in chunk:
            # The line is still open: one untouched piece per chunk so far.
            assert len(parser._partial) == line_chunks
            assert "".join(parser._partial) == wire[: 7 * line_chunks].decode()
            line_chunks = -1
        elif line_chunks >= 0:
            line_chunks += 1
        got.extend(parser.feed(chunk))
    assert line_chunks == -1 and got == [Event(data=payload)]
    assert parser._partial == []


def test_event_defaults_and_frozen() -> None:
    ev = Event()
    assert (ev.event, ev.data, ev.id, ev.retry) == ("message", "", None, None)
    with pytest.raises(AttributeError):
        ev.data = "x"  # type: ignore[misc]


def test_many_events_large_chunks() -> None:
    wire = b"".join(b'id: %d\nevent: tick\ndata: {"seq": %d}\n\n' % (i, i) for i in range(20_000))
    parser = SSEParser()
    got: list[Event] = []
    for i in range(0, len(wire), 4096):
        got.extend(parser.feed(wire[i : i + 4096]))
    assert len(got) == 20_000
    assert got[-1] == Event("tick", '{"seq": 19999}', "19999")
    assert [int(e.id or -1) for e in got] == list(range(20_000))
