"""Per-cell overhead of the sweep on Celery workers against in process, on this machine.

The same grid (default 2 cryptos x 3 folds x 2 variants = 12 cells, the default market and
training settings, so a cell computes what a default-sweep cell computes) through the one
command three times, each into a fresh home and store:

1. in process (SQLite instance, today's path);
2. ``CVN_EXECUTOR=celery`` with ONE worker (``-c 1``): the cells run one after another as in
   (1), so the difference is the orchestration: a Celery task, a step on a worker, events in
   PostgreSQL, the fan-out's op outputs through the store;
3. ``CVN_EXECUTOR=celery`` with ``--workers`` workers (``-c 1`` each) on this machine.

Per-cell overhead = (models-stage wall time x workers - sum of the cells' own seconds) / cells,
where the cells' own seconds (train + calibrate + store + result row) are measured inside each
Celery cell of the same run and printed per cell (in process only the per-cell wall time is
shown: its progress line times the training only). Then the projection of a 10x larger sweep
(1,250 cells) on N worker machines.

Needs redis-server and PostgreSQL (``$CVN_TEST_PG_URL``, or ``initdb`` to start a throwaway
cluster). Usage: ``python bench/bench_celery.py [--workers 2] [--cryptos 2] [--folds 3]``.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import celery_local as cl  # noqa: E402

CELL = re.compile(r"\] (\S+)\s+(\S+)\s+(trained|reused)\s+([\d.]+)s")
STAGE = re.compile(r"models stage: (\d+) cells to do; .* done in ([\d.]+)s")
VARIANTS = [
    {"name": "baseline", "loss_function": "binary:logistic"},
    {"name": "focal_g2_a025", "loss_function": "focal", "gamma": 2, "alpha": 0.25},
]
UNIVERSE = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"]


def _sweep(env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cvn_assets.sweep"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"sweep failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    cells = [float(m.group(4)) for m in CELL.finditer(out.stdout)]
    stage = STAGE.search(out.stdout)
    assert stage, out.stdout[-2000:]
    return {
        "cells": int(stage.group(1)),
        "stage_s": float(stage.group(2)),
        "cell_s": sum(cells),
        "n_lines": len(cells),
        "wall_s": wall,
    }


def _overhead(r: dict, workers: int, cell_s: float) -> float:
    return (r["stage_s"] * workers - cell_s) / r["cells"]


def _pg_database(server_url: str, name: str) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def _celery_run(tmp: Path, tag: str, base_env: dict, pg_server: str, redis_url: str, n: int):
    import sqlalchemy as sa

    url = _pg_database(pg_server, f"cvn_bench_{tag}")
    u = sa.engine.make_url(url)
    home = tmp / f"home_{tag}"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    env = {
        **base_env,
        "DAGSTER_HOME": str(home),
        "CVN_EXECUTOR": "celery",
        "CVN_CELERY_BROKER": f"{redis_url}/0",
        "CVN_CELERY_BACKEND": f"{redis_url}/1",
        "CVN_STORE_DIR": str(tmp / f"store_{tag}"),
        "CVN_DATABASE_URL": url,
        "DAGSTER_PG_HOST": str(u.host),
        "DAGSTER_PG_PORT": str(u.port),
        "DAGSTER_PG_USER": str(u.username),
        "DAGSTER_PG_PASSWORD": u.password or "",
        "DAGSTER_PG_DB": str(u.database),
    }
    from cvn_assets.execution.executors import worker_yaml

    (tmp / f"celery_{tag}.yaml").write_text(worker_yaml(env))
    names = [f"b{tag}{i}" for i in range(n)]
    workers = [
        cl.start_worker(name, tmp / f"celery_{tag}.yaml", env, tmp / f"{name}.log")
        for name in names
    ]
    try:
        logs = [tmp / f"{name}.log" for name in names]
        cl.wait_for_workers(env["CVN_CELERY_BROKER"], names, timeout=120, logs=logs)
        return _sweep(env)
    finally:
        for w in workers:
            cl.stop_worker(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cryptos", type=int, default=2)
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CVN_", "DAGSTER_PG_"))}
    base_env.update(
        CVN_UNIVERSE=",".join(UNIVERSE[: args.cryptos]),
        CVN_N_FOLDS=str(args.folds),
        CVN_VARIANTS=json.dumps(VARIANTS),
    )
    with tempfile.TemporaryDirectory(prefix="cvn-bench-celery-") as d:
        tmp = Path(d)
        pg_server = os.environ.get("CVN_TEST_PG_URL")
        pg_dir = None
        if not pg_server:
            pg_dir = tmp / "pg"
            pg_server = subprocess.run(
                [str(REPO / "scripts" / "pg_throwaway.sh"), "start", str(pg_dir)]
                + [str(cl.free_port())],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        redis, redis_url = cl.start_redis(tmp / "redis")
        try:
            inproc = _sweep({**base_env, "DAGSTER_HOME": str(tmp / "home_inproc")})
            one = _celery_run(tmp, "1", base_env, pg_server, redis_url, 1)
            many = _celery_run(tmp, "n", base_env, pg_server, redis_url, args.workers)
        finally:
            cl.stop_process(redis)
            if pg_dir is not None:
                subprocess.run([str(REPO / "scripts" / "pg_throwaway.sh"), "stop", str(pg_dir)])

    n = inproc["cells"]
    print(f"grid: {args.cryptos} cryptos x {args.folds} folds x {len(VARIANTS)} variants = {n}")
    print("                      models stage   per cell   cells' own s   overhead/cell")
    rows = [
        ("in process", inproc, 1),
        ("celery, 1 worker", one, 1),
        (f"celery, {args.workers} workers", many, args.workers),
    ]
    # overhead = what the workers spent beyond the cells' own seconds, each measured inside the
    # cells of the same run (so a machine whose load changes between runs does not skew it)
    for label, r, w in rows[1:]:
        print(
            f"{label:<20}  {r['stage_s']:10.1f} s  {r['stage_s'] / n:7.2f} s  "
            f"{r['cell_s']:11.1f} s  {_overhead(r, w, r['cell_s']):11.2f} s"
        )
    print(f"{'in process':<20}  {inproc['stage_s']:10.1f} s  {inproc['stage_s'] / n:7.2f} s")
    cell_compute = one["cell_s"] / n
    over_1 = _overhead(one, 1, one["cell_s"])
    over_n = _overhead(many, args.workers, many["cell_s"])
    print(
        f"per-cell wall, celery 1 worker / in process: {one['stage_s'] / inproc['stage_s']:.2f}x; "
        f"celery overhead per cell {over_1:.2f} s (1 worker), {over_n:.2f} s per worker-slot "
        f"({args.workers} workers on {os.cpu_count()} cores); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"speed-up of {args.workers} workers on this machine over 1 worker: "
        f"{one['stage_s'] / many['stage_s']:.2f}x"
    )
    big = 10 * 125
    print(
        f"\nprojection, 10x the default sweep ({big} cells), one -c 1 worker per machine, cell "
        f"compute {cell_compute:.2f} s (in process) + Celery overhead {over_1:.2f} s:"
    )
    print(f"  in process, one machine: {big * inproc['stage_s'] / n / 60:6.1f} min")
    for machines in (1, 2, 4, 8, 16, 32):
        minutes = big * (cell_compute + over_1) / machines / 60
        print(f"  {machines:>2} worker machine(s):    {minutes:6.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
