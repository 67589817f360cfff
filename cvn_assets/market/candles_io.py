"""Read and validate hourly OHLCV candles (pure: no Dagster).

Two on-disk forms are accepted, one file per symbol:

* the Binance public kline dump: 12 columns, no header (``open time, open, high, low, close,
  volume, close time, quote volume, trades, taker base, taker quote, ignore``), open time as an
  epoch integer in milliseconds -- or microseconds, which the Binance spot dumps use from
  2025-01-01 on. The unit is detected per row by magnitude, so a file that straddles the switch
  reads correctly. The same columns with Binance's header line are accepted too.
* a headed ``open_time,open,high,low,close,volume`` file with ISO 8601 timestamps (UTC; an
  explicit offset is converted, none means UTC), the form of the public Binance candle archives
  mirrored as CSV; extra columns are ignored.

The bar interval is checked, not assumed (default 1 hour, the ``interval`` parameter): a file
that holds 4-hour candles is refused, never read as hourly candles "with gaps". Where the file has
a ``close_time`` (every Binance dump; a headed file that names the column) each row's bar length
``close_time - open_time + 1 tick`` must equal the interval, the tick being the resolution the
close time is written in (1 ms, or 1 us in the 2025+ microsecond dumps); without ``close_time``
the most common step between consecutive open times must be the interval.

Every frame that leaves this module has the project's candle contract (docs/CONTRACTS.md): a UTC
``DatetimeIndex`` named ``open_time`` and float64 columns ``open, high, low, close, volume``.

Bad input is refused *before* any downstream work with a :class:`CandleValidationError` naming
the file, the line and the offending value. Gaps (exchange outages) and flat zero-volume candles
are legal market facts, not errors: :func:`gap_report` counts them so that a run can show them.
"""

import functools
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Columns of a candle frame, in order (the index is ``open_time``)."""

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
"""The 12 columns of a Binance kline dump (binance/binance-public-data README)."""

DEFAULT_FILENAME_PATTERNS: tuple[str, ...] = ("{symbol}_1h.csv", "{symbol}.csv")
"""File names tried for a symbol when no explicit pattern matches."""

HOUR_US = 3_600_000_000
"""One hour in microseconds (the resolution of the candle index)."""

DAY_US = 24 * HOUR_US

DEFAULT_INTERVAL = "1h"
"""The bar interval expected of every candle file and frame unless told otherwise."""

_MS_TICK_US = 1_000
_US_TICK_US = 1
_ISO_TICK = 0  # an ISO 8601 text: its tick is read off the value (see _check_close_times)

# Epoch magnitudes: milliseconds for 2001..2286 lie in [1e12, 1e13); Binance switched its spot
# dumps to microseconds from 2025, values in [1e15, 1e16). Anything else is refused rather than
# guessed (seconds or nanoseconds would silently land in 1970 or the far future).
_MS_RANGE = (10**11, 10**14)
_US_RANGE = (10**14, 10**17)


class CandleValidationError(ValueError):
    """Candles that break the OHLCV contract. Carries where and what, for the message and tests.

    Attributes: ``source`` (file name or label), ``line`` (1-based physical line in the file, or
    ``None``), ``column``, ``value`` and ``problem``.
    """

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        line: int | None = None,
        column: str | None = None,
        value: object = None,
        n_rows: int = 1,
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.value = value
        self.problem = problem
        self.n_rows = n_rows
        where = source if line is None else f"{source} line {line}"
        what = "" if column is None else f" column {column!r}"
        val = "" if value is None else f" value {value!r}:"
        more = "" if n_rows <= 1 else f" ({n_rows} rows affected; the first is shown)"
        super().__init__(f"{where}{what}:{val} {problem}{more}")


def interval_us(interval: str | timedelta = DEFAULT_INTERVAL) -> int:
    """The bar interval in microseconds; refuses what cannot be a fixed candle grid.

    ``interval`` is anything :class:`pandas.Timedelta` reads (``"1h"``, ``"4h"``, ``"15min"``, a
    :class:`datetime.timedelta`). It must be a positive whole number of microseconds that divides
    one day, so that candles open on a grid anchored at 00:00 UTC (Binance's 1m ... 1d klines;
    3d, 1w and 1M bars are not fixed-length grids of that kind and are refused).
    """
    try:
        td = pd.Timedelta(interval)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"interval must be a duration such as '1h', got {interval!r}") from exc
    if pd.isna(td):
        raise ValueError(f"interval must be a duration such as '1h', got {interval!r}")
    us, rest_ns = divmod(int(td.value), 1000)
    if us <= 0 or rest_ns != 0 or DAY_US % us != 0:
        raise ValueError(
            f"interval must be a positive whole number of microseconds that divides one day "
            f"(e.g. '1min', '15min', '1h', '4h', '1D'), got {interval!r}"
        )
    return us


def format_interval(us: int) -> str:
    """A duration in microseconds written the way Binance names intervals: ``4h``, ``15m``,
    ``1d``; mixed lengths concatenate their parts (``59m59s999ms``), negatives get a ``-``."""
    if us == 0:
        return "0s"
    sign = "-" if us < 0 else ""
    rest = abs(int(us))
    parts: list[str] = []
    for unit, size in (
        ("d", DAY_US),
        ("h", HOUR_US),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ):
        q, rest = divmod(rest, size)
        if q:
            parts.append(f"{q}{unit}")
    return sign + "".join(parts)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def resolve_candle_file(
    csv_dir: str | Path,
    symbol: str,
    patterns: Iterable[str] = DEFAULT_FILENAME_PATTERNS,
) -> Path:
    """Return the file holding ``symbol`` in ``csv_dir``, trying each pattern in turn.

    Patterns use ``{symbol}`` (e.g. ``"{symbol}_1h.csv"``). The error lists every path tried so a
    misnamed folder is diagnosed in one look.
    """
    folder = Path(csv_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"csv_dir {str(folder)!r} is not a directory")
    tried: list[str] = []
    for pattern in patterns:
        if "{symbol}" not in pattern:
            raise ValueError(f"filename pattern {pattern!r} must contain '{{symbol}}'")
        candidate = folder / pattern.format(symbol=symbol)
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    hint = ""
    if symbol.endswith("USDC"):
        usdt = symbol.removesuffix("USDC") + "USDT"
        if any((folder / p.format(symbol=usdt)).is_file() for p in patterns):
            hint = (
                f"; the folder has {usdt} files: map them with "
                f'CVN_SYMBOL_MAP=\'{{"{symbol}": "{usdt}", ...}}\''
            )
    raise FileNotFoundError(f"no candle file for symbol {symbol!r}; tried {tried}{hint}")


def _first_line(path: Path) -> str:
    with path.open("r", encoding="utf-8-sig") as fh:
        for raw in fh:
            if raw.strip():
                return raw.strip()
    return ""


def _read_text_table(path: Path, header: Literal["infer"] | None) -> pd.DataFrame:
    """All cells as text (blank lines kept, so positions map to physical lines)."""
    try:
        return pd.read_csv(
            path, header=header, dtype=str, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except pd.errors.ParserError as exc:  # ragged rows: the parser names the line
        raise CandleValidationError(path.name, f"malformed CSV ({exc})") from exc


def read_candles_csv(
    path: str | Path, interval: str | timedelta = DEFAULT_INTERVAL
) -> pd.DataFrame:
    """Read one symbol's candles of bar length ``interval`` (default 1 hour) and validate them.

    The layout is detected from the first line: a first field that is an integer means a
    headerless Binance dump (12 columns); otherwise the line is a header that must name
    ``open_time, open, high, low, close, volume`` (extra columns, e.g. the rest of Binance's
    header, are ignored; a ``close_time`` column is used, see below). Values are read as text
    first and converted here, so the error for an unparsable value names its line rather than
    failing inside the CSV parser.

    The bar interval is checked on every file (a 4-hour dump is refused, not read as hourly
    candles with gaps):

    * with a ``close_time`` (always in a Binance dump): on every row ``close_time`` must come
      after ``open_time`` and ``close_time - open_time + 1 tick`` must equal ``interval``; the
      tick is the unit the close time is written in -- 1 ms for a millisecond epoch, 1 us for a
      microsecond epoch (Binance spot dumps from 2025), detected per row by magnitude like
      ``open_time``, and a row whose two epochs are in different units is refused; an ISO 8601
      close time may sit 1 ms or 1 us before the next open. The steps between rows are then only
      required to be whole multiples of ``interval`` (gaps are legal).
    * without ``close_time``: the most common step between consecutive open times must be
      ``interval`` (see :func:`validate_candles`).

    A refusal is a :class:`CandleValidationError` naming the file, the line and the interval
    found (e.g. ``X.csv line 2 column 'close_time': ... bar interval is 4h ..., expected 1h``).
    """
    step_us = interval_us(interval)
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"candle file {str(path)!r} does not exist")
    first = _first_line(path)
    if not first:
        raise CandleValidationError(name, "file is empty (no header and no candles)")
    first_field = first.split(",")[0].strip().strip('"')
    headerless = first_field.lstrip("-").isdigit()
    if headerless:
        raw = _read_text_table(path, header=None)
        if raw.shape[1] != len(BINANCE_KLINE_COLUMNS):
            raise CandleValidationError(
                name,
                f"a headerless file must be a Binance kline dump with "
                f"{len(BINANCE_KLINE_COLUMNS)} columns, found {raw.shape[1]}",
                line=1,
            )
        raw.columns = list(BINANCE_KLINE_COLUMNS)
        first_line_no = 1
    else:
        raw = _read_text_table(path, header="infer")
        raw.columns = [str(c).strip().lower() for c in raw.columns]
        missing = [c for c in ("open_time", *OHLCV_COLUMNS) if c not in raw.columns]
        if missing:
            raise CandleValidationError(
                name,
                f"missing column(s) {missing}; header is {list(raw.columns)} "
                f"(expected open_time,open,high,low,close,volume)",
                line=1,
            )
        first_line_no = 2
    if raw.empty:
        raise CandleValidationError(name, "file has a header but no candles")
    return _frame_from_text(raw, name, first_line_no, step_us)


def _line_of(pos: int, first_line_no: int) -> int:
    return pos + first_line_no


def _parse_times(
    text: pd.Series, source: str, first_line_no: int, column: str = "open_time"
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a time column: epoch integers (ms or us, per row) or ISO 8601 UTC.

    Returns ``(micros, tick)``: int64 microseconds since the epoch, and per row the unit the
    value was written in, in microseconds (1000 for an ms epoch, 1 for a us epoch, 0 for ISO).
    """
    stripped = text.str.strip()
    missing = stripped.isna() | (stripped == "")
    if missing.any():
        pos = int(np.flatnonzero(missing.to_numpy())[0])
        raise CandleValidationError(
            source,
            f"{column} is empty",
            line=_line_of(pos, first_line_no),
            column=column,
            value=text.iloc[pos],
            n_rows=int(missing.sum()),
        )
    is_int = stripped.str.fullmatch(r"-?\d+").to_numpy(dtype=bool)
    micros = np.empty(len(stripped), dtype=np.int64)
    tick = np.full(len(stripped), _ISO_TICK, dtype=np.int64)
    if is_int.any():
        digits = stripped[is_int]
        too_long = (digits.str.len() > 18).to_numpy(dtype=bool)  # would overflow int64
        ints = digits.where(~too_long, "0").astype("int64").to_numpy()
        in_ms = (ints >= _MS_RANGE[0]) & (ints < _MS_RANGE[1])
        in_us = (ints >= _US_RANGE[0]) & (ints < _US_RANGE[1])
        bad = ~(in_ms | in_us) | too_long
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            pos = int(np.flatnonzero(is_int)[k])
            raise CandleValidationError(
                source,
                f"epoch {column} is neither milliseconds (1e11..1e14) nor microseconds "
                "(1e14..1e17)",
                line=_line_of(pos, first_line_no),
                column=column,
                value=text.iloc[pos],
                n_rows=int(bad.sum()),
            )
        micros[is_int] = np.where(in_ms, ints * 1000, ints)
        tick[is_int] = np.where(in_ms, _MS_TICK_US, _US_TICK_US)
    if (~is_int).any():
        iso_text = stripped[~is_int]
        parsed = pd.to_datetime(iso_text, utc=True, errors="coerce", format="ISO8601")
        bad_iso = parsed.isna().to_numpy()
        if bad_iso.any():
            k = int(np.flatnonzero(bad_iso)[0])
            pos = int(np.flatnonzero(~is_int)[k])
            raise CandleValidationError(
                source,
                "unparsable timestamp (expected ISO 8601 UTC or epoch ms/us)",
                line=_line_of(pos, first_line_no),
                column=column,
                value=text.iloc[pos],
                n_rows=int(bad_iso.sum()),
            )
        micros[~is_int] = pd.DatetimeIndex(parsed).as_unit("us").asi8
    return micros, tick


def _index_of(micros: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(micros, unit="us", utc=True), name="open_time").as_unit(
        "us"
    )


_TICK_NAME = {_MS_TICK_US: "ms", _US_TICK_US: "us"}


def _check_close_times(
    text: pd.Series,
    open_us: np.ndarray,
    open_tick: np.ndarray,
    source: str,
    first_line_no: int,
    step_us: int,
) -> None:
    """Every row's ``close_time - open_time + 1 tick`` must be the bar interval ``step_us``."""
    close_us, close_tick = _parse_times(text, source, first_line_no, column="close_time")

    def fail(mask: np.ndarray, problem: str) -> None:
        if not mask.any():
            return
        pos = int(np.flatnonzero(mask)[0])
        raise CandleValidationError(
            source,
            f"{problem} [open_time {_index_of(open_us[pos : pos + 1])[0]}]",
            line=_line_of(pos, first_line_no),
            column="close_time",
            value=text.iloc[pos],
            n_rows=int(mask.sum()),
        )

    both_epoch = (open_tick != _ISO_TICK) & (close_tick != _ISO_TICK)
    mixed = both_epoch & (open_tick != close_tick)
    if mixed.any():
        pos = int(np.flatnonzero(mixed)[0])
        fail(
            mixed,
            f"close_time is an epoch in {_TICK_NAME[int(close_tick[pos])]} but open_time in "
            f"{_TICK_NAME[int(open_tick[pos])]} on the same row",
        )
    span = close_us - open_us
    fail(span <= 0, "close_time is not after open_time")
    # an ISO close time is 1 ms (xx:59:59.999) or 1 us (xx:59:59.999999) before the next open
    tick = np.where(
        close_tick != _ISO_TICK, close_tick, np.where(span % 1000 == 999, _US_TICK_US, _MS_TICK_US)
    )
    length = span + tick
    wrong = length != step_us
    if wrong.any():
        pos = int(np.flatnonzero(wrong)[0])
        fail(
            wrong,
            f"bar interval is {format_interval(int(length[pos]))} "
            f"(close_time - open_time + 1 {_TICK_NAME[int(tick[pos])]}), expected "
            f"{format_interval(step_us)}: wrong bar interval",
        )


def _frame_from_text(
    raw: pd.DataFrame, source: str, first_line_no: int, step_us: int
) -> pd.DataFrame:
    open_us, open_tick = _parse_times(raw["open_time"], source, first_line_no)
    has_close = "close_time" in raw.columns
    if has_close:
        _check_close_times(raw["close_time"], open_us, open_tick, source, first_line_no, step_us)
    index = _index_of(open_us)
    data: dict[str, np.ndarray] = {}
    for col in OHLCV_COLUMNS:
        text = raw[col]
        numeric = pd.to_numeric(text.str.strip(), errors="coerce")
        bad = numeric.isna() & text.notna() & (text.str.strip() != "")
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise CandleValidationError(
                source,
                "not a number",
                line=_line_of(pos, first_line_no),
                column=col,
                value=text.iloc[pos],
                n_rows=int(bad.sum()),
            )
        data[col] = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    frame = pd.DataFrame(data, index=index)
    return _validate(frame, source, first_line_no, step_us, modal_step_check=not has_close)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _fail_first(
    mask: np.ndarray,
    frame: pd.DataFrame,
    source: str,
    first_line_no: int | None,
    problem: str,
    column: str | None,
    values: np.ndarray | None = None,
) -> None:
    if not mask.any():
        return
    pos = int(np.flatnonzero(mask)[0])
    line = None if first_line_no is None else _line_of(pos, first_line_no)
    when = frame.index[pos]
    value: Any = None
    if values is not None:
        v = values[pos]
        value = v.item() if hasattr(v, "item") else v
    elif column == "open_time":
        value = str(when)
    label = f"{source} (row {pos}, open_time {when})" if line is None else source
    if line is not None:
        problem = f"{problem} [open_time {when}]"
    raise CandleValidationError(
        label, problem, line=line, column=column, value=value, n_rows=int(mask.sum())
    )


def validate_candles(
    frame: pd.DataFrame,
    *,
    source: str = "candles",
    first_line_no: int | None = None,
    interval: str | timedelta = DEFAULT_INTERVAL,
) -> pd.DataFrame:
    """Check a candle frame against the OHLCV contract and return it in canonical form.

    Canonical form: UTC ``DatetimeIndex`` named ``open_time`` (microsecond resolution, the pandas 3
    default), float64 ``open, high, low, close, volume`` in that order, extra columns dropped.

    Refused, with the row (``line`` when the frame came from a file) and value named: missing
    columns, a non-datetime or naive index, NaN, non-positive prices, ``high < max(open, close)``,
    ``low > min(open, close)`` (which together imply ``high >= low``), negative volume, duplicate
    or out-of-order timestamps, a wrong bar interval (the most common step between consecutive
    open times is not ``interval``, default 1 hour; a tie with another step is accepted; the
    error names the first row after such a step and the step found), steps that are not a whole
    number of intervals (mixed intervals) and timestamps off the interval's grid (off the hour
    for hourly candles; the grid is anchored at 00:00 UTC). Gaps of whole intervals and zero
    volume are legal (see :func:`gap_report`). A frame has no ``close_time``, so the interval is
    judged by its spacing; :func:`read_candles_csv` checks ``close_time`` where a file has one.
    """
    return _validate(frame, source, first_line_no, interval_us(interval), modal_step_check=True)


def _validate(
    frame: pd.DataFrame,
    source: str,
    first_line_no: int | None,
    step_us: int,
    *,
    modal_step_check: bool,
) -> pd.DataFrame:
    """``frame`` checked and normalized (float64 OHLCV, UTC microsecond ``open_time`` index);
    :class:`CandleValidationError` at the first problem, in this order: structure, numbers,
    values (NaN, inf, prices, high/low, volume), order and interval of the open times, grid."""
    index = _checked_index(frame, source)
    out = _numeric_frame(frame, source, index)
    fail = functools.partial(_fail_first, frame=out, source=source, first_line_no=first_line_no)
    _check_values(out, fail)
    t = index.asi8
    if len(t) > 1:
        _check_steps(np.diff(t), step_us, fail, modal_step_check=modal_step_check)
    fail(
        (t % step_us) != 0,
        problem="open_time is not on the hour (hourly candles open at HH:00:00)"
        if step_us == HOUR_US
        else f"open_time is not on the {format_interval(step_us)} grid (candles open at whole "
        f"multiples of {format_interval(step_us)} from 00:00 UTC)",
        column="open_time",
    )
    return out


def _checked_index(frame: pd.DataFrame, source: str) -> pd.DatetimeIndex:
    """The open times as a UTC microsecond index named ``open_time``, after the structural
    checks (a DataFrame with every OHLCV column, not empty, a tz-aware DatetimeIndex)."""
    if not isinstance(frame, pd.DataFrame):
        raise CandleValidationError(source, f"expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing:
        raise CandleValidationError(
            source, f"missing column(s) {missing}; has {list(frame.columns)}"
        )
    if frame.empty:
        raise CandleValidationError(source, "no candles (empty frame)")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise CandleValidationError(
            source, f"index must be a DatetimeIndex of open times, got {type(frame.index).__name__}"
        )
    if frame.index.tz is None:
        raise CandleValidationError(source, "index is timezone-naive; candles must be UTC")
    return frame.index.tz_convert("UTC").as_unit("us").rename("open_time")


def _numeric_frame(frame: pd.DataFrame, source: str, index: pd.DatetimeIndex) -> pd.DataFrame:
    """The OHLCV columns as float64 on ``index``; a value that is not a number fails, naming
    its row and open time (a missing value stays NaN for :func:`_check_values`)."""
    columns: dict[str, np.ndarray] = {}
    for col in OHLCV_COLUMNS:
        numeric = pd.to_numeric(frame[col], errors="coerce")
        bad = (numeric.isna() & frame[col].notna()).to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise CandleValidationError(
                f"{source} (row {pos}, open_time {frame.index[pos]})",
                "not a number",
                column=col,
                value=frame[col].iloc[pos],
                n_rows=int(bad.sum()),
            )
        columns[col] = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(columns, index=index)


def _check_values(out: pd.DataFrame, fail: Callable[..., None]) -> None:
    """No NaN or infinite value, positive prices, high >= max(open, close), low <=
    min(open, close), volume >= 0 (``fail``: :func:`_fail_first` bound to the frame)."""
    o, h, lo, c, v = (out[col].to_numpy() for col in OHLCV_COLUMNS)
    for col, arr in zip(OHLCV_COLUMNS, (o, h, lo, c, v), strict=True):
        fail(np.isnan(arr), problem="missing value (NaN)", column=col, values=arr)
        fail(np.isinf(arr), problem="infinite value", column=col, values=arr)
    for col, arr in zip(PRICE_COLUMNS, (o, h, lo, c), strict=True):
        fail(arr <= 0, problem="price must be positive", column=col, values=arr)
    fail(h < np.maximum(o, c), problem="high is below max(open, close)", column="high", values=h)
    fail(lo > np.minimum(o, c), problem="low is above min(open, close)", column="low", values=lo)
    fail(v < 0, problem="volume must be >= 0", column="volume", values=v)


def _per_row(step_mask: np.ndarray) -> np.ndarray:
    """A mask over the steps between rows as a mask over rows (a step belongs to its later
    row; the first row has none)."""
    return np.concatenate([[False], step_mask])


def _check_steps(
    step: np.ndarray, step_us: int, fail: Callable[..., None], *, modal_step_check: bool
) -> None:
    """The steps between consecutive open times (microseconds): none zero (duplicate) or
    negative (out of order); with ``modal_step_check`` the most common one is ``step_us``;
    every one a whole multiple of ``step_us``."""
    fail(_per_row(step == 0), problem="duplicate open_time", column="open_time")
    fail(
        _per_row(step < 0),
        problem="open_time is out of order (earlier than the previous row)",
        column="open_time",
    )
    name = format_interval(step_us)
    hourly = step_us == HOUR_US
    if modal_step_check:
        values, counts = np.unique(step, return_counts=True)
        expected_count = int(counts[values == step_us].sum())
        if expected_count < int(counts.max()):
            modal = int(values[int(np.argmax(counts))])  # the shortest among tied modes
            fail(
                _per_row(step == modal),
                problem=f"wrong bar interval: the most common step between candles is "
                f"{format_interval(modal)} ({int(counts.max())} of {len(step)} steps), "
                f"expected {name}",
                column="open_time",
            )
    odd_steps = (step % step_us) != 0
    if odd_steps.any():
        k = int(np.flatnonzero(odd_steps)[0])
        if hourly:
            kind = "sub-hour step" if step[k] < HOUR_US else "step not a whole number of hours"
        else:
            kind = (
                f"step shorter than {name}"
                if step[k] < step_us
                else f"step not a whole multiple of {name}"
            )
        fail(
            _per_row(odd_steps),
            problem=f"mixed intervals: {kind} ({pd.Timedelta(int(step[k]), unit='us')}) from "
            f"the previous candle ({'hourly' if hourly else name} candles only)",
            column="open_time",
        )


# --------------------------------------------------------------------------------------------
# Gaps
# --------------------------------------------------------------------------------------------


def gap_report(frame: pd.DataFrame) -> dict[str, Any]:
    """Count the legal irregularities of an hourly candle frame.

    A gap is a step of more than one hour between consecutive candles (an exchange outage);
    ``missing_bars`` is the number of hourly candles absent in all gaps, ``longest_gap_hours`` the
    number missing in the longest one. ``n_zero_volume`` counts candles with zero volume (flat
    candles Binance publishes during some outages). ``gaps`` lists ``(last open_time before,
    first open_time after, missing bars)`` for each gap.
    """
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("gap_report needs a DatetimeIndex of open times")
    t = frame.index.as_unit("us").asi8
    if len(t) > 1:
        step_h = np.diff(t) // HOUR_US
    else:
        step_h = np.empty(0, dtype=np.int64)
    gap_pos = np.flatnonzero(step_h > 1)
    missing = step_h[gap_pos] - 1
    gaps = [
        (frame.index[p], frame.index[p + 1], int(m)) for p, m in zip(gap_pos, missing, strict=True)
    ]
    vol = frame["volume"].to_numpy() if "volume" in frame.columns else np.empty(0)
    return {
        "n_rows": len(frame),
        "first": frame.index[0] if len(frame) else None,
        "last": frame.index[-1] if len(frame) else None,
        "n_gaps": len(gaps),
        "missing_bars": int(missing.sum()),
        "longest_gap_hours": int(missing.max()) if len(missing) else 0,
        "n_zero_volume": int((vol == 0).sum()),
        "gaps": gaps,
    }


def missing_hours(
    index: pd.DatetimeIndex, first: pd.Timestamp, last: pd.Timestamp
) -> list[pd.Timestamp]:
    """The hourly open times in ``[first, last]`` (both on the hour, UTC) with no candle in
    ``index`` -- the replayed hours an exchange outage (or a deleted row) left out, as
    :func:`gap_report` counts them for a whole frame. Empty when ``last < first``. Raises
    ``ValueError`` naming the argument for a time that is not on the hour."""
    for name, t in (("first", first), ("last", last)):
        if pd.Timestamp(t) != pd.Timestamp(t).floor("h"):
            raise ValueError(f"missing_hours: {name} {t} is not on the hour")
    if last < first:
        return []
    want = pd.date_range(first, last, freq="h")
    have = pd.DatetimeIndex(index).as_unit("us")
    return list(want.as_unit("us").difference(have))
