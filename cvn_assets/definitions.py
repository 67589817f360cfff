"""The one ``Definitions`` of cvn-focal: assets, checks, jobs, resources, executor.

Configuration comes from environment variables (``EnvVar``) so the same code runs on the
embedded default (synthetic market, SQLite) and in production (CSV candles, PostgreSQL):

- ``CVN_MARKET_SOURCE`` (synthetic | csv), ``CVN_CSV_DIR``, ``CVN_SYMBOL_MAP`` (JSON);
- ``CVN_DATABASE_URL`` results store (default: SQLite under ``$DAGSTER_HOME``);
- ``CVN_STORE_DIR`` model/artifact store (default: ``$DAGSTER_HOME/storage/cvn``);
- ``CVN_UNIVERSE``, ``CVN_N_FOLDS``, ``CVN_VARIANTS`` shape partitions and the asset factory.
"""

import os

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    define_asset_job,
    in_process_executor,
)

from cvn_assets.assets import market, results, training
from cvn_assets.partitions import SETTINGS
from cvn_assets.settings import parse_symbol_map
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore, CvnIOManager
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepProgress, SweepSettings


def _env_or(name: str, default: str | None):
    """``EnvVar(name)`` when set (resolved at run time, secrets never stored), else default."""
    return EnvVar(name) if os.environ.get(name) else default


model_assets = [training.build_model_asset(v) for v in SETTINGS.variants]
calibrated_assets = [training.build_calibrated_asset(v) for v in SETTINGS.variants]

market_job = define_asset_job(
    "market_job",
    selection=AssetSelection.assets(*market.MARKET_ASSET_KEYS),
    description="Candles, features, labels, dataset and fold plans for the selected cryptos.",
)

variant_jobs = [
    define_asset_job(
        f"train_{v.name}_job",
        selection=AssetSelection.assets(
            training.model_asset_name(v), training.calibrated_asset_name(v)
        ),
        tags=training.variant_tags(v),
        description=f"Train and calibrate variant {v.name} on the selected crypto x fold cells.",
    )
    for v in SETTINGS.variants
]

results_job = define_asset_job(
    "results_job",
    selection=AssetSelection.assets("finetune_results", "gate_verdicts"),
    description="Fan-in of all cells into finetune_results, then the statistical gates.",
)


def build_resources() -> dict:
    store_dir = _env_or("CVN_STORE_DIR", "")
    return {
        "market_data": MarketDataResource(
            source=_env_or("CVN_MARKET_SOURCE", "synthetic"),
            csv_dir=_env_or("CVN_CSV_DIR", None),
            symbol_map=parse_symbol_map(os.environ.get("CVN_SYMBOL_MAP")),
            symbols=list(SETTINGS.universe),
        ),
        "sweep": SweepSettings(),
        "progress": SweepProgress(),
        "results_store": ResultsStore(database_url=_env_or("CVN_DATABASE_URL", "")),
        "artifacts": ArtifactStore(base_dir=store_dir),
        "io_manager": CvnIOManager(base_dir=store_dir),
    }


defs = Definitions(
    assets=[
        market.candles,
        market.features,
        market.labels,
        market.model_dataset,
        market.fold_splits,
        *model_assets,
        *calibrated_assets,
        results.finetune_results,
        results.gate_verdicts,
    ],
    asset_checks=[
        results.finetune_results_complete,
        results.lock_decision,
    ],
    jobs=[market_job, *variant_jobs, results_job],
    resources=build_resources(),
    executor=in_process_executor,
)
