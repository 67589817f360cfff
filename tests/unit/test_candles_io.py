"""Candle CSV reading and validation; gap report; the real Binance files when present."""

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.candles_io import (
    CandleValidationError,
    gap_report,
    read_candles_csv,
    resolve_candle_file,
    validate_candles,
)

HEADER = "open_time,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2024-01-01T00:00:00Z,100,101,99,100.5,10",
    "2024-01-01T01:00:00Z,100.5,102,100,101.5,12.5",
    "2024-01-01T02:00:00Z,101.5,101.5,100.9,101,0",
]


def _shared_data() -> Path:
    env = os.environ.get("CVN_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _write(tmp_path: Path, text: str, name: str = "X_1h.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _kline(
    open_t: int, o: str, h: str, lo: str, c: str, v: str, *, close_t: int | None = None
) -> str:
    # Binance dump: open time, o, h, l, c, volume, close time, quote vol, trades, taker x2, ignore
    # close time of an hourly bar: the last ms (or, in the 2025+ us dumps, the last us) of it
    if close_t is None:
        close_t = open_t + (3_599_999_999 if open_t >= 10**14 else 3_599_999)
    return f"{open_t},{o},{h},{lo},{c},{v},{close_t},1.0,10,0.5,0.5,0"


# ------------------------------------------------------------------ reading


def test_read_headed_iso_file(tmp_path: Path) -> None:
    df = read_candles_csv(_write(tmp_path, HEADER + "\n".join(GOOD_ROWS) + "\n"))
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert df.index.name == "open_time"
    assert str(df.index.dtype) == "datetime64[us, UTC]"
    assert df.index[1] == pd.Timestamp("2024-01-01T01:00:00Z")
    assert df.loc[df.index[1]].tolist() == [100.5, 102.0, 100.0, 101.5, 12.5]
    assert all(dt == np.float64 for dt in df.dtypes)


def test_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    rows = ["2024-01-01T02:00:00+02:00,1,1,1,1,1", "2024-01-01T01:00:00,1,1,1,1,1"]
    df = read_candles_csv(_write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    # +02:00 -> 00:00 UTC; no offset is read as UTC
    assert list(df.index) == list(pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"))


def test_read_binance_dump_ms_and_us_per_row(tmp_path: Path) -> None:
    t0 = 1_735_686_000_000  # 2024-12-31T23:00:00Z in ms
    rows = [
        _kline(t0, "1.0", "1.2", "0.9", "1.1", "5"),
        # from 2025 the spot dumps are in microseconds: same file, next hour, detected per row
        _kline((t0 + 3_600_000) * 1000, "1.1", "1.3", "1.0", "1.2", "6"),
        _kline((t0 + 7_200_000) * 1000, "1.2", "1.2", "1.1", "1.15", "7"),
    ]
    df = read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))
    assert list(df.index) == list(
        pd.date_range("2024-12-31T23:00:00Z", periods=3, freq="h", name="open_time")
    )
    assert df["close"].tolist() == [1.1, 1.2, 1.15]


def test_read_binance_dump_with_its_header(tmp_path: Path) -> None:
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\n"
    )
    rows = [_kline(1_700_000_000_000 - 1_700_000_000_000 % 3_600_000, "2", "3", "1", "2.5", "1")]
    df = read_candles_csv(_write(tmp_path, header + rows[0] + "\n"))
    assert df.index[0] == pd.Timestamp("2023-11-14T22:00:00Z")
    assert df["high"].iloc[0] == 3.0


def test_resolve_candle_file_patterns(tmp_path: Path) -> None:
    (tmp_path / "AAA_1h.csv").write_text(HEADER)
    (tmp_path / "BBB.csv").write_text(HEADER)
    assert resolve_candle_file(tmp_path, "AAA") == tmp_path / "AAA_1h.csv"
    assert resolve_candle_file(tmp_path, "BBB") == tmp_path / "BBB.csv"
    with pytest.raises(FileNotFoundError, match=r"CCC.*CCC_1h\.csv.*CCC\.csv"):
        resolve_candle_file(tmp_path, "CCC")
    with pytest.raises(ValueError, match="must contain"):
        resolve_candle_file(tmp_path, "AAA", ["fixed.csv"])


# ------------------------------------------------------------------ validation errors


def _replace(row: int, new: str) -> str:
    rows = list(GOOD_ROWS)
    rows[row] = new
    return HEADER + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        # physical line numbers: the header is line 1, GOOD_ROWS[1] is line 3
        (
            "open_time,open,high,low,close\n2024-01-01T00:00:00Z,1,1,1,1\n",
            r"X_1h\.csv line 1: .*missing column\(s\) \['volume'\]",
        ),
        (
            _replace(1, "2024-13-01T01:00:00Z,1,1,1,1,1"),
            r"line 3 column 'open_time': value '2024-13-01T01:00:00Z'.*unparsable",
        ),
        (
            _replace(1, "2024-01-01T00:00:00Z,100,101,99,100.5,10"),
            r"line 3 column 'open_time'.*duplicate open_time",
        ),
        (
            _replace(2, "2024-01-01T00:30:00Z,1,1,1,1,1"),
            r"line 4 column 'open_time'.*out of order",
        ),
        (
            HEADER + GOOD_ROWS[1] + "\n" + GOOD_ROWS[0] + "\n",
            r"line 3 column 'open_time'.*out of order",
        ),
        (
            _replace(1, "2024-01-01T01:00:00Z,100.5,,100,101.5,12.5"),
            r"line 3 column 'high': value nan: missing value \(NaN\)",
        ),
        (
            _replace(1, "2024-01-01T01:00:00Z,100.5,102,100,abc,12.5"),
            r"line 3 column 'close': value 'abc': not a number",
        ),
        (
            _replace(1, "2024-01-01T01:00:00Z,0,102,100,101.5,12.5"),
            r"line 3 column 'open': value 0.0: price must be positive",
        ),
        (
            _replace(1, "2024-01-01T01:00:00Z,100.5,101,100,101.5,12.5"),
            r"line 3 column 'high': value 101.0: high is below max\(open, close\)",
        ),
        (
            _replace(2, "2024-01-01T02:00:00Z,101.5,101.5,101.2,101,1"),
            r"line 4 column 'low': value 101.2: low is above min\(open, close\)",
        ),
        (
            _replace(1, "2024-01-01T01:00:00Z,100.5,102,100,101.5,-1"),
            r"line 3 column 'volume': value -1.0: volume must be >= 0",
        ),
        ("", r"file is empty"),
        (HEADER, r"header but no candles"),
        ("1700000000000,1,1,1,1\n", r"line 1: .*Binance kline dump with 12 columns, found 5"),
        (
            _kline(1_700_000_000, "1", "1", "1", "1", "1") + "\n",
            r"line 1 column 'open_time': value '1700000000'.*neither milliseconds",
        ),
        (
            _kline(10**25, "1", "1", "1", "1", "1") + "\n",
            r"line 1 column 'open_time': value '1" + "0" * 25 + "'.*neither milliseconds",
        ),
        (
            HEADER + GOOD_ROWS[0] + "\n" + GOOD_ROWS[1] + ",999\n",
            r"X_1h\.csv: malformed CSV \(.*line 3",
        ),
        (_replace(2, ",1,1,1,1,1"), r"line 4 column 'open_time'.*open_time is empty"),
    ],
)
def test_validation_errors_name_file_line_and_value(
    tmp_path: Path, text: str, pattern: str
) -> None:
    with pytest.raises(CandleValidationError, match=pattern):
        read_candles_csv(_write(tmp_path, text))


def test_mixed_intervals_and_off_hour_grid(tmp_path: Path) -> None:
    base = ["2024-01-01T00:00:00Z,1,1,1,1,1", "2024-01-01T01:00:00Z,1,1,1,1,1"]
    # a 1-minute candle mixed into the hourly file
    sub = base + ["2024-01-01T01:01:00Z,1,1,1,1,1"]
    with pytest.raises(
        CandleValidationError, match=r"line 4 column 'open_time'.*mixed intervals: sub-hour step"
    ):
        read_candles_csv(_write(tmp_path, HEADER + "\n".join(sub) + "\n"))
    # a 90-minute step
    odd = base + ["2024-01-01T02:30:00Z,1,1,1,1,1"]
    with pytest.raises(
        CandleValidationError,
        match=r"line 4 .*step not a whole number of hours \(0 days 01:30:00\)",
    ):
        read_candles_csv(_write(tmp_path, HEADER + "\n".join(odd) + "\n"))
    # steps of exactly one hour, but the grid is shifted by 30 minutes
    shifted = [f"2024-01-01T0{h}:30:00Z,1,1,1,1,1" for h in range(3)]
    with pytest.raises(CandleValidationError, match=r"line 2 .*not on the hour"):
        read_candles_csv(_write(tmp_path, HEADER + "\n".join(shifted) + "\n"))
    # on a frame (no file): the row position and its open time are named
    idx = pd.DatetimeIndex(
        ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:30:00Z"], name="t"
    )
    frame = pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])
    with pytest.raises(
        CandleValidationError, match=r"row 2, open_time 2024-01-01 02:30:00.*mixed intervals"
    ):
        validate_candles(frame)
    # whole-hour gaps are legal
    gap = base + ["2024-01-01T05:00:00Z,1,1,1,1,1"]
    assert len(read_candles_csv(_write(tmp_path, HEADER + "\n".join(gap) + "\n"))) == 3


def test_error_carries_structured_fields(tmp_path: Path) -> None:
    text = _replace(1, "2024-01-01T01:00:00Z,100.5,101,100,101.5,12.5")
    with pytest.raises(CandleValidationError) as err:
        read_candles_csv(_write(tmp_path, text, "BTC_1h.csv"))
    e = err.value
    assert (e.source, e.line, e.column, e.value) == ("BTC_1h.csv", 3, "high", 101.0)
    assert isinstance(e, ValueError)


def test_counts_affected_rows(tmp_path: Path) -> None:
    rows = [f"2024-01-01T0{h}:00:00Z,1,1,1,1,-{h + 1}" for h in range(3)]
    with pytest.raises(CandleValidationError, match=r"line 2 .*\(3 rows affected; the first"):
        read_candles_csv(_write(tmp_path, HEADER + "\n".join(rows) + "\n"))


def test_validate_frame_rejects_naive_index_and_missing_columns() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="h")
    frame = pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])
    with pytest.raises(CandleValidationError, match="timezone-naive"):
        validate_candles(frame)
    with pytest.raises(CandleValidationError, match=r"missing column\(s\) \['volume'\]"):
        validate_candles(frame.tz_localize("UTC").drop(columns="volume"))
    with pytest.raises(CandleValidationError, match="DatetimeIndex"):
        validate_candles(frame.reset_index(drop=True))


# ------------------------------------------------------------------ bar interval

H_MS = 3_600_000
T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, microseconds (2025+ spot dumps)


def _dump(opens: list[int], span: int) -> str:
    """Binance dump rows at ``opens`` whose close_time is ``open + span``."""
    return "\n".join(_kline(t, "1", "1", "1", "1", "1", close_t=t + span) for t in opens) + "\n"


def test_binance_4h_dump_is_refused_not_read_as_hourly_with_gaps(tmp_path: Path) -> None:
    # the file: 6 four-hour klines, close_time = open_time + 4 h - 1 ms
    opens = [T0_MS + 4 * H_MS * i for i in range(6)]
    path = _write(tmp_path, _dump(opens, 4 * H_MS - 1))
    with pytest.raises(CandleValidationError) as err:
        read_candles_csv(path)
    e = err.value
    assert (e.source, e.line, e.column, e.n_rows) == ("X_1h.csv", 1, "close_time", 6)
    assert e.value == str(T0_MS + 4 * H_MS - 1)
    assert str(e).startswith(
        "X_1h.csv line 1 column 'close_time': value '1704081599999': bar interval is 4h "
        "(close_time - open_time + 1 ms), expected 1h: wrong bar interval "
        "[open_time 2024-01-01 00:00:00+00:00] (6 rows affected"
    )
    # the same file is fine when 4-hour candles are what the caller expects
    df = read_candles_csv(path, interval="4h")
    assert list(df.index) == list(pd.date_range("2024-01-01", periods=6, freq="4h", tz="UTC"))


def test_binance_4h_dump_in_microseconds_is_refused(tmp_path: Path) -> None:
    # 2025+ spot dumps: close_time = open_time + 4 h - 1 us, the tick is a microsecond
    opens = [T0_US + 4 * H_MS * 1000 * i for i in range(6)]
    path = _write(tmp_path, _dump(opens, 4 * H_MS * 1000 - 1))
    with pytest.raises(
        CandleValidationError,
        match=r"X_1h\.csv line 1 column 'close_time'.*bar interval is 4h "
        r"\(close_time - open_time \+ 1 us\), expected 1h",
    ):
        read_candles_csv(path)
    assert len(read_candles_csv(path, interval="4h")) == 6
    # the ms rule applied to a us file would be off by 999 us: not accepted as hourly either
    hourly_ms_rule = [T0_US + H_MS * 1000 * i for i in range(3)]
    with pytest.raises(CandleValidationError, match=r"line 1 .*bar interval is 59m59s999ms1us"):
        read_candles_csv(_write(tmp_path, _dump(hourly_ms_rule, H_MS * 1000 - 1000)))


@pytest.mark.parametrize(
    ("span", "pattern"),
    [
        (0, r"line 3 column 'close_time': value '1704074400000': close_time is not after"),
        (-5, r"line 3 column 'close_time': value '1704074399995': close_time is not after"),
    ],
)
def test_close_time_not_after_open_time_names_the_line(
    tmp_path: Path, span: int, pattern: str
) -> None:
    rows = [_kline(T0_MS + H_MS * i, "1", "1", "1", "1", "1") for i in range(4)]
    t = T0_MS + 2 * H_MS
    rows[2] = _kline(t, "1", "1", "1", "1", "1", close_t=t + span)
    with pytest.raises(CandleValidationError, match=pattern) as err:
        read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))
    assert err.value.line == 3


@pytest.mark.parametrize(
    ("close_span", "found", "unit"),
    [
        (4 * H_MS - 1, "4h", "ms"),  # one 4-hour kline spliced into an hourly dump
        (60_000 - 1, "1m", "ms"),  # one 1-minute kline
        (H_MS, "1h1ms", "ms"),  # close_time = the next open (not Binance's convention)
    ],
)
def test_single_bad_row_in_a_good_hourly_dump_is_named_by_its_line(
    tmp_path: Path, close_span: int, found: str, unit: str
) -> None:
    rows = [_kline(T0_MS + H_MS * i, "1", "1", "1", "1", "1") for i in range(10)]
    t = T0_MS + 5 * H_MS
    rows[5] = _kline(t, "1", "1", "1", "1", "1", close_t=t + close_span)
    with pytest.raises(CandleValidationError) as err:
        read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))
    e = err.value
    assert (e.line, e.column, e.n_rows) == (6, "close_time", 1)
    assert f"bar interval is {found} (close_time - open_time + 1 {unit}), expected 1h" in str(e)
    assert "[open_time 2024-01-01 05:00:00+00:00]" in str(e)
    assert "rows affected" not in str(e)


def test_single_bad_row_in_a_microsecond_dump(tmp_path: Path) -> None:
    # a dump straddling 2025: ms rows, then us rows; the bad row is a us one
    rows = [_kline(T0_US // 1000 - H_MS * (3 - i), "1", "1", "1", "1", "1") for i in range(3)]
    rows += [_kline(T0_US + H_MS * 1000 * i, "1", "1", "1", "1", "1") for i in range(4)]
    t = T0_US + 2 * H_MS * 1000
    rows[5] = _kline(t, "1", "1", "1", "1", "1", close_t=t + 4 * H_MS * 1000 - 1)
    with pytest.raises(
        CandleValidationError,
        match=r"line 6 column 'close_time'.*bar interval is 4h \(close_time - open_time \+ 1 us\)",
    ):
        read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))
    rows[5] = _kline(t, "1", "1", "1", "1", "1")
    assert len(read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))) == 7


def test_close_time_in_another_unit_than_open_time_is_refused(tmp_path: Path) -> None:
    rows = [_kline(T0_MS + H_MS * i, "1", "1", "1", "1", "1") for i in range(3)]
    t = T0_MS + 1 * H_MS
    rows[1] = _kline(t, "1", "1", "1", "1", "1", close_t=(t + H_MS) * 1000 - 1)
    with pytest.raises(
        CandleValidationError,
        match=r"line 2 column 'close_time'.*epoch in us but open_time in ms on the same row",
    ):
        read_candles_csv(_write(tmp_path, "\n".join(rows) + "\n"))


def test_headed_4h_file_without_close_time_is_refused(tmp_path: Path) -> None:
    rows = [f"2024-01-01T{4 * i:02d}:00:00Z,1,1,1,1,1" for i in range(6)]
    path = _write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(CandleValidationError) as err:
        read_candles_csv(path)
    e = err.value
    assert (e.source, e.line, e.column, e.n_rows) == ("X_1h.csv", 3, "open_time", 5)
    assert (
        "wrong bar interval: the most common step between candles is 4h (5 of 5 steps), "
        "expected 1h" in str(e)
    )
    assert len(read_candles_csv(path, interval="4h")) == 6
    # a 15-minute file read as hourly: the wrong interval, not merely "mixed intervals"
    quarter = [f"2024-01-01T00:{15 * i:02d}:00Z,1,1,1,1,1" for i in range(4)]
    with pytest.raises(
        CandleValidationError, match=r"line 3 .*most common step between candles is 15m"
    ):
        read_candles_csv(_write(tmp_path, HEADER + "\n".join(quarter) + "\n"))
    # the modal step decides: a 4h file with one hourly step is still a 4h file
    mostly_4h = ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"] + [
        f"2024-01-01T{h:02d}:00:00Z" for h in (5, 9, 13)
    ]
    text = HEADER + "\n".join(f"{t},1,1,1,1,1" for t in mostly_4h) + "\n"
    with pytest.raises(CandleValidationError, match=r"line 4 .*is 4h \(3 of 4 steps\)"):
        read_candles_csv(_write(tmp_path, text))


def test_headed_file_with_close_time_column(tmp_path: Path) -> None:
    header = HEADER.strip() + ",close_time\n"
    ok_ms = [
        f"2024-01-01T{h:02d}:00:00Z,1,1,1,1,1,2024-01-01T{h:02d}:59:59.999Z" for h in (0, 1, 4)
    ]
    ok_us = [
        f"2024-01-01T{h:02d}:00:00Z,1,1,1,1,1,2024-01-01T{h:02d}:59:59.999999Z" for h in (0, 1, 4)
    ]
    for rows in (ok_ms, ok_us):
        assert len(read_candles_csv(_write(tmp_path, header + "\n".join(rows) + "\n"))) == 3
    # ISO close times of 4-hour bars
    bad = [
        f"2024-01-01T{4 * i:02d}:00:00Z,1,1,1,1,1,2024-01-01T{4 * i + 3:02d}:59:59.999Z"
        for i in range(3)
    ]
    with pytest.raises(
        CandleValidationError,
        match=r"line 2 column 'close_time': value '2024-01-01T03:59:59\.999Z': bar interval is 4h",
    ):
        read_candles_csv(_write(tmp_path, header + "\n".join(bad) + "\n"))
    # Binance's own header with epoch ms close times of 4-hour bars
    binance_header = ",".join(
        ["open_time", "open", "high", "low", "close", "volume", "close_time"]
        + ["quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
    )
    opens = [T0_MS + 4 * H_MS * i for i in range(3)]
    with pytest.raises(
        CandleValidationError,
        match=r"line 2 column 'close_time'.*bar interval is 4h \(close_time - open_time \+ 1 ms\)",
    ):
        read_candles_csv(_write(tmp_path, binance_header + "\n" + _dump(opens, 4 * H_MS - 1)))
    # an empty or unparsable close time is named like an open time
    empty = list(ok_ms)
    empty[1] = "2024-01-01T01:00:00Z,1,1,1,1,1,"
    with pytest.raises(CandleValidationError, match=r"line 3 column 'close_time'.*is empty"):
        read_candles_csv(_write(tmp_path, header + "\n".join(empty) + "\n"))


def test_valid_hourly_files_with_gaps_are_accepted(tmp_path: Path) -> None:
    # headed, no close_time: the hourly step is the most common one despite two gaps
    hours = [0, 1, 4, 5, 9, 10]
    rows = [f"2024-01-01T{h:02d}:00:00Z,1,1,1,1,1" for h in hours]
    df = read_candles_csv(_write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert gap_report(df)["missing_bars"] == 5
    # a tie between the hourly step and a gap is accepted
    tie = [f"2024-01-01T{h:02d}:00:00Z,1,1,1,1,1" for h in (0, 1, 4)]
    assert len(read_candles_csv(_write(tmp_path, HEADER + "\n".join(tie) + "\n"))) == 3
    # Binance dump with gaps: every close time is right, steps are whole hours
    opens = [T0_MS + H_MS * h for h in hours]
    df = read_candles_csv(_write(tmp_path, _dump(opens, H_MS - 1)))
    assert gap_report(df)["missing_bars"] == 5
    # in a dump the close times are the evidence: sparse hourly klines are still hourly
    sparse = [T0_MS + 4 * H_MS * i for i in range(4)]
    assert len(read_candles_csv(_write(tmp_path, _dump(sparse, H_MS - 1)))) == 4
    # a single candle has no step to judge
    assert len(read_candles_csv(_write(tmp_path, HEADER + rows[0] + "\n"))) == 1


def test_validate_frame_checks_the_interval() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="4h", tz="UTC")
    frame = pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])
    with pytest.raises(
        CandleValidationError,
        match=r"row 1, open_time 2024-01-01 04:00:00.*most common step between candles is 4h",
    ):
        validate_candles(frame)
    assert len(validate_candles(frame, interval="4h")) == 5
    # a non-hourly interval uses its own grid and multiples
    shifted = frame.set_axis(idx + pd.Timedelta(hours=1))
    with pytest.raises(CandleValidationError, match=r"row 0, .*not on the 4h grid"):
        validate_candles(shifted, interval="4h")
    odd = frame.set_axis(idx.delete(4).append(pd.DatetimeIndex([idx[3] + pd.Timedelta("6h")])))
    with pytest.raises(CandleValidationError, match=r"row 4, .*step not a whole multiple of 4h"):
        validate_candles(odd, interval="4h")


@pytest.mark.parametrize("bad", ["3D", "1W", "7min", "0h", "-1h", "1ns", "soon", None])
def test_interval_must_divide_a_day(tmp_path: Path, bad: object) -> None:
    path = _write(tmp_path, HEADER + GOOD_ROWS[0] + "\n")
    with pytest.raises(ValueError, match="interval must be"):
        read_candles_csv(path, interval=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ gaps are legal


def test_gap_report_by_hand(tmp_path: Path) -> None:
    hours = [0, 1, 4, 5, 9, 10]  # gaps: 2..3 missing (2 bars), 6..8 missing (3 bars)
    rows = [f"2024-01-01T{h:02d}:00:00Z,1,1,1,1,{0 if h == 5 else 1}" for h in hours]
    df = read_candles_csv(_write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    rep = gap_report(df)
    assert rep["n_gaps"] == 2
    assert rep["missing_bars"] == 5
    assert rep["longest_gap_hours"] == 3
    assert rep["n_zero_volume"] == 1
    assert rep["n_rows"] == 6
    assert [g[2] for g in rep["gaps"]] == [2, 3]
    assert rep["gaps"][0][:2] == (df.index[1], df.index[2])
    no_gap = gap_report(df.iloc[:2])
    assert (no_gap["n_gaps"], no_gap["missing_bars"], no_gap["longest_gap_hours"]) == (0, 0, 0)


# ------------------------------------------------------------------ real Binance files


REAL_2021 = "binance_spot_1h_2021_2023"
REAL_2024 = "binance_spot_1h_2024_2026"
PAIRS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")


def _real_file(folder: str, pair: str) -> Path:
    path = _shared_data() / folder / f"{pair}_1h.csv"
    if not path.is_file():
        pytest.skip(f"real Binance candles not present at {path} (shared data folder absent)")
    return path


@pytest.mark.parametrize("pair", PAIRS)
def test_real_2021_2023_gaps_and_zero_volume(pair: str) -> None:
    df = read_candles_csv(_real_file(REAL_2021, pair))
    rep = gap_report(df)
    # data README: 12 missing hours in 5 gaps and one flat zero-volume candle in every pair
    assert rep["n_gaps"] == 5
    assert rep["missing_bars"] == 12
    assert rep["longest_gap_hours"] == 4  # 2021-08-13
    assert rep["n_zero_volume"] == 1
    zero = df.index[df["volume"] == 0][0]
    assert zero == pd.Timestamp("2023-03-24T12:00:00Z")
    assert [g[1].strftime("%Y-%m-%d") for g in rep["gaps"]] == [
        "2021-04-20",
        "2021-04-25",
        "2021-08-13",
        "2021-09-29",
        "2023-03-24",
    ]


@pytest.mark.parametrize("pair", ["BTCUSDT", "XRPUSDT"])
def test_real_files_are_read_unchanged(pair: str) -> None:
    path = _real_file(REAL_2021, pair)
    df = read_candles_csv(path)
    with path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["open_time", "open", "high", "low", "close", "volume"]
    body = rows[1:]
    assert len(df) == len(body)
    expected = np.array([[float(x) for x in r[1:]] for r in body])
    np.testing.assert_array_equal(df.to_numpy(), expected)  # exact: decimal strings -> float
    stamps = pd.DatetimeIndex([pd.Timestamp(r[0]) for r in body[:: max(1, len(body) // 500)]])
    assert df.index[:: max(1, len(body) // 500)].equals(stamps.as_unit("us").rename("open_time"))


def test_real_file_read_as_4h_is_refused() -> None:
    path = _real_file(REAL_2021, "BTCUSDT")
    with pytest.raises(
        CandleValidationError,
        match=r"BTCUSDT_1h\.csv line 3 column 'open_time'.*most common step between candles is "
        r"1h \(\d+ of \d+ steps\), expected 4h",
    ):
        read_candles_csv(path, interval="4h")


@pytest.mark.parametrize("pair", PAIRS)
def test_real_2024_2026_has_no_gaps(pair: str) -> None:
    df = read_candles_csv(_real_file(REAL_2024, pair))
    rep = gap_report(df)
    assert (rep["n_gaps"], rep["missing_bars"], rep["n_zero_volume"]) == (0, 0, 0)
    assert len(df) == 17_519
