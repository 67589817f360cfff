"""Issue 21 item 2: every bad input of a guard job or of ``make paper`` is one line naming the
field and the value; refused by Dagster's config schema (no run created) where it can express
the rule; ``python -m cvn_assets.paper_run`` exits with status 2 before any run."""

import os
import subprocess
import sys

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError

from cvn_assets.definitions import defs
from cvn_assets.run_errors import config_error_line, run_failure_line
from resources.config_store import ConfigStore
from tests.integration.conftest import REPO

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
WHO = {"actor": "alice", "reason": "test"}
UNIVERSE = "'BTCUSDC', 'ETHUSDC', 'SOLUSDC', 'BNBUSDC', 'XRPUSDC'"


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'guard.sqlite'}"
    monkeypatch.setenv("CVN_DATABASE_URL", url)
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "alerts.jsonl"))
    return url


def _execute(instance, job: str, ops: dict, **kw):
    return defs.resolve_job_def(job).execute_in_process(
        run_config={**QUIET, "ops": ops}, instance=instance, raise_on_error=False, **kw
    )


@pytest.mark.parametrize(
    ("job", "ops", "kw", "line"),
    [
        (
            "rollback_job",
            {"rollback": {"config": {**WHO, "trigger": "automatic"}}},
            {},
            "ops.rollback.config.trigger: 'automatic' is not one of 'manual', 'auto'",
        ),
        (
            "rollback_job",
            {"rollback": {"config": {**WHO, "cryptos": ["DOGEUSDC"]}}},
            {},
            f"ops.rollback.config.cryptos[0]: 'DOGEUSDC' is not one of {UNIVERSE}",
        ),
        (
            "promote_candidate_job",
            {"promote_candidate": {"config": {**WHO, "crypto": "DOGEUSDC"}}},
            {},
            f"ops.promote_candidate.config.crypto: 'DOGEUSDC' is not one of {UNIVERSE}",
        ),
        (
            "shadow_retrain_job",
            {"shadow_retrain": {"config": {**WHO, "crypto": "btcusdc"}}},
            {},
            f"ops.shadow_retrain.config.crypto: 'btcusdc' is not one of {UNIVERSE}",
        ),
        (
            "champion_job",
            {"champion_models": {"config": {"override_variant": "focal_g3", "reason": "x"}}},
            {"partition_key": "BTCUSDC"},
            "ops.champion_models.config.override_variant: 'focal_g3' is not one of '', "
            "'baseline', 'focal_g1_a025', 'focal_g2_a025', 'focal_g2_a05', 'focal_g5_a025'",
        ),
        (
            "champion_job",
            {"champion_models": {"config": {"canary": "DOGEUSDC"}}},
            {"partition_key": "BTCUSDC"},
            f"ops.champion_models.config.canary: 'DOGEUSDC' is not one of {UNIVERSE}",
        ),
    ],
)
def test_the_schema_refuses_before_a_run_exists(db, job, ops, kw, line):
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(DagsterInvalidConfigError) as err:
            _execute(instance, job, ops, **kw)
        assert config_error_line(err.value) == f"invalid run config: {line}"
        assert instance.get_runs() == []  # no run was created
    assert ConfigStore(database_url=db).get("CVN_LOSS_FUNCTION") == ("focal", 1)


@pytest.mark.parametrize(
    ("job", "ops", "line"),
    [
        (
            "rollback_job",
            {"rollback": {"config": {**WHO, "effective_at": "2023-13-01T00:00:00+00:00"}}},
            "rollback: effective_at: '2023-13-01T00:00:00+00:00' is not an ISO time "
            "(month must be in 1..12)",
        ),
        (
            "halt_trading_job",
            {"halt_trading": {"config": {**WHO, "effective_at": "2024-06-03T00:00:00"}}},
            "halt_trading: effective_at: '2024-06-03T00:00:00' is a naive time: no UTC offset "
            "(e.g. 2026-01-05T10:00:00+00:00)",
        ),
        (
            "confirm_rollback_job",
            {"confirm_rollback": {"config": {**WHO, "incident_id": "INC-nope"}}},
            "confirm_rollback_job: incident_id: no rollback with incident id 'INC-nope' "
            "(none is pending or held)",
        ),
        (
            "rollback_job",
            {"rollback": {"config": {"actor": " ", "reason": "r"}}},
            "rollback_job: run config actor must not be empty, got ' '",
        ),
    ],
)
def test_refusals_in_the_run_are_one_line_and_change_nothing(db, job, ops, line):
    with DagsterInstance.ephemeral() as instance:
        res = _execute(instance, job, ops)
    assert not res.success
    assert run_failure_line(res) == line
    store = ConfigStore(database_url=db)
    assert store.get("CVN_LOSS_FUNCTION") == ("focal", 1)
    assert store.get("trading_halted")[1] == 1  # never changed


def _paper_run(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CVN_")}
    full.update({"DAGSTER_HOME": str(tmp_path / "home"), **env})
    return subprocess.run(
        [sys.executable, "-m", "cvn_assets.paper_run", "--skip-sweep", *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            (),
            {"CVN_PAPER_START": "2023-13-01"},
            "invalid environment: CVN_PAPER_START: '2023-13-01' is not a date like 2024-01-01",
        ),
        (
            ("--canary", "DOGEUSDC"),
            {},
            "--canary: 'DOGEUSDC' is not in the universe ['BTCUSDC', 'ETHUSDC', 'SOLUSDC', "
            "'BNBUSDC', 'XRPUSDC']",
        ),
        (
            (),
            {"CVN_DATABASE_URL": "postgresql+psycopg2://cvn:secret@127.0.0.1:1/cvn"},
            "refused: the results database postgresql+psycopg2://***@127.0.0.1:1/cvn does not "
            "answer (",
        ),
    ],
)
def test_paper_run_bad_input_is_one_line_rc_2_and_nothing_runs(tmp_path, args, env, expected):
    out = _paper_run(tmp_path, *args, **env)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "secret" not in out.stderr
    assert not (tmp_path / "home" / "storage").exists()  # no run, nothing stored
