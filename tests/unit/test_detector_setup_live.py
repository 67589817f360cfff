"""``prepare_live`` (issue 23, out of sample in time): a champion trained on one frame of
candles and monitored on a later, separate frame -- on small synthetic data. The truths: the
monitored hours are the second frame's hours minus its 167-hour warm-up and its last
``horizon`` hours (counted by hand); its features are those computed from that frame alone;
the champion is the one :func:`prepare` trains on the first frame (nothing of the second
reaches it: a different second frame gives the identical champion)."""

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation.variants import DEFAULT_VARIANTS
from cvn_assets.guard.detector_setup import MIN_MONITORED_ROWS, Split, prepare, prepare_live
from cvn_assets.market.features import FEATURE_NAMES, build_features
from cvn_assets.market.labels import parse_label_strategy, triple_barrier_labels
from cvn_assets.market.synthetic_market import DEFAULT_UNIVERSE, synthetic_candles

ROOT = Path(__file__).resolve().parents[2]
VARIANT = next(v for v in DEFAULT_VARIANTS if v.name == "focal_g2_a025")
LABEL = parse_label_strategy("SL0.5_TP1_H4")
SETTINGS = {
    "xgb_params": {"tree_method": "hist", "max_depth": 3, "eta": 0.1, "nthread": 1, "seed": 0},
    "num_boost_round": 30,
    "early_stopping_rounds": 10,
    "seed": 0,
    "primary_calibration": "temperature",
    "early_stopping_frac": 0.15,
    "calibration_frac": 0.2,
    "embargo_pct": 0.005,
}
KW = {"variant": VARIANT, "label": LABEL, "settings": SETTINGS, "fee_per_side": 0.00075,
      "min_trade_share": 0.10}  # fmt: skip
# one synthetic market of 6 000 hours from 2023-07-01 00:00: history = the first 4 000, the
# live frame = hours 4 100 .. 5 099 (a 100-hour gap: the frames do not meet), 1 000 hours
FULL = synthetic_candles(DEFAULT_UNIVERSE[:1], hours=6_000)[DEFAULT_UNIVERSE[0]]
HISTORY = FULL.iloc[:4_000]
LIVE = FULL.iloc[4_100:5_100]
# history's model dataset: 4 000 - 167 warm-up - 4 unlabeled = 3 829 rows
SPLIT = Split(train=3_300, test=529)


def _live(history=HISTORY, live=LIVE, split=SPLIT, **kw):
    return prepare_live("T", history, live, split, **{**KW, **kw})


def test_the_monitored_rows_are_the_live_frames_hours_after_warm_up():
    m, summary = _live()
    # 1 000 live hours: the first 167 are warm-up, the last 4 have no known outcome
    assert len(m.features) == 1_000 - 167 - 4 == summary["monitored_rows"]
    assert m.features.index.equals(LIVE.index[167:996])
    # hour 4 267 from 2023-07-01 00:00: 177 days 19 hours on
    assert m.features.index[0] == pd.Timestamp("2023-12-25 19:00", tz="UTC")
    # the features are those of the live candles alone
    own = build_features(LIVE).loc[m.features.index, list(FEATURE_NAMES)]
    pd.testing.assert_frame_equal(m.features, own, check_freq=False)
    # the outcomes too: the triple-barrier labels of the live frame
    lab = triple_barrier_labels(LIVE, LABEL.take_profit, LABEL.stop_loss, LABEL.horizon)
    assert np.array_equal(m.take_profit, lab.loc[m.features.index, "label"].to_numpy() == 1)
    assert summary["trained"].endswith(str(HISTORY.index[167 + 3_299].isoformat()))


def test_nothing_of_the_live_frame_reaches_the_champion():
    m, summary = _live()
    # another live frame: a later, different stretch of the market, prices doubled
    other = FULL.iloc[4_500:6_000].copy()
    other[["open", "high", "low", "close"]] *= 2.0
    m2, summary2 = _live(live=other)
    assert not m2.features.index.equals(m.features.index)
    assert pickle.dumps(dict(m.ref)) == pickle.dumps(dict(m2.ref))  # every registry statistic
    assert summary["oos_f1_buy"] == summary2["oos_f1_buy"]
    for x in (m.features, m2.features):  # the same function of the features
        assert np.array_equal(m.predict(x), m2.predict(x))
    # and it is the champion prepare trains with the same split on a frame holding the history
    # and 1 000 hours more (its rows past the split are only monitored)
    m3, summary3 = prepare("T", FULL.iloc[:5_000], SPLIT, **KW)
    assert summary3["trained"] == summary["trained"]
    assert summary3["oos_f1_buy"] == summary["oos_f1_buy"]
    assert pickle.dumps(dict(m3.ref)) == pickle.dumps(dict(m.ref))
    assert np.array_equal(m3.predict(m.features), m.predict(m.features))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"split": Split(train=0, test=529)}, r"split\.train must be > 0, got 0"),
        ({"split": Split(train=3_300, test=4)}, r"split\.test must exceed .* 4 .*got 4"),
        ({"force_share": 1.5}, r"force_share must be in \(0, 1\), got 1.5"),
        (
            {"split": Split(train=3_300, test=530)},
            r"split\.train \+ split\.test = 3830 exceeds "
            r"the 3829 rows",
        ),  # fmt: skip
        (
            {"live": FULL.iloc[3_999:5_000]},
            r"live must start after history's last candle "
            r"2023-12-14 15:00:00\+00:00, got live starting at "
            r"2023-12-14 15:00:00\+00:00",
        ),  # fmt: skip
        (
            {"live": FULL.iloc[4_100 : 4_100 + 167 + 4 + 671]},
            r"live gives 671 monitored rows, "
            r"fewer than 672",
        ),  # fmt: skip
        ({"live": LIVE.iloc[:0]}, r"history has 4000 candles, live 0"),
    ],
)
def test_bad_arguments_fail_before_any_training(kw, match):
    # settings={} would fail with a KeyError the moment training started
    with pytest.raises(ValueError, match=match):
        _live(**{"settings": {}, **kw})


def test_the_shortest_live_frame_is_accepted():
    assert MIN_MONITORED_ROWS == 24 * 28
    m, _ = _live(live=FULL.iloc[4_100 : 4_100 + 167 + 4 + 672])
    assert len(m.features) == 672


def test_bench_live_split_and_its_cache_key():
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_detectors as b

    # 2021-2023 BTCUSDT: 23 987 candles -> 23 816 rows; 0.88 x 23 816 = 20 958.08
    assert b.split_for(23_816, quick=False, live=True) == Split(train=20_958, test=2_858)
    assert b.split_for(23_816, quick=False) == Split(train=15_242, test=2_143)
    args = argparse.Namespace(source="real", variant="v", label="l", fee=0.0, trade_share=0.1,
                              force_share=None, cache="/c")  # fmt: skip
    live_args = argparse.Namespace(**{**vars(args), "source": "real_live"})
    split = Split(1, 5)
    a = b.cache_path(args, "T", HISTORY, None, split, {})
    assert a == b.cache_path(args, "T", HISTORY, None, split, {})
    assert a != b.cache_path(live_args, "T", HISTORY, None, split, {})
    assert b.cache_path(live_args, "T", HISTORY, LIVE, split, {}) != b.cache_path(
        live_args, "T", HISTORY, LIVE.iloc[:-1], split, {}
    )
