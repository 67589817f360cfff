"""MarketDataResource: synthetic and CSV sources, selection, config errors, inside Dagster."""

import os
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.candles_io import CandleValidationError
from cvn_assets.market.synthetic_market import DEFAULT_UNIVERSE, Scenario, synthetic_candles
from resources.market_data import MarketDataResource

HEADER = "open_time,open,high,low,close,volume\n"
USDT_MAP = {s: s.replace("USDC", "USDT") for s in DEFAULT_UNIVERSE}


def _shared_data() -> Path:
    env = os.environ.get("CVN_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _headed(n: int, start: str = "2024-01-01") -> str:
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC")
    lines = [
        f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{100 + i},{101 + i},{99 + i},{100.5 + i},{i}"
        for i, t in enumerate(idx)
    ]
    return HEADER + "\n".join(lines) + "\n"


def _binance(n: int, start_ms: int) -> str:
    lines = []
    for i in range(n):
        t = start_ms + i * 3_600_000
        lines.append(f"{t},{2 + i},{3 + i},{1 + i},{2.5 + i},{10},{t + 3_599_999},1,1,1,1,0")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ synthetic


def test_synthetic_source_matches_the_generator() -> None:
    res = MarketDataResource(hours=1000)
    direct = synthetic_candles(DEFAULT_UNIVERSE, hours=1000)
    for sym in DEFAULT_UNIVERSE:
        pd.testing.assert_frame_equal(res.load_candles(sym), direct[sym], check_exact=True)
    # a symbol outside the configured universe is generated too (per-symbol determinism)
    assert len(res.load_candles("ADAUSDC")) == 1000


def test_selection_is_half_open() -> None:
    res = MarketDataResource(hours=200)
    sel = res.load_candles("BTCUSDC", start="2023-07-02", end="2023-07-03")
    assert len(sel) == 24
    assert sel.index[0] == pd.Timestamp("2023-07-02T00:00:00Z")
    assert sel.index[-1] == pd.Timestamp("2023-07-02T23:00:00Z")
    full = res.load_candles("BTCUSDC")
    pd.testing.assert_frame_equal(sel, full.loc["2023-07-02"])
    with pytest.raises(CandleValidationError, match="no candles in"):
        res.load_candles("BTCUSDC", start="2030-01-01")
    with pytest.raises(ValueError, match="must be after start"):
        res.load_candles("BTCUSDC", start="2023-07-03", end="2023-07-02")


def test_loaded_frames_are_copies() -> None:
    res = MarketDataResource(hours=100)
    a = res.load_candles("ETHUSDC")
    a["close"] = -1.0
    assert (res.load_candles("ETHUSDC")["close"] > 0).all()


def test_scenario_knobs() -> None:
    res = MarketDataResource(hours=1500, crash_at="2023-08-01", crash_pct=0.3, crash_hours=12)
    assert res.scenario() == Scenario(crash_at="2023-08-01", crash_pct=0.3, crash_hours=12)
    expected = synthetic_candles(DEFAULT_UNIVERSE, hours=1500, scenario=res.scenario())
    pd.testing.assert_frame_equal(res.load_candles("SOLUSDC"), expected["SOLUSDC"])
    assert MarketDataResource().scenario() is None
    with pytest.raises(ValueError, match="market_data scenario: .*crash_pct"):
        MarketDataResource(crash_at="2023-08-01", crash_pct=2.0).check_config()


# ------------------------------------------------------------------ csv


def test_csv_source_with_symbol_map_and_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT_1h.csv").write_text(_headed(30))
    (tmp_path / "ETHUSDT.csv").write_text(_binance(20, 1_704_067_200_000))  # 2024-01-01 ms
    res = MarketDataResource(source="csv", csv_dir=str(tmp_path), symbol_map=USDT_MAP)
    btc = res.load_candles("BTCUSDC")
    eth = res.load_candles("ETHUSDC")  # falls back to {symbol}.csv
    assert len(btc) == 30 and len(eth) == 20
    assert btc["close"].iloc[3] == 103.5
    assert eth.index[0] == pd.Timestamp("2024-01-01T00:00:00Z")
    assert str(eth.index.dtype) == "datetime64[us, UTC]" and eth.index.name == "open_time"
    assert res.describe("BTCUSDC")["file"].endswith("BTCUSDT_1h.csv")
    assert res.gap_report("BTCUSDC")["n_gaps"] == 0


def test_csv_custom_pattern_and_reload_after_change(tmp_path: Path) -> None:
    path = tmp_path / "klines-BTCUSDT.csv"
    path.write_text(_headed(10))
    res = MarketDataResource(
        source="csv",
        csv_dir=str(tmp_path),
        symbol_map=USDT_MAP,
        filename_pattern="klines-{symbol}.csv",
    )
    assert len(res.load_candles("BTCUSDC")) == 10
    path.write_text(_headed(12))
    assert len(res.load_candles("BTCUSDC")) == 12  # the in-process cache notices the change


def test_csv_errors(tmp_path: Path) -> None:
    res = MarketDataResource(source="csv", csv_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no candle file for symbol 'BTCUSDC'"):
        res.load_candles("BTCUSDC")
    (tmp_path / "BTCUSDC_1h.csv").write_text(HEADER + "2024-01-01T00:00:00Z,100,99,98,100,1\n")
    with pytest.raises(
        CandleValidationError, match=r"BTCUSDC_1h\.csv line 2 column 'high': value 99\.0"
    ):
        res.load_candles("BTCUSDC")


@pytest.mark.parametrize(
    ("config", "msg"),
    [
        ({"source": "parquet"}, r"source must be one of \('synthetic', 'csv'\), got 'parquet'"),
        ({"source": "csv"}, "csv_dir is required when source='csv'"),
        ({"source": "csv", "csv_dir": ""}, "csv_dir is required"),
        ({"source": "csv", "csv_dir": "/nonexistent/x"}, "'/nonexistent/x' is not a directory"),
        ({"hours": 0}, "hours must be >= 1, got 0"),
        ({"symbols": []}, "symbols is empty"),
    ],
)
def test_bad_config_is_refused(config: dict, msg: str) -> None:
    res = MarketDataResource(**config)
    with pytest.raises(ValueError, match=msg):
        res.check_config()
    with pytest.raises(ValueError, match=msg):
        res.load_candles("BTCUSDC")


# ------------------------------------------------------------------ inside Dagster


def test_works_as_a_dagster_resource() -> None:
    @dg.asset
    def n_candles(market_data: MarketDataResource) -> int:
        return len(market_data.load_candles("BTCUSDC"))

    result = dg.materialize([n_candles], resources={"market_data": MarketDataResource(hours=240)})
    assert result.success
    assert result.output_for_node("n_candles") == 240


def test_bad_config_fails_the_run_before_the_asset_runs() -> None:
    ran: list[bool] = []

    @dg.asset
    def uses_market(market_data: MarketDataResource) -> int:
        ran.append(True)
        return 0

    with pytest.raises(dg.DagsterResourceFunctionError) as err:
        dg.materialize([uses_market], resources={"market_data": MarketDataResource(source="db")})
    assert "source must be one of" in str(err.value.__cause__)
    assert not ran


# ------------------------------------------------------------------ real Binance files


def test_real_binance_files_through_the_resource() -> None:
    folder = _shared_data() / "binance_spot_1h_2021_2023"
    if not folder.is_dir():
        pytest.skip(f"real Binance candles not present at {folder} (shared data folder absent)")
    res = MarketDataResource(source="csv", csv_dir=str(folder), symbol_map=USDT_MAP)
    for sym in DEFAULT_UNIVERSE:
        c = res.load_candles(sym)
        rep = res.gap_report(sym)
        assert (rep["n_gaps"], rep["missing_bars"], rep["n_zero_volume"]) == (5, 12, 1), sym
        assert len(c) in (23_987, 23_988), sym
        assert np.isfinite(c.to_numpy()).all()
    btc = res.load_candles("BTCUSDC", start="2021-04-04T20:00:00Z", end="2021-04-04T21:00:00Z")
    # first data row of BTCUSDT_1h.csv, as written in the file
    assert btc.iloc[0].tolist() == [57953.86, 58051.25, 57826.16, 58025.11, 1240.209016]


# ------------------------------------------------------------------ paper trading on real data


def _write_headed(path, frame):
    out = frame.reset_index()
    out["open_time"] = out["open_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)


def test_paper_candles_extend_the_sweep_files(tmp_path, monkeypatch) -> None:
    from cvn_assets.market.synthetic_market import synthetic_candles

    full = synthetic_candles(["BTCUSDC", "ETHUSDC"], hours=600, seed=5)["BTCUSDC"]
    (tmp_path / "sweep").mkdir()
    (tmp_path / "paper").mkdir()
    _write_headed(tmp_path / "sweep" / "BTCUSDC_1h.csv", full.iloc[:300])
    # the later file overlaps the sweep's last 10 hours and then skips 50 hours (a gap)
    _write_headed(
        tmp_path / "paper" / "BTCUSDC_1h.csv", pd.concat([full.iloc[290:300], full.iloc[350:]])
    )
    res = MarketDataResource(source="csv", csv_dir=str(tmp_path / "sweep"))
    end = full.index[-1] + pd.Timedelta(hours=1)
    assert len(res.load_candles_through("BTCUSDC", end)) == 300  # no paper folder: sweep file
    monkeypatch.setenv("CVN_PAPER_CSV_DIR", str(tmp_path / "paper"))
    got = res.load_candles_through("BTCUSDC", end)
    expected = pd.concat([full.iloc[:300], full.iloc[350:]])
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert len(res.load_candles("BTCUSDC")) == 300  # the sweep's candles are unchanged
    # a later file that contradicts the sweep's candles is refused, naming the hour
    bad = full.iloc[295:].copy()
    bad.iloc[0, bad.columns.get_loc("volume")] *= 1.01
    _write_headed(tmp_path / "paper" / "BTCUSDC_1h.csv", bad)
    msg = re.escape(f"disagree with the sweep's at {full.index[295]}")
    with pytest.raises(CandleValidationError, match=msg):
        res.load_candles_through("BTCUSDC", end)


# ------------------------------------------------------------ the scenario from the environment
#: a scenario after a 1,000-hour window (2023-07-01 + 1000 h = 2023-08-11T16:00Z)
AFTER = {
    "edge": 4.0,
    "edge_shift_at": "2023-08-12T00:00:00+00:00",
    "edge_multiplier": 0.0,
    "crash_at": "2023-08-14T00:00:00+00:00",
    "crash_pct": 0.25,
    "crash_hours": 240,
}


def test_the_environment_scenario_reaches_an_unconfigured_resource(monkeypatch) -> None:
    import json

    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps({**AFTER, "hours": 1400}))
    res = MarketDataResource()
    g = res.generator()
    assert (g["hours"], g["edge"], g["crash_hours"], g["seed"]) == (1400, 4.0, 240, 7)
    scenario = Scenario(
        crash_at=AFTER["crash_at"], crash_pct=0.25, crash_hours=240,
        edge_shift_at=AFTER["edge_shift_at"], edge_multiplier=0.0,
    )  # fmt: skip
    assert res.scenario() == scenario
    expected = synthetic_candles(DEFAULT_UNIVERSE, hours=1400, scenario=scenario, edge=4.0)
    pd.testing.assert_frame_equal(res.load_candles("ETHUSDC"), expected["ETHUSDC"])
    # a field set on the resource (run config) wins over the environment, key by key
    res = MarketDataResource(hours=1000, edge=2.0)
    assert (res.generator()["hours"], res.generator()["edge"]) == (1000, 2.0)
    assert res.generator()["crash_at"] == AFTER["crash_at"]


def test_the_window_stays_bit_identical_when_the_scenario_lies_after_it(monkeypatch) -> None:
    import json

    # the same market without the scenario, from the generator itself (the resource would
    # read the variable too)
    n = 1000 + 8 * 24 + 8  # to 2023-08-20T00:00Z
    plain = synthetic_candles(DEFAULT_UNIVERSE, hours=n, edge=4.0)
    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps(AFTER))
    drilled = MarketDataResource(hours=1000)
    end = pd.Timestamp("2023-08-20T00:00:00Z")  # 6 days of the scenario after the window
    for sym in DEFAULT_UNIVERSE:
        b = plain[sym]
        pd.testing.assert_frame_equal(drilled.load_candles(sym), b.iloc[:1000], check_exact=True)
        a = drilled.load_candles_through(sym, end)
        assert len(a) == n
        pd.testing.assert_frame_equal(a.iloc[:1000], b.iloc[:1000], check_exact=True)
        # the scenario is in effect after the window: in the crash, the closes differ
        late = a.index > pd.Timestamp(AFTER["crash_at"])
        assert (a.loc[late, "close"] != b.loc[late, "close"]).all(), sym
    # the sweep's identity is the same whether the scenario comes from the environment or
    # from run config (the drill passes it as run config, the live drill by the variable)
    monkeypatch.delenv("CVN_SYNTHETIC_MARKET")
    by_config = MarketDataResource(hours=1000, **AFTER)
    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps(AFTER))
    assert drilled.data_identity(list(DEFAULT_UNIVERSE)) == by_config.data_identity(
        list(DEFAULT_UNIVERSE)
    )


def test_a_partial_run_config_keeps_the_environment_scenario(monkeypatch) -> None:
    """Dagster rebuilds a resource from run config with every field at its default (measured
    for the source); the scenario fields must still come from the environment."""
    import json

    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps(AFTER))

    @dg.asset
    def market_seen(market_data: MarketDataResource) -> dict:
        return market_data.describe("BTCUSDC")

    result = dg.materialize(
        [market_seen],
        resources={"market_data": MarketDataResource()},
        run_config={"resources": {"market_data": {"config": {"hours": 240}}}},
    )
    seen = result.output_for_node("market_seen")
    assert (seen["hours"], seen["edge"]) == (240, 4.0)
    assert "edge_shift_at='2023-08-12T00:00:00+00:00'" in seen["scenario"]


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        ('{"edgee": 4.0}', "unknown key 'edgee' \\(value 4.0\\)"),
        ('{"crash_pct": 2}', "crash_pct=2 must be in \\(0, 1\\)"),
        ('{"hours": "1000"}', 'hours="1000" is not an integer'),
        ('{"edge_shift_at": "soon"}', 'edge_shift_at="soon" is not an ISO time'),
        ("[1, 2]", "expected a JSON object"),
        ("{edge: 4}", "not valid JSON"),
    ],
)
def test_a_bad_environment_scenario_fails_the_run_before_the_asset_runs(
    monkeypatch, raw: str, msg: str
) -> None:
    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", raw)
    with pytest.raises(ValueError, match="CVN_SYNTHETIC_MARKET: .*" + msg):
        MarketDataResource().check_config()
    ran: list[bool] = []

    @dg.asset
    def uses_market(market_data: MarketDataResource) -> int:
        ran.append(True)
        return 0

    with pytest.raises(dg.DagsterResourceFunctionError) as err:
        dg.materialize([uses_market], resources={"market_data": MarketDataResource()})
    assert "CVN_SYNTHETIC_MARKET" in str(err.value.__cause__)
    assert not ran


def test_a_growing_csv_folder_is_the_live_feed(tmp_path, monkeypatch) -> None:
    """The live feed on CSV: rows appended to the file and part files appended to the folder
    (``<SYMBOL>_1h-<anything>.csv``) move ``last_closed_hour``; a candle not closed at ``now``
    is not offered; two files that disagree on an hour are refused naming both."""
    import os

    from cvn_assets.market.synthetic_market import synthetic_candles

    full = synthetic_candles(["BTCUSDC", "ETHUSDC"], hours=600, seed=5)["BTCUSDC"]
    for d in ("sweep", "paper"):
        (tmp_path / d).mkdir()
    _write_headed(tmp_path / "sweep" / "BTCUSDC_1h.csv", full.iloc[:300])
    live = tmp_path / "paper" / "BTCUSDC_1h.csv"
    _write_headed(live, full.iloc[300:400])
    monkeypatch.setenv("CVN_PAPER_CSV_DIR", str(tmp_path / "paper"))
    res = MarketDataResource(source="csv", csv_dir=str(tmp_path / "sweep"))
    far = full.index[-1] + pd.Timedelta(days=30)
    assert res.last_closed_hour("BTCUSDC", far) == full.index[399]
    # the clock in the middle of the 350th candle: the newest closed one is the 349th
    assert (
        res.last_closed_hour("BTCUSDC", full.index[350] + pd.Timedelta(minutes=20))
        == (full.index[349])
    )
    # rows appended to the file (same inode, new size: read again)
    with live.open("a") as f:
        extra = full.iloc[400:450].reset_index()
        extra["open_time"] = extra["open_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        extra.to_csv(f, header=False, index=False)
    os.utime(live, ns=(1, live.stat().st_mtime_ns + 1_000))
    assert res.last_closed_hour("BTCUSDC", far) == full.index[449]
    # a part file appended to the folder (overlapping by 5 hours, which agree)
    _write_headed(tmp_path / "paper" / "BTCUSDC_1h-part2.csv", full.iloc[445:520])
    assert res.last_closed_hour("BTCUSDC", far) == full.index[519]
    got = res.load_candles_through("BTCUSDC", far)
    pd.testing.assert_frame_equal(got, full.iloc[:520], check_freq=False)
    # a part that contradicts another file on an hour: refused, naming both files
    bad = full.iloc[515:560].copy()
    bad.iloc[0, bad.columns.get_loc("volume")] *= 1.01
    _write_headed(tmp_path / "paper" / "BTCUSDC_1h-part3.csv", bad)
    msg = "BTCUSDC_1h-part3.csv and BTCUSDC_1h-part2.csv disagree on the candle at "
    with pytest.raises(CandleValidationError, match=re.escape(f"{msg}{full.index[515]}")):
        res.last_closed_hour("BTCUSDC", far)
