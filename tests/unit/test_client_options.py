"""The client's options are declared once (StreamOptions) and the public calls keep theirs.

``stream``, ``EventStream`` and ``iter_events`` take the fields of
:class:`~quoteflow.client.StreamOptions` as keyword arguments, as they did when each
wrote its own thirteen-parameter signature; these tests pin the names and defaults a
notebook or a script relies on, and the errors of a wrong call.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from quoteflow.client import EventStream, StreamOptions, iter_events, stream

#: The keyword parameters of stream() before the options were gathered in one
#: dataclass (quoteflow/client.py at the issue-13 review), plus ``seed``, which
#: EventStream and iter_events accepted then too.
KEYWORDS_BEFORE: dict[str, Any] = {
    "symbols": None,
    "events": None,
    "last_event_id": None,
    "token": None,
    "heartbeat_timeout": 45.0,
    "max_retries": None,
    "backoff_initial": 0.5,
    "backoff_max": 30.0,
    "connect_timeout": 10.0,
    "headers": None,
    "on_status": None,
    "max_queue": 10_000,
    "seed": None,
}

URL = "http://127.0.0.1:9/stream"


@pytest.mark.parametrize("func", [stream, EventStream, iter_events], ids=lambda f: f.__name__)
def test_public_calls_show_every_option_as_a_keyword_with_its_default(func: Any) -> None:
    params = inspect.signature(func).parameters
    assert list(params)[:2] == ["url", "options"]
    keywords = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == KEYWORDS_BEFORE


def test_options_dataclass_is_the_one_declaration() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(StreamOptions)}
    assert fields == KEYWORDS_BEFORE


def test_keywords_and_options_value_give_the_same_stream() -> None:
    by_keyword = stream(URL, symbols=["AAPL", "MSFT"], events="tick", token="t", max_queue=7)
    opts = StreamOptions(symbols=["AAPL", "MSFT"], events="tick", token="t", max_queue=7)
    by_value = stream(URL, opts)
    assert by_keyword.url == by_value.url == f"{URL}?symbols=AAPL,MSFT&events=tick"
    assert by_keyword.options == by_value.options == opts
    assert by_value.max_queue == 7


def test_keywords_override_an_options_value() -> None:
    base = StreamOptions(token="old", max_retries=3)
    es = EventStream(URL, base, token="new")
    assert es.options.token == "new"
    assert es.options.max_retries == 3
    assert base.token == "old"  # frozen: the base is not changed


def test_symbols_from_a_generator_are_kept() -> None:
    opts = StreamOptions(symbols=(s for s in ["A", "B"]))
    # A generator would be empty the second time a URL is built from it.
    assert stream(URL, opts).url == stream(URL, opts).url == f"{URL}?symbols=A,B"


def test_empty_last_event_id_is_none() -> None:
    assert EventStream(URL, last_event_id="").last_event_id is None


def test_unknown_keyword_is_a_type_error_naming_it_and_the_call() -> None:
    with pytest.raises(TypeError, match=r"stream\(\) got an unexpected keyword argument 'tokn'"):
        stream(URL, tokn="x")
    with pytest.raises(TypeError, match=r"iter_events\(\) got an unexpected keyword argument"):
        iter_events(URL, symbol="AAPL")


def test_positional_option_that_is_not_stream_options_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="keyword arguments or one StreamOptions, got str"):
        stream(URL, "AAPL")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heartbeat_timeout": 0}, "heartbeat_timeout must be > 0 or None, got 0"),
        ({"max_retries": -1}, "max_retries must be >= 0 or None, got -1"),
        ({"backoff_initial": -0.1}, "backoff_initial and backoff_max must be >= 0 seconds"),
        ({"backoff_max": -1}, "backoff_initial and backoff_max must be >= 0 seconds"),
        ({"max_queue": 0}, "max_queue must be >= 1, got 0"),
    ],
)
def test_out_of_range_option_is_refused_by_every_door(kwargs: dict[str, Any], message: str) -> None:
    for call in (
        StreamOptions,
        lambda **kw: stream(URL, **kw),
        lambda **kw: iter_events(URL, **kw),
    ):
        with pytest.raises(ValueError, match=message):
            call(**kwargs)


def test_connected_is_derived_from_state() -> None:
    es = EventStream(URL)
    assert (es.state, es.connected) == ("idle", False)
    es.state = "connected"
    assert es.connected
    es.state = "backoff"
    assert not es.connected
