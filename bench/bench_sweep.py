"""The one command vs a plain Python loop doing the same work, measured side by side.

Both run as fresh subprocesses (interpreter start and imports included) on the same data:
- plain: for each crypto load candles, features, labels, dataset, fold plan; for each
  variant x fold train, calibrate and score (``cvn_assets.ablation.evaluation``, the functions the
  assets call); fan-in the 125 rows and daily returns; gates; HTML report;
- dagster: ``python -m cvn_assets.sweep`` into a fresh ``DAGSTER_HOME`` (SQLite instance,
  11 runs: one per crypto for the market stage, one per variant, the fan-in; every
  materialization, check and metadata entry recorded).

Usage:
  python bench/bench_sweep.py                       # embedded synthetic market
  python bench/bench_sweep.py --csv ../shared/data/binance_spot_1h_2021_2023
Prints both wall times and their ratio (target <= 1.05, issue "Beyond one machine").
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USDT_MAP = {
    s: s.replace("USDC", "USDT") for s in ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
}


def plain_loop(csv_dir: str | None) -> None:
    import pandas as pd

    from cvn_assets.ablation.evaluation import (
        calibrate_and_evaluate,
        daily_oos_returns,
        pbo_logits,
        pooled_reliability,
        portfolio_daily_returns,
        result_row,
        train_cell,
    )
    from cvn_assets.ablation.gates import evaluate_gates
    from cvn_assets.ablation.report import best_focal_variant, render_report
    from cvn_assets.ablation.variants import DEFAULT_VARIANTS
    from cvn_assets.market.dataset import assemble_dataset, label_times
    from cvn_assets.market.features import build_features
    from cvn_assets.market.folds import three_way_fold_plan
    from cvn_assets.market.labels import triple_barrier_labels
    from cvn_assets.settings import DEFAULT_UNIVERSE
    from resources.market_data import MarketDataResource
    from resources.sweep_settings import SweepSettings

    settings = SweepSettings()
    market = (
        MarketDataResource(source="csv", csv_dir=csv_dir, symbol_map=USDT_MAP)
        if csv_dir
        else MarketDataResource()
    )
    strat = settings.label
    t_data = t_cells = 0.0
    rows, oos = [], []
    reliability: dict = {}
    for crypto in DEFAULT_UNIVERSE:
        t = time.perf_counter()
        candles = market.load_candles(crypto)
        ds = assemble_dataset(
            build_features(candles),
            triple_barrier_labels(
                candles,
                take_profit=strat.take_profit,
                stop_loss=strat.stop_loss,
                horizon=strat.horizon,
            ),
        )
        plans = three_way_fold_plan(
            *label_times(ds),
            n_splits=5,
            embargo_pct=settings.embargo_pct,
            early_stopping_frac=settings.early_stopping_frac,
            labels=ds["label"].to_numpy(),
        )
        t_data += time.perf_counter() - t
        t = time.perf_counter()
        for v in DEFAULT_VARIANTS:
            for plan in plans:
                tr = train_cell(
                    v,
                    ds,
                    plan,
                    params=settings.xgb_params(),
                    num_boost_round=settings.num_boost_round,
                    early_stopping_rounds=settings.early_stopping_rounds,
                    seed=settings.seed,
                )
                cal = calibrate_and_evaluate(
                    tr,
                    v,
                    ds,
                    plan,
                    primary=settings.primary_calibration,
                    fee_per_side=settings.fee_per_side,
                )
                rows.append(result_row(crypto, plan.fold, cal))
                oos.append(daily_oos_returns(crypto, plan.fold, v.name, cal))
                reliability.setdefault(v.name, []).append(cal.test_eval)
        t_cells += time.perf_counter() - t
    t = time.perf_counter()
    results = pd.DataFrame(rows)
    daily = portfolio_daily_returns(pd.concat(oos))
    verdicts = evaluate_gates(results, baseline="baseline", oos_returns=daily)
    rel = {
        name: pooled_reliability(reliability[name])
        for name in ("baseline", best_focal_variant(verdicts))
    }
    with tempfile.TemporaryDirectory() as d:
        render_report(
            results,
            verdicts,
            reliability=rel,
            pbo_logits=pbo_logits(daily),
            out_path=Path(d) / "report.html",
            title="plain loop",
        )
    print(
        f"plain loop: {len(results)} rows; data {t_data:.1f}s, train+calibrate {t_cells:.1f}s, "
        f"fan-in+gates+report {time.perf_counter() - t:.1f}s"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None, help="folder of real candles (USDT files)")
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each")
    args = ap.parse_args()
    if args.plain:
        plain_loop(args.csv)
        return 0

    plain_cmd = [sys.executable, str(Path(__file__).resolve()), "--plain"]
    env = {**os.environ}
    if args.csv:
        plain_cmd += ["--csv", args.csv]
        env.update(
            CVN_MARKET_SOURCE="csv",
            CVN_CSV_DIR=str(Path(args.csv).resolve()),
            CVN_SYMBOL_MAP=json.dumps(USDT_MAP),
        )
    for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR"):
        env.pop(k, None)

    # interleaved repeats: this VM's speed drifts by +-15% over minutes, so one pair of
    # runs is not a measurement; compare the medians (and the best of each)
    plain_times: list[float] = []
    dagster_times: list[float] = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run(plain_cmd, cwd=REPO, env=env, check=True, stderr=subprocess.DEVNULL)
        plain_times.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as home:
            env["DAGSTER_HOME"] = home
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "cvn_assets.sweep", "--quiet"],
                cwd=REPO,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            dagster_times.append(time.perf_counter() - t)
    plain_s = statistics.median(plain_times)
    dagster_s = statistics.median(dagster_times)

    data = f"csv {args.csv}" if args.csv else "synthetic default"
    print(f"data: {data}")
    fmt = ", ".join
    print(f"plain Python loop : median {plain_s:6.1f} s  ({fmt(f'{x:.1f}' for x in plain_times)})")
    print(
        f"one command (dagster, 11 runs, SQLite instance): median {dagster_s:6.1f} s  "
        f"({fmt(f'{x:.1f}' for x in dagster_times)})"
    )
    print(
        f"ratio dagster / plain: {dagster_s / plain_s:.3f} (medians), "
        f"{min(dagster_times) / min(plain_times):.3f} (best of each)  (target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
