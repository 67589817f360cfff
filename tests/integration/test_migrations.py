"""Alembic migrations of the results-store database, on real SQLite and real PostgreSQL.

A fresh database reaches head; a database made by the code before migrations (the abe7750
schema, today's ``create_all`` schema, or the mix of both) is stamped and upgraded in place,
keeping its rows; upgrading twice changes nothing; two processes upgrading at once are
serialised; the migrated schema is the one the ``Table`` objects describe.
"""

import json
import multiprocessing as mp
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cvn_assets.ablation.identity import SweepIdentity
from resources.alert_store import ALERTS_METADATA
from resources.config_store import CONFIG_METADATA, ConfigStore
from resources.db import sqlite_foreign_keys
from resources.journal import JOURNAL_METADATA
from resources.live_state import LIVE_METADATA
from resources.migrations import (
    HEAD,
    LegacySchemaError,
    _legacy_revision,
    alembic_config,
    head_revision,
    upgrade_database,
)
from resources.model_registry import REGISTRY_METADATA
from resources.results_store import METADATA, ResultsStore
from resources.rollbacks import rollbacks_table

REPO = Path(__file__).resolve().parents[2]
ALL_METADATA = [
    METADATA,
    CONFIG_METADATA,
    REGISTRY_METADATA,
    JOURNAL_METADATA,
    rollbacks_table.metadata,
    ALERTS_METADATA,
    LIVE_METADATA,
]
GUARD_TABLES = {"ftf_config", "config_audit", "model_versions", "model_aliases"}
GUARD_TABLES |= {"model_alias_history", "predictions", "trades", "monitoring_metrics"}
GUARD_TABLES |= {"rollbacks", "alerts", "live_state", "live_events"}
RESULT_TABLES = ("finetune_results", "oos_returns", "gate_verdicts")
_ADDED_BY_0004 = {"trading_threshold", "expectancy_trading", "n_trades_trading"}
PLACEHOLDER = ("0000000000000000", '{"note": "registered before sweep identities existed"}')

# --- the schema of commit abe7750, frozen (checked against git below when it is there) ---
ABE7750 = sa.MetaData()
_ABE_RESULT_COLUMNS = (
    ("loss_function", sa.String(32)),
    ("gamma", sa.Float),
    ("alpha", sa.Float),
    ("primary_calibration", sa.String(16)),
    ("n_train", sa.Integer),
    ("n_early_stopping", sa.Integer),
    ("n_calibration", sa.Integer),
    ("n_test", sa.Integer),
    ("n_buy", sa.Integer),
    ("n_pred_buy", sa.Integer),
    ("threshold", sa.Float),
    ("f1_buy", sa.Float),
    ("precision_buy", sa.Float),
    ("recall_buy", sa.Float),
    ("log_loss", sa.Float),
    ("ece_hold_none", sa.Float),
    ("ece_hold_temperature", sa.Float),
    ("ece_hold_platt", sa.Float),
    ("ece_hold_isotonic", sa.Float),
    ("temperature", sa.Float),
    ("expectancy_net", sa.Float),
    ("n_trades", sa.Integer),
    ("best_iteration", sa.Integer),
    ("train_seconds", sa.Float),
)
abe_finetune = sa.Table(
    "finetune_results",
    ABE7750,
    sa.Column("sweep_id", sa.String(64), primary_key=True),
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("fold", sa.Integer, primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    *(sa.Column(name, typ, nullable=True) for name, typ in _ABE_RESULT_COLUMNS),
    sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
abe_oos = sa.Table(
    "oos_returns",
    ABE7750,
    sa.Column("sweep_id", sa.String(64), primary_key=True),
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("fold", sa.Integer, primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("net_return", sa.Float, nullable=False),
    sa.Column("n_trades", sa.Integer, nullable=False),
)
abe_verdicts = sa.Table(
    "gate_verdicts",
    ABE7750,
    sa.Column("sweep_id", sa.String(64), primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    sa.Column("lock", sa.Boolean, nullable=True),
    sa.Column("verdict_json", sa.Text, nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

# rows of the old database: sweeps old1 (results + returns), old2 (result + verdict), old3
# (returns only)
OLD_RESULTS = [
    {"sweep_id": "old1", "crypto": "BTCUSDC", "fold": 0, "variant": "baseline", "f1_buy": 0.31,
     "loss_function": "binary:logistic", "n_test": 100, "threshold": 0.42},
    {"sweep_id": "old1", "crypto": "ETHUSDC", "fold": 1, "variant": "focal_g2_a25",
     "f1_buy": 0.29, "loss_function": "focal", "gamma": 2.0, "alpha": 0.25, "n_test": 90},
    {"sweep_id": "old2", "crypto": "BTCUSDC", "fold": 4, "variant": "baseline", "f1_buy": None,
     "loss_function": "binary:logistic", "train_seconds": 1.5},
]  # fmt: skip
OLD_RETURNS = [
    {"sweep_id": "old1", "crypto": "BTCUSDC", "fold": 0, "variant": "baseline",
     "period": "2024-01-01", "net_return": 0.01, "n_trades": 2},
    {"sweep_id": "old3", "crypto": "SOLUSDC", "fold": 2, "variant": "baseline",
     "period": "2024-01-02", "net_return": -0.004, "n_trades": 1},
]  # fmt: skip
OLD_VERDICTS = [
    {"sweep_id": "old2", "variant": "focal_g2_a25", "lock": False, "verdict_json": '{"x": 1}'},
]


def _identity(eta: float = 0.05) -> SweepIdentity:
    return SweepIdentity(
        settings={"eta": eta, "seed": 0},
        definition={"universe": ["BTCUSDC"], "n_folds": 5, "variants": []},
        data={"source": "synthetic", "seed": 7},
        code={"xgboost": "3.2.0"},
    )


def _engine(url: str) -> sa.Engine:
    """An engine like the results store's (SQLite enforces foreign keys), no upgrade."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_foreign_keys)
    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.sqlite'}"
    return request.getfixturevalue("pg_database")


def _make_abe7750(url: str) -> None:
    engine = _engine(url)
    ABE7750.create_all(engine)
    with engine.begin() as conn:
        keys = [c.name for c in abe_finetune.columns if c.name != "written_at"]
        conn.execute(abe_finetune.insert(), [{k: r.get(k) for k in keys} for r in OLD_RESULTS])
        conn.execute(abe_oos.insert(), OLD_RETURNS)
        conn.execute(abe_verdicts.insert(), OLD_VERDICTS)
    engine.dispose()


def _make_pre_migration(url: str, *, trading_columns: bool = False) -> None:
    """What the code just before migrations made: ``METADATA.create_all`` (``sweeps`` and the
    foreign keys) and a registered sweep. At a8255cd ``finetune_results`` lacked the columns
    that ``0004`` adds; from 60b341f ``create_all`` made them (``trading_columns``)."""
    engine = _engine(url)
    METADATA.create_all(engine)
    with engine.begin() as conn:
        if not trading_columns:
            for name in sorted(_ADDED_BY_0004):
                conn.execute(sa.text(f"ALTER TABLE finetune_results DROP COLUMN {name}"))
    with engine.begin() as conn:
        conn.execute(
            METADATA.tables["sweeps"].insert(),
            [
                {
                    "sweep_id": "new1",
                    "fingerprint": _identity().fingerprint,
                    "identity_json": json.dumps(_identity().as_dict(), sort_keys=True),
                    "data_source": "synthetic",
                }
            ],
        )
        conn.execute(
            METADATA.tables["finetune_results"].insert(),
            [{"sweep_id": "new1", "crypto": "BTCUSDC", "fold": 0, "variant": "baseline"}],
        )
    engine.dispose()


def _make_mixed(url: str) -> None:
    """abe7750 tables, then today's ``create_all``: it adds ``sweeps`` but no foreign key to
    tables that already exist."""
    _make_abe7750(url)
    engine = _engine(url)
    METADATA.tables["sweeps"].create(engine)
    with engine.begin() as conn:
        conn.execute(
            METADATA.tables["sweeps"].insert(),
            [
                {
                    "sweep_id": "old1",
                    "fingerprint": _identity().fingerprint,
                    "identity_json": json.dumps(_identity().as_dict(), sort_keys=True),
                    "data_source": "synthetic",
                }
            ],
        )
    engine.dispose()


MAKERS = {
    "abe7750": _make_abe7750,
    "pre_migration": _make_pre_migration,
    "pre_migration_trading": lambda url: _make_pre_migration(url, trading_columns=True),
    "mixed": _make_mixed,
}


def _rows(conn: sa.Connection, table: str, columns: list[str] | None = None) -> list[tuple]:
    cols = ", ".join(columns) if columns else "*"
    order = ", ".join(columns) if columns else "1"
    return [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM {table} ORDER BY {order}"))]


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        names = sorted(sa.inspect(conn).get_table_names())
        out = {}
        for name in names:
            cols = [c["name"] for c in sa.inspect(conn).get_columns(name)]
            out[name] = _rows(conn, name, cols)
    return out


def _schema_problems(engine: sa.Engine) -> list:
    """Differences between the database and the Table objects (empty = same schema)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "cvn_alembic_version"}
        )
        diffs = compare_metadata(ctx, ALL_METADATA)
        insp = sa.inspect(conn)
        declared = {t.name: t for md in ALL_METADATA for t in md.sorted_tables}
        actual = set(insp.get_table_names()) - {"cvn_alembic_version"}
        if actual != set(declared):
            diffs.append(("tables", sorted(actual), sorted(declared)))
        for name, table in declared.items():
            if name not in actual:
                continue  # reported above
            cols = {c["name"]: c for c in insp.get_columns(name)}
            if set(cols) != {c.name for c in table.columns}:
                diffs.append(("columns", name, sorted(cols), sorted(c.name for c in table.columns)))
            for c in table.columns:
                if c.name in cols and bool(cols[c.name]["nullable"]) != bool(c.nullable):
                    diffs.append(("nullable", name, c.name))
            pk = insp.get_pk_constraint(name)["constrained_columns"]
            if sorted(pk) != sorted(c.name for c in table.primary_key):
                diffs.append(("pk", name, pk))
            fks = {
                (tuple(fk["constrained_columns"]), fk["referred_table"],
                 (fk.get("options") or {}).get("ondelete"))
                for fk in insp.get_foreign_keys(name)
            }  # fmt: skip
            want = {
                (tuple(c.parent.name for c in fk.elements), fk.referred_table.name, fk.ondelete)
                for fk in table.foreign_key_constraints
            }
            if fks != want:
                diffs.append(("fks", name, sorted(fks), sorted(want)))
    return diffs


# --- revisions --------------------------------------------------------------------------
def test_the_revisions_form_one_chain_ending_at_head():
    script = ScriptDirectory.from_config(alembic_config())
    chain = [s.revision for s in script.walk_revisions()][::-1]
    assert chain == [
        "0001_results_baseline",
        "0002_sweeps",
        "0003_guard_state",
        "0004_trading_metrics",
        "0005_journal",
        "0006_monitoring",
        "0007_drift_inputs",
        "0008_rollbacks",
        "0009_alerts",
        "0010_live_state",
    ]
    assert head_revision() == HEAD == chain[-1]


def test_the_frozen_abe7750_schema_is_the_one_of_git():
    try:
        src = subprocess.run(
            ["git", "show", "abe7750:resources/results_store.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("commit abe7750 is not in this checkout")
    ns: dict = {"__name__": "abe7750_results_store"}
    exec(compile(src, "abe7750:resources/results_store.py", "exec"), ns)
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateTable

    old = ns["METADATA"]
    assert sorted(old.tables) == sorted(ABE7750.tables)
    for name, table in ABE7750.tables.items():
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            got = str(CreateTable(old.tables[name]).compile(dialect=dialect))
            assert got == str(CreateTable(table).compile(dialect=dialect))


# --- fresh database ---------------------------------------------------------------------
def test_a_fresh_database_is_created_at_head(db_url):
    engine = _engine(db_url)
    assert upgrade_database(engine) == HEAD
    with engine.connect() as conn:
        assert _rows(conn, "cvn_alembic_version") == [(HEAD,)]
        names = set(sa.inspect(conn).get_table_names())
        assert names == {"cvn_alembic_version", "sweeps", *RESULT_TABLES, *GUARD_TABLES}
        assert _rows(conn, "ftf_config", ["flag", "value", "version"]) == [
            ("CVN_LOSS_FUNCTION", "focal", 1),
            ("trading_halted", "false", 1),
        ]
        cols = ["flag", "old_value", "new_value", "old_version", "new_version", "actor", "reason"]
        assert _rows(conn, "config_audit", cols) == [
            ("CVN_LOSS_FUNCTION", None, "focal", 0, 1, "alembic:0003_guard_state", "initial value"),
            ("trading_halted", None, "false", 0, 1, "alembic:0003_guard_state", "initial value"),
        ]
        for name in ("sweeps", *RESULT_TABLES, "model_versions", "model_aliases"):
            assert _rows(conn, name) == []
    assert _schema_problems(engine) == []
    engine.dispose()


def test_the_results_store_opens_a_fresh_database_at_head(db_url):
    store = ResultsStore(database_url=db_url)
    store.register_sweep("s", _identity())
    store.replace_results(
        "s",
        [{"crypto": "BTCUSDC", "fold": 0, "variant": "baseline", "f1_buy": 0.3,
          "trading_threshold": 0.7, "n_trades_trading": 12}],
    )  # fmt: skip
    got = store.load_results("s").iloc[0]
    assert (got["f1_buy"], got["trading_threshold"], got["n_trades_trading"]) == (0.3, 0.7, 12)
    with store.engine.connect() as conn:
        assert _rows(conn, "cvn_alembic_version") == [(HEAD,)]


# --- the migrated schema is the query-side description ----------------------------------
@pytest.mark.parametrize("origin", ["fresh", *MAKERS])
def test_the_migrated_schema_is_the_one_of_the_table_objects(db_url, origin):
    if origin != "fresh":
        MAKERS[origin](db_url)
    engine = _engine(db_url)
    upgrade_database(engine)
    assert _schema_problems(engine) == []
    engine.dispose()


def test_the_schema_comparison_sees_missing_tables_columns_and_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _make_mixed(url)  # sweeps, no foreign keys, no guard tables, no trading columns
    problems = _schema_problems(_engine(url))
    added = {p[1].name for p in problems if p[0] == "add_table"}
    assert added == GUARD_TABLES
    assert ("fks", "finetune_results", [], [(("sweep_id",), "sweeps", "CASCADE")]) in problems
    columns = {p[3].name for p in problems if p[0] == "add_column"}
    assert columns == _ADDED_BY_0004


# --- databases made before migrations ----------------------------------------------------
@pytest.mark.parametrize(
    ("origin", "revision"),
    [("abe7750", "0001_results_baseline"), ("pre_migration", "0002_sweeps"),
     ("pre_migration_trading", "0002_sweeps"), ("mixed", "0001_results_baseline")],
)  # fmt: skip
def test_a_pre_migration_database_is_recognised(db_url, origin, revision):
    MAKERS[origin](db_url)
    engine = _engine(db_url)
    with engine.connect() as conn:
        assert _legacy_revision(conn) == revision
    engine.dispose()


def test_an_abe7750_database_upgrades_in_place(db_url):
    _make_abe7750(db_url)
    engine = _engine(db_url)
    old_cols = {t.name: [c.name for c in t.columns] for t in ABE7750.sorted_tables}
    with engine.connect() as conn:
        before = {name: _rows(conn, name, cols) for name, cols in old_cols.items()}
    assert len(before["finetune_results"]) == 3 and before["finetune_results"][0][0] == "old1"

    store = ResultsStore(database_url=db_url)
    store.engine  # noqa: B018 -- opening the store upgrades the database
    with store.engine.connect() as conn:
        assert _rows(conn, "cvn_alembic_version") == [(HEAD,)]
        # every old row is there, unchanged (the new trading columns are NULL)
        for name, cols in old_cols.items():
            assert _rows(conn, name, cols) == before[name]
        assert _rows(conn, "finetune_results", sorted(_ADDED_BY_0004)) == [(None,) * 3] * 3
        # one placeholder per sweep id used by any of the three tables
        sweep_cols = ["sweep_id", "fingerprint", "identity_json", "data_source"]
        assert _rows(conn, "sweeps", sweep_cols) == [
            ("old1", *PLACEHOLDER, "unknown"),
            ("old2", *PLACEHOLDER, "unknown"),
            ("old3", *PLACEHOLDER, "unknown"),
        ]  # fmt: skip
        for name in RESULT_TABLES:
            (fk,) = sa.inspect(conn).get_foreign_keys(name)
            assert (fk["constrained_columns"], fk["referred_table"]) == (["sweep_id"], "sweeps")
            assert fk["options"].get("ondelete") == "CASCADE"
    # the foreign keys are enforced: no orphan row, and deleting a sweep deletes its rows
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO oos_returns VALUES ('ghost', 'BTCUSDC', 0, 'b', 'p', 0.0, 0)")
            )
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM sweeps WHERE sweep_id = 'old1'"))
    with store.engine.connect() as conn:
        assert _rows(conn, "finetune_results", ["sweep_id", "crypto"]) == [("old2", "BTCUSDC")]
        assert _rows(conn, "oos_returns", ["sweep_id"]) == [("old3",)]
    # the store works on the upgraded database
    assert store.get_sweep("old2")["data_source"] == "unknown"
    assert store.load_verdicts("old2").to_dict("records") == [{"x": 1}]
    assert store.register_sweep("fresh", _identity()) == "new"
    store.replace_results("fresh", [{"crypto": "BTCUSDC", "fold": 0, "variant": "baseline"}])
    assert len(store.load_results("fresh")) == 1
    engine.dispose()


@pytest.mark.parametrize("origin", ["pre_migration", "pre_migration_trading"])
def test_a_pre_migration_database_keeps_its_registered_sweeps(db_url, origin):
    MAKERS[origin](db_url)
    store = ResultsStore(database_url=db_url)
    assert store.get_sweep("new1")["fingerprint"] == _identity().fingerprint  # not a placeholder
    assert store.register_sweep("new1", _identity()) == "same"
    assert store.load_results("new1")[["crypto", "fold"]].values.tolist() == [["BTCUSDC", 0]]
    with store.engine.connect() as conn:
        assert _rows(conn, "cvn_alembic_version") == [(HEAD,)]
        assert _rows(conn, "ftf_config", ["flag", "version"]) == [
            ("CVN_LOSS_FUNCTION", 1),
            ("trading_halted", 1),
        ]


def test_a_mixed_database_gains_placeholders_and_foreign_keys(db_url):
    _make_mixed(db_url)
    store = ResultsStore(database_url=db_url)
    with store.engine.connect() as conn:
        assert _rows(conn, "sweeps", ["sweep_id", "fingerprint"]) == [
            ("old1", _identity().fingerprint),  # registered by today's code: kept
            ("old2", PLACEHOLDER[0]),
            ("old3", PLACEHOLDER[0]),
        ]
        for name in RESULT_TABLES:
            assert [fk["referred_table"] for fk in sa.inspect(conn).get_foreign_keys(name)] == [
                "sweeps"
            ]
    assert len(store.load_results("old1")) == 2


def test_part_of_the_old_schema_is_refused_by_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'partial.sqlite'}"
    engine = _engine(url)
    abe_finetune.create(engine)
    with pytest.raises(LegacySchemaError, match=r"\['gate_verdicts', 'oos_returns'\] do not"):
        upgrade_database(engine)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["finetune_results"]  # rolled back


def test_other_applications_tables_do_not_look_like_an_old_schema(db_url):
    engine = _engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE runs (id INTEGER PRIMARY KEY)"))
    assert upgrade_database(engine) == HEAD
    with engine.connect() as conn:
        assert "runs" in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_a_failed_upgrade_leaves_the_database_as_it_was(db_url):
    """The whole upgrade is one transaction: 0003 fails on a foreign ``model_versions``
    table after 0002 has run, and nothing of 0002 (nor the stamp) remains."""
    _make_abe7750(db_url)
    engine = _engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE model_versions (other_app INTEGER)"))
    before = _snapshot(engine)
    with pytest.raises(sa.exc.DBAPIError, match="model_versions"):
        upgrade_database(engine)
    assert _snapshot(engine) == before
    with engine.connect() as conn:
        assert "sweeps" not in sa.inspect(conn).get_table_names()
        assert sa.inspect(conn).get_foreign_keys("finetune_results") == []
    engine.dispose()


# --- idempotence, downgrade, concurrency -------------------------------------------------
def test_a_second_upgrade_changes_nothing(db_url):
    _make_abe7750(db_url)
    engine = _engine(db_url)
    upgrade_database(engine)
    config = ConfigStore(database_url=db_url)
    assert config.compare_and_set("trading_halted", 1, "true", actor="t", reason="r") == 2
    before = _snapshot(engine)
    assert upgrade_database(engine) == HEAD
    assert upgrade_database(_engine(db_url)) == HEAD  # another process / engine
    ResultsStore(database_url=db_url).engine  # noqa: B018
    assert _snapshot(engine) == before
    assert before["cvn_alembic_version"] == [(HEAD,)]
    engine.dispose()


def test_downgrade_to_base_and_back_to_head(db_url):
    engine = _engine(db_url)
    upgrade_database(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"cvn_alembic_version"}
    assert upgrade_database(engine) == HEAD
    assert _schema_problems(engine) == []
    engine.dispose()


def _upgrade_in_child(url: str, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        results.put(("ok", upgrade_database(_engine(url))))
    except BaseException as err:  # reported to the parent
        results.put(("error", f"{type(err).__name__}: {err}"))


def test_two_processes_upgrading_at_once_are_serialised(db_url):
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_in_child, args=(db_url, barrier, results)) for _ in "ab"]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == [("ok", HEAD), ("ok", HEAD)]
    engine = _engine(db_url)
    with engine.connect() as conn:
        assert _rows(conn, "cvn_alembic_version") == [(HEAD,)]
        assert _rows(conn, "ftf_config", ["flag", "version"]) == [
            ("CVN_LOSS_FUNCTION", 1),
            ("trading_halted", 1),
        ]
        assert len(_rows(conn, "config_audit")) == 2  # seeded once
    assert _schema_problems(engine) == []
    engine.dispose()


# --- 0007: the journal's drift inputs and the candidate alias, in place ------------------
_DRIFT_COLUMNS = [
    *(f"feature_{i}" for i in range(1, 6)),
    "label",
    "label_known_at",
    "candidate_version",
    "candidate_buy_proba",
    "candidate_decision",
]


def test_a_0006_journal_upgrades_in_place_to_head(db_url):
    """Rows written at 0006 (a sweep, two versions, champion + previous, two predictions)
    are kept by 0007; the new columns are NULL; the candidate alias and the new columns are
    then accepted, and their checks enforced."""
    engine = _engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006_monitoring")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sweeps (sweep_id, fingerprint, identity_json, data_source) "
                "VALUES ('s', '0000000000000000', '{}', 'x')"
            )
        )
        for vid in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (id, crypto, variant, loss_function, train_start,"
                    " train_end, sweep_id, artifact_uri, reference_stats_json, created_at) "
                    "VALUES (:id, 'BTCUSDC', :v, 'binary:logistic', :t0, :t1, 's', 'u', '{}', :t1)"
                ),
                {
                    "id": vid,
                    "v": f"v{vid}",
                    "t0": "2024-01-01 00:00:00",
                    "t1": "2024-06-01 00:00:00",
                },
            )
        conn.execute(
            sa.text(
                "INSERT INTO model_aliases (crypto, alias, version_id) VALUES "
                "('BTCUSDC', 'champion', 2), ('BTCUSDC', 'previous', 1)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO predictions (crypto, hour, model_version, loss_function, buy_proba,"
                " decision, latency_ms) VALUES "
                "('BTCUSDC', '2024-06-02 00:00:00', 2, 'binary:logistic', 0.25, 'HOLD', 1.5), "
                "('BTCUSDC', '2024-06-02 01:00:00', 2, 'binary:logistic', 0.75, 'BUY', NULL)"
            )
        )
        with pytest.raises(sa.exc.DBAPIError, match="ck_model_aliases_alias|CHECK"):
            with conn.begin_nested():
                conn.execute(
                    sa.text("INSERT INTO model_aliases VALUES ('BTCUSDC', 'candidate', 1)")
                )
    old_cols = ["crypto", "model_version", "loss_function", "buy_proba", "decision", "latency_ms"]
    with engine.connect() as conn:
        before_p = _rows(conn, "predictions", old_cols)
        before_a = _rows(conn, "model_aliases", ["crypto", "alias", "version_id"])
    assert upgrade_database(engine) == HEAD
    with engine.connect() as conn:
        assert _rows(conn, "predictions", old_cols) == before_p
        assert [tuple(x) for x in _rows(conn, "predictions", _DRIFT_COLUMNS)] == [
            (None,) * len(_DRIFT_COLUMNS)
        ] * 2
        assert _rows(conn, "model_aliases", ["crypto", "alias", "version_id"]) == before_a
    assert _schema_problems(engine) == []
    # the candidate alias and the new columns are accepted ...
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO model_aliases VALUES ('BTCUSDC', 'candidate', 1)"))
        conn.execute(
            sa.text(
                "UPDATE predictions SET feature_1 = 0.5, label = 1, "
                "label_known_at = '2024-06-02 03:00:00', candidate_version = 1, "
                "candidate_buy_proba = 0.6, candidate_decision = 'BUY' "
                "WHERE hour = '2024-06-02 00:00:00'"
            )
        )
    # ... and checked: a label without its time, a half-filled candidate, a bad decision
    for bad in (
        "label = 0, label_known_at = NULL",
        "label = 2",
        "candidate_decision = NULL",
        "candidate_decision = 'SELL'",
        "candidate_buy_proba = 1.5",
        "candidate_version = 99",
        "alias",  # the alias check, below
    ):
        sql = (
            "UPDATE model_aliases SET alias = 'canary' WHERE alias = 'candidate'"
            if bad == "alias"
            else f"UPDATE predictions SET {bad} WHERE hour = '2024-06-02 00:00:00'"
        )
        with pytest.raises(sa.exc.DBAPIError):
            with engine.begin() as conn:
                conn.execute(sa.text(sql))
    engine.dispose()


# --- 0009: the alerts table, in place --------------------------------------------------------
def test_0009_adds_alerts_to_a_0008_database_and_downgrades_cleanly(db_url):
    """A database at 0008 with a rollback row gains ``alerts`` (empty; the rollback kept);
    the unique key and the state check are enforced; a downgrade to 0008 drops the table
    only, and the upgrade comes back to head."""
    engine = _engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0008_rollbacks")
        conn.execute(
            sa.text(
                "INSERT INTO rollbacks (incident_id, trigger, triggered_at, actor, reason, "
                "cryptos_json, flipped, state) VALUES ('INC-1', 'manual', '2026-12-01 00:00:00',"
                " 'a', 'r', '[]', true, 'confirmed')"
            )
        )
    assert upgrade_database(engine) == HEAD
    assert _schema_problems(engine) == []
    row = (
        "INSERT INTO alerts (incident_id, name, severity, cryptos_json, figures_json, runbook, "
        "at, message, recorded_at, delivery_state, attempts, file_synced) VALUES ('INC-1', "
        "'rollback', 'P1', '[]', '{}', 'r.md', '2026-12-01 00:00:00', 'm', "
        "'2026-12-01 00:00:00', :state, 0, false)"
    )
    with engine.begin() as conn:
        assert _rows(conn, "rollbacks", ["incident_id"]) == [("INC-1",)]
        assert _rows(conn, "alerts") == []
        conn.execute(sa.text(row), {"state": "pending"})
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin_nested():
                conn.execute(sa.text(row), {"state": "pending"})  # same incident and rule
        with pytest.raises(sa.exc.DBAPIError, match="ck_alerts_delivery_state|CHECK"):
            with conn.begin_nested():
                conn.execute(sa.text(row.replace("'rollback'", "'other'")), {"state": "lost"})
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008_rollbacks")
    with engine.connect() as conn:
        assert "alerts" not in sa.inspect(conn).get_table_names()
        assert _rows(conn, "rollbacks", ["incident_id"]) == [("INC-1",)]
        assert _rows(conn, "cvn_alembic_version") == [("0008_rollbacks",)]
    assert upgrade_database(engine) == HEAD
    assert _schema_problems(engine) == []
    engine.dispose()
