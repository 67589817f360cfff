"""Production guard, part 1: ``champion_models``, one champion per crypto (spec 6.4).

For the configured sweep (``sweep.sweep_id``), per crypto partition:

1. **Which variant**: the focal variant the sweep's gate verdict locks (several: the best mean
   f1_buy delta), else the baseline (:func:`cvn_assets.champion.choose_variant`). The run
   config's ``override_variant`` (with ``actor`` and ``reason``) promotes another variant; the
   actor and reason are written to the registry's alias history.
2. **Staged rollout**: the canary crypto (``canary``, default BTCUSDC) is promoted first. Any
   other crypto is refused, before any training, unless the canary's champion is the same
   variant and its paper trading passes the canary rule (:func:`cvn_assets.champion.
   canary_passed`: >= 14 days since its promotion, >= 20 closed trades of that model version
   in the last 14 days, mean net return >= 0; all three configurable), or ``force_promote``
   is set (with ``reason``; audited).
3. **Training**: on the whole history (:func:`cvn_assets.champion.whole_history_plan`) with the
   sweep cell's code path (:func:`cvn_assets.evaluation.train_cell`, early stopping on the last
   slice of train), calibrators and both thresholds (f1 and trading) fitted on the calibration
   block at its end. The kill switch ``CVN_LOSS_FUNCTION`` is read from the config store at
   run time: at ``binary:logistic`` the champion is trained with cross-entropy (as the
   baseline) whatever the variant says. The sweep's training assets never read the flag: the
   sweep is an ablation of both losses.
4. **Artifact and registry**: the calibrated model and its reference statistics are stored
   under a fingerprint of (sweep identity, crypto, effective variant, window, plan settings,
   code), registered as a model version and promoted to ``champion`` (the old champion
   becomes ``previous``).
"""

from dataclasses import asdict
from datetime import timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MetadataValue,
    asset,
)
from pydantic import Field

from cvn_assets.ablation import Variant
from cvn_assets.assets._util import identity_metadata, prepare_sweep
from cvn_assets.assets.training import _check_market_inputs
from cvn_assets.champion import (
    CANARY_DAYS,
    CANARY_MIN_TRADES,
    calibrate_whole_history,
    canary_passed,
    choose_variant,
    effective_variant,
    jsonable_stats,
    reference_statistics,
    whole_history_plan,
)
from cvn_assets.dataset import label_times
from cvn_assets.evaluation import train_cell
from cvn_assets.identity import digest, module_digest
from cvn_assets.partitions import SETTINGS, crypto_partitions
from resources.config_store import ConfigStore
from resources.db import utc_now
from resources.journal import read_trades
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.model_store import ArtifactStore, Stamped
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

ASSET = "champion_models"
DEFAULT_ACTOR = "dagster:champion_models"
LOSS_FLAG = "CVN_LOSS_FUNCTION"
_CODE = ("champion.py", "evaluation.py", "training.py", "focal_loss.py", "calibration.py")


class ChampionConfig(Config):
    """Run config of ``champion_models`` (launchpad: ``ops.champion_models.config``)."""

    canary: str = Field(default="BTCUSDC", description="crypto promoted first")
    override_variant: str = Field(default="", description="promote this variant instead")
    force_promote: bool = Field(
        default=False, description="promote a non-canary crypto without the canary rule"
    )
    actor: str = Field(default=DEFAULT_ACTOR, description="who promotes (alias history)")
    reason: str = Field(default="", description="why; required with an override")
    canary_days: int = CANARY_DAYS
    canary_min_trades: int = CANARY_MIN_TRADES
    calibration_frac: float = Field(
        default=round(1.0 / SETTINGS.n_folds, 6),
        description="share of the history (at its end) for calibration; a sweep cell's is 1/K",
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
    return next(v for v in SETTINGS.variants if v.loss_function == "binary:logistic")


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
) -> Stamped:
    crypto = context.partition_key
    identity = prepare_sweep(context, sweep, market_data, results_store)
    _check_market_inputs(artifacts, identity, [crypto])
    baseline = _baseline()

    # 1. which variant
    results = results_store.load_results(sweep.sweep_id)
    if config.override_variant:
        if not config.reason.strip():
            raise Failure(description="override_variant needs a reason (it is audited)")
        variant = _variant(config.override_variant)
        why = f"operator override by {config.actor}: {config.reason}"
    else:
        verdicts = results_store.load_verdicts(sweep.sweep_id)
        if verdicts.empty:
            raise Failure(
                description=f"sweep {sweep.sweep_id!r} has no gate verdict: materialize "
                "gate_verdicts first (results_job), or set override_variant"
            )
        name, why = choose_variant(verdicts, results, baseline.name)
        variant = _variant(name)

    # 2. staged rollout, before any training
    rollout = _check_rollout(config, crypto, variant, model_registry)

    # 3. the kill switch, then training on the whole history
    flag, flag_version = config_store.get(LOSS_FLAG)
    eff = effective_variant(variant, flag, baseline)
    ds: pd.DataFrame = model_dataset
    t0, t1 = label_times(ds)
    plan = whole_history_plan(
        t0,
        t1,
        early_stopping_frac=sweep.early_stopping_frac,
        calibration_frac=config.calibration_frac,
        embargo_pct=sweep.embargo_pct,
        labels=ds["label"].to_numpy(),
    )
    train_start = pd.Timestamp(ds.index[0])
    train_end = pd.Timestamp(ds["t1"].max()) + pd.Timedelta(hours=1)  # exclusive
    fp = digest(
        {
            "market": identity.market_fingerprint(crypto),
            "settings": dict(identity.settings),
            "variant": asdict(eff),
            "window": [str(train_start), str(train_end)],
            "calibration_frac": config.calibration_frac,
            "code": module_digest(*_CODE),
        }
    )
    reused = artifacts.has(ASSET, crypto, fp)
    if reused:
        cal = artifacts.read(ASSET, crypto, fp)
    else:
        res = train_cell(
            eff,
            ds,
            plan,
            params=sweep.xgb_params(),
            num_boost_round=sweep.num_boost_round,
            early_stopping_rounds=sweep.early_stopping_rounds,
            seed=sweep.seed,
        )
        cal = calibrate_whole_history(
            res, eff, ds, plan, primary=sweep.primary_calibration, fee_per_side=sweep.fee_per_side
        )
        stats = reference_statistics(cal, ds, plan, oos_f1_buy=_oos_f1(results, crypto, eff.name))
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
        artifacts.write(ASSET, crypto, fp, cal)
    stats = cal.info["reference_statistics"]

    # 4. register and promote
    uri = str(artifacts.path(ASSET, crypto, fp))
    version_id = model_registry.register_version(
        crypto,
        eff.name,
        loss_function=eff.loss_function,
        gamma=eff.gamma,
        alpha=eff.alpha,
        train_start=train_start.to_pydatetime(),
        train_end=train_end.to_pydatetime(),
        sweep_id=sweep.sweep_id,
        artifact_uri=uri,
        reference_stats={
            **stats,
            "f1_threshold": cal.threshold,
            "trading_threshold": cal.info["trading_threshold"],
        },
    )
    kill = (
        f"; {LOSS_FLAG}={flag} (v{flag_version}): trained as {eff.name}"
        if eff.name != variant.name
        else ""
    )
    reason = config.reason.strip() or f"{variant.name}: {why}"
    reason = f"{reason}{kill} [sweep {sweep.sweep_id}; {rollout}]"
    aliases = model_registry.promote(
        crypto, version_id, actor=config.actor, reason=reason, dagster_run_id=context.run_id
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
            "f1_threshold": round(float(cal.threshold), 4),
            "trading_threshold": (
                "none (do not trade)"
                if cal.info["trading_threshold"] is None
                else round(float(cal.info["trading_threshold"]), 4)
            ),
            "reference_stats": MetadataValue.json(jsonable_stats(stats)),
            "registry_version_id": version_id,
            "previous_version_id": -1 if aliases["previous"] is None else aliases["previous"],
            "actor": config.actor,
            "fingerprint": fp,
            "reused_stored_model": reused,
            "train_rows": len(plan.train),
            "early_stopping_rows": len(plan.early_stopping),
            "calibration_rows": len(plan.calibration),
            "best_iteration": int(cal.info["best_iteration"]),
            "artifact": MetadataValue.path(uri),
            **identity_metadata(identity),
        }
    )
    return Stamped(cal, fp)
