"""The Celery app of the sweep's workers: ``dagster-celery worker start -A
cvn_assets.execution.celery_worker -y celery.yaml -n NAME -- -c 1``.

It is ``dagster_celery.app`` (same broker/backend configuration from the ``-y`` file, same
queue, same three task names), with one check added to the step task ``execute_plan``:
before it executes a step, the worker reads the status of the Dagster run the step belongs
to from the Dagster instance, and when that run is no longer running
(:func:`cvn_assets.execution.executors.run_not_running`: finished, being canceled, or gone) it does
not execute the step. It records an engine event on the run ("... not executed on Celery
worker ...: its run ... is FAILURE") and returns that event as the task's result, logs a
warning, and acknowledges the message.

Why: tasks are acknowledged when they end (``task_acks_late``), so the message of a cell
whose worker died stays unacknowledged in Redis and is redelivered after the broker's
visibility timeout. The launcher's watchdog fails that step, then the run, and revokes the
task, but a revoke lives in the memory of the workers alive at that moment: a worker
started or restarted later never hears of it and would train the cell of a run that has
already failed. Dagster's own step worker (``dagster api execute_step``) makes the same
check.
"""

import logging
from typing import Any

from celery import Celery
from dagster import DagsterInstance
from dagster._core.events import EngineEventData
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import serialize_value, unpack_value
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from cvn_assets.execution.executors import run_not_running

log = logging.getLogger(__name__)

#: the marker of a skipped step in its engine event and the worker's log
NOT_EXECUTED = "not executed on Celery worker"

app = make_app()

# dagster-celery's step task body, taken from a private app (not shared with other apps, so
# it cannot replace the guarded task below when ``app`` is finalized)
_dagster_step_task = create_task(Celery("cvn-dagster-step"), shared=False, lazy=False)
_execute_plan_body = type(_dagster_step_task).run


@app.task(bind=True, name=TASK_EXECUTE_PLAN_NAME, shared=False, lazy=False)
def execute_plan(self: Any, execute_step_args_packed: dict, executable_dict: dict) -> list:
    """dagster-celery's ``execute_plan``, run only while the step's run is running."""
    args = unpack_value(execute_step_args_packed, as_type=ExecuteStepArgs)
    with DagsterInstance.from_ref(args.instance_ref) as instance:  # type: ignore[arg-type]
        run = instance.get_run_by_id(args.run_id)
        why = run_not_running(run)
        if why is not None:
            steps = ", ".join(args.step_keys_to_execute or [])
            message = f"step {steps} {NOT_EXECUTED} {self.request.hostname}: {why}"
            log.warning(message)
            if run is None:
                return []
            event = instance.report_engine_event(
                message,
                run,
                EngineEventData({"step_keys": steps, "Celery worker": self.request.hostname}),
                step_key=(args.step_keys_to_execute or [None])[0],
            )
            return [serialize_value(event)]
    return _execute_plan_body(self, execute_step_args_packed, executable_dict)


execute_job = create_execute_job_task(app)

resume_job = create_resume_job_task(app)
