"""The one command end to end, on a real local Dagster instance (SQLite), in a subprocess.

A smaller synthetic market and fewer boosting rounds keep it to CI size; the graph, the
125 cells, the checks and the gates are the real ones.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow

SMALL = json.dumps(
    {
        "market_data": {"hours": 4000},
        "sweep": {"num_boost_round": 40, "early_stopping_rounds": 10},
    }
)


KILL_GRID = {"CVN_UNIVERSE": "BTCUSDC,ETHUSDC", "CVN_N_FOLDS": "3"}


def _env(tmp_path) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_MARKET_SOURCE"):
        env.pop(k, None)
    return env


def _sweep_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "cvn_assets.sweep", "--resource-config", SMALL, *extra]


def _rows(tmp_path, sweep_id="default") -> int:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'cvn_results.sqlite'}")
    with eng.connect() as conn:
        n = conn.execute(
            sa.text("select count(*) from finetune_results where sweep_id = :s"), {"s": sweep_id}
        ).scalar()
    eng.dispose()
    return int(n)


def test_full_sweep_then_idempotent_rerun(tmp_path):
    out = subprocess.run(
        _sweep_cmd(), cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[125/125]" in out.stdout
    assert "gate verdicts" in out.stdout
    assert _rows(tmp_path) == 125

    from dagster import AssetKey, DagsterInstance

    from cvn_assets.partitions import SETTINGS

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        for v in SETTINGS.variants:
            for name in (f"model_{v.name}", f"calibrated_{v.name}"):
                assert len(instance.get_materialized_partitions(AssetKey(name))) == 25
        ev = instance.get_latest_materialization_event(AssetKey("gate_verdicts"))
        md = ev.asset_materialization.metadata
        # the verdicts readable at a glance, and the plots inline (not a server-side path)
        rows = md["verdict_table"].value.records
        assert [r.data["variant"] for r in rows] == [v.name for v in SETTINGS.variants]
        for key in ("forest_plot", "heatmaps", "reliability", "cscv_histogram"):
            assert "data:image/png;base64," in md[f"plot_{key}"].value, key
        assert len(md["sweep_fingerprint"].value) == 16
        runs = instance.get_runs()
        tags = [r.tags.get("cvn/variant") for r in runs if r.job_name.startswith("train_")]
        assert sorted(tags) == sorted(v.name for v in SETTINGS.variants)
        # every asset check that ran passed (no lockable variant is a valid outcome)
        from dagster import AssetCheckKey

        for key, name in [
            (AssetKey("fold_splits"), "no_leakage"),
            (AssetKey("finetune_results"), "finetune_results_complete"),
            (AssetKey("gate_verdicts"), "verdicts_consistent"),
        ]:
            rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [AssetCheckKey(key, name)]
            )[AssetCheckKey(key, name)]
            assert rec.evaluation.passed, name

    # second run: nothing missing -> no training, same 125 rows
    again = subprocess.run(
        _sweep_cmd(), cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "models stage: 0 cells" in again.stdout
    assert "results stage: up to date" in again.stdout  # nothing changed: no new run
    assert _rows(tmp_path) == 125


def test_kill_9_mid_sweep_then_rerun_finishes_only_what_is_missing(tmp_path):
    # the test-only cell gate holds the sweep at its 11th model cell until the kill, so the
    # kill lands mid-run however fast the machine is (reading "[ 10/30]" and then killing
    # raced the sweep: a starved reader could kill it after the run, or after the sweep).
    # A smaller grid than the full sweep above (2 cryptos x 3 folds x 5 variants = 30 cells):
    # the kill lands in the second variant's run all the same
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold").write_text("10")
    grid = {**_env(tmp_path), **KILL_GRID}
    out_path = tmp_path / "killed.stdout"
    with open(out_path, "w") as out_file:
        proc = subprocess.Popen(
            _sweep_cmd(),
            cwd=REPO,
            env={**grid, "CVN_TEST_CELL_GATE": str(gate)},
            stdout=out_file,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    deadline = time.time() + 900  # bounds a hang only
    # cells run cell_workers at a time: the 11th is held once it arrived, and the first 10
    # are done once their progress line is out (lines follow the key order)
    while (
        len(list((gate / "arrived").glob(f"{proc.pid}-*"))) < 11
        or "[ 10/30]" not in out_path.read_text()
    ):
        assert time.time() < deadline and proc.poll() is None, out_path.read_text()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert "[ 10/30]" in out_path.read_text()
    assert _rows(tmp_path) < 30

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        stuck = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    assert len(stuck) == 1  # the killed run was left STARTED

    out = subprocess.run(
        _sweep_cmd(), cwd=REPO, env=grid, capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _rows(tmp_path) == 30
    assert f"marked 1 run(s) of a dead earlier sweep as failed: ['{stuck[0].run_id}']" in out.stdout
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert instance.get_run_by_id(stuck[0].run_id).status == DagsterRunStatus.FAILURE
        assert not instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    trained = out.stdout.count(" trained ")
    reused = out.stdout.count(" reused ")
    # the killed run had finished >= 10 trainings: they are not trained again
    assert trained <= 30 - 10 + 1
    assert trained + reused >= 20
