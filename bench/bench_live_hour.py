"""Benchmark: the CPU time of one live hour after 7 days and after 2 years of operation
(issue 20, "cost independent of age"; target: ratio <= 1.2).

Two fresh results databases share one artifact store and the same five champions (the small
configuration of the tests: 3000 synthetic hours, edge 2.0, 30 boosting rounds; canary first,
the others force-promoted). In each, a first ``live_job`` run catches the journal up to its
age (the champions' window end + 7 days, + 730 days: a full replay, not timed), then one more
hour warms up. Then ``--hours`` consecutive live hours are run in each, interleaved (age 7 d,
age 2 y, 7 d, ...: a load that drifts hits both alike), each ``live_job`` executed in process as
the daemon's run would execute it (the job's in-process executor: paper_trades for the 5
cryptos, monitoring_metrics, guard_state), timed by the process's CPU time
(``time.process_time``, XGBoost's threads included) and wall time. Prints the medians and the
ratio 2 years / 7 days.

Run: ``.venv/bin/python bench/bench_live_hour.py`` (about 10-15 minutes: the 2-year catch-up
journals 3,650 crypto-days in one run, mostly Dagster's event-log writes; not timed).
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from cvn_assets.assets._util import sweep_identity
from cvn_assets.definitions import defs
from cvn_assets.partitions import SETTINGS
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

HOURS, EDGE, ROUNDS = 3000, 2.0, 30
AGES = {"7 days": 7, "2 years": 730}
H = pd.Timedelta(hours=1)
TARGET = 1.2


def _cfg(db: str, store: str, now: pd.Timestamp | None = None, ops: dict | None = None) -> dict:
    url = {"config": {"database_url": db}}
    res = {
        "market_data": {"config": {"hours": HOURS, "edge": EDGE}},
        "sweep": {"config": {"num_boost_round": ROUNDS, "early_stopping_rounds": 10}},
        **{k: url for k in ("results_store", "config_store", "model_registry", "alert_sink")},
        "artifacts": {"config": {"base_dir": store}},
        "io_manager": {"config": {"base_dir": store}},
    }
    if now is not None:
        res["guard_clock"] = {"config": {"fixed_now": now.isoformat()}}
    return {"resources": res, **({"ops": ops} if ops else {})}


def _range(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _champions(instance: DagsterInstance, db: str, store: str) -> pd.Timestamp:
    """Market, a locked focal verdict and five champions; returns the anchor day."""
    u = list(SETTINGS.universe)
    res = defs.resolve_job_def("market_job").execute_in_process(
        run_config=_cfg(db, store), instance=instance, tags=_range(u[0], u[-1])
    )
    assert res.success
    results = ResultsStore(database_url=db)
    sweep = SweepSettings(num_boost_round=ROUNDS, early_stopping_rounds=10)
    results.register_sweep(
        "default", sweep_identity(sweep, MarketDataResource(hours=HOURS, edge=EDGE))
    )
    base = next(v for v in SETTINGS.variants if v.loss_function == "binary:logistic")
    results.replace_verdicts(
        "default",
        [{"variant": v.name, "is_baseline": v is base, "lock": v.name == SETTINGS.variants[-1].name,
          "mean_delta": 0.0 if v is base else 0.01} for v in SETTINGS.variants],
    )  # fmt: skip
    force = {"champion_models": {"config": {"force_promote": True, "reason": "bench"}}}
    for c in u:
        res = defs.resolve_job_def("champion_job").execute_in_process(
            run_config=_cfg(db, store, ops=force), instance=instance, partition_key=c
        )
        assert res.success
    champ = ModelRegistry(database_url=db).alias(u[0], "champion")
    return pd.Timestamp(champ["train_end"]).ceil("D")


def _live(instance: DagsterInstance, db: str, store: str, first: pd.Timestamp, now: pd.Timestamp):
    u = list(SETTINGS.universe)
    last = now.floor("h") - H
    tags = {**_range(f"{u[0]}|{first:%Y-%m-%d}", f"{u[-1]}|{last:%Y-%m-%d}"), "cvn/live": "true"}
    c0, w0 = time.process_time(), time.perf_counter()
    res = defs.resolve_job_def("live_job").execute_in_process(
        run_config=_cfg(db, store, now), instance=instance, tags=tags
    )
    assert res.success
    return time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=7, help="timed live hours per age")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cvn_bench_live_"))
    store = str(tmp / "store")
    (tmp / "home").mkdir()
    os.environ["DAGSTER_HOME"] = str(tmp / "home")
    with DagsterInstance.from_config(str(tmp / "home")) as instance:
        clocks, dbs = {}, {}
        for name, days in AGES.items():
            db = f"sqlite:///{tmp / (name.replace(' ', '_') + '.sqlite')}"
            anchor = _champions(instance, db, store)
            start = anchor + pd.Timedelta(days=days, minutes=10)
            t0 = time.perf_counter()
            _live(instance, db, store, anchor, start)  # the catch-up: a full replay
            print(f"{name}: journal caught up to {start - 2 * H:%Y-%m-%d %H:00} "
                  f"in {time.perf_counter() - t0:.1f} s (not timed)")  # fmt: skip
            clock = start + H
            _live(instance, db, store, (clock - 2 * H).normalize(), clock)  # warm-up hour
            clocks[name], dbs[name] = clock, db
        cpu: dict[str, list[float]] = {n: [] for n in AGES}
        wall: dict[str, list[float]] = {n: [] for n in AGES}
        for _ in range(args.hours):
            for name in AGES:
                clocks[name] += H
                c, w = _live(
                    instance, dbs[name], store, (clocks[name] - 2 * H).normalize(), clocks[name]
                )
                cpu[name].append(c)
                wall[name].append(w)
    for name in AGES:
        print(f"one live hour after {name}: CPU median {statistics.median(cpu[name]):.3f} s "
              f"(min {min(cpu[name]):.3f}), wall median {statistics.median(wall[name]):.3f} s, "
              f"n={len(cpu[name])}")  # fmt: skip
    a, b = (statistics.median(cpu[n]) for n in AGES)
    wa, wb = (statistics.median(wall[n]) for n in AGES)
    print(f"ratio 2 years / 7 days: CPU {b / a:.3f}x, wall {wb / wa:.3f}x (target <= {TARGET}x): "
          f"{'met' if b / a <= TARGET else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
