"""A ``paper_trades`` partition materialized alone (a UI backfill) is followed by its
``monitoring_metrics`` partition: the asset's automation condition, evaluated as the
``monitoring_follows_paper`` sensor does (Dagster's evaluator on a real instance)."""

from dagster import AssetKey, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

from cvn_assets.assets import guard
from cvn_assets.definitions import defs
from cvn_assets.partitions import PAPER_START

MON = AssetKey(guard.MONITORING_ASSET)


def test_an_old_paper_day_materialized_alone_requests_its_monitoring_once():
    assets = defs  # the real definitions (resources included)
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs=assets, instance=instance)
        assert first.get_requested_partitions(MON) == set()  # nothing journaled: nothing due
        key = f"ETHUSDC|{PAPER_START}"  # the first day: far from the latest time window
        instance.report_runless_asset_event(AssetMaterialization("paper_trades", partition=key))
        second = evaluate_automation_conditions(defs=assets, instance=instance, cursor=first.cursor)
        assert second.get_requested_partitions(MON) == {key}
        # once requested, not again (until paper_trades of that day changes again)
        third = evaluate_automation_conditions(defs=assets, instance=instance, cursor=second.cursor)
        assert third.get_requested_partitions(MON) == set()


def test_the_sensor_runs_by_default_and_targets_monitoring_only():
    sensor = defs.resolve_sensor_def("monitoring_follows_paper")
    assert sensor.default_status.value == "RUNNING"
    spec = next(iter(guard.monitoring_metrics.specs))
    assert spec.automation_condition == guard.MONITORING_AUTOMATION
