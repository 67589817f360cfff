"""The guard's sensors once under the **real daemon** (issue 12, "The incident drill", last
paragraph): ``dagster dev -m cvn_assets.definitions`` started in the background by PID with a
fresh ``DAGSTER_HOME`` (the project's ``dagster.yaml``: queued runs, one at a time), the
``expectancy_negative_focal`` sensor turned on with ``dagster sensor start`` and its cursor
preset (``dagster sensor cursor --set``) as if the previous clock hour had been a P1, two
cryptos whose focal champions (previous: the baseline) lost on >= 12 trades in the last 48 h,
and the wall clock. The daemon's first tick must page P1 (``alert_job``) and, being the
second P1 within 1 h, launch ``rollback_job``; the test waits for both runs, stops the
process group by PID and checks what the rollback changed."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import REPO, _free_port

pytestmark = [pytest.mark.webserver, pytest.mark.slow]

CRYPTOS = ("BTCUSDC", "ETHUSDC")
SENSOR = "expectancy_negative_focal"
MODULE = ["-m", "cvn_assets.definitions"]
BIN = Path(sys.executable).parent
WAIT_S = 180


def _reset_signals() -> None:
    """A child started from a script (or a backgrounded shell) may inherit SIGINT/SIGTERM
    ignored; `dagster dev` then ignores being stopped. Restore the defaults before exec."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _setup_registry(url: str, now: datetime) -> dict[str, dict[str, int]]:
    """Per crypto: a baseline champion (5 days ago) replaced by a focal one (3 days ago), and
    14 losing trades (net ~ -0.4 %) exiting every 2 h up to the current clock hour, and the
    journal's hours up to the clock (not stale)."""
    from cvn_assets.ablation.identity import SweepIdentity
    from resources.journal import replace_days
    from resources.model_registry import ModelRegistry
    from resources.results_store import ResultsStore
    from tests.support.journal_hours import journal_until

    ResultsStore(database_url=url).register_sweep(
        "s", SweepIdentity({"eta": 0.05}, {"universe": list(CRYPTOS)}, {"source": "x"}, {})
    )
    reg = ModelRegistry(database_url=url)
    hour = pd.Timestamp(now).floor("h").to_pydatetime()
    ids: dict[str, dict[str, int]] = {}
    for k, crypto in enumerate(CRYPTOS):
        ids[crypto] = {}
        for variant, loss, g, a, days_ago in (
            ("baseline", "binary:logistic", None, None, 5),
            ("focal_g2_a025", "focal", 2.0, 0.25, 3),
        ):
            vid = reg.register_version(
                crypto, variant, loss_function=loss, gamma=g, alpha=a,
                train_start=datetime(2025, 1, 1, tzinfo=UTC),
                train_end=datetime(2026, 1, 1, tzinfo=UTC), sweep_id="s",
                artifact_uri=f"file:///x/{crypto}/{variant}", reference_stats={},
            )  # fmt: skip
            reg.promote(crypto, vid, actor="t", reason="setup", at=now - timedelta(days=days_ago))
            ids[crypto][loss] = vid
        rng = np.random.default_rng(k)
        n = 14
        exits = [hour - timedelta(hours=2 * i) for i in range(n)][::-1]
        net = -0.004 + 0.001 * rng.standard_normal(n)
        trades = pd.DataFrame(
            {
                "crypto": crypto,
                "entry_time": [e - timedelta(hours=1) for e in exits],
                "entry_price": 100.0,
                "exit_time": exits,
                "exit_price": 100.0 * (1 + net + 0.002),
                "barrier": "sl",
                "gross_return": net + 0.002,
                "net_return": net,
                "model_version": ids[crypto]["focal"],
                "loss_function": "focal",
            }
        )
        days = sorted({pd.Timestamp(e).normalize() for e in exits})
        replace_days(reg.engine, crypto, days, None, trades)
        # the journal's hours reach the clock: guard_stale (RUNNING by default) stays quiet
        journal_until(url, crypto, ids[crypto]["focal"], now)
    return ids


def _cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(
        [str(BIN / "dagster"), *args, *MODULE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=_reset_signals,
    )
    assert out.returncode == 0, (
        f"dagster {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    )
    return out.stdout


def _stop(proc: subprocess.Popen) -> None:
    """Stop the process group we started, by its PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def test_daemon_ticks_the_p1_sensor_and_runs_the_rollback(tmp_path):
    missing = [
        b for b in ("dagster", "dagster-webserver", "dagster-daemon") if not (BIN / b).exists()
    ]
    if missing:
        pytest.skip(f"missing binaries {missing} in {BIN}")
    started = time.monotonic()
    # the guard's clock is fixed at the start of the current hour (CVN_GUARD_NOW), so however
    # late the daemon's first tick comes, it evaluates this hour, the one after the preset P1
    hour = pd.Timestamp(datetime.now(UTC)).floor("h").to_pydatetime()
    now = hour
    prev = hour - timedelta(hours=1)

    home = tmp_path / "home"
    home.mkdir()
    from resources.instance_storage import default_instance_yaml

    (home / "dagster.yaml").write_text(default_instance_yaml(str(home)))  # as the sweep writes it
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    alerts_path = tmp_path / "alerts.jsonl"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CVN_DATABASE_URL": url,
        "CVN_ALERTS_PATH": str(alerts_path),
        "CVN_STORE_DIR": str(tmp_path / "store"),
        "CVN_GUARD_NOW": hour.isoformat(),
    }
    env.pop("CVN_SLACK_WEBHOOK_URL", None)
    ids = _setup_registry(url, now)

    from resources.config_store import ConfigStore

    store = ConfigStore(database_url=url)
    assert store.get("CVN_LOSS_FUNCTION")[0] == "focal"  # the migration's seed

    cursor = json.dumps({"evaluated_hour": prev.isoformat(), "p1_times": [prev.isoformat()]})
    _cli(["sensor", "start", SENSOR], env)
    _cli(["sensor", "cursor", SENSOR, "--set", cursor], env)

    log_path = tmp_path / "dagster_dev.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", *MODULE, "-h", "127.0.0.1", "-p", str(_free_port())],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole by PID
        preexec_fn=_reset_signals,
    )
    runs: dict[str, object] = {}
    try:
        from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

        deadline = time.monotonic() + WAIT_S
        with DagsterInstance.from_config(str(home)) as instance:
            while True:
                runs = {
                    name: instance.get_run_records(RunsFilter(job_name=name), limit=5)
                    for name in ("rollback_job", "alert_job")
                }
                done = all(
                    recs and recs[0].dagster_run.status in (DagsterRunStatus.SUCCESS,)
                    for recs in runs.values()
                ) and all(
                    r.dagster_run.is_finished for recs in runs.values() for r in recs
                )  # fmt: skip
                failed = [
                    r.dagster_run for recs in runs.values() for r in recs
                    if r.dagster_run.status == DagsterRunStatus.FAILURE
                ]  # fmt: skip
                if done or failed or proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(2)
            tail = log_path.read_text()[-4000:]
            assert not failed, f"failed runs {[r.job_name for r in failed]}:\n{tail}"
            assert proc.poll() is None, f"dagster dev exited ({proc.returncode}):\n{tail}"
            assert done, f"no successful rollback/alert run after {WAIT_S} s: {runs}\n{tail}"
            rollback_runs = [r.dagster_run for r in runs["rollback_job"]]
            alert_runs = [r.dagster_run for r in runs["alert_job"]]
            ticks = instance.get_ticks(
                next(
                    s.instigator_origin_id
                    for s in instance.all_instigator_state()
                    if s.instigator_name == SENSOR
                ),
                next(
                    s.selector_id
                    for s in instance.all_instigator_state()
                    if s.instigator_name == SENSOR
                ),
            )
    finally:
        _stop(proc)
        log.close()
    assert proc.poll() is not None

    # exactly one rollback run, launched by the sensor, tagged with its incident
    assert len(rollback_runs) == 1
    rb = rollback_runs[0]
    assert rb.status == DagsterRunStatus.SUCCESS
    incident = rb.tags["cvn/incident"]
    assert incident and rb.tags.get("dagster/sensor_name") == SENSOR
    assert rb.tags.get("dagster/run_key") == f"rollback:auto:{hour:%Y-%m-%dT%H}"
    cfg = rb.run_config["ops"]["rollback"]["config"]
    assert (cfg["trigger"], cfg["actor"]) == ("auto", f"sensor:{SENSOR}")
    # one P1 alert run (this hour; the previous hour's P1 was the preset cursor)
    assert [r.tags.get("cvn/severity") for r in alert_runs] == ["P1"]
    assert (
        ticks
        and ticks[0].cursor
        and json.loads(ticks[0].cursor)["p1_times"]
        == [
            prev.isoformat(),
            hour.isoformat(),
        ]
    )

    # the kill switch: flipped once, audited by the sensor's actor
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)
    audit = store.audit("CVN_LOSS_FUNCTION")[1:]  # [0]: the migration's seed row
    assert [(a["actor"], a["incident_id"], a["new_value"]) for a in audit] == [
        (f"sensor:{SENSOR}", incident, "binary:logistic")
    ]
    # both champions re-promoted to their baseline
    from resources.model_registry import ModelRegistry
    from resources.rollbacks import RollbackLog

    reg = ModelRegistry(database_url=url)
    for crypto in CRYPTOS:
        assert reg.alias(crypto, "champion")["id"] == ids[crypto]["binary:logistic"]
        assert reg.alias(crypto, "previous")["id"] == ids[crypto]["focal"]
    # the incident waits 15 min for an operator's confirmation
    row = RollbackLog(database_url=url).get(incident)
    assert row["state"] == "pending" and row["trigger"] == "auto"
    assert row["confirm_by"] == row["triggered_at"] + timedelta(minutes=15)
    assert row["dagster_run_id"] == rb.run_id and row["cryptos"] == sorted(CRYPTOS)
    assert row["triggered_at"] == hour  # the fixed guard clock (CVN_GUARD_NOW)
    # the alerts file: the P1 and the rollback
    from resources.alerts import read_alerts

    alerts = read_alerts(alerts_path)
    assert sorted((a["name"], a["severity"]) for a in alerts) == [
        ("expectancy_negative_focal", "P1"),
        ("rollback", "P1"),
    ]
    p1 = next(a for a in alerts if a["name"] == SENSOR)
    assert sorted(p1["cryptos"]) == sorted(CRYPTOS)
    assert next(a for a in alerts if a["name"] == "rollback")["incident_id"] == incident
    # the rollback carries the first P1's incident id (the preset previous hour's), and its
    # reason names the second P1's (this hour's alert) too
    from resources.alerts import incident_id

    assert incident == incident_id(SENSOR, CRYPTOS, prev)
    assert (
        p1["incident_id"] == incident_id(SENSOR, CRYPTOS, hour)
        and p1["incident_id"] in cfg["reason"]
    )
    print(f"daemon test: {time.monotonic() - started:.1f} s, rollback run {rb.run_id}")
