"""The default sweep on an idle machine and beside one competing CPU-bound process.

    python bench/bench_load.py [--resource-config JSON] [--env KEY=VALUE ...]

Runs ``python -m cvn_assets.sweep --quiet`` into a fresh ``DAGSTER_HOME`` twice: once alone,
once while another process spins a pure-Python busy loop (one core's worth of demand, like a
second job on the machine). Prints wall and CPU seconds (user + sys of the sweep process and
its children) for both and the loaded/idle ratios. Extra ``--env`` settings (for example
``OMP_WAIT_POLICY=ACTIVE``) let the thread policy be compared in the same run.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def run_sweep(config: str, env_extra: dict[str, str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, **env_extra}
        for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_MARKET_SOURCE", "CVN_CSV_DIR"):
            env.pop(k, None)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "cvn_assets.sweep", "--quiet", "--resource-config", config],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise SystemExit(f"sweep failed:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resource-config", default="{}")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the sweep")
    ap.add_argument("--competitors", type=int, default=1, help="busy processes beside it")
    ap.add_argument("--skip-idle", action="store_true", help="only the loaded run")
    args = ap.parse_args()
    env_extra = dict(e.split("=", 1) for e in args.env)
    json.loads(args.resource_config)

    print(f"env {env_extra or '(default)'}  config {args.resource_config}", flush=True)
    if not args.skip_idle:
        idle_wall, idle_cpu = run_sweep(args.resource_config, env_extra)
        print(f"idle:   wall {idle_wall:7.1f} s   cpu {idle_cpu:7.1f} s", flush=True)
    burners = [
        mp.Process(target=_burn, args=(time.time() + 3600,), daemon=True)
        for _ in range(args.competitors)
    ]
    for b in burners:
        b.start()
    try:
        load_wall, load_cpu = run_sweep(args.resource_config, env_extra)
    finally:
        for b in burners:
            b.terminate()
            b.join()
    print(
        f"loaded: wall {load_wall:7.1f} s   cpu {load_cpu:7.1f} s  "
        f"({args.competitors} busy competing process(es))"
    )
    if not args.skip_idle:
        print(f"loaded / idle: wall {load_wall / idle_wall:.2f}x   cpu {load_cpu / idle_cpu:.2f}x")


if __name__ == "__main__":
    main()
