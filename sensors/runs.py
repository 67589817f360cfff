"""What the guard's sensors ask the Dagster instance about runs (no rule here)."""

from dagster import DagsterRunStatus, RunsFilter, SensorEvaluationContext

#: the run statuses of a run still in flight (queued or running)
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.NOT_STARTED,
]


def in_flight(context: SensorEvaluationContext, job_name: str, tags: dict | None = None) -> bool:
    """Whether a run of ``job_name`` (with ``tags``) is queued or running."""
    return bool(
        context.instance.get_run_records(
            RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags=tags or {}), limit=1
        )
    )
