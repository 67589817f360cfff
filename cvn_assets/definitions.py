"""The one ``Definitions`` of cvn-focal: assets, checks, jobs, resources, executor.

Configuration comes from environment variables (resolved by the resources at use, see
:func:`build_resources`) so the same code runs on the
embedded default (synthetic market, SQLite) and in production (CSV candles, PostgreSQL):

- ``CVN_MARKET_SOURCE`` (synthetic | csv), ``CVN_CSV_DIR``, ``CVN_SYMBOL_MAP`` (JSON);
- ``CVN_DATABASE_URL`` results store (default: SQLite under ``$DAGSTER_HOME``);
- ``CVN_STORE_DIR`` model/artifact store (default: ``$DAGSTER_HOME/storage/cvn``);
- ``CVN_UNIVERSE``, ``CVN_N_FOLDS``, ``CVN_VARIANTS`` shape partitions and the asset factory.
"""

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from cvn_assets.assets import celery_cells, guard, guard_state, market, results, training
from cvn_assets.assets.paper_trades import LIVE_TAG
from cvn_assets.execution import executors
from cvn_assets.partitions import SETTINGS
from resources.alerts import AlertSink
from resources.config_store import ConfigStore
from resources.guard_clock import GuardClock
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.model_store import ArtifactStore, CvnIOManager
from resources.results_store import ResultsStore
from resources.rollbacks import RollbackLog
from resources.sweep_settings import SweepProgress, SweepSettings
from sensors.automation import monitoring_follows_paper
from sensors.guard_sensors import GUARD_SENSORS, build_model_drift_sensor
from sensors.jobs import GUARD_JOBS
from sensors.live import LIVE_JOB, build_live_sensor

# in process: two assets per variant; CVN_EXECUTOR=celery: one graph-backed asset per variant
# (both keys), one step per cell
if executors.executor_mode() == "celery":
    model_assets = [celery_cells.build_celery_cells(v) for v in SETTINGS.variants]
    calibrated_assets = []
else:
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

champion_job = define_asset_job(
    "champion_job",
    selection=AssetSelection.assets(guard.champion_models),
    description="Champion per crypto: retrain the chosen variant on the whole history, "
    "register and promote it (canary first; the kill switch CVN_LOSS_FUNCTION is honoured).",
)

live_job = define_asset_job(
    LIVE_JOB,
    selection=AssetSelection.assets(
        guard.paper_trades, guard.monitoring_metrics, guard_state.guard_state
    ),
    tags={LIVE_TAG: "true"},
    executor_def=in_process_executor,
    description="The live loop's run (live_candles sensor): the hours closed since the journal's "
    "last one, journaled from the stored state, then their days' monitoring metrics. In process: "
    "one hour costs the same after 7 days or 2 years of operation (bench/bench_live_hour.py).",
)

paper_job = define_asset_job(
    "paper_job",
    selection=AssetSelection.assets(guard.paper_trades, guard.monitoring_metrics),
    description="Paper trading per crypto x day (the champion live at each hour, journaled), "
    "then the monitoring metrics of those days (table, metadata, .prom files).",
)


def build_resources() -> dict:
    """The resources, constructed with no environment-derived values.

    Dagster replaces every constructor value of a resource (``EnvVar`` included) as soon as a
    run supplies any run config for it (measured on 1.13.27: ``{"market_data": {"config":
    {"hours": 3000}}}`` silently turned a CSV source back into the synthetic default). So the
    resources resolve ``CVN_MARKET_SOURCE``, ``CVN_CSV_DIR``, ``CVN_SYMBOL_MAP``,
    ``CVN_UNIVERSE``, ``CVN_DATABASE_URL`` and ``CVN_STORE_DIR`` themselves, at use, for every
    field the run config leaves unset: a partial run config never drops the environment.
    """
    return {
        "market_data": MarketDataResource(),
        "sweep": SweepSettings(),
        "progress": SweepProgress(),
        "results_store": ResultsStore(),
        "artifacts": ArtifactStore(),
        "io_manager": CvnIOManager(),
        "config_store": ConfigStore(),
        "model_registry": ModelRegistry(),
        "rollback_log": RollbackLog(),
        "alert_sink": AlertSink(),
        "guard_clock": GuardClock(),
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
        guard.champion_models,
        guard.paper_trades,
        guard.monitoring_metrics,
        guard_state.guard_state,
    ],
    asset_checks=[
        results.finetune_results_complete,
        results.verdicts_consistent,
    ],
    jobs=[
        market_job,
        *variant_jobs,
        results_job,
        champion_job,
        paper_job,
        live_job,
        *GUARD_JOBS,
    ],  # fmt: skip
    sensors=[
        *GUARD_SENSORS,
        build_model_drift_sensor(champion_job),
        build_live_sensor(live_job),
        monitoring_follows_paper,
    ],
    resources=build_resources(),
    executor=executors.sweep_executor(),
)
