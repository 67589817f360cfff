"""The ``dg`` CLI (dagster-dg-cli, ``[tool.dg]`` in pyproject.toml) loads the one explicit
``cvn_assets.definitions`` (issue 19): ``dg check defs`` passes and ``dg list defs --json``
lists exactly what the Definitions object holds."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvn_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


def _dg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{DG.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def dg_available():
    if not DG.exists() and shutil.which("dg") is None:
        pytest.fail("dg is not installed: pip install -e '.[dev]' installs dagster-dg-cli")


def test_dg_check_defs_passes(dg_available):
    out = _dg("check", "defs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr


def test_dg_list_defs_lists_the_definitions(dg_available):
    out = _dg("list", "defs", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    repo = defs.get_repository_def()
    want_assets = {"/".join(k.path) for k in repo.asset_graph.get_all_asset_keys()}
    assert {a["asset_key"] for a in listed["assets"]} == want_assets
    assert {"finetune_results", "gate_verdicts", "champion_models"} <= want_assets
    assert {j["name"] for j in listed["jobs"]} >= {"rollback_job", "alert_job"}
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in repo.sensor_defs}
