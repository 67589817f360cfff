"""Benchmark of one tick of each guard sensor (issue 12, "Sensor hygiene").

A temporary results database holds **one year** of paper-trading journal for the 5 cryptos of
the universe: ``predictions`` for 8760 hours x 5 cryptos (``buy_proba``, ``decision``,
``feature_1..5``, ``label`` and ``label_known_at`` filled as the replay writes them: a label
is known 24 h after its hour, the last day's are still NULL), a few thousand ``trades``
(a trade every ~12 h per crypto, losing ones in the last 48 h so the P1 rule has work to do)
and, per crypto, a baseline champion promoted at the start of the year replaced by a focal
one 30 days before its end (``previous`` = baseline), both with realistic
``reference_stats`` (top-5 features with training decile edges and window-PSI q95,
``buy_proba`` decile edges, training mean confidence, OOS f1_buy, f1 threshold, n_train).
The journal is written with :func:`resources.journal.replace_days` (one transaction per
crypto), as the ``paper_trades`` asset does.

Each sensor (``expectancy_negative_focal``, ``model_drift``, ``focal_training_crash``,
``rollback_confirmation``, ``alert_delivery``) is then ticked ``--ticks`` times with
``build_sensor_context(instance=DagsterInstance.ephemeral(), resources=..., definitions=defs)``
and ``sensor_def.evaluate_tick(ctx)`` at a fixed guard clock (the end of the year), with a
**fresh cursor and fresh resource objects** each time (so every tick really evaluates and
opens its database engine, as a daemon tick does). Printed per sensor: the median and max
tick time in seconds, and the median as a share of Dagster's 60 s evaluation limit. Target:
median < 1 s.

The synthetic features are stationary AR(1) series (phi 0.95) drawn like the training ones,
so any ``data_drift`` alarm ``model_drift`` requests here is a false alarm; with these inputs
3 of the 5 cryptos come out crit (see the report of issue 12: the max over 5 features at a
per-feature q95 fires far more often than 5 %).

Run::

    .venv/bin/python bench/bench_sensors.py                  # temporary SQLite
    .venv/bin/python bench/bench_sensors.py --ticks 9
    .venv/bin/python bench/bench_sensors.py --pg-url postgresql://user@host:5432/empty_db

``--pg-url``: also run on that PostgreSQL database (it must be empty or a bench database:
the bench writes its tables there and does not drop them).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

EVALUATION_LIMIT_S = 60.0
DAYS = 365
FOCAL_DAYS = 30  # the focal champion is live over the last 30 days
SENSORS = (
    "expectancy_negative_focal",
    "model_drift",
    "focal_training_crash",
    "rollback_confirmation",
    "alert_delivery",
)
FEATURES = ("atr_14", "rsi_14", "ret_24h", "vol_24h", "macd_hist")
AR_PHI = 0.95


def _ar1(rng: np.random.Generator, n: int, phi: float = AR_PHI) -> np.ndarray:
    """``n`` x 5 AR(1) series with unit variance: hourly features persist, as real ones do."""
    x = np.empty((n, len(FEATURES)))
    x[0] = rng.standard_normal(len(FEATURES))
    shocks = rng.standard_normal((n, len(FEATURES))) * np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + shocks[i]
    return x


def _reference_stats(rng: np.random.Generator, focal: bool) -> dict:
    """What :func:`cvn_assets.guard.champion.reference_statistics` records, from a training year of
    the same AR(1) features and a beta-ish buy_proba."""
    from cvn_assets.guard.champion import window_psi_quantile
    from cvn_assets.guard.monitoring import training_shares

    train = _ar1(rng, 8760)
    proba = np.clip(rng.beta(2.0, 4.5, 8760), 0.0, 1.0)
    return {
        "top_features": [
            {
                "name": name,
                "gain": float(50.0 / (k + 1)),
                "train_decile_edges": np.quantile(train[:, k], np.arange(1, 10) / 10).tolist(),
                "train_bin_shares": training_shares(
                    train[:, k], np.quantile(train[:, k], np.arange(1, 10) / 10)
                ).tolist(),
                "window_psi_q99": window_psi_quantile(train[:, k]),
            }
            for k, name in enumerate(FEATURES)
        ],
        "buy_proba_decile_edges": np.quantile(proba, np.arange(1, 10) / 10).tolist(),
        "train_mean_confidence": float(np.mean(np.maximum(proba, 1 - proba))),
        "oos_f1_buy": 0.34 if focal else 0.31,
        "f1_threshold": 0.38,
        "n_train": 8760,
        "n_calibration": 1000,
    }


def build_journal(url: str, end: datetime, seed: int = 0) -> dict[str, int]:
    """Registry + one year of journal in the database at ``url``; returns the row counts."""
    from cvn_assets.ablation.identity import SweepIdentity
    from cvn_assets.partitions import SETTINGS
    from resources.journal import replace_days
    from resources.model_registry import ModelRegistry
    from resources.results_store import ResultsStore

    cryptos = list(SETTINGS.universe)
    rng = np.random.default_rng(seed)
    ResultsStore(database_url=url).register_sweep(
        "bench", SweepIdentity({"eta": 0.05}, {"universe": cryptos}, {"source": "bench"}, {})
    )
    reg = ModelRegistry(database_url=url)
    start = end - timedelta(days=DAYS)
    flip = end - timedelta(days=FOCAL_DAYS)
    hours = pd.date_range(start, end - timedelta(hours=1), freq="h", tz="UTC")
    days = list(pd.date_range(start, end - timedelta(days=1), freq="D", tz="UTC"))
    n_pred = n_trades = 0
    for crypto in cryptos:
        ids = {}
        for variant, loss, g, a, at in (
            ("baseline", "binary:logistic", None, None, start - timedelta(hours=1)),
            ("focal_g2_a025", "focal", 2.0, 0.25, flip),
        ):
            ids[loss] = reg.register_version(
                crypto, variant, loss_function=loss, gamma=g, alpha=a,
                train_start=start - timedelta(days=730), train_end=start - timedelta(days=1),
                sweep_id="bench", artifact_uri=f"file:///bench/{crypto}/{variant}",
                reference_stats=_reference_stats(rng, loss == "focal"),
            )  # fmt: skip
            reg.promote(crypto, ids[loss], actor="bench", reason="setup", at=at)
        n = len(hours)
        focal = hours >= flip
        proba = np.clip(rng.beta(2.0, 4.5, n), 0.0, 1.0)
        label = (rng.random(n) < proba).astype("int8")
        known = hours + pd.Timedelta(hours=24)
        matured = known <= pd.Timestamp(end)
        x = _ar1(rng, n)
        preds = pd.DataFrame(
            {
                "crypto": crypto,
                "hour": hours,
                "model_version": np.where(focal, ids["focal"], ids["binary:logistic"]),
                "loss_function": np.where(focal, "focal", "binary:logistic"),
                "buy_proba": proba,
                "decision": np.where(proba >= 0.38, "BUY", "HOLD"),
                "latency_ms": rng.gamma(4.0, 0.5, n),
                **{f"feature_{k + 1}": x[:, k] for k in range(len(FEATURES))},
                "label": pd.array(np.where(matured, label, 0), dtype="Int8"),
                "label_known_at": known,
            }
        )
        preds.loc[~matured, "label"] = pd.NA
        preds.loc[~matured, "label_known_at"] = pd.NaT
        # trades: one every ~12 h over the year, ~14 losing ones in the last 48 h
        entries = hours[rng.integers(0, 12) :: 12][:-5]
        recent = hours[-48:][::3][:-1]
        entries = entries[entries < recent[0]].append(recent)
        hold = rng.integers(1, 3, len(entries))
        exits = entries + pd.to_timedelta(hold, unit="h")
        keep = exits < pd.Timestamp(end)
        entries, exits = entries[keep], exits[keep]
        m = len(entries)
        net = 0.0008 + 0.01 * rng.standard_normal(m)
        net[exits >= pd.Timestamp(end) - pd.Timedelta(hours=48)] = -0.004 + 0.001 * (
            rng.standard_normal(int((exits >= pd.Timestamp(end) - pd.Timedelta(hours=48)).sum()))
        )
        f = entries >= flip
        trades = pd.DataFrame(
            {
                "crypto": crypto,
                "entry_time": entries,
                "entry_price": 100.0,
                "exit_time": exits,
                "exit_price": 100.0 * (1 + net + 0.002),
                "barrier": np.where(net > 0, "tp", "sl"),
                "gross_return": net + 0.002,
                "net_return": net,
                "model_version": np.where(f, ids["focal"], ids["binary:logistic"]),
                "loss_function": np.where(f, "focal", "binary:logistic"),
            }
        )
        a, b = replace_days(reg.engine, crypto, days, preds, trades)
        n_pred += a
        n_trades += b
    return {"predictions": n_pred, "trades": n_trades, "cryptos": len(cryptos)}


def tick_times(url: str, now: datetime, ticks: int) -> dict[str, list[float]]:
    """Seconds per tick of each sensor (fresh cursor, instance and resources per tick)."""
    from dagster import DagsterInstance, build_sensor_context

    from cvn_assets.definitions import defs
    from resources.alerts import AlertSink
    from resources.config_store import ConfigStore
    from resources.guard_clock import GuardClock
    from resources.model_registry import ModelRegistry
    from resources.rollbacks import RollbackLog

    repo = defs.get_repository_def()
    out: dict[str, list[float]] = {}
    for name in SENSORS:
        sdef = repo.get_sensor_def(name)
        times = []
        for i in range(ticks + 1):  # the first one warms imports and caches; not counted
            with DagsterInstance.ephemeral() as instance:
                ctx = build_sensor_context(
                    instance=instance,
                    cursor=None,
                    resources={
                        "guard_clock": GuardClock(fixed_now=now.isoformat()),
                        "model_registry": ModelRegistry(database_url=url),
                        "config_store": ConfigStore(database_url=url),
                        "rollback_log": RollbackLog(database_url=url),
                        "alert_sink": AlertSink(database_url=url),
                    },
                    sensor_name=name,
                    definitions=defs,
                )
                t0 = time.perf_counter()
                result = sdef.evaluate_tick(ctx)
                dt = time.perf_counter() - t0
            if i == 0:
                what = [r.job_name for r in result.run_requests] or [result.skip_message]
                print(f"  {name}: {str(what)[:150]}")
            else:
                times.append(dt)
        out[name] = times
    return out


def report(label: str, times: dict[str, list[float]]) -> None:
    print(f"\n{label}: seconds per tick (median of {len(next(iter(times.values())))})")
    print(f"  {'sensor':28s} {'median':>8s} {'max':>8s} {'/60 s limit':>12s}  target < 1 s")
    for name, ts in times.items():
        med = statistics.median(ts)
        flag = "ok" if med < 1.0 else "OVER"
        print(f"  {name:28s} {med:8.3f} {max(ts):8.3f} {med / EVALUATION_LIMIT_S:12.4f}  {flag}")


def run(url: str, label: str, ticks: int) -> None:
    from resources.db import utc_now

    end = pd.Timestamp(utc_now()).floor("D").to_pydatetime()  # the end of the year
    t0 = time.perf_counter()
    counts = build_journal(url, end)
    print(f"{label}: journal built in {time.perf_counter() - t0:.1f} s: {counts}, end {end}")
    report(label, tick_times(url, end, ticks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=5, help="timed ticks per sensor")
    ap.add_argument("--pg-url", default="", help="also bench on this (empty) PostgreSQL db")
    args = ap.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)  # the sensors' per-tick INFO lines
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DAGSTER_HOME"] = tmp  # nothing lands in the user's home
        os.environ["CVN_ALERTS_PATH"] = os.path.join(tmp, "alerts.jsonl")
        os.environ.pop("CVN_DATABASE_URL", None)
        run(f"sqlite:///{tmp}/bench.sqlite", "SQLite", args.ticks)
        if args.pg_url:
            run(args.pg_url, "PostgreSQL", args.ticks)


if __name__ == "__main__":
    main()
