"""Champion selection, the whole-history plan, reference statistics and the canary rule:
hand-checked cases (cvn_assets.guard.champion)."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation.evaluation import train_cell
from cvn_assets.ablation.variants import Variant
from cvn_assets.guard.champion import (
    RegistryVersion,
    Repromotion,
    calibrate_whole_history,
    canary_passed,
    choose_variant,
    effective_variant,
    reference_statistics,
    rollback_plan,
    top_gain_features,
    whole_history_plan,
)
from cvn_assets.market.features import FEATURE_NAMES
from cvn_assets.market.folds import FoldError, leakage_check

BASE = Variant("baseline", "binary:logistic", None, None)
FOCAL = Variant("focal_g2_a025", "focal", 2.0, 0.25)


def _verdicts(rows):
    return pd.DataFrame(rows, columns=["variant", "is_baseline", "lock", "mean_delta"])


# --------------------------------------------------------------------- choose_variant
def test_no_locked_variant_gives_the_baseline():
    v = _verdicts(
        [
            ("baseline", True, None, 0.0),
            ("focal_a", False, False, 0.01),
            ("focal_b", False, None, 0.02),
        ]
    )
    name, reason = choose_variant(v, pd.DataFrame(), "baseline")
    assert name == "baseline" and "no focal variant locked" in reason


def test_the_one_locked_variant_is_chosen():
    v = _verdicts([("baseline", True, None, 0.0), ("focal_a", False, True, 0.004),
                   ("focal_b", False, False, 0.05)])  # fmt: skip
    name, reason = choose_variant(v, pd.DataFrame(), "baseline")
    assert name == "focal_a" and "+0.0040" in reason


def test_several_locked_the_best_mean_delta_then_the_smaller_name():
    v = _verdicts([("baseline", True, None, 0.0), ("focal_a", False, True, 0.004),
                   ("focal_b", False, True, 0.006), ("focal_c", False, True, 0.006)])  # fmt: skip
    name, reason = choose_variant(v, pd.DataFrame(), "baseline")
    assert name == "focal_b"  # 0.006 beats 0.004; focal_b < focal_c on the tie
    assert "focal_a" in reason and "+0.0060" in reason


def test_a_missing_mean_delta_is_computed_from_the_results():
    v = pd.DataFrame({"variant": ["baseline", "focal_a", "focal_b"], "lock": [None, True, True]})
    results = pd.DataFrame(
        [("BTCUSDC", 0, "baseline", 0.30), ("BTCUSDC", 1, "baseline", 0.40),
         ("BTCUSDC", 0, "focal_a", 0.32), ("BTCUSDC", 1, "focal_a", 0.40),  # +0.01
         ("BTCUSDC", 0, "focal_b", 0.31), ("BTCUSDC", 1, "focal_b", 0.43)],  # +0.02
        columns=["crypto", "fold", "variant", "f1_buy"],
    )  # fmt: skip
    name, reason = choose_variant(v, results, "baseline")
    assert name == "focal_b" and "+0.0200" in reason


def test_empty_verdicts_give_the_baseline_and_a_malformed_table_is_refused():
    assert choose_variant(pd.DataFrame(), pd.DataFrame(), "baseline")[0] == "baseline"
    with pytest.raises(ValueError, match="lock"):
        choose_variant(pd.DataFrame({"variant": ["x"]}), pd.DataFrame(), "baseline")


def test_the_kill_switch_turns_a_focal_variant_into_the_baseline():
    assert effective_variant(FOCAL, "focal", BASE) == FOCAL
    assert effective_variant(FOCAL, "binary:logistic", BASE) == BASE
    assert effective_variant(BASE, "binary:logistic", BASE) == BASE
    with pytest.raises(ValueError, match="CVN_LOSS_FUNCTION"):
        effective_variant(FOCAL, "hinge", BASE)


# --------------------------------------------------------------------- whole_history_plan
def test_whole_history_plan_by_hand():
    t0 = np.arange(100)
    t1 = t0 + 3  # each label spans 4 rows
    plan = whole_history_plan(
        t0, t1, early_stopping_frac=0.1, calibration_frac=0.2, embargo_pct=0.02
    )
    # calibration: the last 20 rows; its window [80, 102] purges rows 77..79 (t1 >= 80)
    np.testing.assert_array_equal(plan.calibration, np.arange(80, 100))
    # 77 candidates (0..76): early stopping = the last ceil(7.7) = 8 of them
    np.testing.assert_array_equal(plan.early_stopping, np.arange(69, 77))
    # its window [69, 79] purges 66..68; the embargo (2 rows) falls after it, not in train
    np.testing.assert_array_equal(plan.train, np.arange(66))
    assert plan.test.size == 0 and plan.fold == -1
    assert plan.info["embargo_rows"] == 2 and plan.info["train_dropped"] == 3


def test_whole_history_plan_is_disjoint_and_leak_free_with_variable_labels():
    rng = np.random.default_rng(3)
    n = 2000
    t0 = np.arange(n) * 10
    t1 = t0 + rng.integers(0, 80, n)  # variable horizons up to 8 rows
    plan = whole_history_plan(
        t0, t1, early_stopping_frac=0.15, calibration_frac=0.2, embargo_pct=0.005
    )
    sets = [plan.train, plan.early_stopping, plan.calibration]
    assert sum(len(s) for s in sets) == len(np.unique(np.concatenate(sets)))
    assert leakage_check(t0, t1, plan.train, plan.early_stopping)
    assert leakage_check(t0, t1, plan.train, plan.calibration)
    assert leakage_check(t0, t1, plan.early_stopping, plan.calibration)
    assert plan.train.max() < plan.early_stopping.min() < plan.calibration.min()


def test_whole_history_plan_refusals():
    t0 = np.arange(50)
    with pytest.raises(ValueError, match="calibration_frac"):
        whole_history_plan(t0, t0, early_stopping_frac=0.1, calibration_frac=1.0, embargo_pct=0)
    with pytest.raises(FoldError, match="training rows"):
        whole_history_plan(t0, t0 + 45, early_stopping_frac=0.1, calibration_frac=0.2,
                           embargo_pct=0)  # fmt: skip
    labels = np.zeros(50, dtype=int)
    labels[:30] = 1  # no BUY in the calibration block
    with pytest.raises(FoldError, match="calibration set has zero BUY"):
        whole_history_plan(t0, t0, early_stopping_frac=0.1, calibration_frac=0.2,
                           embargo_pct=0, labels=labels)  # fmt: skip


# --------------------------------------------------------------------- reference statistics
class _FakeBooster:
    def get_score(self, importance_type):
        assert importance_type == "gain"
        return {"f0": 1.0, "f2": 3.0, "f1": 3.0, "f5": 0.5}


class _FakeModel:
    booster = _FakeBooster()
    feature_names = None


def test_top_gain_features_map_indices_to_names_and_break_ties_by_name():
    got = top_gain_features(_FakeModel(), k=3)  # type: ignore[arg-type]
    names = list(FEATURE_NAMES)
    assert got == sorted([(names[1], 3.0), (names[2], 3.0)]) + [(names[0], 1.0)]


def _dataset(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURE_NAMES)))
    y = (X[:, 0] + 0.5 * X[:, 3] + rng.normal(scale=0.8, size=n) > 0.9).astype(np.int8)
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    ds = pd.DataFrame(X, index=idx, columns=list(FEATURE_NAMES))
    ds["label"] = y
    ds["t1"] = idx + pd.Timedelta(hours=4)
    ds["ret"] = np.where(y == 1, 0.01, -0.005)
    return ds


def test_reference_statistics_on_a_small_model():
    ds = _dataset()
    t0 = ds.index.to_numpy(dtype="datetime64[ns]")
    t1 = ds["t1"].to_numpy(dtype="datetime64[ns]")
    plan = whole_history_plan(t0, t1, early_stopping_frac=0.15, calibration_frac=0.2,
                              embargo_pct=0.005, labels=ds["label"].to_numpy())  # fmt: skip
    params = {"max_depth": 3, "eta": 0.1, "nthread": 1}
    res = train_cell(BASE, ds, plan, params=params, num_boost_round=40,
                     early_stopping_rounds=10, seed=0)  # fmt: skip
    cal = calibrate_whole_history(res, BASE, ds, plan, primary="temperature", fee_per_side=0.001)
    assert 0.0 <= cal.threshold <= 1.0 and cal.info["n_test"] == 0
    assert cal.info["trading_threshold"] is not None  # BUY rows earn 1 %: tradeable
    stats = reference_statistics(cal, ds, plan, oos_f1_buy=0.31)
    top = stats["top_features"]
    assert len(top) == 5 and len({f["name"] for f in top}) == 5
    assert [f["gain"] for f in top] == sorted((f["gain"] for f in top), reverse=True)
    assert top[0]["name"] in ("ret_1", "ret_8")  # the two informative columns
    train = ds.iloc[plan.train]
    for f in top:
        want = np.quantile(train[f["name"]].to_numpy(), np.arange(1, 10) / 10)
        np.testing.assert_allclose(f["train_decile_edges"], want)
        # the training shares in the merged bins: counted with the side rule (value equal to
        # an edge -> the bin above), summing to 1
        x, cuts = train[f["name"]].to_numpy(), np.unique(want)
        below = [0, *[int((x < c).sum()) for c in cuts], x.size]
        np.testing.assert_allclose(f["train_bin_shares"], np.diff(below) / x.size, atol=1e-15)
    p_cal = cal.predict_proba(ds.iloc[plan.calibration][list(FEATURE_NAMES)])[:, 1]
    np.testing.assert_allclose(
        stats["buy_proba_decile_edges"], np.quantile(p_cal, np.arange(1, 10) / 10)
    )
    p_tr = cal.predict_proba(train[list(FEATURE_NAMES)])[:, 1]
    assert stats["train_mean_confidence"] == pytest.approx(np.maximum(p_tr, 1 - p_tr).mean())
    assert 0.5 <= stats["train_mean_confidence"] <= 1.0 and stats["oos_f1_buy"] == 0.31
    # the champion's trading share: its threshold trades in >= that share of the block's hours
    p_primary = p_cal
    for share in (0.1, 0.3, 0.6):
        c = calibrate_whole_history(
            res, BASE, ds, plan, primary="temperature", fee_per_side=0.001, min_trade_share=share
        )
        assert c.info["min_trade_share"] == share
        thr = c.info["trading_threshold"]
        if thr is not None:
            n_trades = int((p_primary >= thr).sum())
            assert n_trades >= math.ceil(share * len(p_primary)), (share, n_trades)
    assert cal.info["min_trade_share"] == 0.1  # the sweep's default


# --------------------------------------------------------------------- canary rule
NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def _trades(n, mean, *, first_exit=NOW - timedelta(days=13)):
    exits = [first_exit + timedelta(hours=h) for h in range(n)]
    nets = [mean + (0.001 if i % 2 else -0.001) for i in range(n)] if n % 2 == 0 else [mean] * n
    return pd.DataFrame(
        {
            "entry_time": [e - timedelta(hours=2) for e in exits],
            "exit_time": exits,
            "net_return": nets,
        }
    )


def test_canary_passes_at_the_boundaries():
    since = NOW - timedelta(days=14)  # exactly 14 days of paper trading
    ok, reason = canary_passed(_trades(20, 0.0), now=NOW, since=since)  # 20 trades, mean 0
    assert ok and "passed with 20 trades" in reason


def test_canary_fails_one_step_beyond_each_boundary():
    since = NOW - timedelta(days=14)
    ok, reason = canary_passed(_trades(19, 0.001), now=NOW, since=since)
    assert not ok and "19 trades in the window" in reason
    ok, reason = canary_passed(_trades(20, -1e-6), now=NOW, since=since)
    assert not ok and "< 0" in reason
    ok, reason = canary_passed(_trades(20, 0.001), now=NOW, since=since + timedelta(seconds=1))
    assert not ok and "covers 14.0 days only" in reason
    ok, reason = canary_passed(pd.DataFrame(), now=NOW, since=since)
    assert not ok and "no canary trade" in reason


def test_canary_window_counts_exits_from_its_start_on():
    start = NOW - timedelta(days=14)
    at_start = _trades(20, 0.001, first_exit=start)  # exits start, start+1h, ...
    assert canary_passed(at_start, now=NOW, since=start)[0]
    before = _trades(20, 0.001, first_exit=start - timedelta(hours=1))  # one exit before
    ok, reason = canary_passed(before, now=NOW, since=start)
    assert not ok and "19 trades" in reason
    # without `since`, the first entry time stands in for the promotion time
    assert canary_passed(at_start, now=NOW)[0]
    with pytest.raises(ValueError):
        canary_passed(at_start, now=NOW, days=0)


# --------------------------------------------------------------------- rollback_plan
def _version(vid, crypto, variant, loss, gamma=None, alpha=None):
    return RegistryVersion(vid, crypto, variant, loss, gamma, alpha)


def _focal(vid, crypto):
    return _version(vid, crypto, "focal_g2_a025", "focal", 2.0, 0.25)


def _baseline(vid, crypto):
    return _version(vid, crypto, "baseline", "binary:logistic")


def test_rollback_plan_repromotes_a_baseline_previous_over_a_focal_champion():
    champ, prev = _focal(7, "BTCUSDC"), _baseline(3, "BTCUSDC")
    plan = rollback_plan("focal", {"BTCUSDC": (champ, prev)})
    assert plan.flip is True
    assert plan.repromotions == (Repromotion("BTCUSDC", champ, prev),)
    assert plan.skipped == {}
    assert plan.repromotions[0].summary() == "v7 (focal_g2_a025) -> v3 (baseline)"


def test_rollback_plan_keeps_a_focal_champion_whose_previous_is_focal_or_absent():
    plan = rollback_plan(
        "focal",
        {
            "BTCUSDC": (_focal(7, "BTCUSDC"), _focal(5, "BTCUSDC")),
            "ETHUSDC": (_focal(8, "ETHUSDC"), None),
        },
    )
    assert plan.repromotions == ()
    assert plan.skipped == {
        "BTCUSDC": "champion v7 kept: previous v5 is focal; "
        "the next champion_job trains with binary:logistic",
        "ETHUSDC": "champion v8 kept: no previous champion; "
        "the next champion_job trains with binary:logistic",
    }


def test_rollback_plan_after_a_rollback_changes_nothing():
    # flag already cross-entropy, champion the baseline again: no flip, nothing to re-promote
    aliases = {
        "BTCUSDC": (_baseline(3, "BTCUSDC"), _focal(7, "BTCUSDC")),
        "SOLUSDC": (None, None),
    }
    plan = rollback_plan("binary:logistic", aliases)
    assert plan.flip is False
    assert plan.repromotions == ()
    assert plan.skipped == {
        "BTCUSDC": "champion v3 is binary:logistic: nothing to do",
        "SOLUSDC": "no champion",
    }


def test_rollback_plan_covers_only_the_selected_cryptos_in_their_order():
    aliases = {
        c: (_focal(10 + i, c), _baseline(i, c))
        for i, c in enumerate(("BTCUSDC", "ETHUSDC", "SOLUSDC"))
    }
    plan = rollback_plan("focal", aliases, ["SOLUSDC", "BTCUSDC"])
    assert [s.crypto for s in plan.steps] == ["SOLUSDC", "BTCUSDC"]
    assert [(r.champion.id, r.previous.id) for r in plan.repromotions] == [(12, 2), (10, 0)]
    with pytest.raises(ValueError, match=r"\['DOGEUSDC'\]"):
        rollback_plan("focal", aliases, ["DOGEUSDC"])


def test_registry_version_from_the_registry_dict():
    row = {
        "id": 4, "crypto": "BTCUSDC", "variant": "focal_g2_a025", "loss_function": "focal",
        "gamma": 2.0, "alpha": 0.25, "sweep_id": "s1", "artifact_uri": "/a",
        "train_start": datetime(2024, 1, 1, tzinfo=UTC),
        "train_end": datetime(2024, 6, 1, tzinfo=UTC), "created_at": None,
        "reference_stats": {"oos_f1_buy": 0.4},
    }  # fmt: skip
    v = RegistryVersion.from_registry(row)
    assert (v.id, v.variant, v.gamma, v.alpha, v.is_focal) == (4, "focal_g2_a025", 2.0, 0.25, True)
    assert v.reference_stats == {"oos_f1_buy": 0.4} and v.sweep_id == "s1"
    assert RegistryVersion.from_registry(None) is None
    plain = {"loss_function": "binary:logistic", "gamma": None, "alpha": None}
    base = RegistryVersion.from_registry({**row, **plain, "reference_stats": None})
    assert (base.is_focal, base.gamma, base.reference_stats) == (False, None, {})
