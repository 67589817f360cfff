"""Stock SQLite event log vs ``CachedEngineSqliteEventLogStorage``, measured in one run.

Each variant runs in a fresh interpreter with a fresh ``DAGSTER_HOME``: one in-process run
whose single op reports N asset materializations (with metadata, like the sweep's). Prints
seconds per stored event for both and their ratio.

  python bench/bench_event_log.py [N]
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, sys, time
from dagster import AssetMaterialization, DagsterInstance, job, op
n = int(sys.argv[1])

@op
def many(context):
    for i in range(n):
        context.log_event(AssetMaterialization(f"a{i % 5}", metadata={"i": i, "f1": 0.5}))

@job
def j():
    many()

inst = DagsterInstance.get()
cfg = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
t = time.perf_counter()
j.execute_in_process(instance=inst, run_config=cfg)
print(type(inst.event_log_storage).__name__, time.perf_counter() - t)
"""


def run(kind: str, n: int) -> float:
    from resources.instance_storage import default_instance_yaml

    with tempfile.TemporaryDirectory() as home:
        yaml = default_instance_yaml(home) if kind == "cached" else "telemetry:\n  enabled: false\n"
        Path(home, "dagster.yaml").write_text(yaml)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)],
            cwd=REPO,
            env={**__import__("os").environ, "DAGSTER_HOME": home},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return float(out[-1])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    t0 = time.perf_counter()
    stock = run("stock", n)
    cached = run("cached", n)
    print(f"{n} materialization events in one run (run overhead included)")
    print(f"stock SqliteEventLogStorage        : {stock:6.2f} s  ({stock / n * 1e3:5.1f} ms/event)")
    print(
        f"CachedEngineSqliteEventLogStorage  : {cached:6.2f} s  ({cached / n * 1e3:5.1f} ms/event)"
    )
    wall = time.perf_counter() - t0
    print(f"ratio stock / cached: {stock / cached:.2f}x   (bench wall {wall:.0f} s)")


if __name__ == "__main__":
    main()
