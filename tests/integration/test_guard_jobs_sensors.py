"""The guard's jobs and sensors (issue "Production guard, part 2") on real databases and a real
Dagster instance: rollback (idempotent; concurrent runs flip once on PostgreSQL), the
confirmation branches, halt/resume, and the sensors' decisions on hand-made journals."""

import json
import multiprocessing as mp
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError, build_sensor_context, job, op

from cvn_assets.ablation.identity import SweepIdentity
from cvn_assets.definitions import defs
from cvn_assets.run_errors import run_failure_line
from resources.alerts import read_alerts
from resources.config_store import ConfigStore
from resources.guard_clock import GuardClock
from resources.journal import replace_days
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from resources.rollbacks import RollbackLog
from tests.support.journal_hours import journal_until

CRYPTOS = ("BTCUSDC", "ETHUSDC")
T0 = datetime(2026, 3, 2, 0, tzinfo=UTC)  # promotions happen before, trades after
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _setup(url: str) -> dict[str, dict[str, int]]:
    """Two cryptos, each with a baseline champion replaced by a focal one (previous =
    baseline); returns {crypto: {"baseline": id, "focal": id}}."""
    ResultsStore(database_url=url).register_sweep(
        "s", SweepIdentity({"eta": 0.05}, {"universe": list(CRYPTOS)}, {"source": "x"}, {})
    )
    reg = ModelRegistry(database_url=url)
    ids: dict[str, dict[str, int]] = {}
    for crypto in CRYPTOS:
        ids[crypto] = {}
        for k, (variant, loss, g, a) in enumerate(
            (("baseline", "binary:logistic", None, None), ("focal_g2_a025", "focal", 2.0, 0.25))
        ):
            vid = reg.register_version(
                crypto, variant, loss_function=loss, gamma=g, alpha=a,
                train_start=datetime(2025, 1, 1, tzinfo=UTC),
                train_end=datetime(2026, 1, 1, tzinfo=UTC), sweep_id="s",
                artifact_uri=f"file:///x/{crypto}/{variant}", reference_stats={},
            )  # fmt: skip
            reg.promote(crypto, vid, actor="t", reason="setup", at=T0 - timedelta(hours=2 - k))
            ids[crypto][variant.split("_")[0]] = vid
    return ids


@pytest.fixture
def home(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'guard.sqlite'}"
    monkeypatch.setenv("CVN_DATABASE_URL", url)
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "alerts.jsonl"))
    return url, tmp_path


def _run(job_name: str, config: dict, instance=None, clock: datetime | None = None):
    rc = {**QUIET, "ops": config}
    if clock is not None:
        rc["resources"] = {"guard_clock": {"config": {"fixed_now": clock.isoformat()}}}
    return defs.resolve_job_def(job_name).execute_in_process(
        run_config=rc, instance=instance or DagsterInstance.ephemeral(), raise_on_error=False
    )


def _rollback(incident: str = "INC-test", trigger: str = "manual", clock=None):
    cfg = {"actor": "alice", "reason": "test rollback", "incident_id": incident, "trigger": trigger}
    return _run("rollback_job", {"rollback": {"config": cfg}}, clock=clock)


def test_rollback_flips_repromotes_audits_and_is_idempotent(home):
    url, tmp = home
    ids = _setup(url)
    reg, store = ModelRegistry(database_url=url), ConfigStore(database_url=url)
    assert store.get("CVN_LOSS_FUNCTION") == ("focal", 1)
    assert _rollback().success
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)
    audit = store.audit("CVN_LOSS_FUNCTION")[1:]  # [0]: the migration's seed row
    assert [(a["actor"], a["incident_id"], a["old_value"], a["new_value"]) for a in audit] == [
        ("alice", "INC-test", "focal", "binary:logistic")
    ]
    for crypto in CRYPTOS:
        assert reg.alias(crypto, "champion")["id"] == ids[crypto]["baseline"]
        assert reg.alias(crypto, "previous")["id"] == ids[crypto]["focal"]
    row = RollbackLog(database_url=url).get("INC-test")
    assert row["state"] == "confirmed" and row["flipped"] and row["cryptos"] == sorted(CRYPTOS)
    n_history = len(reg.history())
    alerts = read_alerts(tmp / "alerts.jsonl")
    assert [(a["name"], a["severity"]) for a in alerts] == [("rollback", "P1")]

    # a second run (same or another incident) changes nothing
    assert _rollback().success and _rollback("INC-other").success
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)
    assert len(store.audit("CVN_LOSS_FUNCTION")) == 2
    assert len(reg.history()) == n_history
    for crypto in CRYPTOS:
        assert reg.alias(crypto, "champion")["id"] == ids[crypto]["baseline"]


def test_rollback_refuses_bad_config_before_any_change(home):
    url, _ = home
    _setup(url)
    res = _run("rollback_job", {"rollback": {"config": {"actor": " ", "reason": "x"}}})
    assert not res.success
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION") == ("focal", 1)
    cfg = {"actor": "a", "reason": "r", "cryptos": ["DOGEUSDC"]}
    with pytest.raises(DagsterInvalidConfigError, match="DOGEUSDC"):  # the schema: no run
        _run("rollback_job", {"rollback": {"config": cfg}})
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION") == ("focal", 1)


def _rollback_in_process(url: str, alerts: str, gate: str, incident: str) -> None:
    """Child: announce it is ready (definitions loaded), wait for the gate file, roll back,
    write the run's success next to the gate."""
    import os
    import time
    from pathlib import Path

    os.environ["CVN_DATABASE_URL"] = url
    os.environ["CVN_ALERTS_PATH"] = alerts
    Path(f"{gate}.{incident}.ready").touch()
    deadline = time.monotonic() + 240
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    Path(f"{gate}.{incident}.ok").write_text(str(_rollback(incident).success))


def test_two_concurrent_rollbacks_flip_once_on_postgres(pg_database, tmp_path, monkeypatch):
    monkeypatch.setenv("CVN_DATABASE_URL", pg_database)
    ids = _setup(pg_database)
    ctx = mp.get_context("spawn")
    alerts = str(tmp_path / "alerts.jsonl")
    gate = str(tmp_path / "go")
    # two plain processes released together by a file (no Pool or Manager: a stuck child is
    # killed, it cannot hang the test in Pool.terminate)
    procs = [
        ctx.Process(target=_rollback_in_process, args=(pg_database, alerts, gate, inc))
        for inc in ("INC-a", "INC-b")
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"go.{i}.ready").exists() for i in ("INC-a", "INC-b")):
        assert time.monotonic() < deadline, "the rollback processes did not start"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for proc in procs:
        proc.join(timeout=300)
        if proc.is_alive():
            proc.kill()
            proc.join()
    oks = [
        (tmp_path / f"go.{i}.ok").exists() and (tmp_path / f"go.{i}.ok").read_text() == "True"
        for i in ("INC-a", "INC-b")
    ]
    assert oks == [True, True]
    store, reg = ConfigStore(database_url=pg_database), ModelRegistry(database_url=pg_database)
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)
    assert len(store.audit("CVN_LOSS_FUNCTION")) == 2  # the seed + one flip
    for crypto in CRYPTOS:
        assert reg.alias(crypto, "champion")["id"] == ids[crypto]["baseline"]  # not swapped back
        champion_rows = [h for h in reg.history(crypto, "champion")]
        assert len(champion_rows) == 3  # baseline, focal, baseline again: one re-promotion


def _tick(name: str, now: datetime, url: str, cursor=None, instance=None):
    sdef = defs.get_repository_def().get_sensor_def(name)
    ctx = build_sensor_context(
        instance=instance or DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={
            "guard_clock": GuardClock(fixed_now=now.isoformat()),
            "model_registry": ModelRegistry(database_url=url),
            "config_store": ConfigStore(database_url=url),
            "rollback_log": RollbackLog(database_url=url),
        },
        sensor_name=name,
        definitions=defs,
    )
    return sdef.evaluate_tick(ctx)


def test_confirmation_branches(home):
    url, tmp = home
    _setup(url)
    log = RollbackLog(database_url=url)
    now = T0 + timedelta(days=3)
    # unconfirmed: pending until +15 min, then held and escalated (once)
    assert _rollback("INC-auto1", "auto", clock=now).success
    assert log.get("INC-auto1")["state"] == "pending"
    assert log.get("INC-auto1")["confirm_by"] == now + timedelta(minutes=15)
    early = _tick("rollback_confirmation", now + timedelta(minutes=14), url)
    assert not early.run_requests
    late = _tick("rollback_confirmation", now + timedelta(minutes=15), url)
    # the key holds the 15-min bucket: a failed escalation run is asked again in the next one
    assert [r.run_key for r in late.run_requests] == [
        f"escalation:INC-auto1:{now + timedelta(minutes=15):%Y-%m-%dT%H%M}"
    ]
    assert log.get("INC-auto1")["state"] == "pending"  # a tick changes nothing itself
    req = late.run_requests[0]
    for _ in range(2):  # re-executed: held once, escalated once
        assert _run(req.job_name, req.run_config["ops"], clock=now + timedelta(minutes=16)).success
    assert log.get("INC-auto1")["state"] == "held"
    esc = [a for a in read_alerts(tmp / "alerts.jsonl") if a["name"] == "rollback_unconfirmed"]
    assert [(a["severity"], a["incident_id"]) for a in esc] == [("P1", "INC-auto1")]
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION")[0] == "binary:logistic"
    assert not _tick("rollback_confirmation", now + timedelta(hours=1), url).run_requests
    # confirmed in time: no escalation; a late confirmation also closes a held one
    log.record("INC-auto2", trigger="auto", actor="s", reason="r", cryptos=[], flipped=False,
               at=now)  # fmt: skip
    res = _run(
        "confirm_rollback_job",
        {
            "confirm_rollback": {
                "config": {"actor": "bob", "reason": "seen", "incident_id": "INC-auto2"}
            }
        },
        clock=now + timedelta(minutes=5),
    )
    assert res.success
    row = log.get("INC-auto2")
    assert (row["state"], row["confirmed_by"]) == ("confirmed", "bob")
    assert not _tick("rollback_confirmation", now + timedelta(minutes=20), url).run_requests
    assert log.confirm("INC-auto1", actor="bob", reason="late")["state"] == "confirmed"


def test_halt_and_resume_are_audited_and_idempotent(home):
    url, _ = home
    _setup(url)
    store = ConfigStore(database_url=url)
    cfg = {"config": {"actor": "ops", "reason": "exchange outage"}}
    assert _run("halt_trading_job", {"halt_trading": cfg}).success
    assert store.get("trading_halted") == ("true", 2)
    assert _run("halt_trading_job", {"halt_trading": cfg}).success
    assert store.get("trading_halted") == ("true", 2)  # nothing changed
    assert _run("resume_trading_job", {"resume_trading": cfg}).success
    assert store.get("trading_halted") == ("false", 3)
    assert [a["new_value"] for a in store.audit("trading_halted")][1:] == ["true", "false"]


def _losing_trades(url: str, crypto: str, version: int, end: datetime, n: int, seed: int):
    """``n`` trades exiting every 2 h up to ``end``, net returns ~ -0.4 % +- 0.1 %; the
    journal's hours reach ``end`` (not stale)."""
    rng = np.random.default_rng(seed)
    exits = [end - timedelta(hours=2 * i) for i in range(n)][::-1]
    net = -0.004 + 0.001 * rng.standard_normal(n)
    frame = pd.DataFrame(
        {
            "crypto": crypto,
            "entry_time": [e - timedelta(hours=1) for e in exits],
            "entry_price": 100.0,
            "exit_time": exits,
            "exit_price": 100.0 * (1 + net + 0.002),
            "barrier": "sl",
            "gross_return": net + 0.002,
            "net_return": net,
            "model_version": version,
            "loss_function": "focal",
        }
    )
    days = sorted({pd.Timestamp(e).normalize() for e in exits})
    replace_days(ModelRegistry(database_url=url).engine, crypto, days, None, frame)
    journal_until(url, crypto, version, end)
    return net


def test_expectancy_p1_twice_within_an_hour_requests_one_rollback(home):
    url, _ = home
    ids = _setup(url)
    now = T0 + timedelta(days=2, hours=12)  # 60 h after the focal promotions
    nets = {c: _losing_trades(url, c, ids[c]["focal"], now, 12, k) for k, c in enumerate(CRYPTOS)}
    # hand check of the rule: one-sided t-test of mean < 0 over the 48 h window, n = 12
    from scipy import stats

    for net in nets.values():
        assert stats.ttest_1samp(net, 0.0, alternative="less").pvalue < 0.05
    first = _tick("expectancy_negative_focal", now, url)
    assert [r.job_name for r in first.run_requests] == ["alert_job"]
    alert = first.run_requests[0]
    cfg = alert.run_config["ops"]["send_alert"]["config"]
    assert (cfg["severity"], cfg["cryptos"]) == ("P1", sorted(CRYPTOS))
    assert alert.run_key == f"alert:expectancy_negative_focal:P1:{now:%Y-%m-%dT%H}"
    figures = json.loads(cfg["figures_json"])
    assert figures["BTCUSDC_n_48h"] == 12
    assert figures["BTCUSDC_mean_48h"] == pytest.approx(float(np.mean(nets["BTCUSDC"])), abs=1e-6)
    # the same hour again: nothing (the cursor holds the evaluated hour)
    again = _tick("expectancy_negative_focal", now + timedelta(minutes=20), url, first.cursor)
    assert not again.run_requests
    # the next hour, not yet journaled: not judged yet (the rule waits for the journal)
    later = now + timedelta(hours=1)
    waiting = _tick("expectancy_negative_focal", later, url, first.cursor)
    assert not waiting.run_requests and "waiting for the journal" in waiting.skip_message
    # journaled: a second P1 within 1 h -> the rollback
    for c in CRYPTOS:
        journal_until(url, c, ids[c]["focal"], later)
    second = _tick("expectancy_negative_focal", later, url, first.cursor)
    assert sorted(r.job_name for r in second.run_requests) == ["alert_job", "rollback_job"]
    rb = next(r for r in second.run_requests if r.job_name == "rollback_job")
    assert rb.run_config["ops"]["rollback"]["config"]["trigger"] == "auto"
    # after the rollback the flag is binary:logistic: a third P1 hour requests no rollback
    assert _rollback("INC-x").success
    third = _tick("expectancy_negative_focal", later + timedelta(hours=1), url, second.cursor)
    assert all(r.job_name != "rollback_job" for r in third.run_requests)


def test_expectancy_is_insufficient_with_few_trades(home):
    url, _ = home
    ids = _setup(url)
    now = T0 + timedelta(days=2, hours=12)
    for k, c in enumerate(CRYPTOS):
        _losing_trades(url, c, ids[c]["focal"], now, 9, k)  # < 10 trades in 48 h
    res = _tick("expectancy_negative_focal", now, url)
    assert not res.run_requests
    assert "insufficient" in res.skip_message and "cannot fire" in res.skip_message


@op(tags={"cvn/loss_function": "focal"})
def _boom():
    raise RuntimeError("training crashed")


@job(tags={"cvn/loss_function": "focal"})
def _focal_training():
    _boom()


def test_focal_training_crash_counts_failed_runs_in_the_last_hour(home, tmp_path):
    url, _ = home
    instance = DagsterInstance.ephemeral()
    for _ in range(5):
        _focal_training.execute_in_process(instance=instance, raise_on_error=False)
    now = datetime.now(UTC)
    assert not _tick("focal_training_crash", now, url, instance=instance).run_requests  # 5: not > 5
    _focal_training.execute_in_process(instance=instance, raise_on_error=False)
    now = datetime.now(UTC)
    res = _tick("focal_training_crash", now, url, instance=instance)
    assert [r.job_name for r in res.run_requests] == ["alert_job"]
    cfg = res.run_requests[0].run_config["ops"]["send_alert"]["config"]
    assert cfg["severity"] == "P2" and json.loads(cfg["figures_json"])["failed_runs_last_hour"] == 6
    fig = json.loads(cfg["figures_json"])
    assert fig["window_end"] == now.isoformat()
    assert fig["window_start"] == (now - timedelta(hours=1)).isoformat()
    assert len(fig["run_ids"].split(",")) == 6 and fig["run_ids"] in cfg["message"]
    # the window is the hour before the clock: evaluated two hours earlier, none counts
    assert not _tick("focal_training_crash", now - timedelta(hours=2), url,
                     instance=instance).run_requests  # fmt: skip


def test_sparse_traders_get_their_own_p2_on_their_last_trades_of_the_live_model(home):
    url, _ = home
    ids = _setup(url)
    now = T0 + timedelta(days=6)
    for k, c in enumerate(CRYPTOS):  # 12 losing trades, one every 10 h: 5 in the last 48 h
        rng = np.random.default_rng(k)
        exits = [now - timedelta(hours=10 * i) for i in range(12)][::-1]
        net = -0.004 + 0.001 * rng.standard_normal(12)
        frame = pd.DataFrame(
            {"crypto": c, "entry_time": [e - timedelta(hours=1) for e in exits],
             "entry_price": 100.0, "exit_time": exits, "exit_price": 99.6, "barrier": "sl",
             "gross_return": net + 0.002, "net_return": net,
             "model_version": ids[c]["focal"], "loss_function": "focal"}
        )  # fmt: skip
        days = sorted({pd.Timestamp(e).normalize() for e in exits})
        replace_days(ModelRegistry(database_url=url).engine, c, days, None, frame)
        journal_until(url, c, ids[c]["focal"], now)  # the journal is current: not stale
    from sensors.evaluation import evaluate_expectancy, evaluate_sparse_expectancy

    reg = ModelRegistry(database_url=url)
    ev = evaluate_expectancy(reg, CRYPTOS, now)
    assert ev.verdict.level == "insufficient"  # 5 trades in 48 h: the P1 cannot judge them
    sparse = evaluate_sparse_expectancy(reg, CRYPTOS, now)
    assert sorted(sparse) == sorted(CRYPTOS)
    btc = sparse["BTCUSDC"]
    assert btc.verdict.level == "crit" and btc.verdict.n == 10 and btc.n_48h == 5
    assert btc.first_exit == now - timedelta(hours=90)  # the last 10 of the 12
    # the same trades attributed to the baseline (not the live model) do not count
    assert not evaluate_sparse_expectancy(reg, CRYPTOS, T0 - timedelta(hours=1))


def test_halt_and_resume_take_effect_when_told_and_refuse_bad_times(home):
    """``effective_at`` (any offset) or the guard clock dates the change in config_audit: the
    time the paper replay reads the flag by (cvn_assets.guard.flags)."""
    url, _ = home
    _setup(url)
    store = ConfigStore(database_url=url)
    who = {"actor": "ops", "reason": "exchange outage"}
    ist = "2024-06-01T20:30:00+05:30"  # 15:00 UTC
    assert _run(
        "halt_trading_job", {"halt_trading": {"config": {**who, "effective_at": ist}}}
    ).success
    clock = datetime(2024, 6, 2, 9, 0, tzinfo=UTC)
    assert _run("resume_trading_job", {"resume_trading": {"config": who}}, clock=clock).success
    audit = store.audit("trading_halted")
    assert [(a["new_value"], a["changed_at"]) for a in audit[1:]] == [
        ("true", datetime(2024, 6, 1, 15, 0, tzinfo=UTC)),
        ("false", clock),
    ]
    hist = store.history("trading_halted")
    # decisions at 15:00 (the 14:00 candle) .. 08:00 (the 07:00 candle) are halted
    assert hist.at_decision(datetime(2024, 6, 1, 13, tzinfo=UTC)) == "false"
    assert hist.at_decision(datetime(2024, 6, 1, 14, tzinfo=UTC)) == "true"
    assert hist.at_decision(datetime(2024, 6, 2, 7, tzinfo=UTC)) == "true"
    assert hist.at_decision(datetime(2024, 6, 2, 8, tzinfo=UTC)) == "false"
    # before the last change, naive, or in the future: refused, nothing written
    for when, needle in (
        ("2024-06-02T08:59:00+00:00", "precedes the flag's last change"),
        ("2024-06-03T00:00:00", "naive time"),
        ("2999-01-01T00:00:00+00:00", "in the future"),
    ):
        res = _run("halt_trading_job", {"halt_trading": {"config": {**who, "effective_at": when}}})
        assert not res.success
        assert needle in run_failure_line(res)
    assert store.get("trading_halted") == ("false", 3)
