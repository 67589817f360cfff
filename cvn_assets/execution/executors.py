"""Where the sweep's cells run: in process (default) or on Celery workers (``CVN_EXECUTOR``).

A definition-time switch, read when the definitions load (launcher and every worker must see the
same value, like ``CVN_UNIVERSE``):

- ``CVN_EXECUTOR`` unset or ``in_process``: today's path. One model asset and one calibrated
  asset per variant (:mod:`cvn_assets.assets.training`), run by the one command as ranged single
  runs executed in process (about 0.03 s of orchestration per cell).
- ``CVN_EXECUTOR=celery``: the same asset keys, partitions, tags and stored values, but per
  variant one graph-backed multi-asset with one step, hence one Celery task, per cell
  (:mod:`cvn_assets.assets.celery_cells`; the cell's code is the in-process assets',
  :mod:`cvn_assets.assets.cells`). The executor is ``dagster-celery``'s, with broker and
  backend from ``CVN_CELERY_BROKER`` and ``CVN_CELERY_BACKEND`` (``EnvVar``), plus a worker
  watchdog (:class:`WatchedCeleryExecutor`).

Outputs travel between workers only through the IO manager (``CvnIOManager``: the op outputs
of the fan-out are small JSON values keyed by ``get_identifier()``), so ``CVN_STORE_DIR`` must
be shared by every host, and the Dagster instance and results store must be PostgreSQL
(:func:`celery_refusal` says what is missing; the one command refuses before any work).
"""

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    DagsterRunStatus,
    ExecutorDefinition,
    executor,
    in_process_executor,
    multiple_process_executor_requirements,
)

from cvn_assets.settings import SettingsError

EXECUTOR_ENV = "CVN_EXECUTOR"
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


def run_not_running(run: Any) -> str | None:
    """Why a step of ``run`` (a ``DagsterRun`` or None) must not execute now, or None when it
    may: the run no longer exists, has finished (``SUCCESS``, ``FAILURE``, ``CANCELED``) or is
    being canceled (``CANCELING``) -- Dagster's own step worker rule (``dagster api
    execute_step`` skips a step of such a run). A Celery message for a cell of such a run is
    a leftover: redelivered after the broker's visibility timeout by a worker that died, or
    queued when the run was canceled."""
    if run is None:
        return "its run no longer exists"
    if run.is_finished or run.status == DagsterRunStatus.CANCELING:
        return f"its run {run.run_id} is {run.status.value}, no longer running"
    return None


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
