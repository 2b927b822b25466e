"""The roll-up rule of ``/history`` (quoteflow/wire/bars.py), as a table of cases."""

from __future__ import annotations

import pytest

from quoteflow.wire.bars import BASE, Bar, BarBuilder, iso_ms, roll_up, valid_intervals


def bar(start: str, end: str, o: float, h: float, lo: float, c: float, v: int) -> Bar:
    return Bar(f"2026-12-02T10:{start}Z", f"2026-12-02T10:{end}Z", o, h, lo, c, v)


BASE_BARS = [
    (bar("00:58.500", "00:59.750", 10, 11, 9, 10.5, 100), "1"),
    (bar("01:00.000", "01:01.250", 10.5, 12, 10, 11, 200), "2"),
    (bar("01:01.500", "01:02.750", 11, 11.5, 8, 9, 300), "3"),
    (bar("01:59.000", "01:59.900", 9, 9.5, 8.5, 9.2, 50), "4"),
    (bar("02:00.100", "02:01.000", 9.2, 9.3, 9.1, 9.3, 10), "5"),
]


def test_base_bars_pass_through_unchanged_each_complete_at_once() -> None:
    assert roll_up(BASE_BARS, BASE, 1500) == BASE_BARS


def test_minute_buckets_start_on_the_minute_and_complete_on_the_next_bucket() -> None:
    done = roll_up(BASE_BARS, "1m", 1500)
    # 10:00 (bar 1), 10:01 (bars 2-4); 10:02 (bar 5) is still open.
    assert done == [
        (BASE_BARS[0][0], "1"),
        (bar("01:00.000", "01:59.900", 10.5, 12, 8, 9.2, 550), "4"),
    ]


def test_builder_holds_the_open_bucket() -> None:
    b = BarBuilder("1m", 1500)
    assert [b.add(x, i) for x, i in BASE_BARS[1:4]] == [None, None, None]
    assert b.pending == bar("01:00.000", "01:59.900", 10.5, 12, 8, 9.2, 550)


@pytest.mark.parametrize(
    ("base_ms", "valid"),
    [
        (1000, ["1s", "5s", "15s", "1m", "5m", "15m", "1h", "1d"]),
        (5000, ["5s", "15s", "1m", "5m", "15m", "1h", "1d"]),
        (2000, ["1m", "5m", "15m", "1h", "1d"]),
        (250, ["1s", "5s", "15s", "1m", "5m", "15m", "1h", "1d"]),
        (7000, []),
    ],
)
def test_valid_intervals_are_whole_multiples(base_ms: float, valid: list[str]) -> None:
    assert valid_intervals(base_ms) == valid


def test_bad_intervals_are_named() -> None:
    with pytest.raises(ValueError, match="unknown interval '2s'"):
        BarBuilder("2s", 1000)
    with pytest.raises(ValueError, match=r"not a multiple .* \(2 s\): choose from 1m, 5m"):
        BarBuilder("5s", 2000)


def test_iso_ms() -> None:
    assert iso_ms("1970-01-01T00:00:01.234Z") == 1234
    with pytest.raises(ValueError, match="no time zone"):
        iso_ms("2026-12-02T10:00:00")
