"""The alert sink against a real HTTP server on 127.0.0.1 standing in for Slack's incoming
webhook, and the webhook URL read through Dagster's ``EnvVar`` in a real run."""

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import EnvVar, OpExecutionContext, job, op

from resources.alerts import Alert, AlertDeliveryError, AlertSink, read_alerts

SECRET_PATH = "/services/T000/B000/s3cr3tT0k3n"


class FakeSlack:
    """Records each POST (path, headers, JSON body); answers ``status`` with ``reply``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.reply = b"ok"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                self.send_response(fake.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(fake.reply)))
                self.end_headers()
                self.wfile.write(fake.reply)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


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


def test_slack_receives_the_alert_once(tmp_path, slack):
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path), slack_webhook_url=slack.url)
    assert sink.slack_enabled
    assert sink.send(make_alert()) is True
    assert sink.send(make_alert()) is False  # recorded and delivered: nothing more
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

    (got,) = read_alerts(path)
    assert got["delivered"] == ["slack"] and got["figures"]["psi"] == 0.612


def test_a_500_raises_without_the_url_and_a_resend_retries_delivery(tmp_path, slack, caplog):
    caplog.set_level(logging.DEBUG)  # even with DEBUG on, the URL must not reach the logs
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path), slack_webhook_url=slack.url)
    slack.status, slack.reply = 500, b"internal_error"
    with pytest.raises(AlertDeliveryError, match=r"answered HTTP 500 \('internal_error'\)") as e:
        sink.send(make_alert())
    assert "s3cr3tT0k3n" not in str(e.value) and "127.0.0.1" not in str(e.value)
    assert e.value.__cause__ is None
    assert "s3cr3tT0k3n" not in caplog.text
    # the JSON line was written first, without a delivery
    (got,) = read_alerts(path)
    assert got["incident_id"] == "INC-20261201T0000-data_drift_psi-SOLUSDC"
    assert got["delivered"] == []

    slack.status, slack.reply = 200, b"ok"
    assert sink.send(make_alert()) is True  # delivery retried, line not duplicated
    assert len(slack.requests) == 2
    (got,) = read_alerts(path)
    assert got["delivered"] == ["slack"]
    assert sink.send(make_alert()) is False


def test_an_unreachable_webhook_raises_without_the_url(tmp_path, slack):
    url = slack.url
    slack.close()  # nobody listens on that port any more
    sink = AlertSink(
        alerts_path=str(tmp_path / "a.jsonl"), slack_webhook_url=url, slack_timeout_s=2
    )
    with pytest.raises(AlertDeliveryError, match="Slack webhook not reached") as e:
        sink.send(make_alert())
    assert "s3cr3tT0k3n" not in str(e.value)
    assert len(read_alerts(tmp_path / "a.jsonl")) == 1


def test_webhook_url_through_envvar_in_a_run(tmp_path, slack, monkeypatch):
    monkeypatch.setenv("CVN_SLACK_WEBHOOK_URL", slack.url)
    path = tmp_path / "alerts.jsonl"

    @op
    def send_alert(context: OpExecutionContext, alert_sink: AlertSink) -> bool:
        return alert_sink.send(make_alert())

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
    assert result.success and result.output_for_node("send_alert") is True
    assert len(slack.requests) == 1 and read_alerts(path)[0]["delivered"] == ["slack"]
    # the secret is nowhere in the run's events
    events = "\n".join(str(ev) for ev in result.all_events)
    assert "s3cr3tT0k3n" not in events

    result = alert_once.execute_in_process()  # a re-executed alert run
    assert result.output_for_node("send_alert") is False and len(slack.requests) == 1


def test_webhook_url_from_the_environment_when_the_field_is_unset(tmp_path, slack, monkeypatch):
    # Dagster drops constructor values when a run supplies config for the resource; the sink
    # then still finds the webhook in the environment
    monkeypatch.setenv("CVN_SLACK_WEBHOOK_URL", slack.url)
    path = tmp_path / "alerts.jsonl"

    @op
    def send_alert(alert_sink: AlertSink) -> bool:
        return alert_sink.send(make_alert())

    @job(resource_defs={"alert_sink": AlertSink(slack_webhook_url=EnvVar("CVN_SLACK_WEBHOOK_URL"))})
    def alert_once():
        send_alert()

    result = alert_once.execute_in_process(
        run_config={"resources": {"alert_sink": {"config": {"alerts_path": str(path)}}}}
    )
    assert result.success and len(slack.requests) == 1
    assert read_alerts(path)[0]["delivered"] == ["slack"]


def test_no_webhook_no_slack(tmp_path, slack):
    sink = AlertSink(alerts_path=str(tmp_path / "a.jsonl"), slack_webhook_url="")
    assert not sink.slack_enabled
    assert sink.send(make_alert()) is True
    assert slack.requests == []
    assert read_alerts(tmp_path / "a.jsonl")[0]["delivered"] == []
