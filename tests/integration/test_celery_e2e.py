"""The sweep on Celery workers, live: real redis-server, PostgreSQL, two dagster-celery workers.

``CVN_EXECUTOR=celery`` through the one command (``python -m cvn_assets.sweep``) on a small
grid (2 cryptos x 3 folds x 2 variants; ``CVN_N_FOLDS`` >= 3 is the settings' floor): every
cell runs in a worker process (never the launcher), both workers get cells, and
``finetune_results`` and the boosters equal an in-process run of the same configuration. One
worker is SIGKILLed (wrapper, celery process and pool process at once, as a crashed host) while
it holds a cell at the test-only cell gate (``CVN_TEST_CELL_GATE``: each worker trains one cell,
then waits at its second until the test has acted, so the kill always lands inside the sweep,
whatever the machine's speed): the run fails with the lost worker named. The held cell's
message, unacknowledged, is redelivered to a fresh worker (2 s visibility timeout) that never
heard the launcher's revoke: it is not executed, because its run has failed. A re-run trains
exactly the cell that was never trained, with no duplicate rows.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tests.integration.conftest import REPO, SMALL_GRID, SMALL_GRID_CELLS
from tests.support import celery_local as cl

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SMALL = json.dumps(
    {
        "market_data": {"hours": 3000},
        "sweep": {"num_boost_round": 30, "early_stopping_rounds": 10},
    }
)
GRID = SMALL_GRID
N_CELLS = SMALL_GRID_CELLS
#: finetune_results columns that are not results (wall clock)
NOT_RESULTS = ["train_seconds", "written_at"]

needs_redis = pytest.mark.skipif(
    cl.redis_server_path() is None,
    reason="redis-server is not installed (apt-get install redis-server; .ci/run installs it)",
)


def _base_env() -> dict[str, str]:
    env = {**os.environ, **GRID}
    for k in list(env):
        if k.startswith(("CVN_", "DAGSTER_PG_")) and k not in GRID and k != "CVN_TEST_PG_URL":
            env.pop(k)
    return env


def _sweep(env, *extra, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cvn_assets.sweep", "--resource-config", SMALL, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cells(stdout: str) -> list[dict]:
    """The progress lines of cells: ``[k/n] <variant> <key> <action> <s>s host=.. pid=..``."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("[") and " host=" in line and " pid=" in line:
            parts = line.split("]", 1)[1].split()
            pid = next(int(p[4:]) for p in parts if p.startswith("pid="))
            out.append({"variant": parts[0], "key": parts[1], "action": parts[2], "pid": pid})
    return out


def _results(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        frame = pd.read_sql(
            sa.text("select * from finetune_results where sweep_id = 'default'"), engine
        )
    finally:
        engine.dispose()
    frame = frame.drop(columns=NOT_RESULTS)
    return frame.sort_values(["variant", "crypto", "fold"]).reset_index(drop=True)


def _boosters(store: Path) -> dict[str, bytes]:
    """Each model cell's CURRENT booster, by ``asset/crypto/fold/fingerprint``."""
    out = {}
    for current in store.glob("model_*/*/*/CURRENT"):
        fp = current.read_text().strip()
        key = f"{current.parent.relative_to(store)}/{fp}"
        out[key] = (current.parent / fp / "booster" / "booster.ubj").read_bytes()
    return out


def _stored_boosters(store: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(variant, cell) -> (inode, mtime) of every booster stored, CURRENT or not."""
    out = {}
    for f in store.glob("model_*/*/*/*/booster/booster.ubj"):
        fp_dir = f.parents[1]
        fold, crypto, asset = fp_dir.parent.name, fp_dir.parents[1].name, fp_dir.parents[2].name
        st = f.stat()
        out[(asset.removeprefix("model_"), f"{crypto}|{fold}")] = (st.st_ino, st.st_mtime_ns)
    return out


def _arrivals(gate: Path, pid: int) -> list[str]:
    """The cells (``<variant>_<crypto>_f<k>``) worker pool process ``pid`` reached, in order
    (the cell gate of :func:`cvn_assets.execution.executors._cell_gate`:
    ``arrived/<pid>-<k>-<cell>``)."""
    files = [f.name.split("-", 2) for f in (gate / "arrived").glob(f"{pid}-*")]
    return [key for _, _, key in sorted(files, key=lambda p: int(p[1]))]


def _wait_for(what: str, ready, timeout: float, logs: list[Path]) -> None:
    """Poll ``ready()`` every 0.2 s; ``timeout`` only bounds a hang (never a speed check)."""
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            tails = "".join(f"\n--- {p}:\n" + p.read_text(errors="replace")[-3000:] for p in logs)
            raise AssertionError(f"{what}: not reached within {timeout}s{tails}")
        time.sleep(0.2)


def test_celery_refused_without_shared_state_before_any_work(tmp_path):
    """A Celery sweep on the embedded default (SQLite instance, store under DAGSTER_HOME) is
    refused with exit status 2, naming every variable and file to set, before any work."""
    home = tmp_path / "home"
    env = {**_base_env(), "DAGSTER_HOME": str(home), "CVN_EXECUTOR": "celery"}
    out = _sweep(env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr
    assert "refused: CVN_EXECUTOR=celery needs shared state; nothing was done" in err
    for what in (
        "CVN_CELERY_BROKER is not set",
        "CVN_CELERY_BACKEND is not set",
        "CVN_STORE_DIR is not set",
        "CVN_DATABASE_URL is not set",
        f"{home}/dagster.yaml does not exist",
        "deploy/dagster.postgres.yaml",
    ):
        assert what in err, what
    # nothing was done: no instance (no SQLite dagster.yaml, run or schedule storage), no
    # results store, no stored value
    assert sorted(p.name for p in home.iterdir()) == []

    # a home with the embedded default's SQLite instance: refused, naming it
    from dagster import DagsterInstance

    from resources.instance_storage import default_instance_yaml

    (home / "dagster.yaml").write_text(default_instance_yaml(str(home)))
    out = _sweep(env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "stores runs and events in SQLite" in out.stderr
    assert not (home / "cvn_results.sqlite").exists()
    assert not (home / "storage" / "cvn").exists()
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []

    # a SQLite results store is refused as well, even with a shared store set
    env.update(
        CVN_STORE_DIR=str(tmp_path / "store"),
        CVN_DATABASE_URL=f"sqlite:///{tmp_path / 'r.sqlite'}",
        CVN_CELERY_BROKER="redis://127.0.0.1:1/0",
        CVN_CELERY_BACKEND="redis://127.0.0.1:1/1",
    )
    again = _sweep(env, timeout=120)
    assert again.returncode == 2
    assert "CVN_DATABASE_URL is a SQLite file" in again.stderr
    assert "CVN_STORE_DIR" not in again.stderr and "CVN_CELERY_BROKER" not in again.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "r.sqlite").exists()


@needs_redis
def test_sweep_on_two_celery_workers_equals_in_process_and_survives_a_killed_worker(
    tmp_path, pg_database, monkeypatch
):
    t_start = time.time()
    # 1. the reference: the same configuration in process (SQLite home, store in the home)
    ref_env = {**_base_env(), "DAGSTER_HOME": str(tmp_path / "ref")}
    ref = _sweep(ref_env)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert "executor=in_process" in ref.stdout
    t_ref = time.time() - t_start

    # 2. the cluster: Redis, the PostgreSQL instance (deploy/dagster.postgres.yaml), workers
    redis, redis_url = cl.start_redis(tmp_path / "redis")
    workers: dict[str, subprocess.Popen] = {}
    try:
        u = sa.engine.make_url(pg_database)
        home = tmp_path / "home"
        home.mkdir()
        gate = tmp_path / "gate"
        gate.mkdir()
        (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.postgres.yaml").read_text())
        env = {
            **_base_env(),
            "DAGSTER_HOME": str(home),
            "CVN_EXECUTOR": "celery",
            "CVN_CELERY_BROKER": f"{redis_url}/0",
            "CVN_CELERY_BACKEND": f"{redis_url}/1",
            "CVN_STORE_DIR": str(tmp_path / "shared_store"),
            "CVN_DATABASE_URL": pg_database,
            "DAGSTER_PG_HOST": str(u.host),
            "DAGSTER_PG_PORT": str(u.port),
            "DAGSTER_PG_USER": str(u.username),
            "DAGSTER_PG_PASSWORD": u.password or "",
            "DAGSTER_PG_DB": str(u.database),
            "CVN_TEST_CELL_GATE": str(gate),
        }
        # no worker yet: refused before any work, naming what to start
        none = _sweep(env, timeout=120)
        assert none.returncode == 2, none.stdout + none.stderr
        assert "no Celery worker answers on" in none.stderr

        from cvn_assets.execution.executors import worker_yaml

        (tmp_path / "celery.yaml").write_text(worker_yaml(env))
        for name in ("w1", "w2"):
            workers[name] = cl.start_worker(
                name, tmp_path / "celery.yaml", env, tmp_path / f"{name}.log"
            )
        logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
        cl.wait_for_workers(env["CVN_CELERY_BROKER"], ["w1", "w2"], timeout=90, logs=logs)
        pool = {n: cl.children(cl.children(p.pid)[0]) for n, p in workers.items()}
        assert all(len(p) == 1 for p in pool.values()), pool  # -c 1: one pool process each
        pool_pid = {n: p[0] for n, p in pool.items()}
        t_cluster = time.time() - t_start

        # 3. the sweep, with a cell gate (tests only): each worker trains its first cell and
        # holds at its second until the test has acted, so the kill lands inside the sweep
        # however fast the machine is. SIGKILL w1 while it holds its second cell.
        (gate / f"hold-{pool_pid['w1']}").write_text("1")
        (gate / f"hold-{pool_pid['w2']}").write_text("1")
        out_path, err_path = tmp_path / "killed_run.stdout", tmp_path / "killed_run.stderr"
        with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cvn_assets.sweep", "--resource-config", SMALL],
                cwd=REPO,
                env=env,
                stdout=out_file,
                stderr=err_file,
                text=True,
            )
        _wait_for(
            "both workers holding their second cell",
            lambda: all(len(_arrivals(gate, pool_pid[n])) >= 2 for n in ("w1", "w2")),
            300,
            [*logs, err_path],
        )
        held = _arrivals(gate, pool_pid["w1"])[1]  # w1's second cell: never trained
        killed = cl.kill_worker(workers.pop("w1"))
        (gate / f"hold-{pool_pid['w2']}").unlink()  # w2 goes on with the rest
        proc.wait(timeout=600)
        err = err_path.read_text()
        first = out_path.read_text()
        assert proc.returncode == 1, first[-3000:] + err[-3000:]
        assert "Celery worker w1@" in err and "stopped answering" in err, err[-3000:]
        t_killed = time.time() - t_start

        cells1 = _cells(first)
        pids1 = {c["pid"] for c in cells1}
        assert pids1 == {pool_pid["w1"], pool_pid["w2"]}, cells1  # both workers got cells
        assert proc.pid not in pids1 and os.getpid() not in pids1  # never in the launcher
        assert set(killed) >= {pool_pid["w1"]}
        all_cells = {
            (v["name"], f"{c}|f{f}")
            for v in json.loads(GRID["CVN_VARIANTS"])
            for c in GRID["CVN_UNIVERSE"].split(",")
            for f in range(3)
        }
        held_cell = next(c for c in all_cells if f"{c[0]}_{c[1].replace('|', '_')}" == held)
        trained1 = {(c["variant"], c["key"]) for c in cells1 if c["action"] == "trained"}
        assert trained1 == all_cells - {held_cell}  # every cell but the one w1 held
        stored1 = _stored_boosters(tmp_path / "shared_store")
        assert stored1.keys() == trained1  # the held cell stored nothing

        # 3b. the held cell's message is still unacknowledged in Redis. No worker alive now
        # remembers the launcher's revoke (w2 heard it; stop it), and a fresh worker whose
        # visibility timeout is 2 s redelivers the message to itself: it must not execute the
        # cell of a run that has failed (cvn_assets.execution.celery_worker's run check).
        cl.stop_worker(workers.pop("w2"))
        quick = yaml.safe_load(worker_yaml(env))
        quick["execution"]["config"]["config_source"]["broker_transport_options"] = {
            "visibility_timeout": 2,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
        (tmp_path / "celery_redeliver.yaml").write_text(yaml.safe_dump(quick))
        workers["w3"] = cl.start_worker(
            "w3", tmp_path / "celery_redeliver.yaml", env, tmp_path / "w3.log"
        )
        w3_logs = [tmp_path / "w3.log"]
        cl.wait_for_workers(env["CVN_CELERY_BROKER"], ["w3"], timeout=90, logs=w3_logs)
        for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
            monkeypatch.setenv(k, env[k])
        monkeypatch.setenv("DAGSTER_PG_DB", env["DAGSTER_PG_DB"])
        from dagster import DagsterInstance, DagsterRunStatus

        from cvn_assets.execution.celery_worker import NOT_EXECUTED

        with DagsterInstance.from_config(str(home)) as instance:
            failed = [r for r in instance.get_runs() if r.status == DagsterRunStatus.FAILURE]
            assert len(failed) == 1, [(r.job_name, r.status) for r in instance.get_runs()]

            def skipped() -> list[str]:
                return [
                    e.message
                    for e in instance.all_logs(failed[0].run_id)
                    if NOT_EXECUTED in e.message
                ]

            _wait_for("the redelivered cell skipped", lambda: bool(skipped()), 180, w3_logs)
            step = f"cell_{held_cell[0]}[{held_cell[1].replace('|', '_')}]"
            assert len(skipped()) == 1 and step in skipped()[0], skipped()
            assert "FAILURE, no longer running" in skipped()[0]
            assert instance.get_run_by_id(failed[0].run_id).status == DagsterRunStatus.FAILURE
        assert NOT_EXECUTED in (tmp_path / "w3.log").read_text()
        assert _stored_boosters(tmp_path / "shared_store") == stored1  # nothing trained
        cl.stop_worker(workers.pop("w3"))
        workers["w4"] = cl.start_worker("w4", tmp_path / "celery.yaml", env, tmp_path / "w4.log")
        cl.wait_for_workers(
            env["CVN_CELERY_BROKER"], ["w4"], timeout=90, logs=[tmp_path / "w4.log"]
        )
        w4_pool = cl.children(cl.children(workers["w4"].pid)[0])
        assert len(w4_pool) == 1, w4_pool

        # 4. the re-run (w4 alone) trains exactly the cell never trained, reuses the others
        again = _sweep(env)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        cells2 = _cells(again.stdout)
        trained2 = {(c["variant"], c["key"]) for c in cells2 if c["action"] == "trained"}
        assert {c["pid"] for c in cells2} == set(w4_pool)
        assert trained2 == all_cells - stored1.keys() == {held_cell}  # exactly the missing one
        after = _stored_boosters(tmp_path / "shared_store")
        assert after.keys() == all_cells
        # the boosters stored before the re-run are untouched (same inode and mtime)
        assert {k: after[k] for k in stored1} == stored1
        assert all(c["action"] == "reused" for c in cells2 if (c["variant"], c["key"]) in stored1)
        t_rerun = time.time() - t_start

        # 5. no duplicate rows; results and boosters identical to the in-process run
        engine = sa.create_engine(pg_database)
        with engine.connect() as conn:
            n, distinct = conn.execute(
                sa.text(
                    "select count(*), count(distinct (crypto, fold, variant)) "
                    "from finetune_results where sweep_id = 'default'"
                )
            ).one()
        engine.dispose()
        assert n == distinct == N_CELLS
        ref_rows = _results(f"sqlite:///{tmp_path / 'ref' / 'cvn_results.sqlite'}")
        pd.testing.assert_frame_equal(_results(pg_database), ref_rows, check_exact=True)
        ref_boosters = _boosters(tmp_path / "ref" / "storage" / "cvn")
        boosters = _boosters(tmp_path / "shared_store")
        assert len(ref_boosters) == N_CELLS
        assert boosters.keys() == ref_boosters.keys()  # same fingerprints
        assert all(boosters[k] == ref_boosters[k] for k in boosters)  # bit for bit
        print(
            f"timing: in-process reference {t_ref:.1f}s, cluster up at {t_cluster:.1f}s, "
            f"killed run done at {t_killed:.1f}s, re-run done at {t_rerun:.1f}s"
        )
        # Dagster's view: every cell materialized, by runs of this PostgreSQL instance
        from dagster import AssetKey

        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            for v in json.loads(GRID["CVN_VARIANTS"]):
                for asset in (f"model_{v['name']}", f"calibrated_{v['name']}"):
                    assert len(instance.get_materialized_partitions(AssetKey(asset))) == 6
    finally:
        for proc_ in workers.values():
            cl.stop_worker(proc_)
        cl.stop_process(redis)
