"""How the drill's champions would trade under a market scenario, in seconds, before a
20-minute ``make drill``.

For each crypto: a champion of ``--variant`` trained as ``champion_models`` trains it (the
whole history of the sweep's window, calibration block = the last 20 %), on the synthetic
market with the scenario of ``cvn_assets.drill`` (``--edge``, ``--edge-multiplier`` from the turn,
an optional crash from turn + 2 days over ``--crash-hours``); then
:func:`cvn_assets.guard.paper.replay` of the 40 days after the window at the trading threshold
fitted with each minimum share of the calibration block's hours (``--shares``). Prints, per crypto
and share: the threshold and the trades (count / mean net return in %) before the turn, in its first
2 days, in the 2 days after, and later. No Dagster, no database: nothing is written.

This is how the drill's crash scenario was chosen (README, "The incident drill"): e.g.
``python scripts/drill_probe.py --edge 2 --edge-multiplier -1 --crash-hours 48`` (the first
scenario: trades stay profitable, the models stop buying in the crash) against
``--edge-multiplier 0 --crash-hours 240`` (the drill's: trades turn to losses).
"""

import argparse

import pandas as pd

from cvn_assets.ablation.metrics import fit_trading_threshold, trading_min_trades
from cvn_assets.guard.live_model import live_model_from_calibrated
from cvn_assets.guard.paper import replay
from cvn_assets.guard.training import (
    calibration_share,
    dataset_through,
    history_plan,
    train_whole_history,
)
from cvn_assets.market.features import FEATURE_NAMES
from cvn_assets.market.synthetic_market import DEFAULT_HOURS, DEFAULT_START
from cvn_assets.partitions import SETTINGS
from resources.market_data import MarketDataResource
from resources.sweep_settings import SweepSettings


def _fmt(trades: pd.DataFrame) -> str:
    return f"{len(trades)}/{trades['net_return'].mean() * 100:+.2f}" if len(trades) else "0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edge", type=float, default=4.0)  # the drill's
    ap.add_argument("--edge-multiplier", type=float, default=0.0)
    ap.add_argument("--crash-hours", type=int, default=240, help="0: no crash")
    ap.add_argument("--turn-day", type=int, default=20)
    ap.add_argument("--variant", default="focal_g2_a025")
    ap.add_argument("--shares", default="0.1,0.2,0.3", help="minimum shares of trades")
    args = ap.parse_args()

    window_end = pd.Timestamp(DEFAULT_START, tz="UTC") + pd.Timedelta(hours=DEFAULT_HOURS)
    first_day = window_end.ceil("D")
    last_day = first_day + pd.Timedelta(days=39)
    turn = first_day + pd.Timedelta(days=args.turn_day)
    cfg = {
        "edge": args.edge,
        "edge_shift_at": turn.isoformat(),
        "edge_multiplier": args.edge_multiplier,
    }
    if args.crash_hours:
        crash_at = (turn + pd.Timedelta(days=2)).isoformat()
        cfg |= {"crash_at": crash_at, "crash_pct": 0.25, "crash_hours": args.crash_hours}
    market = MarketDataResource(**cfg)
    s = SweepSettings()
    strat = s.label
    variant = next(v for v in SETTINGS.variants if v.name == args.variant)
    day = pd.Timedelta(days=1)
    for crypto in SETTINGS.universe:
        ds = dataset_through(market.load_candles(crypto), strat)
        plan = history_plan(
            ds,
            early_stopping_frac=s.early_stopping_frac,
            calibration_frac=calibration_share(SETTINGS.n_folds),
            embargo_pct=s.embargo_pct,
        )
        cal, _ = train_whole_history(
            variant, ds, plan, xgb_params=s.xgb_params(), num_boost_round=s.num_boost_round,
            early_stopping_rounds=s.early_stopping_rounds, seed=s.seed,
            primary_calibration=s.primary_calibration, fee_per_side=s.fee_per_side,
            oos_f1_buy=None,
        )  # fmt: skip
        rows = ds.iloc[plan.calibration]
        p_cal = cal.predict_proba(rows[list(FEATURE_NAMES)])[:, 1]
        candles = market.load_candles_through(crypto, last_day + pd.Timedelta(days=1, hours=6))
        out = [crypto]
        for share in (float(x) for x in args.shares.split(",")):
            k = trading_min_trades(len(rows), share)
            thr = fit_trading_threshold(p_cal, rows["ret"].to_numpy(), s.fee_per_side, k)
            if thr is None:
                out.append(f"share {share}: no threshold")
                continue
            live = live_model_from_calibrated(
                cal, version=1, train_end=window_end, trading_threshold=thr
            )
            t = replay(
                candles, None, first_day, last_day, live, crypto=crypto,
                take_profit=strat.take_profit, stop_loss=strat.stop_loss, horizon=strat.horizon,
            ).trades  # fmt: skip
            at = pd.to_datetime(t["entry_time"], utc=True)
            spans = (
                ("before", at < turn),
                ("turn..+2d", (at >= turn) & (at < turn + 2 * day)),
                ("+2..+4d", (at >= turn + 2 * day) & (at < turn + 4 * day)),
                ("later", at >= turn + 4 * day),
            )
            cells = " ".join(f"{name} {_fmt(t[mask])}" for name, mask in spans)
            out.append(f"share {share}: thr {thr:.3f} {cells}")
        print(" | ".join(out), flush=True)


if __name__ == "__main__":
    main()
