"""What a Celery deployment writes and prints must not carry the broker's password:
``worker_yaml`` (the workers' ``-y`` file) and the one command's broker refusals."""

import pytest

pytest.importorskip("dagster_celery")

BROKER = "redis://:s3cret-pw@10.0.0.5:6379/0"
BACKEND = "redis://:s3cret-pw@10.0.0.5:6379/1"


def test_worker_yaml_holds_env_references_that_dagster_celery_resolves(tmp_path, monkeypatch):
    from dagster_celery.cli import get_validated_config

    from cvn_assets.execution.executors import worker_yaml

    env = {"CVN_CELERY_BROKER": BROKER, "CVN_CELERY_BACKEND": BACKEND}
    text = worker_yaml(env)
    assert "s3cret" not in text and "10.0.0.5" not in text
    path = tmp_path / "celery.yaml"
    path.write_text(text)
    monkeypatch.setenv("CVN_CELERY_BROKER", BROKER)
    monkeypatch.setenv("CVN_CELERY_BACKEND", BACKEND)
    cfg = get_validated_config(str(path))  # what `dagster-celery worker start -y` reads
    assert (cfg["broker"], cfg["backend"]) == (BROKER, BACKEND)
    assert cfg["config_source"]["task_acks_late"] is True


def test_worker_yaml_refuses_a_missing_variable_by_name():
    from cvn_assets.execution.executors import worker_yaml
    from cvn_assets.settings import SettingsError

    with pytest.raises(SettingsError, match="CVN_CELERY_BACKEND"):
        worker_yaml({"CVN_CELERY_BROKER": BROKER})


@pytest.mark.parametrize("workers", [[], RuntimeError("connection refused")])
def test_broker_refusals_mask_the_password(monkeypatch, workers):
    import cvn_assets.execution.executors as ex
    from cvn_assets import sweep

    def live_workers():
        if isinstance(workers, Exception):
            raise workers
        return workers

    monkeypatch.setenv("CVN_CELERY_BROKER", BROKER)
    monkeypatch.setattr(ex, "celery_refusal", lambda instance: None)
    monkeypatch.setattr(ex, "live_workers", live_workers)
    msg = sweep._celery_preflight(instance=None)
    assert msg is not None and msg.startswith("refused:")
    assert "s3cret" not in msg and "redis://:**@10.0.0.5:6379/0" in msg


def test_a_step_runs_only_while_its_run_is_running():
    """``run_not_running`` on real runs of a Dagster instance, one per status: a step may
    execute only while its run is neither finished (SUCCESS, FAILURE, CANCELED) nor being
    canceled nor gone -- the rule of Dagster's own step worker (``DagsterRun.is_finished``)."""
    from dagster import DagsterInstance, DagsterRunStatus, job, op

    from cvn_assets.execution.executors import run_not_running

    @op
    def noop():
        return None

    @job
    def probe():
        noop()

    with DagsterInstance.ephemeral() as instance:
        stored = instance.get_run_by_id(instance.create_run_for_job(probe).run_id)
        assert stored is not None
        for status in DagsterRunStatus:
            run = stored._replace(status=status)  # a record: any status
            why = run_not_running(run)
            stopped = run.is_finished or status == DagsterRunStatus.CANCELING
            assert (why is not None) == stopped, (status, why)
            if stopped:
                assert why == f"its run {run.run_id} is {status.value}, no longer running"
        assert {s for s in DagsterRunStatus if run_not_running(stored._replace(status=s))} == {
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
            DagsterRunStatus.CANCELING,
        }
        assert run_not_running(instance.get_run_by_id("0" * 36)) == "its run no longer exists"
