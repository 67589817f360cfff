"""Monitoring metrics (spec 6.1): PSI, its no-drift threshold, quantiles, windows, the row.

Truth is independent of the code under test: hand computations (in the comments),
numpy.quantile, brute-force simulations written here with plain numpy, and chi2.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cvn_assets.guard.monitoring import (
    MONITORING_COLUMNS,
    bin_counts,
    buy_proba_quantiles,
    decile_edges,
    expectancy_window,
    latency_summary,
    metrics_row,
    psi,
    psi_null_quantile,
    training_failures,
    training_shares,
)

UTC = dt.UTC
EDGES_1_9 = np.arange(1.0, 10.0)  # interior edges 1, 2, ..., 9 -> bins (-inf,1) [1,2) ... [9,inf)


# --------------------------------------------------------------------------- PSI


def test_decile_edges_are_numpy_linear_deciles_and_reject_bad_input():
    x = np.random.default_rng(0).normal(size=1001)
    np.testing.assert_array_equal(decile_edges(x), np.quantile(x, np.arange(1, 10) / 10))
    # 0..100: virtual index (n-1) q = 100 q -> the edges are exactly 10, 20, ..., 90
    np.testing.assert_array_equal(decile_edges(np.arange(101.0)), np.arange(10.0, 91.0, 10.0))
    with pytest.raises(ValueError, match="values is empty"):
        decile_edges([])
    with pytest.raises(ValueError, match=r"values\[2\] = nan"):
        decile_edges([0.1, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"values\[0\] = inf"):
        decile_edges([np.inf])


def test_psi_hand_example_with_an_empty_bin_floored():
    # actual (n=10): 0.5, 0.5 -> bin 0; 1.5 .. 8.5 -> bins 1..8 one each; bin 9 empty.
    # a = [0.2, 0.1 x 8, 0 -> floored 1e-4], e = 0.1 each (edges only: uniform expected).
    # PSI = (0.2-0.1) ln 2 + 8 * 0 + (1e-4 - 0.1) ln(1e-4 / 0.1)
    #     = 0.1 * 0.693147181 + 0.0999 * 6.907755279 = 0.069314718 + 0.690084752 = 0.759399470
    actual = [0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    assert psi(actual, EDGES_1_9) == pytest.approx(0.759399470, abs=1e-9)


def test_psi_all_mass_in_one_bin_hand_value_and_floor_parameter():
    # a = [1, 0 x 9] -> [1, 1e-4 x 9]; PSI = 0.9 ln 10 + 9 * 0.0999 ln 1000
    #   = 0.9 * 2.302585093 + 0.8991 * 6.907755279 = 2.072326584 + 6.210762771 = 8.283089355
    got = psi([0.0] * 50, EDGES_1_9)
    assert got == pytest.approx(8.283089355, abs=1e-8)
    assert math.isfinite(got)
    # floor 1e-3: 0.9 ln 10 + 9 * 0.099 ln 100 = 2.072326584 + 0.891 * 4.605170186
    #   = 2.072326584 + 4.103206636 = 6.175533220
    assert psi([0.0] * 50, EDGES_1_9, floor=1e-3) == pytest.approx(6.175533220, abs=1e-8)
    for bad in (0.0, -1e-4, 0.1, math.nan):
        with pytest.raises(ValueError, match="floor"):
            psi([0.0], EDGES_1_9, floor=bad)


def test_psi_of_the_training_sample_itself_is_zero():
    rng = np.random.default_rng(1)
    tr = rng.beta(2, 5, size=4380)
    assert psi(tr, decile_edges(tr), training=tr) == 0.0
    # mass points (clipped probabilities): tied deciles, empty bins on both sides -> still 0.
    clipped = np.clip(rng.normal(0.1, 0.2, size=2000), 0.0, 1.0)
    assert (np.diff(decile_edges(clipped)) == 0).any()
    assert psi(clipped, decile_edges(clipped), training=clipped) == 0.0
    # ...whereas assuming 0.1 per bin reads the ties as drift: why training shares are used.
    assert psi(clipped, decile_edges(clipped)) > 0.5


def test_psi_is_invariant_to_the_order_of_actual_and_of_training():
    rng = np.random.default_rng(2)
    tr = rng.random(500)
    act = rng.random(168) ** 1.3
    edges = decile_edges(tr)
    ref = psi(act, edges, training=tr)
    assert ref > 0
    assert psi(rng.permutation(act), edges, training=rng.permutation(tr)) == ref
    assert psi(act[::-1], edges, training=tr) == ref


def test_edge_side_rule_value_on_an_edge_goes_to_the_bin_above_as_searchsorted_right():
    on_edges = np.array([1.0, 2.0, 9.0, 0.999999, 9.000001])
    counts = bin_counts(on_edges, EDGES_1_9)
    # 1.0 -> bin 1, 2.0 -> bin 2, 9.0 -> bin 9, 0.999999 -> bin 0, 9.000001 -> bin 9
    np.testing.assert_array_equal(counts, [1, 1, 1, 0, 0, 0, 0, 0, 0, 2])
    idx = np.searchsorted(EDGES_1_9, on_edges, side="right")
    np.testing.assert_array_equal(counts, np.bincount(idx, minlength=10))
    np.testing.assert_array_equal(idx, np.digitize(on_edges, EDGES_1_9))


def test_psi_bad_input_is_named():
    with pytest.raises(ValueError, match="actual is empty"):
        psi([], EDGES_1_9)
    with pytest.raises(ValueError, match=r"actual\[1\] = nan"):
        psi([0.1, np.nan], EDGES_1_9)
    with pytest.raises(ValueError, match="training is empty"):
        psi([0.1], EDGES_1_9, training=[])
    with pytest.raises(ValueError, match="edges must be non-decreasing"):
        psi([0.1], [0.2, 0.1])
    with pytest.raises(ValueError, match="edges is empty"):
        psi([0.1], [])


# --------------------------------------------------------------------------- null threshold


def _brute_null_q95(n: int, n_sim: int, seed: int, m: int | None = None) -> float:
    """Plain-numpy PSI under no drift: uniform actual values, deciles known or from m draws."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_sim)
    for s in range(n_sim):
        x = rng.random(n)
        if m is None:
            edges, e = np.arange(1, 10) / 10, np.full(10, 0.1)
        else:
            tr = rng.random(m)
            edges = np.quantile(tr, np.arange(1, 10) / 10)
            e = np.bincount(np.searchsorted(edges, tr, side="right"), minlength=10) / m
        a = np.bincount(np.searchsorted(edges, x, side="right"), minlength=10) / n
        a, e = np.maximum(a, 1e-4), np.maximum(e, 1e-4)
        out[s] = np.sum((a - e) * np.log(a / e))
    return float(np.quantile(out, 0.95))


def test_psi_null_95th_percentile_for_one_week_reproduces_the_issue_0109():
    # Issue: "with n = 168 hourly rows a window with no drift already reaches a 95th-percentile
    # PSI of 0.109". Reproduced with deciles estimated from a 4 380-row block (21 900 h / 5,
    # the calibration block of the default sweep). Monte Carlo SE of q95 at 20 000 draws is
    # ~0.0008; tolerance 0.003.
    got = psi_null_quantile(168, 0.95, n_train=4380)
    assert got == pytest.approx(0.109, abs=0.003)
    # Deciles known exactly: lower (~0.1055), close to chi2_9(0.95)/n = 16.919/168 = 0.1007
    # (Yurdakul 2018), above it by the small-sample log asymmetry.
    known = psi_null_quantile(168, 0.95)
    assert known == pytest.approx(0.1055, abs=0.003)
    assert known == pytest.approx(stats.chi2.ppf(0.95, 9) / 168, rel=0.10)
    assert known < got


def test_psi_null_quantile_matches_a_brute_force_simulation():
    # Known deciles, n = 168: brute force 3 000 draws (SE ~0.0025) vs 20 000-draw multinomial.
    assert psi_null_quantile(168) == pytest.approx(_brute_null_q95(168, 3000, seed=11), abs=0.008)
    # Deciles from m = 300 training uniforms: the 1/m term raises q95 to ~0.16 (vs 0.105).
    fast = psi_null_quantile(168, n_train=300)
    assert fast == pytest.approx(_brute_null_q95(168, 3000, seed=12, m=300), abs=0.012)
    assert fast > 0.14


def test_psi_null_quantile_shrinks_with_n_is_seeded_and_checks_arguments():
    qs = [psi_null_quantile(n) for n in (100, 168, 336, 720)]
    assert qs == sorted(qs, reverse=True)
    assert psi_null_quantile(168, seed=3) == psi_null_quantile(168, seed=3)
    assert psi_null_quantile(168, 0.99) > psi_null_quantile(168, 0.95)
    for kwargs, name in (
        ({"n": 0}, "n must"),
        ({"n": 168, "q": 1.0}, "q must"),
        ({"n": 168, "n_train": 1}, "n_train must"),
        ({"n": 168, "n_sim": 10}, "n_sim must"),
        ({"n": 1.5}, "n must"),
    ):
        with pytest.raises(ValueError, match=name):
            psi_null_quantile(**kwargs)


# --------------------------------------------------------------------------- quantiles


def test_buy_proba_quantiles_match_numpy_quantile():
    p = np.random.default_rng(4).beta(2, 8, size=337)
    got = buy_proba_quantiles(p)
    want = np.quantile(p, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert [got[k] for k in ("p05", "p25", "p50", "p75", "p95")] == list(want)
    assert got["n"] == 337
    # tiny hand case: [0, 0.2, 0.4, 0.6, 0.8]: index 4q -> p05 = 0.04, p25 = 0.2, p95 = 0.76
    small = buy_proba_quantiles([0.8, 0.0, 0.4, 0.2, 0.6])
    assert (small["p05"], small["p25"], small["p95"]) == pytest.approx((0.04, 0.2, 0.76))


def test_buy_proba_quantiles_empty_and_bad_input():
    empty = buy_proba_quantiles([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("p05", "p50", "p95"))
    with pytest.raises(ValueError, match=r"p\[1\] = 1.2"):
        buy_proba_quantiles([0.5, 1.2])
    with pytest.raises(ValueError, match=r"p\[0\] = nan"):
        buy_proba_quantiles([np.nan])


def test_latency_summary_p99_matches_numpy():
    ms = np.random.default_rng(5).lognormal(2.0, 0.6, size=1234)
    got = latency_summary(ms)
    assert got["p50"] == np.quantile(ms, 0.5)
    assert got["p99"] == np.quantile(ms, 0.99)
    assert got["n"] == 1234
    # hand: 1..100 ms -> index 99 * 0.99 = 98.01 -> 99 + 0.01 = 99.01
    assert latency_summary(np.arange(1.0, 101.0))["p99"] == pytest.approx(99.01)
    e = latency_summary([])
    assert e["n"] == 0 and math.isnan(e["p99"])
    with pytest.raises(ValueError, match=r"ms\[1\] = -1.0"):
        latency_summary([3.0, -1.0])


# --------------------------------------------------------------------------- expectancy

END = dt.datetime(2024, 1, 2, tzinfo=UTC)
H = dt.timedelta(hours=1)
S = dt.timedelta(seconds=1)


def _trades() -> list[tuple[dt.datetime, float]]:
    return [
        (END, 0.010),  # at end: in 24h and 48h
        (END - 24 * H + S, 0.020),  # just inside 24h
        (END - 24 * H, -0.030),  # exactly 24 h earlier: out of 24h, in 48h
        (END - 48 * H + S, 0.004),  # just inside 48h
        (END - 48 * H, 0.500),  # exactly 48 h earlier: out of both
        (END + S, 0.900),  # after end: out of both
    ]


def test_expectancy_window_exclusive_start_inclusive_end():
    trades = _trades()
    # 24h: 0.010, 0.020 -> mean 0.015, 2 trades
    mean24, n24 = expectancy_window(trades, END, 24)
    assert (mean24, n24) == (pytest.approx(0.015), 2)
    # 48h: 0.010, 0.020, -0.030, 0.004 -> sum 0.004 / 4 = 0.001
    mean48, n48 = expectancy_window(trades, END, 48)
    assert (mean48, n48) == (pytest.approx(0.001), 4)


def test_expectancy_window_accepts_frames_other_zones_and_unix_seconds():
    trades = _trades()
    frame = pd.DataFrame(
        {
            "exit_time": pd.DatetimeIndex([t for t, _ in trades]).tz_convert("Asia/Tokyo"),
            "net_return": [r for _, r in trades],
        }
    )
    assert expectancy_window(frame, END, 24) == (pytest.approx(0.015), 2)
    mapping = {"exit_time": [t.timestamp() for t, _ in trades], "net_return": [0.1] * 6}
    assert expectancy_window(mapping, END.timestamp(), 48) == (pytest.approx(0.1), 4)
    mean, n = expectancy_window([], END, 24)
    assert n == 0 and math.isnan(mean)


def test_expectancy_window_bad_input_is_named():
    naive = pd.DataFrame({"exit_time": [pd.Timestamp("2024-01-01")], "net_return": [0.0]})
    with pytest.raises(ValueError, match="exit_time must be timezone-aware"):
        expectancy_window(naive, END, 24)
    with pytest.raises(ValueError, match="end must be timezone-aware"):
        expectancy_window([], dt.datetime(2024, 1, 2), 24)
    with pytest.raises(ValueError, match="hours must be a positive"):
        expectancy_window([], END, 0)
    with pytest.raises(ValueError, match=r"net_return must be finite.*\[0\] = nan"):
        expectancy_window([(END, math.nan)], END, 24)
    with pytest.raises(ValueError, match="missing column"):
        expectancy_window({"exit_time": []}, END, 24)
    with pytest.raises(ValueError, match=r"trades\[0\] must be an \(exit_time, net_return\)"):
        expectancy_window([(END,)], END, 24)


# --------------------------------------------------------------------------- failures


class _Status(enum.Enum):
    FAILURE = "FAILURE"
    SUCCESS = "SUCCESS"


def test_training_failures_window_boundaries():
    now = END
    focal = {"cvn/loss_function": "focal", "cvn/variant": "focal_g2_a025"}
    base = {"cvn/loss_function": "binary:logistic"}
    records = [
        ("FAILURE", now, focal),  # at now: 1h and 24h
        ("FAILURE", now - H, focal),  # exactly 1 h ago: 24h only
        ("failure", now - H + S, base),  # just inside 1h (case-insensitive status)
        ("FAILURE", now - 24 * H, base),  # exactly 24 h ago: neither
        ("FAILURE", now - 24 * H + S, base),  # just inside 24h
        ("FAILURE", now + S, focal),  # in the future: neither
        ("SUCCESS", now, focal),  # not a failure
        ("CANCELED", now, focal),  # not a failure
        ("FAILURE", now, {}),  # untagged: not a training run
        ("FAILURE", None, focal),  # never ended: cannot be placed in a window
        ("FAILURE", now - 2 * H, {"cvn/loss_function": "hinge"}),  # unknown: own key
    ]
    got = training_failures(records, now)
    assert got == {
        "binary:logistic": {"1h": 1, "24h": 2},
        "focal": {"1h": 1, "24h": 2},
        "hinge": {"1h": 0, "24h": 1},
    }


def test_training_failures_accepts_dicts_unix_seconds_and_enums():
    now = END.timestamp()
    records = [
        {
            "status": _Status.FAILURE,
            "end_time": now - 3600.0,
            "tags": {"cvn/loss_function": "focal"},
        },
        {"status": "FAILURE", "end_time_utc": END, "tags": {"cvn/loss_function": "focal"}},
        {"status": _Status.SUCCESS, "end_time": now, "tags": {"cvn/loss_function": "focal"}},
    ]
    got = training_failures(records, now)
    assert got["focal"] == {"1h": 1, "24h": 2}
    assert got["binary:logistic"] == {"1h": 0, "24h": 0}


def test_training_failures_bad_records_are_named():
    with pytest.raises(
        ValueError, match=r"run_records\[1\] must be a \(status, end_time_utc, tags\)"
    ):
        training_failures([("FAILURE", END, {}), ("FAILURE", END)], END)
    with pytest.raises(ValueError, match=r"run_records\[0\] has no 'end_time'"):
        training_failures([{"status": "FAILURE", "tags": {}}], END)
    with pytest.raises(ValueError, match=r"run_records\[0\].end_time must be timezone-aware"):
        training_failures(
            [("FAILURE", dt.datetime(2024, 1, 1), {"cvn/loss_function": "focal"})], END
        )
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        training_failures([], dt.datetime(2024, 1, 1))


# --------------------------------------------------------------------------- the row


def _row_inputs(rng: np.random.Generator) -> dict:
    day_end = dt.datetime(2024, 3, 2, tzinfo=UTC)
    return dict(
        crypto="BTCUSDC",
        day="2024-03-01",
        loss_function="focal",
        gamma=2.0,
        alpha=0.25,
        buy_proba=rng.beta(2, 6, size=24),
        training_proba=rng.beta(2, 6, size=4380),
        trades=[(day_end - 2 * H, 0.01), (day_end - 30 * H, -0.02)],
        latency_ms=rng.lognormal(1.0, 0.5, size=24),
        run_records=[("FAILURE", day_end - 10 * H, {"cvn/loss_function": "focal"})],
    )


def test_metrics_row_keys_values_and_sql_roundtrip():
    rng = np.random.default_rng(6)
    inp = _row_inputs(rng)
    row = metrics_row(**inp)
    assert tuple(row) == MONITORING_COLUMNS
    assert row["as_of_utc"] == "2024-03-02T00:00:00+00:00"
    assert (row["training_failed_focal_1h"], row["training_failed_focal_24h"]) == (0, 1)
    assert row["training_failed_binary_logistic_24h"] == 0
    assert (row["focal_loss_active"], row["focal_gamma"], row["focal_alpha"]) == (1, 2.0, 0.25)
    assert row["buy_proba_p50"] == np.quantile(inp["buy_proba"], 0.5)
    assert row["buy_proba_n"] == 24
    tr = inp["training_proba"]
    assert row["buy_proba_psi"] == psi(inp["buy_proba"], decile_edges(tr), training=tr)
    assert row["buy_proba_psi_expected"] == "training"
    shares = training_shares(tr, decile_edges(tr))  # continuous: 10 bins of ~0.1
    assert row["buy_proba_psi_null_p95"] == psi_null_quantile(24, n_train=4380, expected=shares)
    # the same bins' null as the continuous order-statistics null, within Monte Carlo error
    assert row["buy_proba_psi_null_p95"] == pytest.approx(
        psi_null_quantile(24, n_train=4380), rel=0.03
    )
    assert (row["expectancy_net_24h"], row["expectancy_trades_24h"]) == (0.01, 1)
    assert row["expectancy_net_48h"] == pytest.approx(-0.005)
    assert row["expectancy_trades_48h"] == 2
    assert row["latency_p99_ms"] == np.quantile(inp["latency_ms"], 0.99)
    # flat, SQL-ready: one INSERT into a table with exactly these columns, read back equal
    con = sqlite3.connect(":memory:")
    con.execute(f"CREATE TABLE monitoring_metrics ({', '.join(MONITORING_COLUMNS)})")
    marks = ", ".join("?" for _ in MONITORING_COLUMNS)
    con.execute(f"INSERT INTO monitoring_metrics VALUES ({marks})", list(row.values()))
    back = con.execute("SELECT * FROM monitoring_metrics").fetchone()
    assert dict(zip(MONITORING_COLUMNS, back, strict=True)) == row


def test_metrics_row_baseline_and_nothing_measured_gives_nulls():
    row = metrics_row(
        crypto="ETHUSDC",
        day=dt.date(2024, 3, 1),
        loss_function="binary:logistic",
        gamma=None,
        alpha=None,
        buy_proba=[],
        trades=[],
        latency_ms=[],
        psi_edges=np.arange(1, 10) / 10,
        run_records=[("FAILURE", END, {"cvn/loss_function": "hinge"})],
        now=END,
    )
    assert (row["focal_loss_active"], row["focal_gamma"], row["focal_alpha"]) == (0, None, None)
    assert row["buy_proba_n"] == 0 and row["buy_proba_p50"] is None
    assert row["buy_proba_psi"] is None and row["buy_proba_psi_null_p95"] is None
    assert (row["expectancy_net_24h"], row["expectancy_trades_24h"]) == (None, 0)
    assert (row["latency_p99_ms"], row["latency_n"]) == (None, 0)
    assert (row["training_failed_other_1h"], row["training_failed_other_24h"]) == (1, 1)
    assert row["as_of_utc"] == "2024-01-02T00:00:00+00:00"


def test_metrics_row_uniform_expected_shares_with_edges_only():
    p = np.linspace(0.05, 0.95, 200)
    edges = np.arange(1, 10) / 10
    row = metrics_row(
        crypto="SOLUSDC",
        day="2024-03-01",
        loss_function="binary:logistic",
        gamma=None,
        alpha=None,
        buy_proba=p,
        trades=[],
        latency_ms=[1.0],
        psi_edges=edges,
    )
    assert row["buy_proba_psi_expected"] == "uniform"
    assert row["buy_proba_psi"] == psi(p, edges)
    assert row["buy_proba_psi_null_p95"] == psi_null_quantile(200)


def test_metrics_row_bad_input_is_named():
    inp = _row_inputs(np.random.default_rng(7))
    with pytest.raises(ValueError, match="gamma"):
        metrics_row(**{**inp, "gamma": None})
    with pytest.raises(ValueError, match="day must be 'YYYY-MM-DD'"):
        metrics_row(**{**inp, "day": "01/03/2024"})
    with pytest.raises(ValueError, match=r"training_proba\[0\] = 2.0"):
        metrics_row(**{**inp, "training_proba": [2.0, 0.1]})
    with pytest.raises(ValueError, match="crypto must be"):
        metrics_row(**{**inp, "crypto": ""})
