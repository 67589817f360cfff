"""``guard_state`` materialized in process on a real Dagster instance, against a registry, a
journal and flags built by hand (SQLite and PostgreSQL): its metadata is that hand-built
truth; and with the flags' database not answering it still materializes, showing unknown.

The truth, at the guard clock's now 2025-03-11 03:30 UTC (newest closed candle: 02:00):

* BTCUSDC: baseline v(b1) promoted 2025-02-01 10:00 by alice, then focal v(b2) promoted
  2025-03-01 12:00 by bob (champion); candidate v(b3) set 2025-03-05 by carol; journaled
  2025-03-10 00:00..23:00 -> last hour 23:00, 3 closed hours behind (00, 01, 02).
* ETHUSDC: baseline v(e1) promoted 2025-02-02 by alice; journaled 2025-03-10 00:00..20:00 ->
  6 hours behind (21, 22, 23, 00, 01, 02).
* every other crypto: no champion, no journal ("none").
* CVN_LOSS_FUNCTION: set to binary:logistic (version 2) by dave at 2025-03-10 22:15, incident
  inc-7; trading_halted: its seed (version 1, actor alembic:0003_guard_state).
"""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from cvn_assets.ablation.identity import SweepIdentity
from cvn_assets.assets.guard_state import guard_state
from cvn_assets.partitions import SETTINGS
from resources.config_store import HALT_FLAG, LOSS_FLAG, ConfigStore
from resources.guard_clock import GuardClock
from resources.journal import replace_days
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore

NOW = "2025-03-11T03:30:00+00:00"
DEAD_DB = "postgresql+psycopg2://postgres@127.0.0.1:1/x"  # nothing listens on port 1
OTHERS = [c for c in SETTINGS.universe if c not in ("BTCUSDC", "ETHUSDC")]


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return request.getfixturevalue("pg_database")


def _version(registry, crypto, variant, loss, train_end):
    focal = loss == "focal"
    return registry.register_version(
        crypto,
        variant,
        loss_function=loss,
        gamma=2.0 if focal else None,
        alpha=0.25 if focal else None,
        train_start=_t("2024-01-01T00:00"),
        train_end=_t(train_end),
        sweep_id="s",
        artifact_uri=f"file:///tmp/{crypto}/{variant}",
        reference_stats={},
    )


def _journal(engine, crypto, version, loss, day, n_hours):
    hours = pd.date_range(day, periods=n_hours, freq="h", tz="UTC")
    preds = pd.DataFrame(
        {
            "crypto": crypto,
            "hour": hours,
            "model_version": version,
            "loss_function": loss,
            "buy_proba": np.full(n_hours, 0.4),
            "decision": "HOLD",
            "latency_ms": np.full(n_hours, np.nan),
        }
    )
    replace_days(engine, crypto, [day], preds, pd.DataFrame())


def _build(url):
    """The hand-built registry, journal and flag change of the module docstring."""
    store = ResultsStore(database_url=url)
    ident = SweepIdentity({"eta": 0.05}, {"universe": ["BTCUSDC"]}, {"source": "x"}, {"c": "1"})
    store.register_sweep("s", ident)
    reg = ModelRegistry(database_url=url)
    v = {
        "b1": _version(reg, "BTCUSDC", "baseline", "binary:logistic", "2025-01-01T00:00"),
        "b2": _version(reg, "BTCUSDC", "focal_g2_a025", "focal", "2025-02-01T00:00"),
        "b3": _version(reg, "BTCUSDC", "focal_g1_a05", "focal", "2025-03-01T00:00"),
        "e1": _version(reg, "ETHUSDC", "baseline", "binary:logistic", "2025-01-01T00:00"),
    }
    reg.promote("BTCUSDC", v["b1"], actor="alice", reason="first", at=_t("2025-02-01T10:00"))
    reg.promote("BTCUSDC", v["b2"], actor="bob", reason="gate", at=_t("2025-03-01T12:00"))
    reg.set_alias(
        "BTCUSDC", "candidate", v["b3"], actor="carol", reason="shadow", at=_t("2025-03-05T00:00")
    )
    reg.promote("ETHUSDC", v["e1"], actor="alice", reason="first", at=_t("2025-02-02T08:00"))
    _journal(store.engine, "BTCUSDC", v["b2"], "focal", "2025-03-10", 24)
    _journal(store.engine, "ETHUSDC", v["e1"], "binary:logistic", "2025-03-10", 21)
    ConfigStore(database_url=url).compare_and_set(
        LOSS_FLAG,
        1,
        "binary:logistic",
        actor="dave",
        reason="P1 twice",
        incident_id="inc-7",
        at=_t("2025-03-10T22:15"),
    )
    return v


def _materialize(instance, *, flags_url, registry_url):
    result = materialize(
        [guard_state],
        resources={
            "config_store": ConfigStore(database_url=flags_url),
            "model_registry": ModelRegistry(database_url=registry_url),
            "guard_clock": GuardClock(fixed_now=NOW),
        },
        instance=instance,
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("guard_state")
    return {k: m.value for k, m in mat.metadata.items()}


def _table(md: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell (cells stripped; the two header lines dropped)."""
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def test_the_state_is_the_hand_built_truth_and_is_kept_per_materialization(url):
    v = _build(url)
    instance = DagsterInstance.ephemeral()
    meta = _materialize(instance, flags_url=url, registry_url=url)

    flags = _table(meta["kill_switch"])
    assert flags[LOSS_FLAG] == [
        "binary:logistic", "2", "2025-03-10 22:15 UTC", "dave", "P1 twice [incident inc-7]",
    ]  # fmt: skip
    assert flags[HALT_FLAG][:2] == ["false", "1"]
    assert flags[HALT_FLAG][3:] == ["alembic:0003_guard_state", "initial value"]
    assert (meta["loss_function"], meta["loss_function_version"]) == ("binary:logistic", 2)
    assert (meta["trading_halted"], meta["trading_halted_version"]) == ("false", 1)
    assert meta["flags_error"] == "none"
    state = meta["state"]
    assert state["flags"][LOSS_FLAG]["changed_at"] == "2025-03-10T22:15:00+00:00"
    assert state["now"] == NOW

    rows = _table(meta["cryptos"])
    assert rows["BTCUSDC"] == [
        f"v{v['b2']}", "focal_g2_a025", "focal", "2025-03-01 12:00 UTC", "bob",
        f"v{v['b3']} focal_g1_a05", "2025-03-10 23:00 UTC", "3",
    ]  # fmt: skip
    assert rows["ETHUSDC"] == [
        f"v{v['e1']}", "baseline", "binary:logistic", "2025-02-02 08:00 UTC", "alice",
        "none", "2025-03-10 20:00 UTC", "6",
    ]  # fmt: skip
    for c in OTHERS:
        assert rows[c] == ["none"] * 8
    assert len(rows) == len(SETTINGS.universe)
    assert (meta["champions"], meta["focal_champions"], meta["candidates"]) == (2, 1, 1)
    assert (meta["cryptos_journaled"], meta["hours_behind_max"]) == (2, 6)
    assert meta["hours_behind_BTCUSDC"] == 3 and meta["hours_behind_ETHUSDC"] == 6
    assert meta["champion_version_BTCUSDC"] == v["b2"]
    assert all(meta[f"hours_behind_{c}"] is None for c in OTHERS)
    btc = next(r for r in state["cryptos"] if r["crypto"] == "BTCUSDC")
    assert btc["champion"]["since"] == "2025-03-01T12:00:00+00:00"
    assert btc["candidate"]["by"] == "carol"

    # the next hour's run: BTCUSDC caught up (00:00..02:00 journaled); both states are kept
    engine = ModelRegistry(database_url=url).engine
    _journal(engine, "BTCUSDC", v["b2"], "focal", "2025-03-11", 3)
    meta2 = _materialize(instance, flags_url=url, registry_url=url)
    assert meta2["hours_behind_BTCUSDC"] == 0 and meta2["hours_behind_max"] == 6
    kept = instance.fetch_materializations(AssetKey("guard_state"), limit=10).records
    behind = sorted(r.asset_materialization.metadata["hours_behind_BTCUSDC"].value for r in kept)
    assert behind == [0, 3]


def test_unreadable_flags_are_unknown_and_the_asset_still_materializes(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    v = _build(url)
    instance = DagsterInstance.ephemeral()
    meta = _materialize(instance, flags_url=DEAD_DB, registry_url=url)
    assert (meta["loss_function"], meta["trading_halted"]) == ("unknown", "unknown")
    assert meta["loss_function_version"] is None and meta["trading_halted_version"] is None
    err = meta["flags_error"]
    assert err.startswith("OperationalError: ") and "127.0.0.1" in err and "port 1" in err
    flags = _table(meta["kill_switch"])
    assert flags[LOSS_FLAG][:4] == ["unknown", "none", "unknown", "unknown"]
    assert flags[HALT_FLAG][4].startswith("unknown: OperationalError")
    # what could be read still is: the registry and the journal answer
    assert meta["champion_version_BTCUSDC"] == v["b2"] and meta["hours_behind_max"] == 6

    # the whole database down: every part unknown, still a materialization
    meta = _materialize(instance, flags_url=DEAD_DB, registry_url=DEAD_DB)
    rows = _table(meta["cryptos"])
    assert all(r == ["unknown"] * 8 for r in rows.values())
    assert meta["champions"] == 0 and meta["hours_behind_max"] is None
    assert meta["champion_version_BTCUSDC"] is None
    assert len(instance.fetch_materializations(AssetKey("guard_state"), limit=10).records) == 2
