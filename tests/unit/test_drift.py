"""Drift and expectancy decision rules (cvn_assets.guard.drift).

Truth is independent of the code under test: hand computations (in the comments), scipy's
t / normal quantiles, and seeded Monte Carlo false-alarm rates compared with the nominal
rate within 3 Monte Carlo standard errors (or a stated bound).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from scipy import stats

from cvn_assets.guard.drift import (
    EXPECTANCY_ALPHA,
    STALE_AFTER,
    SharpnessState,
    Verdict,
    auto_kill_switch,
    concept_drift,
    data_drift,
    expectancy_alert,
    expectancy_negative_any,
    expectancy_negative_focal,
    false_alarm_rate,
    journal_lag,
    sharpness_drift,
    sharpness_revert,
    stale_verdict,
)
from cvn_assets.guard.monitoring import psi_null_quantile

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
N_SIM = 20_000
#: skewed TP/SL returns make the one-sided t-test anti-conservative: measured crit rate at
#: most this many times alpha (the module docstring's figures)
SKEW_BOUND = 2.0
#: Normal deciles: the frozen training edges of a standard-normal feature.
NORMAL_EDGES = stats.norm.ppf(np.arange(1, 10) / 10)


def _v(level: str) -> Verdict:
    return Verdict(level, 0.0, 0.0, 20, "test")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- expectancy


def _critical(r: np.ndarray, alpha: float = EXPECTANCY_ALPHA) -> float:
    n = r.size
    return -stats.t.ppf(1 - alpha, n - 1) * r.std(ddof=1) / math.sqrt(n)


def test_expectancy_insufficient_below_min_trades() -> None:
    r = np.full(9, -0.05)  # hugely negative, but 9 < 10 trades
    v = expectancy_alert(r, r)
    assert v.level == "insufficient" and v.n == 9
    assert expectancy_alert([], []).level == "insufficient"
    assert math.isnan(expectancy_alert([], []).value)
    # exactly min_trades is evaluated
    assert expectancy_alert(np.full(10, -0.05), []).level == "crit"


def test_expectancy_crit_just_below_and_above_critical_mean() -> None:
    # 10 trades alternating +-1 %, shifted by c: sd = 0.01 * sqrt(10/9) whatever the shift.
    base = np.tile([0.01, -0.01], 5)
    sd = 0.01 * math.sqrt(10 / 9)
    crit_mean = -stats.t.ppf(1 - EXPECTANCY_ALPHA, 9) * sd / math.sqrt(10)  # = -0.009404...
    assert EXPECTANCY_ALPHA == 0.01  # t_{0.99, 9} = 2.8214 (tables)
    assert crit_mean == pytest.approx(-2.8214 * 0.0105409 / 3.16228, rel=1e-4)
    below = expectancy_alert(base + crit_mean - 1e-6, [])
    above = expectancy_alert(base + crit_mean + 1e-6, [])
    assert below.level == "crit" and below.threshold == pytest.approx(crit_mean)
    assert above.level == "ok"
    assert below.value == pytest.approx(crit_mean - 1e-6)


def test_expectancy_warn_on_24h_only() -> None:
    r24 = np.tile([0.01, -0.01], 5) - 0.01  # mean -1 %, below its critical -0.94 %
    r48 = np.concatenate([np.tile([0.01, -0.01], 5) + 0.01, r24])  # 48 h mean 0
    v = expectancy_alert(r48, r24)
    assert v.level == "warn" and v.n == 10
    assert v.threshold == pytest.approx(_critical(r24))
    assert v.details["mean_48h"] == pytest.approx(0.0, abs=1e-12)
    # 24 h window with too few trades cannot warn
    assert expectancy_alert(r48, r24[:9]).level == "ok"


def test_expectancy_constant_series() -> None:
    assert expectancy_alert(np.full(12, -0.001), []).level == "crit"  # sd 0, mean < 0
    assert expectancy_alert(np.zeros(12), np.zeros(12)).level == "ok"  # break-even


def test_expectancy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="net_returns_48h"):
        expectancy_alert([0.1, math.nan], [])
    with pytest.raises(ValueError, match="alpha"):
        expectancy_alert([0.1], [], alpha=1.0)
    with pytest.raises(ValueError, match="min_trades"):
        expectancy_alert([0.1], [], min_trades=1)


def test_expectancy_negative_focal_needs_two_cryptos_and_focal() -> None:
    one = {"BTC": _v("crit"), "ETH": _v("ok"), "SOL": _v("ok")}
    two = {"BTC": _v("crit"), "ETH": _v("crit"), "SOL": _v("ok")}
    assert expectancy_negative_focal(one, True).level == "ok"
    p1 = expectancy_negative_focal(two, True)
    assert p1.level == "crit" and p1.value == 2 and p1.threshold == 2 and p1.n == 3
    assert p1.details["crit"] == ["BTC", "ETH"]
    assert expectancy_negative_focal(two, False).level == "ok"  # baseline live: no P1
    # warn: >= 2 cryptos warn-or-crit
    assert expectancy_negative_focal({"BTC": _v("crit"), "ETH": _v("warn")}, True).level == "warn"
    assert expectancy_negative_focal({"BTC": _v("warn"), "ETH": _v("warn")}, True).level == "warn"
    # only one crypto with enough trades: cannot fire
    thin = {"BTC": _v("ok"), "ETH": _v("insufficient"), "SOL": _v("insufficient")}
    v = expectancy_negative_focal(thin, True)
    assert v.level == "insufficient" and v.n == 1


def test_auto_kill_switch_time_boundaries() -> None:
    h = dt.timedelta(hours=1)
    s = dt.timedelta(seconds=1)
    assert not auto_kill_switch([], NOW)
    assert not auto_kill_switch([NOW], NOW)  # one alert
    assert auto_kill_switch([NOW - h + s, NOW], NOW)  # 59:59 apart, both in window
    # hourly evaluations: two consecutive P1s exactly 1 h apart are "within 1 h" (closed)
    assert auto_kill_switch([NOW - h, NOW], NOW)
    assert not auto_kill_switch([NOW - h - s, NOW], NOW)  # 1 h 1 s apart: out
    assert not auto_kill_switch([NOW - 2 * h, NOW - h - s], NOW)  # an old pair
    assert not auto_kill_switch([NOW - 10 * s, NOW + s], NOW)  # future alert ignored
    assert not auto_kill_switch([NOW, NOW], NOW)  # a duplicated record counts once
    # Unix seconds and other zones
    t = NOW.timestamp()
    assert auto_kill_switch([t - 3599, t], t)
    cet = dt.timezone(dt.timedelta(hours=1))
    assert auto_kill_switch([(NOW - 30 * 60 * s).astimezone(cet), NOW], NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        auto_kill_switch([dt.datetime(2026, 3, 1, 12)], NOW)


# --------------------------------------------------------------------------- data drift


def test_data_drift_levels_need_rule_and_null() -> None:
    edges = {"f": np.arange(1, 10) / 10}
    # 200 rows at bin midpoints: 40 in bin 0, 32 in bin 5, 16 in each of bins 1-4, 6-9
    counts = [40, 16, 16, 16, 16, 32, 16, 16, 16, 16]
    x = np.repeat(np.arange(10) / 10 + 0.05, counts)
    # shares: b0 0.2, b5 0.16, others 0.08 (x8)
    hand = (
        (0.2 - 0.1) * math.log(2.0)
        + (0.16 - 0.1) * math.log(1.6)
        + 8 * (0.08 - 0.1) * math.log(0.8)
    )
    v = data_drift({"f": x}, edges)
    assert v.value == pytest.approx(hand)  # 0.1338: below warn 0.2
    assert v.level == "ok" and v.n == 200
    # the same PSI is a warning when the rule of thumb is lower but not below the null
    null = psi_null_quantile(200, 0.95)
    assert hand > null
    assert data_drift({"f": x}, edges, warn=hand - 1e-6).level == "warn"
    assert data_drift({"f": x}, edges, warn=hand + 1e-6).level == "ok"
    assert data_drift({"f": x}, edges, warn=0.1, crit=hand - 1e-6).level == "crit"
    # rule of thumb passed but null not: no alarm
    v = data_drift({"f": x}, edges, warn=0.0, crit=0.0, q=0.9999)
    assert psi_null_quantile(200, 0.9999) > hand and v.level == "ok"


def test_data_drift_max_decides_and_insufficient() -> None:
    edges = {"a": NORMAL_EDGES, "b": NORMAL_EDGES, "c": NORMAL_EDGES}
    rng = np.random.default_rng(0)
    windows = {
        "a": rng.normal(size=168),
        "b": rng.normal(loc=2.0, size=168),  # strong shift
        "c": rng.normal(size=50),  # below min_rows
    }
    v = data_drift(windows, edges)
    assert v.level == "crit" and v.reason.count("'b'") == 1
    assert v.value == v.details["b"]["psi"] > 0.5
    assert v.details["c"]["level"] == "insufficient" and math.isnan(v.details["c"]["psi"])
    assert v.details["a"]["level"] == "ok"
    assert data_drift({"c": windows["c"]}, edges).level == "insufficient"
    with pytest.raises(ValueError, match="edges missing"):
        data_drift({"z": windows["a"]}, edges)


# --------------------------------------------------------------------------- concept drift


def test_concept_drift_thresholds_and_guard() -> None:
    # N = 400 relevant rows at oos 0.6: a = 0.6/1.4, se = 2/(1+a)^2 sqrt(a(1-a)/N)
    a = 0.6 / 1.4
    se = 2 / (1 + a) ** 2 * math.sqrt(a * (1 - a) / 400)  # 0.02426
    z_se = stats.norm.ppf(0.95) * se  # 0.0399 < 0.05: the rule of thumb binds
    assert z_se < 0.05
    kw = {"n_positives": 400, "n_relevant": 400}
    assert concept_drift(0.6 - 0.0501, 0.6, 2000, **kw).level == "warn"
    assert concept_drift(0.6 - 0.0499, 0.6, 2000, **kw).level == "ok"
    v = concept_drift(0.6 - 0.1001, 0.6, 2000, **kw)
    assert v.level == "crit" and v.threshold == pytest.approx(0.10)
    assert v.details["se"] == pytest.approx(se)
    # with only 100 positives the se binds: z se = 2 * 0.0399 = 0.0798 > 0.05
    v = concept_drift(0.6 - 0.07, 0.6, 2000, n_positives=100)
    assert v.level == "ok" and v.threshold == pytest.approx(2 * z_se)
    assert concept_drift(0.6 - 0.08, 0.6, 2000, n_positives=100).level == "warn"
    # sample-size guard
    assert concept_drift(0.0, 0.6, 167, n_positives=100).level == "insufficient"
    assert concept_drift(0.0, 0.6, 168, n_positives=29).level == "insufficient"
    assert concept_drift(0.0, 0.6, 168, n_positives=30).level == "crit"
    with pytest.raises(ValueError, match="n_positives"):
        concept_drift(0.5, 0.6, 10, n_positives=11)


# --------------------------------------------------------------------------- sharpness


def test_sharpness_threshold_and_revert() -> None:
    p = np.array([0.9, 0.1] * 24)  # sharpness exactly 0.9, 48 rows
    assert sharpness_drift(p, 0.79).level == "warn"  # 0.9 > 0.89
    assert sharpness_drift(p, 0.81).level == "ok"  # 0.9 <= 0.91
    assert sharpness_drift(p[:47], 0.5).level == "insufficient"
    state = SharpnessState()
    trig, ok, thin = _v("warn"), _v("ok"), _v("insufficient")
    state = state.update(trig)
    assert state.consecutive == 1 and not state.revert
    state = state.update(thin)  # no evidence: keeps the pending trigger
    assert state.consecutive == 1
    state = state.update(trig)
    assert state.revert and sharpness_revert(2) and not sharpness_revert(1)
    assert state.update(ok) == SharpnessState(0)
    assert not SharpnessState().update(trig).update(ok).update(trig).revert


# --------------------------------------------------------------------------- false alarms


def _within(rate: float, nominal: float, n: int, slack: float = 0.0) -> bool:
    """|rate - nominal| <= 3 Monte Carlo standard errors (+ slack)."""
    return abs(rate - nominal) <= 3 * math.sqrt(nominal * (1 - nominal) / n) + slack


def _normal_trades(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = rng.normal(0.0, 0.01, 20)  # 20 trades in 48 h, the last 10 in 24 h, vol 1 %
    return r, r[10:]


def _skewed_trades(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = np.where(rng.random(20) < 1 / 3, 0.02, -0.01)  # TP +2 % / SL -1 %, mean 0
    return r, r[10:]


def test_false_alarm_expectancy_zero_mean() -> None:
    def rule(x: tuple[np.ndarray, np.ndarray]) -> Verdict:
        return expectancy_alert(*x)

    a = EXPECTANCY_ALPHA
    crit = false_alarm_rate(rule, _normal_trades, N_SIM, 1, levels=("crit",))
    assert _within(crit.rate, a, N_SIM)  # exact t-test: alpha
    anyl = false_alarm_rate(rule, _normal_trades, N_SIM, 1)
    assert a < anyl.rate < 2 * a  # crit or (24 h only): between alpha and 2 alpha
    skew = false_alarm_rate(rule, _skewed_trades, N_SIM, 2, levels=("crit",))
    assert skew.rate <= SKEW_BOUND * a  # stated: anti-conservative for skewed returns
    print(f"expectancy FAR normal crit {crit.rate}, any {anyl.rate}; skewed crit {skew.rate}")


def test_false_alarm_expectancy_p1_five_cryptos() -> None:
    def sampler(rng: np.random.Generator) -> dict[str, Verdict]:
        return {f"c{i}": expectancy_alert(*_normal_trades(rng)) for i in range(5)}

    far = false_alarm_rate(
        lambda v: expectancy_negative_focal(v, True), sampler, 10_000, 3, levels=("crit",)
    )
    a = EXPECTANCY_ALPHA
    binom = 1 - (1 - a) ** 5 - 5 * a * (1 - a) ** 4  # 0.00098 at alpha 0.01
    assert _within(far.rate, binom, far.n_sim)
    print(f"P1 FAR {far.rate}")


def test_false_alarm_data_drift_n168() -> None:
    one = {"f": NORMAL_EDGES}

    def sampler(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"f": rng.normal(size=168)}

    aware = false_alarm_rate(lambda w: data_drift(w, one, warn=0.0, crit=0.0), sampler, N_SIM, 4)
    # the null quantile alone: 1 - q. Slack 0.005: the threshold is itself a Monte Carlo
    # quantile (20 000 draws, seed 0) of a discrete statistic; its true exceedance rate is
    # 0.048 (400 000 draws).
    assert _within(aware.rate, 0.05, N_SIM, slack=0.005)
    full = false_alarm_rate(lambda w: data_drift(w, one), sampler, N_SIM, 4)
    assert full.rate <= 0.005  # the 0.2 rule binds at n = 168 (null q95 0.106)
    print(f"PSI FAR n=168 null-only {aware.rate}, full {full.rate}")


def test_false_alarm_data_drift_five_features() -> None:
    edges = {f"f{i}": NORMAL_EDGES for i in range(5)}

    def sampler(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {f"f{i}": rng.normal(size=168) for i in range(5)}

    aware = false_alarm_rate(lambda w: data_drift(w, edges, warn=0.0, crit=0.0), sampler, 10_000, 5)
    assert _within(aware.rate, 1 - 0.95**5, 10_000, slack=0.01)
    full = false_alarm_rate(lambda w: data_drift(w, edges), sampler, 10_000, 5)
    assert full.rate <= 0.01
    print(f"PSI FAR 5 features null-only {aware.rate}, full {full.rate}")


def test_false_alarm_concept_drift() -> None:
    def sampler(rng: np.random.Generator) -> tuple[float, int, int]:
        tp, fp, fn, _ = rng.multinomial(336, [0.15, 0.15, 0.15, 0.55])  # F1 0.5, 30 % BUY
        return 2 * tp / (2 * tp + fp + fn), int(tp + fn), int(tp + fp + fn)

    far = false_alarm_rate(
        lambda x: concept_drift(x[0], 0.5, 336, n_positives=x[1]), sampler, N_SIM, 6
    )
    assert far.rate <= 0.05  # n_positives se is an upper bound: conservative
    tight = false_alarm_rate(
        lambda x: concept_drift(x[0], 0.5, 336, n_positives=x[1], n_relevant=x[2]),
        sampler,
        N_SIM,
        6,
    )
    # the delta method is slightly anti-conservative here (F1's estimator is skewed):
    # stated tolerance 1.25 alpha
    assert tight.rate <= 0.0625
    print(f"concept FAR {far.rate}, with n_relevant {tight.rate}")


def test_false_alarm_sharpness() -> None:
    rng = np.random.default_rng(0)
    ref = float(np.maximum(p := rng.beta(2, 5, 1_000_000), 1 - p).mean())
    far = false_alarm_rate(lambda p: sharpness_drift(p, ref), lambda g: g.beta(2, 5, 48), N_SIM, 7)
    assert far.rate <= math.exp(-0.08 * 48)  # Hoeffding bound, 2.1 %
    print(f"sharpness FAR {far.rate}")


def test_false_alarm_rate_helper() -> None:
    far = false_alarm_rate(lambda b: _v("warn" if b else "insufficient"), lambda g: True, 10, 0)
    assert far.rate == 1.0 and far.n_insufficient == 0 and far.se == 0.0
    far = false_alarm_rate(lambda b: _v("insufficient"), lambda g: True, 10, 0)
    assert far.rate == 0.0 and far.n_insufficient == 10


def test_dependence_aware_floors_raise_the_bounds() -> None:
    """The floors measured on held-out/training windows (autocorrelation, regimes) raise the
    bounds: an alarm without the floor is ok with a floor above the statistic."""
    from cvn_assets.guard.champion import window_f1_gap_quantile

    # f1 gap: 8 windows of 2 rows; window 0 predicts the opposite of y, the others exactly:
    # f1 per window 0, 1, ..., 1; whole block tp 7, fp 1, fn 1 -> 14/16 = 0.875; gaps 0.875
    # then -0.125 x 7; numpy's linear q95 at position 0.95 * 7 = 6.65 -> -0.125 + 0.65 * 1.0
    y = np.tile([1, 0], 8)
    p = np.where(y == 1, 0.9, 0.1)
    p[:2] = [0.1, 0.9]
    assert window_f1_gap_quantile(p, y, 0.5, window=2) == pytest.approx(0.525)
    assert window_f1_gap_quantile(p[:14], y[:14], 0.5, window=2) is None  # < 8 windows
    base = dict(n_positives=200, n_relevant=400, min_rows=10, min_positives=10)
    assert concept_drift(0.38, 0.50, 1000, **base).level == "crit"  # gap 0.12
    assert concept_drift(0.38, 0.50, 1000, gap_floor=0.2, **base).level == "ok"
    assert concept_drift(0.38, 0.50, 1000, gap_floor=0.11, **base).level == "crit"
    # data drift: all 200 rows in one decile -> PSI = 0.9 ln(0.9/0.1) + 9 * ... >> 0.5
    edges = {"f": np.arange(1, 10) / 10}
    x = np.full(200, 0.05)
    assert data_drift({"f": x}, edges).level == "crit"
    v = data_drift({"f": x}, edges, null_floor={"f": 100.0})
    assert v.level == "ok" and v.threshold == 100.0


def test_expectancy_last_trades_is_the_one_sided_t_test_of_exactly_its_trades():
    from scipy import stats as sps

    from cvn_assets.guard.drift import expectancy_last_trades

    rng = np.random.default_rng(21)
    for _ in range(200):
        r = rng.normal(-0.002, 0.01, 10)
        v = expectancy_last_trades(r)
        p = sps.ttest_1samp(r, 0.0, alternative="less").pvalue
        assert v.level == ("crit" if p < EXPECTANCY_ALPHA else "ok")
        assert v.n == 10 and v.value == pytest.approx(r.mean(), abs=1e-15)
        crit = -sps.t.ppf(1 - EXPECTANCY_ALPHA, 9) * r.std(ddof=1) / np.sqrt(10)
        assert v.threshold == pytest.approx(crit, rel=1e-12)
        assert "last 10 trades" in v.reason
    thin = expectancy_last_trades([-0.01] * 9)
    assert thin.level == "insufficient" and thin.n == 9 and not thin.alarm
    with pytest.raises(ValueError, match="min_trades"):
        expectancy_last_trades([-0.01] * 10, min_trades=1)
    with pytest.raises(ValueError, match="net_returns"):
        expectancy_last_trades([-0.01, float("nan")] * 5)


# --------------------------------------------------------------------------- stale journal


def test_journal_lag_is_now_minus_the_last_candle_close_or_the_first_champion() -> None:
    h = dt.timedelta(hours=1)
    last = NOW - 4 * h  # the hour 08:00, its candle closed at 09:00: 3 h before 12:00
    assert journal_lag(last, None, NOW) == 3 * h
    assert journal_lag(last, NOW - 50 * h, NOW) == 3 * h  # a journaled hour wins
    assert journal_lag(None, NOW - 5 * h, NOW) == 5 * h  # nothing journaled: since live
    assert journal_lag(None, None, NOW) is None
    assert journal_lag(NOW, None, NOW) == -h  # a replay: the journal is ahead
    with pytest.raises(ValueError, match="last_hour must be a timezone-aware"):
        journal_lag(dt.datetime(2026, 3, 1, 8), None, NOW)
    with pytest.raises(ValueError, match="as_of must be a timezone-aware"):
        journal_lag(last, None, dt.datetime(2026, 3, 1, 12))


def test_stale_verdict_bounds_and_the_levels_it_replaces() -> None:
    assert STALE_AFTER == dt.timedelta(hours=2)
    h, s = dt.timedelta(hours=1), dt.timedelta(seconds=1)
    ok = Verdict("ok", 0.001, -0.002, 12, "48 h mean fine", {"n_48h": 12})
    # last hour 09:00 closed at 10:00: exactly 2 h before 12:00 is not stale, 2 h + 1 s is
    assert stale_verdict(ok, NOW - 3 * h, None, NOW) is ok
    v = stale_verdict(ok, NOW - 3 * h, None, NOW + s)
    assert v.level == "stale" and not v.alarm
    assert (v.value, v.threshold, v.n) == (ok.value, ok.threshold, ok.n)
    assert v.details["n_48h"] == 12 and v.details["journal_end"] == (NOW - 2 * h).isoformat()
    assert v.details["hours_behind"] == pytest.approx(2 + 1 / 3600)
    assert "2026-03-01T09:00Z" in v.reason and "2 h 00 min" in v.reason
    assert "ok: 48 h mean fine" in v.reason  # the verdict it replaces
    thin = Verdict("insufficient", math.nan, math.nan, 3, "3 trades in 48 h < min_trades 10")
    v = stale_verdict(thin, None, NOW - 5 * h, NOW)
    assert v.level == "stale" and "no hour journaled" in v.reason and "5 h 00 min" in v.reason
    # warn and crit stand: the trades already journaled are evidence whatever is missing
    for level in ("warn", "crit"):
        alarm = _v(level)
        assert stale_verdict(alarm, NOW - 10 * h, None, NOW) is alarm
    assert stale_verdict(ok, None, None, NOW) is ok  # nothing known: nothing to say


def test_expectancy_rule_reports_stale_never_as_an_alarm() -> None:
    stale = Verdict("stale", 0.0, 0.0, 20, "journal stops at the hour 2026-03-01T08:00Z")
    # two crit cryptos: the P1 stands whatever a third crypto's journal does
    p1 = expectancy_negative_focal({"BTC": _v("crit"), "ETH": _v("crit"), "SOL": stale}, True)
    assert p1.level == "crit" and p1.n == 2 and p1.details["stale"] == ["SOL"]
    assert expectancy_negative_focal({"BTC": _v("warn"), "ETH": _v("crit"), "SOL": stale},
                                     True).level == "warn"  # fmt: skip
    # otherwise stale rather than ok or insufficient, naming the crypto and its journal end
    for others in ({"BTC": _v("ok"), "ETH": _v("ok")}, {"BTC": _v("insufficient")}):
        v = expectancy_negative_focal({**others, "SOL": stale}, True)
        assert v.level == "stale" and not v.alarm
        assert "SOL: journal stops at the hour 2026-03-01T08:00Z" in v.reason
    assert expectancy_negative_focal({"SOL": stale}, False).level == "ok"  # focal not active


def test_sharpness_state_leaves_the_count_unchanged_on_stale() -> None:
    stale = Verdict("stale", 0.9, 0.7, 48, "journal stale")
    assert SharpnessState(1).update(stale) == SharpnessState(1)


def test_expectancy_any_combines_every_champion_whatever_its_loss() -> None:
    """The P2 is the P1's combination without the focal condition (issue 21, item 4): >= 2
    crit -> crit, >= 2 warn-or-crit -> warn, then stale, insufficient, ok."""
    crit, warn, ok = _v("crit"), _v("warn"), _v("ok")
    v = expectancy_negative_any({"BTC": crit, "ETH": crit, "SOL": ok})
    assert (v.level, v.value, v.threshold, v.n) == ("crit", 2.0, 2.0, 3)
    assert v.reason.startswith("P2: net expectancy < 0 over 48 h on 2 live champions")
    assert v.details["crit"] == ["BTC", "ETH"]
    # the same verdicts: the P1 off (no focal champion) says ok, the P2 does not
    assert expectancy_negative_focal({"BTC": crit, "ETH": crit}, False).reason == "focal not active"
    assert expectancy_negative_any({"BTC": crit, "ETH": warn}).level == "warn"
    assert expectancy_negative_any({"BTC": crit, "ETH": ok}).level == "ok"  # one alone: no page
    assert expectancy_negative_any({"BTC": crit}, min_cryptos=1).level == "crit"
    stale = Verdict("stale", 0.0, 0.0, 20, "journal stops at the hour 2026-03-01T08:00Z")
    v = expectancy_negative_any({"BTC": ok, "ETH": ok, "SOL": stale})
    assert v.level == "stale" and "journal stale on 1 cryptos" in v.reason
    assert expectancy_negative_any({"BTC": ok, "ETH": _v("insufficient")}).level == "insufficient"
    assert expectancy_negative_any({}).reason == "no live champion"
    with pytest.raises(ValueError, match="min_cryptos must be an integer >= 1, got 0"):
        expectancy_negative_any({"BTC": crit}, min_cryptos=0)
    with pytest.raises(ValueError, match=r"per_crypto_verdicts\['BTC'\] must be a Verdict"):
        expectancy_negative_any({"BTC": "crit"})  # type: ignore[dict-item]
