"""Benchmark of the data side: generation, labels, features, fold plan; BUY rates; sanity AUC.

Usage: ``python bench/bench_data.py [--model]``. Prints figures measured in this run (best of
``--repeat`` runs for timings). With ``--model`` it also trains a small XGBoost
``binary:logistic`` on the causal features with a purged time split (first 70 % train, last 30 %
test) and prints the out-of-sample AUC on each synthetic symbol and, if the real Binance candles
are present (``../shared/data`` or ``$CVN_SHARED_DATA``), on the real files.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvn_assets.market.candles_io import read_candles_csv  # noqa: E402
from cvn_assets.market.dataset import assemble_dataset  # noqa: E402
from cvn_assets.market.features import FEATURE_NAMES, build_features  # noqa: E402
from cvn_assets.market.folds import three_way_fold_plan  # noqa: E402
from cvn_assets.market.labels import triple_barrier_labels  # noqa: E402
from cvn_assets.market.synthetic_market import (  # noqa: E402
    DEFAULT_HOURS,
    DEFAULT_UNIVERSE,
    HOURS_PER_YEAR,
    clear_cache,
    synthetic_candles,
)

PAIRS = {s: s.replace("USDC", "USDT") for s in DEFAULT_UNIVERSE}


def shared_data() -> Path:
    env = os.environ.get("CVN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def sanity_auc(candles: pd.DataFrame, horizon: int = 4) -> tuple[float, float, int]:
    """OOS AUC of a small booster on a 70/30 time split (purged by ``horizon`` rows)."""
    import xgboost as xgb

    ds = assemble_dataset(build_features(candles), triple_barrier_labels(candles, horizon=horizon))
    x = ds[list(FEATURE_NAMES)].to_numpy()
    y = ds["label"].to_numpy()
    cut = int(len(ds) * 0.7)
    train = xgb.DMatrix(x[: cut - horizon], y[: cut - horizon])
    params = {
        "objective": "binary:logistic",
        "max_depth": 4,
        "eta": 0.05,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 20,
        "nthread": 2,
        "seed": 0,
    }
    booster = xgb.train(params, train, num_boost_round=300)
    p = booster.predict(xgb.DMatrix(x[cut:]))
    return auc(y[cut:], p), float(y.mean()), len(ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", action="store_true", help="also run the sanity AUC check")
    args = ap.parse_args()

    def generate() -> None:
        clear_cache()
        synthetic_candles(DEFAULT_UNIVERSE, hours=DEFAULT_HOURS)

    gen = best_of(generate, args.repeat)
    symbol_years = len(DEFAULT_UNIVERSE) * DEFAULT_HOURS / HOURS_PER_YEAR
    print(
        f"synthetic generation: {gen:.3f} s for {len(DEFAULT_UNIVERSE)} symbols x "
        f"{DEFAULT_HOURS} h = {gen / symbol_years:.4f} s per symbol-year"
    )
    market = synthetic_candles()
    c25 = synthetic_candles(["BTCUSDC"], hours=25_000)["BTCUSDC"]
    lab_s = best_of(lambda: triple_barrier_labels(c25), args.repeat)
    feat_s = best_of(lambda: build_features(c25), args.repeat)
    t0 = np.asarray(c25.index[:-4])
    t1 = np.asarray(c25.index[4:])
    plan_s = best_of(lambda: three_way_fold_plan(t0, t1), args.repeat)
    print(f"labels   SL0.5_TP1_H4, 25,000 candles: {lab_s * 1000:.1f} ms")
    print(f"features ({len(FEATURE_NAMES)} cols), 25,000 candles: {feat_s * 1000:.1f} ms")
    print(f"three-way fold plan (5 folds), 24,996 rows: {plan_s * 1000:.1f} ms")

    print("\nBUY rate (SL0.5_TP1_H4)      synthetic   real 2021-2023   real 2024-2026")
    folder = shared_data()
    real: dict[str, dict[str, pd.DataFrame]] = {}
    for sym in DEFAULT_UNIVERSE:
        syn_rate = triple_barrier_labels(market[sym])["label"].mean()
        cells = [f"{syn_rate:9.3f}"]
        for period in ("binance_spot_1h_2021_2023", "binance_spot_1h_2024_2026"):
            path = folder / period / f"{PAIRS[sym]}_1h.csv"
            if path.is_file():
                df = read_candles_csv(path)
                real.setdefault(period, {})[sym] = df
                cells.append(f"{triple_barrier_labels(df)['label'].mean():14.3f}")
            else:
                cells.append(f"{'(absent)':>14}")
        print(f"  {sym:<26} " + "   ".join(cells))

    if args.model:
        print("\nsanity AUC: xgboost binary:logistic, 70/30 time split, OOS AUC")
        for sym in DEFAULT_UNIVERSE:
            a, rate, n = sanity_auc(market[sym])
            print(f"  synthetic {sym}: AUC {a:.3f} (n={n}, BUY {rate:.3f})")
        for period, frames in real.items():
            for sym, df in frames.items():
                a, rate, n = sanity_auc(df)
                print(f"  real {period[-9:]} {PAIRS[sym]}: AUC {a:.3f} (n={n}, BUY {rate:.3f})")


if __name__ == "__main__":
    main()
