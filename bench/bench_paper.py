"""Benchmark of paper trading (issue "Production guard, part 1").

Replays two years x 5 cryptos (5 x 17,520 = 87,600 hourly decisions) of the synthetic market
through a small real XGBoost booster with :func:`cvn_assets.guard.paper.replay` (one call per
crypto: features, predictions, the one-position walk, fills, fees, and the drift inputs: the
top-5 features' values and the triple-barrier label with the time it became known; no
candidate) **and writes the journal**
(:func:`resources.journal.replace_days`, one transaction per crypto, temporary SQLite), and
prints its wall time as a ratio to the floor: one vectorised batch ``predict_proba`` of the
same 87,600 feature rows. Targets: <= 5x the floor and <= 60 s. Minimum of ``--repeat`` runs.

Run: ``.venv/bin/python bench/bench_paper.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd
import xgboost as xgb

from cvn_assets.guard.live_model import LiveModel
from cvn_assets.guard.paper import replay
from cvn_assets.market.features import FEATURE_NAMES, build_features
from cvn_assets.market.synthetic_market import DEFAULT_UNIVERSE, synthetic_candles
from resources.journal import replace_days
from resources.model_registry import ModelRegistry, model_versions_table
from resources.results_store import sweeps_table

HOURS_TRAIN = 8760
DAYS = 730


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    hours = HOURS_TRAIN + DAYS * 24
    market = synthetic_candles(DEFAULT_UNIVERSE, hours=hours)
    feats = {c: build_features(market[c]) for c in DEFAULT_UNIVERSE}
    start = market[DEFAULT_UNIVERSE[0]].index[0] + pd.Timedelta(hours=HOURS_TRAIN)
    first = start.normalize()
    last = first + pd.Timedelta(days=DAYS - 1)

    # a small real booster, trained on the year before the replay (BTC's rows)
    f = feats[DEFAULT_UNIVERSE[0]].dropna()
    tr = f[f.index < start]
    c = market[DEFAULT_UNIVERSE[0]]["close"]
    y = (c.shift(-4) > c * 1.002).reindex(tr.index).fillna(False).to_numpy(np.float32)
    booster = xgb.train(
        {"max_depth": 4, "eta": 0.1, "objective": "binary:logistic", "nthread": 2},
        xgb.DMatrix(tr.to_numpy(np.float32), label=y, feature_names=list(FEATURE_NAMES)),
        num_boost_round=60,
    )

    def predict(X: pd.DataFrame) -> np.ndarray:
        m = xgb.DMatrix(X.to_numpy(np.float32), feature_names=list(FEATURE_NAMES))
        return np.asarray(booster.predict(m), dtype=np.float64)

    threshold = float(np.quantile(predict(tr), 0.8))

    with tempfile.TemporaryDirectory() as tmp:
        registry = ModelRegistry(database_url=f"sqlite:///{tmp}/bench.sqlite")
        engine = registry.engine
        with engine.begin() as conn:
            conn.execute(
                sweeps_table.insert().values(
                    sweep_id="bench", fingerprint="0" * 16, identity_json="{}", data_source="x"
                )
            )
            ids = {}
            for crypto in DEFAULT_UNIVERSE:
                ids[crypto] = conn.execute(
                    model_versions_table.insert().values(
                        crypto=crypto,
                        variant="baseline",
                        loss_function="binary:logistic",
                        gamma=None,
                        alpha=None,
                        train_start=market[crypto].index[0],
                        train_end=start,
                        sweep_id="bench",
                        artifact_uri="bench",
                        reference_stats_json="{}",
                        created_at=pd.Timestamp.now(tz="UTC"),
                    )  # fmt: skip
                ).inserted_primary_key[0]
        # the booster's top 5 features by gain, journaled as feature_1..5 (drift inputs)
        gain = booster.get_score(importance_type="gain")
        top = tuple(sorted(gain, key=lambda k: (-gain[k], k))[:5])
        models = {
            crypto: LiveModel(
                ids[crypto], "binary:logistic", predict, threshold, start, top_features=top
            )
            for crypto in DEFAULT_UNIVERSE
        }
        days = list(pd.date_range(first, last, freq="D"))
        rows = {
            crypto: feats[crypto].loc[first : last + pd.Timedelta(hours=23)]
            for crypto in DEFAULT_UNIVERSE
        }
        n = sum(len(r) for r in rows.values())

        floors, replays, writes, decisions, trades = [], [], [], 0, 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            predict(pd.concat(rows.values()))
            floors.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            decisions = trades = 0
            w = 0.0
            for crypto in DEFAULT_UNIVERSE:
                rep = replay(
                    market[crypto], feats[crypto], first, last, models[crypto],
                    crypto=crypto, take_profit=0.01, stop_loss=0.005, horizon=4,
                    latency_ms=1.0,
                )  # fmt: skip
                t1 = time.perf_counter()
                p, t = replace_days(engine, crypto, days, rep.predictions, rep.trades)
                w += time.perf_counter() - t1
                decisions += p
                trades += t
            replays.append(time.perf_counter() - t0)
            writes.append(w)

    floor, whole = min(floors), min(replays)
    print(f"decisions: {decisions} (expected {n}), trades journaled: {trades}")
    print(f"floor (one batch predict_proba of {n} rows): {floor:.3f} s")
    print(f"replay + journal writes: {whole:.3f} s = {whole / floor:.1f}x the floor")
    print(
        f"  of which journal writes: {min(writes):.3f} s (replay alone {whole - min(writes):.3f} s)"
    )
    print(
        f"targets: <= 5x the floor: {'met' if whole <= 5 * floor else 'NOT met'}; "
        f"<= 60 s: {'met' if whole <= 60 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
