"""The guard's jobs (spec 6.3-6.4): what the sensors request and operators launch.

Every job takes ``actor`` and ``reason`` in its run config where it changes state, and every
change is audited where it is made (``config_audit`` for the flags, the registry's alias
history for promotions, ``rollbacks`` for rollback incidents).

* ``alert_job``: records one alert through the ``alert_sink`` (results database, JSON lines)
  and delivers it (Slack when configured; bounded retries). Sensors never send from a tick: a
  retried tick re-requests the same ``run_key`` (deduped by Dagster) and a re-executed run
  finds the alert already recorded (the sink is idempotent by incident id and rule). A
  delivery still pending leaves the run successful; one that gave up fails it.
* ``alert_delivery_job``: retries the delivery of recorded alerts (requested by the
  ``alert_delivery`` sensor); fails, naming them, when a delivery gives up.
* Jobs that page as part of a state change (``rollback_job``, ``escalate_rollback_job``)
  record the alert in the transaction of the change, then deliver it; their status says what
  they did (a rollback that took effect succeeds), the delivery state is in their metadata.
* ``rollback_job`` (factor-level kill switch): flips ``CVN_LOSS_FUNCTION`` to
  ``binary:logistic`` (compare-and-set), re-promotes the ``previous`` champion of each
  affected crypto whose champion is focal-trained (only when the previous one is not focal:
  re-promoting a focal previous would not roll anything back), records the incident in
  ``rollbacks`` (an automatic one waits 15 min for ``confirm_rollback_job``) and alerts.
  Idempotent: a second run finds the flag flipped and the champions rolled back and changes
  nothing; of two runs at the same moment, the compare-and-set lets exactly one flip, and a
  re-promotion is conditional on the champion still being the focal one it read. The decision
  is the pure :func:`cvn_assets.guard.champion.rollback_plan` (typed registry versions in,
  a plan out); the op reads its inputs and executes the plan.
* ``confirm_rollback_job``: an operator confirms a pending (or held) rollback.
* ``halt_trading_job`` / ``resume_trading_job`` (system-wide kill switch): set / clear
  ``trading_halted`` from ``effective_at`` (default: the guard clock's now); paper trading
  opens nothing at an hour whose decision falls while it is set, whenever the day is replayed
  (the audit history decides, :mod:`cvn_assets.guard.flags`).
* ``shadow_retrain_job``: retrains a crypto's champion variant on the history up to now (the
  recent window included) and registers it under the ``candidate`` alias -- never promoted;
  paper trading then logs its predictions beside the champion's (shadow mode).
* ``promote_candidate_job``: an operator promotes the candidate (audited).
"""

import dataclasses
import hashlib
import json
from typing import Any, Literal

import pandas as pd
from dagster import Config, Failure, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.guardrails import CROSS_ENTROPY
from cvn_assets.ablation.identity import digest, module_digest
from cvn_assets.ablation.metrics import MIN_TRADE_SHARE
from cvn_assets.ablation.variants import Variant
from cvn_assets.config_types import CryptoEnum, CryptoName, IsoTime
from cvn_assets.guard.champion import (
    AliasPair,
    RegistryVersion,
    RollbackPlan,
    effective_variant,
    rollback_plan,
)
from cvn_assets.guard.thresholds import (
    BUY_PROBA_DRIFT,
    CHECK_ASSET,
    NET_EXPECTANCY,
    TRAINING_FAILURES,
)
from cvn_assets.guard.training import (
    calibration_share,
    dataset_through,
    history_plan,
    registry_stats,
    train_whole_history,
    training_window,
)
from cvn_assets.market.folds import FoldPlan
from cvn_assets.partitions import SETTINGS
from resources.alerts import SEVERITIES, Alert, AlertSink, Delivery
from resources.config_store import HALT_FLAG, LOSS_FLAG, ConfigConflict, ConfigStore
from resources.db import utc_param
from resources.guard_clock import GuardClock, parse_utc
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.model_store import ArtifactStore
from resources.rollbacks import NoRollback, RollbackLog
from resources.sweep_settings import SweepSettings

RUNBOOKS = {
    "expectancy_negative_focal": "runbooks/runbook_focal_loss_negative_expectancy.md",
    "expectancy_negative_sparse": "runbooks/runbook_focal_loss_negative_expectancy.md",
    "expectancy_negative_any": "runbooks/runbook_negative_expectancy_all.md",
    "focal_training_crash": "runbooks/runbook_focal_training_crash.md",
    "guard_stale": "runbooks/runbook_guard_stale.md",
    "guard_flags_unreadable": "runbooks/runbook_guard_flags_unreadable.md",
    "data_drift": "runbooks/runbook_data_drift.md",
    "data_integrity": "runbooks/runbook_data_integrity.md",
    "concept_drift": "runbooks/runbook_concept_drift.md",
    "output_sharpness": "runbooks/runbook_output_sharpness_drift.md",
    "rollback": "runbooks/runbook_focal_loss_negative_expectancy.md",
    "rollback_unconfirmed": "runbooks/runbook_focal_loss_negative_expectancy.md",
}

#: alert name -> the ``monitoring_metrics`` asset check that shows its metric per crypto-day
#: (spec 6.1's thresholds; named in the ``alert_job`` run's metadata)
ALERT_CHECKS = {
    "expectancy_negative_focal": NET_EXPECTANCY,
    "expectancy_negative_sparse": NET_EXPECTANCY,
    "expectancy_negative_any": NET_EXPECTANCY,
    "focal_training_crash": TRAINING_FAILURES,
    "output_sharpness": BUY_PROBA_DRIFT,
}


def _who(config: Any, what: str) -> None:
    for name in ("actor", "reason"):
        value = getattr(config, name)
        if not str(value or "").strip():
            raise Failure(description=f"{what}: run config {name} must not be empty, got {value!r}")


# ------------------------------------------------------------------------------------ alert
class AlertConfig(Config):
    """One alert (what a sensor requests; see :class:`resources.alerts.Alert`)."""

    name: Literal[tuple(RUNBOOKS)] = Field(description="the rule")  # type: ignore[valid-type]
    severity: Literal[SEVERITIES] = Field(description="P1 | P2 | crit | warn | info")  # type: ignore[valid-type]
    cryptos: list[CryptoEnum] = Field(default_factory=list)
    figures_json: str = Field(default="{}", description="JSON object of the firing figures")
    incident_id: str
    runbook: str
    message: str
    at: IsoTime = Field(description="ISO UTC time of the evaluation that fired it")


@op
def send_alert(
    context: OpExecutionContext, config: AlertConfig, alert_sink: AlertSink, guard_clock: GuardClock
) -> None:
    """Record the alert of the run config, then deliver it (idempotent by incident id and
    rule). Delivery still pending after this run's bounded retries: the run succeeds (the
    alert is recorded; ``alert_delivery`` retries it). Delivery given up: the run fails."""
    alert = Alert(
        name=config.name,
        severity=config.severity,
        cryptos=tuple(str(c) for c in config.cryptos),
        figures=json.loads(config.figures_json),
        incident_id=config.incident_id,
        runbook=config.runbook,
        at=parse_utc("at", config.at),
        message=config.message,
    )
    out = alert_sink.send(alert, now=guard_clock.now(), dagster_run_id=context.run.run_id)
    _report_delivery(context, out)
    check = ALERT_CHECKS.get(alert.name)
    link = (
        {
            "asset_check": f"{CHECK_ASSET}:{check}",
            "asset_check_ui": f"Assets -> {CHECK_ASSET} -> Checks -> {check}",
        }
        if check
        else {}
    )
    context.add_output_metadata(
        {
            "recorded_now": out.recorded_now,
            "incident_id": alert.incident_id,
            "runbook": alert.runbook,
            **link,
            **out.metadata(),
        }
    )
    if out.state == "failed":
        raise Failure(
            description=f"alert {alert.name} ({alert.incident_id}) recorded, but its delivery "
            f"gave up: {out.summary()}",
            metadata=out.metadata(),
        )


def _report_delivery(context: OpExecutionContext, out: Delivery) -> None:
    """One log line per alert: info when delivered or recorded, warning when pending, error
    when delivery gave up."""
    line = f"alert {out.name} ({out.incident_id}): {out.summary()}"
    if out.state == "failed":
        context.log.error(line)
    elif out.state == "pending":
        context.log.warning(line + " (the alert_delivery sensor retries it)")
    else:
        context.log.info(line)


@job(
    tags={"cvn/guard": "alert"},
    description="Record one alert (results database, JSON lines), then deliver it to Slack "
    "if configured (bounded retries; alert_delivery retries what is left).",
)
def alert_job():
    send_alert()


def alert_run_config(
    name: str,
    severity: str,
    cryptos: list[str],
    figures: dict[str, Any],
    incident_id: str,
    message: str,
    at: Any,
) -> dict[str, Any]:
    """Run config of ``alert_job`` (what a sensor's RunRequest carries)."""
    return {
        "ops": {
            "send_alert": {
                "config": {
                    "name": name,
                    "severity": severity,
                    "cryptos": sorted(cryptos),
                    "figures_json": json.dumps(figures, sort_keys=True, default=str),
                    "incident_id": incident_id,
                    "runbook": RUNBOOKS[name],
                    "message": message,
                    "at": at.isoformat(),
                }
            }
        }
    }


# --------------------------------------------------------------------------------- rollback
class RollbackConfig(Config):
    """Run config of ``rollback_job`` (launchpad: ``ops.rollback.config``)."""

    actor: str = Field(description="who rolls back (audited)")
    reason: str = Field(description="why (audited)")
    incident_id: str = Field(default="", description="default: INC-manual-<run id>")
    trigger: Literal["manual", "auto"] = Field(
        default="manual",
        description="manual (an operator's) | auto (the expectancy_negative_focal sensor's only)",
    )
    cryptos: list[CryptoEnum] = Field(
        default_factory=list, description="default: every crypto whose champion is focal"
    )
    effective_at: IsoTime = Field(
        default="", description="ISO time of the alias change (drills); default: the clock"
    )


@op
def rollback(
    context: OpExecutionContext,
    config: RollbackConfig,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    rollback_log: RollbackLog,
    alert_sink: AlertSink,
    guard_clock: GuardClock,
) -> None:
    """Flip the factor-level kill switch, re-promote the previous champions, record, alert.

    The decision is :func:`cvn_assets.guard.champion.rollback_plan`'s (typed registry
    versions in, a plan out); this op reads its inputs, then executes the plan."""
    _check_rollback_config(config)
    run_id = context.run.run_id
    incident = config.incident_id or f"INC-manual-{run_id[:8]}"
    at = (
        parse_utc("effective_at", config.effective_at) if config.effective_at else guard_clock.now()
    )
    flag, version = config_store.get(LOSS_FLAG)
    cryptos = [str(c) for c in config.cryptos] or list(SETTINGS.universe)
    plan = rollback_plan(flag, _alias_pairs(model_registry, cryptos), cryptos)
    # 1. the kill switch (compare-and-set: of concurrent runs exactly one flips)
    flipped = plan.flip and _flip_loss_flag(context, config_store, config, version, incident)
    # 2. re-promote the previous champion where the champion is focal-trained
    repromoted, notes = _repromote(model_registry, plan, config, incident, run_id, at)
    # 3. the incident and its alert (one transaction), then the delivery
    _record_rollback(
        context, config, rollback_log, alert_sink, guard_clock,
        incident=incident, at=at, flipped=flipped, repromoted=repromoted, notes=notes,
    )  # fmt: skip


def _check_rollback_config(config: RollbackConfig) -> None:
    """Bad run config: :class:`Failure` naming the field, before anything is read (the
    trigger and the cryptos are refused earlier, by the config schema)."""
    _who(config, "rollback_job")


def _alias_pairs(registry: ModelRegistry, cryptos: list[str]) -> dict[str, AliasPair]:
    """crypto -> (champion, previous), typed at the registry's boundary."""
    return {
        c: (
            RegistryVersion.from_registry(registry.alias(c, "champion")),
            RegistryVersion.from_registry(registry.alias(c, "previous")),
        )
        for c in cryptos
    }


def _flip_loss_flag(
    context: OpExecutionContext,
    config_store: ConfigStore,
    config: RollbackConfig,
    version: int,
    incident: str,
) -> bool:
    """Compare-and-set the loss flag to cross-entropy; False when a concurrent run flipped
    it first, :class:`Failure` when it was set to anything else meanwhile."""
    try:
        config_store.compare_and_set(
            LOSS_FLAG, version, CROSS_ENTROPY, actor=config.actor, reason=config.reason,
            incident_id=incident, dagster_run_id=context.run.run_id,
        )  # fmt: skip
        return True
    except ConfigConflict as exc:
        now_value, _ = config_store.get(LOSS_FLAG)
        if now_value != CROSS_ENTROPY:
            raise Failure(description=f"rollback_job: {exc}") from exc
        context.log.info(f"{LOSS_FLAG} flipped by a concurrent run: {exc}")
        return False


def _repromote(
    registry: ModelRegistry,
    plan: RollbackPlan,
    config: RollbackConfig,
    incident: str,
    run_id: str,
    at: Any,
) -> tuple[dict[str, str], dict[str, str]]:
    """Execute the plan's re-promotions, each conditional on the champion still being the
    focal one read. Returns ``(repromoted, notes)``: crypto -> what changed / why not."""
    repromoted: dict[str, str] = {}
    notes: dict[str, str] = {}
    for step in plan.steps:
        rp = step.repromotion
        if rp is None:
            notes[step.crypto] = step.note
            continue
        out = registry.repromote_previous(
            rp.crypto, actor=config.actor, reason=f"{config.reason} [{incident}]",
            dagster_run_id=run_id, at=at, expected_champion=rp.champion.id,
        )  # fmt: skip
        if out["champion"] == rp.previous.id:
            repromoted[rp.crypto] = rp.summary()
        else:
            notes[rp.crypto] = f"rolled back by a concurrent run (champion v{out['champion']})"
    return repromoted, notes


def _rollback_alert(
    config: RollbackConfig,
    incident: str,
    at: Any,
    flipped: bool,
    repromoted: dict[str, str],
    row: dict[str, Any],
) -> Alert:
    """The ``rollback`` P1 of the incident ``row`` (a pending one says by when to confirm)."""
    confirm = (
        f"; confirm by {row['confirm_by'].isoformat()} with confirm_rollback_job"
        if row["state"] == "pending"
        else ""
    )
    return Alert(
        name="rollback",
        severity="P1",
        cryptos=tuple(sorted(repromoted)),
        figures={"flipped": flipped, "repromoted": json.dumps(repromoted)},
        incident_id=incident,
        runbook=RUNBOOKS["rollback"],
        at=at,
        message=(
            f"rollback ({config.trigger}) by {config.actor}: {LOSS_FLAG}="
            f"{CROSS_ENTROPY}{' (flipped now)' if flipped else ' (already)'}; "
            f"re-promoted {repromoted or 'none'}" + confirm
        ),
    )


def _record_rollback(
    context: OpExecutionContext,
    config: RollbackConfig,
    rollback_log: RollbackLog,
    alert_sink: AlertSink,
    guard_clock: GuardClock,
    *,
    incident: str,
    at: Any,
    flipped: bool,
    repromoted: dict[str, str],
    notes: dict[str, str],
) -> None:
    """The incident (an automatic one waits for an operator's confirmation) and its alert,
    recorded in one transaction (a re-run that finds the incident finds its page too); the
    delivery follows, outside it: a channel's failure leaves the alert pending, never fails a
    rollback that took effect."""
    run_id = context.run.run_id
    now = guard_clock.now()
    row, created = rollback_log.record(
        incident, trigger=config.trigger, actor=config.actor, reason=config.reason,
        cryptos=sorted(repromoted), flipped=flipped, dagster_run_id=run_id, at=at,
        on_record=lambda conn, r: alert_sink.record_in(
            conn, _rollback_alert(config, incident, at, flipped, repromoted, r), now=now,
            dagster_run_id=run_id,
        ),
    )  # fmt: skip
    changed = flipped or bool(repromoted)
    delivery: dict[str, Any] = {}
    if created or changed:
        alert = _rollback_alert(config, incident, at, flipped, repromoted, row)
        out = alert_sink.send(alert, now=now, dagster_run_id=run_id)
        _report_delivery(context, out)
        delivery = out.metadata()
    context.log.info(
        f"rollback {incident}: flipped={flipped}, re-promoted={repromoted}, notes={notes}, "
        f"state={row['state']}"
    )
    context.add_output_metadata(
        {
            "incident_id": incident,
            "flipped": flipped,
            "repromoted": MetadataValue.json(repromoted),
            "notes": MetadataValue.json(notes),
            "state": row["state"],
            "changed_anything": changed,
            **delivery,
        }
    )


@job(
    tags={"cvn/guard": "rollback"},
    description=f"Factor-level kill switch: {LOSS_FLAG}={CROSS_ENTROPY}, re-promote the "
    "previous champions, audit, alert (idempotent).",
)
def rollback_job():
    rollback()


class ConfirmConfig(Config):
    """Run config of ``confirm_rollback_job``."""

    actor: str
    reason: str
    incident_id: str = Field(default="", description="default: the latest pending/held one")


def _open_rollbacks(rollback_log: RollbackLog) -> str:
    """The pending / held incident ids, for a refusal's hint."""
    try:
        open_ = [r["incident_id"] for r in rollback_log.all() if r["state"] in ("pending", "held")]
    except Exception:  # the hint is best effort; the refusal stands without it
        return ""
    return f" (open: {', '.join(open_)})" if open_ else " (none is pending or held)"


@op
def confirm_rollback(
    context: OpExecutionContext,
    config: ConfirmConfig,
    rollback_log: RollbackLog,
    guard_clock: GuardClock,
) -> None:
    """Confirm a pending (or held) rollback."""
    _who(config, "confirm_rollback_job")
    try:
        row = rollback_log.confirm(
            config.incident_id or None,
            actor=config.actor,
            reason=config.reason,
            at=guard_clock.now(),
        )
    except NoRollback as exc:
        raise Failure(
            description=f"confirm_rollback_job: incident_id: {exc}{_open_rollbacks(rollback_log)}"
        ) from None
    context.log.info(f"rollback {row['incident_id']} confirmed by {row['confirmed_by']}")
    context.add_output_metadata({"incident_id": row["incident_id"], "state": row["state"]})


@job(tags={"cvn/guard": "confirm_rollback"}, description="An operator confirms a rollback.")
def confirm_rollback_job():
    confirm_rollback()


class EscalateConfig(Config):
    """Run config of ``escalate_rollback_job`` (what ``rollback_confirmation`` requests)."""

    incident_id: str


def escalation_alert(incident: str, row: dict[str, Any], now: Any) -> Alert:
    """The ``rollback_unconfirmed`` P1 of a held rollback ``row``."""
    return Alert(
        name="rollback_unconfirmed",
        severity="P1",
        cryptos=tuple(row["cryptos"]),
        figures={
            "triggered_at": row["triggered_at"].isoformat(),
            "confirm_by": row["confirm_by"].isoformat(),
        },
        incident_id=incident,
        runbook=RUNBOOKS["rollback_unconfirmed"],
        at=row["escalated_at"] or now,
        message=f"rollback {incident} not confirmed by "
        f"{row['confirm_by'].isoformat()}: held (stays in force); escalating",
    )


@op
def escalate_rollback(
    context: OpExecutionContext,
    config: EscalateConfig,
    rollback_log: RollbackLog,
    alert_sink: AlertSink,
    guard_clock: GuardClock,
) -> None:
    """A pending rollback past its deadline: held (it stays in force) and its escalation
    alert recorded for delivery, in one transaction; then delivered (a failure leaves it
    pending for ``alert_delivery``; the escalation is never lost). Confirmed meanwhile:
    nothing. Re-run: held once, recorded once, delivered at least once."""
    now = guard_clock.now()
    run_id = context.run.run_id
    incident = config.incident_id
    held_now = rollback_log.hold(
        incident,
        at=now,
        on_held=lambda conn, r: alert_sink.record_in(
            conn, escalation_alert(incident, r, now), now=now, dagster_run_id=run_id
        ),
    )
    row = rollback_log.get(incident)
    if row["state"] != "held":
        context.log.info(f"rollback {incident} is {row['state']}: no escalation")
        context.add_output_metadata({"state": row["state"], "escalated": False})
        return
    out = alert_sink.send(escalation_alert(incident, row, now), now=now, dagster_run_id=run_id)
    _report_delivery(context, out)
    context.add_output_metadata(
        {"state": "held", "held_now": held_now, "escalated": True, **out.metadata()}
    )


@job(
    tags={"cvn/guard": "escalate_rollback"},
    description="Hold an unconfirmed automatic rollback and record its escalation alert (one "
    "transaction), then deliver it.",
)
def escalate_rollback_job():
    escalate_rollback()


# ------------------------------------------------------------------------------ halt/resume
class FlagChangeConfig(Config):
    actor: str
    reason: str
    incident_id: str = ""
    effective_at: IsoTime = Field(
        default="",
        description="when the change takes effect (ISO time with offset); default: the guard "
        "clock's now. Not in the future, not before the flag's last change.",
    )


def _set_flag(
    context: OpExecutionContext,
    store: ConfigStore,
    clock: GuardClock,
    config: Any,
    value: str,
) -> None:
    _who(config, context.op_def.name)
    try:
        at = utc_param("effective_at", config.effective_at) if config.effective_at else clock.now()
    except ValueError as exc:
        raise Failure(description=f"{context.op_def.name}: {exc}") from exc
    current, version = store.get(HALT_FLAG)
    if current == value:
        context.log.info(f"{HALT_FLAG} is already {value}: nothing changed")
        context.add_output_metadata({HALT_FLAG: value, "changed": False})
        return
    try:
        new_version = store.compare_and_set(
            HALT_FLAG, version, value, actor=config.actor, reason=config.reason,
            incident_id=config.incident_id or None, dagster_run_id=context.run.run_id, at=at,
        )  # fmt: skip
    except ValueError as exc:
        raise Failure(description=f"{context.op_def.name}: {exc}") from exc
    context.log.info(
        f"{HALT_FLAG}: {current} -> {value} (version {new_version}) from {at.isoformat()}"
    )
    context.add_output_metadata(
        {HALT_FLAG: value, "changed": True, "version": new_version, "at": at.isoformat()}
    )


@op
def halt_trading(
    context: OpExecutionContext,
    config: FlagChangeConfig,
    config_store: ConfigStore,
    guard_clock: GuardClock,
) -> None:
    """Set ``trading_halted`` from ``effective_at`` (default now): paper trading opens nothing
    at a decision from then on, and a position open then closes at the next candle's open."""
    _set_flag(context, config_store, guard_clock, config, "true")


@op
def resume_trading(
    context: OpExecutionContext,
    config: FlagChangeConfig,
    config_store: ConfigStore,
    guard_clock: GuardClock,
) -> None:
    """Clear ``trading_halted`` from ``effective_at`` (default now)."""
    _set_flag(context, config_store, guard_clock, config, "false")


@job(tags={"cvn/guard": "halt"}, description="System-wide kill switch: halt all trading.")
def halt_trading_job():
    halt_trading()


@job(tags={"cvn/guard": "resume"}, description="Clear the system-wide kill switch.")
def resume_trading_job():
    resume_trading()


# ------------------------------------------------------------------------- candidate promotion
class PromoteCandidateConfig(Config):
    crypto: CryptoName
    actor: str
    reason: str
    incident_id: str = ""


@op
def promote_candidate(
    context: OpExecutionContext,
    config: PromoteCandidateConfig,
    model_registry: ModelRegistry,
    config_store: ConfigStore,
) -> None:
    """Promote the ``candidate`` of a crypto to champion (the champion becomes previous).
    Refused (:class:`Failure`, before any change) while the kill switch ``CVN_LOSS_FUNCTION``
    is ``binary:logistic`` and the candidate was trained with the focal loss: promoting it
    would put focal back live behind the kill switch's back."""
    _who(config, "promote_candidate_job")
    _check_kill_switch(config.crypto, model_registry, config_store)
    out = model_registry.promote_candidate(
        config.crypto, actor=config.actor, reason=config.reason,
        incident_id=config.incident_id or None, run_id=context.run.run_id,
    )  # fmt: skip
    context.log.info(f"{config.crypto}: candidate promoted: {out}")
    context.add_output_metadata({"aliases": MetadataValue.json(out)})


def _check_kill_switch(crypto: str, registry: ModelRegistry, store: ConfigStore) -> None:
    """:class:`Failure` naming the flag, its value and the candidate's loss when the candidate
    of ``crypto`` is focal-trained while ``CVN_LOSS_FUNCTION`` is ``binary:logistic``."""
    candidate = registry.alias(crypto, "candidate")
    if candidate is None or candidate["loss_function"] == CROSS_ENTROPY:
        return  # no candidate: promote_candidate says so; a cross-entropy one is allowed
    flag, version = store.get(LOSS_FLAG)
    if flag == CROSS_ENTROPY:
        raise Failure(
            description=f"promote_candidate_job: refused: {LOSS_FLAG}={flag!r} (kill switch, "
            f"version {version}) but the candidate of {crypto} (version {candidate['id']}, "
            f"variant {candidate['variant']!r}) was trained with loss "
            f"{candidate['loss_function']!r}; retrain it (shadow_retrain_job trains with "
            f"{flag} now) or set {LOSS_FLAG} back first (audited)"
        )


@job(tags={"cvn/guard": "promote_candidate"}, description="Promote a shadow candidate.")
def promote_candidate_job():
    promote_candidate()


# ---------------------------------------------------------------------------- shadow retrain
SHADOW_ASSET_DIR = "shadow_candidates"  # artifact store folder of the candidates


class ShadowRetrainConfig(Config):
    """Run config of ``shadow_retrain_job`` (launchpad: ``ops.shadow_retrain.config``)."""

    crypto: CryptoName
    actor: str
    reason: str
    incident_id: str = ""
    through: IsoTime = Field(default="", description="ISO end of the history; default: the clock")


@op
def shadow_retrain(
    context: OpExecutionContext,
    config: ShadowRetrainConfig,
    sweep: SweepSettings,
    market_data: MarketDataResource,
    artifacts: ArtifactStore,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    guard_clock: GuardClock,
) -> None:
    """Retrain the champion's variant on the history up to ``through`` and register it as the
    ``candidate`` (never promoted here)."""
    _who(config, "shadow_retrain_job")
    crypto = config.crypto
    through = parse_utc("through", config.through) if config.through else guard_clock.now()
    champ = _champion_to_shadow(model_registry, crypto)
    flag, _ = config_store.get(LOSS_FLAG)
    eff = effective_variant(_variants()[champ.variant], flag, _baseline_variant())
    candles = market_data.load_candles_through(crypto, through)
    ds = dataset_through(candles, sweep.label)
    share = champ.reference_stats.get("min_trade_share", MIN_TRADE_SHARE)  # the champion's
    fp = _shadow_fingerprint(crypto, share, eff, ds, candles, sweep)
    model, stats, plan = _train_candidate(eff, ds, sweep, share, champ)
    train_start, train_end = training_window(ds)
    stats = registry_stats(model, stats)
    model.info.update(
        {"reference_statistics": stats, "train_end": str(train_end),
         "shadow_of_version": champ.id, "loss_flag": flag}
    )  # fmt: skip
    artifacts.write(SHADOW_ASSET_DIR, crypto, fp, model)
    uri = str(artifacts.path(SHADOW_ASSET_DIR, crypto, fp))
    vid = model_registry.register_version(
        crypto, eff.name, loss_function=eff.loss_function, gamma=eff.gamma, alpha=eff.alpha,
        train_start=train_start.to_pydatetime(), train_end=train_end.to_pydatetime(),
        sweep_id=champ.sweep_id, artifact_uri=uri, reference_stats=stats,
    )  # fmt: skip
    why = f"{config.reason} [shadow of champion v{champ.id}; {config.incident_id or 'manual'}]"
    model_registry.set_alias(
        crypto, "candidate", vid, actor=config.actor, reason=why,
        dagster_run_id=context.run.run_id, at=through,
    )  # fmt: skip
    context.log.info(f"{crypto}: candidate = version {vid} ({eff.name}, through {through})")
    context.add_output_metadata(
        {
            "crypto": crypto,
            "candidate_version_id": vid,
            "champion_version_id": champ.id,
            "trained_as": eff.name,
            "through": through.isoformat(),
            "train_rows": len(plan.train),
            "calibration_rows": len(plan.calibration),
            "f1_threshold": round(float(model.threshold), 4),
            "artifact": MetadataValue.path(uri),
            "next_step": "compare the candidate's shadow predictions with the champion's on "
            "matured labels, then promote_candidate_job (actor, reason)",
        }
    )


def _variants() -> dict[str, Variant]:
    return {v.name: v for v in SETTINGS.variants}


def _baseline_variant() -> Variant:
    return next(v for v in SETTINGS.variants if v.loss_function == CROSS_ENTROPY)


def _champion_to_shadow(registry: ModelRegistry, crypto: str) -> RegistryVersion:
    """The champion of ``crypto``, typed; :class:`Failure` when there is none or its variant
    is not configured."""
    champ = RegistryVersion.from_registry(registry.alias(crypto, "champion"))
    if champ is None:
        raise Failure(description=f"shadow_retrain_job: {crypto} has no champion to shadow")
    variants = _variants()
    if champ.variant not in variants:
        raise Failure(
            description=f"shadow_retrain_job: champion variant {champ.variant!r} of {crypto} "
            f"is not configured (known: {sorted(variants)})"
        )
    return champ


def _train_candidate(
    eff: Variant, ds: pd.DataFrame, sweep: SweepSettings, share: float, champ: RegistryVersion
) -> tuple[CalibratedModel, dict[str, Any], FoldPlan]:
    """``(model, stats, plan)``: ``eff`` trained on the whole history ``ds`` as the champion
    is (the sweep cell's code path), calibration block 1/K at its end."""
    plan = history_plan(
        ds, early_stopping_frac=sweep.early_stopping_frac,
        calibration_frac=calibration_share(SETTINGS.n_folds), embargo_pct=sweep.embargo_pct,
    )  # fmt: skip
    model, stats = train_whole_history(
        eff, ds, plan, xgb_params=sweep.xgb_params(), num_boost_round=sweep.num_boost_round,
        early_stopping_rounds=sweep.early_stopping_rounds, seed=sweep.seed,
        primary_calibration=sweep.primary_calibration, fee_per_side=sweep.fee_per_side,
        oos_f1_buy=champ.reference_stats.get("oos_f1_buy"),
        min_trade_share=share,
    )  # fmt: skip
    return model, stats, plan


def _shadow_fingerprint(
    crypto: str,
    share: float,
    eff: Variant,
    ds: pd.DataFrame,
    candles: pd.DataFrame,
    sweep: SweepSettings,
) -> str:
    """The candidate's artifact fingerprint: crypto, trading share, effective variant, the
    dataset's window, the candles' bytes, the sweep settings and the training code."""
    return digest(
        {
            "crypto": crypto,
            "min_trade_share": share,
            "variant": dataclasses.asdict(eff),
            "window": [str(ds.index[0]), str(ds.index[-1])],
            "data": hashlib.sha256(candles.to_numpy().tobytes()).hexdigest(),
            "settings": sweep.model_dump(),
            "code": module_digest(
                "guard/training.py", "guard/champion.py", "ablation/evaluation.py"
            ),
        }
    )


@job(
    tags={"cvn/guard": "shadow_retrain"},
    description="Retrain a crypto's champion variant on the recent history as a shadow "
    "candidate (alias candidate; never promoted silently).",
)
def shadow_retrain_job():
    shadow_retrain()


# ---------------------------------------------------------------------------- alert delivery
class DeliverAlertsConfig(Config):
    """Run config of ``alert_delivery_job`` (what the ``alert_delivery`` sensor requests)."""

    alerts: list[str] = Field(
        default_factory=list,
        description="'<name>:<incident_id>' of the alerts to deliver; empty: every due alert",
    )


def alert_key(name: str, incident: str) -> str:
    """``'<name>:<incident_id>'`` (a rule name holds no ':')."""
    return f"{name}:{incident}"


def _parse_alert_key(key: str) -> tuple[str, str]:
    name, sep, incident = key.partition(":")
    if not sep or not name or not incident:
        raise Failure(
            description=f"alert_delivery_job: alerts entry {key!r} is not '<name>:<incident_id>'"
        )
    return name, incident


@op
def deliver_alerts(
    context: OpExecutionContext,
    config: DeliverAlertsConfig,
    alert_sink: AlertSink,
    guard_clock: GuardClock,
) -> None:
    """Deliver the alerts of the run config (or every due one), each with the sink's bounded
    retries; write the file lines the file lacks. The run fails, naming them, when a delivery
    gave up in it (a ``delivery_failed`` line is in the file); still pending: success."""
    keys = [_parse_alert_key(k) for k in config.alerts]
    now = guard_clock.now()
    synced = alert_sink.sync_file()
    if not keys:
        keys = [
            (r["name"], r["incident_id"])
            for r in alert_sink.due(now)
            if r["delivery_state"] == "pending"
        ]
    results: list[Delivery] = []
    for name, incident in keys:
        try:
            out = alert_sink.deliver(incident, name, now=now)
        except LookupError as exc:
            context.log.warning(str(exc))
            continue
        _report_delivery(context, out)
        results.append(out)
    states = {s: sum(r.state == s for r in results) for s in ("delivered", "pending", "failed")}
    context.add_output_metadata(
        {
            **{f"n_{k}": v for k, v in states.items()},
            "file_lines_synced": synced,
            "alerts": MetadataValue.json(
                {alert_key(r.name, r.incident_id): r.summary() for r in results}
            ),
        }
    )
    gave_up = [r for r in results if r.state == "failed" and r.posts > 0]
    if gave_up:
        raise Failure(
            description="alert delivery gave up for "
            + "; ".join(f"{alert_key(r.name, r.incident_id)}: {r.summary()}" for r in gave_up),
            metadata={
                "failed": MetadataValue.json([alert_key(r.name, r.incident_id) for r in gave_up])
            },  # fmt: skip
        )


@job(
    tags={"cvn/guard": "alert_delivery"},
    description="Retry the delivery of recorded alerts (requested by the alert_delivery "
    "sensor); fails when a delivery gives up.",
)
def alert_delivery_job():
    deliver_alerts()


GUARD_JOBS = [
    shadow_retrain_job,
    alert_job,
    alert_delivery_job,
    rollback_job,
    confirm_rollback_job,
    escalate_rollback_job,
    halt_trading_job,
    resume_trading_job,
    promote_candidate_job,
]
