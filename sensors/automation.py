"""The automation sensor of ``monitoring_metrics`` (its automation condition: eager on every
day partition, :data:`cvn_assets.assets.guard.MONITORING_AUTOMATION`).

``paper_job`` and ``live_job`` materialize ``paper_trades`` and ``monitoring_metrics``
together; a backfill of ``paper_trades`` alone (from the UI) would leave the monitoring of
those days stale. This sensor (running by default, in the daemon) requests the
``monitoring_metrics`` partitions whose ``paper_trades`` partition was updated by a run that
did not also materialize them. Dagster would otherwise create
``default_automation_condition_sensor``, stopped until toggled on in the UI.
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from cvn_assets.assets.guard import MONITORING_ASSET

monitoring_follows_paper = AutomationConditionSensorDefinition(
    "monitoring_follows_paper",
    target=AssetSelection.assets(MONITORING_ASSET),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes monitoring_metrics for the crypto-days whose paper_trades was "
    "updated without it (a UI backfill of paper_trades alone).",
)
