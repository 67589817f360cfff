"""The one command as a user meets it (subprocesses, real Dagster CLI, real SQLite instance),
on a small grid (3 cryptos x 3 folds x 2 variants) to stay CI-sized:

- cells made by hand in a scattered pattern (the issue's BTCUSDC|f2 + ETHUSDC|f0, which a
  linear key range reads as an empty rectangle) are kept, and the command finishes exactly
  the rest;
- a sweep id with other settings trains its own models; a plain re-run afterwards reuses the
  default's models by fingerprint and leaves its numbers untouched; the default id with other
  settings is refused naming what changed; two sweeps compare side by side.
"""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.integration.conftest import REPO, SMALL_GRID

pytestmark = pytest.mark.slow

SMALL = {
    "market_data": {"hours": 3000},
    "sweep": {"num_boost_round": 30, "early_stopping_rounds": 10},
}
GRID = {**SMALL_GRID, "CVN_UNIVERSE": "BTCUSDC,ETHUSDC,SOLUSDC"}  # 3 cryptos
N_CELLS = 3 * 3 * 2


def _env(tmp_path) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), **GRID}
    for k in ("CVN_DATABASE_URL", "CVN_STORE_DIR", "CVN_MARKET_SOURCE", "CVN_CSV_DIR"):
        env.pop(k, None)
    return env


def _run(tmp_path, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(cmd), cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def _sweep(tmp_path, *extra: str, config: dict | None = None) -> subprocess.CompletedProcess:
    cfg = json.dumps(config or SMALL)
    return _run(
        tmp_path, sys.executable, "-m", "cvn_assets.sweep", "--resource-config", cfg, *extra
    )


def _dagster_materialize(tmp_path, select: str, partition: str) -> None:
    run_config = {"resources": {k: {"config": v} for k, v in SMALL.items()}}
    out = _run(
        tmp_path,
        str(REPO / ".venv" / "bin" / "dagster")
        if (REPO / ".venv" / "bin" / "dagster").exists()
        else "dagster",
        "asset",
        "materialize",
        "-m",
        "cvn_assets.definitions",
        "--select",
        select,
        "--partition",
        partition,
        "--config-json",
        json.dumps(run_config),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def _rows(tmp_path, sweep_id: str) -> list[tuple]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'cvn_results.sqlite'}")
    with eng.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select crypto, fold, variant, f1_buy, best_iteration from finetune_results "
                "where sweep_id = :s order by crypto, fold, variant"
            ),
            {"s": sweep_id},
        ).all()
    eng.dispose()
    return [tuple(r) for r in rows]


def test_scattered_cells_then_other_settings_then_back(tmp_path):
    (tmp_path / "home").mkdir()
    # the market stage for every crypto and two scattered cells, made by hand with the CLI
    market = "candles,features,labels,model_dataset,fold_splits"
    for crypto in GRID["CVN_UNIVERSE"].split(","):
        _dagster_materialize(tmp_path, market, crypto)
    for cell in ("BTCUSDC|f2", "ETHUSDC|f0"):
        _dagster_materialize(tmp_path, "model_baseline,calibrated_baseline", cell)

    out = _sweep(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "market stage: 0 crypto partitions" in out.stdout
    assert f"models stage: {N_CELLS - 2} cells" in out.stdout
    assert out.stdout.count(" trained ") == N_CELLS - 2
    default_rows = _rows(tmp_path, "default")
    assert len(default_rows) == N_CELLS

    # another sweep id with other settings trains every cell itself
    eta = {**SMALL, "sweep": {**SMALL["sweep"], "eta": 0.1, "max_depth": 6}}
    out = _sweep(tmp_path, "--sweep-id", "eta01", config=eta)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count(" trained ") == N_CELLS
    assert _rows(tmp_path, "eta01") != default_rows

    # a plain re-run: the default's models are found by fingerprint, its rows are unchanged
    out = _sweep(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count(" trained ") == 0
    assert out.stdout.count(" reused ") == N_CELLS
    assert _rows(tmp_path, "default") == default_rows

    # the default id with other settings: refused before any work, naming what changed
    out = _sweep(tmp_path, config=eta)
    assert out.returncode == 2
    assert "settings.eta: 0.05 -> 0.1" in out.stderr and "settings.max_depth: 4 -> 6" in out.stderr
    assert _rows(tmp_path, "default") == default_rows

    # --force retrains everything, and deterministic training gives the same numbers
    out = _sweep(tmp_path, "--force")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count(" trained ") == N_CELLS
    assert _rows(tmp_path, "default") == default_rows

    # list and compare from the command line
    listed = _run(tmp_path, sys.executable, "-m", "cvn_assets.sweeps", "list")
    assert listed.returncode == 0 and "eta01" in listed.stdout and "default" in listed.stdout
    cmp_ = _run(
        tmp_path, sys.executable, "-m", "cvn_assets.sweeps", "compare", "default", "eta01", "--html"
    )
    assert cmp_.returncode == 0, cmp_.stderr
    assert "settings.eta: 0.05 -> 0.1" in cmp_.stdout and "f1_buy_delta" in cmp_.stdout
    assert (tmp_path / "home" / "reports" / "compare" / "default_vs_eta01.html").exists()
