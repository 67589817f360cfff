"""Market-data resource: hourly OHLCV candles per symbol, synthetic or from CSV files.

The only Dagster-aware module of the data side; the work is done by the pure modules
:mod:`cvn_assets.market.synthetic_market` (the embedded default) and
:mod:`cvn_assets.market.candles_io` (Binance kline dumps or headed CSV, validated with errors that
 name file, line and value).
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from cvn_assets.ablation.identity import file_sha256
from cvn_assets.market.candles_io import (
    DEFAULT_FILENAME_PATTERNS,
    CandleValidationError,
    gap_report,
    read_candles_csv,
    resolve_candle_file,
)
from cvn_assets.market.market_env import (
    GENERATOR_DEFAULTS,
    SYNTHETIC_MARKET_ENV,
    parse_synthetic_market,
)
from cvn_assets.market.synthetic_market import (
    DEFAULT_EDGE,
    DEFAULT_HOURS,
    DEFAULT_SEED,
    DEFAULT_START,
    Scenario,
    synthetic_candles,
)
from cvn_assets.settings import parse_symbol_map, parse_universe

SOURCES = ("synthetic", "csv")


@lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """Parsed file, memoized on (path, mtime, size) so a changed file is read again."""
    return read_candles_csv(path)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


class MarketDataResource(ConfigurableResource):
    """Hourly candles (UTC ``open_time`` index; float64 open, high, low, close, volume).

    ``source="synthetic"`` (default): the seeded market of :mod:`cvn_assets.market.synthetic_market`
    for ``symbols`` (generated jointly, hence correlated; memoized in-process), ``hours`` candles
    from ``start``; the scenario knobs (``crash_at``, ``vol_shift_at``, ``edge_shift_at`` ...)
    inject a crash, a volatility shift or the loss of the predictable edge from a date, to drill
    the drift and expectancy alerts.

    ``source="csv"``: one file per symbol in ``csv_dir``; ``symbol_map`` renames the project's
    symbol to the file's (e.g. ``{"BTCUSDC": "BTCUSDT"}``); the file is ``filename_pattern``
    (default ``{symbol}_1h.csv``), else ``{symbol}.csv``. Binance 12-column dumps (ms or us
    epochs) and headed ``open_time,open,high,low,close,volume`` files are both read.
    """

    source: str | None = Field(
        default=None, description="'synthetic' or 'csv'; unset: $CVN_MARKET_SOURCE, else synthetic"
    )
    csv_dir: str | None = Field(
        default=None, description="folder of CSV files (source=csv); unset: $CVN_CSV_DIR"
    )
    filename_pattern: str = Field(
        default="{symbol}_1h.csv", description="file name of a symbol; {symbol} is replaced"
    )
    symbol_map: dict[str, str] | None = Field(
        default=None,
        description="project symbol -> file symbol, e.g. BTCUSDC->BTCUSDT; unset: $CVN_SYMBOL_MAP",
    )
    paper_csv_dir: str | None = Field(
        default=None,
        description="folder of the candles after the sweep's files (paper trading, source=csv); "
        "unset: $CVN_PAPER_CSV_DIR",
    )
    symbols: list[str] | None = Field(
        default=None,
        description="synthetic universe generated jointly (correlated); unset: $CVN_UNIVERSE",
    )
    # the generator's settings: unset (None) takes $CVN_SYNTHETIC_MARKET's value, else the
    # default (cvn_assets.market.market_env.GENERATOR_DEFAULTS); see :meth:`generator`
    seed: int | None = Field(default=None, description=f"synthetic market seed ({DEFAULT_SEED})")
    start: str | None = Field(
        default=None, description=f"first synthetic open time, UTC ({DEFAULT_START})"
    )
    hours: int | None = Field(
        default=None, description=f"synthetic candles per symbol ({DEFAULT_HOURS})"
    )
    edge: float | None = Field(
        default=None, description=f"strength of the predictable drift ({DEFAULT_EDGE})"
    )
    crash_at: str | None = Field(default=None, description="scenario: crash start (UTC)")
    crash_pct: float | None = Field(
        default=None, description="scenario: crash depth (0.25 = -25 %, the default)"
    )
    crash_hours: int | None = Field(
        default=None, description="scenario: crash duration in hours (24)"
    )
    vol_shift_at: str | None = Field(default=None, description="scenario: vol shift date")
    vol_multiplier: float | None = Field(default=None, description="scenario: vol multiplier (2)")
    edge_shift_at: str | None = Field(default=None, description="scenario: edge change date")
    edge_multiplier: float | None = Field(
        default=None, description="scenario: edge multiplier after (0)"
    )
    scenario_symbols: list[str] | None = Field(
        default=None, description="scenario: symbols affected (default all)"
    )

    # ---------------------------------------------------------------- environment fallback
    # Dagster replaces *all* constructor values of a resource as soon as a run supplies any run
    # config for it (measured on 1.13.27: ``{"hours": 3000}`` silently turned an
    # ``EnvVar("CVN_MARKET_SOURCE")`` source back into the class default). So the fields that
    # come from the environment are left unset in ``Definitions`` and resolved here, at use:
    # a run config that sets another field keeps the environment's source.
    @property
    def data_source(self) -> str:
        """The source in effect: the field, else ``$CVN_MARKET_SOURCE``, else synthetic."""
        return self.source or os.environ.get("CVN_MARKET_SOURCE") or "synthetic"

    @property
    def data_dir(self) -> str | None:
        """The CSV folder in effect: the field, else ``$CVN_CSV_DIR``."""
        return self.csv_dir or os.environ.get("CVN_CSV_DIR") or None

    @property
    def file_symbols(self) -> dict[str, str]:
        """Project symbol -> file symbol: the field, else ``$CVN_SYMBOL_MAP``."""
        if self.symbol_map is not None:
            return dict(self.symbol_map)
        return parse_symbol_map(os.environ.get("CVN_SYMBOL_MAP"))

    @property
    def universe(self) -> list[str]:
        """Symbols generated jointly: the field, else ``$CVN_UNIVERSE`` (default universe)."""
        if self.symbols is not None:
            return list(self.symbols)
        return list(parse_universe(os.environ.get("CVN_UNIVERSE")))

    def generator(self) -> dict[str, Any]:
        """The synthetic generator's settings in effect (the keys of
        :data:`~cvn_assets.market.market_env.GENERATOR_DEFAULTS`): each field set here (run
        config or constructor), else ``$CVN_SYNTHETIC_MARKET``'s value, else the default.
        ValueError naming the variable, the key and the value for a bad variable."""
        env = parse_synthetic_market(os.environ.get(SYNTHETIC_MARKET_ENV))
        out = {}
        for key, default in GENERATOR_DEFAULTS.items():
            value = getattr(self, key)
            out[key] = value if value is not None else env.get(key, default)
        return out

    # ---------------------------------------------------------------- configuration checks
    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Refuse a bad configuration when the run starts, before any asset works."""
        self.check_config()

    def check_config(self) -> None:
        """Raise ``ValueError`` naming the field and value of the first bad setting."""
        if self.data_source not in SOURCES:
            raise ValueError(
                f"market_data.source must be one of {SOURCES}, got {self.data_source!r}"
            )
        if self.data_source == "csv":
            if not self.data_dir:
                raise ValueError(
                    "market_data.csv_dir is required when source='csv' (set it or CVN_CSV_DIR)"
                )
            if not Path(self.data_dir).is_dir():
                raise ValueError(f"market_data.csv_dir {self.data_dir!r} is not a directory")
            if "{symbol}" not in self.filename_pattern:
                raise ValueError(
                    f"market_data.filename_pattern must contain '{{symbol}}', "
                    f"got {self.filename_pattern!r}"
                )
        else:
            g = self.generator()
            if g["hours"] < 1:
                raise ValueError(f"market_data.hours must be >= 1, got {g['hours']}")
            if g["seed"] < 0:
                raise ValueError(f"market_data.seed must be >= 0, got {g['seed']}")
            if not self.universe:
                raise ValueError("market_data.symbols is empty")
            self.scenario()  # validates the scenario knobs

    def scenario(self) -> Scenario | None:
        """The :class:`Scenario` the knobs describe, or ``None`` when no event is set."""
        g = self.generator()
        if g["crash_at"] is None and g["vol_shift_at"] is None and g["edge_shift_at"] is None:
            return None
        symbols = g["scenario_symbols"]
        try:
            return Scenario(
                crash_at=g["crash_at"],
                crash_pct=g["crash_pct"],
                crash_hours=g["crash_hours"],
                vol_shift_at=g["vol_shift_at"],
                vol_multiplier=g["vol_multiplier"],
                edge_shift_at=g["edge_shift_at"],
                edge_multiplier=g["edge_multiplier"],
                symbols=None if symbols is None else tuple(symbols),
            )
        except ValueError as exc:
            raise ValueError(f"market_data scenario: {exc}") from exc

    # ---------------------------------------------------------------- loading
    def candle_file(self, symbol: str) -> Path:
        """The CSV file of ``symbol`` (after ``symbol_map``) in ``csv_dir``."""
        if not self.data_dir:
            raise ValueError(
                "market_data.csv_dir is required when source='csv' (set it or CVN_CSV_DIR)"
            )
        file_symbol = self.file_symbols.get(symbol, symbol)
        patterns = [self.filename_pattern] + [
            p for p in DEFAULT_FILENAME_PATTERNS if p != self.filename_pattern
        ]
        return resolve_candle_file(self.data_dir, file_symbol, patterns)

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
        if self.data_source == "csv":
            path = self.candle_file(symbol)
            stat = path.stat()
            frame = _read_cached(str(path), stat.st_mtime_ns, stat.st_size).copy()
        else:
            frame = self._synthetic(symbol, None)
        return _select(frame, symbol, start, end)

    def load_candles_through(self, symbol: str, end: str | pd.Timestamp) -> pd.DataFrame:
        """Candles of ``symbol`` with ``open_time < end``, **including the hours after the
        sweep's window** (what paper trading replays); :meth:`load_candles` is unchanged.
        With CSV and :attr:`paper_dir` set, the rows of that folder's file after the sweep
        file's last candle are appended (a gap between the two files stays a gap: bars are
        positional, as everywhere in the project).

        Synthetic: the same seeded market generated for more hours (the generator is
        prefix-stable: the sweep's ``hours`` candles are bit-identical), up to ``end`` but never
        past the current hour (candles of the future do not exist yet). CSV: the whole file
        (new rows appended to it are the hours after the window), up to ``end``.
        """
        self.check_config()
        hi = _utc(end, "end")
        if self.data_source == "csv":
            frame = self.load_candles(symbol, None, hi)
            later = self.paper_candles(symbol)
            if later is None:
                return frame
            return _select(_extend(frame, later, symbol), symbol, None, hi)
        g = self.generator()
        first = _utc(g["start"], "start")
        now = pd.Timestamp.now(tz="UTC").floor("h")
        stop = min(hi, now)
        hours = max(g["hours"], int((stop - first) / pd.Timedelta(hours=1)))
        return _select(self._synthetic(symbol, hours), symbol, None, hi)

    def _synthetic(self, symbol: str, hours: int | None) -> pd.DataFrame:
        """The synthetic candles of ``symbol`` (generated jointly with the universe), for
        ``hours`` candles (None: the generator's ``hours``)."""
        g = self.generator()
        universe = tuple(self.universe) if symbol in self.universe else (symbol,)
        return synthetic_candles(
            universe,
            start=g["start"],
            hours=g["hours"] if hours is None else hours,
            seed=g["seed"],
            scenario=self.scenario(),
            edge=g["edge"],
        )[symbol]

    def last_closed_hour(self, symbol: str, now: str | pd.Timestamp) -> pd.Timestamp | None:
        """The feed's newest candle closed at ``now`` (its open time, aware UTC): the newest
        one opening before ``floor(now, hour)``; None when there is none. Synthetic: that
        hour itself (the market is continued up to the current hour). CSV: the files' newest
        row before it (a file that grows is re-read: the cache is keyed on size and mtime)."""
        cutoff = _utc(now, "now").floor("h")
        if self.data_source == "csv":
            frame = self.load_candles_through(symbol, cutoff)
            return None if frame.empty else pd.Timestamp(frame.index[-1])
        self.check_config()
        top = min(cutoff, pd.Timestamp.now(tz="UTC").floor("h")) - pd.Timedelta(hours=1)
        return top if top >= _utc(self.generator()["start"], "start") else None

    @property
    def paper_dir(self) -> str | None:
        """Folder of the candles *after* the sweep's files (paper trading on real data):
        the field, else ``$CVN_PAPER_CSV_DIR``; None when paper trading reads the sweep's
        files only."""
        return self.paper_csv_dir or os.environ.get("CVN_PAPER_CSV_DIR") or None

    def paper_candles(self, symbol: str) -> pd.DataFrame | None:
        """The candles of ``symbol`` in :attr:`paper_dir` (same symbol map and file names as
        the sweep's folder), or None when no paper folder is set."""
        folder = self.paper_dir
        if folder is None:
            return None
        if not Path(folder).is_dir():
            raise ValueError(f"market_data.paper_csv_dir {folder!r} is not a directory")
        file_symbol = self.file_symbols.get(symbol, symbol)
        patterns = [self.filename_pattern] + [
            p for p in DEFAULT_FILENAME_PATTERNS if p != self.filename_pattern
        ]
        try:
            path: Path | None = resolve_candle_file(folder, file_symbol, patterns)
        except FileNotFoundError:
            path = None
        parts = sorted(Path(folder).glob(f"{file_symbol}_1h-*.csv"))
        if path is None and not parts:
            # the error lists every file name tried
            resolve_candle_file(folder, file_symbol, patterns)
        frames = []
        for f in ([path] if path is not None else []) + parts:
            stat = f.stat()
            frames.append((f.name, _read_cached(str(f), stat.st_mtime_ns, stat.st_size)))
        return _join_parts(frames, symbol)

    def data_identity(self, cryptos: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """What the candles of ``cryptos`` are, for the sweep identity (JSON-able).

        Synthetic: the generator's arguments (the market is generated jointly, so the whole
        symbol list counts). CSV: per crypto, the file name and the SHA-256 of its bytes
        (memoized on path, mtime and size: about 10 ms per 2 MB file the first time).
        """
        self.check_config()
        if self.data_source == "csv":
            files: dict[str, Any] = {}
            for crypto in cryptos:
                path = self.candle_file(crypto)
                stat = path.stat()
                files[crypto] = {
                    "name": path.name,
                    "sha256": _sha256_cached(str(path), stat.st_mtime_ns, stat.st_size),
                }
            return {"source": "csv", "files": files}
        return {
            "source": "synthetic",
            "symbols": self.universe,
            **self._generator_summary(),
        }

    def home_source(self) -> dict[str, str]:
        """The kind of data a Dagster home is made on: synthetic, or CSV from one folder."""
        if self.data_source == "csv":
            assert self.data_dir is not None
            return {"source": "csv", "csv_dir": str(Path(self.data_dir).resolve())}
        return {"source": "synthetic"}

    def gap_report(self, symbol: str) -> dict[str, Any]:
        """:func:`cvn_assets.market.candles_io.gap_report` of the symbol's full candles."""
        return gap_report(self.load_candles(symbol))

    def describe(self, symbol: str) -> dict[str, Any]:
        """Where the candles of ``symbol`` come from (for asset metadata)."""
        if self.data_source == "csv":
            return {"source": "csv", "file": str(self.candle_file(symbol))}
        return {
            "source": "synthetic",
            **self._generator_summary(),
        }

    def _generator_summary(self) -> dict[str, Any]:
        """seed, start, hours, edge and the scenario's repr (None without one) in effect."""
        g, scenario = self.generator(), self.scenario()
        return {
            "seed": g["seed"],
            "start": g["start"],
            "hours": g["hours"],
            "edge": g["edge"],
            "scenario": None if scenario is None else repr(scenario),
        }


def _join_parts(frames: list[tuple[str, pd.DataFrame]], symbol: str) -> pd.DataFrame:
    """The candles of a growing folder: the symbol's file and its appended parts
    (``<FILE_SYMBOL>_1h-<anything>.csv``, e.g. one per month), in time order. An hour in two
    files must agree exactly; a conflict is refused naming the hour and both files."""
    out = frames[0][1].copy()
    seen = {t: frames[0][0] for t in out.index}
    for name, frame in frames[1:]:
        common = out.index.intersection(frame.index)
        if len(common):
            a, b = out.loc[common], frame.loc[common, out.columns]
            diff = ~(a.to_numpy() == b.to_numpy()).all(axis=1)
            if diff.any():
                t = common[diff][0]
                raise CandleValidationError(
                    symbol, f"{name} and {seen[t]} disagree on the candle at {t}"
                )
        new = frame.loc[~frame.index.isin(out.index), out.columns]
        seen.update({t: name for t in new.index})
        out = pd.concat([out, new]).sort_index()
    return out


def _extend(frame: pd.DataFrame, later: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """``frame`` followed by the rows of ``later`` after its last candle. Hours present in
    both must agree exactly; a conflict is refused naming the first such hour."""
    common = frame.index.intersection(later.index)
    if len(common):
        a, b = frame.loc[common], later.loc[common, frame.columns]
        diff = ~(a.to_numpy() == b.to_numpy()).all(axis=1)
        if diff.any():
            raise CandleValidationError(
                symbol,
                f"the paper-trading candles disagree with the sweep's at {common[diff][0]}",
            )
    tail = later.loc[later.index > frame.index[-1], frame.columns]
    return pd.concat([frame, tail])


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
