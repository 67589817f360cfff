"""The drills' sweep cache end to end (cvn_assets/drill_setup.run_sweep): a real sweep on a small
grid stores its home; a second drill with the same settings restores it, and the sweep command
on the restored home finds every cell stored under its identity (trains none) with the same
results rows; a changed setting is another key, so nothing stored is read.

Each step runs in its own process, as each drill does (the definitions read the CVN_*
environment once)."""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.integration.conftest import REPO, SMALL_GRID, SMALL_GRID_CELLS

pytestmark = pytest.mark.slow

GRID = SMALL_GRID
N_CELLS = SMALL_GRID_CELLS
MARKET = {"hours": 3000, "edge": 4.0}
SWEEP = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from cvn_assets.drill_setup import fresh_home, run_sweep\n"
    "fresh_home(sys.argv[1], 'unused')\n"
    "sys.exit(run_sweep(json.loads(sys.argv[2]), Path(sys.argv[3])))\n"
)
KEY = (
    "import json, sys\n"
    "from cvn_assets.drill_cache import cache_key\n"
    "from cvn_assets.drill_setup import cache_document\n"
    "print(cache_key(cache_document(json.loads(sys.argv[1]))))\n"
)
#: finetune_results columns that are not results (wall clock)
NOT_RESULTS = ("train_seconds", "written_at")


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **GRID, **extra, "DAGSTER_HOME": str(tmp_path / "unset")}
    for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_MARKET_SOURCE", "CVN_EXECUTOR"):
        env.pop(k, None)
    return env


def _sweep(tmp_path, home: str, market=MARKET) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-c", SWEEP, str(tmp_path / home), json.dumps(market),
         str(tmp_path / "cache")],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _key(tmp_path, market=MARKET, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", KEY, json.dumps(market)],
        cwd=REPO, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _results(home) -> list[tuple]:
    eng = sa.create_engine(f"sqlite:///{home / 'cvn_results.sqlite'}")
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("select * from finetune_results")).mappings().all()
    finally:
        eng.dispose()
    return sorted(
        (tuple((k, v) for k, v in sorted(r.items()) if k not in NOT_RESULTS) for r in rows),
        key=repr,
    )


def test_the_sweep_cache_is_reused_for_equal_settings_and_not_for_changed_ones(tmp_path):
    key = _key(tmp_path)
    first = _sweep(tmp_path, "home1")
    assert f"sweep cache: no entry yet: {tmp_path / 'cache' / key}" in first.stdout
    assert f"models stage: {N_CELLS} cells to do; {N_CELLS} trained" in first.stdout
    assert f"sweep cache: stored {tmp_path / 'cache' / key}" in first.stdout
    assert (tmp_path / "cache" / key / "key.json").is_file()

    second = _sweep(tmp_path, "home2")
    assert f"sweep cache: restored: {tmp_path / 'cache' / key}" in second.stdout
    assert "models stage: 0 cells to do; 0 trained" in second.stdout, second.stdout
    assert "results stage: up to date" in second.stdout, second.stdout
    assert "sweep cache: stored" not in second.stdout
    results = _results(tmp_path / "home1")
    assert len(results) == N_CELLS
    assert _results(tmp_path / "home2") == results
    # the restored home's instance is its own (not the first home's)
    assert str(tmp_path / "home2") in (tmp_path / "home2" / "dagster.yaml").read_text()
    assert str(tmp_path / "home1") not in (tmp_path / "home2" / "dagster.yaml").read_text()

    # a changed setting (a definition-time one, a run-time one of the market) is another key
    changed = {_key(tmp_path, CVN_N_FOLDS="4"), _key(tmp_path, {**MARKET, "edge": 4.5})}
    assert key not in changed and len(changed) == 2
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [key]
