"""Exact bytes on the wire for quoteflow.wire.sse (WHATWG HTML §9.2.6)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quoteflow.client import Event, SSEParser
from quoteflow.wire import sse
from quoteflow.wire.sse import (
    encode_comment,
    encode_event,
    encode_fields,
    encode_retry,
    split_lines,
)

# (test id, kwargs of encode_event, exact bytes)
EVENT_TABLE: list[tuple[str, dict[str, str], bytes]] = [
    ("data-only", {"data": "hello"}, b"data: hello\n\n"),
    (
        "id-event-data",
        {"data": '{"p": 1}', "id": "7", "event": "tick"},
        b'id: 7\nevent: tick\ndata: {"p": 1}\n\n',
    ),
    ("event-only", {"data": "x", "event": "bar"}, b"event: bar\ndata: x\n\n"),
    ("id-only", {"data": "x", "id": "42"}, b"id: 42\ndata: x\n\n"),
    ("empty-data", {"data": ""}, b"data: \n\n"),
    ("empty-id-resets", {"data": "x", "id": ""}, b"id: \ndata: x\n\n"),
    ("multi-line-lf", {"data": "a\nb\nc"}, b"data: a\ndata: b\ndata: c\n\n"),
    ("multi-line-crlf", {"data": "a\r\nb"}, b"data: a\ndata: b\n\n"),
    ("multi-line-cr", {"data": "a\rb"}, b"data: a\ndata: b\n\n"),
    ("cr-lf-mixed", {"data": "a\r\rb\n\r\nc"}, b"data: a\ndata: \ndata: b\ndata: \ndata: c\n\n"),
    ("trailing-newline", {"data": "a\n"}, b"data: a\ndata: \n\n"),
    ("only-newline", {"data": "\n"}, b"data: \ndata: \n\n"),
    ("leading-space-kept", {"data": " x"}, b"data:  x\n\n"),
    ("colon-in-data", {"data": "a: b"}, b"data: a: b\n\n"),
    ("unicode", {"data": "Kurs €5 — 株"}, "data: Kurs €5 — 株\n\n".encode()),
    ("u2028-kept", {"data": "a\u2028b\u2029c"}, "data: a\u2028b\u2029c\n\n".encode()),
    ("nel-vt-ff-kept", {"data": "a\x85b\x0bc\x0cd"}, "data: a\x85b\x0bc\x0cd\n\n".encode()),
    ("nul-in-data-ok", {"data": "a\x00b"}, b"data: a\x00b\n\n"),
    ("unicode-id", {"data": "x", "id": "ü-1"}, "id: ü-1\ndata: x\n\n".encode()),
]


@pytest.mark.parametrize(
    ("kwargs", "wire"), [(k, w) for _, k, w in EVENT_TABLE], ids=[i for i, _, _ in EVENT_TABLE]
)
def test_encode_event_exact_bytes(kwargs: dict[str, str], wire: bytes) -> None:
    assert encode_event(**kwargs) == wire


@pytest.mark.parametrize(
    ("kwargs", "wire"), [(k, w) for _, k, w in EVENT_TABLE], ids=[i for i, _, _ in EVENT_TABLE]
)
def test_encoded_event_parses_back(kwargs: dict[str, str], wire: bytes) -> None:
    """Both sides agree: what we write is what a spec parser dispatches."""
    events = SSEParser().feed(wire)
    assert len(events) == 1
    ev = events[0]
    expected_data = kwargs["data"].replace("\r\n", "\n").replace("\r", "\n")
    assert ev.data == expected_data
    assert ev.event == kwargs.get("event", "message")
    assert ev.id == (kwargs.get("id") or None)


def test_empty_data_is_dispatched_not_dropped() -> None:
    # §9.2.6: "data" appends "" + LF -> buffer "\n" is not empty -> dispatched as "".
    assert SSEParser().feed(encode_event("", event="ping")) == [Event("ping", "", None, None)]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"id": "1\n2"}, "event id"),
        ({"id": "1\r"}, "event id"),
        ({"id": "a\x00b"}, "NUL"),
        ({"event": "tick\ndata: forged"}, "event type"),
        ({"event": "\r"}, "event type"),
    ],
)
def test_encode_event_rejects_framing_injection(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        encode_event("x", **kwargs)


def test_encode_event_allows_nul_in_event_type() -> None:
    # Only "id" ignores NUL (§9.2.6); an event type may contain it.
    wire = encode_event("x", event="a\x00b")
    assert SSEParser().feed(wire) == [Event("a\x00b", "x")]


def test_encode_event_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError):
        encode_event("\ud800")


@pytest.mark.parametrize(
    ("ms", "wire"),
    # One line, no blank line after it (issue 18): the retry joins the next event's block,
    # because httpx-sse 0.4 reports a data-less block as an empty event.
    [(0, b"retry: 0\n"), (3000, b"retry: 3000\n"), (10**12, b"retry: 1000000000000\n")],
)
def test_encode_retry(ms: int, wire: bytes) -> None:
    assert encode_retry(ms) == wire
    parser = SSEParser()
    assert parser.feed(wire) == []
    assert parser.retry == ms


@pytest.mark.parametrize("bad", [-1, True, 1.5, "100"])
def test_encode_retry_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_retry(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        # Comment lines only, no blank line (issue 18): a receiver ignores comment
        # lines anywhere (§9.2.6), and a data-less block is an empty event to httpx-sse.
        (None, b": keepalive\n"),
        ("", b": \n"),
        ("hello", b": hello\n"),
        ("a\nb", b": a\n: b\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n"),
        ("a\u2028b", ": a\u2028b\n".encode()),
    ],
)
def test_encode_comment(text: str | None, wire: bytes) -> None:
    out = encode_comment() if text is None else encode_comment(text)
    assert out == wire
    seen: list[str] = []
    parser = SSEParser(on_comment=seen.append)
    assert parser.feed(out) == []  # a comment block never dispatches
    assert seen == split_lines("keepalive" if text is None else text)
    assert parser.comments == len(seen)


def test_comment_between_events_changes_nothing() -> None:
    wire = encode_event("1", id="1", event="tick") + encode_comment() + encode_event("2")
    assert SSEParser().feed(wire) == [Event("tick", "1", "1"), Event("message", "2", "1")]


def test_encode_fields() -> None:
    wire = encode_fields([("id", "9"), ("event", "bar"), ("data", "x"), ("foo", "bar")])
    assert wire == b"id: 9\nevent: bar\ndata: x\nfoo: bar\n\n"
    assert encode_fields([("data", "x")], dispatch=False) == b"data: x\n"
    assert SSEParser().feed(wire) == [Event("bar", "x", "9")]


@pytest.mark.parametrize(
    "fields",
    [[("", "x")], [("a:b", "x")], [("da\nta", "x")], [("data", "x\ny")], [("id", "a\x00")]],
)
def test_encode_fields_rejects(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        encode_fields(fields)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", [""]),
        ("a", ["a"]),
        ("a\n", ["a", ""]),
        ("a\r\nb", ["a", "b"]),
        ("a\n\rb", ["a", "", "b"]),
        ("a\u2028b\x85c\x0bd\x0ce\x1cf", ["a\u2028b\x85c\x0bd\x0ce\x1cf"]),
    ],
)
def test_split_lines_only_on_cr_lf(text: str, lines: list[str]) -> None:
    assert split_lines(text) == lines


def test_sse_module_is_pure_stdlib() -> None:
    """The encoder imports no tornado, nor anything else outside the standard library.

    Loaded by file path in a fresh interpreter without site packages (``-S``), so that
    what the package __init__ files or .pth files import does not blur what sse.py
    itself needs; then every module in ``sys.modules`` must be a standard-library one.
    """
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('sse_probe', {sse.__file__!r}); "
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tornado', 'quoteflow'}); "
        "assert not bad, bad; "
        # Every module loaded at all is part of the standard library (-S: no site
        # packages, no .pth start-up imports), so a third-party import would show here.
        "extra = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
        " - set(sys.builtin_module_names) - {'sse_probe', '__main__'}); "
        "assert not extra, extra; "
        "assert mod.encode_event('x') == b'data: x\\n\\n'"
    )
    subprocess.run([sys.executable, "-S", "-c", code], check=True)
