"""Market stage: candles -> features, labels -> model dataset -> purged fold plans (per crypto)."""

import warnings

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    BetaWarning,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)

from cvn_assets.ablation.identity import crypto_data_identity, digest, module_digest
from cvn_assets.assets._util import by_key, check_home_source, run_partition_keys, sweep_identity
from cvn_assets.assets.checks import no_leakage_result, no_leakage_spec
from cvn_assets.market.candles_io import gap_report
from cvn_assets.market.dataset import assemble_dataset, label_times
from cvn_assets.market.features import FEATURE_NAMES, build_features
from cvn_assets.market.folds import FoldPlan, three_way_fold_plan
from cvn_assets.market.labels import triple_barrier_labels
from cvn_assets.partitions import SETTINGS, crypto_partitions
from resources.market_data import MarketDataResource
from resources.model_store import Stamped
from resources.sweep_settings import SweepSettings

#: one run per crypto (also in UI backfills), so each candles materialization carries its own
#: data version (Dagster gives a ranged run one data version for all its partitions)
_COMMON = dict(
    partitions_def=crypto_partitions,
    group_name="market",
    backfill_policy=BackfillPolicy.multi_run(1),
)


def _market_stamps(
    context: AssetExecutionContext, sweep: SweepSettings, market_data: MarketDataResource
) -> dict[str, str]:
    """Market fingerprint per crypto of this step (data, market settings, folds, code)."""
    identity = sweep_identity(sweep, market_data)
    return {c: identity.market_fingerprint(c) for c in run_partition_keys(context)}


@asset(
    **_COMMON,
    code_version=module_digest("market/synthetic_market.py", "market/candles_io.py"),
    kinds={"pandas"},
)
def candles(context: AssetExecutionContext, market_data: MarketDataResource):
    """Hourly OHLCV candles from the market-data resource (synthetic by default, or CSV).

    The data version of a partition is the hash of its data identity (the CSV file's SHA-256,
    or the synthetic generator's arguments), so the UI marks everything downstream of changed
    candles as out of date. Refused before any work when the home was made on another data
    source (:mod:`resources.home_source`).
    """
    check_home_source(context, market_data)
    keys = run_partition_keys(context)
    data = market_data.data_identity(keys)
    out: dict[str, Stamped] = {}
    versions: dict[str, str] = {}
    for symbol in keys:
        versions[symbol] = digest(crypto_data_identity(data, symbol))
        df = market_data.load_candles(symbol)
        gaps = gap_report(df)
        context.add_asset_metadata(
            {
                "data_hash": versions[symbol],
                "source": market_data.data_source,
                "rows": len(df),
                "first": str(df.index[0]),
                "last": str(df.index[-1]),
                "gaps": int(gaps["n_gaps"]),
                "missing_bars": int(gaps["missing_bars"]),
                "longest_gap_hours": float(gaps["longest_gap_hours"]),
                "zero_volume_bars": int(gaps["n_zero_volume"]),
                "last_close": float(df["close"].iloc[-1]),
            },
            partition_key=symbol,
        )
        out[symbol] = Stamped(df, versions[symbol])
    if len(keys) == 1:
        with warnings.catch_warnings():  # data_version is flagged beta in 1.13
            warnings.simplefilter("ignore", BetaWarning)
            return Output(out, data_version=DataVersion(versions[keys[0]]))
    return Output(out)


@asset(**_COMMON, kinds={"pandas"}, code_version=module_digest("market/features.py"))
def features(
    context: AssetExecutionContext,
    candles,
    sweep: SweepSettings,
    market_data: MarketDataResource,
) -> dict[str, Stamped]:
    """Causal OHLCV features (no row uses information after its own bar's close)."""
    keys = run_partition_keys(context)
    stamps = _market_stamps(context, sweep, market_data)
    out: dict[str, Stamped] = {}
    for symbol, c in by_key(candles, keys).items():
        f = build_features(c)
        warm = int(f.isna().any(axis=1).sum())
        context.add_asset_metadata(
            {"rows": len(f), "n_features": f.shape[1], "warm_up_rows_with_nan": warm},
            partition_key=symbol,
        )
        out[symbol] = Stamped(f, stamps[symbol])
    return out


@asset(
    **_COMMON, kinds={"pandas"}, code_version=module_digest("market/labels.py", "market/trading.py")
)
def labels(
    context: AssetExecutionContext,
    candles,
    sweep: SweepSettings,
    market_data: MarketDataResource,
) -> dict[str, Stamped]:
    """Triple-barrier BUY labels for the configured strategy (default SL0.5_TP1_H4)."""
    strat = sweep.label
    keys = run_partition_keys(context)
    stamps = _market_stamps(context, sweep, market_data)
    out: dict[str, Stamped] = {}
    for symbol, c in by_key(candles, keys).items():
        lab = triple_barrier_labels(
            c, take_profit=strat.take_profit, stop_loss=strat.stop_loss, horizon=strat.horizon
        )
        counts = lab["barrier"].value_counts()
        context.add_asset_metadata(
            {
                "label_strategy": sweep.label_strategy,
                "rows": len(lab),
                "buy_rate": round(float(lab["label"].mean()), 4),
                "take_profit_hits": int(counts.get("tp", 0)),
                "stop_loss_hits": int(counts.get("sl", 0)),
                "time_outs": int(counts.get("time", 0)),
                "same_candle_ties": int(lab["tie"].sum()),
            },
            partition_key=symbol,
        )
        out[symbol] = Stamped(lab, stamps[symbol])
    return out


@asset(**_COMMON, kinds={"pandas"}, code_version=module_digest("market/dataset.py"))
def model_dataset(
    context: AssetExecutionContext,
    features,
    labels,
    sweep: SweepSettings,
    market_data: MarketDataResource,
) -> dict[str, Stamped]:
    """Features joined to labels; warm-up rows dropped; what every model of a crypto sees."""
    keys = run_partition_keys(context)
    feats, labs = by_key(features, keys), by_key(labels, keys)
    stamps = _market_stamps(context, sweep, market_data)
    out: dict[str, Stamped] = {}
    for symbol in keys:
        ds = assemble_dataset(feats[symbol], labs[symbol])
        context.add_asset_metadata(
            {
                "rows": len(ds),
                "n_features": len(FEATURE_NAMES),
                "buy_rate": round(float(ds["label"].mean()), 4),
                "first": str(ds.index[0]),
                "last": str(ds.index[-1]),
            },
            partition_key=symbol,
        )
        out[symbol] = Stamped(ds, stamps[symbol])
    return out


@asset(
    **_COMMON,
    check_specs=[no_leakage_spec("fold_splits")],
    code_version=module_digest("market/folds.py", extra={"n_folds": SETTINGS.n_folds}),
)
def fold_splits(
    context: AssetExecutionContext,
    model_dataset,
    sweep: SweepSettings,
    market_data: MarketDataResource,
):
    """Purged + embargoed train / early-stopping / calibration / test plan per fold (AFML 7)."""
    keys = run_partition_keys(context)
    datasets = by_key(model_dataset, keys)
    stamps = _market_stamps(context, sweep, market_data)
    out: dict[str, list[FoldPlan]] = {}
    for symbol, ds in datasets.items():
        t0, t1 = label_times(ds)
        plans = three_way_fold_plan(
            t0,
            t1,
            n_splits=SETTINGS.n_folds,
            embargo_pct=sweep.embargo_pct,
            early_stopping_frac=sweep.early_stopping_frac,
            labels=ds["label"].to_numpy(),  # a block without BUY labels is an error, named
        )
        y = ds["label"].to_numpy()
        table = pd.DataFrame(
            [
                {
                    "fold": p.fold,
                    "train": len(p.train),
                    "early_stop": len(p.early_stopping),
                    "calibration": len(p.calibration),
                    "test": len(p.test),
                    "test_buy_rate": round(float(np.mean(y[p.test])), 4),
                    "dropped": len(ds)
                    - len(p.train)
                    - len(p.early_stopping)
                    - len(p.calibration)
                    - len(p.test),
                }
                for p in plans
            ]
        )
        context.add_asset_metadata(
            {
                "rows": len(ds),
                "n_folds": len(plans),
                "embargo_pct": sweep.embargo_pct,
                "plan": MetadataValue.md(table.to_markdown(index=False)),
                "market_fingerprint": stamps[symbol],
            },
            partition_key=symbol,
        )
        out[symbol] = plans
    yield Output({k: Stamped(v, stamps[k]) for k, v in out.items()})
    yield no_leakage_result("fold_splits", datasets, out)


MARKET_ASSET_KEYS = [
    AssetKey(n) for n in ("candles", "features", "labels", "model_dataset", "fold_splits")
]
