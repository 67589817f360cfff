"""The operator command (``python -m cvn_assets.ops``) on a real SQLite home built by hand
(:mod:`tests.support.ops_home`: the state a crash drill leaves after its automatic rollback):
what ``status`` shows is the hand-built truth; the actions run the guard's Dagster jobs on the
home's instance (audited rows, a run per action); a bad input is one line, exit status 2,
before anything is written."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, RunsFilter
from scipy import stats

from cvn_assets import ops
from cvn_assets.definitions import defs
from cvn_assets.guard.drift import EXPECTANCY_ALPHA
from resources.alerts import AlertSink
from resources.config_store import ConfigStore
from resources.model_registry import ModelRegistry
from resources.rollbacks import RollbackLog
from tests.support.ops_home import QUIET, build_home

ROOT = Path(__file__).resolve().parents[2]


def _home(h: Path, mp: pytest.MonkeyPatch) -> dict:
    mp.setenv("DAGSTER_HOME", str(h))
    for var in ("CVN_DATABASE_URL", "CVN_ALERTS_PATH", "CVN_SLACK_WEBHOOK_URL", "CVN_GUARD_NOW"):
        mp.delenv(var, raising=False)
    truth = build_home(h)
    mp.setenv("CVN_GUARD_NOW", truth["now"].isoformat())
    return truth


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One home for the tests that write nothing (reads, refusals)."""
    with pytest.MonkeyPatch.context() as mp:
        yield _home(tmp_path_factory.mktemp("ops") / "home", mp)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home for the tests that act."""
    return _home(tmp_path / "home", monkeypatch)


def _ops(capsys, *argv: str) -> tuple[int, str, str]:
    rc = ops.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _runs() -> list:
    return list(DagsterInstance.get().get_runs(filters=RunsFilter(tags={"cvn/ops": "*"})))


def _ops_runs(command: str) -> list:
    return list(DagsterInstance.get().get_runs(filters=RunsFilter(tags={"cvn/ops": command})))


def test_status_shows_the_hand_built_truth(shared, capsys):
    home = shared
    rc, out, err = _ops(capsys, "status", "--json")
    assert rc == 0 and err == ""
    view = json.loads(out)
    flags = {f["flag"]: f for f in view["flags"]}
    assert (flags["CVN_LOSS_FUNCTION"]["value"], flags["CVN_LOSS_FUNCTION"]["version"]) == (
        "binary:logistic", 2,
    )  # fmt: skip
    assert flags["CVN_LOSS_FUNCTION"]["incident_id"] == home["rollback"]
    assert flags["CVN_LOSS_FUNCTION"]["actor"] == "guard"
    assert (flags["trading_halted"]["value"], flags["trading_halted"]["version"]) == ("false", 1)
    rows = {r["crypto"]: r for r in view["cryptos"]}
    ids = home["ids"]
    # after the rollback: the baselines are champions again; BTCUSDC keeps its candidate
    assert rows["BTCUSDC"]["champion"]["version_id"] == ids["BTCUSDC"]["baseline"]
    assert rows["ETHUSDC"]["champion"]["version_id"] == ids["ETHUSDC"]["baseline"]
    assert rows["BTCUSDC"]["candidate"]["version_id"] == ids["BTCUSDC"]["candidate"]
    assert rows["ETHUSDC"]["candidate"] is None and rows["BNBUSDC"]["champion"] is None
    hour = home["hour"]
    # journals: to H - 1 h (0 closed hours behind at H + 10 min), SOLUSDC to H - 10 h (9: stale)
    assert rows["BTCUSDC"]["last_hour"] == (hour - timedelta(hours=1)).isoformat()
    assert [rows[c]["hours_behind"] for c in ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC")] == [
        0, 0, 9, None,
    ]  # fmt: skip
    assert [c for c, r in rows.items() if r["stale"]] == ["SOLUSDC"]
    (rb,) = view["rollbacks_open"]
    assert (rb["incident_id"], rb["state"], rb["trigger"]) == (home["rollback"], "pending", "auto")
    assert rb["confirm_by"] == (hour + timedelta(minutes=15)).isoformat()
    (alert,) = view["alerts_undelivered"]
    assert (alert["incident_id"], alert["delivery_state"]) == (home["alerts"]["stale"], "failed")

    rc, text, _ = _ops(capsys, "status")
    assert rc == 0
    assert "in 5 min" in text  # H + 15 min, seen at H + 10 min
    assert "SOLUSDC  v5" in text and "STALE" in text and "HTTP 404 (no_service)" in text
    assert len(text.splitlines()) < 40  # one screen


def test_evaluate_as_of_just_before_the_rollback(shared, capsys):
    home = shared
    rc, out, _ = _ops(capsys, "evaluate", "--json")
    after = json.loads(out)
    assert rc == 0 and after["level"] == "ok" and "focal not active" in after["reason"]
    rc, out, _ = _ops(capsys, "evaluate", "--before-rollback", "--json")
    before = json.loads(out)
    assert (
        rc == 0 and before["level"] == "crit" and before["focal_cryptos"] == ["BTCUSDC", "ETHUSDC"]
    )
    per = {c["crypto"]: c for c in before["per_crypto"]}
    for crypto, net in home["nets"].items():
        # the hand check: mean and the one-sided critical mean -t(1 - alpha, n-1) s / sqrt(n)
        t = stats.t.ppf(1 - EXPECTANCY_ALPHA, len(net) - 1)
        crit = -t * np.std(net, ddof=1) / np.sqrt(len(net))
        assert per[crypto]["mean"] == pytest.approx(np.mean(net), abs=1e-9)
        assert per[crypto]["critical"] == pytest.approx(crit, abs=1e-9)
        assert per[crypto]["version"] == home["ids"][crypto]["focal"]
    rc, out, _ = _ops(capsys, "evaluate", "--before-rollback", home["rollback"])
    assert rc == 0 and out.startswith("expectancy_negative_focal as of") and "crit - P1" in out


def test_reads_alerts_audit_models(shared, capsys):
    home = shared
    rc, out, _ = _ops(capsys, "alerts", "--state", "failed", "none", "--json")
    assert rc == 0
    assert sorted(a["name"] for a in json.loads(out)) == [
        "expectancy_negative_focal", "guard_stale", "rollback",
    ]  # fmt: skip
    rc, out, _ = _ops(capsys, "alerts", "--since", home["hour"].isoformat(), "--name", "rollback")
    assert rc == 0 and home["rollback"] in out and "guard_stale" not in out
    rc, out, _ = _ops(
        capsys, "alerts", "--since", (home["hour"] + timedelta(seconds=1)).isoformat()
    )
    assert rc == 0 and out.strip() == "none"
    rc, out, _ = _ops(capsys, "audit", "--flag", "CVN_LOSS_FUNCTION", "--json")
    rows = json.loads(out)
    assert [(r["old_value"], r["new_value"]) for r in rows] == [
        (None, "focal"), ("focal", "binary:logistic"),
    ]  # fmt: skip
    rc, out, _ = _ops(capsys, "models", "--crypto", "BTCUSDC", "--history", "3", "--json")
    view = json.loads(out)
    (m,) = view["models"]
    assert (m["champion"]["id"], m["previous"]["id"]) == (
        home["ids"]["BTCUSDC"]["baseline"], home["ids"]["BTCUSDC"]["focal"],
    )  # fmt: skip
    assert len(view["history"]) == 3
    # trades: the hand-made losing trades of the focal champion, mean = numpy's
    end = home["hour"].isoformat()
    rc, out, _ = _ops(capsys, "trades", "--crypto", "ETHUSDC", "--end", end, "--json")
    view = json.loads(out)
    assert rc == 0 and view["n"] == 12
    assert view["mean_net"] == pytest.approx(np.mean(home["nets"]["ETHUSDC"]), abs=1e-12)
    assert {t["model_version"] for t in view["trades"]} == {home["ids"]["ETHUSDC"]["focal"]}
    rc, out, _ = _ops(capsys, "trades", "--crypto", "ETHUSDC", "--end", end, "--hours", "3")
    assert rc == 0 and out.startswith("ETHUSDC: 2 trades exiting in [")  # 10:00, 12:00
    rc, out, _ = _ops(capsys, "events", "--json")
    (event,) = json.loads(out)
    assert (event["crypto"], event["kind"]) == ("SOLUSDC", "flags_unreadable")
    assert event["first_hour"] == (home["hour"] - timedelta(hours=12)).isoformat()


def test_actions_run_the_jobs_and_are_audited(home, capsys):
    inc = home["alerts"]["p1"]
    store, log, reg = ConfigStore(), RollbackLog(), ModelRegistry()
    # confirm without an id: the one open incident
    rc, out, err = _ops(capsys, "confirm", "--actor", "alice", "--reason", "checked")
    assert rc == 0, err
    row = log.get(home["rollback"])
    assert (row["state"], row["confirmed_by"], row["confirm_reason"]) == (
        "confirmed", "alice", "checked",
    )  # fmt: skip
    # halt from a given time, then resume (both audited with the incident)
    at = (home["hour"] + timedelta(minutes=7)).isoformat()
    rc, out, err = _ops(
        capsys, "halt", "--actor", "bob", "--reason", "feed", "--incident-id", inc,
        "--effective-at", at,
    )  # fmt: skip
    assert rc == 0, err
    assert "trading_halted: true (version 2)" in out
    last = store.audit("trading_halted")[-1]
    assert (last["actor"], last["reason"], last["incident_id"], last["new_value"]) == (
        "bob", "feed", inc, "true",
    )  # fmt: skip
    assert last["changed_at"].isoformat() == at
    rc, _, err = _ops(capsys, "resume", "--actor", "bob", "--reason", "fixed", "--incident-id", inc)
    assert rc == 0, err
    assert store.get("trading_halted") == ("false", 3)
    # a manual rollback on a subset: recorded confirmed by its actor (nothing left to flip)
    rc, out, err = _ops(
        capsys, "rollback", "--actor", "carol", "--reason", "again", "--cryptos", "BTCUSDC"
    )
    assert rc == 0, err
    manual = log.all()[-1]
    assert (manual["trigger"], manual["state"], manual["confirmed_by"]) == (
        "manual", "confirmed", "carol",
    )  # fmt: skip
    assert manual["incident_id"].startswith("INC-manual-")
    # promote BTCUSDC's cross-entropy candidate
    rc, out, err = _ops(
        capsys, "promote", "--crypto", "BTCUSDC", "--actor", "dan", "--reason", "ok"
    )
    assert rc == 0, err
    ids = home["ids"]["BTCUSDC"]
    assert reg.alias("BTCUSDC", "champion")["id"] == ids["candidate"]
    assert reg.alias("BTCUSDC", "previous")["id"] == ids["baseline"]
    assert reg.alias("BTCUSDC", "candidate") is None
    # deliver: the due alerts (no webhook here: the run succeeds, nothing is delivered)
    rc, out, err = _ops(capsys, "deliver")
    assert rc == 0, err
    # each action is one successful run of its job on the home's instance, tagged
    expected = {
        "confirm": "confirm_rollback_job", "halt": "halt_trading_job",
        "resume": "resume_trading_job", "rollback": "rollback_job",
        "promote": "promote_candidate_job", "deliver": "alert_delivery_job",
    }  # fmt: skip
    for command, job_name in expected.items():
        (run,) = _ops_runs(command)
        assert run.job_name == job_name and run.is_success
    assert _ops_runs("halt")[0].tags["cvn/incident"] == inc


def _snapshot() -> tuple:
    """Everything an action could write: audit rows, flags, rollbacks, alias history, alerts,
    Dagster runs."""
    store = ConfigStore()
    with store.engine.connect() as conn:
        counts = tuple(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("config_audit", "rollbacks", "model_alias_history", "alerts")
        )
    return counts, store.all(), len(DagsterInstance.get().get_runs())


BAD = [
    (["halt", "--actor", "a", "--reason", "r", "--incident-id", "<INCIDENT_ID>"],
     "--incident-id: '<INCIDENT_ID>' is a placeholder"),
    (["halt", "--actor", " ", "--reason", "r"], "--actor: must not be empty, got ' '"),
    (["resume", "--actor", "a", "--reason", "r", "--incident-id", "INC 1"],
     "--incident-id: 'INC 1' is not an incident id"),
    (["halt", "--actor", "a", "--reason", "r", "--effective-at", "2026-12-01T13:05:00"],
     "--effective-at: naive time"),
    (["halt", "--actor", "a", "--reason", "r", "--effective-at", "2026-13-01T00:00Z"],
     "--effective-at: '2026-13-01T00:00Z' is not an ISO time"),
    (["halt", "--actor", "a", "--reason", "r", "--effective-at", "2999-01-01T00:00Z"],
     "--effective-at: 2999-01-01T00:00:00+00:00 is in the future"),
    (["rollback", "--actor", "a", "--reason", "r", "--cryptos", "DOGEUSDC"],
     "--cryptos: 'DOGEUSDC' is not in the universe"),
    (["confirm", "--actor", "a", "--reason", "r", "--incident-id", "INC-20261130T1300-x"],
     "--incident-id: no rollback 'INC-20261130T1300-x'"),
    (["promote", "--crypto", "ETHUSDC", "--actor", "a", "--reason", "r"],
     "--crypto: ETHUSDC has no candidate to promote"),
    (["promote", "--crypto", "btc", "--actor", "a", "--reason", "r"],
     "--crypto: 'btc' is not in the universe"),
    (["retrain", "--crypto", "BNBUSDC", "--actor", "a", "--reason", "r"],
     "--crypto: BNBUSDC has no champion to shadow"),
    (["deliver", "rollback:INC-nope"], "alert: 'rollback:INC-nope' is not a recorded"),
    (["audit", "--flag", "loss"], "--flag: 'loss' is not a flag"),
    (["trades", "--crypto", "BTCUSDC", "--end", "yesterday"], "--end: 'yesterday' is not an ISO"),
    (["trades", "--crypto", "BTCUSDC", "--hours", "0"], "argument --hours: '0' is not a whole"),
    (["events", "--crypto", "DOGE"], "--crypto: 'DOGE' is not in the universe"),
    (["evaluate", "--as-of", "2999-01-01T00:00Z"], "--as-of: 2999-01-01T00:00:00+00:00 is in"),
    (["evaluate", "--before-rollback", "INC-none"], "--before-rollback: no rollback 'INC-none'"),
    (["alerts", "--state", "lost"], "argument --state: invalid choice: 'lost'"),
    (["halt", "--reason", "r"], "the following arguments are required: --actor"),
]  # fmt: skip


def test_bad_input_is_one_line_rc2_and_nothing_written(shared, capsys):
    wrong = []
    for argv, expected in BAD:
        before = _snapshot()
        try:
            rc = ops.main(argv)
        except SystemExit as exc:  # argparse's own refusals
            rc = exc.code
        out, err = capsys.readouterr()
        ok = rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and expected in err
        if not ok or _snapshot() != before:
            wrong.append(f"{argv}: rc {rc}, out {out!r}, err {err!r}")
    assert not wrong, "\n".join(wrong)


def test_confirm_without_an_id_needs_exactly_one_open_incident(home, capsys):
    rc, _, _ = _ops(capsys, "confirm", "--actor", "a", "--reason", "r")
    assert rc == 0
    before = _snapshot()
    rc, out, err = _ops(capsys, "confirm", "--actor", "a", "--reason", "r")
    assert rc == 2 and "--incident-id: not given and 0 rollbacks are pending or held" in err
    # the confirmed one named: nothing to do, no run
    rc, out, err = _ops(capsys, "confirm", "--actor", "a", "--reason", "r", "--incident-id",
                        home["rollback"])  # fmt: skip
    assert rc == 0 and out.startswith("nothing to do: rollback") and _snapshot() == before


def test_a_failed_job_is_its_innermost_cause_in_one_line(shared):
    # a month 13 passes the schema (a string) and is refused when the op starts
    rc = {**QUIET, "ops": {"halt_trading": {"config": {"actor": "a", "reason": "r",
          "effective_at": "2026-13-01T00:00:00+00:00"}}}}  # fmt: skip
    result = defs.resolve_job_def("halt_trading_job").execute_in_process(
        run_config=rc, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    line = ops.innermost_cause(result)
    assert line == (
        "halt_trading: effective_at: '2026-13-01T00:00:00+00:00' is not an ISO time "
        "(month must be in 1..12)"
    )


def test_the_module_runs_as_a_command(shared):
    home = shared
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-m", "cvn_assets.ops", "status", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rollbacks_open"][0]["incident_id"] == home["rollback"]
    bad = subprocess.run(
        [sys.executable, "-m", "cvn_assets.ops", "confirm", "--actor", "a", "--reason", "r",
         "--incident-id", "<INCIDENT_ID>"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "placeholder" in bad.stderr
    assert AlertSink().rows() and RollbackLog().get(home["rollback"])["state"] == "pending"
