"""The one command refuses bad input in one line, before any work (no traceback, no run)."""

import os
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO


def _sweep(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CVN_")}
    full.update({"DAGSTER_HOME": str(tmp_path / "home"), **env})
    return subprocess.run(
        [sys.executable, "-m", "cvn_assets.sweep", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {"CVN_MARKET_SOURCE": "cvs"}, "CVN_MARKET_SOURCE: 'cvs' is not one of synthetic, csv"),
        (
            (),
            {"CVN_MARKET_SOURCE": "csv", "CVN_CSV_DIR": "/nonexistent/klines"},
            "CVN_CSV_DIR: '/nonexistent/klines' is not a directory",
        ),
        (
            ("--resource-config", '{"sweep": {"etta": 0.1}}'),
            {},
            "sweep has no setting 'etta' (did you mean 'eta'?)",
        ),
        (
            ("--resource-config", '{"sweep": {"embargo_pct": 0.7}}'),
            {},
            "embargo_pct: 0.7 is outside [0, 0.2)",
        ),
        (
            ("--resource-config", '{"sweep": {"eta": "fast"}}'),
            {},
            "eta: 'fast' Input should be a valid number",
        ),
        (
            (),
            {"CVN_N_FOLD": "3"},
            "CVN_N_FOLD: not a cvn-focal variable (did you mean CVN_N_FOLDS?)",
        ),
    ],
)
def test_bad_input_is_one_line_and_nothing_runs(tmp_path, args, env, expected):
    out = _sweep(tmp_path, *args, **env)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if ln.strip()]) == 1  # one line
    # nothing was materialized: no run storage, no stored values
    assert not (tmp_path / "home" / "storage" / "cvn").exists()
    assert not (tmp_path / "home" / "history" / "runs").exists() or not any(
        (tmp_path / "home" / "history" / "runs").glob("*.db")
    )


def test_usdt_files_without_a_symbol_map_get_a_hint(tmp_path):
    folder = tmp_path / "klines"
    folder.mkdir()
    (folder / "BTCUSDT_1h.csv").write_text("open_time,open,high,low,close,volume\n")
    out = _sweep(tmp_path, CVN_MARKET_SOURCE="csv", CVN_CSV_DIR=str(folder))
    assert out.returncode == 2
    assert "the folder has BTCUSDT files: map them with CVN_SYMBOL_MAP=" in out.stderr
    assert "Traceback" not in out.stderr
