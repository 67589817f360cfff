"""Detector benchmark (issue 23): false alarms per 30 days on no-change nulls, and delay and
power on injected faults, for every guard detector -- measured with the sensors' own rules
(:mod:`cvn_assets.guard.detector_bench`, which calls :func:`cvn_assets.guard.window_rules.
drift_verdicts` and the expectancy rules of :mod:`cvn_assets.guard.drift`).

Per crypto a focal champion (the spec's ``focal_g2_a025``, or ``--variant``) is trained with
the champion's own path on the first part of the history, its OOS f1_buy measured on the
next block, and the rest is monitored: the nulls are that held-out stream as it is and with
its weeks shuffled; the faults are injected into it (every crypto at once) every 21 days.
With ``--real-live`` the champion is trained on the whole 2021-2023 history (first 88 % of its
model dataset; OOS f1 on the last 12 %) and the monitored stream is the separate 2024-2026
file (:func:`cvn_assets.guard.detector_setup.prepare_live`): out of sample in time, and not a
no-change null -- its "null" columns are the live stream as it is, regime changes included.

Run::

    .venv/bin/python bench/bench_detectors.py --quick          # CI size: 2 synthetic cryptos
    .venv/bin/python bench/bench_detectors.py                  # the synthetic default, 5 cryptos
    nice -n 10 .venv/bin/python bench/bench_detectors.py --real   # ../shared/data 2021-2023
    nice -n 10 .venv/bin/python bench/bench_detectors.py --real-live  # trained 2021-2023,
                                                  # monitored 2024-04 -> 2026-04

Trained champions are cached in ``--cache`` (default ``/tmp/det-cache``; never in the repo).
``--json PATH`` writes the tables as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvn_assets.ablation.variants import DEFAULT_VARIANTS  # noqa: E402
from cvn_assets.guard import detector_bench as db  # noqa: E402
from cvn_assets.guard.detector_setup import Split, prepare, prepare_live  # noqa: E402
from cvn_assets.market.labels import parse_label_strategy  # noqa: E402

REAL_DIR = ROOT.parent / "shared" / "data" / "binance_spot_1h_2021_2023"
LIVE_DIR = ROOT.parent / "shared" / "data" / "binance_spot_1h_2024_2026"
#: bump when what a cached champion holds changes (its reference statistics)
CACHE_VERSION = 2
REAL_PAIRS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")


def settings(quick: bool) -> dict[str, Any]:
    """The sweep's defaults (resources.sweep_settings), fewer rounds with ``quick``."""
    return {
        "xgb_params": {
            "tree_method": "hist", "max_depth": 4, "eta": 0.05, "subsample": 0.8,
            "colsample_bytree": 0.8, "min_child_weight": 5.0, "lambda": 1.0, "nthread": 1,
            "seed": 0,
        },
        "num_boost_round": 120 if quick else 400,
        "early_stopping_rounds": 40,
        "seed": 0,
        "primary_calibration": "temperature",
        "early_stopping_frac": 0.15,
        "calibration_frac": 0.2,
        "embargo_pct": 0.005,
    }  # fmt: skip


def read_real(folder: Path, flag: str) -> dict[str, Any]:
    """crypto -> the real Binance candles of ``folder`` (:data:`REAL_PAIRS`)."""
    from cvn_assets.market.candles_io import read_candles_csv

    if not folder.is_dir():
        raise SystemExit(f"{flag}: {folder} does not exist")
    return {p: read_candles_csv(folder / f"{p}_1h.csv") for p in REAL_PAIRS}


def candles_for(source: str, quick: bool) -> dict[str, Any]:
    """crypto -> the candles a champion is trained on: the synthetic default (``quick``: 2
    cryptos, 12 000 hours) or the real 2021-2023 Binance candles (``real``, ``real_live``)."""
    if source in ("real", "real_live"):
        return read_real(REAL_DIR, f"--{source.replace('_', '-')}")
    from cvn_assets.market.synthetic_market import DEFAULT_UNIVERSE, synthetic_candles

    if quick:
        return dict(synthetic_candles(DEFAULT_UNIVERSE[:2], hours=12_000))
    return dict(synthetic_candles(DEFAULT_UNIVERSE))


def split_for(n_rows: int, quick: bool, live: bool = False) -> Split:
    """Champion training on the first ~64 % of the dataset, OOS block ~9 %, the rest
    monitored (quick: 9 000 + 1 000 rows); ``live`` (monitored on another frame): training on
    the first 88 %, the OOS block the remaining 12 %."""
    if live:
        train = int(n_rows * 0.88)
        return Split(train=train, test=n_rows - train)
    if quick:
        return Split(train=9_000, test=1_000)
    return Split(train=int(n_rows * 0.64), test=int(n_rows * 0.09))


def cache_path(
    args: argparse.Namespace,
    crypto: str,
    candles: Any,
    live: Any,
    split: Split,
    s: dict[str, Any],
) -> Path:
    """Where the champion of ``crypto`` is cached: a hash of the source, both candle frames'
    extent (``live``: the monitored frame of ``--real-live``, or None), the split, variant,
    label, fee and trading shares and the training settings."""
    live_key = [] if live is None else [len(live), str(live.index[0]), str(live.index[-1])]
    key = json.dumps([CACHE_VERSION, args.source, crypto, len(candles), str(candles.index[-1]),
                      split.train, split.test, args.variant, args.label, args.fee,
                      args.trade_share, args.force_share, s, *live_key],
                     sort_keys=True, default=str)  # fmt: skip
    return Path(args.cache) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"


def monitored(args: argparse.Namespace) -> tuple[list[db.Monitored], list[dict[str, Any]]]:
    variant = next(v for v in DEFAULT_VARIANTS if v.name == args.variant)
    label = parse_label_strategy(args.label)
    s = settings(args.quick)
    out, summaries = [], []
    is_live = args.source == "real_live"
    lives = read_real(LIVE_DIR, "--real-live") if is_live else {}
    for crypto, candles in candles_for(args.source, args.quick).items():
        n = len(candles) - 167 - label.horizon
        split = split_for(n, args.quick, live=is_live)
        live = lives.get(crypto)
        path = cache_path(args, crypto, candles, live, split, s)
        if path.exists():
            m, summary = pickle.loads(path.read_bytes())
        else:
            t = time.perf_counter()
            kw = dict(variant=variant, label=label, settings=s, fee_per_side=args.fee,
                      min_trade_share=args.trade_share, force_share=args.force_share)  # fmt: skip
            if live is not None:
                m, summary = prepare_live(crypto, candles, live, split, **kw)
            else:
                m, summary = prepare(crypto, candles, split, **kw)
            summary["train_seconds"] = round(time.perf_counter() - t, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps((m, summary)))
        out.append(m)
        summaries.append(summary)
    return out, summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI size (synthetic, 2 cryptos)")
    ap.add_argument("--real", dest="source", action="store_const", const="real",
                    default="synthetic", help="the real candles of ../shared/data")  # fmt: skip
    ap.add_argument("--real-live", dest="source", action="store_const", const="real_live",
                    help="trained on 2021-2023 candles, monitored on 2024-2026")  # fmt: skip
    ap.add_argument("--variant", default="focal_g2_a025")
    ap.add_argument("--label", default="SL0.5_TP1_H4")
    ap.add_argument("--fee", type=float, default=0.00075, help="fee per side (fraction)")
    ap.add_argument("--trade-share", type=float, default=0.10, help="min trading share")
    ap.add_argument(
        "--force-share",
        type=float,
        default=None,
        help="trade this share of hours whatever the expectancy (exercise the P1)",
    )
    ap.add_argument("--faults", default=",".join(db.FAULTS))
    ap.add_argument("--every-days", type=int, default=21)
    ap.add_argument("--cache", default="/tmp/det-cache")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ms, summaries = monitored(args)
    print(f"# detector benchmark: {args.source}{' (quick)' if args.quick else ''}, "
          f"variant {args.variant}, label {args.label}, fee {args.fee}/side, "
          f"forced trade share {args.force_share}")  # fmt: skip
    for s in summaries:
        print("  ", s)
    faults = [f for f in args.faults.split(",") if f]
    tables, raw = db.run_benchmark(ms, faults=faults, every_days=args.every_days)
    for t in tables:
        print()
        print(t.markdown())
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        payload = {"args": vars(args), "summaries": summaries, "raw": raw,
                   "tables": {t.detector: t.rows() for t in tables}}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=1, default=_jsonable))
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return str(x)


if __name__ == "__main__":
    raise SystemExit(main())
