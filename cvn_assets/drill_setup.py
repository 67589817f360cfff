"""What the two incident drills share (``make drill``: the replay, ``make live-drill``: the
real daemon): a fresh home, the scenario's market, the default sweep on it and the drill's
champions (a baseline, then a focal variant by audited override, per crypto).

The scenario's events lie after the sweep's window (the market is prefix-stable: the sweep's
candles are those of the default). ``crash`` from the turn ``T``: the market **loses its
edge** (``edge_multiplier = 0``), and from ``T + 2 days`` falls 25 % over 10 days
(:data:`CRASH_HOURS`); ``calm``: no event. See :mod:`cvn_assets.drill` for why this shape.
"""

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import DagsterInstance

from cvn_assets import drill_cache, sweep
from cvn_assets.ablation.guardrails import CROSS_ENTROPY
from cvn_assets.drill_profile import Phases
from cvn_assets.market.synthetic_market import DEFAULT_HOURS, DEFAULT_START
from resources.config_store import ConfigStore
from resources.model_registry import ModelRegistry

FOCAL_VARIANT = "focal_g2_a025"
#: the crash's length: -25 % spread over 10 days (a bear leg) rather than 48 h
CRASH_HOURS = 240
DRILL_ACTOR = "drill"
#: the drill's champions trade in >= 30 % of their calibration hours (champion_models'
#: ``min_trade_share``; the sweep's cells keep 10 %). The P1 judges only the trades of the
#: last 48 h and needs >= 10 of them on >= 2 cryptos; at 10 % the champions trade ~5 times in
#: 48 h (scripts/drill_probe.py: 5-12 trades per crypto in the 2 days after the crash starts),
#: so the P1 could never hold its sample. At 30 % and the drill's edge 4.0 (``--edge``): 9-16
#: trades per crypto in each 2 days after the turn at -0.3 to -0.5 % each, and +0.2 to +0.4 %
#: per trade before it (at edge 2.0 and 30 %, BTC and SOL lost before the turn: a P1 4 days
#: early, measured).
DRILL_TRADE_SHARE = 0.3
#: the P1 rule whose alerts the drills count
P1_RULE = "expectancy_negative_focal"


def first_day_after_window() -> pd.Timestamp:
    """The first whole UTC day after the default sweep's window (the drills' first day)."""
    window_end = pd.Timestamp(DEFAULT_START, tz="UTC") + pd.Timedelta(hours=DEFAULT_HOURS)
    return window_end.ceil("D")


def market_config(scenario: str, turn: pd.Timestamp, edge: float) -> dict[str, Any]:
    """The synthetic market's settings of ``scenario`` (``crash`` | ``calm``) turning at
    ``turn`` (the ``market_data`` resource's config, or ``$CVN_SYNTHETIC_MARKET``)."""
    if scenario == "calm":
        return {"edge": edge}
    return {
        "edge": edge,
        "edge_shift_at": turn.isoformat(),
        "edge_multiplier": 0.0,
        "crash_at": (turn + pd.Timedelta(days=2)).isoformat(),
        "crash_pct": 0.25,
        "crash_hours": CRASH_HOURS,
    }


def fresh_home(home: str | None, default: str) -> Path:
    """The drill's Dagster home (``home``, else ``./<default>``), wiped and made, set as
    ``$DAGSTER_HOME``."""
    path = Path(home or default).resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


class Runner:
    """Runs a job in process on the drill's instance, its market and a fixed guard clock;
    a failed run raises ``RuntimeError`` naming the job and its errors."""

    def __init__(self, defs: Any, instance: DagsterInstance, market_cfg: dict[str, Any]):
        self.defs, self.instance, self.market_cfg = defs, instance, market_cfg

    def __call__(
        self, job: str, config: dict[str, Any] | None, clock: pd.Timestamp, **kw: Any
    ) -> Any:
        rc = {
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            **(config or {}),
            "resources": {
                "market_data": {"config": self.market_cfg},
                "guard_clock": {"config": {"fixed_now": clock.isoformat()}},
            },
        }
        res = self.defs.resolve_job_def(job).execute_in_process(
            run_config=rc, instance=self.instance, raise_on_error=False, **kw
        )
        if not res.success:
            errs = [
                _root(e.event_specific_data.error)
                for e in res.all_events
                if getattr(e.event_specific_data, "error", None) is not None
            ]
            raise RuntimeError(f"{job} failed: {'; '.join(dict.fromkeys(errs)) or res.run_id}")
        return res


def _root(error: Any) -> str:
    """The last line of the innermost cause of a Dagster error (what the op raised)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip().splitlines()[-1]


def promote_champions(
    run: Runner, baseline: str, cryptos: list[str], first_day: pd.Timestamp
) -> None:
    """Champions through ``champion_job``: the baseline, then a focal one by audited override
    (so the P1 rule can apply and a rollback has a baseline previous to re-promote)."""
    for variant, at, why in (
        (baseline, first_day - pd.Timedelta(hours=2), "drill: the baseline champion first"),
        (
            FOCAL_VARIANT,
            first_day - pd.Timedelta(hours=1),
            "drill: a focal champion by override so the P1 rule can apply (audited)",
        ),
    ):
        for crypto in cryptos:
            cfg = {
                "override_variant": variant,
                "force_promote": True,
                "actor": DRILL_ACTOR,
                "reason": why,
                "min_trade_share": DRILL_TRADE_SHARE,
            }
            run(
                "champion_job",
                {"ops": {"champion_models": {"config": cfg}}},
                at,
                partition_key=crypto,
            )
    print(f"champions: {FOCAL_VARIANT} (previous: {baseline}) for {cryptos}", flush=True)


@dataclass
class Prepared:
    """A drill's home after the sweep and the champions."""

    defs: Any
    run: Runner
    registry: ModelRegistry
    config_store: ConfigStore
    baseline: str
    cryptos: list[str]


def sweep_and_champions(
    market_cfg: dict[str, Any],
    first_day: pd.Timestamp,
    phases: Phases | None = None,
    *,
    cache: Path | None = None,
) -> Prepared | int:
    """The default sweep on the market ``market_cfg``, then the champions promoted just
    before ``first_day``; the sweep's exit status when it did not complete. ``phases``
    times the two steps (``sweep``, ``champions``). ``cache``: the sweep cache's directory
    (:mod:`cvn_assets.drill_cache`; None: no cache), used with the home ``$DAGSTER_HOME``."""
    phases = phases or Phases()
    with phases.phase("sweep"):
        rc = run_sweep(market_cfg, cache)
    if rc != 0:
        print(f"STOPPED: the sweep did not complete (exit status {rc})", file=sys.stderr)
        return rc
    # imported here, after the sweep: they validate every CVN_* variable when they load
    # (SettingsError), which sweep.main reports as one line and exit status 2
    from cvn_assets.definitions import defs
    from cvn_assets.partitions import SETTINGS

    run = Runner(defs, DagsterInstance.get(), market_cfg)
    baseline = next(v.name for v in SETTINGS.variants if v.loss_function == CROSS_ENTROPY)
    cryptos = list(SETTINGS.universe)
    with phases.phase("champions"):
        promote_champions(run, baseline, cryptos, first_day)
    return Prepared(defs, run, ModelRegistry(), ConfigStore(), baseline, cryptos)


def run_sweep(market_cfg: dict[str, Any], cache: Path | None) -> int:
    """The default sweep (``sweep.main``) on the market ``market_cfg`` in ``$DAGSTER_HOME``,
    through the sweep cache ``cache`` (None: none): a complete entry of the same key is
    copied into the home first, so the sweep finds every cell stored and trains none; after
    a sweep that completed without one, the home is stored as the entry. Returns the sweep's
    exit status."""
    args = ["--quiet", "--resource-config", json.dumps({"market_data": market_cfg})]
    if cache is None:
        return sweep.main(args)
    why = drill_cache.uncacheable(os.environ)
    document = None
    if why is None:
        try:
            document = cache_document(market_cfg)
        except Exception as exc:  # a bad setting: sweep.main names it and refuses
            why = f"no sweep identity ({type(exc).__name__})"
    if document is None:
        print(f"sweep cache: not used: {why}", flush=True)
        return sweep.main(args)
    home = Path(os.environ["DAGSTER_HOME"])
    entry = cache / drill_cache.cache_key(document)
    hit = drill_cache.restore(entry, home)
    print(f"sweep cache: {'restored' if hit else 'no entry yet'}: {entry}", flush=True)
    rc = sweep.main(args)
    if rc == 0 and not hit:
        drill_cache.save(home, entry, document)
        print(f"sweep cache: stored {entry}", flush=True)
    return rc


def cache_document(market_cfg: dict[str, Any]) -> dict[str, Any]:
    """What the sweep cache's key of the default sweep on ``market_cfg`` digests."""
    from cvn_assets.assets._util import sweep_identity  # loads CVN_* (see sweep_and_champions)
    from resources.market_data import MarketDataResource
    from resources.sweep_settings import SweepSettings

    identity = sweep_identity(SweepSettings(), MarketDataResource(**market_cfg))
    return drill_cache.key_document(
        identity.fingerprint, market_cfg, drill_cache.store_code_digest()
    )


def hours_since(turn: pd.Timestamp, at: str) -> float:
    """Hours from ``turn`` to the ISO time ``at``."""
    return (pd.Timestamp(at) - turn) / pd.Timedelta(hours=1)
