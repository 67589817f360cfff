"""Models stage: one model asset and one calibrated-model asset per variant (asset factory).

Each asset is partitioned by crypto x fold and runs as a single ranged run
(``BackfillPolicy.single_run()``), looping over ``context.partition_keys``: per-partition
overhead stays near 0.03 s instead of 0.1-0.6 s for a run per partition.

Content addressing (:mod:`cvn_assets.ablation.identity`): every cell's booster is stored at once
under the fingerprint of exactly what it depends on (the crypto's data, the market and training
settings, the variant's loss, gamma and alpha, the fold, the code and library versions). A
stored model with the cell's fingerprint is reused (training is deterministic: it would be
bit-identical), so a re-run after a failure or ``kill -9`` trains only what is missing, and a
sweep with other settings never picks up these models. ``retrain`` (sweep config) or the run tag
``cvn/retrain=true`` trains again regardless. A cell that raises does not stop the others; the
step then fails naming the failed cells.
"""

import time
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.evaluation import calibrate_and_evaluate, result_row, train_cell
from cvn_assets.ablation.identity import SweepIdentity, module_digest
from cvn_assets.ablation.training import TrainResult
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import (
    by_key,
    prepare_sweep,
    round_floats,
    run_partition_keys,
    wants_retrain,
    warn_if_no_partition,
)
from cvn_assets.assets.checks import probabilities_valid_result, probabilities_valid_spec
from cvn_assets.execution.executors import _cell_gate, mapping_key
from cvn_assets.partitions import crypto_fold_partitions, split_key, to_crypto
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore, Stamped
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepProgress, SweepSettings


def model_asset_name(variant: Variant) -> str:
    return f"model_{variant.name}"


def calibrated_asset_name(variant: Variant) -> str:
    return f"calibrated_{variant.name}"


def variant_tags(variant: Variant) -> dict[str, str]:
    return {"cvn/variant": variant.name, "cvn/loss_function": variant.loss_function}


def _variant_metadata(variant: Variant) -> dict[str, Any]:
    return {
        "variant": variant.name,
        "loss_function": variant.loss_function,
        "gamma": variant.gamma if variant.gamma is not None else "-",
        "alpha": variant.alpha if variant.alpha is not None else "-",
    }


def _fail_if_any(
    context: AssetExecutionContext, failed: dict[str, str], what: str, note: str
) -> None:
    if failed:
        lines = "\n".join(f"- {k}: {v}" for k, v in sorted(failed.items()))
        raise Failure(
            description=(
                f"{what}: {len(failed)} of {len(run_partition_keys(context))} partitions "
                f"failed; {note}:\n" + lines
            ),
            metadata={"failed_partitions": MetadataValue.json(sorted(failed))},
        )


def _cell_asset_args(variant: Variant, *modules: str) -> dict[str, Any]:
    """What every per-variant crypto x fold asset shares (partitions, ranged runs, tags); the
    code version covers the modules it calls and the variant's definition, so changing a
    variant's gamma under the same name marks its cells out of date in the UI."""
    return {
        "partitions_def": crypto_fold_partitions,
        "backfill_policy": BackfillPolicy.single_run(),
        "op_tags": variant_tags(variant),
        "metadata": _variant_metadata(variant),
        "kinds": {"xgboost"},
        "code_version": module_digest(*modules, extra=_variant_metadata(variant)),
    }


def tag_run_with_variant(context: AssetExecutionContext, variant: Variant) -> None:
    """Add ``cvn/variant`` and ``cvn/loss_function`` to the run (UI backfills and ad-hoc
    materializations run an implicit asset job that carries no job tags), so every run that
    trains a variant is filterable by it in the Runs page."""
    missing = {k: v for k, v in variant_tags(variant).items() if context.run.tags.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


def check_market_inputs(
    artifacts: ArtifactStore, identity: SweepIdentity, cryptos: list[str]
) -> None:
    """The per-crypto inputs loaded must be the ones of this run's settings, else fail naming
    them (they were materialized by a sweep with other settings or data)."""
    stale = []
    for crypto in cryptos:
        want = identity.market_fingerprint(crypto)
        for asset_name in ("model_dataset", "fold_splits"):
            have = artifacts.current_fingerprint(asset_name, crypto)
            if have != want:
                stale.append(f"{asset_name} {crypto} (stored {have}, this run needs {want})")
    if stale:
        raise Failure(
            description="the market assets of these cryptos were materialized with other "
            "settings, data or code than this run's; materialize them first (market_job, or "
            "select candles..fold_splits in the UI with the same config):\n- " + "\n- ".join(stale),
            metadata={"stale_inputs": MetadataValue.json(stale)},
        )


#: the per-crypto inputs of a cell, mapped from its crypto x fold partition
_PER_CRYPTO_INS = {
    "model_dataset": AssetIn(partition_mapping=to_crypto),
    "fold_splits": AssetIn(partition_mapping=to_crypto),
}


def build_model_asset(variant: Variant):
    name = model_asset_name(variant)

    @asset(
        name=name,
        group_name="models",
        ins=_PER_CRYPTO_INS,
        **_cell_asset_args(
            variant, "ablation/training.py", "ablation/focal_loss.py", "ablation/evaluation.py"
        ),
        description=f"XGBoost booster for variant {variant.name} ({variant.loss_function}"
        + (f", gamma={variant.gamma}, alpha={variant.alpha}" if variant.gamma is not None else "")
        + "), trained on the fold's purged train rows, early-stopped on its slice.",
    )
    def _model(
        context: AssetExecutionContext,
        model_dataset,
        fold_splits,
        sweep: SweepSettings,
        progress: SweepProgress,
        artifacts: ArtifactStore,
        market_data: MarketDataResource,
        results_store: ResultsStore,
    ) -> dict[str, Stamped]:
        if warn_if_no_partition(context):
            return {}
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        datasets, plans = by_key(model_dataset, cryptos), by_key(fold_splits, cryptos)
        params = sweep.xgb_params()
        retrain = wants_retrain(context, sweep)
        tag_run_with_variant(context, variant)
        progress.start(context)
        out: dict[str, Stamped] = {}
        failed: dict[str, str] = {}
        for key in keys:
            crypto, fold = split_key(key)
            plan = plans[crypto][fold]
            ds = datasets[crypto]
            fp = identity.model_fingerprint(crypto, fold, variant.name)
            t0 = time.perf_counter()
            _cell_gate(f"{variant.name}_{mapping_key(key)}")  # tests only (CVN_TEST_CELL_GATE)
            try:
                if not retrain and artifacts.has(name, key, fp):
                    model, reused = artifacts.read(name, key, fp), True
                else:
                    res: TrainResult = train_cell(
                        variant,
                        ds,
                        plan,
                        params=params,
                        num_boost_round=sweep.num_boost_round,
                        early_stopping_rounds=sweep.early_stopping_rounds,
                        seed=sweep.seed,
                    )
                    model, reused = res.model, False
                    artifacts.write(name, key, fp, model)  # at once: a crash keeps it
            except Exception as exc:  # isolate the cell; the step fails at the end
                context.log.error(f"{name} {key}: {type(exc).__name__}: {exc}")
                failed[key] = f"{type(exc).__name__}: {exc}"
                continue
            out[key] = Stamped(model, fp)
            context.add_asset_metadata(
                {
                    "best_iteration": int(model.best_iteration),
                    "train_rows": len(plan.train),
                    "early_stopping_rows": len(plan.early_stopping),
                    # the booster's own training time (also for a reused model), and what
                    # this cell cost in this run (training, or loading the stored model)
                    "training_seconds": round(
                        float(model.metadata.get("train_seconds", float("nan"))), 3
                    ),
                    "cell_seconds": round(time.perf_counter() - t0, 3),
                    "reused_stored_model": reused,
                    "fingerprint": fp,
                    "sweep_fingerprint": identity.fingerprint,
                },
                partition_key=key,
            )
            action = "reused " if reused else "trained"
            cell_s = time.perf_counter() - t0
            progress.tick(
                context,
                f"{variant.name:<16} {key:<12} {action} {cell_s:5.2f}s",
                len(keys),
                action.strip(),
            )
        _fail_if_any(context, failed, name, "the others are stored; a re-run trains only these")
        return out

    return _model


def build_calibrated_asset(variant: Variant):
    name = calibrated_asset_name(variant)

    @asset(
        name=name,
        group_name="calibration",
        ins={"model": AssetIn(key=AssetKey(model_asset_name(variant))), **_PER_CRYPTO_INS},
        **_cell_asset_args(
            variant,
            "ablation/calibration.py",
            "ablation/calibrated_model.py",
            "ablation/metrics.py",
        ),
        check_specs=[probabilities_valid_spec(name)],
        description=f"Variant {variant.name}: calibrators (none/temperature/Platt/isotonic) and "
        "BUY threshold fitted on the calibration block only; test block scored once.",
    )
    def _calibrated(
        context: AssetExecutionContext,
        model,
        model_dataset,
        fold_splits,
        sweep: SweepSettings,
        results_store: ResultsStore,
        artifacts: ArtifactStore,
        market_data: MarketDataResource,
    ):
        if warn_if_no_partition(context):
            yield Output({})
            yield probabilities_valid_result(name, {}, empty_selection=True)
            return
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        models = by_key(model, keys)
        datasets, plans = by_key(model_dataset, cryptos), by_key(fold_splits, cryptos)
        retrain = wants_retrain(context, sweep)
        out: dict[str, CalibratedModel] = {}
        stamps: dict[str, str] = {}
        failed: dict[str, str] = {}
        for key in keys:
            crypto, fold = split_key(key)
            model_fp = identity.model_fingerprint(crypto, fold, variant.name)
            have = artifacts.current_fingerprint(model_asset_name(variant), key)
            if have != model_fp:
                failed[key] = (
                    f"its model was trained with other settings (stored {have}, this run "
                    f"needs {model_fp}); materialize {model_asset_name(variant)} {key} first"
                )
                continue
            fp = stamps[key] = identity.calibrated_fingerprint(crypto, fold, variant.name)
            if not retrain and artifacts.has(name, key, fp):
                out[key] = artifacts.read(name, key, fp)
                _calibrated_metadata(context, key, out[key], fp, reused=True)
                continue
            m = models[key]
            train = TrainResult(
                model=m,
                best_iteration=m.best_iteration,
                train_seconds=float(m.metadata.get("train_seconds", float("nan"))),
                n_rounds=-1,
            )
            try:
                cal = calibrate_and_evaluate(
                    train,
                    variant,
                    datasets[crypto],
                    plans[crypto][fold],
                    primary=sweep.primary_calibration,
                    fee_per_side=sweep.fee_per_side,
                )
            except Exception as exc:
                context.log.error(f"{name} {key}: {type(exc).__name__}: {exc}")
                failed[key] = f"{type(exc).__name__}: {exc}"
                continue
            artifacts.write(name, key, fp, cal)
            out[key] = cal
            _calibrated_metadata(context, key, cal, fp, reused=False)
        # each cell's finetune_results row is upserted as soon as it exists (replace, never
        # duplicate); the fan-in asset re-validates the complete grid
        results_store.replace_results(
            sweep.sweep_id, [result_row(*split_key(k), cal) for k, cal in out.items()]
        )
        _fail_if_any(context, failed, name, "nothing of this step was materialized")
        yield Output({k: Stamped(cal, stamps[k]) for k, cal in out.items()})
        yield probabilities_valid_result(name, out)

    return _calibrated


def _calibrated_metadata(
    context: AssetExecutionContext, key: str, cal: CalibratedModel, fp: str, *, reused: bool
) -> None:
    names = (
        "f1_buy",
        "precision_buy",
        "recall_buy",
        "threshold",
        "ece_hold_none",
        "ece_hold_temperature",
        "ece_hold_platt",
        "ece_hold_isotonic",
        "log_loss",
        "expectancy_net",
        "n_test",
        "n_buy",
        "n_trades",
    )
    info = cal.info
    context.add_asset_metadata(
        {
            **round_floats({k: info[k] for k in names}),
            "fitted_temperature": round(float(info["temperature"]), 4),
            "reused_stored_cell": reused,
            "fingerprint": fp,
        },
        partition_key=key,
    )
    # one line per cell in the run's event log, as it finishes (the step's materializations
    # are recorded by Dagster when the step's output is stored, at its end)
    context.log.info(
        f"{key} {'reused' if reused else 'calibrated'}: f1_buy {info['f1_buy']:.4f}, "
        f"ECE_HOLD({cal.primary}) {info[f'ece_hold_{cal.primary}']:.4f}, "
        f"threshold {info['threshold']:.3f}"
    )
