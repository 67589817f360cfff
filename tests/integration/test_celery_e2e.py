"""The sweep on Celery workers, live: real redis-server, PostgreSQL, two dagster-celery workers.

``CVN_EXECUTOR=celery`` through the one command (``python -m cvn_assets.sweep``) on a small
grid (2 cryptos x 3 folds x 2 variants; ``CVN_N_FOLDS`` >= 3 is the settings' floor): every
cell runs in a worker process (never the launcher), both workers get cells, and
``finetune_results`` and the boosters equal an in-process run of the same configuration. One
worker is SIGKILLed (wrapper, celery process and pool process at once, as a crashed host) while
it trains a cell: the run fails with the lost worker named, and a re-run trains exactly the
cells that were never trained, with no duplicate rows.
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

from cvn_assets import celery_local as cl
from tests.integration.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SMALL = json.dumps(
    {
        "market_data": {"hours": 3000},
        "sweep": {"num_boost_round": 30, "early_stopping_rounds": 10},
    }
)
GRID = {
    "CVN_UNIVERSE": "BTCUSDC,ETHUSDC",
    "CVN_N_FOLDS": "3",
    "CVN_VARIANTS": json.dumps(
        [
            {"name": "baseline", "loss_function": "binary:logistic"},
            {"name": "focal_g2_a025", "loss_function": "focal", "gamma": 2, "alpha": 0.25},
        ]
    ),
}
N_CELLS = 2 * 3 * 2
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


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_until_busy(pid: int, timeout: float = 60) -> bool:
    """True once the process burns CPU (a pool process training a cell), polled every 0.1 s."""
    deadline = time.time() + timeout
    before = _cpu_ticks(pid)
    while time.time() < deadline:
        time.sleep(0.1)
        now = _cpu_ticks(pid)
        if now - before >= 3:
            return True
        before = now
    return False


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
        }
        # no worker yet: refused before any work, naming what to start
        none = _sweep(env, timeout=120)
        assert none.returncode == 2, none.stdout + none.stderr
        assert "no Celery worker answers on" in none.stderr

        from cvn_assets.executors import worker_yaml

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

        # 3. the sweep; SIGKILL w1 while it trains a cell (after it finished one)
        err_path = tmp_path / "killed_run.stderr"
        with open(err_path, "w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cvn_assets.sweep", "--resource-config", SMALL],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err_file,
                text=True,
            )
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if f"pid={pool_pid['w1']} " in line:
                break
        assert _wait_until_busy(pool_pid["w1"]), "".join(lines)
        killed = cl.kill_worker(workers.pop("w1"))
        rest, _ = proc.communicate(timeout=300)
        err = err_path.read_text()
        first = "".join(lines) + rest
        assert proc.returncode == 1, first[-3000:] + err[-3000:]
        assert "Celery worker w1@" in err and "stopped answering" in err, err[-3000:]
        t_killed = time.time() - t_start

        cells1 = _cells(first)
        pids1 = {c["pid"] for c in cells1}
        assert pids1 == {pool_pid["w1"], pool_pid["w2"]}, cells1  # both workers got cells
        assert proc.pid not in pids1 and os.getpid() not in pids1  # never in the launcher
        assert set(killed) >= {pool_pid["w1"]}
        trained1 = {(c["variant"], c["key"]) for c in cells1 if c["action"] == "trained"}
        assert 0 < len(trained1) < N_CELLS
        # what the killed run left stored (the killed cell may have stored its booster before
        # the kill, without its progress line): these must not be trained again
        stored1 = _stored_boosters(tmp_path / "shared_store")
        assert trained1 <= stored1.keys()

        # 4. the re-run (w2 alone) trains exactly the cells never trained, reuses the others
        again = _sweep(env)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        cells2 = _cells(again.stdout)
        trained2 = {(c["variant"], c["key"]) for c in cells2 if c["action"] == "trained"}
        assert {c["pid"] for c in cells2} == {pool_pid["w2"]}
        all_cells = {
            (v["name"], f"{c}|f{f}")
            for v in json.loads(GRID["CVN_VARIANTS"])
            for c in GRID["CVN_UNIVERSE"].split(",")
            for f in range(3)
        }
        assert trained2 == all_cells - stored1.keys()  # exactly the missing cells
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
        from dagster import AssetKey, DagsterInstance

        for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
            monkeypatch.setenv(k, env[k])
        monkeypatch.setenv("DAGSTER_PG_DB", env["DAGSTER_PG_DB"])

        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            for v in json.loads(GRID["CVN_VARIANTS"]):
                for asset in (f"model_{v['name']}", f"calibrated_{v['name']}"):
                    assert len(instance.get_materialized_partitions(AssetKey(asset))) == 6
    finally:
        for proc_ in workers.values():
            cl.stop_worker(proc_)
        cl.stop_process(redis)
