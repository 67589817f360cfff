"""The alert sink against a real HTTP server on 127.0.0.1 standing in for Slack's incoming
webhook (answering 200, 429 with and without ``Retry-After``, 500, 404, hanging, or a closed
port), with its rows in a real PostgreSQL (SQLite where the single-writer lock is the point),
and the webhook URL read through Dagster's ``EnvVar`` in a real run.

The numbers asserted are the policy's closed forms: a scheduled retry is due at ``now +
max(Retry-After, min(cap, base * 2**(attempts - 1)))`` with the test's fixed ``now``; the
number of POSTs the server saw is the number of attempts."""

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from dagster import EnvVar, OpExecutionContext, job, op

from resources.alerts import Alert, AlertSink, read_alerts, read_records
from tests.integration.slack_server import SECRET_PATH, FakeSlack, closed_port_url

NOW = datetime(2026, 12, 1, 0, 10, tzinfo=UTC)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(autouse=True)
def _no_alert_env(monkeypatch):
    monkeypatch.delenv("CVN_ALERTS_PATH", raising=False)
    monkeypatch.delenv("CVN_SLACK_WEBHOOK_URL", raising=False)


@pytest.fixture
def db(pg_database, monkeypatch) -> str:
    monkeypatch.setenv("CVN_DATABASE_URL", pg_database)
    return pg_database


def make_alert(**changes) -> Alert:
    fields = dict(
        name="data_drift_psi",
        severity="crit",
        cryptos=("SOLUSDC",),
        figures={"psi": 0.612, "n_rows": 168, "feature": "ret_24h"},
        incident_id="INC-20261201T0000-data_drift_psi-SOLUSDC",
        runbook="runbooks/runbook_data_drift.md",
        at=datetime(2026, 12, 1, 0, 5, tzinfo=UTC),
        message="PSI 0.612 >= 0.5 on ret_24h over 7 days",
    )
    fields.update(changes)
    return Alert(**fields)


def sink_for(tmp_path, url: str | None, **policy) -> AlertSink:
    return AlertSink(
        alerts_path=str(tmp_path / "alerts.jsonl"), slack_webhook_url=url or "", **policy
    )


def test_slack_receives_the_alert_once(tmp_path, slack, db):
    sink = sink_for(tmp_path, slack.url)
    assert sink.slack_enabled
    out = sink.send(make_alert(), now=NOW)
    assert (out.state, out.attempts, out.posts, out.recorded_now) == ("delivered", 1, 1, True)
    again = sink.send(make_alert(), now=NOW)  # a re-executed alert run: nothing more
    assert (again.state, again.posts, again.recorded_now) == ("delivered", 0, False)
    assert len(slack.requests) == 1

    req = slack.requests[0]
    assert req["path"] == SECRET_PATH
    assert req["headers"]["Content-Type"].startswith("application/json")
    body = req["body"]
    assert body["text"] == (
        "[crit] data_drift_psi on SOLUSDC: PSI 0.612 >= 0.5 on ret_24h over 7 days "
        "(INC-20261201T0000-data_drift_psi-SOLUSDC)"
    )
    blocks = json.dumps(body["blocks"])
    for expected in (
        "[crit] data_drift_psi",
        "*Severity*\\ncrit",
        "*Cryptos*\\nSOLUSDC",
        "INC-20261201T0000-data_drift_psi-SOLUSDC",
        "runbooks/runbook_data_drift.md",
        "- psi: 0.612",
        "- n_rows: 168",
        "- feature: ret_24h",
        "2026-12-01 00:05",
    ):
        assert expected in blocks, expected

    (got,) = read_alerts(tmp_path / "alerts.jsonl")
    assert got["delivered"] == ["slack"] and got["delivery"] == "delivered"
    assert got["figures"]["psi"] == 0.612
    row = sink.get(got["incident_id"], got["name"])
    assert (row["delivery_state"], row["delivered_at"], row["lease_until"]) == (
        "delivered",
        NOW,
        None,
    )
    assert row["file_synced"]


def test_429_retry_after_1_is_honoured_then_delivered(tmp_path, slack, db):
    slack.script = [(429, {"Retry-After": "1"}, b"rate_limited")]
    out = sink_for(tmp_path, slack.url).send(make_alert(), now=NOW)
    assert (out.state, out.attempts, out.posts, out.last_status) == ("delivered", 2, 2, 200)
    # the second POST came no sooner than the server asked (a lower bound: speed-free)
    assert slack.requests[1]["t"] - slack.requests[0]["t"] >= 1.0
    assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == "delivered"


def test_a_retry_after_longer_than_the_run_may_wait_is_scheduled(tmp_path, slack, db):
    slack.script = [(429, {"Retry-After": "120"}, b"rate_limited")]
    sink = sink_for(tmp_path, slack.url, max_wait_s=30.0, retry_backoff_s=60.0)
    out = sink.send(make_alert(), now=NOW)
    # one POST; due again at now + max(120, 60 * 2**0) = now + 120 s
    assert (out.state, out.attempts, out.posts, out.last_status) == ("pending", 1, 1, 429)
    assert out.next_attempt_at == NOW + timedelta(seconds=120)
    assert out.last_error == "HTTP 429 ('rate_limited')"
    # not before: a second send at +119 s posts nothing; at +120 s it delivers
    assert sink.deliver(out.incident_id, out.name, now=NOW + timedelta(seconds=119)).posts == 0
    done = sink.deliver(out.incident_id, out.name, now=NOW + timedelta(seconds=120))
    assert (done.state, done.attempts, done.posts) == ("delivered", 2, 1)
    assert len(slack.requests) == 2
    assert [r["record"] for r in read_records(tmp_path / "alerts.jsonl")] == [
        "alert",
        "delivery",
    ]


def test_429_without_retry_after_and_500_back_off(tmp_path, slack, db):
    slack.default = (500, {}, b"internal_error")
    slack.script = [(429, {}, b"rate_limited")]
    sink = sink_for(tmp_path, slack.url, attempts_per_run=3, retry_base_s=0.0)
    out = sink.send(make_alert(), now=NOW)
    # three POSTs in the run (429, 500, 500), then due at now + 60 * 2**(3 - 1) = 240 s
    assert (out.state, out.attempts, out.posts, out.last_status) == ("pending", 3, 3, 500)
    assert out.next_attempt_at == NOW + timedelta(seconds=240)
    assert len(slack.requests) == 3
    assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == "pending"


def test_a_hung_endpoint_times_out_and_stays_pending(tmp_path, slack, db):
    slack.default = "hang"
    sink = sink_for(tmp_path, slack.url, attempts_per_run=2, retry_base_s=0.0, slack_timeout_s=0.3)
    out = sink.send(make_alert(), now=NOW)
    assert (out.state, out.attempts, out.posts, out.last_status) == ("pending", 2, 2, None)
    assert out.last_error == "timeout: no answer within 0.3 s"
    assert len(slack.requests) == 2
    assert sink.get(out.incident_id, out.name)["lease_until"] is None  # the claim is released


def test_a_refused_connection_and_an_unknown_host_stay_pending(tmp_path, db, caplog):
    caplog.set_level(logging.DEBUG)
    url = closed_port_url()
    out = sink_for(tmp_path, url, attempts_per_run=2, retry_base_s=0.0).send(make_alert(), now=NOW)
    assert (out.state, out.attempts, out.last_error) == ("pending", 2, "connection refused")
    dns = "http://hooks.nonexistent.invalid/services/T000/B000/s3cr3tT0k3n"  # RFC 6761
    other = make_alert(incident_id="INC-dns")
    got = sink_for(tmp_path, dns, attempts_per_run=1).send(other, now=NOW)
    assert got.state == "pending" and got.last_error.startswith("host name not resolved")
    for text in (out.last_error, got.last_error, caplog.text, str(out.metadata())):
        assert "s3cr3tT0k3n" not in text


def test_a_permanent_error_fails_at_once_and_loudly_without_the_url(tmp_path, slack, db, caplog):
    caplog.set_level(logging.DEBUG)  # even with DEBUG on, the URL must not reach the logs
    slack.default = (404, {}, b"no_service")
    sink = sink_for(tmp_path, slack.url)
    out = sink.send(make_alert(), now=NOW)
    assert (out.state, out.attempts, out.posts, out.last_status) == ("failed", 1, 1, 404)
    assert out.last_error == "HTTP 404 ('no_service')"
    failed = [r for r in read_records(tmp_path / "alerts.jsonl") if r["record"] != "alert"]
    assert failed == [
        {
            "record": "delivery_failed",
            "channel": "slack",
            "incident_id": out.incident_id,
            "name": out.name,
            "at": NOW.isoformat(),
            "attempts": 1,
            "last_status": 404,
            "last_error": "HTTP 404 ('no_service')",
        }
    ]
    assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == "failed"
    assert "delivery to slack failed for good after 1 attempt(s)" in caplog.text
    assert "s3cr3tT0k3n" not in caplog.text and "s3cr3tT0k3n" not in str(out.metadata())
    # an operator requeues it once the webhook is mended: delivered, the file says so
    slack.default = (200, {}, b"ok")
    sink.requeue(out.incident_id, out.name, now=NOW + timedelta(hours=1))
    done = sink.deliver(out.incident_id, out.name, now=NOW + timedelta(hours=1))
    assert (done.state, done.attempts) == ("delivered", 1)
    assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == "delivered"


def test_delivery_gives_up_after_max_attempts(tmp_path, slack, db):
    slack.default = (500, {}, b"internal_error")
    sink = sink_for(tmp_path, slack.url, attempts_per_run=1, max_attempts=3)
    out = sink.send(make_alert(), now=NOW)
    states = [(out.state, out.attempts)]
    t = NOW
    while out.state == "pending":
        t = out.next_attempt_at
        out = sink.deliver(out.incident_id, out.name, now=t)
        states.append((out.state, out.attempts))
    assert states == [("pending", 1), ("pending", 2), ("failed", 3)]
    assert t == NOW + timedelta(seconds=60 + 120)  # the backoff: 60 s, then 120 s
    assert len(slack.requests) == 3
    assert sink.deliver(out.incident_id, out.name, now=t + timedelta(days=1)).posts == 0
    assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == "failed"


def test_a_hung_post_holds_no_lock_and_blocks_no_other_alert(tmp_path, slack, monkeypatch):
    # SQLite: one writer at a time, so a transaction held across the POST would block the
    # other thread's record (busy) -- here it completes while the POST still hangs
    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'results.sqlite'}")
    slack.script = ["hang"]
    sink = sink_for(tmp_path, slack.url, attempts_per_run=1, slack_timeout_s=60.0)
    finished = threading.Event()
    results = []

    def send_first() -> None:
        results.append(sink.send(make_alert(), now=NOW))
        finished.set()

    sender = threading.Thread(target=send_first)
    sender.start()
    try:
        assert slack.received.wait(60), "the first POST never arrived"
        # the POST hangs now: the file lock is free, other alerts are recorded
        fd = os.open(tmp_path / "alerts.jsonl", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if someone held it
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        other = sink_for(tmp_path, None)  # no Slack for these: recording only
        for k in range(3):
            row, created = other.record(make_alert(incident_id=f"INC-other-{k}"), now=NOW)
            assert created
        # a second deliverer of the hung alert does not post it again (claimed)
        second = sink.deliver(make_alert().incident_id, "data_drift_psi", now=NOW)
        assert (second.posts, second.state) == (0, "pending")
        assert not finished.is_set()  # all of that happened while the first POST hung
    finally:
        slack.release()
        sender.join(90)
    assert results[0].state == "delivered" and len(slack.requests) == 1
    names = [(a["incident_id"], a["delivery"]) for a in read_alerts(tmp_path / "alerts.jsonl")]
    assert names == [
        ("INC-20261201T0000-data_drift_psi-SOLUSDC", "delivered"),
        ("INC-other-0", "none"),
        ("INC-other-1", "none"),
        ("INC-other-2", "none"),
    ]


def test_webhook_url_through_envvar_in_a_run(tmp_path, slack, db, monkeypatch):
    monkeypatch.setenv("CVN_SLACK_WEBHOOK_URL", slack.url)
    path = tmp_path / "alerts.jsonl"

    @op
    def send_alert(context: OpExecutionContext, alert_sink: AlertSink) -> str:
        return alert_sink.send(make_alert()).state

    @job(
        resource_defs={
            "alert_sink": AlertSink(
                alerts_path=str(path), slack_webhook_url=EnvVar("CVN_SLACK_WEBHOOK_URL")
            )
        }
    )
    def alert_once():
        send_alert()

    result = alert_once.execute_in_process()
    assert result.success and result.output_for_node("send_alert") == "delivered"
    assert len(slack.requests) == 1 and read_alerts(path)[0]["delivered"] == ["slack"]
    # the secret is nowhere in the run's events
    events = "\n".join(str(ev) for ev in result.all_events)
    assert "s3cr3tT0k3n" not in events

    result = alert_once.execute_in_process()  # a re-executed alert run
    assert result.output_for_node("send_alert") == "delivered" and len(slack.requests) == 1


def test_webhook_url_from_the_environment_when_the_field_is_unset(tmp_path, slack, db, monkeypatch):
    # Dagster drops constructor values when a run supplies config for the resource; the sink
    # then still finds the webhook in the environment
    monkeypatch.setenv("CVN_SLACK_WEBHOOK_URL", slack.url)
    path = tmp_path / "alerts.jsonl"

    @op
    def send_alert(alert_sink: AlertSink) -> str:
        return alert_sink.send(make_alert()).state

    @job(resource_defs={"alert_sink": AlertSink(slack_webhook_url=EnvVar("CVN_SLACK_WEBHOOK_URL"))})
    def alert_once():
        send_alert()

    result = alert_once.execute_in_process(
        run_config={"resources": {"alert_sink": {"config": {"alerts_path": str(path)}}}}
    )
    assert result.success and len(slack.requests) == 1
    assert read_alerts(path)[0]["delivered"] == ["slack"]


def test_no_webhook_no_slack(tmp_path, slack, db):
    sink = sink_for(tmp_path, None)
    assert not sink.slack_enabled
    out = sink.send(make_alert(), now=NOW)
    assert (out.state, out.posts, out.recorded_now) == ("none", 0, True)
    assert slack.requests == []
    (got,) = read_alerts(tmp_path / "alerts.jsonl")
    assert got["delivered"] == [] and got["delivery"] == "none"


def test_concurrent_recorders_write_one_row_on_postgres(tmp_path, db):
    sink = sink_for(tmp_path, None)
    barrier = threading.Barrier(4)
    created = []

    def record() -> None:
        barrier.wait()
        created.append(sink.record(make_alert(), now=NOW)[1])

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(created) == [False, False, False, True]
    assert len(sink.rows()) == 1 and len(read_alerts(tmp_path / "alerts.jsonl")) == 1
