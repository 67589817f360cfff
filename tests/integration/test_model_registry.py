"""Model registry on real SQLite and real PostgreSQL: versions, champion/previous aliases,
re-promotion in one transaction, "which model was live at T" from the append-only history."""

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from cvn_assets.ablation.guardrails import GuardrailError
from cvn_assets.ablation.identity import SweepIdentity
from resources.model_registry import (
    ModelRegistry,
    ModelVersionConflict,
    NoCandidate,
    NoPreviousChampion,
)
from resources.results_store import ResultsStore, UnknownSweep

T1 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)  # promote A
T2 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # promote B (A becomes previous)
T3 = datetime(2024, 6, 3, 15, 30, tzinfo=UTC)  # re-promote the previous champion (A)
T4 = datetime(2024, 6, 10, 0, 0, tzinfo=UTC)  # promote C
WINDOW = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))


def _identity(seed: int) -> SweepIdentity:
    return SweepIdentity(
        settings={"seed": seed},
        definition={"universe": ["BTCUSDC", "ETHUSDC"]},
        data={"source": "synthetic"},
        code={},
    )


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request, tmp_path) -> ModelRegistry:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    else:
        url = request.getfixturevalue("pg_database")
    results = ResultsStore(database_url=url)
    results.register_sweep("s1", _identity(1))
    results.register_sweep("s2", _identity(2))
    return ModelRegistry(database_url=url)


def _register(registry: ModelRegistry, crypto: str, variant: str, sweep: str, **kw) -> int:
    args = {
        "loss_function": "focal",
        "gamma": 2.0,
        "alpha": 0.25,
        "train_start": WINDOW[0],
        "train_end": WINDOW[1],
        "sweep_id": sweep,
        "artifact_uri": f"file:///models/{sweep}/{crypto}/{variant}.ubj",
        "reference_stats": {"buy_rate": 0.12, "p_mean": 0.31},
    }
    args.update(kw)
    return registry.register_version(crypto, variant, **args)


@pytest.fixture
def versions(registry) -> dict[str, int]:
    return {
        "A": _register(registry, "BTCUSDC", "focal_g2_a25", "s1"),
        "B": _register(
            registry,
            "BTCUSDC",
            "baseline",
            "s1",
            loss_function="binary:logistic",
            gamma=None,
            alpha=None,
        ),  # fmt: skip
        "C": _register(registry, "BTCUSDC", "focal_g2_a25", "s2"),
        "E": _register(registry, "ETHUSDC", "focal_g2_a25", "s1"),
    }


def _history(registry: ModelRegistry, crypto: str = "BTCUSDC") -> list[tuple]:
    keys = ("alias", "version_id", "previous_version_id", "actor", "valid_from", "valid_to")
    return [tuple(row[k] for k in keys) for row in registry.history(crypto)]


def _timeline(registry: ModelRegistry, v: dict[str, int]) -> None:
    who = {"actor": "release-bot", "reason": "gates passed"}
    assert registry.promote("BTCUSDC", v["A"], at=T1, **who) == {
        "champion": v["A"],
        "previous": None,
    }
    assert registry.promote("BTCUSDC", v["B"], at=T2, dagster_run_id="run-2", **who) == {
        "champion": v["B"],
        "previous": v["A"],
    }
    assert registry.repromote_previous(
        "BTCUSDC", actor="oncall:alice", reason="B misbehaves", at=T3
    ) == {"champion": v["A"], "previous": v["B"]}
    assert registry.promote("BTCUSDC", v["C"], at=T4, **who) == {
        "champion": v["C"],
        "previous": v["A"],
    }


# --- versions ---------------------------------------------------------------------------
def test_a_version_records_the_candidate(registry, versions):
    assert len(set(versions.values())) == 4
    got = registry.get_version(versions["A"])
    created = got.pop("created_at")
    assert created.tzinfo == UTC and abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert got == {
        "id": versions["A"],
        "crypto": "BTCUSDC",
        "variant": "focal_g2_a25",
        "loss_function": "focal",
        "gamma": 2.0,
        "alpha": 0.25,
        "train_start": datetime(2023, 1, 1, tzinfo=UTC),
        "train_end": datetime(2024, 5, 1, tzinfo=UTC),
        "sweep_id": "s1",
        "artifact_uri": "file:///models/s1/BTCUSDC/focal_g2_a25.ubj",
        "reference_stats": {"buy_rate": 0.12, "p_mean": 0.31},
    }
    # NumPy values in the reference statistics are stored as plain JSON
    n = _register(
        registry, "ETHUSDC", "baseline", "s2",
        reference_stats={"hist": np.array([3, 1]), "p_mean": np.float32(0.5)},
    )  # fmt: skip
    assert registry.get_version(n)["reference_stats"] == {"hist": [3, 1], "p_mean": 0.5}
    with pytest.raises(TypeError, match="reference_stats: object"):
        _register(registry, "ETHUSDC", "x", "s2", reference_stats={"bad": object()})
    b = registry.get_version(versions["B"])
    assert (b["loss_function"], b["gamma"], b["alpha"]) == ("binary:logistic", None, None)
    assert registry.get_version(10_000) is None


def test_registering_the_same_candidate_again_returns_its_id(registry, versions):
    # same key and content (train_end given at +05:30: the same instant) -> same id
    ist = timezone(timedelta(hours=5, minutes=30))
    again = _register(
        registry, "BTCUSDC", "focal_g2_a25", "s1", train_end=datetime(2024, 5, 1, 5, 30, tzinfo=ist)
    )
    assert again == versions["A"]
    # a naive train_end has no instant: refused, naming the argument and the value
    with pytest.raises(ValueError, match="train_end: naive time '2024-05-01T00:00:00' refused"):
        _register(registry, "BTCUSDC", "focal_g2_a25", "s1", train_end=datetime(2024, 5, 1))
    with pytest.raises(ModelVersionConflict) as err:
        _register(registry, "BTCUSDC", "focal_g2_a25", "s1", artifact_uri="file:///other.ubj")
    assert str(err.value) == (
        "model version BTCUSDC/focal_g2_a25 of sweep 's1' trained to 2024-05-01T00:00:00+00:00 "
        f"is already registered (id {versions['A']}) with other content: artifact_uri: "
        "'file:///models/s1/BTCUSDC/focal_g2_a25.ubj' -> 'file:///other.ubj'"
    )
    with pytest.raises(ModelVersionConflict, match="gamma: 2.0 -> 3.0; reference_stats"):
        _register(registry, "BTCUSDC", "focal_g2_a25", "s1", gamma=3.0, reference_stats={})


def test_a_version_is_checked_before_it_is_written(registry):
    with pytest.raises(UnknownSweep, match="sweep 'ghost' is not registered"):
        _register(registry, "BTCUSDC", "focal_g2_a25", "ghost")
    with pytest.raises(GuardrailError, match="loss_function='focl' rejected"):
        _register(registry, "BTCUSDC", "x", "s1", loss_function="focl")
    with pytest.raises(GuardrailError, match="gamma=None rejected: is required"):
        _register(registry, "BTCUSDC", "x", "s1", gamma=None)
    with pytest.raises(GuardrailError, match="gamma=11.0 rejected: must be in"):
        _register(registry, "BTCUSDC", "x", "s1", gamma=11.0)
    with pytest.raises(ValueError, match="train_start 2024-05-01T00:00:00\\+00:00 must precede"):
        _register(registry, "BTCUSDC", "x", "s1", train_start=WINDOW[1])
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 0


# --- aliases and history -----------------------------------------------------------------
def test_promote_twice_then_repromote_the_previous_champion(registry, versions):
    v = versions
    _timeline(registry, v)
    assert registry.alias("BTCUSDC", "champion")["id"] == v["C"]
    assert registry.alias("BTCUSDC", "previous")["id"] == v["A"]
    assert registry.alias("ETHUSDC", "champion") is None
    bot, alice = "release-bot", "oncall:alice"
    assert _history(registry) == [
        ("champion", v["A"], None, bot, T1, T2),
        ("champion", v["B"], v["A"], bot, T2, T3),
        ("previous", v["A"], None, bot, T2, T3),
        ("champion", v["A"], v["B"], alice, T3, T4),
        ("previous", v["B"], v["A"], alice, T3, T4),
        ("champion", v["C"], v["A"], bot, T4, None),
        ("previous", v["A"], v["B"], bot, T4, None),
    ]
    rows = registry.history("BTCUSDC")
    assert [r["dagster_run_id"] for r in rows[1:3]] == ["run-2", "run-2"]
    assert {r["reason"] for r in rows[3:5]} == {"B misbehaves"}


@pytest.mark.parametrize(
    ("when", "live"),
    [
        (datetime(2024, 5, 31, 23, 59, tzinfo=UTC), None),  # before the first promotion
        (T1, "A"),  # an interval includes its start
        (datetime(2024, 6, 2, 0, 0, tzinfo=UTC), "A"),
        (T2 - timedelta(microseconds=1), "A"),
        (T2, "B"),  # ... and excludes its end
        (datetime(2024, 6, 3, 14, 0, tzinfo=UTC), "B"),  # the question of the issue
        (datetime(2024, 6, 3, 16, 0, tzinfo=timezone(timedelta(hours=2))), "B"),  # 14:00 UTC
        (datetime(2024, 6, 3, 19, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))), "B"),
        (datetime(2024, 6, 3, 6, 0, tzinfo=timezone(timedelta(hours=-8))), "B"),  # 14:00 UTC
        (datetime(2024, 6, 3, 15, 29, 59, tzinfo=UTC), "B"),
        (T3, "A"),  # re-promoted
        (datetime(2024, 6, 9, 23, 59, tzinfo=UTC), "A"),
        (T4, "C"),
        (datetime(2030, 1, 1, tzinfo=UTC), "C"),  # still live
    ],
)
def test_which_model_was_live_at(registry, versions, when, live):
    _timeline(registry, versions)
    got = registry.live_at("BTCUSDC", when)
    assert (got and got["id"]) == (versions[live] if live else None)
    if live:
        assert got["artifact_uri"] == registry.get_version(versions[live])["artifact_uri"]
    assert registry.live_at("ETHUSDC", when) is None


def test_the_previous_alias_has_a_history_too(registry, versions):
    _timeline(registry, versions)
    at_14 = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)
    assert registry.live_at("BTCUSDC", at_14, alias="previous")["id"] == versions["A"]
    assert registry.live_at("BTCUSDC", T3, alias="previous")["id"] == versions["B"]
    assert registry.live_at("BTCUSDC", T1, alias="previous") is None


def test_the_history_is_append_only(registry, versions):
    v = versions
    snapshots = []
    who = {"actor": "bot", "reason": "r"}
    for step in (
        lambda: registry.promote("BTCUSDC", v["A"], at=T1, **who),
        lambda: registry.promote("BTCUSDC", v["B"], at=T2, **who),
        lambda: registry.repromote_previous("BTCUSDC", at=T3, **who),
        lambda: registry.promote("BTCUSDC", v["C"], at=T4, **who),
    ):
        step()
        snapshots.append(registry.history())
    assert [len(s) for s in snapshots] == [1, 3, 5, 7]
    for earlier, later in zip(snapshots, snapshots[1:], strict=False):
        for old, new in zip(earlier, later, strict=False):
            if old["valid_to"] is None:  # the only change ever made: closing an open row
                old = {**old, "valid_to": new["valid_to"]}
            assert new == old
    # the database refuses anything else
    refused = [
        "DELETE FROM model_alias_history",
        "UPDATE model_alias_history SET actor = 'mallory'",
        "UPDATE model_alias_history SET valid_to = NULL WHERE valid_to IS NOT NULL",
        "UPDATE model_alias_history SET version_id = version_id WHERE valid_to IS NOT NULL",
    ]
    with registry.engine.connect() as conn:
        open_id = conn.execute(
            sa.text("SELECT min(id) FROM model_alias_history WHERE valid_to IS NULL")
        ).scalar()
    refused.append(
        f"UPDATE model_alias_history SET version_id = {v['E']}, valid_to = valid_from "
        f"WHERE id = {open_id}"
    )
    for sql in refused:
        with pytest.raises(sa.exc.DBAPIError, match="model_alias_history is append-only"):
            with registry.engine.begin() as conn:
                conn.execute(sa.text(sql))
    assert registry.history() == snapshots[-1]


def test_repromote_without_a_previous_champion_names_the_crypto(registry, versions):
    with pytest.raises(NoPreviousChampion) as err:
        registry.repromote_previous("ETHUSDC", actor="a", reason="r")
    assert str(err.value) == (
        "crypto 'ETHUSDC' has no previous champion to re-promote (champion: None)"
    )
    registry.promote("ETHUSDC", versions["E"], actor="a", reason="r", at=T1)
    with pytest.raises(NoPreviousChampion, match=f"'ETHUSDC' .* \\(champion: {versions['E']}\\)"):
        registry.repromote_previous("ETHUSDC", actor="a", reason="r")
    assert len(registry.history("ETHUSDC")) == 1


def test_a_promotion_is_one_transaction(registry, versions, monkeypatch):
    v = versions
    registry.promote("BTCUSDC", v["A"], actor="a", reason="r", at=T1)
    before = registry.history()
    real_set = ModelRegistry._set

    def failing_set(self, conn, crypto, alias, *args):
        real_set(self, conn, crypto, alias, *args)
        if alias == "previous":
            raise RuntimeError("crash after both aliases moved")

    monkeypatch.setattr(ModelRegistry, "_set", failing_set)
    with pytest.raises(RuntimeError, match="crash after"):
        registry.promote("BTCUSDC", v["B"], actor="a", reason="r", at=T2)
    monkeypatch.undo()
    assert registry.history() == before
    assert registry.alias("BTCUSDC", "champion")["id"] == v["A"]
    assert registry.alias("BTCUSDC", "previous") is None


def test_set_alias_and_its_refusals(registry, versions):
    v = versions
    who = {"actor": "a", "reason": "r"}
    registry.set_alias("BTCUSDC", "previous", v["B"], dagster_run_id="run-9", at=T1, **who)
    registry.set_alias("BTCUSDC", "previous", v["B"], at=T2, **who)  # already there: no-op
    assert _history(registry) == [("previous", v["B"], None, "a", T1, None)]
    assert registry.history()[0]["dagster_run_id"] == "run-9"
    registry.promote("BTCUSDC", v["A"], at=T2, **who)  # first champion: previous untouched
    assert registry.alias("BTCUSDC", "previous")["id"] == v["B"]
    assert registry.promote("BTCUSDC", v["A"], at=T3, **who) == {  # promoting it again: no-op
        "champion": v["A"],
        "previous": v["B"],
    }
    assert len(registry.history()) == 2
    with pytest.raises(ValueError, match=r"model version \d+ is a ETHUSDC model: it cannot be"):
        registry.promote("BTCUSDC", v["E"], **who)
    with pytest.raises(ValueError, match="alias 'canary' rejected: must be one of"):
        registry.set_alias("BTCUSDC", "canary", v["A"], **who)
    with pytest.raises(LookupError, match="no model version 10000"):
        registry.set_alias("BTCUSDC", "champion", 10_000, **who)
    with pytest.raises(ValueError, match="is in the future"):
        registry.promote("BTCUSDC", v["C"], at=datetime.now(UTC) + timedelta(hours=1), **who)
    with pytest.raises(ValueError, match="precedes the current assignment's start"):
        registry.promote("BTCUSDC", v["C"], at=T1, **who)
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        registry.promote("BTCUSDC", v["C"], actor="", reason="r")
    assert len(registry.history()) == 2
    # without ``at`` the change happens now
    t0 = datetime.now(UTC)
    registry.promote("BTCUSDC", v["C"], **who)
    now = registry.history()[-1]["valid_from"]
    assert t0 <= now <= datetime.now(UTC)
    assert registry.live_at("BTCUSDC", now)["id"] == v["C"]


# --- the candidate alias (shadow mode) and its promotion --------------------------------
def test_a_candidate_is_shadowed_then_promoted_in_one_audited_step(registry, versions):
    v = versions
    bot = {"actor": "release-bot", "reason": "gates passed"}
    registry.promote("BTCUSDC", v["A"], at=T1, **bot)
    registry.set_alias(
        "BTCUSDC", "candidate", v["C"], actor="sensor:data_drift", reason="PSI 0.61", at=T2
    )
    assert registry.alias("BTCUSDC", "candidate")["id"] == v["C"]
    assert registry.alias("BTCUSDC", "champion")["id"] == v["A"]  # the candidate is not live
    got = registry.promote_candidate(
        "BTCUSDC", actor="oncall:alice", reason="candidate better on matured labels",
        incident_id="inc-7", run_id="run-42", at=T3,
    )  # fmt: skip
    assert got == {"champion": v["C"], "previous": v["A"], "candidate": v["C"]}
    assert registry.alias("BTCUSDC", "champion")["id"] == v["C"]
    assert registry.alias("BTCUSDC", "previous")["id"] == v["A"]
    assert registry.alias("BTCUSDC", "candidate") is None
    bot_, alice, drift = "release-bot", "oncall:alice", "sensor:data_drift"
    assert _history(registry) == [
        ("champion", v["A"], None, bot_, T1, T3),
        ("candidate", v["C"], None, drift, T2, T3),  # closed by the promotion
        ("champion", v["C"], v["A"], alice, T3, None),
        ("previous", v["A"], None, alice, T3, None),
    ]
    rows = registry.history("BTCUSDC")
    assert {r["reason"] for r in rows[2:]} == {
        "candidate better on matured labels [incident inc-7]"
    }
    assert {r["dagster_run_id"] for r in rows[2:]} == {"run-42"}
    # "which candidate was shadowed at T" is the same one query as the champion's
    at = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)
    assert registry.live_at("BTCUSDC", at, alias="candidate")["id"] == v["C"]
    assert registry.live_at("BTCUSDC", T3, alias="candidate") is None
    assert (
        registry.live_at("BTCUSDC", at)["id"] == v["A"]
        and registry.live_at("BTCUSDC", T3)["id"] == v["C"]
    )
    # promoting again: there is no candidate any more, named
    with pytest.raises(NoCandidate) as err:
        registry.promote_candidate("BTCUSDC", actor="a", reason="r")
    assert str(err.value).startswith(
        f"crypto 'BTCUSDC' has no candidate to promote (champion: {v['C']})"
    )
    assert isinstance(err.value, LookupError)
    assert len(registry.history("BTCUSDC")) == 4


def test_a_candidate_without_a_champion_and_a_candidate_that_is_the_champion(registry, versions):
    v = versions
    who = {"actor": "a", "reason": "r"}
    registry.set_alias("ETHUSDC", "candidate", v["E"], at=T1, **who)
    assert registry.promote_candidate("ETHUSDC", at=T2, **who) == {
        "champion": v["E"],
        "previous": None,
        "candidate": v["E"],
    }
    # a candidate that is already the champion: only the candidate alias closes
    registry.set_alias("ETHUSDC", "candidate", v["E"], at=T3, **who)
    before = registry.alias("ETHUSDC", "champion")
    assert registry.promote_candidate("ETHUSDC", at=T4, **who)["champion"] == v["E"]
    assert registry.alias("ETHUSDC", "champion") == before
    assert registry.alias("ETHUSDC", "candidate") is None
    assert [(r["alias"], r["valid_to"]) for r in registry.history("ETHUSDC")] == [
        ("candidate", T2),
        ("champion", None),
        ("candidate", T4),
    ]
    with pytest.raises(NoCandidate, match="'ETHUSDC' has no candidate"):
        registry.promote_candidate("ETHUSDC", **who)
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        registry.promote_candidate("ETHUSDC", actor=" ", reason="r")
    with pytest.raises(ValueError, match="is a BTCUSDC model: it cannot be the candidate"):
        registry.set_alias("ETHUSDC", "candidate", v["A"], **who)


def test_a_candidate_promotion_is_one_transaction(registry, versions, monkeypatch):
    v = versions
    who = {"actor": "a", "reason": "r"}
    registry.promote("BTCUSDC", v["A"], at=T1, **who)
    registry.set_alias("BTCUSDC", "candidate", v["B"], at=T2, **who)
    before = registry.history()

    def failing_close(self, conn, crypto, alias, now):
        raise RuntimeError("crash after the champion moved")

    monkeypatch.setattr(ModelRegistry, "_close", failing_close)
    with pytest.raises(RuntimeError, match="crash after"):
        registry.promote_candidate("BTCUSDC", at=T3, **who)
    monkeypatch.undo()
    assert registry.history() == before
    assert registry.alias("BTCUSDC", "champion")["id"] == v["A"]
    assert registry.alias("BTCUSDC", "candidate")["id"] == v["B"]


def test_two_concurrent_candidate_promotions_move_the_champion_once(registry, versions):
    import threading

    v = versions
    who = {"actor": "a", "reason": "r"}
    registry.promote("BTCUSDC", v["A"], at=T1, **who)
    registry.set_alias("BTCUSDC", "candidate", v["C"], at=T2, **who)
    barrier, outcomes = threading.Barrier(2), []

    def run(name: str) -> None:
        barrier.wait(timeout=30)
        try:
            outcomes.append(("ok", registry.promote_candidate("BTCUSDC", actor=name, reason="r")))
        except NoCandidate as err:
            outcomes.append(("none", str(err)))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(o[0] for o in outcomes) == ["none", "ok"]
    assert registry.alias("BTCUSDC", "champion")["id"] == v["C"]
    assert registry.alias("BTCUSDC", "previous")["id"] == v["A"]
    assert [r["alias"] for r in registry.history("BTCUSDC")] == [
        "champion", "candidate", "champion", "previous",
    ]  # fmt: skip


def test_clear_alias_rejects_a_candidate(registry, versions):
    v = versions
    who = {"actor": "a", "reason": "r"}
    registry.promote("BTCUSDC", v["A"], at=T1, **who)
    registry.set_alias("BTCUSDC", "candidate", v["B"], at=T2, **who)
    assert registry.clear_alias("BTCUSDC", "candidate", at=T3, **who) == v["B"]
    assert registry.clear_alias("BTCUSDC", "candidate", **who) is None  # nothing left
    assert registry.alias("BTCUSDC", "candidate") is None
    assert registry.history("BTCUSDC", "candidate")[0]["valid_to"] == T3
    with pytest.raises(ValueError, match="champion alias cannot be cleared"):
        registry.clear_alias("BTCUSDC", "champion", **who)
    with pytest.raises(ValueError, match="alias 'canary' rejected"):
        registry.clear_alias("BTCUSDC", "canary", **who)
    with pytest.raises(ValueError, match="precedes the current assignment's start"):
        registry.set_alias("BTCUSDC", "candidate", v["C"], at=T4, **who)
        registry.clear_alias("BTCUSDC", "candidate", at=T3, **who)
    with pytest.raises(NoCandidate):
        registry.promote_candidate("ETHUSDC", **who)
