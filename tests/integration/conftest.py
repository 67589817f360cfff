"""Fixtures for integration tests: a real PostgreSQL, isolated Dagster homes."""

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
PG_SCRIPT = REPO / "scripts" / "pg_throwaway.sh"

#: a CI-sized sweep grid (definition-time environment): 2 cryptos x 3 folds (the settings'
#: floor) x 2 variants, the baseline and one focal variant
SMALL_GRID = {
    "CVN_UNIVERSE": "BTCUSDC,ETHUSDC",
    "CVN_N_FOLDS": "3",
    "CVN_VARIANTS": json.dumps(
        [
            {"name": "baseline", "loss_function": "binary:logistic"},
            {"name": "focal_g2_a025", "loss_function": "focal", "gamma": 2, "alpha": 0.25},
        ]
    ),
}
SMALL_GRID_CELLS = 2 * 3 * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _have_initdb() -> bool:
    if any(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return True
    return subprocess.run(["sh", "-c", "command -v initdb"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> Iterator[str]:
    """URL of a real PostgreSQL server: $CVN_TEST_PG_URL, or a throwaway cluster we start."""
    url = os.environ.get("CVN_TEST_PG_URL")
    if url:
        yield url
        return
    if not _have_initdb():
        pytest.skip("no PostgreSQL: set CVN_TEST_PG_URL or install postgresql (initdb)")
    d = Path("/tmp") / f"cvn-pg-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    out = subprocess.run(
        [str(PG_SCRIPT), "start", str(d), str(port)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"could not start PostgreSQL: {out.stderr}")
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run([str(PG_SCRIPT), "stop", str(d)], check=False)
        subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture
def pg_database(pg_server_url) -> Iterator[str]:
    """A fresh, empty database on the server for one test; dropped afterwards."""
    name = f"cvn_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        sa.create_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
