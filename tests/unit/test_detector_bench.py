"""Detector benchmark and the issue-23 rules: data integrity, window-shape data drift, calendar
features out, sharpness for focal champions only; fault injection and the counts of
``bench/bench_detectors.py`` (hand-checked), and the CI-sized benchmark itself."""

import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvn_assets.guard import detector_bench as db
from cvn_assets.guard.integrity import data_integrity
from cvn_assets.guard.monitoring import (
    decile_edges,
    psi,
    shape_reference,
    training_shares,
    window_standardize,
)
from cvn_assets.guard.window_rules import drift_verdicts, integrity_verdict

ROOT = Path(__file__).resolve().parents[2]
EDGES = list(np.linspace(-1.28, 1.28, 9))  # ~ N(0, 1) deciles: q10 = -1.28, q90 = 1.28


# ------------------------------------------------------------------------ data integrity
def test_integrity_flags_missing_stuck_and_out_of_range_in_the_last_6_hours():
    rng = np.random.default_rng(0)
    ok = rng.standard_normal(24)
    assert data_integrity({"a": ok}, {"a": EDGES}).level == "ok"
    nan = np.r_[ok[:18], [np.nan] * 6]
    v = data_integrity({"a": ok, "b": nan}, {"a": EDGES, "b": EDGES})
    assert v.level == "crit" and v.value == 1.0 and v.details["b"]["problem"] == "missing"
    # 5 NaN of the last 6 is not "missing" (all 6 are needed)
    assert data_integrity({"b": np.r_[ok[:19], [np.nan] * 5]}, {"b": EDGES}).level == "ok"
    stuck = np.r_[ok[:18], [0.3] * 6]
    assert data_integrity({"s": stuck}, {"s": EDGES}).details["s"]["problem"] == "stuck"
    # band: q10 - 20 * 2.56 = -52.48 .. 52.48; 3 of the last 6 values beyond it -> crit
    far = np.r_[ok[:18], [60.0, -60.0, 53.0, 0.1, 0.2, -0.3]]
    assert data_integrity({"f": far}, {"f": EDGES}).details["f"]["problem"] == "out_of_range"
    far2 = np.r_[ok[:18], [60.0, -60.0, 0.4, 0.1, 0.2, -0.3]]  # 2 of 6, median |x| 0.35
    assert data_integrity({"f": far2}, {"f": EDGES}).level == "ok"
    # scale: median |x| 20 > 10 * 1.28 although 3 of 6 values stay inside the band
    scaled = np.r_[ok[:18], [20.0, -20.0, 30.0, -25.0, 40.0, 52.0]]
    assert data_integrity({"x": scaled}, {"x": EDGES}).details["x"]["problem"] == "out_of_range"


def test_integrity_spares_mass_points_and_calendar_features_and_needs_6_rows():
    tied = [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # 0 is a training mass point
    assert data_integrity({"m": [0.0] * 6}, {"m": tied}).level == "ok"
    dow = [-0.97, -0.78, -0.43, 0.0, 0.0, 0.43, 0.78, 0.97, 0.97]
    assert data_integrity({"dow_sin": [0.43] * 6}, {"dow_sin": dow}).level == "ok"
    assert data_integrity({"hour_sin": [0.43] * 6}, {"hour_sin": dow}).level == "crit"
    assert data_integrity({"a": [0.1] * 5}, {"a": EDGES}).level == "insufficient"
    with pytest.raises(ValueError, match=r"edges missing for feature\(s\) \['a'\]"):
        data_integrity({"a": [0.1] * 6}, {})


def test_integrity_verdict_reads_the_last_6_closed_hours_in_time_order():
    hours = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
    x = np.arange(30, dtype=float) / 100
    x[-7:-1] = 0.5  # hours 23..28 stuck; hour 29 has not closed at 05:00 of the next day
    rows = pd.DataFrame({"hour": hours, "feature_1": x}).iloc[::-1]  # unsorted, as read
    ref = {"top_features": [{"name": "a", "train_decile_edges": EDGES}]}
    as_of = datetime(2024, 1, 2, 5, tzinfo=UTC)  # the rows of hours 23:00 .. 04:00
    assert integrity_verdict(rows, ref, as_of).details["a"]["problem"] == "stuck"
    later = datetime(2024, 1, 2, 6, tzinfo=UTC)  # 00:00 .. 05:00: the last one moves
    assert integrity_verdict(rows, ref, later).level == "ok"


def test_integrity_flags_values_that_differ_from_their_recomputation():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.standard_normal(48)) / 4  # a slow feature: lagging it keeps its range
    lagged = np.r_[walk[:24], walk[:24]]  # the last 24 h served from the day before
    v = data_integrity({"a": lagged}, {"a": EDGES}, recomputed={"a": walk})
    assert v.level == "crit" and v.details["a"] == {**v.details["a"], "problem": "mismatch",
                                                    "mismatch_share": 1.0}  # fmt: skip
    same = data_integrity({"a": walk}, {"a": EDGES}, recomputed={"a": walk.copy()})
    assert same.level == "ok" and same.details["a"]["mismatch_share"] == 0.0
    # without a recomputation the lag is invisible to every other rule
    assert data_integrity({"a": lagged}, {"a": EDGES}).level == "ok"
    # 3 of the last 6 hours differ -> crit; 2 of 6 -> ok (a revised candle pages nobody)
    spread = EDGES[-1] - EDGES[0]  # 2.56
    three = walk.copy()
    three[-3:] += 1e-5 * spread  # beyond the tolerance 1e-6 x spread
    assert data_integrity({"a": three}, {"a": EDGES}, recomputed={"a": walk}).level == "crit"
    two = walk.copy()
    two[-2:] += 1.0
    v2 = data_integrity({"a": two}, {"a": EDGES}, recomputed={"a": walk})
    assert v2.level == "ok" and v2.details["a"]["mismatch_share"] == pytest.approx(2 / 6)
    rounding = walk + 1e-7 * spread  # within the tolerance everywhere
    assert data_integrity({"a": rounding}, {"a": EDGES}, recomputed={"a": walk}).level == "ok"
    # an hour the candles cannot give (NaN recomputed) is not compared; a journaled NaN
    # against a known value is a difference
    unknown = walk.copy()
    unknown[-4:] = np.nan
    assert data_integrity({"a": lagged}, {"a": EDGES}, recomputed={"a": unknown}).details["a"][
        "mismatch_share"
    ] == pytest.approx(2 / 6)
    holes = walk.copy()
    holes[[-1, -3, -5]] = np.nan
    assert (
        data_integrity({"a": holes}, {"a": EDGES}, recomputed={"a": walk}).details["a"]["problem"]
        == "mismatch"
    )
    with pytest.raises(ValueError, match=r"recomputed\['a'\] has 47 values, the window 48"):
        data_integrity({"a": walk}, {"a": EDGES}, recomputed={"a": walk[1:]})


def test_recompute_features_equals_the_features_of_the_whole_history():
    from cvn_assets.guard.integrity import RECOMPUTE_HISTORY, recompute_features
    from cvn_assets.market.features import WARMUP_BARS, build_features
    from cvn_assets.market.synthetic_market import synthetic_candles

    candles = synthetic_candles(("BTCUSDC",), hours=3_000)["BTCUSDC"]
    whole = build_features(candles)
    first, last = candles.index[2_500], candles.index[2_505]
    again = recompute_features(candles, first, last)
    assert list(again.index) == list(candles.index[2_500:2_506])
    # rolling windows exact; Wilder (atr_14, rsi_14) from 887 candles back: rounding only
    np.testing.assert_allclose(again.to_numpy(), whole.iloc[2_500:2_506].to_numpy(),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    assert RECOMPUTE_HISTORY + WARMUP_BARS < 2_500
    # hours in the warm-up are NaN (never compared); hours past the candles: no rows
    early = recompute_features(candles, candles.index[160], candles.index[170])
    assert len(early) == 11 and early.iloc[:7].isna().all().all()  # rows 160..166
    assert early.iloc[7:].notna().all().all()  # from row WARMUP_BARS = 167 on
    assert recompute_features(candles, candles.index[0], candles.index[10]).empty
    later = candles.index[-1] + pd.Timedelta(hours=1)
    assert recompute_features(candles, later, later + pd.Timedelta(hours=5)).empty
    with pytest.raises(ValueError, match="UTC open times"):
        recompute_features(candles.tz_localize(None), first, last)


def test_integrity_verdict_matches_recomputed_features_by_hour():
    hours = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
    x = np.sin(np.arange(30) / 3)
    served = np.r_[x[:24], x[:6]]  # hours 24..29 served the values of a day before
    rows = pd.DataFrame({"hour": hours, "feature_1": served}).iloc[::-1]  # unsorted, as read
    ref = {"top_features": [{"name": "a", "train_decile_edges": EDGES}]}
    recomputed = pd.DataFrame({"a": x, "other": 0.0}, index=hours)
    as_of = datetime(2024, 1, 2, 6, tzinfo=UTC)  # hours 00:00 .. 05:00 of 01-02
    v = integrity_verdict(rows, ref, as_of, recomputed)
    assert v.details["a"]["problem"] == "mismatch"
    assert integrity_verdict(rows, ref, as_of).level == "ok"
    # a top feature the feature code does not produce is not compared
    assert integrity_verdict(rows, ref, as_of, recomputed[["other"]]).level == "ok"
    before = datetime(2024, 1, 2, 0, tzinfo=UTC)  # hours 18:00 .. 23:00: as served
    assert integrity_verdict(rows, ref, before, recomputed).level == "ok"


# ------------------------------------------------------------------------ window shape
def test_window_standardize_by_hand():
    assert window_standardize([1, 2, 3, 4, 5]).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    # type 7: q25 = 2, q75 = x[2] + 0.25 (x[3] - x[2]) = 2.75, IQR 0.75: (5 - 2) / 0.75 = 4
    assert window_standardize([2, 2, 2, 5]).tolist() == [0.0, 0.0, 0.0, 4.0]
    assert window_standardize([2, 2, 2, 2, 9]).tolist() == [0, 0, 0, 0, 7]  # IQR 0
    assert window_standardize([]).size == 0


def test_shape_reference_is_scale_free_and_its_floor_is_the_blocks_own_psi():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(168 * 25)
    ref = shape_reference(x)
    assert ref is not None and shape_reference(x[: 168 * 19]) is None  # < 20 blocks
    # a regime: every block's scale and level changed -> the same reference (scale-free)
    y = x * np.repeat(rng.uniform(0.2, 5, 25), 168) + np.repeat(rng.normal(0, 3, 25), 168)
    assert np.allclose(shape_reference(y)["shape_edges"], ref["shape_edges"])
    blocks = [window_standardize(x[i * 168 : (i + 1) * 168]) for i in range(25)]
    pooled = np.concatenate(blocks)
    e = decile_edges(pooled)
    s = training_shares(pooled, e)
    assert ref["shape_window_psi_q99"] == pytest.approx(
        np.quantile([psi(b, e, expected=s) for b in blocks], 0.99)
    )


def _ref(train: np.ndarray, names: list[str]) -> dict:
    top = []
    for k, name in enumerate(names):
        col = train[:, k]
        e = decile_edges(col)
        top.append({"name": name, "train_decile_edges": e.tolist(),
                    "train_bin_shares": training_shares(col, e).tolist(),
                    "window_psi_q99": None, **shape_reference(col)})  # fmt: skip
    return {"top_features": top, "train_mean_confidence": 0.7, "n_train": len(train)}


def test_data_drift_leaves_calendar_features_out_and_keeps_the_spec_psi_visible():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((168 * 30, 2))
    ref = _ref(train, ["ret_1", "dow_sin"])
    week = pd.DataFrame(
        {"feature_1": 3.0 * rng.standard_normal(168), "feature_2": 0.0, "buy_proba": 0.3}
    )
    v = drift_verdicts(week, week.iloc[:0], ref)["data_drift"]
    assert list(v.details) == ["ret_1"]  # dow_sin is not judged
    d = v.details["ret_1"]
    # a volatility regime (x3): the spec's PSI against the training deciles is crit, the
    # window shape is not
    assert d["spec_level"] == "crit" and d["spec_psi"] > 0.5
    assert v.level == "ok" and "spec 6.3" in v.reason
    stuck = week.assign(feature_1=np.r_[week["feature_1"][:84], [0.7] * 84])
    assert drift_verdicts(stuck, week.iloc[:0], ref)["data_drift"].level == "crit"


def test_sharpness_is_judged_for_focal_champions_only():
    ref = {"train_mean_confidence": 0.6, "top_features": []}
    week = pd.DataFrame({"buy_proba": [0.01] * 168})  # sharpness 0.99 > 0.70
    assert drift_verdicts(week, week, ref, "focal")["output_sharpness"].level == "warn"
    assert drift_verdicts(week, week, ref)["output_sharpness"].level == "warn"
    v = drift_verdicts(week, week, ref, "binary:logistic")["output_sharpness"]
    assert v.level == "ok" and "not judged" in v.reason


# ------------------------------------------------------------------------ fault injection
def _monitored(n: int = 24 * 40, trading_threshold: float | None = 0.5) -> db.Monitored:
    rng = np.random.default_rng(3)
    hours = pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC")
    x = pd.DataFrame({"a": rng.standard_normal(n), "b": rng.standard_normal(n)}, index=hours)
    train = rng.standard_normal((168 * 25, 2))
    ref = _ref(train, ["a", "b"])
    ref.update(oos_f1_buy=0.5, f1_threshold=0.5, trading_threshold=trading_threshold)
    tp = rng.random(n) < 0.3
    return db.Monitored(
        crypto="T", features=x, take_profit=tp,
        gross_return=np.where(tp, 0.01, -0.005), exit_offset=np.full(n, 3, dtype=np.int64),
        predict=lambda f: 1 / (1 + np.exp(-np.nan_to_num(f["a"].to_numpy()))),
        ref=ref, loss_function="focal", fee_per_side=0.001,
    )  # fmt: skip


def test_feature_faults_start_at_the_onset_and_break_only_the_top_feature():
    m = _monitored()
    t0 = m.features.index[100]
    a = m.features["a"].to_numpy()
    stuck = db.journal(m, "stuck", t0).predictions
    assert (stuck["feature_1"][:100] == a[:100]).all() and (
        stuck["feature_1"][100:] == a[100]
    ).all()
    assert (stuck["feature_2"] == m.features["b"].to_numpy()).all()
    lag = db.journal(m, "lag_1d", t0).predictions["feature_1"].to_numpy()
    assert (lag[100:] == a[76:-24]).all() and (lag[:100] == a[:100]).all()
    assert db.journal(m, "nan", t0).predictions["feature_1"][100:].isna().all()
    x100 = db.journal(m, "scale_x100", t0).predictions["feature_1"].to_numpy()
    assert np.allclose(x100[100:], 100 * a[100:])
    with pytest.raises(ValueError, match="fault must be one of"):
        db.journal(m, "typo", t0)


def test_outcome_faults_permute_within_weeks_and_calibration_faults_by_hand():
    m = _monitored()
    t0 = m.features.index[168]
    base = db.journal(m).predictions
    rem = db.journal(m, "edge_removed", t0, seed=1).predictions
    assert (rem["label"][:168] == base["label"][:168]).all()
    for a in range(168, len(base), 168):  # the same outcomes in every week, reordered
        assert sorted(rem["label"][a : a + 168]) == sorted(base["label"][a : a + 168])
    rev = db.journal(m, "edge_reversed", t0).predictions
    week = slice(168, 336)
    p, lab = base["buy_proba"][week].to_numpy(), rev["label"][week].to_numpy()
    assert lab[np.argmax(p)] == 0 and lab[np.argmin(p)] == 1  # best outcome to the lowest p
    sharp = db.journal(m, "sharpened", t0).predictions["buy_proba"].to_numpy()
    q = base["buy_proba"].to_numpy()
    assert sharp[200] == pytest.approx(q[200] ** 2 / (q[200] ** 2 + (1 - q[200]) ** 2))
    shifted = db.journal(m, "shifted", t0).predictions["buy_proba"].to_numpy()
    assert shifted[200] == pytest.approx(1 / (1 + (1 - q[200]) / (q[200] * math.e)))


def test_trades_one_open_position_at_a_time_net_of_fees():
    hours = pd.date_range("2024-01-01", periods=12, freq="h", tz="UTC")
    proba = np.array([0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.9, 0.9])
    net = np.arange(12) / 100
    off = np.array([3, 1, 1, 2, 1, 1, 1, 1, 5, 1, 1, 1])
    t = db._trades(hours, proba, 0.5, net, off)
    # entry 0 exits at 3; BUY at 3 (the exit candle) opens, exits at 5; BUY at 5 opens, exits
    # at 6; 8 opens, exits at 13 > 11: past the stream, dropped (and nothing after it)
    assert t["exit_time"].tolist() == [hours[3], hours[5], hours[6]]
    assert t["net_return"].tolist() == [0.0, 0.03, 0.05]
    assert db._trades(hours, proba, None, net, off).empty


# ------------------------------------------------------------------------ counting
def test_daily_evaluations_and_the_null_rate_by_hand():
    m = _monitored(n=24 * 40)  # 2024-03-01 00:00 .. 2024-04-09 23:00
    j = db.journal(m)
    start, end = pd.Timestamp("2024-03-16 05:00", tz="UTC"), m.features.index[-1]
    flags = db.daily_alarms(j, start, end)
    # midnights 03-17 .. 04-09: 24 evaluation days
    assert len(flags["data_drift"]) == 24
    assert flags["data_drift"].index[0] == pd.Timestamp("2024-03-17", tz="UTC")
    r = db.null_rate([pd.Series([True, False, False]), pd.Series([True, True] + [False] * 40)])
    assert (r.alerts, r.days, r.streams) == (3, 45, 2) and r.per_30d == pytest.approx(2.0)
    assert r.book_30d == pytest.approx(4.0)  # two cryptos side by side
    assert db.fault_delay(pd.Series([False, True], index=flags["data_drift"].index[:2]),
                          start, pd.Timedelta(days=14)) == pytest.approx(43 / 24)  # fmt: skip
    assert (
        db.fault_delay(pd.Series([False], index=[start]), start, pd.Timedelta(days=1)) == math.inf
    )
    hourly = db.integrity_alarms(j, start, start + pd.Timedelta(hours=5))
    assert len(hourly) == 6 and not hourly.any()


def test_integrity_alarms_equal_the_sensor_rule_hour_by_hour():
    m = _monitored()
    t0 = m.features.index[300] + pd.Timedelta(minutes=0)
    j = db.journal(m, "stuck", t0)
    at = pd.date_range(t0 - pd.Timedelta(hours=3), t0 + pd.Timedelta(hours=9), freq="h")
    fast = db.integrity_alarms(j, at[0], at[-1])
    slow = [integrity_verdict(j.predictions, j.ref, t.to_pydatetime(), j.recomputed).alarm
            for t in at]  # fmt: skip
    assert fast.tolist() == slow
    # stuck from 300 on: stuck values differ from the recomputed ones from the second stuck
    # hour (the first is its own value): 3 of the window's 6 from t0 + 4 h
    assert fast.tolist() == [False] * 7 + [True] * 6
    lag = db.journal(m, "lag_1d", t0)
    fast_lag = db.integrity_alarms(lag, at[0], at[-1])
    slow_lag = [integrity_verdict(lag.predictions, lag.ref, t.to_pydatetime(), lag.recomputed)
                .alarm for t in at]  # fmt: skip
    assert fast_lag.tolist() == slow_lag == [False] * 6 + [True] * 7  # 3 lagged hours: t0 + 3 h


# ------------------------------------------------------------------------ the benchmark
def test_quick_benchmark_detects_a_stuck_feature_and_counts_its_null_windows(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_detectors

    out = tmp_path / "quick.json"
    rc = bench_detectors.main(["--quick", "--faults", "stuck,nan", "--cache", str(tmp_path),
                               "--json", str(out)])  # fmt: skip
    assert rc == 0
    import json

    res = json.loads(out.read_text())
    rows = {r["case"]: r for r in res["tables"]["data_integrity"]}
    assert rows["fault: stuck"]["within_1d"] == 1.0 and rows["fault: nan"]["within_1d"] == 1.0
    # 2 cryptos, each monitored from its first hour + 15 days to its last: the days evaluated
    first = pd.Timestamp(res["summaries"][0]["first_hour"])
    last = pd.Timestamp(res["summaries"][0]["last_hour"])
    assert (first, last) == (pd.Timestamp("2024-08-27T15:00Z"), pd.Timestamp("2024-11-11T19:00Z"))
    # midnights from first + 15 d = 09-11T15:00 (ceiled: 09-12) to 11-11: 19 + 31 + 11 = 61
    days = 61
    drift = {r["case"]: r for r in res["tables"]["data_drift"]}
    assert drift["null: held_out"]["days"] == 2 * days
    assert math.isfinite(drift["null: held_out"]["far_30d"])
    assert "### data_integrity" in capsys.readouterr().out


def test_concept_drift_skips_quiet_windows_and_doubles_the_calibration_floor():
    ref = {"oos_f1_buy": 0.5, "f1_threshold": 0.5, "f1_window_gap_q95": 0.06,
           "calibration_buy_rate": 0.2, "top_features": []}  # fmt: skip
    # 336 matured rows, 40 BUY labels: rate 0.119 < 0.75 x 0.2 = 0.15 -> not judged
    quiet = pd.DataFrame({"label": [1] * 40 + [0] * 296, "buy_proba": 0.9})
    v = drift_verdicts(quiet, quiet, ref)["concept_drift"]
    assert v.level == "insufficient" and "BUY rate 0.119" in v.reason
    # 60 BUY labels (0.179 >= 0.15): judged; every row predicted BUY: f1 = 120 / (120 + 276)
    busy = pd.DataFrame({"label": [1] * 60 + [0] * 276, "buy_proba": 0.9})
    v = drift_verdicts(busy, busy, ref)["concept_drift"]
    assert v.details["gap_floor"] == pytest.approx(0.12)  # 2 x the calibration q95
    assert v.value == pytest.approx(0.5 - 120 / 396) and v.level == "crit"
    older = {k: x for k, x in ref.items() if k != "calibration_buy_rate"}  # frozen before
    assert drift_verdicts(quiet, quiet, older)["concept_drift"].level != "insufficient"
