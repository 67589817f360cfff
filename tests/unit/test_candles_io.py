"""Candle CSV reading and validation; gap report; the real Binance files when present."""

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvn_assets.candles_io import (
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


def _kline(open_ms: int, o: str, h: str, lo: str, c: str, v: str) -> str:
    # Binance dump: open time, o, h, l, c, volume, close time, quote vol, trades, taker x2, ignore
    return f"{open_ms},{o},{h},{lo},{c},{v},{open_ms + 3_599_999},1.0,10,0.5,0.5,0"


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


@pytest.mark.parametrize("pair", PAIRS)
def test_real_2024_2026_has_no_gaps(pair: str) -> None:
    df = read_candles_csv(_real_file(REAL_2024, pair))
    rep = gap_report(df)
    assert (rep["n_gaps"], rep["missing_bars"], rep["n_zero_volume"]) == (0, 0, 0)
    assert len(df) == 17_519
