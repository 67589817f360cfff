"""The live drill's short version (issue 20, item 7) under the **real daemon**.

A small market (3,012 synthetic hours, edge 2.0, from ``$CVN_SYNTHETIC_MARKET`` as the live
drill passes it), a baseline then a focal champion for two cryptos through ``champion_job``
(the drill's own :func:`cvn_assets.drill_setup.promote_champions`), then
:func:`cvn_assets.live_drill.run_daemon`: ``dagster dev`` on the accelerated guard clock (one
market hour per 4 wall seconds, from 18:00 on the first day after the champions' window),
calm scenario, a 6-market-hour window. Nothing in this process journals or launches
anything: the hours in the journal are the daemon's.

Checks: every crypto's hours are journaled through the window's last hour, by runs that the
``live_candles`` sensor launched (its tag on each run), the journal's hours are contiguous
from the first day on; and afterwards no process of the drill's home is left: none of the
PIDs seen under ``dagster dev`` is alive, and no process on the machine has the home in its
environment.
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.webserver, pytest.mark.slow]

CRYPTOS = ["BTCUSDC", "ETHUSDC"]
#: 2023-07-01 + 3,012 h = 2023-11-03T12:00: the window ends mid-day, the first day is 11-04
MARKET = {"hours": 3012, "edge": 2.0}
HOUR_SECONDS = 4.0
CALM_HOURS = 6


def _processes_with(home: Path) -> list[int]:
    """PIDs of the processes whose environment holds ``DAGSTER_HOME=<home>`` (other than
    this one)."""
    needle = f"DAGSTER_HOME={home}".encode()
    out = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid == os.getpid():
            continue
        try:
            if needle in environ.read_bytes().split(b"\0"):
                out.append(pid)
        except OSError:
            continue
    return out


def _setup(home: Path, monkeypatch) -> tuple[str, pd.Timestamp]:
    """The market, the sweep's registration and the champions (in process, before the
    daemon): returns the baseline variant and the first day after the champions' window."""
    from dagster import DagsterInstance

    from cvn_assets.assets._util import sweep_identity
    from cvn_assets.definitions import defs
    from cvn_assets.drill_setup import Runner, promote_champions
    from cvn_assets.partitions import SETTINGS
    from resources.market_data import MarketDataResource
    from resources.results_store import ResultsStore
    from resources.sweep_settings import SweepSettings

    baseline = next(v for v in SETTINGS.variants if v.loss_function == "binary:logistic")
    locked = next(v for v in SETTINGS.variants if v.loss_function == "focal")
    window_end = pd.Timestamp("2023-07-01", tz="UTC") + pd.Timedelta(hours=MARKET["hours"])
    first_day = window_end.ceil("D")
    with DagsterInstance.from_config(str(home)) as instance:
        for crypto in CRYPTOS:
            res = defs.resolve_job_def("market_job").execute_in_process(
                instance=instance, partition_key=crypto
            )
            assert res.success
        results = ResultsStore()
        results.register_sweep("default", sweep_identity(SweepSettings(), MarketDataResource()))
        results.replace_verdicts(
            "default",
            [{"variant": v.name, "is_baseline": v is baseline, "lock": v is locked,
              "mean_delta": 0.0 if v is baseline else 0.01} for v in SETTINGS.variants],
        )  # fmt: skip
        promote_champions(Runner(defs, instance, MARKET), baseline.name, CRYPTOS, first_day)
    return baseline.name, first_day


def test_the_daemon_alone_journals_the_live_hours_and_everything_stops(tmp_path, monkeypatch):
    from cvn_assets.drill_setup import market_config
    from cvn_assets.live_drill import Plan, instance_yaml, run_daemon
    from resources.journal import predictions_table
    from resources.model_registry import ModelRegistry

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home, 2))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps(MARKET))
    monkeypatch.delenv("CVN_GUARD_NOW", raising=False)
    monkeypatch.delenv("CVN_SLACK_WEBHOOK_URL", raising=False)
    for name in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_ALERTS_PATH", "CVN_UNIVERSE"):
        monkeypatch.delenv(name, raising=False)
    baseline, first_day = _setup(home, monkeypatch)

    start = first_day + pd.Timedelta(hours=18)
    plan = Plan(
        scenario="calm",
        first_day=first_day,
        turn=start,
        clock_start=start,
        speed=3600.0 / HOUR_SECONDS,
        calm_end=start + pd.Timedelta(hours=CALM_HOURS),
        deadline_s=150.0,
        market_cfg=market_config("calm", start, MARKET["edge"]) | MARKET,
    )
    summary = run_daemon(plan, home, CRYPTOS, baseline)

    # everything it started is gone: the PIDs it saw, and any process of this home
    assert summary["left_running"] == []
    assert _processes_with(home) == []
    assert summary["stopped"] == "calm window journaled", summary
    assert summary["checks"]["calm_window_journaled"], summary

    # the hours were journaled by the live loop's runs (launched by its sensor), contiguous
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        runs = [r.dagster_run for r in instance.get_run_records(RunsFilter())]
    by_sensor = [r for r in runs if r.tags.get("dagster/sensor_name") == "live_candles"]
    assert by_sensor and all(r.tags.get("cvn/live") == "true" for r in by_sensor)
    last_needed = plan.calm_end - pd.Timedelta(hours=1)
    engine = ModelRegistry().engine
    p = predictions_table
    for crypto in CRYPTOS:
        with engine.connect() as conn:
            hours = [
                pd.Timestamp(h)
                for (h,) in conn.execute(
                    sa.select(p.c.hour)
                    .where(p.c.crypto == crypto, p.c.hour >= first_day.to_pydatetime())
                    .order_by(p.c.hour)
                )
            ]
        assert hours[0] == first_day, (crypto, hours[:3])
        assert hours[-1] >= last_needed, (crypto, hours[-1])
        assert hours == list(pd.date_range(first_day, hours[-1], freq="h")), crypto
        assert summary["hours_journaled"][crypto] == len(hours)
    # the daemon ticked the sensors (its tick storage), the live loop's among them
    assert summary["sensor_ticks"]["live_candles"]["total"] >= 1
    assert summary["sensor_ticks"]["expectancy_negative_focal"]["total"] >= 1
