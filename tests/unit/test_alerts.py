"""The alert value, its incident id, the delivery policy (closed forms) and the sink's
database rows and JSON lines on SQLite (no network: Slack is in
tests/integration/test_alerts.py)."""

import json
import multiprocessing
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from cvn_assets.settings import KNOWN_ENV, SettingsError, check_environment
from resources.alerts import (
    SEVERITIES,
    Alert,
    AlertSink,
    default_alerts_path,
    incident_id,
    read_alerts,
    read_records,
)

AT = datetime(2026, 12, 1, 13, 7, 30, tzinfo=UTC)
RUNBOOK = "runbooks/runbook_focal_loss_negative_expectancy.md"


def make_alert(**changes) -> Alert:
    fields = dict(
        name="expectancy_negative_focal",
        severity="P1",
        cryptos=("BTCUSDC", "ETHUSDC"),
        figures={"expectancy_48h_btc": -0.0012, "n_trades_btc": 31, "focal_active": True},
        incident_id="INC-20261201T1300-expectancy_negative_focal-BTCUSDC+ETHUSDC",
        runbook=RUNBOOK,
        at=AT,
        message="net expectancy < 0 over 48 h on 2 cryptos while focal is active",
    )
    fields.update(changes)
    return Alert(**fields)


@pytest.fixture(autouse=True)
def _no_alert_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CVN_ALERTS_PATH", raising=False)
    monkeypatch.delenv("CVN_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'results.sqlite'}")


# ----------------------------------------------------------------------------- incident ids


def test_incident_id_is_deterministic_and_order_free():
    bucket = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    a = incident_id("expectancy_negative_focal", ("ETHUSDC", "BTCUSDC"), bucket)
    assert a == "INC-20261201T1300-expectancy_negative_focal-BTCUSDC+ETHUSDC"
    assert incident_id("expectancy_negative_focal", ["BTCUSDC", "ETHUSDC"], bucket) == a
    # the same instant in another time zone is the same bucket
    paris = bucket.astimezone(timezone(timedelta(hours=1)))
    assert incident_id("expectancy_negative_focal", ("BTCUSDC", "ETHUSDC"), paris) == a
    assert (
        incident_id("focal_training_crash", (), bucket) == "INC-20261201T1300-focal_training_crash"
    )


def test_incident_id_long_symbol_lists_are_hashed_within_128_chars():
    syms = tuple(f"SYM{i:02d}USDC" for i in range(20))
    bucket = datetime(2026, 12, 1, tzinfo=UTC)
    one = incident_id("data_drift_psi", syms, bucket)
    assert len(one) <= 128 and one.startswith("INC-20261201T0000-data_drift_psi-h")
    assert one == incident_id("data_drift_psi", tuple(reversed(syms)), bucket)
    make_alert(incident_id=one)  # a valid alert id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Bad Name", (), AT), r"alert name: 'Bad Name'"),
        (("x_rule", ("btc",), AT), r"alert cryptos: 'btc'"),
        (("x_rule", (), AT.replace(tzinfo=None)), r"bucket_start_utc: '2026-12-01T13:07:30'"),
    ],
)
def test_incident_id_errors_name_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        incident_id(*args)


# ----------------------------------------------------------------------------- the value


def test_alert_normalises_time_and_numpy_figures():
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    a = make_alert(
        at=paris,
        cryptos=["BTCUSDC"],
        figures={"psi": np.float64(0.53), "n": np.int64(168), "flag": np.bool_(True)},
    )
    assert a.at == AT and a.at.tzinfo is UTC
    assert a.cryptos == ("BTCUSDC",)
    assert a.figures == {"psi": 0.53, "n": 168, "flag": True}
    assert type(a.figures["n"]) is int and type(a.figures["flag"]) is bool
    assert a.key == (a.incident_id, "expectancy_negative_focal")


def test_severities():
    assert SEVERITIES == ("P1", "P2", "crit", "warn", "info")
    for s in SEVERITIES:
        make_alert(severity=s)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Expectancy-Neg"}, r"alert name: 'Expectancy-Neg'"),
        ({"severity": "P3"}, r"alert severity: 'P3' is not one of P1, P2, crit, warn, info"),
        ({"cryptos": "BTCUSDC"}, r"alert cryptos: 'BTCUSDC' is not a tuple"),
        ({"cryptos": ("BTCUSDC", "btc-usd")}, r"alert cryptos: 'btc-usd'"),
        ({"cryptos": ("BTCUSDC", "BTCUSDC")}, r"alert cryptos: duplicate"),
        ({"figures": [1, 2]}, r"alert figures: \[1, 2\] is not a mapping"),
        ({"figures": {"psi": float("nan")}}, r"alert figures\['psi'\]: nan is not a finite"),
        ({"figures": {"psi": [0.1]}}, r"alert figures\['psi'\]: \[0.1\] \(list\)"),
        ({"figures": {3: 1.0}}, r"alert figures: key 3"),
        ({"incident_id": "INC 1"}, r"alert incident_id: 'INC 1'"),
        ({"incident_id": "I" * 129}, r"alert incident_id: 'IIII"),
        ({"runbook": "/etc/runbook.md"}, r"alert runbook: '/etc/runbook.md'"),
        ({"runbook": "runbooks/../x.md"}, r"alert runbook: 'runbooks/../x.md'"),
        ({"runbook": "runbooks/x.txt"}, r"alert runbook: 'runbooks/x.txt'"),
        ({"at": "2026-12-01"}, r"alert at: '2026-12-01' is not a datetime"),
        ({"at": datetime(2026, 12, 1)}, r"alert at: '2026-12-01T00:00:00' is naive"),
        ({"message": "two\nlines"}, r"alert message: 'two\\nlines'"),
        ({"message": "  "}, r"alert message: '  '"),
    ],
)
def test_validation_errors_name_field_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        make_alert(**changes)


def test_record_round_trip():
    a = make_alert()
    assert Alert.from_record(json.loads(json.dumps(a.to_record()))) == a
    with pytest.raises(ValueError, match="missing field.*runbook"):
        Alert.from_record({k: v for k, v in a.to_record().items() if k != "runbook"})


# ----------------------------------------------------------------------------- the file


def test_default_path_is_under_dagster_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert default_alerts_path() == tmp_path.resolve() / "alerts" / "alerts.jsonl"
    sink = AlertSink()
    assert sink.send(make_alert()).recorded_now is True
    assert (tmp_path / "alerts" / "alerts.jsonl").is_file()
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "elsewhere.jsonl"))
    assert sink.path == tmp_path / "elsewhere.jsonl"
    assert AlertSink(alerts_path=str(tmp_path / "field.jsonl")).path == tmp_path / "field.jsonl"


def test_relative_paths_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"alert_sink.alerts_path: 'a/b.jsonl' is not an abs"):
        AlertSink(alerts_path="a/b.jsonl").send(make_alert())
    monkeypatch.setenv("CVN_ALERTS_PATH", "rel.jsonl")
    with pytest.raises(ValueError, match=r"CVN_ALERTS_PATH: 'rel.jsonl' is not an absolute"):
        AlertSink().send(make_alert())


def test_jsonl_written_and_read_back_with_exact_fields(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path))
    a = make_alert()
    b = make_alert(
        name="focal_training_crash",
        severity="P2",
        cryptos=(),
        figures={"failed_runs_1h": 6},
        incident_id="INC-20261201T1300-focal_training_crash",
        runbook="runbooks/runbook_focal_training_crash.md",
        message="6 failed focal runs in the last hour",
    )
    assert sink.send(a).recorded_now is True and sink.send(b).recorded_now is True

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    recorded_at = first.pop("recorded_at")
    assert datetime.fromisoformat(recorded_at).tzinfo is not None
    assert first == {
        "record": "alert",
        "name": "expectancy_negative_focal",
        "severity": "P1",
        "cryptos": ["BTCUSDC", "ETHUSDC"],
        "figures": {"expectancy_48h_btc": -0.0012, "n_trades_btc": 31, "focal_active": True},
        "incident_id": "INC-20261201T1300-expectancy_negative_focal-BTCUSDC+ETHUSDC",
        "runbook": RUNBOOK,
        "at": "2026-12-01T13:07:30+00:00",
        "message": "net expectancy < 0 over 48 h on 2 cryptos while focal is active",
        "channel": None,
    }

    got = read_alerts(path)
    assert [d["name"] for d in got] == ["expectancy_negative_focal", "focal_training_crash"]
    assert set(got[0]) == {
        "name", "severity", "cryptos", "figures", "incident_id", "runbook", "at", "message",
        "recorded_at", "delivered", "channel", "delivery",
    }  # fmt: skip
    assert got[0]["delivered"] == [] and got[1]["cryptos"] == []
    assert got[0]["delivery"] == "none"  # no channel configured
    assert [Alert.from_record(d) for d in got] == [a, b]
    assert read_alerts(tmp_path / "missing.jsonl") == []


def test_sending_twice_is_idempotent(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path))
    a = make_alert()
    assert sink.send(a).recorded_now is True
    # a re-executed run builds the same alert again (a later time, other figures)
    again = make_alert(at=AT + timedelta(minutes=5), figures={"expectancy_48h_btc": -0.002})
    assert sink.send(again).recorded_now is False
    assert AlertSink(alerts_path=str(path)).send(a).recorded_now is False
    assert len(read_alerts(path)) == 1
    # another rule on the same incident, or the same rule in another bucket, is a new alert
    assert sink.send(
        make_alert(name="expectancy_negative_focal_warn", severity="warn")
    ).recorded_now
    assert sink.send(
        make_alert(incident_id="INC-20261201T1400-expectancy_negative_focal")
    ).recorded_now
    assert len(read_alerts(path)) == 3


def test_a_torn_last_line_is_skipped_and_not_glued_to(tmp_path, caplog):
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"record": "alert", "name": "x", "sev')  # a crash mid-write
    sink = AlertSink(alerts_path=str(path))
    assert sink.send(make_alert()).recorded_now is True
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["name"] == "expectancy_negative_focal"
    assert [d["name"] for d in read_alerts(path)] == ["expectancy_negative_focal"]
    assert "line 1 is not JSON" in caplog.text


def test_send_refuses_other_values(tmp_path):
    with pytest.raises(TypeError, match="expected an Alert, got dict"):
        AlertSink(alerts_path=str(tmp_path / "a.jsonl")).send(make_alert().to_record())


def _send_many(path: str, worker: int, barrier) -> None:
    sink = AlertSink(alerts_path=path)
    barrier.wait()
    for i in range(20):
        sink.send(make_alert())  # every worker sends the same alert
        sink.send(make_alert(incident_id=f"INC-w{worker}-{i}", message=f"worker {worker} #{i}"))


def test_concurrent_appenders_write_each_alert_once(tmp_path):
    path = str(tmp_path / "alerts.jsonl")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_send_many, args=(path, w, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    raw = Path(path).read_text().splitlines()
    assert all(json.loads(line)["record"] == "alert" for line in raw)  # no torn lines
    keys = [(d["incident_id"], d["name"]) for d in read_alerts(path)]
    assert len(keys) == len(set(keys)) == 1 + 4 * 20
    rows = AlertSink(alerts_path=path).rows()  # the database agrees with the file
    assert sorted((r["incident_id"], r["name"]) for r in rows) == sorted(keys)
    assert {r["delivery_state"] for r in rows} == {"none"} and all(r["file_synced"] for r in rows)


def test_read_records_includes_deliveries(tmp_path):
    path = tmp_path / "alerts.jsonl"
    a = make_alert()
    path.write_text(
        json.dumps({"record": "alert", **a.to_record(), "recorded_at": AT.isoformat()})
        + "\n"
        + json.dumps(
            {
                "record": "delivery",
                "channel": "slack",
                "incident_id": a.incident_id,
                "name": a.name,
                "at": AT.isoformat(),
            }
        )
        + "\n"
    )
    assert [r["record"] for r in read_records(path)] == ["alert", "delivery"]
    assert read_alerts(path)[0]["delivered"] == ["slack"]
    assert read_alerts(path)[0]["delivery"] == "delivered"
    # the database had no row: sending records it there, and the file keeps one alert line
    assert AlertSink(alerts_path=str(path)).send(a).recorded_now is True
    assert [r["record"] for r in read_records(path)] == ["alert", "delivery"]


# ----------------------------------------------------------------------------- settings


def test_settings_know_and_check_the_alert_variables(tmp_path):
    assert {"CVN_ALERTS_PATH", "CVN_SLACK_WEBHOOK_URL"} <= set(KNOWN_ENV)
    check_environment(
        {
            "CVN_ALERTS_PATH": str(tmp_path / "a.jsonl"),
            "CVN_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/xyz",
        }
    )
    with pytest.raises(SettingsError, match=r"CVN_ALERTS_PATH: 'a.jsonl' is not an absolute"):
        check_environment({"CVN_ALERTS_PATH": "a.jsonl"})
    with pytest.raises(SettingsError, match=r"CVN_ALERTS_PATH: '.*' is a directory"):
        check_environment({"CVN_ALERTS_PATH": str(tmp_path)})
    secret = "ftp://hooks.example/services/T0/B0/SECRET"
    with pytest.raises(SettingsError, match="CVN_SLACK_WEBHOOK_URL: not an http") as err:
        check_environment({"CVN_SLACK_WEBHOOK_URL": secret})
    assert "SECRET" not in str(err.value)
    with pytest.raises(SettingsError, match="did you mean CVN_SLACK_WEBHOOK_URL"):
        check_environment({"CVN_SLACK_WEBHOOK": "https://x"})


def test_a_bad_webhook_url_is_refused_before_writing_and_not_echoed(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path), slack_webhook_url="hooks.slack.com/SECRET")
    with pytest.raises(ValueError, match="alert_sink.slack_webhook_url: not an http") as err:
        sink.send(make_alert())
    assert "SECRET" not in str(err.value)
    assert not path.exists()
    assert "SECRET" not in repr(sink)
    assert os.environ.get("CVN_SLACK_WEBHOOK_URL") is None


# ----------------------------------------------------------------------------- the database


def test_the_row_is_recorded_before_the_line_and_the_file_is_resynced(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path))
    a = make_alert()
    import sqlalchemy as sa

    from resources.alert_store import find
    from resources.db import write_transaction

    # recorded in the caller's transaction only (as a rollback's held + escalation): the row
    # exists, the file does not show it yet; sync_file writes the missing line once
    with write_transaction(sink.engine) as conn:
        row, created = sink.record_in(conn, a, now=AT)
        assert created and row["delivery_state"] == "none" and not row["file_synced"]
    assert not path.exists()
    assert sink.sync_file() == 1 and sink.sync_file() == 0
    assert [Alert.from_record(d) for d in read_alerts(path)] == [a]
    got = sink.get(a.incident_id, a.name)
    assert got["file_synced"] and got["recorded_at"] == AT and got["attempts"] == 0
    assert got["figures"] == a.figures and got["cryptos"] == list(a.cryptos)
    # a transaction that rolls back records nothing
    with pytest.raises(RuntimeError, match="boom"):
        with write_transaction(sink.engine) as conn:
            sink.record_in(conn, make_alert(incident_id="INC-rolled-back"), now=AT)
            raise RuntimeError("boom")
    with sink.engine.connect() as conn:
        assert find(conn, "INC-rolled-back", a.name) is None
        assert conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar() == 1


def test_policy_fields_are_checked_before_anything_is_written(tmp_path):
    path = tmp_path / "alerts.jsonl"
    for field, value, message in (
        ("attempts_per_run", 0, "must be >= 1, got 0"),
        ("max_attempts", 0, "must be >= 1, got 0"),
        ("slack_timeout_s", 0.0, "must be > 0, got 0.0"),
        ("max_wait_s", -1.0, "must be >= 0, got -1.0"),
    ):
        with pytest.raises(ValueError, match=f"alert_sink.{field}: {message}"):
            AlertSink(alerts_path=str(path), **{field: value}).send(make_alert())
    assert not path.exists() and AlertSink(alerts_path=str(path)).rows() == []


# ----------------------------------------------------------------------------- the policy


def test_retry_after_reads_seconds_and_http_dates():
    from resources.alert_policy import retry_after_seconds

    now = datetime(2026, 12, 1, 13, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("1", now) == 1.0
    assert retry_after_seconds(" 120 ", now) == 120.0
    # RFC 9110 HTTP-date: 30 s after now; one in the past means now
    assert retry_after_seconds("Tue, 01 Dec 2026 13:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Tue, 01 Dec 2026 12:59:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "-5", "nan", "inf"):
        assert retry_after_seconds(bad, now) is None, bad


def test_next_delay_is_the_capped_doubling_or_the_servers_retry_after():
    from resources.alert_policy import next_delay

    # base * 2**(attempts - 1), capped
    assert [next_delay(k, None, base=60, cap=3600) for k in (1, 2, 3, 6, 7, 8, 200)] == [
        60.0, 120.0, 240.0, 1920.0, 3600.0, 3600.0, 3600.0
    ]  # fmt: skip
    assert next_delay(1, 120.0, base=60, cap=3600) == 120.0  # the server asks for longer
    assert next_delay(3, 1.0, base=60, cap=3600) == 240.0  # never less than the backoff
    assert next_delay(1, 7200.0, base=60, cap=3600) == 7200.0  # honoured above the cap
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        next_delay(0, None, base=60, cap=3600)


def test_statuses_are_classified_for_retry():
    from resources.alert_policy import classify_status

    assert [classify_status(s) for s in (200, 204)] == ["ok", "ok"]
    assert {classify_status(s) for s in (408, 425, 429, 500, 502, 503, 504)} == {"transient"}
    assert {classify_status(s) for s in (400, 403, 404, 410, 301)} == {"permanent"}


def test_give_up_after_the_attempts_or_the_deadline():
    from resources.alert_policy import give_up

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    day = timedelta(hours=24)
    assert not give_up(11, t0, t0 + timedelta(hours=23), max_attempts=12, within=day)
    assert give_up(12, t0, t0, max_attempts=12, within=day)
    assert give_up(1, t0, t0 + day, max_attempts=12, within=day)


def test_an_unwritable_file_does_not_lose_the_alert(tmp_path, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the alerts directory should be")
    path = blocker / "alerts.jsonl"
    sink = AlertSink(alerts_path=str(path))
    out = sink.send(make_alert(), now=AT)  # recorded in the database, the file error logged
    assert out.recorded_now and out.state == "none"
    assert "was not written" in caplog.text
    row = sink.get(make_alert().incident_id, make_alert().name)
    assert row is not None and not row["file_synced"]
    assert [r["name"] for r in sink.due(AT)] == [make_alert().name]  # the sensor asks for a run
    assert sink.sync_file() == 0  # still unwritable
    blocker.unlink()  # mended: the next delivery run writes the line
    assert sink.sync_file() == 1 and sink.due(AT) == []
    assert [Alert.from_record(d) for d in read_alerts(path)] == [make_alert()]
