"""Market-data resource: hourly OHLCV candles per symbol, synthetic or from CSV files.

The only Dagster-aware module of the data side; the work is done by the pure modules
:mod:`cvn_assets.synthetic_market` (the embedded default) and :mod:`cvn_assets.candles_io`
(Binance kline dumps or headed CSV, validated with errors that name file, line and value).
"""

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from cvn_assets.candles_io import (
    DEFAULT_FILENAME_PATTERNS,
    CandleValidationError,
    gap_report,
    read_candles_csv,
    resolve_candle_file,
)
from cvn_assets.synthetic_market import (
    DEFAULT_EDGE,
    DEFAULT_HOURS,
    DEFAULT_SEED,
    DEFAULT_START,
    DEFAULT_UNIVERSE,
    Scenario,
    synthetic_candles,
)

SOURCES = ("synthetic", "csv")


@lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """Parsed file, memoized on (path, mtime, size) so a changed file is read again."""
    return read_candles_csv(path)


class MarketDataResource(ConfigurableResource):
    """Hourly candles (UTC ``open_time`` index; float64 open, high, low, close, volume).

    ``source="synthetic"`` (default): the seeded market of :mod:`cvn_assets.synthetic_market`
    for ``symbols`` (generated jointly, hence correlated; memoized in-process), ``hours`` candles
    from ``start``; the scenario knobs (``crash_at``, ``vol_shift_at``, ``edge_shift_at`` ...)
    inject a crash, a volatility shift or the loss of the predictable edge from a date, to drill
    the drift and expectancy alerts.

    ``source="csv"``: one file per symbol in ``csv_dir``; ``symbol_map`` renames the project's
    symbol to the file's (e.g. ``{"BTCUSDC": "BTCUSDT"}``); the file is ``filename_pattern``
    (default ``{symbol}_1h.csv``), else ``{symbol}.csv``. Binance 12-column dumps (ms or us
    epochs) and headed ``open_time,open,high,low,close,volume`` files are both read.
    """

    source: str = Field(default="synthetic", description="'synthetic' or 'csv'")
    csv_dir: str | None = Field(default=None, description="folder of CSV files (source=csv)")
    filename_pattern: str = Field(
        default="{symbol}_1h.csv", description="file name of a symbol; {symbol} is replaced"
    )
    symbol_map: dict[str, str] = Field(
        default_factory=dict, description="project symbol -> file symbol, e.g. BTCUSDC->BTCUSDT"
    )
    symbols: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNIVERSE),
        description="synthetic universe generated jointly (correlated)",
    )
    seed: int = Field(default=DEFAULT_SEED, description="synthetic market seed")
    start: str = Field(default=DEFAULT_START, description="first synthetic open time (UTC)")
    hours: int = Field(default=DEFAULT_HOURS, description="synthetic candles per symbol")
    edge: float = Field(default=DEFAULT_EDGE, description="strength of the predictable drift")
    crash_at: str | None = Field(default=None, description="scenario: crash start (UTC)")
    crash_pct: float = Field(default=0.25, description="scenario: crash depth (0.25 = -25 %)")
    crash_hours: int = Field(default=24, description="scenario: crash duration in hours")
    vol_shift_at: str | None = Field(default=None, description="scenario: vol shift date")
    vol_multiplier: float = Field(default=2.0, description="scenario: vol multiplier")
    edge_shift_at: str | None = Field(default=None, description="scenario: edge change date")
    edge_multiplier: float = Field(default=0.0, description="scenario: edge multiplier after")
    scenario_symbols: list[str] | None = Field(
        default=None, description="scenario: symbols affected (default all)"
    )

    # ---------------------------------------------------------------- configuration checks
    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Refuse a bad configuration when the run starts, before any asset works."""
        self.check_config()

    def check_config(self) -> None:
        """Raise ``ValueError`` naming the field and value of the first bad setting."""
        if self.source not in SOURCES:
            raise ValueError(f"market_data.source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "csv":
            if not self.csv_dir:
                raise ValueError("market_data.csv_dir is required when source='csv'")
            if not Path(self.csv_dir).is_dir():
                raise ValueError(f"market_data.csv_dir {self.csv_dir!r} is not a directory")
            if "{symbol}" not in self.filename_pattern:
                raise ValueError(
                    f"market_data.filename_pattern must contain '{{symbol}}', "
                    f"got {self.filename_pattern!r}"
                )
        else:
            if self.hours < 1:
                raise ValueError(f"market_data.hours must be >= 1, got {self.hours}")
            if self.seed < 0:
                raise ValueError(f"market_data.seed must be >= 0, got {self.seed}")
            if not self.symbols:
                raise ValueError("market_data.symbols is empty")
            self.scenario()  # validates the scenario knobs

    def scenario(self) -> Scenario | None:
        """The :class:`Scenario` the knobs describe, or ``None`` when no event is set."""
        if self.crash_at is None and self.vol_shift_at is None and self.edge_shift_at is None:
            return None
        try:
            return Scenario(
                crash_at=self.crash_at,
                crash_pct=self.crash_pct,
                crash_hours=self.crash_hours,
                vol_shift_at=self.vol_shift_at,
                vol_multiplier=self.vol_multiplier,
                edge_shift_at=self.edge_shift_at,
                edge_multiplier=self.edge_multiplier,
                symbols=None if self.scenario_symbols is None else tuple(self.scenario_symbols),
            )
        except ValueError as exc:
            raise ValueError(f"market_data scenario: {exc}") from exc

    # ---------------------------------------------------------------- loading
    def candle_file(self, symbol: str) -> Path:
        """The CSV file of ``symbol`` (after ``symbol_map``) in ``csv_dir``."""
        if not self.csv_dir:
            raise ValueError("market_data.csv_dir is required when source='csv'")
        file_symbol = self.symbol_map.get(symbol, symbol)
        patterns = [self.filename_pattern] + [
            p for p in DEFAULT_FILENAME_PATTERNS if p != self.filename_pattern
        ]
        return resolve_candle_file(self.csv_dir, file_symbol, patterns)

    def load_candles(
        self,
        symbol: str,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Candles of ``symbol`` with ``start <= open_time < end`` (either bound optional).

        Returns a fresh copy (callers may modify it). Raises ``ValueError`` for a bad
        configuration or an empty selection, :class:`CandleValidationError` for bad file
        contents, ``FileNotFoundError`` for a missing file.
        """
        self.check_config()
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
        if self.source == "csv":
            path = self.candle_file(symbol)
            stat = path.stat()
            frame = _read_cached(str(path), stat.st_mtime_ns, stat.st_size).copy()
        else:
            universe = tuple(self.symbols) if symbol in self.symbols else (symbol,)
            frame = synthetic_candles(
                universe,
                start=self.start,
                hours=self.hours,
                seed=self.seed,
                scenario=self.scenario(),
                edge=self.edge,
            )[symbol]
        return _select(frame, symbol, start, end)

    def gap_report(self, symbol: str) -> dict[str, Any]:
        """:func:`cvn_assets.candles_io.gap_report` of the symbol's full candles."""
        return gap_report(self.load_candles(symbol))

    def describe(self, symbol: str) -> dict[str, Any]:
        """Where the candles of ``symbol`` come from (for asset metadata)."""
        if self.source == "csv":
            return {"source": "csv", "file": str(self.candle_file(symbol))}
        return {
            "source": "synthetic",
            "seed": self.seed,
            "start": self.start,
            "hours": self.hours,
            "edge": self.edge,
            "scenario": None if self.scenario() is None else repr(self.scenario()),
        }


def _utc(value: str | pd.Timestamp, field: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: cannot parse {value!r} as a timestamp") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _select(
    frame: pd.DataFrame,
    symbol: str,
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
) -> pd.DataFrame:
    lo = None if start is None else _utc(start, "start")
    hi = None if end is None else _utc(end, "end")
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f"end {hi} must be after start {lo}")
    if lo is None and hi is None:
        return frame
    mask = pd.Series(True, index=frame.index)
    if lo is not None:
        mask &= frame.index >= lo
    if hi is not None:
        mask &= frame.index < hi
    out = frame.loc[mask.to_numpy()]
    if out.empty:
        raise CandleValidationError(
            symbol,
            f"no candles in [{lo}, {hi}); available {frame.index[0]} .. {frame.index[-1]}",
        )
    return out
