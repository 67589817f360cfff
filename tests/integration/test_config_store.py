"""Config store (kill switch) on real SQLite and real PostgreSQL: compare-and-set on a version,
one audit row per change in the same transaction, validated values, concurrent writers."""

import multiprocessing as mp
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

import resources.config_store as config_store_module
from resources.config_store import ConfigConflict, ConfigStore, UnknownFlag

SEED_ACTOR = "alembic:0003_guard_state"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.sqlite'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def store(db_url) -> ConfigStore:
    return ConfigStore(database_url=db_url)


def _audit(store: ConfigStore, flag: str | None = None) -> list[tuple]:
    keys = ("flag", "old_value", "new_value", "old_version", "new_version", "actor", "reason")
    keys += ("incident_id", "dagster_run_id")
    return [tuple(row[k] for k in keys) for row in store.audit(flag)]


def test_the_flags_are_seeded_at_version_1(store):
    assert store.get("CVN_LOSS_FUNCTION") == ("focal", 1)
    assert store.get("trading_halted") == ("false", 1)
    assert store.all() == {"CVN_LOSS_FUNCTION": ("focal", 1), "trading_halted": ("false", 1)}
    assert _audit(store) == [
        ("CVN_LOSS_FUNCTION", None, "focal", 0, 1, SEED_ACTOR, "initial value", None, None),
        ("trading_halted", None, "false", 0, 1, SEED_ACTOR, "initial value", None, None),
    ]
    with pytest.raises(UnknownFlag, match="config flag 'nope' is not set in"):
        store.get("nope")


def test_compare_and_set_bumps_the_version_and_writes_one_audit_row(store):
    t0 = datetime.now(UTC)
    assert (
        store.compare_and_set(
            "trading_halted",
            1,
            "true",
            actor="oncall:alice",
            reason="exchange outage",
            incident_id="INC-42",
            dagster_run_id="3f1c2a9e-0000-4000-8000-000000000001",
        )
        == 2
    )
    assert store.compare_and_set("trading_halted", 2, "false", actor="bob", reason="resolved") == 3
    assert (
        store.compare_and_set("CVN_LOSS_FUNCTION", 1, "binary:logistic", actor="c", reason="kill")
        == 2
    )
    t1 = datetime.now(UTC)
    assert store.all() == {
        "CVN_LOSS_FUNCTION": ("binary:logistic", 2),
        "trading_halted": ("false", 3),
    }
    run = "3f1c2a9e-0000-4000-8000-000000000001"
    assert _audit(store, "trading_halted") == [
        ("trading_halted", None, "false", 0, 1, SEED_ACTOR, "initial value", None, None),
        ("trading_halted", "false", "true", 1, 2, "oncall:alice", "exchange outage", "INC-42", run),
        ("trading_halted", "true", "false", 2, 3, "bob", "resolved", None, None),
    ]
    assert _audit(store)[-1] == (
        "CVN_LOSS_FUNCTION", "focal", "binary:logistic", 1, 2, "c", "kill", None, None
    )  # fmt: skip
    rows = store.audit()
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == 5
    for row in rows[2:]:
        assert row["changed_at"].tzinfo == UTC and t0 <= row["changed_at"] <= t1


def test_a_stale_version_is_a_conflict_naming_the_flag_and_both_versions(store):
    store.compare_and_set("trading_halted", 1, "true", actor="a", reason="halt")
    with pytest.raises(ConfigConflict) as err:
        store.compare_and_set("trading_halted", 1, "false", actor="b", reason="resume")
    assert str(err.value) == (
        "config flag 'trading_halted': compare-and-set expected version 1 but the current "
        "version is 2 (value 'true'); another change came first: re-read the flag and decide "
        "again"
    )
    assert (err.value.flag, err.value.expected_version, err.value.current_version) == (
        "trading_halted",
        1,
        2,
    )
    with pytest.raises(ConfigConflict, match="expected version 7 but the current version is 2"):
        store.compare_and_set("trading_halted", 7, "false", actor="b", reason="resume")
    assert store.get("trading_halted") == ("true", 2)
    assert len(store.audit("trading_halted")) == 2  # seed + the one change


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("CVN_LOSS_FUNCTION", "focl", "CVN_LOSS_FUNCTION='focl' rejected: must be one of"),
        ("CVN_LOSS_FUNCTION", "reg:squarederror", "CVN_LOSS_FUNCTION='reg:squarederror' rej"),
        ("CVN_LOSS_FUNCTION", "", "CVN_LOSS_FUNCTION='' rejected"),
        ("trading_halted", "TRUE", "trading_halted='TRUE' rejected: must be 'true' or 'false'"),
        ("trading_halted", "1", "trading_halted='1' rejected: must be 'true' or 'false'"),
        ("trading_halted", True, "trading_halted=True rejected: the value must be a string"),
        ("halted", "true", "unknown config flag 'halted' \\(known: CVN_LOSS_FUNCTION, trading"),
    ],
)
def test_an_invalid_value_is_refused_naming_flag_and_value(store, flag, value, message):
    with pytest.raises(ValueError, match=message):
        store.compare_and_set(flag, 1, value, actor="a", reason="r")
    assert store.all() == {"CVN_LOSS_FUNCTION": ("focal", 1), "trading_halted": ("false", 1)}
    assert len(store.audit()) == 2


def test_a_change_needs_an_actor_and_a_reason(store):
    with pytest.raises(ValueError, match="trading_halted: a config change needs an actor"):
        store.compare_and_set("trading_halted", 1, "true", actor=" ", reason="r")
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        store.compare_and_set("trading_halted", 1, "true", actor="a", reason="")
    assert store.get("trading_halted") == ("false", 1)


def test_the_update_and_its_audit_row_are_one_transaction(store, monkeypatch):
    broken = sa.Table("config_audit", sa.MetaData(), sa.Column("no_such_column", sa.Integer))
    monkeypatch.setattr(config_store_module, "config_audit_table", broken)
    with pytest.raises(sa.exc.SQLAlchemyError):
        store.compare_and_set("trading_halted", 1, "true", actor="a", reason="r")
    monkeypatch.undo()
    assert store.get("trading_halted") == ("false", 1)  # the UPDATE was rolled back
    assert len(store.audit()) == 2


def test_a_missing_flag_is_created_with_expected_version_0(store):
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ftf_config WHERE flag = 'trading_halted'"))
    with pytest.raises(UnknownFlag):
        store.get("trading_halted")
    with pytest.raises(ConfigConflict, match="expected version 3 but the flag is not set"):
        store.compare_and_set("trading_halted", 3, "true", actor="a", reason="r")
    assert store.compare_and_set("trading_halted", 0, "true", actor="a", reason="restore") == 1
    assert store.get("trading_halted") == ("true", 1)
    assert _audit(store, "trading_halted")[-1] == (
        "trading_halted", None, "true", 0, 1, "a", "restore", None, None
    )  # fmt: skip
    with pytest.raises(ConfigConflict, match="expected version 0 but the current version is 1"):
        store.compare_and_set("trading_halted", 0, "false", actor="b", reason="r")


def test_the_audit_is_append_only(store):
    store.compare_and_set("trading_halted", 1, "true", actor="a", reason="r")
    for sql in ("UPDATE config_audit SET actor = 'mallory'", "DELETE FROM config_audit"):
        with pytest.raises(sa.exc.DBAPIError, match="config_audit is append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(sql))
    assert [r[5] for r in _audit(store)] == [SEED_ACTOR, SEED_ACTOR, "a"]


def test_a_writer_waiting_for_an_uncommitted_change_gets_a_conflict(store):
    """Another transaction has moved the flag to version 2 but not committed: our
    compare-and-set on version 1 waits for it (row lock on PostgreSQL, write lock on SQLite)
    and then reports the conflict instead of overwriting."""
    assert store.get("CVN_LOSS_FUNCTION") == ("focal", 1)  # opens (and migrates) the store
    other = sa.create_engine(store.url)
    outcome: list = []
    with other.connect() as conn:
        tx = conn.begin()
        conn.execute(
            sa.text(
                "UPDATE ftf_config SET value = 'binary:logistic', version = 2 "
                "WHERE flag = 'CVN_LOSS_FUNCTION' AND version = 1"
            )
        )

        def cas() -> None:
            try:
                outcome.append(
                    store.compare_and_set("CVN_LOSS_FUNCTION", 1, "focal", actor="a", reason="r")
                )
            except ConfigConflict as err:
                outcome.append(err)

        waiter = threading.Thread(target=cas)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and outcome == []  # waiting for the other transaction
        tx.commit()
    waiter.join(timeout=30)
    other.dispose()
    (err,) = outcome
    assert isinstance(err, ConfigConflict)
    assert (err.expected_version, err.current_version) == (1, 2)
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", 2)


def _cas_in_child(url: str, name: str, rounds: int, barrier, results) -> None:
    store = ConfigStore(database_url=url)
    store.engine  # noqa: B018 -- open (and upgrade-check) before the race
    for r in range(1, rounds + 1):
        value = "binary:logistic" if r % 2 else "focal"
        barrier.wait(timeout=60)
        try:
            version = store.compare_and_set(
                "CVN_LOSS_FUNCTION", r, value, actor=name, reason=f"round {r}"
            )
            results.put((r, name, "won", version))
        except ConfigConflict as err:
            results.put((r, name, "conflict", str(err)))
        except BaseException as err:  # reported to the parent
            results.put((r, name, "error", f"{type(err).__name__}: {err}"))


def test_two_processes_on_the_same_version_exactly_one_wins(db_url):
    """Each round both processes compare-and-set version r at the same moment: one writes
    version r+1, the other gets ConfigConflict naming the flag, version r and r+1."""
    ConfigStore(database_url=db_url).engine  # noqa: B018 -- migrate once, before forking
    rounds = 5
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_cas_in_child, args=(db_url, name, rounds, barrier, results))
        for name in ("proc-a", "proc-b")
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * rounds)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners: dict[int, str] = {}
    for r in range(1, rounds + 1):
        got = sorted((o for o in outcomes if o[0] == r), key=lambda o: o[2])
        assert [o[2] for o in got] == ["conflict", "won"], got
        (_, loser, _, message), (_, winner, _, version) = got
        assert version == r + 1 and loser != winner
        assert message.startswith(
            f"config flag 'CVN_LOSS_FUNCTION': compare-and-set expected version {r} but the "
            f"current version is {r + 1}"
        )
        winners[r] = winner
    store = ConfigStore(database_url=db_url)
    assert store.get("CVN_LOSS_FUNCTION") == ("binary:logistic", rounds + 1)
    changes = [row for row in store.audit("CVN_LOSS_FUNCTION") if row["old_version"] >= 1]
    assert [(c["old_version"], c["new_version"], c["actor"]) for c in changes] == [
        (r, r + 1, winners[r]) for r in range(1, rounds + 1)
    ]
