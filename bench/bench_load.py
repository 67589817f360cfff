"""The default sweep idle and beside competing CPU-bound processes: CPU and wall ratios.

    python bench/bench_load.py [--loads 0,2,8] [--universe BTCUSDC,ETHUSDC] [--only default]

Runs ``python -m cvn_assets.sweep --quiet`` into a fresh ``DAGSTER_HOME`` for each contender
and each load level: ``0`` is the machine as it is (run it idle), ``N`` adds ``N`` processes
spinning a pure-Python busy loop (one core's demand each, like other jobs on the machine).
Contenders (issue 22, item 1):

* ``default``: the project's settings -- one XGBoost thread per cell (``nthread`` 1), cells
  spread over the cores in threads (``cell_workers`` 0 = one per core);
* ``before``: the settings before issue 22 -- one cell at a time on a 2-thread team
  (``nthread`` 2, ``cell_workers`` 1) with ``GOMP_SPINCOUNT=30000``.

Prints wall and CPU seconds (user + sys of the sweep process and its children) per run, then
per contender the loaded / idle ratios with the targets: CPU within 1.3x of idle at every
load, and the default's idle wall no worse than ``before``'s. Each run is one measurement on a
shared machine: read the ratios of one invocation together, not across invocations.
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
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: name -> (sweep resource config, extra environment)
CONTENDERS: dict[str, tuple[dict, dict[str, str]]] = {
    "default": ({}, {}),
    "before": ({"sweep": {"nthread": 2, "cell_workers": 1}}, {"GOMP_SPINCOUNT": "30000"}),
}
CPU_RATIO_TARGET = 1.3


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def sweep_env(home: str, env_extra: dict[str, str], universe: str | None) -> dict[str, str]:
    """The environment of a sweep into ``home`` on the embedded default (no outside store or
    market), with ``env_extra`` and, if given, ``universe`` as ``CVN_UNIVERSE``."""
    env = {**os.environ, "DAGSTER_HOME": home, **env_extra}
    for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_MARKET_SOURCE", "CVN_CSV_DIR"):
        env.pop(k, None)
    if "GOMP_SPINCOUNT" in env_extra:
        env.pop("OMP_WAIT_POLICY", None)
    if universe:
        env["CVN_UNIVERSE"] = universe
    return env


def run_sweep(config: dict, env_extra: dict[str, str], universe: str | None) -> tuple[float, float]:
    """(wall s, CPU s) of one sweep into a fresh home; exits naming the error if it fails."""
    with tempfile.TemporaryDirectory() as home:
        env = sweep_env(home, env_extra, universe)
        cmd = [sys.executable, "-m", "cvn_assets.sweep", "--quiet"]
        cmd += ["--resource-config", json.dumps(config)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise SystemExit(f"sweep failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def with_load(n: int, fn):
    """``fn()`` while ``n`` busy processes spin beside it (stopped afterwards, by PID)."""
    burners = [mp.Process(target=_burn, args=(time.time() + 7200,), daemon=True) for _ in range(n)]
    for b in burners:
        b.start()
    try:
        return fn()
    finally:
        for b in burners:
            b.terminate()
            b.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", default="0,2,8", help="competing busy processes per level")
    ap.add_argument("--universe", default=None, help="comma-separated cryptos (CVN_UNIVERSE)")
    ap.add_argument("--only", default=None, help="comma-separated contenders")
    args = ap.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    names = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or 0 not in loads or any(x < 0 for x in loads):
        raise SystemExit(f"--only {unknown} unknown or --loads {args.loads!r} lacks 0 / has < 0")
    print(f"cores {os.cpu_count()}  universe {args.universe or '(default)'}  loads {loads}")
    got: dict[tuple[str, int], tuple[float, float]] = {}
    for load in loads:
        for name in names:
            config, env = CONTENDERS[name]
            wall, cpu = with_load(load, partial(run_sweep, config, env, args.universe))
            got[name, load] = (wall, cpu)
            print(f"{name:<8} load {load}: wall {wall:7.1f} s   cpu {cpu:7.1f} s", flush=True)
    print(f"\nratios to the same contender idle (target: CPU <= {CPU_RATIO_TARGET}x)")
    for name in names:
        w0, c0 = got[name, 0]
        for load in loads[1:] if loads[0] == 0 else [x for x in loads if x]:
            w, c = got[name, load]
            ok = "ok" if c / c0 <= CPU_RATIO_TARGET else "MISSED"
            print(f"  {name:<8} load {load}: cpu {c / c0:5.2f}x ({ok})   wall {w / w0:5.2f}x")
    if "default" in names and "before" in names:
        d, b = got["default", 0][0], got["before", 0][0]
        ok = "ok" if d <= b else "MISSED"
        print(f"idle wall default / before: {d / b:.2f}x (target <= 1.0: {ok})")


if __name__ == "__main__":
    main()
