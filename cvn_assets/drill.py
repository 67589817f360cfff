"""``make drill SCENARIO=crash|calm``: the incident drill of the production guard.

``python -m cvn_assets.drill --scenario crash`` (what ``make drill`` calls), on a **fresh** Dagster
instance (``--home``, default ``.dagster_home_drill_<scenario>``, wiped first) and the embedded
default market:

1. the default sweep (:func:`cvn_assets.sweep.main`) on the synthetic market with the
   scenario's events, which all lie after the sweep's window (the market is prefix-stable:
   the sweep's candles are those of the default); through the sweep cache
   (:mod:`cvn_assets.drill_cache`, ``--sweep-cache DIR``, default ``./.drill_sweep_cache``;
   ``--no-sweep-cache`` bypasses it): a finished sweep's home of the same identity and market
   is copied into the fresh home, and the sweep then finds every cell stored and trains none;
2. champions per crypto through ``champion_job``: the baseline first, then a focal variant by
   an audited override (actor ``drill``) -- so the P1 rule can apply and a rollback has a
   previous (baseline) champion to re-promote;
3. day by day: ``paper_job`` (journal and monitoring metrics of the day, all cryptos; tagged
   ``cvn/live``, so each crypto's day continues from its stored state -- last hour, open
   position, measured latencies -- as the live loop does, instead of replaying every day
   since the first champion; the rows equal a backfill's, ``tests/integration/
   test_live_loop.py``, except that after a champion change the position carried is the one
   journaled, where a backfill re-derives it under the new alias history), then
   every hour of that day each sensor is evaluated **as the daemon would**: the real sensor
   functions with their cursors carried from tick to tick, the guard clock at that hour, and
   Dagster's run-key dedupe (a run_key already launched by that sensor is not launched
   again); the runs they request are executed in process with the same clock.

Scenarios (``T`` = the first replayed day + ``--turn-day`` days):

* ``crash``: from ``T`` the market **loses its edge** (``edge_multiplier = 0``, all
  cryptos: the predictable drift is gone, so the model's BUY signals no longer precede rises
  and every trade pays its fees for nothing), and from ``T + 2 days`` it falls 25 % over 10
  days (``CRASH_HOURS``, volatility doubled meanwhile): trades opened in the fall mostly hit
  their stop loss. Expected: >= 2 P1 alerts, exactly one rollback run, ``CVN_LOSS_FUNCTION =
  binary:logistic``, audit rows, and after the rollback at least one
  ``expectancy_negative_any`` P2 on the baseline champions (the P1 is then "focal not active").

  Why not a *reversed* edge (``edge_multiplier = -1``) and a 48-hour crash (the first
  version): measured with the drill's focal champions, their trades after a reversal still
  earned +0.1 to +0.5 % net (the synthetic drift is a moving sum of recent flows, so the
  models read it from the recent returns themselves, and reversing it reverses those
  returns too: the momentum they trade survives), and during a 48-hour crash they stopped
  buying (falling prices are "no BUY" to them): no loss, nothing for the P1 to detect.
* ``calm``: no event. Expected: no P1, no rollback, the flag unchanged.

``--profile`` prints the wall and CPU seconds of each phase (sweep, champions, paper_job runs,
sensor evaluations, the runs the sensors launched by job) before the summary.

The last line is a JSON summary ``{"scenario", "alerts": [{"name", "severity", "cryptos",
"at"}], "rollback_runs", "loss_function", "champions", ...}`` with the measured hours from the
turn to the first P1 and to the rollback (crash), the P1 rate per 30 days (calm), and the
drill's ``seconds`` (wall) and ``cpu_seconds``.
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AutomationConditionSensorDefinition,
    ResourceDefinition,
    RunRequest,
    SensorDefinition,
    build_resources,
    build_sensor_context,
)

from cvn_assets import sweep
from cvn_assets.ablation.guardrails import CROSS_ENTROPY, FOCAL
from cvn_assets.drill_cache import DEFAULT_CACHE
from cvn_assets.drill_profile import Phases, cpu_seconds
from cvn_assets.drill_setup import (
    P1_RULE,
    Runner,
    first_day_after_window,
    fresh_home,
    hours_since,
    market_config,
    sweep_and_champions,
)
from resources.config_store import LOSS_FLAG, ConfigStore
from resources.guard_clock import GuardClock
from resources.model_registry import ModelRegistry
from resources.rollbacks import RollbackLog

#: the P2 over every live champion: after the crash drill's rollback it must page on the
#: baselines (issue 21: the P1 says "focal not active" then)
ANY_RULE = "expectancy_negative_any"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("crash", "calm"), required=True)
    parser.add_argument("--days", type=int, default=None, help="days replayed (crash 40, calm 180)")
    parser.add_argument("--turn-day", type=int, default=20, help="crash: days before the turn")
    parser.add_argument(
        "--home", default=None,
        help="the fresh Dagster home, wiped at the start "
        "(default: ./.dagster_home_drill_<scenario>)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep-cache", default=DEFAULT_CACHE, metavar="DIR",
        help="the sweep cache: a finished sweep's home per sweep identity and market, copied "
        f"into the fresh home instead of training again (default ./{DEFAULT_CACHE})",
    )  # fmt: skip
    parser.add_argument(
        "--no-sweep-cache", action="store_true",
        help="run the sweep in the fresh home without reading or filling the sweep cache",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="print wall and CPU seconds per phase (sweep, champions, paper_job runs, sensor "
        "evaluations, the runs the sensors launched) before the summary",
    )  # fmt: skip
    parser.add_argument(
        "--edge", type=float, default=4.0,
        help="the synthetic market's predictable drift (default 4.0; the sweep's own market has "
        "0.5, where no champion finds a threshold with positive net expectancy: nothing trades)",
    )  # fmt: skip
    return parser.parse_args(argv)


class _SensorLoop:
    """Every sensor evaluated as the daemon would: cursors carried from tick to tick, the
    guard clock at the tick, Dagster's run-key dedupe; requested runs executed in process.
    Collects the alerts and the rollback runs launched.

    ``resources``: the resources the sensors are given, **built once** for the whole replay
    (``dagster.build_resources``, see :func:`sensor_resources`); each tick hands a sensor
    exactly the ones it requires, as the daemon does, plus the guard clock at the tick.
    Building every resource of the definitions for every sensor at every tick was 2/3 of a
    tick's CPU (an empty home, 8 sensors: 0.31 s a tick; required only: 0.10 s; built once:
    0.033 s)."""

    def __init__(
        self,
        run: Runner,
        sensors: dict[str, SensorDefinition],
        resources: dict[str, Any],
        phases: Phases | None = None,
    ) -> None:
        self.run, self.sensors = run, sensors
        self.phases = phases or Phases()
        self.given: dict[str, dict[str, ResourceDefinition]] = {
            name: {
                key: ResourceDefinition.hardcoded_resource(resources[key])
                for key in sdef.required_resource_keys
                if key != "guard_clock"
            }
            for name, sdef in sensors.items()
        }
        self.cursors: dict[str, str | None] = {name: None for name in sensors}
        self.launched: dict[str, set[str]] = {name: set() for name in sensors}
        self.alerts: list[dict[str, Any]] = []
        self.rollback_runs: list[dict[str, Any]] = []

    def tick(self, now: pd.Timestamp) -> None:
        clock = ResourceDefinition.hardcoded_resource(GuardClock(fixed_now=now.isoformat()))
        for name, sdef in self.sensors.items():
            with self.phases.phase("sensor evaluations"):
                ctx = build_sensor_context(
                    instance=self.run.instance,
                    cursor=self.cursors[name],
                    resources={**self.given[name], "guard_clock": clock},
                    sensor_name=name,
                    definitions=self.run.defs,
                )
                result = sdef.evaluate_tick(ctx)
            if result.cursor is not None:
                self.cursors[name] = result.cursor
            for req in result.run_requests or []:
                if req.run_key in self.launched[name]:
                    continue  # Dagster dedupes a sensor's run_key for ever
                self.launched[name].add(req.run_key)
                with self.phases.phase(f"launched {req.job_name}"):
                    self._launch(req, now)

    def _launch(self, req: RunRequest, now: pd.Timestamp) -> None:
        job = req.job_name
        res = self.run(job, dict(req.run_config), now, tags=dict(req.tags), **(
            {"partition_key": req.partition_key} if req.partition_key else {}
        ))  # fmt: skip
        if job == "alert_job":
            c = req.run_config["ops"]["send_alert"]["config"]
            self.alerts.append(
                {"name": c["name"], "severity": c["severity"],
                 "cryptos": c["cryptos"], "at": c["at"]}
            )  # fmt: skip
            print(f"  {c['at']}  {c['severity']:<5} {c['name']} {c['cryptos']}", flush=True)
        elif job == "rollback_job":
            self.rollback_runs.append({"run_id": res.run_id, "at": now.isoformat()})
            print(f"  {now.isoformat()}  ROLLBACK run {res.run_id[:8]}", flush=True)
        else:
            print(f"  {now.isoformat()}  {job} {req.partition_key or ''}", flush=True)


#: the drill's market settings, written into its home
MARKET_FILE = "drill_market.json"


def tickable_sensors(defs: Any) -> dict[str, SensorDefinition]:
    """The sensors the drill ticks: every user-space sensor of the definitions. The
    automation-condition sensor (``monitoring_follows_paper``) is the daemon's own and
    cannot be evaluated by hand (Dagster raises ``NotImplementedError``); ``paper_job``
    materializes ``monitoring_metrics`` with ``paper_trades``, so it would request nothing."""
    return {
        s.name: s
        for s in defs.get_repository_def().sensor_defs
        if not isinstance(s, AutomationConditionSensorDefinition)
    }


def sensor_resources(
    defs: Any, registry: ModelRegistry, config_store: ConfigStore, market_cfg: dict[str, Any]
) -> dict[str, Any]:
    """The resources the sensors are given (each tick hands a sensor those it requires): every
    resource of the definitions (so a new sensor's resources are never missing), with the
    drill's registry, config store and market (the one its jobs run on: ``data_integrity``
    recomputes the journaled features from its candles); the guard clock is set per tick."""
    from resources.market_data import MarketDataResource

    return {
        **defs.resources,
        "model_registry": registry,
        "config_store": config_store,
        "rollback_log": RollbackLog(),
        "market_data": MarketDataResource(**market_cfg),
    }


def paper_day_tags(cryptos: list[str], day: pd.Timestamp) -> dict[str, str]:
    """The tags of the drill's ``paper_job`` run of ``day``: the day's partitions of every
    crypto, journaled as the live loop journals (``cvn/live``): from each crypto's stored
    state (the previous day's last hour, its open position, its measured latencies), so a
    day's run replays that day only, not the whole history since the first champion; the
    first day, with no state yet, takes the full path."""
    from cvn_assets.assets.paper_trades import LIVE_TAG  # loads CVN_* (see drill_setup)

    return {
        **sweep._range_tags(f"{cryptos[0]}|{day:%Y-%m-%d}", f"{cryptos[-1]}|{day:%Y-%m-%d}"),
        LIVE_TAG: "true",
    }


def _replay_days(
    run: Runner, loop: _SensorLoop, cryptos: list[str], first_day: pd.Timestamp, days: int
) -> None:
    """Day by day: ``paper_job`` for the day (all cryptos), then the sensors every hour."""
    for d in range(days):
        day = first_day + pd.Timedelta(days=d)
        end_of_day = day + pd.Timedelta(hours=23)
        with loop.phases.phase("paper_job runs"):
            run(
                "paper_job",
                None,
                end_of_day + pd.Timedelta(hours=1),
                tags=paper_day_tags(cryptos, day),
            )
        for h in range(1, 25):
            loop.tick(day + pd.Timedelta(hours=h))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    days = args.days or (40 if args.scenario == "crash" else 180)
    if days < 1 or not 0 <= args.turn_day < days:
        print(
            f"--days {days} / --turn-day {args.turn_day}: need 0 <= turn-day < days",
            file=sys.stderr,
        )
        return 2
    home = fresh_home(args.home, f".dagster_home_drill_{args.scenario}")
    t_start = time.perf_counter()
    first_day = first_day_after_window()
    turn = first_day + pd.Timedelta(days=args.turn_day)
    market_cfg = market_config(args.scenario, turn, args.edge)
    # what $CVN_SYNTHETIC_MARKET must hold to read this home's candles (runbook diagnoses)
    (home / MARKET_FILE).write_text(json.dumps(market_cfg))

    # 1. the default sweep on the scenario's market; 2. champions: the baseline, then a
    # focal one by audited override
    phases = Phases()
    cache = None if args.no_sweep_cache else Path(args.sweep_cache)
    prep = sweep_and_champions(market_cfg, first_day, phases, cache=cache)
    if isinstance(prep, int):
        return prep
    defs, run, registry, config_store = prep.defs, prep.run, prep.registry, prep.config_store
    cryptos = prep.cryptos
    # 3. the replay, day by day, with the sensors ticking every hour
    sensors = tickable_sensors(defs)
    given = sensor_resources(defs, registry, config_store, market_cfg)
    with build_resources(given, instance=run.instance) as built:
        loop = _SensorLoop(run, sensors, {key: getattr(built, key) for key in given}, phases)
        _replay_days(run, loop, cryptos, first_day, days)

    flag, _ = config_store.get(LOSS_FLAG)
    p1 = [a for a in loop.alerts if a["severity"] == "P1" and a["name"] == P1_RULE]
    summary: dict[str, Any] = {
        "scenario": args.scenario,
        "alerts": loop.alerts,
        "rollback_runs": len(loop.rollback_runs),
        "loss_function": flag,
        "champions": {c: (registry.alias(c, "champion") or {}).get("variant") for c in cryptos},
        "days": days,
        "first_day": f"{first_day:%Y-%m-%d}",
        "audit_rows": len(config_store.audit(LOSS_FLAG)),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.scenario == "crash":
        summary["turn"] = turn.isoformat()
        if p1:
            summary["hours_turn_to_first_p1"] = hours_since(turn, p1[0]["at"])
        if loop.rollback_runs:
            summary["hours_turn_to_rollback"] = hours_since(turn, loop.rollback_runs[0]["at"])
    else:
        summary["p1_per_30_days"] = round(len(p1) * 30 / days, 3)
    after = _p2_after_rollback(loop.alerts, loop.rollback_runs)
    summary["p2_any_after_rollback"] = len(after)
    if after:
        summary["hours_turn_to_first_p2_after_rollback"] = hours_since(turn, after[0]["at"])
    summary["cpu_seconds"] = round(cpu_seconds() - phases.cpu0, 1)
    if args.profile:
        print(phases.table(), flush=True)
    print(json.dumps(summary))
    passed = _passed(args.scenario, p1, len(loop.rollback_runs), flag, turn)
    return 0 if passed and (args.scenario != "crash" or after) else 1


def _p2_after_rollback(
    alerts: list[dict[str, Any]], rollback_runs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ``expectancy_negative_any`` P2s at hours after the first rollback (none without
    one): the guard is not blind once the baselines are the champions."""
    if not rollback_runs:
        return []
    at = pd.Timestamp(rollback_runs[0]["at"])
    return [
        a
        for a in alerts
        if a["name"] == ANY_RULE and a["severity"] == "P2" and pd.Timestamp(a["at"]) > at
    ]


def _passed(
    scenario: str, p1: list[dict[str, Any]], rollback_runs: int, flag: str, turn: pd.Timestamp
) -> bool:
    """crash: >= 2 P1 from the turn on (one before it is a false alarm), exactly one rollback,
    the flag cross-entropy; calm: no P1, no rollback, the flag still focal."""
    if scenario == "crash":
        return (
            len(p1) >= 2
            and pd.Timestamp(p1[0]["at"]) >= turn
            and rollback_runs == 1
            and flag == CROSS_ENTROPY
        )
    return not p1 and not rollback_runs and flag == FOCAL


if __name__ == "__main__":
    sys.exit(main())
