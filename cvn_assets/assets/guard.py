"""Production guard, part 1: ``champion_models``, one champion per crypto (spec 6.4).

For the configured sweep (``sweep.sweep_id``), per crypto partition:

1. **Which variant**: the focal variant the sweep's gate verdict locks (several: the best mean
   f1_buy delta), else the baseline (:func:`cvn_assets.guard.champion.choose_variant`). The run
   config's ``override_variant`` (with ``actor`` and ``reason``) promotes another variant; the
   actor and reason are written to the registry's alias history.
2. **Staged rollout**: the canary crypto (``canary``, default BTCUSDC) is promoted first. Any
   other crypto is refused, before any training, unless the canary's champion is the same
   variant and its paper trading passes the canary rule (:func:`cvn_assets.guard.champion.
   canary_passed`: >= 14 days since its promotion, >= 20 closed trades of that model version
   in the last 14 days, mean net return >= 0; all three configurable), or ``force_promote``
   is set (with ``reason``; audited).
3. **Training**: on the whole history (:func:`cvn_assets.guard.champion.whole_history_plan`) with
   the sweep cell's code path (:func:`cvn_assets.ablation.evaluation.train_cell`, early stopping on
   the last slice of train), calibrators and both thresholds (f1 and trading) fitted on the
   calibration block at its end. The kill switch ``CVN_LOSS_FUNCTION`` is read from the config store
   at run time: at ``binary:logistic`` the champion is trained with cross-entropy (as the
   baseline) whatever the variant says. The sweep's training assets never read the flag: the
   sweep is an ablation of both losses.
4. **Artifact and registry**: the calibrated model and its reference statistics are stored
   under a fingerprint of (sweep identity, crypto, effective variant, window, plan settings,
   code), registered as a model version and promoted to ``champion`` (the old champion
   becomes ``previous``).

Then the live loop, per crypto x UTC day (``day_crypto_partitions``):
:mod:`cvn_assets.assets.paper_trades` (``paper_trades``: every hour closed on the guard clock,
journaled from the stored state in live runs, replayed in backfills; re-exported here), and:

``monitoring_metrics`` computes the five metrics (:func:`cvn_assets.guard.monitoring.metrics_row`)
of each crypto x day from the journal, the run records tagged ``cvn/loss_function`` and the
live champion's reference statistics (the PSI's training deciles), writes them to the
``monitoring_metrics`` table, as asset metadata (plotted over the partitions by the UI), and
as ``$DAGSTER_HOME/metrics/<crypto>.prom`` (Prometheus text format; the latest day written).
"""

from dataclasses import asdict
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    BackfillPolicy,
    Config,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    RunsFilter,
    asset,
)
from pydantic import Field

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.guardrails import CROSS_ENTROPY
from cvn_assets.ablation.identity import SweepIdentity, digest, module_digest
from cvn_assets.ablation.metrics import MIN_TRADE_SHARE
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import identity_metadata, instance_home, prepare_sweep
from cvn_assets.assets.paper_trades import (  # noqa: F401 (re-exported: the guard's assets)
    LABEL_BACKFILL,
    LABEL_LOOKAHEAD,
    LIVE_TAG,
    PAPER_ASSET,
    PaperConfig,
    _days_by_crypto,
    candidate_schedule_of,
    champion_schedule,
    halt_history,
    paper_trades,
)
from cvn_assets.assets.training import check_market_inputs
from cvn_assets.config_types import CryptoName, OptionalVariantName
from cvn_assets.guard.champion import (
    CANARY_DAYS,
    CANARY_MIN_TRADES,
    canary_passed,
    choose_variant,
    effective_variant,
    jsonable_stats,
)
from cvn_assets.guard.monitoring import LOSS_FUNCTION_TAG, LOSS_FUNCTIONS, metrics_row
from cvn_assets.guard.training import (
    calibration_share,
    history_plan,
    registry_stats,
    train_whole_history,
    training_window,
)
from cvn_assets.market.folds import FoldPlan
from cvn_assets.partitions import SETTINGS, crypto_partitions, day_crypto_partitions
from resources.config_store import LOSS_FLAG, ConfigStore
from resources.db import utc_now
from resources.guard_clock import GuardClock
from resources.journal import (
    read_predictions,
    read_trades,
    replace_monitoring_row,
)
from resources.market_data import MarketDataResource
from resources.metrics_export import metrics_dir, write_prom_file
from resources.model_registry import ModelRegistry
from resources.model_store import ArtifactStore, Stamped
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

ASSET = "champion_models"
DEFAULT_ACTOR = "dagster:champion_models"
_CODE = (
    "guard/champion.py",
    "guard/training.py",
    "ablation/evaluation.py",
    "ablation/training.py",
    "ablation/focal_loss.py",
    "ablation/numpy_codegen.py",
    "ablation/calibration.py",
)


class ChampionConfig(Config):
    """Run config of ``champion_models`` (launchpad: ``ops.champion_models.config``)."""

    canary: CryptoName = Field(default="BTCUSDC", description="crypto promoted first")
    override_variant: OptionalVariantName = Field(
        default="", description="promote this variant instead"
    )
    force_promote: bool = Field(
        default=False, description="promote a non-canary crypto without the canary rule"
    )
    actor: str = Field(default=DEFAULT_ACTOR, description="who promotes (alias history)")
    reason: str = Field(default="", description="why; required with an override")
    canary_days: int = Field(default=CANARY_DAYS, ge=1)
    canary_min_trades: int = Field(default=CANARY_MIN_TRADES, ge=0)
    calibration_frac: float = Field(
        default=calibration_share(SETTINGS.n_folds),
        gt=0.0,
        lt=1.0,
        description="share of the history (at its end) for calibration; a sweep cell's is 1/K",
    )
    min_trade_share: float = Field(
        default=MIN_TRADE_SHARE,
        gt=0.0,
        le=1.0,
        description="the trading threshold must trade in at least this share of the "
        "calibration block's hours (the sweep's cells: 0.10); shadow retrains inherit it",
    )


def _variant(name: str) -> Variant:
    for v in SETTINGS.variants:
        if v.name == name:
            return v
    raise Failure(
        description=f"champion_models: no variant {name!r} (known: "
        f"{', '.join(v.name for v in SETTINGS.variants)})"
    )


def _baseline() -> Variant:
    return next(v for v in SETTINGS.variants if v.loss_function == CROSS_ENTROPY)


def _oos_f1(results: pd.DataFrame, crypto: str, variant: str) -> float | None:
    if results.empty:
        return None
    rows = results[(results["crypto"] == crypto) & (results["variant"] == variant)]
    return None if rows.empty else float(rows["f1_buy"].mean())


def _check_rollout(
    config: ChampionConfig, crypto: str, variant: Variant, registry: ModelRegistry
) -> str:
    """Before any training: the canary first, then the others only after the canary rule (or
    ``force_promote``). Returns what decided it; raises :class:`Failure` naming the rule."""
    if crypto == config.canary:
        return "canary crypto: promoted first"
    if config.force_promote:
        if not config.reason.strip():
            raise Failure(description="force_promote needs a reason (it is audited)")
        return f"force_promote by {config.actor}: {config.reason}"
    rule = (
        f"staged rollout: {crypto} follows the canary {config.canary} only after its champion "
        f"of the same variant paper-traded >= {config.canary_days} days with >= "
        f"{config.canary_min_trades} trades and mean net return >= 0 (or force_promote)"
    )
    champ = registry.alias(config.canary, "champion")
    if champ is None:
        raise Failure(description=f"{rule}: refused, the canary has no champion yet")
    if champ["variant"] != variant.name:
        raise Failure(
            description=f"{rule}: refused, the canary's champion is {champ['variant']!r} "
            f"(version {champ['id']}), not {variant.name!r}"
        )
    since = max(
        h["valid_from"]
        for h in registry.history(config.canary, "champion")
        if h["version_id"] == champ["id"]
    )
    now = utc_now()
    trades = read_trades(
        registry.engine, config.canary, now - timedelta(days=config.canary_days), now
    )
    trades = trades[trades["model_version"] == champ["id"]]
    ok, why = canary_passed(
        trades, now=now, days=config.canary_days, min_trades=config.canary_min_trades, since=since
    )
    if not ok:
        raise Failure(description=f"{rule}: refused, {why} (canary version {champ['id']})")
    return why


@asset(
    name=ASSET,
    group_name="guard",
    partitions_def=crypto_partitions,
    deps=[AssetKey("gate_verdicts"), AssetKey("finetune_results")],
    kinds={"xgboost", "sql"},
    code_version=module_digest(*_CODE),
    description="Champion per crypto: the locked variant (or the baseline) retrained on the "
    "whole history, calibrated, registered and promoted (canary first; kill switch honoured).",
)
def champion_models(
    context: AssetExecutionContext,
    config: ChampionConfig,
    model_dataset,
    sweep: SweepSettings,
    market_data: MarketDataResource,
    results_store: ResultsStore,
    artifacts: ArtifactStore,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    guard_clock: GuardClock,
) -> Stamped:
    crypto = context.partition_key
    identity = prepare_sweep(context, sweep, market_data, results_store)
    check_market_inputs(artifacts, identity, [crypto])
    baseline = _baseline()

    # 1. which variant
    results = results_store.load_results(sweep.sweep_id)
    variant, why = _which_variant(config, sweep, results_store, results, baseline)

    # 2. staged rollout, before any training
    rollout = _check_rollout(config, crypto, variant, model_registry)

    # 3. the kill switch, then training on the whole history
    flag, flag_version = config_store.get(LOSS_FLAG)
    eff = effective_variant(variant, flag, baseline)
    ds: pd.DataFrame = model_dataset
    plan = history_plan(
        ds,
        early_stopping_frac=sweep.early_stopping_frac,
        calibration_frac=config.calibration_frac,
        embargo_pct=sweep.embargo_pct,
    )
    train_start, train_end = training_window(ds)
    fp = _champion_fingerprint(config, identity, crypto, eff, train_start, train_end)
    reused = artifacts.has(ASSET, crypto, fp)
    if reused:
        cal = artifacts.read(ASSET, crypto, fp)
    else:
        cal = _train_champion(
            config, sweep, identity, results, crypto, variant, eff, flag, ds, plan
        )
        artifacts.write(ASSET, crypto, fp, cal)
    stats = cal.info["reference_statistics"]

    # 4. register and promote
    uri = str(artifacts.path(ASSET, crypto, fp))
    version_id = _register(model_registry, crypto, eff, sweep, cal, uri, (train_start, train_end))
    reason = _promotion_reason(config, sweep, variant, eff, why, rollout, flag, flag_version)
    aliases = model_registry.promote(
        crypto,
        version_id,
        actor=config.actor,
        reason=reason,
        dagster_run_id=context.run.run_id,
        at=guard_clock.now(),  # the wall clock; a drill's simulated time
    )
    context.log.info(f"{crypto}: champion = version {version_id} ({eff.name}); {reason}")
    context.add_output_metadata(
        {
            "chosen_variant": variant.name,
            "reason": why,
            "trained_as": eff.name,
            "effective_loss_function": eff.loss_function,
            "loss_flag": f"{flag} (version {flag_version})",
            "rollout": rollout,
            **_model_metadata(cal, stats),
            "registry_version_id": version_id,
            "previous_version_id": -1 if aliases["previous"] is None else aliases["previous"],
            "actor": config.actor,
            "fingerprint": fp,
            "reused_stored_model": reused,
            **_plan_metadata(plan, cal),
            "artifact": MetadataValue.path(uri),
            **identity_metadata(identity),
        }
    )
    return Stamped(cal, fp)


def _register(
    registry: ModelRegistry,
    crypto: str,
    eff: Variant,
    sweep: SweepSettings,
    cal: CalibratedModel,
    uri: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> int:
    """Register the stored champion (as its effective variant); returns the version id."""
    return registry.register_version(
        crypto,
        eff.name,
        loss_function=eff.loss_function,
        gamma=eff.gamma,
        alpha=eff.alpha,
        train_start=window[0].to_pydatetime(),
        train_end=window[1].to_pydatetime(),
        sweep_id=sweep.sweep_id,
        artifact_uri=uri,
        reference_stats=registry_stats(cal, cal.info["reference_statistics"]),
    )


def _plan_metadata(plan: FoldPlan, cal: CalibratedModel) -> dict[str, Any]:
    return {
        "train_rows": len(plan.train),
        "early_stopping_rows": len(plan.early_stopping),
        "calibration_rows": len(plan.calibration),
        "best_iteration": int(cal.info["best_iteration"]),
    }


def _champion_fingerprint(
    config: ChampionConfig,
    identity: SweepIdentity,
    crypto: str,
    eff: Variant,
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
) -> str:
    """The stored champion's key: sweep identity, crypto, effective variant, window, plan
    settings, code."""
    return digest(
        {
            "market": identity.market_fingerprint(crypto),
            "settings": dict(identity.settings),
            "variant": asdict(eff),
            "window": [str(train_start), str(train_end)],
            "calibration_frac": config.calibration_frac,
            "min_trade_share": config.min_trade_share,
            "code": module_digest(*_CODE),
        }
    )


def _promotion_reason(
    config: ChampionConfig,
    sweep: SweepSettings,
    variant: Variant,
    eff: Variant,
    why: str,
    rollout: str,
    flag: str,
    flag_version: int,
) -> str:
    """The alias history's reason: the operator's (or the choice's), the kill switch when it
    changed what was trained, the sweep and the rollout rule."""
    kill = (
        f"; {LOSS_FLAG}={flag} (v{flag_version}): trained as {eff.name}"
        if eff.name != variant.name
        else ""
    )
    reason = config.reason.strip() or f"{variant.name}: {why}"
    return f"{reason}{kill} [sweep {sweep.sweep_id}; {rollout}]"


def _which_variant(
    config: ChampionConfig,
    sweep: SweepSettings,
    results_store: ResultsStore,
    results: pd.DataFrame,
    baseline: Variant,
) -> tuple[Variant, str]:
    """``(variant, why)``: the operator's override (needs a reason), else the variant the
    sweep's gate verdict locks (else the baseline); :class:`Failure` without a verdict."""
    if config.override_variant:
        if not config.reason.strip():
            raise Failure(description="override_variant needs a reason (it is audited)")
        return (
            _variant(config.override_variant),
            f"operator override by {config.actor}: {config.reason}",
        )
    verdicts = results_store.load_verdicts(sweep.sweep_id)
    if verdicts.empty:
        raise Failure(
            description=f"sweep {sweep.sweep_id!r} has no gate verdict: materialize "
            "gate_verdicts first (results_job), or set override_variant"
        )
    name, why = choose_variant(verdicts, results, baseline.name)
    return _variant(name), why


def _train_champion(
    config: ChampionConfig,
    sweep: SweepSettings,
    identity: SweepIdentity,
    results: pd.DataFrame,
    crypto: str,
    variant: Variant,
    eff: Variant,
    flag: str,
    ds: pd.DataFrame,
    plan: FoldPlan,
) -> CalibratedModel:
    """``eff`` trained on the whole history, calibrated, its reference statistics and
    provenance in ``info``."""
    _, train_end = training_window(ds)
    cal, stats = train_whole_history(
        eff,
        ds,
        plan,
        xgb_params=sweep.xgb_params(),
        num_boost_round=sweep.num_boost_round,
        early_stopping_rounds=sweep.early_stopping_rounds,
        seed=sweep.seed,
        primary_calibration=sweep.primary_calibration,
        fee_per_side=sweep.fee_per_side,
        oos_f1_buy=_oos_f1(results, crypto, eff.name),
        min_trade_share=config.min_trade_share,
    )
    cal.info.update(
        {
            "reference_statistics": stats,
            "requested_variant": variant.name,
            "loss_flag": flag,
            "sweep_id": sweep.sweep_id,
            "sweep_fingerprint": identity.fingerprint,
            "train_end": str(train_end),
        }
    )
    return cal


def _model_metadata(cal: CalibratedModel, stats: dict[str, Any]) -> dict[str, Any]:
    """The champion's thresholds and a summary of its reference statistics."""
    trading = cal.info["trading_threshold"]
    return {
        "f1_threshold": round(float(cal.threshold), 4),
        "trading_threshold": (
            "none (do not trade)" if trading is None else round(float(trading), 4)
        ),
        "reference_stats": MetadataValue.json(jsonable_stats(stats)),
    }


MONITORING_ASSET = "monitoring_metrics"
#: eager on every day partition (eager alone follows only the latest time window): requested
#: when paper_trades of a crypto-day was updated by a run that did not also materialize it
MONITORING_AUTOMATION = AutomationCondition.eager().without(
    AutomationCondition.in_latest_time_window()
)


# ---------------------------------------------------------------------------------------------
# monitoring_metrics
# ---------------------------------------------------------------------------------------------
def _run_records(context: AssetExecutionContext, end: pd.Timestamp) -> list[tuple[Any, ...]]:
    """Failed runs tagged ``cvn/loss_function`` updated after ``end - 25 h`` (plain records
    for :func:`cvn_assets.guard.monitoring.training_failures`, which counts those ending in
    each window before its day's end)."""
    names = {v.loss_function for v in SETTINGS.variants} | set(LOSS_FUNCTIONS)
    out = []
    for lf in sorted(names):
        records = context.instance.get_run_records(
            filters=RunsFilter(
                statuses=[DagsterRunStatus.FAILURE],
                tags={LOSS_FUNCTION_TAG: lf},
                updated_after=(end - pd.Timedelta(hours=25)).to_pydatetime(),
            )
        )
        for r in records:
            out.append((r.dagster_run.status.value, r.end_time, dict(r.dagster_run.tags)))
    return out


@asset(
    name=MONITORING_ASSET,
    group_name="guard",
    partitions_def=day_crypto_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[AssetKey(PAPER_ASSET)],
    kinds={"sql", "prometheus"},
    code_version=module_digest("guard/monitoring.py"),
    # follows a paper_trades partition materialized without it (a UI backfill of paper_trades
    # alone), any day, not only the latest (sensors/automation.py evaluates it)
    automation_condition=MONITORING_AUTOMATION,
    description="The five monitoring metrics per crypto x day (training failures per loss, "
    "focal_loss_active, buy_proba quantiles and PSI, net expectancy 24/48 h, latency): "
    "monitoring_metrics table, asset metadata, $DAGSTER_HOME/metrics/<crypto>.prom. "
    "Materialized with paper_trades by paper_job and live_job; a paper_trades partition "
    "materialized alone (a UI backfill) is followed by this one (automation condition: "
    "eager on every day, sensor monitoring_follows_paper).",
)
def monitoring_metrics(
    context: AssetExecutionContext,
    model_registry: ModelRegistry,
) -> None:
    engine = model_registry.engine
    prom: dict[str, str] = {}
    live = context.run.tags.get(LIVE_TAG) == "true"
    by_crypto = _days_by_crypto(context)
    first_end = min(days[0] for days in by_crypto.values()) + pd.Timedelta(days=1)
    # the failed training runs since the first day's window, read once for every day (each
    # day's metrics count those in its own windows): a catch-up of months costs no more
    # instance queries than one day
    records = _run_records(context, first_end)
    for crypto, days in by_crypto.items():
        row = None
        for day in days:
            end = day + pd.Timedelta(days=1)
            preds = read_predictions(engine, crypto, day, end - pd.Timedelta(microseconds=1))
            if preds.empty and live:  # a live run's rectangle: a crypto not journaled that day
                context.log.info(f"{crypto} {day:%Y-%m-%d}: nothing journaled, no metrics")
                continue
            if preds.empty:
                raise Failure(
                    description=f"monitoring_metrics {crypto} {day:%Y-%m-%d}: no predictions "
                    "journaled for the day: materialize paper_trades for it first"
                )
            trades = read_trades(engine, crypto, end - pd.Timedelta(hours=48), end)
            version = model_registry.get_version(int(preds["model_version"].iloc[-1]))
            assert version is not None
            stats = version["reference_stats"] or {}
            edges = stats.get("buy_proba_decile_edges")
            row = metrics_row(
                crypto=crypto,
                day=f"{day:%Y-%m-%d}",
                loss_function=version["loss_function"],
                gamma=version["gamma"],
                alpha=version["alpha"],
                buy_proba=preds["buy_proba"].to_numpy(np.float64),
                trades=trades,
                latency_ms=preds["latency_ms"].dropna().to_numpy(np.float64),
                run_records=records,
                psi_edges=edges if edges else None,
            )
            replace_monitoring_row(engine, row)
            context.add_asset_metadata(
                {k: v for k, v in row.items() if k not in ("crypto", "day") and v is not None},
                partition_key=f"{crypto}|{day:%Y-%m-%d}",
            )
        if row is not None:
            prom[crypto] = str(write_prom_file(metrics_dir(_home(context)), crypto, row))
    context.log.info(f"monitoring_metrics: .prom files {prom}")


def _home(context: AssetExecutionContext) -> str | None:
    home = instance_home(context)
    return None if home is None else str(home)
