"""The synthetic market: contract, determinism, stylized facts, edge, scenarios, bad input."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.candles_io import validate_candles
from cvn_assets.market.labels import triple_barrier_labels
from cvn_assets.market.synthetic_market import (
    _SEASON_PEAK_HOUR,
    DEFAULT_UNIVERSE,
    Scenario,
    _generate,
    synthetic_candles,
)


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return synthetic_candles()  # the embedded default: 5 symbols x 21,900 hours, seed 7


def _peak_hour(by_hour: pd.Series) -> float:
    """Hour of the maximum of the first harmonic fitted to a 24-hour profile."""
    w = by_hour.to_numpy() - by_hour.mean()
    angle = np.angle(np.sum(w * np.exp(2j * np.pi * by_hour.index.to_numpy() / 24.0)))
    return float(angle * 24.0 / (2.0 * np.pi) % 24.0)


def _log_returns(c: pd.DataFrame) -> pd.Series:
    return np.log(c["close"]).diff().dropna()


# ------------------------------------------------------------------ contract and determinism


def test_contract(market: dict[str, pd.DataFrame]) -> None:
    assert tuple(market) == DEFAULT_UNIVERSE
    for sym, c in market.items():
        assert list(c.columns) == ["open", "high", "low", "close", "volume"]
        assert len(c) == 21_900
        assert c.index.name == "open_time" and str(c.index.dtype) == "datetime64[us, UTC]"
        assert c.index[0] == pd.Timestamp("2023-07-01T00:00:00Z")
        assert (np.diff(c.index.asi8) == 3_600_000_000).all()  # no gaps
        pd.testing.assert_frame_equal(validate_candles(c, source=sym), c)  # OHLC consistent
        np.testing.assert_array_equal(c["open"].to_numpy()[1:], c["close"].to_numpy()[:-1])
        assert (c["volume"] > 0).all()


def test_deterministic_and_seeded() -> None:
    a = synthetic_candles(["BTCUSDC", "ETHUSDC"], hours=500, seed=3)
    _generate.cache_clear()
    b = synthetic_candles(["BTCUSDC", "ETHUSDC"], hours=500, seed=3)
    for sym in a:
        pd.testing.assert_frame_equal(a[sym], b[sym], check_exact=True)
    c = synthetic_candles(["BTCUSDC", "ETHUSDC"], hours=500, seed=4)
    assert not np.allclose(a["BTCUSDC"]["close"], c["BTCUSDC"]["close"])


def test_symbol_does_not_depend_on_the_rest_of_the_universe() -> None:
    alone = synthetic_candles(["ETHUSDC"], hours=800)
    joint = synthetic_candles(DEFAULT_UNIVERSE, hours=800)
    reordered = synthetic_candles(["XRPUSDC", "ETHUSDC"], hours=800)
    pd.testing.assert_frame_equal(alone["ETHUSDC"], joint["ETHUSDC"], check_exact=True)
    pd.testing.assert_frame_equal(alone["ETHUSDC"], reordered["ETHUSDC"], check_exact=True)


def test_memoized_and_returns_copies() -> None:
    synthetic_candles(["BTCUSDC"], hours=300, seed=11)
    hits = _generate.cache_info().hits
    first = synthetic_candles(["BTCUSDC"], hours=300, seed=11)
    assert _generate.cache_info().hits == hits + 1
    first["BTCUSDC"].iloc[:, :] = -1.0  # a caller scribbling on its copy
    again = synthetic_candles(["BTCUSDC"], hours=300, seed=11)
    assert (again["BTCUSDC"]["close"] > 0).all()


def test_unknown_symbol_gets_a_deterministic_profile() -> None:
    a = synthetic_candles(["DOGEUSDC"], hours=400)["DOGEUSDC"]
    b = synthetic_candles(["DOGEUSDC"], hours=400)["DOGEUSDC"]
    pd.testing.assert_frame_equal(a, b)
    validate_candles(a)


# ------------------------------------------------------------------ stylized facts


def test_fat_tails_and_volatility_clustering(market: dict[str, pd.DataFrame]) -> None:
    for sym, c in market.items():
        r = _log_returns(c)
        a = r.abs()
        assert r.kurt() > 5, sym  # excess kurtosis of a normal is 0; real hourly crypto 15-34
        assert a.autocorr(1) > 0.2, sym  # |r| clusters (real 0.28-0.34)
        assert a.autocorr(24) > 0.1, sym  # for days (real 0.19-0.24)
        assert abs(r.autocorr(1)) < 0.05, sym  # returns themselves nearly white (real |.| < 0.03)


def test_cross_asset_correlation(market: dict[str, pd.DataFrame]) -> None:
    corr = pd.DataFrame({s: _log_returns(c) for s, c in market.items()}).corr()
    off = corr.to_numpy()[~np.eye(len(corr), dtype=bool)]
    assert off.min() > 0.45 and off.max() < 0.95  # real Binance 2021-2023: 0.57-0.87
    assert corr.loc["BTCUSDC", "ETHUSDC"] > 0.75


def test_intraday_and_weekly_seasonality(market: dict[str, pd.DataFrame]) -> None:
    c = market["BTCUSDC"]
    a = _log_returns(c).abs()
    by_hour = a.groupby(a.index.hour).mean()
    # the phase of the daily cycle (first Fourier harmonic of the hourly profile), not the
    # noisy argmax of 24 means, must sit at the designed peak hour
    assert abs(_peak_hour(by_hour) - _SEASON_PEAK_HOUR) < 1.0
    assert by_hour.idxmin() in (0, 1, 2, 3, 4, 5)
    assert by_hour.max() / by_hour.min() > 1.3
    weekend = a.index.day_of_week >= 5
    assert a[weekend].mean() / a[~weekend].mean() < 0.9
    lv = np.log(c["volume"])
    assert abs(_peak_hour(lv.groupby(lv.index.hour).mean()) - _SEASON_PEAK_HOUR) < 1.0


def test_regime_changes_in_volatility(market: dict[str, pd.DataFrame]) -> None:
    r = _log_returns(market["BTCUSDC"])
    monthly = r.resample("MS").std()
    assert monthly.max() / monthly.min() > 2.0  # calm and turbulent months


def test_buy_rates_in_band(market: dict[str, pd.DataFrame]) -> None:
    for sym, c in market.items():
        rate = triple_barrier_labels(c, take_profit=0.01, stop_loss=0.005, horizon=4)[
            "label"
        ].mean()
        assert 0.10 <= rate <= 0.27, (sym, rate)


def test_predictable_component_is_real_and_switchable() -> None:
    # The drift follows the last hours' moves signed by the volume surprise. An observable proxy,
    # tanh(r / rolling vol) * tanh(volume z-score), must correlate with the next 4-hour return
    # when the edge is on, and not when it is off (same shocks otherwise).
    def ic(c: pd.DataFrame) -> float:
        r = np.log(c["close"]).diff()
        vol = r.rolling(24).std()
        lv = np.log(c["volume"])
        vz = (lv - lv.rolling(24).mean()) / lv.rolling(24).std()
        proxy = np.tanh(r / vol) * np.tanh(vz)
        fwd = (np.log(c["close"]).shift(-4) - np.log(c["close"])) / vol
        ok = proxy.notna() & fwd.notna()
        return float(np.corrcoef(proxy[ok], fwd[ok])[0, 1])

    on = synthetic_candles(hours=8760)
    off = synthetic_candles(hours=8760, edge=0.0)
    for sym in DEFAULT_UNIVERSE:
        assert ic(on[sym]) > 0.06, sym
        assert abs(ic(off[sym])) < 0.04, sym


# ------------------------------------------------------------------ scenarios


def test_crash_scenario() -> None:
    base = synthetic_candles(hours=2000)
    sc = Scenario(crash_at="2023-08-01T00:00:00Z", crash_pct=0.3, crash_hours=12)
    hit = synthetic_candles(hours=2000, scenario=sc)
    t = pd.Timestamp("2023-08-01T00:00:00Z")
    pos = base["BTCUSDC"].index.get_loc(t)
    for sym in DEFAULT_UNIVERSE:
        b, h = base[sym], hit[sym]
        pd.testing.assert_frame_equal(b.iloc[:pos], h.iloc[:pos])  # the past is untouched
        fall = h["close"].iloc[pos + 11] / h["close"].iloc[pos - 1] - 1
        normal = b["close"].iloc[pos + 11] / b["close"].iloc[pos - 1] - 1
        assert fall < -0.15, sym
        assert fall < normal - 0.1, sym


def test_volatility_shift_doubles_returns_exactly() -> None:
    base = synthetic_candles(hours=1500)
    sc = Scenario(vol_shift_at="2023-08-15T00:00:00Z", vol_multiplier=2.0, symbols=("SOLUSDC",))
    shifted = synthetic_candles(hours=1500, scenario=sc)
    pos = base["SOLUSDC"].index.get_loc(pd.Timestamp("2023-08-15T00:00:00Z"))
    r_b = np.diff(np.log(base["SOLUSDC"]["close"].to_numpy()))
    r_s = np.diff(np.log(shifted["SOLUSDC"]["close"].to_numpy()))
    # log return of hour t is sigma_t * x_t: doubling sigma doubles it, nothing else changes
    np.testing.assert_allclose(r_s[pos:], 2.0 * r_b[pos:], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(r_s[: pos - 1], r_b[: pos - 1])
    pd.testing.assert_frame_equal(base["BTCUSDC"], shifted["BTCUSDC"])  # not in scenario.symbols


def test_edge_shift_removes_the_edge_from_the_date() -> None:
    when = "2023-09-01T00:00:00Z"
    with_edge = synthetic_candles(["ETHUSDC"], hours=2000)["ETHUSDC"]
    no_edge = synthetic_candles(["ETHUSDC"], hours=2000, edge=0.0)["ETHUSDC"]
    shifted = synthetic_candles(
        ["ETHUSDC"], hours=2000, scenario=Scenario(edge_shift_at=when, edge_multiplier=0.0)
    )["ETHUSDC"]
    pos = with_edge.index.get_loc(pd.Timestamp(when))

    def lr(c: pd.DataFrame) -> np.ndarray:
        return np.diff(np.log(c["close"].to_numpy()))

    np.testing.assert_array_equal(lr(shifted)[: pos - 1], lr(with_edge)[: pos - 1])
    np.testing.assert_allclose(lr(shifted)[pos:], lr(no_edge)[pos:], rtol=1e-9, atol=1e-12)
    assert not np.allclose(lr(with_edge)[pos:], lr(no_edge)[pos:])


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"symbols": []}, "symbols is empty"),
        ({"symbols": "BTCUSDC"}, "got the string 'BTCUSDC'"),
        ({"symbols": ["BTCUSDC", "BTCUSDC"]}, r"duplicate symbol\(s\) \['BTCUSDC'\]"),
        ({"symbols": ["BTCUSDC", ""]}, "non-empty string"),
        ({"hours": 0}, "hours must be an integer >= 1, got 0"),
        ({"hours": 10.5}, "hours must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"start": "2023-07-01T00:30:00"}, "start must be on the hour"),
        ({"start": "not a date"}, "start: cannot parse 'not a date'"),
        ({"edge": float("nan")}, "edge must be finite"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, msg: str) -> None:
    args = {"hours": 100, **kwargs}
    with pytest.raises(ValueError, match=msg):
        synthetic_candles(**args)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"crash_pct": 1.5}, r"crash_pct must be in \(0, 1\), got 1.5"),
        ({"crash_hours": 0}, "crash_hours must be >= 1"),
        ({"vol_multiplier": 0.0}, "vol_multiplier"),
        ({"edge_multiplier": float("inf")}, "edge_multiplier"),
        ({"crash_at": "yesterday-ish"}, "Scenario.crash_at: cannot parse 'yesterday-ish'"),
    ],
)
def test_rejects_bad_scenarios(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Scenario(**kwargs)


def test_a_longer_market_extends_a_shorter_one_bit_for_bit():
    """Prefix-stable: paper trading replays the hours after the sweep's window on the same
    seeded market, and the sweep's candles must stay exactly what the sweep saw."""
    symbols = ("BTCUSDC", "ETHUSDC", "SOLUSDC")
    short = synthetic_candles(symbols, hours=1500, seed=11)
    long = synthetic_candles(symbols, hours=2600, seed=11)
    for s in symbols:
        assert short[s].equals(long[s].iloc[:1500]), s
    assert len(long["BTCUSDC"]) == 2600
