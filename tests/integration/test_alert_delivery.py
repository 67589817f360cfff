"""The guard's jobs and the ``alert_delivery`` sensor with a failing Slack (a real HTTP server on
127.0.0.1) on a real PostgreSQL and real Dagster runs: an alert or a rollback whose page cannot
be delivered is recorded and succeeds, the sensor delivers it once Slack recovers, gives up
loudly after the limit, and an escalation is never silenced by a delivery failure."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context

from cvn_assets.definitions import defs
from resources.alert_store import alerts_table
from resources.alerts import AlertSink, read_alerts, read_records
from resources.config_store import ConfigStore
from resources.guard_clock import GuardClock
from resources.rollbacks import RollbackLog
from sensors.jobs import alert_run_config
from tests.integration.slack_server import FakeSlack
from tests.integration.test_guard_jobs_sensors import QUIET, T0, _setup

NOW = T0 + timedelta(days=3)
INC = "INC-20260305T0000-expectancy_negative_focal-BTCUSDC+ETHUSDC"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def env(pg_database, tmp_path, monkeypatch, slack):
    monkeypatch.setenv("CVN_DATABASE_URL", pg_database)
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("CVN_SLACK_WEBHOOK_URL", slack.url)
    return pg_database, tmp_path / "alerts.jsonl"


def _run(job_name: str, ops: dict, now, sink: dict | None = None, instance=None):
    rc = {
        **QUIET,
        "ops": ops,
        "resources": {
            "guard_clock": {"config": {"fixed_now": now.isoformat()}},
            "alert_sink": {"config": sink or {}},
        },
    }
    return defs.resolve_job_def(job_name).execute_in_process(
        run_config=rc, instance=instance or DagsterInstance.ephemeral(), raise_on_error=False
    )


def _tick(name: str, now, url: str, sink: dict | None = None, instance=None):
    ctx = build_sensor_context(
        instance=instance or DagsterInstance.ephemeral(),
        resources={
            "guard_clock": GuardClock(fixed_now=now.isoformat()),
            "alert_sink": AlertSink(**(sink or {})),
            "rollback_log": RollbackLog(database_url=url),
        },
        sensor_name=name,
        definitions=defs,
    )
    return defs.get_repository_def().get_sensor_def(name).evaluate_tick(ctx)


def _metadata(result, node: str) -> dict:
    for ev in result.events_for_node(node):
        if ev.event_type_value == "STEP_OUTPUT":
            return {k: v.value for k, v in ev.step_output_data.metadata.items()}
    raise AssertionError(f"no output of {node}")


def _p1_config() -> dict:
    return alert_run_config(
        "expectancy_negative_focal", "P1", ["ETHUSDC", "BTCUSDC"],
        {"BTCUSDC_n_48h": 12}, INC, "net expectancy < 0 on 2 focal cryptos", NOW,
    )["ops"]  # fmt: skip


def test_an_alert_run_rate_limited_is_recorded_and_the_sensor_delivers_it(env, slack):
    url, path = env
    slack.script = [(429, {"Retry-After": "120"}, b"rate_limited")]
    res = _run("alert_job", _p1_config(), NOW)
    assert res.success  # recorded; the delivery is pending, not lost
    meta = _metadata(res, "send_alert")
    assert (meta["delivery_state"], meta["delivery_attempts"], meta["delivery_last_status"]) == (
        "pending",
        1,
        429,
    )
    assert meta["delivery_next_attempt_at"] == (NOW + timedelta(seconds=120)).isoformat()
    row = AlertSink().get(INC, "expectancy_negative_focal")
    assert row["delivery_state"] == "pending" and row["dagster_run_id"] == res.run_id

    early = _tick("alert_delivery", NOW + timedelta(seconds=60), url)
    assert not early.run_requests
    assert "1 alert(s) pending delivery: expectancy_negative_focal:" + INC in early.skip_message
    due = _tick("alert_delivery", NOW + timedelta(seconds=120), url)
    (req,) = due.run_requests
    assert req.run_key == f"alert_delivery:{NOW + timedelta(seconds=120):%Y-%m-%dT%H%M}"
    keys = req.run_config["ops"]["deliver_alerts"]["config"]["alerts"]
    assert keys == [f"expectancy_negative_focal:{INC}"]

    res = _run(req.job_name, req.run_config["ops"], NOW + timedelta(seconds=120))
    assert res.success and _metadata(res, "deliver_alerts")["n_delivered"] == 1
    assert len(slack.requests) == 2
    (line,) = read_alerts(path)
    assert line["delivery"] == "delivered" and line["incident_id"] == INC
    # a re-executed alert run: no second row, no second page
    assert _run("alert_job", _p1_config(), NOW + timedelta(hours=1)).success
    assert len(slack.requests) == 2 and len(AlertSink().rows()) == 1
    assert [r["record"] for r in read_records(path)] == ["alert", "delivery"]


def test_a_rollback_with_slack_failing_succeeds_and_its_page_is_delivered_later(env, slack):
    url, path = env
    _setup(url)
    slack.default = (500, {}, b"internal_error")
    cfg = {"actor": "alice", "reason": "test", "incident_id": "INC-rb", "trigger": "manual"}
    sink = {"attempts_per_run": 2, "retry_base_s": 0.0}
    res = _run("rollback_job", {"rollback": {"config": cfg}}, NOW, sink)
    assert res.success  # the rollback took effect: a successful run
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)
    meta = _metadata(res, "rollback")
    assert meta["flipped"] is True
    assert (meta["delivery_state"], meta["delivery_attempts"], meta["delivery_last_status"]) == (
        "pending",
        2,
        500,
    )
    assert len(slack.requests) == 2
    # due at now + 60 * 2**(2 - 1) = 120 s; Slack recovers; the sensor's run delivers it
    slack.default = (200, {}, b"ok")
    assert not _tick("alert_delivery", NOW + timedelta(seconds=119), url).run_requests
    (req,) = _tick("alert_delivery", NOW + timedelta(seconds=120), url).run_requests
    assert req.run_config["ops"]["deliver_alerts"]["config"]["alerts"] == ["rollback:INC-rb"]
    assert _run(req.job_name, req.run_config["ops"], NOW + timedelta(seconds=120)).success
    assert AlertSink().get("INC-rb", "rollback")["delivery_state"] == "delivered"
    assert [(a["name"], a["delivery"]) for a in read_alerts(path)] == [("rollback", "delivered")]
    assert len(slack.requests) == 3


def test_an_escalation_rate_limited_is_held_recorded_and_delivered_later(env, slack):
    url, path = env
    _setup(url)
    log = RollbackLog(database_url=url)
    assert _run("rollback_job", {"rollback": {"config": {
        "actor": "sensor", "reason": "2 P1", "incident_id": "INC-auto", "trigger": "auto"}}},
        NOW).success  # fmt: skip
    assert len(slack.requests) == 1  # the rollback page, delivered
    late = NOW + timedelta(minutes=15)
    (req,) = _tick("rollback_confirmation", late, url).run_requests
    slack.default = (429, {"Retry-After": "1"}, b"rate_limited")
    res = _run(req.job_name, req.run_config["ops"], late, {"attempts_per_run": 1})
    assert res.success
    meta = _metadata(res, "escalate_rollback")
    assert (meta["state"], meta["escalated"], meta["delivery_state"]) == ("held", True, "pending")
    assert log.get("INC-auto")["state"] == "held"
    esc = AlertSink().get("INC-auto", "rollback_unconfirmed")
    # due again at late + max(Retry-After 1 s, 60 s backoff)
    assert (esc["delivery_state"], esc["attempts"], esc["next_attempt_at"]) == (
        "pending",
        1,
        late + timedelta(seconds=60),
    )
    # the confirmation sensor has nothing left to do, and the page is still on its way
    assert not _tick("rollback_confirmation", late + timedelta(minutes=1), url).run_requests
    slack.default = (200, {}, b"ok")
    (deliver,) = _tick("alert_delivery", late + timedelta(minutes=1), url).run_requests
    assert deliver.run_config["ops"]["deliver_alerts"]["config"]["alerts"] == [
        "rollback_unconfirmed:INC-auto"
    ]
    assert _run(deliver.job_name, deliver.run_config["ops"], late + timedelta(minutes=1)).success
    assert [(a["name"], a["delivery"]) for a in read_alerts(path)] == [
        ("rollback", "delivered"),
        ("rollback_unconfirmed", "delivered"),
    ]
    assert slack.requests[-1]["body"]["text"].startswith("[P1] rollback_unconfirmed")


def test_a_rollback_is_not_held_unless_its_escalation_is_recorded(env, slack):
    url, _ = env
    _setup(url)
    log = RollbackLog(database_url=url)
    log.record("INC-auto", trigger="auto", actor="s", reason="r", cryptos=[], flipped=False,
               at=NOW)  # fmt: skip
    late = NOW + timedelta(minutes=15)
    (req,) = _tick("rollback_confirmation", late, url).run_requests
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:  # the alerts table is gone: no page can be recorded
            conn.execute(sa.text("DROP TABLE alerts"))
        res = _run(req.job_name, req.run_config["ops"], late)
        assert not res.success
        assert log.get("INC-auto")["state"] == "pending"  # not held without its page
        # the sensor asks again in the next 15-min bucket (a new run key)
        (again,) = _tick("rollback_confirmation", late + timedelta(minutes=15), url).run_requests
        assert again.run_key != req.run_key
        alerts_table.create(engine)
    finally:
        engine.dispose()
    res = _run(again.job_name, again.run_config["ops"], late + timedelta(minutes=15))
    assert res.success and log.get("INC-auto")["state"] == "held"
    esc = AlertSink().get("INC-auto", "rollback_unconfirmed")
    assert esc["delivery_state"] == "delivered" and len(slack.requests) == 1


def test_delivery_gives_up_loudly_after_the_limit(env, slack):
    url, path = env
    slack.default = (500, {}, b"internal_error")
    sink = {"attempts_per_run": 1, "max_attempts": 2}
    assert _run("alert_job", _p1_config(), NOW, sink).success  # attempt 1: pending
    (req,) = _tick("alert_delivery", NOW + timedelta(seconds=60), url, sink).run_requests
    res = _run(req.job_name, req.run_config["ops"], NOW + timedelta(seconds=60), sink)
    assert not res.success  # attempt 2 = the limit: the run fails, naming the alert
    failure = res.get_step_failure_events()[0].step_failure_data.error.message
    assert f"expectancy_negative_focal:{INC}" in failure and "failed (slack): 2 attempt" in failure
    row = AlertSink().get(INC, "expectancy_negative_focal")
    assert (row["delivery_state"], row["attempts"], row["last_status"]) == ("failed", 2, 500)
    assert read_alerts(path)[0]["delivery"] == "failed"
    assert [r["record"] for r in read_records(path)] == ["alert", "delivery_failed"]
    tick = _tick("alert_delivery", NOW + timedelta(hours=1), url, sink)
    assert not tick.run_requests
    assert tick.skip_message.startswith("DELIVERY FAILED for 1 alert(s): expectancy_negative")
    assert "s3cr3tT0k3n" not in tick.skip_message + failure
