"""Where the sweep's cells run: in process (default) or on Celery workers (``CVN_EXECUTOR``).

A definition-time switch, read when the definitions load (launcher and every worker must see the
same value, like ``CVN_UNIVERSE``):

- ``CVN_EXECUTOR`` unset or ``in_process``: today's path. One model asset and one calibrated
  asset per variant (:mod:`cvn_assets.assets.training`), run by the one command as ranged single
  runs executed in process (about 0.03 s of orchestration per cell).
- ``CVN_EXECUTOR=celery``: the same asset keys, partitions, tags and stored values, but per
  variant one *graph-backed* multi-asset whose op ``plan_cells_<variant>`` yields one
  ``DynamicOutput`` per crypto x fold partition of the run; ``cell_<variant>`` (one step per
  cell, so one Celery task per cell) trains or reuses the booster, calibrates it, stores both
  under their fingerprints and upserts the cell's ``finetune_results`` row; ``collect_<variant>``
  moves the partitions' ``CURRENT`` pointers (the materializations) and runs the
  ``probabilities_valid`` check. A ranged single run of the ordinary assets would be one step
  per asset, hence one Celery task for all cells, which does not spread out.
  The executor is ``dagster-celery``'s, with broker and backend from ``CVN_CELERY_BROKER`` and
  ``CVN_CELERY_BACKEND`` (``EnvVar``), plus a worker watchdog (:class:`WatchedCeleryExecutor`).

Outputs travel between workers only through the IO manager (``CvnIOManager``: the op outputs
of the fan-out are small JSON values keyed by ``get_identifier()``), so ``CVN_STORE_DIR`` must
be shared by every host, and the Dagster instance and results store must be PostgreSQL
(:func:`celery_refusal` says what is missing; the one command refuses before any work).
"""

import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    Failure,
    In,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    executor,
    graph_multi_asset,
    in_process_executor,
    multiple_process_executor_requirements,
    op,
)

from cvn_assets.ablation.variants import Variant
from cvn_assets.settings import SettingsError

EXECUTOR_ENV = "CVN_EXECUTOR"
#: tests only: a directory through which a test holds cells (see :func:`_cell_gate`)
CELL_GATE_ENV = "CVN_TEST_CELL_GATE"
BROKER_ENV = "CVN_CELERY_BROKER"
BACKEND_ENV = "CVN_CELERY_BACKEND"
MODES = ("in_process", "celery")

#: Celery settings of the launcher and of every worker (``worker_yaml`` writes them for
#: ``dagster-celery worker start -y``): a task is acknowledged when it ends, so a worker holds
#: at most the one message it runs (``-c 1``, prefetch 1) and a killed worker loses no queued
#: cell; ``STARTED`` with the worker's name is recorded, so the watchdog knows who runs what.
CELERY_SETTINGS: dict[str, Any] = {
    "task_track_started": True,
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
#: a log line of every finished cell (the one command reads them from the event log)
CELL_LOG_PREFIX = "cvn-cell "


def executor_mode(env: Mapping[str, str] | None = None) -> str:
    """``in_process`` (default) or ``celery``; anything else is a :class:`SettingsError`."""
    env = os.environ if env is None else env
    mode = (env.get(EXECUTOR_ENV) or "in_process").strip().lower().replace("-", "_")
    if mode not in MODES:
        raise SettingsError(f"{EXECUTOR_ENV}: {env.get(EXECUTOR_ENV)!r} is not one of {MODES}")
    return mode


# --------------------------------------------------------------------------------------------
# the executor: dagster-celery's, with a watchdog for workers that die mid-step
# --------------------------------------------------------------------------------------------


class WorkerLost(RuntimeError):
    """The Celery worker running a step stopped answering (killed, host down)."""


class _Watchdog:
    """Which workers answer a ping; a step ``STARTED`` on a worker that missed ``misses``
    pings in a row is lost (dagster-celery would otherwise wait for its result forever)."""

    def __init__(self, app: Any, interval: float = 3.0, timeout: float = 2.0, misses: int = 2):
        self.app, self.interval, self.timeout, self.misses = app, interval, timeout, misses
        self._last = 0.0
        self._missed: dict[str, int] = {}

    def _poll(self, hosts: set[str]) -> None:
        now = time.monotonic()
        if now - self._last < self.interval or not hosts:
            return
        self._last = now
        try:
            replies = self.app.control.ping(
                destination=sorted(hosts), timeout=self.timeout, limit=len(hosts)
            )
        except Exception:  # the broker itself is unreachable: no verdict on the workers
            return
        alive = {name for reply in replies or [] for name in reply}
        for host in hosts:
            self._missed[host] = 0 if host in alive else self._missed.get(host, 0) + 1

    def lost_host(self, result: Any, running: Sequence[Any]) -> str | None:
        info = _started_on(result)
        if info is None:
            return None
        self._poll({h for h in (_started_on(r) for r in running) if h})
        return info if self._missed.get(info, 0) >= self.misses else None


def _started_on(result: Any) -> str | None:
    try:
        if result.state != "STARTED":
            return None
        info = result.info
    except Exception:
        return None
    return info.get("hostname") if isinstance(info, dict) else None


class _WatchedResult:
    """An ``AsyncResult`` that turns ready (raising on ``get``) when its worker is lost."""

    def __init__(self, result: Any, watchdog: _Watchdog, step_key: str, running: list):
        self._result, self._watchdog, self._step_key = result, watchdog, step_key
        self._running = running
        self._lost: str | None = None
        running.append(result)

    def ready(self) -> bool:
        if self._result.ready():
            return True
        self._lost = self._watchdog.lost_host(self._result, self._running)
        return self._lost is not None

    def get(self) -> Any:
        if self._result in self._running:
            self._running.remove(self._result)
        if self._lost is not None and not self._result.ready():
            # Redis redelivers the lost worker's unacknowledged message after its visibility
            # timeout. The revoke reaches only the workers alive now (a worker started later,
            # or restarted, never hears of it); what drops the redelivery on any worker is
            # the run check before a step executes (cvn_assets.execution.celery_worker,
            # run_not_running): by then this run has failed.
            self._result.revoke()
            raise WorkerLost(
                f"Celery worker {self._lost} stopped answering while it ran step "
                f"{self._step_key!r} (killed or its host is down); the step failed. Stored cells "
                "are kept: re-running the sweep finishes the missing ones."
            )
        return self._result.get()

    def revoke(self) -> None:
        self._result.revoke()


def _celery_executor_class() -> type:
    from dagster_celery.executor import CeleryExecutor

    class WatchedCeleryExecutor(CeleryExecutor):
        """``dagster-celery``'s executor (same tasks, queues and workers) whose results fail a
        step whose worker died instead of waiting for it forever."""

        def execute(self, plan_context: Any, execution_plan: Any) -> Any:
            from dagster_celery.core_execution_loop import core_celery_execution_loop
            from dagster_celery.executor import _submit_task
            from dagster_celery.make_app import make_app

            watchdog = _Watchdog(make_app(self.app_args()))
            running: list = []

            def submit(app, context, step, queue, priority, known_state):
                import warnings

                with warnings.catch_warnings():  # dagster-celery re-registers its one task
                    warnings.filterwarnings("ignore", message="Task name 'execute_plan'")
                    result = _submit_task(app, context, step, queue, priority, known_state)
                return _WatchedResult(result, watchdog, step.key, running)

            return core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=submit
            )

    return WatchedCeleryExecutor


def _celery_executor_def() -> ExecutorDefinition:
    from dagster_celery.executor import CELERY_CONFIG

    @executor(
        name="celery",
        config_schema=CELERY_CONFIG,
        requirements=multiple_process_executor_requirements(),
    )
    def cvn_celery_executor(init_context):
        from dagster._core.execution.retries import RetryMode

        cfg = init_context.executor_config
        return _celery_executor_class()(
            broker=cfg.get("broker"),
            backend=cfg.get("backend"),
            config_source=cfg.get("config_source"),
            include=cfg.get("include"),
            retries=RetryMode.from_config(cfg["retries"]),
        )

    return cvn_celery_executor.configured(
        {
            "broker": {"env": BROKER_ENV},
            "backend": {"env": BACKEND_ENV},
            "config_source": dict(CELERY_SETTINGS),
        },
        name="cvn_celery",
    )


def sweep_executor() -> ExecutorDefinition:
    """The executor of the ``Definitions``: in process, or Celery (``CVN_EXECUTOR``)."""
    if executor_mode() == "celery":
        return _celery_executor_def()
    return in_process_executor


def worker_yaml(env: Mapping[str, str] | None = None) -> str:
    """The ``-y`` file of ``dagster-celery worker start``: broker, backend and the settings
    every worker must share with the launcher. Broker and backend are written as Dagster
    ``{env: NAME}`` references (dagster-celery's config fields are ``StringSource``), which
    each worker resolves from its own environment when it starts: the URLs, and the broker's
    password in them, never land in the file. Raises ``SettingsError`` naming the variable
    when ``env`` lacks either."""
    import yaml

    env = os.environ if env is None else env
    missing = [n for n in (BROKER_ENV, BACKEND_ENV) if not env.get(n)]
    if missing:
        raise SettingsError(f"{', '.join(missing)}: required for a Celery worker's config")
    cfg = {
        "broker": {"env": BROKER_ENV},
        "backend": {"env": BACKEND_ENV},
        "config_source": CELERY_SETTINGS,
    }
    return yaml.safe_dump({"execution": {"config": cfg}}, sort_keys=True)


# --------------------------------------------------------------------------------------------
# the cell assets
# --------------------------------------------------------------------------------------------


def cell_assets(variants: Sequence[Variant]) -> tuple[list, list]:
    """``(model assets, calibrated assets)`` for the ``Definitions``: in process, two assets per
    variant; on Celery, one graph-backed multi-asset per variant (both keys) and no second
    list."""
    from cvn_assets.assets import training

    if executor_mode() == "celery":
        return [build_celery_cells(v) for v in variants], []
    return (
        [training.build_model_asset(v) for v in variants],
        [training.build_calibrated_asset(v) for v in variants],
    )


def mapping_key(partition_key: str) -> str:
    """``BTCUSDC|f3`` -> ``BTCUSDC_f3`` (dynamic mapping keys are identifiers)."""
    return str(partition_key).replace("|", "_")


def build_celery_cells(variant: Variant) -> AssetsDefinition:
    """``model_<v>`` + ``calibrated_<v>`` as one graph: plan -> one step per cell -> collect."""
    from cvn_assets.assets._util import (
        prepare_sweep,
        run_partition_keys,
        wants_retrain,
        warn_if_no_partition,
    )
    from cvn_assets.assets.checks import probabilities_valid_result, probabilities_valid_spec
    from cvn_assets.assets.training import (
        _cell_asset_args,
        calibrated_asset_name,
        check_market_inputs,
        model_asset_name,
        tag_run_with_variant,
        variant_tags,
    )
    from cvn_assets.partitions import split_key, to_crypto
    from resources.market_data import MarketDataResource
    from resources.model_store import ArtifactStore, Stored
    from resources.results_store import ResultsStore
    from resources.sweep_settings import SweepSettings

    model_name, cal_name = model_asset_name(variant), calibrated_asset_name(variant)
    tags = variant_tags(variant)
    args = _cell_asset_args(
        variant,
        "ablation/training.py",
        "ablation/focal_loss.py",
        "ablation/evaluation.py",
        "ablation/calibration.py",
        "ablation/calibrated_model.py",
        "ablation/metrics.py",
    )

    @op(
        name=f"plan_cells_{variant.name}",
        ins={"model_dataset": In(Nothing), "fold_splits": In(Nothing)},
        out=DynamicOut(dict),
        tags=tags,
    )
    def plan_cells(
        context: OpExecutionContext,
        sweep: SweepSettings,
        market_data: MarketDataResource,
        results_store: ResultsStore,
        artifacts: ArtifactStore,
    ):
        if warn_if_no_partition(context):
            return
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        tag_run_with_variant(context, variant)
        retrain = wants_retrain(context, sweep)
        for key in keys:
            crypto, fold = split_key(key)
            spec = {
                "key": key,
                "crypto": crypto,
                "fold": fold,
                "market_fp": identity.market_fingerprint(crypto),
                "model_fp": identity.model_fingerprint(crypto, fold, variant.name),
                "calibrated_fp": identity.calibrated_fingerprint(crypto, fold, variant.name),
                "sweep_fp": identity.fingerprint,
                "retrain": retrain,
            }
            yield DynamicOutput(spec, mapping_key=mapping_key(key))

    @op(name=f"cell_{variant.name}", out=Out(dict), tags=tags)
    def cell(
        context: OpExecutionContext,
        spec: dict,
        sweep: SweepSettings,
        artifacts: ArtifactStore,
        results_store: ResultsStore,
    ) -> dict:
        return run_cell(context, variant, spec, sweep, artifacts, results_store)

    @op(
        name=f"collect_{variant.name}",
        out={
            "model": Out(is_required=False),
            "calibrated": Out(is_required=False),
            "check": Out(is_required=False),
        },
        tags=tags,
    )
    def collect(context: OpExecutionContext, cells: list, artifacts: ArtifactStore):
        keys = run_partition_keys(context)
        done = {c["key"]: c for c in cells}
        missing = sorted(set(keys) - set(done))
        if missing:
            raise Failure(description=f"{variant.name}: no cell result for {missing}")
        # per-partition metadata of a graph-backed asset: through the step's context (the op
        # context of 1.13 has no add_asset_metadata)
        step = context.get_step_execution_context()
        for key in keys:
            c = done[key]
            step.add_asset_metadata(c["model_metadata"], asset_key=model_name, partition_key=key)
            step.add_asset_metadata(c["calibrated_metadata"], asset_key=cal_name, partition_key=key)
        yield Output({k: Stored(done[k]["model_fp"]) for k in keys}, "model")
        yield Output({k: Stored(done[k]["calibrated_fp"]) for k in keys}, "calibrated")
        cals = {
            k: artifacts.read(cal_name, k, done[k]["calibrated_fp"], with_model=False) for k in keys
        }
        yield probabilities_valid_result(cal_name, cals, empty_selection=not keys)

    check_spec = probabilities_valid_spec(cal_name)

    @graph_multi_asset(
        name=f"cells_{variant.name}",
        outs={
            "model": AssetOut(
                key=AssetKey(model_name),
                group_name="models",
                metadata=args["metadata"],
                code_version=args["code_version"],
                kinds=args["kinds"],
                description=f"XGBoost booster for variant {variant.name} (one Celery step per "
                "cell: trained on the fold's purged train rows, early-stopped on its slice).",
            ),
            "calibrated": AssetOut(
                key=AssetKey(cal_name),
                group_name="calibration",
                metadata=args["metadata"],
                code_version=args["code_version"],
                kinds=args["kinds"],
                description=f"Variant {variant.name}: calibrators and BUY threshold fitted on "
                "the calibration block only; test block scored once (same step as its model).",
            ),
        },
        ins={
            "model_dataset": AssetIn(partition_mapping=to_crypto, dagster_type=Nothing),
            "fold_splits": AssetIn(partition_mapping=to_crypto, dagster_type=Nothing),
        },
        partitions_def=args["partitions_def"],
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[check_spec],
    )
    def cells(model_dataset, fold_splits):
        done = plan_cells(model_dataset=model_dataset, fold_splits=fold_splits).map(cell)
        model, calibrated, check = collect(done.collect())
        return {"model": model, "calibrated": calibrated, check_spec.get_python_identifier(): check}

    return cells


def run_not_running(run: Any) -> str | None:
    """Why a step of ``run`` (a ``DagsterRun`` or None) must not execute now, or None when it
    may: the run no longer exists, has finished (``SUCCESS``, ``FAILURE``, ``CANCELED``) or is
    being canceled (``CANCELING``) -- Dagster's own step worker rule (``dagster api
    execute_step`` skips a step of such a run). A Celery message for a cell of such a run is
    a leftover: redelivered after the broker's visibility timeout by a worker that died, or
    queued when the run was canceled."""
    from dagster import DagsterRunStatus

    if run is None:
        return "its run no longer exists"
    if run.is_finished or run.status == DagsterRunStatus.CANCELING:
        return f"its run {run.run_id} is {run.status.value}, no longer running"
    return None


def _cell_gate(label: str) -> None:
    """Tests only (``CVN_TEST_CELL_GATE=<dir>``, unset in production: no effect): record that
    this process reached the cell ``label`` (``<dir>/arrived/<pid>-<k>-<label>``, ``k`` = its
    k-th cell) and, while ``<dir>/hold-<pid>`` (else ``<dir>/hold``, for every process)
    exists and holds a number below ``k``, wait. A test thus holds a worker (or the in-process
    sweep) at a known cell until it has acted (killed it, ...), whatever the machine's
    speed."""
    gate = os.environ.get(CELL_GATE_ENV, "").strip()
    if not gate:
        return
    from pathlib import Path

    pid = os.getpid()
    arrived = Path(gate) / "arrived"
    arrived.mkdir(parents=True, exist_ok=True)
    k = len(list(arrived.glob(f"{pid}-*"))) + 1
    (arrived / f"{pid}-{k}-{label}").touch()
    hold = Path(gate) / f"hold-{pid}"
    hold = hold if hold.exists() else Path(gate) / "hold"
    while True:
        try:
            if k <= int(hold.read_text().strip() or 0):
                return
        except (FileNotFoundError, ValueError):
            return
        time.sleep(0.1)


def run_cell(
    context: Any,
    variant: Variant,
    spec: Mapping[str, Any],
    sweep: Any,
    artifacts: Any,
    results_store: Any,
) -> dict:
    """One crypto x fold cell, wherever it runs: train (or reuse the stored booster with this
    fingerprint), calibrate (or reuse), store both, upsert the result row. Returns the cell's
    metadata and where it ran (JSON: it travels through the IO manager).

    Before any work: when the run this step belongs to is no longer running
    (:func:`run_not_running`; a redelivered message on a worker started with dagster-celery's
    own app, which lacks the worker-level check of :mod:`cvn_assets.execution.celery_worker`), the
    step fails without training or writing anything."""
    why = run_not_running(context.instance.get_run_by_id(context.run_id))
    if why is not None:
        raise Failure(description=f"cell {spec['key']} of {variant.name} not executed: {why}")
    _cell_gate(f"{variant.name}_{mapping_key(str(spec['key']))}")
    from cvn_assets.ablation.evaluation import calibrate_and_evaluate, result_row, train_cell
    from cvn_assets.ablation.training import TrainResult
    from cvn_assets.assets._util import round_floats
    from cvn_assets.assets.training import calibrated_asset_name, model_asset_name

    model_name, cal_name = model_asset_name(variant), calibrated_asset_name(variant)
    key, crypto, fold = spec["key"], spec["crypto"], int(spec["fold"])
    retrain = bool(spec["retrain"])
    t0 = time.perf_counter()
    dataset = artifacts.read("model_dataset", crypto, spec["market_fp"])
    plan = {p.fold: p for p in artifacts.read("fold_splits", crypto, spec["market_fp"])}[fold]
    if not retrain and artifacts.has(model_name, key, spec["model_fp"]):
        model, action = artifacts.read(model_name, key, spec["model_fp"]), "reused"
    else:
        res = train_cell(
            variant,
            dataset,
            plan,
            params=sweep.xgb_params(),
            num_boost_round=sweep.num_boost_round,
            early_stopping_rounds=sweep.early_stopping_rounds,
            seed=sweep.seed,
        )
        artifacts.write(model_name, key, spec["model_fp"], res.model)
        # calibrate the stored booster, as the in-process path does (it loads it)
        model, action = artifacts.read(model_name, key, spec["model_fp"]), "trained"
    model_s = time.perf_counter() - t0
    cal_reused = not retrain and artifacts.has(cal_name, key, spec["calibrated_fp"])
    if cal_reused:
        cal = artifacts.read(cal_name, key, spec["calibrated_fp"])
    else:
        train = TrainResult(
            model=model,
            best_iteration=model.best_iteration,
            train_seconds=float(model.metadata.get("train_seconds", float("nan"))),
            n_rounds=-1,
        )
        cal = calibrate_and_evaluate(
            train,
            variant,
            dataset,
            plan,
            primary=sweep.primary_calibration,
            fee_per_side=sweep.fee_per_side,
        )
        artifacts.write(cal_name, key, spec["calibrated_fp"], cal)
    results_store.replace_results(sweep.sweep_id, [result_row(crypto, fold, cal)])
    seconds = time.perf_counter() - t0
    host, pid = socket.gethostname(), os.getpid()
    info = cal.info
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
    where = {"host": host, "pid": pid}
    context.log.info(
        f"{CELL_LOG_PREFIX}{variant.name} {key} {action} {seconds:.2f}s host={host} pid={pid} "
        f"f1_buy={info['f1_buy']:.4f}"
    )
    return {
        "key": key,
        "model_fp": spec["model_fp"],
        "calibrated_fp": spec["calibrated_fp"],
        "action": action,
        "where": where,
        "model_metadata": {
            "best_iteration": int(model.best_iteration),
            "train_rows": len(plan.train),
            "early_stopping_rows": len(plan.early_stopping),
            "training_seconds": round(float(model.metadata.get("train_seconds", float("nan"))), 3),
            "cell_seconds": round(model_s, 3),
            "reused_stored_model": action == "reused",
            "fingerprint": spec["model_fp"],
            "sweep_fingerprint": spec["sweep_fp"],
            "worker": f"{host} pid {pid}",
        },
        "calibrated_metadata": {
            **{k: _plain(v) for k, v in round_floats({k: info[k] for k in names}).items()},
            "fitted_temperature": round(float(info["temperature"]), 4),
            "reused_stored_cell": cal_reused,
            "fingerprint": spec["calibrated_fp"],
            "worker": f"{host} pid {pid}",
        },
    }


def _plain(value: Any) -> Any:
    """numpy scalars -> Python (the cell's summary is JSON)."""
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------
# the one command on Celery: refusal before any work, launch through the instance, progress
# --------------------------------------------------------------------------------------------


def celery_refusal(instance: Any | None, env: Mapping[str, str] | None = None) -> str | None:
    """Why a Celery sweep cannot run with this environment and instance, naming what to set;
    None when it can. Steps run on other hosts: they read and write the store, the results
    store and the instance's run/event storage, so none may be local to the launcher.
    ``instance`` None: ``$DAGSTER_HOME`` has no ``dagster.yaml`` (not opened, so that
    Dagster does not create a SQLite instance there)."""
    env = os.environ if env is None else env
    problems = []
    for name, what in ((BROKER_ENV, "broker"), (BACKEND_ENV, "result backend")):
        if not env.get(name, "").strip():
            problems.append(f"{name} is not set (the Celery {what} URL, e.g. redis://HOST:6379/0)")
    if not env.get("CVN_STORE_DIR", "").strip():
        problems.append(
            "CVN_STORE_DIR is not set: the default store is under each host's own DAGSTER_HOME; "
            "set it to a directory every worker host mounts at the same path (NFS, ...)"
        )
    url = env.get("CVN_DATABASE_URL", "").strip()
    if not url or url.startswith("sqlite"):
        problems.append(
            "CVN_DATABASE_URL is "
            + ("a SQLite file" if url else "not set (default: SQLite under DAGSTER_HOME)")
            + ": set it to the results store on PostgreSQL, "
            "postgresql+psycopg2://USER:PASS@HOST:PORT/DB"
        )
    pg_setup = (
        "copy deploy/dagster.postgres.yaml there and set DAGSTER_PG_HOST, DAGSTER_PG_PORT, "
        "DAGSTER_PG_USER, DAGSTER_PG_PASSWORD, DAGSTER_PG_DB"
    )
    if instance is None:
        problems.append(
            f"{env.get('DAGSTER_HOME', '$DAGSTER_HOME')}/dagster.yaml does not exist (Dagster "
            "would keep runs and events in SQLite there, which workers on other hosts cannot "
            f"reach): {pg_setup}"
        )
    local = sorted(
        {
            type(s).__name__
            for s in (instance.run_storage, instance.event_log_storage)
            if "sqlite" in type(s).__name__.lower() or "sqlite" in type(s).__module__.lower()
        }
        if instance is not None
        else ()
    )
    if local:
        problems.append(
            f"the Dagster instance in {instance.root_directory}/dagster.yaml stores runs and "
            f"events in SQLite ({', '.join(local)}), which workers on other hosts cannot reach: "
            + pg_setup
        )
    if not problems:
        return None
    return "refused: CVN_EXECUTOR=celery needs shared state; nothing was done:\n- " + "\n- ".join(
        problems
    )


def celery_app() -> Any:
    """A Celery app on the executor's broker/backend (the launcher's view of the workers)."""
    from dagster_celery.make_app import make_app

    executor_cls = _celery_executor_class()
    from dagster._core.execution.retries import RetryMode

    ex = executor_cls(
        retries=RetryMode(RetryMode.DISABLED),
        broker=os.environ[BROKER_ENV],
        backend=os.environ[BACKEND_ENV],
        config_source=dict(CELERY_SETTINGS),
    )
    return make_app(ex.app_args())


def live_workers(timeout: float = 2.0) -> list[str]:
    """Names of the Celery workers that answer a ping (raises when the broker is unreachable)."""
    app = celery_app()
    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


#: run tag by which the one command follows a run it launched through the instance
LAUNCH_TAG = "cvn/launch_id"


def execute_on_celery(
    job_name: str,
    instance: Any,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    on_cell: Any,
    poll_seconds: float = 0.5,
) -> tuple[bool, str]:
    """Launch ``job_name`` through the instance with its Celery executor (``execute_in_process``
    would ignore the executor) and call ``on_cell(line)`` for every finished cell, read from
    the run's event log while the steps run on the workers. Returns (success, run id)."""
    import threading
    import uuid

    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    recon = ReconstructableRepository.for_module(
        "cvn_assets.definitions", "defs", working_directory=os.getcwd()
    ).get_reconstructable_job(job_name)
    launch_id = uuid.uuid4().hex
    stop = threading.Event()
    state: dict[str, Any] = {"run_id": None, "cursor": None}

    def drain() -> None:
        from dagster import RunsFilter

        if state["run_id"] is None:
            runs = instance.get_runs(filters=RunsFilter(tags={LAUNCH_TAG: launch_id}), limit=1)
            if not runs:
                return
            state["run_id"] = runs[0].run_id
        while True:
            conn = instance.get_records_for_run(state["run_id"], cursor=state["cursor"], limit=500)
            state["cursor"] = conn.cursor
            for record in conn.records:
                entry = record.event_log_entry
                if entry.dagster_event is None and entry.user_message.startswith(CELL_LOG_PREFIX):
                    on_cell(entry.user_message[len(CELL_LOG_PREFIX) :])
            if not conn.has_more:
                return

    def follow() -> None:
        while not stop.wait(poll_seconds):
            try:
                drain()
            except Exception:  # a transient storage error: try again at the next poll
                pass

    watcher = threading.Thread(target=follow, name="cvn-celery-progress", daemon=True)
    watcher.start()
    try:
        with execute_job(
            recon,
            instance=instance,
            run_config=dict(run_config),
            tags={**tags, LAUNCH_TAG: launch_id},
            raise_on_error=False,
        ) as result:
            success, run_id = result.success, result.run_id
    finally:
        stop.set()
        watcher.join()
    drain()
    return success, run_id


if __name__ == "__main__":  # python -m cvn_assets.execution.executors worker-yaml > celery.yaml
    import sys

    if sys.argv[1:] != ["worker-yaml"]:
        print(
            "usage: python -m cvn_assets.execution.executors worker-yaml > celery.yaml",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        print(worker_yaml(), end="")
    except SettingsError as exc:
        print(f"invalid environment: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
