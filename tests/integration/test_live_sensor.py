"""``live_candles``: the live loop's sensor, evaluated as the daemon does (real sensor
function, real instance and results database), its run executed in process."""

import pandas as pd
import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from cvn_assets.definitions import defs
from cvn_assets.partitions import SETTINGS
from resources.guard_clock import GuardClock
from resources.journal import last_journaled_hours
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from sensors.live import behind, crypto_blocks
from tests.integration.test_paper_trades import CANARY, EDGE, _canary_champion, _cfg, _errors

H = pd.Timedelta(hours=1)
T = pd.Timestamp


def test_crypto_blocks_are_neighbours_in_the_universe():
    u = list(SETTINGS.universe)
    assert crypto_blocks(set(u)) == [u]
    assert crypto_blocks({u[0], u[1], u[3]}) == [[u[0], u[1]], [u[3]]]
    assert crypto_blocks(set()) == []


def test_behind_names_the_first_hour_to_journal_per_crypto():
    anchors = {"A": T("2024-01-02", tz="UTC"), "B": T("2024-01-02", tz="UTC")}
    newest = {"A": T("2024-01-05 10:00", tz="UTC"), "B": T("2024-01-05 10:00", tz="UTC")}
    assert behind(newest, {"A": None, "B": T("2024-01-05 10:00", tz="UTC")}, anchors) == {
        "A": T("2024-01-02", tz="UTC")
    }
    assert behind(newest, {"A": T("2024-01-05 08:00", tz="UTC"), "B": None}, anchors) == {
        "A": T("2024-01-05 09:00", tz="UTC"),
        "B": T("2024-01-02", tz="UTC"),
    }
    assert behind({"A": None, "B": None}, {}, anchors) == {}


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _tick(instance, url, now):
    sensor = defs.get_sensor_def("live_candles")
    ctx = build_sensor_context(
        instance=instance,
        resources={
            "guard_clock": GuardClock(fixed_now=now.isoformat()),
            "model_registry": ModelRegistry(database_url=url),
            "market_data": MarketDataResource(hours=3000, edge=EDGE),
        },
    )
    return sensor(ctx)


def _run(tmp_path, instance, request: RunRequest, now):
    cfg = _cfg(tmp_path)
    cfg["resources"]["guard_clock"] = {"config": {"fixed_now": now.isoformat()}}
    return defs.resolve_job_def("live_job").execute_in_process(
        run_config=cfg, instance=instance, tags=request.tags, raise_on_error=False
    )


def test_the_sensor_requests_the_missing_hours_and_then_is_quiet(tmp_path, instance):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "r.sqlite").touch()
    got = _tick(instance, url, T("2023-11-05 10:20", tz="UTC"))
    assert isinstance(got, SkipReason) and "no crypto has a champion" in got.skip_message

    url, registry = _canary_champion(tmp_path, instance)
    anchor = pd.Timestamp(registry.alias(CANARY, "champion")["train_end"]).ceil("D")
    now = anchor + pd.Timedelta(days=1, hours=5, minutes=20)  # newest closed: d2 04:00
    (req,) = _tick(instance, url, now)  # the canary alone has a champion: its block
    assert req.tags[ASSET_PARTITION_RANGE_START_TAG] == f"{CANARY}|{anchor:%Y-%m-%d}"
    d2 = anchor + pd.Timedelta(days=1)
    assert req.tags[ASSET_PARTITION_RANGE_END_TAG] == f"{CANARY}|{d2:%Y-%m-%d}"
    assert req.tags["cvn/live"] == "true" and req.job_name == "live_job"
    assert req.run_key == f"live:{CANARY}-{CANARY}:{d2:%Y-%m-%d}T04:{now.floor('10min'):%H%M}"

    # the daemon would launch it: the canary journaled through d2 04:00, others skipped
    res = _run(tmp_path, instance, req, now)
    assert res.success, _errors(res)
    assert last_journaled_hours(registry.engine, [CANARY]) == {CANARY: d2 + 4 * H}
    got = _tick(instance, url, now)
    assert isinstance(got, SkipReason) and "journaled through" in got.skip_message

    # the next hour closes: a request from d2 05:00's day, the run journals that hour only
    later = now + H
    (req,) = _tick(instance, url, later)
    assert req.tags[ASSET_PARTITION_RANGE_START_TAG] == f"{CANARY}|{d2:%Y-%m-%d}"
    res = _run(tmp_path, instance, req, later)
    assert res.success, _errors(res)
    summary = res.asset_materializations_for_node("paper_trades")[-1].metadata["run_summary"]
    assert summary.value[CANARY]["path"] == "live"
    assert summary.value[CANARY]["predictions_written"] == 1
    assert last_journaled_hours(registry.engine, [CANARY]) == {CANARY: d2 + 5 * H}
    # the state at a glance, materialized after the hour: the canary is current
    (state,) = res.asset_materializations_for_node("guard_state")
    assert state.metadata[f"hours_behind_{CANARY}"].value == 0


def test_paper_trades_carries_dagsters_freshness_policy_at_the_stale_rules_window():
    """The UI's freshness (FreshnessDaemon) and the guard_stale P2 judge the same 2 hours."""
    from datetime import timedelta

    from cvn_assets.guard.drift import STALE_AFTER

    (spec,) = defs.resolve_assets_def("paper_trades").specs_by_key.values()
    policy = spec.freshness_policy
    assert STALE_AFTER == timedelta(hours=2)
    assert policy.fail_window.to_timedelta() == STALE_AFTER
    assert policy.warn_window.to_timedelta() == timedelta(hours=1, minutes=30)
