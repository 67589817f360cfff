"""dagster-postgres storage + the PostgreSQL results store on a real server.

Materializes one crypto's market stage and one crypto x fold cell of one variant with the
Dagster instance on PostgreSQL, then reads the runs, the materialization events and the
finetune_results row back with plain SQL.
"""

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

pytestmark = pytest.mark.postgres

SMALL = {
    "market_data": {"config": {"hours": 3000}},
    "sweep": {"config": {"num_boost_round": 30, "early_stopping_rounds": 10, "sweep_id": "pg"}},
}


def _dagster_yaml(url: str) -> str:
    u = sa.engine.make_url(url)
    return f"""
storage:
  postgres:
    postgres_db:
      scheme: postgresql+psycopg2
      hostname: {u.host}
      port: {u.port}
      username: {u.username}
      password: ""
      db_name: {u.database}
telemetry:
  enabled: false
"""


def test_partition_materialized_into_postgres(tmp_path, pg_database):
    from cvn_assets.definitions import defs
    from cvn_assets.partitions import SETTINGS

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_dagster_yaml(pg_database))
    variant = SETTINGS.variants[1]
    crypto = SETTINGS.universe[0]
    cell = f"{crypto}|f2"
    resources = {
        **SMALL,
        "results_store": {"config": {"database_url": pg_database}},
        "artifacts": {"config": {"base_dir": str(tmp_path / "store")}},
        "io_manager": {"config": {"base_dir": str(tmp_path / "store")}},
    }
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        r1 = defs.resolve_job_def("market_job").execute_in_process(
            run_config={"resources": resources}, instance=instance, partition_key=crypto
        )
        assert r1.success
        r2 = defs.resolve_job_def(f"train_{variant.name}_job").execute_in_process(
            run_config={"resources": resources}, instance=instance, partition_key=cell
        )
        assert r2.success
        assert instance.get_materialized_partitions(AssetKey(f"calibrated_{variant.name}")) == {
            cell
        }

    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("select run_id, status from runs")).all()
        assert {r.run_id for r in runs} == {r1.run_id, r2.run_id}
        assert {r.status for r in runs} == {"SUCCESS"}
        mats = conn.execute(
            sa.text(
                "select asset_key, partition from event_logs "
                "where dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
        ).all()
        got = {(k.strip('[]"'), p) for k, p in mats}
        assert ("candles", crypto) in got and ("fold_splits", crypto) in got
        assert (f"model_{variant.name}", cell) in got
        assert (f"calibrated_{variant.name}", cell) in got
        rows = conn.execute(
            sa.text("select sweep_id, crypto, fold, variant, f1_buy, n_test from finetune_results")
        ).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.sweep_id, row.crypto, row.fold, row.variant) == ("pg", crypto, 2, variant.name)
    assert 0.0 <= row.f1_buy <= 1.0 and row.n_test > 0
    engine.dispose()
