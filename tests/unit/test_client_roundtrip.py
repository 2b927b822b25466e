"""Property: whatever quoteflow.wire.sse writes, SSEParser reads back, for any chunking.

The only change on the way is the one SSE itself makes (WHATWG HTML §9.2.6): line
breaks inside data arrive as LF whether they were CR, LF or CRLF, an empty ``id``
resets the last event id (``None``), and an empty event type reads as ``"message"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from quoteflow.client import Event, SSEParser
from quoteflow.wire.sse import encode_comment, encode_event, encode_retry

# Any character UTF-8 can carry (no lone surrogates), with the troublemakers made likely.
_chars = st.characters(codec="utf-8")
_tricky = st.sampled_from(
    ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\ufeff", ":", " ", "\x00"]
)
_text = st.lists(st.one_of(_chars, _tricky), max_size=30).map("".join)
_one_line = _text.map(lambda s: s.replace("\r", "").replace("\n", ""))
_ids = st.one_of(st.none(), _one_line.map(lambda s: s.replace("\x00", "")))
_types = st.one_of(st.none(), _one_line)


@dataclass(frozen=True)
class Ev:
    data: str
    id: str | None
    event: str | None


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass(frozen=True)
class Retry:
    ms: int


_items = st.lists(
    st.one_of(
        st.builds(Ev, data=_text, id=_ids, event=_types),
        st.builds(Comment, text=_text),
        st.builds(Retry, ms=st.integers(min_value=0, max_value=10**9)),
    ),
    max_size=12,
)


def _encode(items: list[Ev | Comment | Retry]) -> tuple[bytes, list[Event], str | None]:
    """Wire bytes, the events a spec parser must dispatch, and the final last event id."""
    wire: list[bytes] = []
    expected: list[Event] = []
    last_id: str | None = None
    retry: int | None = None
    for item in items:
        if isinstance(item, Ev):
            wire.append(encode_event(item.data, id=item.id, event=item.event))
            if item.id is not None:
                last_id = item.id or None
            data = item.data.replace("\r\n", "\n").replace("\r", "\n")
            expected.append(Event(item.event or "message", data, last_id, retry))
        elif isinstance(item, Comment):
            wire.append(encode_comment(item.text))
        else:
            wire.append(encode_retry(item.ms))
            retry = item.ms
    return b"".join(wire), expected, last_id


@settings(max_examples=300, deadline=None)
@given(items=_items, data=st.data())
def test_encode_then_parse_any_chunking(
    items: list[Ev | Comment | Retry], data: st.DataObject
) -> None:
    wire, expected, last_id = _encode(items)
    cuts = sorted(
        data.draw(
            st.lists(st.integers(min_value=0, max_value=len(wire)), max_size=20), label="cuts"
        )
    )
    bounds = [0, *cuts, len(wire)]
    parser = SSEParser()
    got: list[Event] = []
    for start, end in itertools.pairwise(bounds):
        got.extend(parser.feed(wire[start:end]))
    parser.finish()
    assert got == expected
    assert parser.last_event_id == last_id


@settings(max_examples=100, deadline=None)
@given(items=_items)
def test_bytewise_equals_whole(items: list[Ev | Comment | Retry]) -> None:
    wire, expected, _ = _encode(items)
    parser = SSEParser()
    got: list[Event] = []
    for i in range(len(wire)):
        got.extend(parser.feed(wire[i : i + 1]))
    assert got == expected
