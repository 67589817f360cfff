"""cvn_assets.ablation.metrics against hand counts, brute force and reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from cvn_assets.ablation import metrics as mt


def _brute_f1(y, y_pred):
    tp = sum(1 for a, b in zip(y, y_pred, strict=True) if a == 1 and b == 1)
    fp = sum(1 for a, b in zip(y, y_pred, strict=True) if a == 0 and b == 1)
    fn = sum(1 for a, b in zip(y, y_pred, strict=True) if a == 1 and b == 0)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


class TestClassificationMetrics:
    def test_hand_count(self):
        y = [1, 0, 1, 1, 0, 0, 1]
        p = [1, 1, 0, 1, 0, 0, 0]
        r = mt.classification_metrics(y, p)  # tp=2 fp=1 fn=2
        assert (r["tp"], r["fp"], r["fn"], r["n_pred_buy"], r["n_true_buy"]) == (2, 1, 2, 3, 4)
        assert r["precision_buy"] == pytest.approx(2 / 3)
        assert r["recall_buy"] == pytest.approx(1 / 2)
        assert r["f1_buy"] == pytest.approx(4 / 7)
        assert not (r["precision_zero_division"] or r["recall_zero_division"])

    def test_zero_division_is_zero_and_reported(self):
        r = mt.classification_metrics([1, 0, 1], [0, 0, 0])
        assert r["precision_buy"] == 0.0 and r["precision_zero_division"]
        assert r["f1_buy"] == 0.0 and not r["f1_zero_division"]
        r = mt.classification_metrics([0, 0], [0, 0])
        assert r["f1_buy"] == 0.0 and r["f1_zero_division"] and r["recall_zero_division"]

    def test_random_cross_check(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            y = rng.integers(0, 2, 57)
            p = rng.integers(0, 2, 57)
            assert mt.classification_metrics(y, p)["f1_buy"] == pytest.approx(_brute_f1(y, p))

    def test_bad_input_names_the_field(self):
        with pytest.raises(ValueError, match=r"y_pred\[1\] = 2"):
            mt.classification_metrics([0, 1], [0, 2])
        with pytest.raises(ValueError, match="length mismatch"):
            mt.classification_metrics([0, 1], [0])


class TestBuyThreshold:
    def test_hand_example(self):
        prob = [0.1, 0.4, 0.35, 0.8, 0.65, 0.2]
        y = [0, 0, 1, 1, 1, 0]
        # t=0.35 -> BUY {0.4,0.35,0.8,0.65}: tp=3 fp=1 -> f1=6/7, the best
        assert mt.fit_buy_threshold(prob, y) == 0.35

    def test_ties_go_to_the_higher_threshold(self):
        prob = [0.2, 0.4, 0.6, 0.9]
        y = [1, 0, 0, 1]
        # t=0.2: tp=2 n_pred=4 f1=2/3 ; t=0.9: tp=1 n_pred=1 f1=2/3 ; middle ones lower
        assert mt.fit_buy_threshold(prob, y) == 0.9

    def test_matches_brute_force(self):
        rng = np.random.default_rng(1)
        for _ in range(10):
            prob = np.round(rng.random(80), 2)  # with ties
            y = (rng.random(80) < prob).astype(int)
            scores = {t: _brute_f1(y, (prob >= t).astype(int)) for t in np.unique(prob)}
            best = max(scores.values())
            expected = max(t for t, s in scores.items() if s == best)
            assert mt.fit_buy_threshold(prob, y) == expected

    def test_grid_and_no_positive(self):
        prob = [0.1, 0.5, 0.7]
        assert mt.fit_buy_threshold(prob, [0, 1, 1], grid=[0.3, 0.6, 0.05]) == 0.3
        assert mt.fit_buy_threshold(prob, [0, 0, 0]) == 0.7
        with pytest.raises(ValueError, match=r"prob\[0\] = 1.5"):
            mt.fit_buy_threshold([1.5], [1])


class TestLogLoss:
    def test_hand_value_and_clipping(self):
        assert mt.log_loss([0.8, 0.3], [1, 0]) == pytest.approx(
            -(math.log(0.8) + math.log(0.7)) / 2
        )
        assert mt.log_loss([0.0], [1]) == pytest.approx(-math.log(1e-15))
        assert mt.log_loss([1.0], [1]) == pytest.approx(0.0, abs=1e-14)
        with pytest.raises(ValueError, match=r"prob\[0\] = nan"):
            mt.log_loss([np.nan], [1])


class TestTrades:
    def test_net_of_two_fees(self):
        net = mt.trade_returns([1, 0, 1, 1], [0.01, 0.5, -0.005, 0.002], 0.001)
        np.testing.assert_allclose(net, [0.008, 0.0, -0.007, 0.0])
        e, n = mt.trade_expectancy([1, 0, 1, 1], [0.01, 0.5, -0.005, 0.002], 0.001)
        assert n == 3 and e == pytest.approx((0.008 - 0.007 + 0.0) / 3)

    def test_no_trade_and_errors(self):
        assert mt.trade_expectancy([0, 0], [0.1, np.nan], 0.001) == (0.0, 0)
        with pytest.raises(ValueError, match="fee_per_side"):
            mt.trade_returns([1], [0.1], -0.001)
        with pytest.raises(ValueError, match=r"realized_return\[1\]"):
            mt.trade_returns([0, 1], [0.1, np.nan], 0.001)


class TestSigmoid:
    def test_matches_scipy_and_is_stable(self):
        m = np.linspace(-700, 700, 10_001)
        with np.errstate(over="raise", invalid="raise"):
            s = mt.sigmoid(m)
        np.testing.assert_allclose(s, expit(m), rtol=1e-15, atol=0)
        assert mt.sigmoid(np.array([-np.inf, np.inf])).tolist() == [0.0, 1.0]

    def test_consistent_with_the_logit_threshold(self):
        m = np.array([-1e-300, -1e-20, -1e-17, -0.0, 0.0, 1e-300, 1e-17, -np.float32(1e-30)])
        assert ((mt.sigmoid(m) >= 0.5) == (m >= 0)).all()

    def test_logit_round_trip_and_clip(self):
        p = np.array([0.01, 0.3, 0.5, 0.97])
        np.testing.assert_allclose(mt.sigmoid(mt.logit(p)), p, rtol=1e-14)
        assert mt.logit(np.array([0.0]))[0] == pytest.approx(math.log(1e-7 / (1 - 1e-7)))


# --- trading threshold (net expectancy per trade after fees) ------------------------------


def test_trading_threshold_hand_checked():
    from cvn_assets.ablation.metrics import fit_trading_threshold

    # descending prob: 0.9 (+0.010), 0.8 (+0.004), 0.7 (-0.002), 0.6 (-0.020); fee 0.001/side
    # nets: +0.008, +0.002, -0.004, -0.022 -> means at t=0.9: 0.008 (1 trade),
    # t=0.8: 0.005 (2), t=0.7: 0.002 (3), t=0.6: -0.004 (4)
    p = [0.7, 0.9, 0.6, 0.8]
    r = [-0.002, 0.010, -0.020, 0.004]
    assert fit_trading_threshold(p, r, 0.001, min_trades=1) == 0.9
    assert fit_trading_threshold(p, r, 0.001, min_trades=2) == 0.8
    assert fit_trading_threshold(p, r, 0.001, min_trades=3) == 0.7
    assert fit_trading_threshold(p, r, 0.001, min_trades=4) is None  # mean -0.004: no trading
    assert fit_trading_threshold(p, r, 0.01, min_trades=1) is None  # fees eat every edge


def test_trading_threshold_ties_share_a_threshold_and_prefer_fewer_trades():
    from cvn_assets.ablation.metrics import fit_trading_threshold

    # two rows at 0.8 are traded together; 0.9 alone and {0.9, 0.8, 0.8} have equal means
    p = [0.9, 0.8, 0.8, 0.5]
    r = [0.01, 0.02, 0.0, -0.5]
    assert fit_trading_threshold(p, r, 0.0, min_trades=1) == 0.9
    assert fit_trading_threshold(p, r, 0.0, min_trades=2) == 0.8  # 3 trades, mean 0.01


def test_trading_threshold_matches_brute_force():
    from cvn_assets.ablation.metrics import fit_trading_threshold

    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        p = np.round(rng.uniform(size=n), 1)  # many ties
        r = rng.normal(0.0005, 0.01, size=n)
        fee, k = 0.00075, int(rng.integers(1, 10))
        best, best_t = 0.0, None
        for t in sorted(set(p), reverse=True):
            m = p >= t
            if m.sum() >= k:
                mean = float(np.mean(r[m] - 2 * fee))
                if mean > best:
                    best, best_t = mean, float(t)
        assert fit_trading_threshold(p, r, fee, min_trades=k) == best_t


def test_trading_threshold_bad_input_named():
    from cvn_assets.ablation.metrics import fit_trading_threshold

    with pytest.raises(ValueError, match="fee_per_side"):
        fit_trading_threshold([0.5], [0.01], -1.0)
    with pytest.raises(ValueError, match="min_trades"):
        fit_trading_threshold([0.5], [0.01], 0.0, min_trades=0)
    with pytest.raises(ValueError, match=r"realized_return\[1\]"):
        fit_trading_threshold([0.5, 0.6], [0.01, float("nan")], 0.0)


def test_trading_min_trades_is_the_larger_of_30_and_a_tenth_of_the_block():
    from cvn_assets.ablation.metrics import trading_min_trades

    assert trading_min_trades(0) == 30 and trading_min_trades(300) == 30
    assert trading_min_trades(301) == 31  # ceil(30.1)
    assert trading_min_trades(4346) == 435  # a champion's calibration block (20 % of 21,730)
    assert trading_min_trades(4346, share=0.0) == 30
    for bad, match in ((-1, "n_rows"), (2.5, "n_rows"), (True, "n_rows")):
        with pytest.raises(ValueError, match=match):
            trading_min_trades(bad)
    with pytest.raises(ValueError, match="share"):
        trading_min_trades(100, share=1.5)


def test_calibration_block_threshold_trades_in_a_tenth_of_its_rows():
    """fit_on_calibration_block's trading threshold: the best mean net return among thresholds
    trading in >= 10 % of the block, not the best few (hand-built block: the top 2 %
    earn +2 %, the next 18 % +0.5 %, the rest -1 %; fee 0.1 %/side)."""
    from cvn_assets.ablation.metrics import fit_trading_threshold, trading_min_trades

    n = 1000
    p = np.linspace(1.0, 0.001, n)  # descending, distinct
    r = np.where(np.arange(n) < 20, 0.02, np.where(np.arange(n) < 200, 0.005, -0.01))
    assert fit_trading_threshold(p, r, 0.001, min_trades=20) == p[19]  # the old rule's pick
    t = fit_trading_threshold(p, r, 0.001, min_trades=trading_min_trades(n))
    assert t == p[99]  # 100 trades: (20 * 0.018 + 80 * 0.003) / 100 = 0.006, the best >= 100
    assert (p >= t).sum() == 100
