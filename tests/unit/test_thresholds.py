"""Spec 6.1's thresholds (cvn_assets/guard/thresholds.py): the bounds as the spec writes them
(warn 1/h and crit 5/h reached; latency and PSI exceeded), the clock-hour windows of the
failure peak, and the worst-first summary."""

import datetime as dt

import pytest

from cvn_assets.guard.thresholds import (
    INFERENCE_LATENCY,
    NET_EXPECTANCY,
    judge_failures,
    judge_latency,
    judge_psi,
    peak_focal_failures,
    summarize,
)

DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def _failed(at: dt.datetime, loss: str = "focal") -> tuple[str, dt.datetime, dict]:
    return ("FAILURE", at, {"cvn/loss_function": loss})


def test_failure_bounds_are_reached_not_exceeded() -> None:
    h = DAY + dt.timedelta(hours=14)
    assert judge_failures(DAY, 0, h) is None
    assert judge_failures(DAY, 1, h).level == "warn"  # 1/h reached
    assert judge_failures(DAY, 4, h).level == "warn"
    c = judge_failures(DAY, 5, h)
    assert (c.level, c.value, c.threshold, c.crypto, c.day) == ("crit", 5.0, 5, "*", "2026-03-02")
    assert "hour 2026-03-02T14:00Z-15:00Z" in c.detail


def test_failure_peak_counts_clock_hours_left_open_right_closed() -> None:
    h14 = DAY + dt.timedelta(hours=14)
    records = [
        _failed(h14),  # exactly 14:00 -> the hour (13:00, 14:00]
        _failed(h14 + dt.timedelta(seconds=1)),  # (14:00, 15:00]
        _failed(h14 + dt.timedelta(minutes=30)),
        _failed(h14 + dt.timedelta(hours=1)),  # 15:00 exactly: still (14:00, 15:00]
        _failed(h14 + dt.timedelta(minutes=10), "binary:logistic"),  # not focal
        ("SUCCESS", h14 + dt.timedelta(minutes=5), {"cvn/loss_function": "focal"}),
        _failed(DAY - dt.timedelta(minutes=1)),  # the day before
    ]
    assert peak_focal_failures(records, DAY) == (3, h14)
    assert peak_focal_failures([], DAY) == (0, DAY)


def test_latency_and_psi_bounds_are_exceeded_not_reached() -> None:
    assert judge_latency("BTCUSDC", DAY, 100.0) is None
    assert judge_latency("BTCUSDC", DAY, None) is None
    assert judge_latency("BTCUSDC", DAY, 100.01).level == "warn"
    assert judge_latency("BTCUSDC", DAY, 500.0).level == "warn"
    crit = judge_latency("BTCUSDC", DAY, 500.01)
    assert (crit.level, crit.threshold) == ("crit", 500.0)
    # PSI: max(spec 0.10, the no-drift 95th percentile); only a warn level exists
    assert judge_psi("BTCUSDC", DAY, 0.11, None).threshold == 0.10
    assert judge_psi("BTCUSDC", DAY, 0.10, None) is None
    assert judge_psi("BTCUSDC", DAY, 0.5, 1.73) is None  # under the null at n = 24
    c = judge_psi("BTCUSDC", DAY, 2.0, 1.73)
    assert (c.level, c.threshold) == ("warn", 1.73)
    assert judge_psi("BTCUSDC", DAY, None, 1.0) is None


def test_summary_is_worst_first_and_names_it() -> None:
    a = judge_latency("ETHUSDC", DAY, 200.0)
    b = judge_latency("BTCUSDC", DAY, 700.0)
    c = judge_latency("SOLUSDC", DAY, 900.0)
    s = summarize(INFERENCE_LATENCY, [a, b, c], evaluated=10)
    assert [x.crypto for x in s.crossings] == ["SOLUSDC", "BTCUSDC", "ETHUSDC"]
    assert (s.passed, s.level) == (False, "crit")
    assert s.description.startswith("CRIT: SOLUSDC 2026-03-02: inference latency p99 900.0 ms")
    assert "3 crossing(s) (2 crit) in 10 crypto-day(s) judged" in s.description
    ok = summarize(NET_EXPECTANCY, [], evaluated=3, skipped=2)
    assert ok.passed and ok.level is None and ok.worst is None
    assert ok.description == "3 crypto-day(s) within the thresholds, 2 without enough data to judge"
    with pytest.raises(ValueError, match="check must be one of"):
        summarize("latency", [], 0)
