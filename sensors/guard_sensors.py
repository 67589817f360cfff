"""The guard's sensors (spec 6.2-6.4): they read tables, decide with the rules of
:mod:`cvn_assets.guard.drift` (through :mod:`sensors.evaluation`) and request runs; they never send
an alert or change state themselves (a retried tick must not page twice).

Hygiene, common to all of them:

* **Clock**: the ``guard_clock`` resource (wall clock; a fixed time in drills and tests).
* **Cursor**: JSON holding timestamps (the last evaluated hour or day, recent P1 times,
  consecutive sharpness triggers). Dagster stores a cursor only when the tick succeeds, so a
  failed tick does not advance it. ``expectancy_negative_focal`` (and
  ``expectancy_negative_any``, its P2 over every live champion) catches up: a tick
  evaluates every hour after the cursor's ``evaluated_hour`` up to the current one, at most
  the last 2 (:data:`P1_MEMORY`), oldest first, so an hour skipped by a late tick (an
  accelerated drill clock, a busy daemon) is still judged and two P1s an hour apart still
  meet; ``model_drift`` evaluates the latest day only.
* **run_key**: every key holds a time bucket (``...:2026-12-01T13``): a run_key is deduped for
  ever, so a key without a bucket would fire once in the sensor's life.
* **Cost**: bounded windows (<= 48 h of trades, <= 14 days of predictions per crypto), so a
  tick does not grow with the journal (``bench/bench_sensors.py``).
* **Default status**: ``expectancy_negative_any`` (P2: >= 2 live champions losing, whatever
  their loss), ``focal_training_crash``, ``guard_stale`` (no hour journaled for a
  crypto for more than 2 h), ``rollback_confirmation`` and ``alert_delivery`` (retries
  undelivered alerts) only send alerts and are ``RUNNING`` by default;
  ``expectancy_negative_focal`` (can flip the kill switch) and ``model_drift`` (launches
  retrains and reverts) are ``STOPPED`` until an operator turns them on (UI: Automation;
  CLI: ``dagster sensor start <name>``).
"""

import json
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from cvn_assets.ablation.guardrails import CROSS_ENTROPY, FOCAL
from cvn_assets.guard.drift import STALE_AFTER, SharpnessState, auto_kill_switch
from cvn_assets.guard.monitoring import LOSS_FUNCTION_TAG
from cvn_assets.partitions import SETTINGS
from resources.alerts import AlertSink, incident_id
from resources.config_store import LOSS_FLAG, ConfigStore
from resources.guard_clock import GuardClock, guard_interval
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.rollbacks import RollbackLog
from sensors.evaluation import (
    ChampionsExpectancy,
    DriftEvaluation,
    ExpectancyEvaluation,
    JournalEnd,
    evaluate_any_expectancy,
    evaluate_drift,
    evaluate_expectancy,
    evaluate_integrity,
    evaluate_sparse_expectancy,
    journal_ends,
)
from sensors.jobs import (
    alert_delivery_job,
    alert_job,
    alert_key,
    alert_run_config,
    escalate_rollback_job,
    rollback_job,
    shadow_retrain_job,
)
from sensors.runs import in_flight as _in_flight

#: P2 when more than this many focal training runs failed in the last hour (spec 6.2)
CRASH_MAX_FAILURES_PER_HOUR = 5
#: run priority of the guard's responses (rollback, escalation): dequeued before alert runs
RESPONSE_PRIORITY = "10"
P1_MEMORY = timedelta(hours=2)  # P1 times kept in the cursor (the kill-switch window is 1 h)


def _cursor(context: SensorEvaluationContext) -> dict[str, Any]:
    try:
        return json.loads(context.cursor) if context.cursor else {}
    except json.JSONDecodeError:
        context.log.warning(f"unreadable cursor {context.cursor!r}: starting afresh")
        return {}


def _bucket(when: datetime, freq: str) -> datetime:
    return pd.Timestamp(when).floor(freq).to_pydatetime()


def _key(*parts: Any) -> str:
    return ":".join(p.strftime("%Y-%m-%dT%H") if isinstance(p, datetime) else str(p) for p in parts)


def _minute_key(*parts: Any) -> str:
    return ":".join(
        p.strftime("%Y-%m-%dT%H%M") if isinstance(p, datetime) else str(p) for p in parts
    )


# ----------------------------------------------------------------------------- P1 expectancy
@sensor(
    name="expectancy_negative_focal",
    jobs=[alert_job, rollback_job],
    minimum_interval_seconds=guard_interval(300),
    default_status=DefaultSensorStatus.STOPPED,
    description="P1: net expectancy < 0 over 48 h on >= 2 focal cryptos (one-sided t-test, "
    ">= 10 trades in the 48 h; fewer: insufficient; journal > 2 h behind: stale); warn at "
    "24 h. Two consecutive P1s within 1 h launch rollback_job. Each tick judges every hour "
    "since the last one evaluated (at most the last 2). Separately, P2 "
    "expectancy_negative_sparse: a focal crypto with too few trades in 48 h losing over its "
    "last 10 trades within 7 days (never a rollback).",
)
def expectancy_negative_focal(
    context: SensorEvaluationContext,
    guard_clock: GuardClock,
    model_registry: ModelRegistry,
    config_store: ConfigStore,
):
    """Each tick evaluates the hour buckets after the cursor's ``evaluated_hour`` up to the
    current one, at most the last ``P1_MEMORY`` (2) of them, oldest first (none evaluated
    yet: the current hour only). Each hour has its own run keys; its P1 joins the cursor's
    P1 times before the next hour is judged, so two P1s an hour apart launch the rollback
    even when the tick between them was skipped (one rollback request per tick at most).
    The cursor then holds the current hour and the P1 times of the last ``P1_MEMORY``."""
    now = guard_clock.now()
    cursor = _cursor(context)
    target = judged_through(model_registry, _bucket(now, "h"))
    hours = hours_to_evaluate(cursor.get("evaluated_hour"), target)
    if not hours:
        return SkipReason(_waiting(target, now))
    p1_times = [pd.Timestamp(t) for t in cursor.get("p1_times", [])]
    requests: list[RunRequest] = []
    lines: list[str] = []
    for hour in hours:
        ev = evaluate_expectancy(model_registry, SETTINGS.universe, hour)
        v = ev.verdict
        p1_times = [t for t in p1_times if t >= hour - P1_MEMORY]
        cryptos = list(v.details.get(v.level, [])) if v.alarm else []
        if v.level == "crit":
            p1_times.append(pd.Timestamp(hour))
        if v.alarm:
            requests.append(_expectancy_alert_request(ev, cryptos, hour))
        rolling_back = any(r.job_name == rollback_job.name for r in requests)
        if v.level == "crit" and not rolling_back and auto_kill_switch(p1_times, hour):
            rollback = _auto_rollback_request(
                context, config_store, model_registry, p1_times, cryptos, hour
            )
            if rollback is not None:
                requests.append(rollback)
        requests += sparse_expectancy_requests(model_registry, hour)
        lines.append(f"{hour.isoformat()}: {v.level}: {v.reason}")
        context.log.info(lines[-1])
    return _expectancy_result(_unique(requests), " | ".join(lines), hours[-1], p1_times)


def judged_through(model_registry: ModelRegistry, hour: datetime) -> datetime:
    """The last hour bucket the expectancy rules may judge at the current bucket ``hour``:
    the journal's frontier -- every crypto with a champion journaled up to it (its last
    journaled candle opened an hour before) -- so an hour is judged on its complete journal,
    not while the live run that journals its last candle is still on its way (measured in
    the live drill: judged 1-2 h short, the P1 came 6 h late). A frontier more than
    ``STALE_AFTER`` (2 h) behind is not waited for: the hour is judged, and the rules say
    ``stale`` for the cryptos behind. No journal at all: ``hour``."""
    cryptos = [c for c in SETTINGS.universe if model_registry.alias(c, "champion")]
    ends = [e for e in journal_ends(model_registry, cryptos).values() if e.last_hour is not None]
    if not ends:
        return hour
    slowest = min(ends, key=lambda e: e.last_hour)
    if slowest.stale(hour):
        return hour
    return min(hour, slowest.last_hour + timedelta(hours=1))


def _waiting(target: datetime, now: datetime) -> str:
    hour = _bucket(now, "h")
    if target < hour:
        return (
            f"hour {target.isoformat()} already evaluated; waiting for the journal to reach "
            f"{hour.isoformat()}"
        )
    return f"hour {hour.isoformat()} already evaluated"


def hours_to_evaluate(evaluated_hour: str | None, hour: datetime) -> list[datetime]:
    """The hour buckets a tick at ``hour`` (the current bucket) evaluates, oldest first: those
    after ``evaluated_hour`` (the cursor's; None: only ``hour``) up to ``hour``, at most the
    last ``P1_MEMORY / 1 h`` (2). Empty when ``hour`` was already evaluated."""
    if not evaluated_hour:
        return [hour]
    last = pd.Timestamp(evaluated_hour).to_pydatetime()
    n = min(int((hour - last) / timedelta(hours=1)), int(P1_MEMORY / timedelta(hours=1)))
    return [hour - timedelta(hours=k) for k in range(n - 1, -1, -1)]


def _unique(requests: list[RunRequest]) -> list[RunRequest]:
    """``requests`` without repeated run keys (the sparse P2 of one trade can be requested
    by two hours of a tick), first kept."""
    seen: set[str | None] = set()
    out = []
    for r in requests:
        if r.run_key not in seen:
            seen.add(r.run_key)
            out.append(r)
    return out


def _expectancy_alert_request(
    ev: ExpectancyEvaluation, cryptos: list[str], hour: datetime
) -> RunRequest:
    """The P1 (``crit``) or ``warn`` alert of an alarming expectancy evaluation, one per
    hour and severity (its run key)."""
    severity = "P1" if ev.verdict.level == "crit" else "warn"
    inc = incident_id("expectancy_negative_focal", cryptos, hour)
    return RunRequest(
        run_key=_key("alert", "expectancy_negative_focal", severity, hour),
        job_name=alert_job.name,
        run_config=alert_run_config(
            "expectancy_negative_focal",
            severity,
            cryptos,
            ev.figures(),
            inc,
            ev.message(),
            hour,
        ),  # fmt: skip
        tags={"cvn/alert": "expectancy_negative_focal", "cvn/severity": severity},
    )


def _auto_rollback_request(
    context: SensorEvaluationContext,
    config_store: ConfigStore,
    model_registry: ModelRegistry,
    p1_times: list[pd.Timestamp],
    cryptos: list[str],
    hour: datetime,
) -> RunRequest | None:
    """The kill switch's ``rollback_job`` run (two consecutive P1s within 1 h), or None
    (logged) when the loss flag is already cross-entropy or a rollback run is in flight.
    The rollback carries the incident id of the first of the two P1s (the same id as its
    ``expectancy_negative_focal`` alert); its reason names both P1 incidents."""
    flag, _ = config_store.get(LOSS_FLAG)
    in_flight = _in_flight(context, rollback_job.name)
    if flag == CROSS_ENTROPY or in_flight:
        context.log.info(
            f"kill-switch rule met, no rollback requested: {LOSS_FLAG}={flag}"
            + (", a rollback run is in flight" if in_flight else "")
        )
        return None
    first = min(t for t in p1_times if t >= pd.Timestamp(hour) - timedelta(hours=1))
    # named after the first P1's incident (its cryptos re-read from the journal at its hour,
    # a pure function of the trades closed before it); the second P1 is referenced too
    ev = evaluate_expectancy(model_registry, SETTINGS.universe, first.to_pydatetime())
    first_cryptos = list(ev.verdict.details.get("crit", [])) or cryptos
    inc = incident_id("expectancy_negative_focal", first_cryptos, first.to_pydatetime())
    second = incident_id("expectancy_negative_focal", cryptos, hour)
    return RunRequest(
        run_key=_key("rollback", "auto", hour),
        job_name=rollback_job.name,
        run_config={
            "ops": {
                "rollback": {
                    "config": {
                        "actor": "sensor:expectancy_negative_focal",
                        "reason": "two consecutive P1 expectancy_negative_focal "
                        f"alerts within 1 h ({', '.join(cryptos)}): {inc}, {second}",
                        "incident_id": inc,
                        "trigger": "auto",
                        "cryptos": [],
                    }
                }
            }
        },
        # ahead of queued alert runs (QueuedRunCoordinator: higher priority dequeues first)
        tags={"cvn/incident": inc, "dagster/priority": RESPONSE_PRIORITY},
    )


def _expectancy_result(
    requests: list[RunRequest], verdicts: str, hour: datetime, p1_times: list[pd.Timestamp]
) -> SensorResult:
    """The tick's result: its run requests (or a skip reason stating each evaluated hour's
    verdict, ``verdicts``) and the new cursor (the last evaluated hour, the P1 times kept)."""
    new_cursor = {
        "evaluated_hour": hour.isoformat(),
        "p1_times": [t.isoformat() for t in p1_times],
    }
    if not requests:
        return SensorResult(skip_reason=SkipReason(verdicts), cursor=json.dumps(new_cursor))
    return SensorResult(run_requests=requests, cursor=json.dumps(new_cursor))


def sparse_expectancy_requests(model_registry: ModelRegistry, hour: datetime) -> list[RunRequest]:
    """``expectancy_negative_sparse`` (P2): one alert per focal crypto whose last trades
    within 7 days lose significantly while its 48 h window is too thin for the P1. Never
    counted as a P1, never a rollback. The run key holds the last trade's exit hour, so the
    same evidence pages once, however many hourly ticks still see it."""
    requests = []
    for crypto, ev in sorted(
        evaluate_sparse_expectancy(model_registry, SETTINGS.universe, hour).items()
    ):
        if ev.verdict.level != "crit" or ev.last_exit is None:
            continue
        name = "expectancy_negative_sparse"
        inc = incident_id(name, [crypto], _bucket(ev.last_exit, "h"))
        requests.append(
            RunRequest(
                run_key=_key("alert", name, crypto, ev.last_exit),
                job_name=alert_job.name,
                run_config=alert_run_config(
                    name, "P2", [crypto], ev.figures(), inc, ev.message(), hour
                ),
                tags={"cvn/alert": name, "cvn/severity": "P2"},
            )
        )
    return requests


# ------------------------------------------------------------------- P2 every live champion
@sensor(
    name="expectancy_negative_any",
    jobs=[alert_job],
    minimum_interval_seconds=guard_interval(300),
    default_status=DefaultSensorStatus.RUNNING,
    description="P2: net expectancy < 0 over 48 h on >= 2 live champions whatever their loss "
    "(the P1's per-crypto test: one-sided t, >= 10 trades in 48 h; stale journals stale); "
    "warn at 24 h. Watches the baseline after a rollback; never a rollback (its runbook: "
    "halt). Each tick judges every hour since the last one evaluated (at most the last 2).",
)
def expectancy_negative_any(
    context: SensorEvaluationContext, guard_clock: GuardClock, model_registry: ModelRegistry
):
    """Each tick evaluates the hour buckets after the cursor's ``evaluated_hour`` up to the
    current one (at most the last 2, oldest first: :func:`hours_to_evaluate`, as the P1), with
    :func:`sensors.evaluation.evaluate_any_expectancy`. An alarming hour requests one
    ``alert_job`` run per severity, set of losing cryptos and day (run key
    ``alert:expectancy_negative_any:<P2|warn>:<CRYPTO+CRYPTO>:<YYYY-MM-DD>``). Only alerts:
    RUNNING by default, so "halt if the cross-entropy cryptos lose too" has a signal even
    while the P1 sensor (which can flip the kill switch) is off."""
    now = guard_clock.now()
    cursor = _cursor(context)
    target = judged_through(model_registry, _bucket(now, "h"))
    hours = hours_to_evaluate(cursor.get("evaluated_hour"), target)
    if not hours:
        return SkipReason(_waiting(target, now))
    requests: list[RunRequest] = []
    lines: list[str] = []
    for hour in hours:
        ev = evaluate_any_expectancy(evaluate_expectancy(model_registry, SETTINGS.universe, hour))
        if ev.verdict.alarm:
            req = _any_alert_request(ev, hour)
            if req.run_key not in {r.run_key for r in requests}:  # caught-up hours, one day
                requests.append(req)
        lines.append(f"{hour.isoformat()}: {ev.verdict.level}: {ev.verdict.reason}")
        context.log.info(lines[-1])
    new_cursor = json.dumps({"evaluated_hour": hours[-1].isoformat()})
    if not requests:
        return SensorResult(skip_reason=SkipReason(" | ".join(lines)), cursor=new_cursor)
    return SensorResult(run_requests=requests, cursor=new_cursor)


def _any_alert_request(ev: ChampionsExpectancy, hour: datetime) -> RunRequest:
    """The P2 (``crit``) or ``warn`` alert of ``expectancy_negative_any`` for ``hour``: one
    page per severity, set of losing cryptos and UTC day (run key and incident hold the set
    and the day): a loss that persists pages again the next day, or when another champion
    joins it, not every hour (the crash drill: 5 pages after the rollback instead of 117)."""
    name = "expectancy_negative_any"
    severity = "P2" if ev.verdict.level == "crit" else "warn"
    cryptos = ev.alarming()
    day = _bucket(hour, "D")
    inc = incident_id(name, cryptos, day)
    return RunRequest(
        run_key=_key("alert", name, severity, "+".join(sorted(cryptos)), f"{day:%Y-%m-%d}"),
        job_name=alert_job.name,
        run_config=alert_run_config(
            name, severity, cryptos, ev.figures(), inc, ev.message(), hour
        ),  # fmt: skip
        tags={"cvn/alert": name, "cvn/severity": severity},
    )


# ---------------------------------------------------------------------------- P2 training crash
@sensor(
    name="focal_training_crash",
    jobs=[alert_job],
    minimum_interval_seconds=guard_interval(60),
    default_status=DefaultSensorStatus.RUNNING,
    description=f"P2: more than 5 failed runs tagged {LOSS_FUNCTION_TAG}={FOCAL} in the last hour.",
)
def focal_training_crash(context: SensorEvaluationContext, guard_clock: GuardClock):
    now = guard_clock.now()
    hour = _bucket(now, "h")
    records = context.instance.get_run_records(
        RunsFilter(
            statuses=[DagsterRunStatus.FAILURE],
            tags={LOSS_FUNCTION_TAG: FOCAL},
            updated_after=now - timedelta(hours=1),
            updated_before=now,
        ),
        limit=1000,
    )
    n = len(records)
    cursor = {"evaluated_at": now.isoformat(), "failed_last_hour": n}
    if n <= CRASH_MAX_FAILURES_PER_HOUR:
        return SensorResult(
            skip_reason=SkipReason(
                f"{n} failed focal runs in the last hour (<= {CRASH_MAX_FAILURES_PER_HOUR})"
            ),
            cursor=json.dumps(cursor),
        )
    figures = {
        "window_start": (now - timedelta(hours=1)).isoformat(),  # runs failed (updated) in
        "window_end": now.isoformat(),  # (window_start, window_end)
        "failed_runs_last_hour": n,
        "threshold": CRASH_MAX_FAILURES_PER_HOUR,
        "run_ids": ",".join(r.dagster_run.run_id[:8] for r in records[:10]),
    }
    inc = incident_id("focal_training_crash", [], hour)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=_key("alert", "focal_training_crash", hour),  # one page per hour
                job_name=alert_job.name,
                run_config=alert_run_config(
                    "focal_training_crash",
                    "P2",
                    [],
                    figures,
                    inc,
                    f"{n} failed focal training runs in the hour to {now:%Y-%m-%dT%H:%M}Z "
                    f"(> {CRASH_MAX_FAILURES_PER_HOUR}; first ids {figures['run_ids']})",
                    now,
                ),  # fmt: skip
                tags={"cvn/alert": "focal_training_crash", "cvn/severity": "P2"},
            )
        ],
        cursor=json.dumps(cursor),
    )


# ------------------------------------------------------------------------------ P2 stale journal
@sensor(
    name="guard_stale",
    jobs=[alert_job],
    minimum_interval_seconds=guard_interval(60),
    default_status=DefaultSensorStatus.RUNNING,
    description="P2: a crypto with a live champion whose journal's last hour closed more "
    "than 2 h ago (or, with no hour journaled, whose first champion went live more than 2 h "
    "ago): feed down, daemon stopped or the live run failing. One page per set of stale "
    "cryptos and clock hour.",
)
def guard_stale(
    context: SensorEvaluationContext, guard_clock: GuardClock, model_registry: ModelRegistry
):
    """At ``now``: the cryptos of the universe that have a champion and whose
    :class:`sensors.evaluation.JournalEnd` is more than 2 h behind (``now - (last_hour + 1 h)
    > 2 h``; exactly 2 h is not stale). Stale: one ``guard_stale`` P2 through ``alert_job``,
    run key ``alert:guard_stale:<cryptos joined by +>:<hour>`` (pages once per set of stale
    cryptos and clock hour: a still-stale journal pages again every hour)."""
    now = guard_clock.now()
    hour = _bucket(now, "h")
    live = [c for c in SETTINGS.universe if model_registry.alias(c, "champion") is not None]
    ends = journal_ends(model_registry, live)
    stale = {c: e for c, e in ends.items() if e.stale(now)}
    cursor = json.dumps({"evaluated_at": now.isoformat(), "stale": sorted(stale)})
    if not stale:
        behind = {c: e.lag(now) for c, e in ends.items()}
        shown = ", ".join(
            f"{c} {_hours(lag)} h" if lag is not None else f"{c} never" for c, lag in behind.items()
        )
        why = f"journals current ({shown})" if live else "no crypto has a champion"
        return SensorResult(skip_reason=SkipReason(why), cursor=cursor)
    cryptos = sorted(stale)
    inc = incident_id("guard_stale", cryptos, hour)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=_key("alert", "guard_stale", "+".join(cryptos), hour),
                job_name=alert_job.name,
                run_config=alert_run_config(
                    "guard_stale",
                    "P2",
                    cryptos,
                    stale_figures(stale, now),
                    inc,
                    stale_message(stale, now),
                    now,
                ),  # fmt: skip
                tags={"cvn/alert": "guard_stale", "cvn/severity": "P2"},
            )
        ],
        cursor=cursor,
    )


def _hours(lag: timedelta | None) -> str:
    return "-" if lag is None else f"{lag / timedelta(hours=1):.2f}"


def stale_figures(stale: dict[str, JournalEnd], now: datetime) -> dict[str, Any]:
    """Flat JSON scalars of a ``guard_stale`` alert: the evaluation time, the bound (hours)
    and, per stale crypto, its last journaled hour (ISO; None when none), the first
    champion's start when nothing is journaled, and the hours behind."""
    out: dict[str, Any] = {
        "evaluated_at": now.isoformat(),
        "stale_after_hours": STALE_AFTER / timedelta(hours=1),
        "stale_cryptos": ",".join(sorted(stale)),
    }
    for c, e in sorted(stale.items()):
        lag = e.lag(now)
        out[f"{c}_last_hour"] = e.last_hour.isoformat() if e.last_hour else None
        if e.last_hour is None:
            out[f"{c}_live_since"] = e.live_since.isoformat() if e.live_since else None
        out[f"{c}_hours_behind"] = round(lag / timedelta(hours=1), 4) if lag else None
    return out


def stale_message(stale: dict[str, JournalEnd], now: datetime) -> str:
    """One line: per stale crypto, its last journaled hour (or none since its first
    champion) and how far behind ``now`` its journal is."""
    parts = []
    for c, e in sorted(stale.items()):
        lag = e.lag(now)
        if e.last_hour is not None:
            parts.append(
                f"{c} last journaled hour {e.last_hour:%Y-%m-%dT%H}:00Z (closed "
                f"{e.last_hour + timedelta(hours=1):%H:%M}Z), {_hours(lag)} h behind"
            )
        else:
            parts.append(
                f"{c} no hour journaled since its first champion went live at "
                f"{e.live_since:%Y-%m-%dT%H:%M}Z, {_hours(lag)} h behind"
            )
    return (
        f"no new hour journaled for more than {STALE_AFTER / timedelta(hours=1):g} h at "
        f"{now:%Y-%m-%dT%H:%M}Z on {len(stale)} crypto(s): " + "; ".join(parts)
    )


# ----------------------------------------------------------------------- rollback confirmation
#: an overdue rollback still pending (its escalation run failed or never ran) is requested
#: again in the next bucket of this length
ESCALATION_RETRY = "15min"


@sensor(
    name="rollback_confirmation",
    jobs=[escalate_rollback_job],
    minimum_interval_seconds=guard_interval(60),
    default_status=DefaultSensorStatus.RUNNING,
    description="An automatic rollback not confirmed within 15 min is held (stays in force) "
    "and escalated (escalate_rollback_job); asked again every 15 min while still pending.",
)
def rollback_confirmation(
    context: SensorEvaluationContext, guard_clock: GuardClock, rollback_log: RollbackLog
):
    now = guard_clock.now()
    bucket = _bucket(now, ESCALATION_RETRY)
    requests = []
    for row in rollback_log.overdue(now):
        inc = row["incident_id"]
        if _in_flight(context, escalate_rollback_job.name, {"cvn/incident": inc}):
            context.log.info(f"{inc}: an escalation run is in flight")
            continue
        requests.append(
            RunRequest(
                # one per incident and bucket: a failed escalation run is asked again (a key
                # without a bucket is deduped for ever and would silence the escalation)
                run_key=_minute_key("escalation", inc, bucket),
                job_name=escalate_rollback_job.name,
                run_config={"ops": {"escalate_rollback": {"config": {"incident_id": inc}}}},
                tags={
                    "cvn/incident": inc,
                    "cvn/severity": "P1",
                    "dagster/priority": RESPONSE_PRIORITY,
                },
            )
        )
    cursor = json.dumps({"evaluated_at": now.isoformat()})
    if not requests:
        return SensorResult(skip_reason=SkipReason("no overdue rollback"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


# ----------------------------------------------------------------------------- alert delivery
#: failed deliveries named in the sensor's skip reason for this long after they gave up
FAILED_SHOWN_FOR = timedelta(days=7)


@sensor(
    name="alert_delivery",
    jobs=[alert_delivery_job],
    minimum_interval_seconds=guard_interval(60),
    default_status=DefaultSensorStatus.RUNNING,
    description="Retries the delivery of recorded alerts that are due (alert_delivery_job); "
    "its skip reason names the alerts pending and those whose delivery gave up.",
)
def alert_delivery(
    context: SensorEvaluationContext, guard_clock: GuardClock, alert_sink: AlertSink
):
    now = guard_clock.now()
    minute = _bucket(now, "min")
    due = alert_sink.due(now)
    status = delivery_status(alert_sink, now)
    cursor = json.dumps({"evaluated_at": now.isoformat()})
    if status["failed"]:
        context.log.error(f"alert delivery gave up: {status['failed']}")
    if not due:
        return SensorResult(skip_reason=SkipReason(status["line"]), cursor=cursor)
    if _in_flight(context, alert_delivery_job.name):
        return SensorResult(
            skip_reason=SkipReason(f"an alert_delivery_job run is in flight; {status['line']}"),
            cursor=cursor,
        )
    keys = [alert_key(r["name"], r["incident_id"]) for r in due]
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=_minute_key("alert_delivery", minute),
                job_name=alert_delivery_job.name,
                run_config={"ops": {"deliver_alerts": {"config": {"alerts": keys}}}},
                tags={"cvn/guard": "alert_delivery"},
            )
        ],
        cursor=cursor,
    )


def delivery_status(alert_sink: AlertSink, now: datetime) -> dict[str, Any]:
    """``{"pending": [...], "failed": [...], "line": str}``: the keys of the pending alerts
    (with their next attempt) and of those whose delivery gave up within
    :data:`FAILED_SHOWN_FOR`, and one line for the sensor's skip reason."""
    pending = alert_sink.rows(("pending",))
    failed = [
        r
        for r in alert_sink.rows(("failed",))
        if r["failed_at"] is not None and r["failed_at"] >= now - FAILED_SHOWN_FOR
    ]
    pend = [
        f"{alert_key(r['name'], r['incident_id'])} (attempts {r['attempts']}, next "
        f"{r['next_attempt_at'].isoformat() if r['next_attempt_at'] else '-'})"
        for r in pending
    ]
    fail = [
        f"{alert_key(r['name'], r['incident_id'])} (gave up {r['failed_at'].isoformat()} after "
        f"{r['attempts']} attempts: {r['last_error']})"
        for r in failed
    ]
    line = f"{len(pend)} alert(s) pending delivery" + (f": {'; '.join(pend[:5])}" if pend else "")
    if fail:
        line = f"DELIVERY FAILED for {len(fail)} alert(s): {'; '.join(fail[:5])}; " + line
    return {"pending": pend, "failed": fail, "line": line[:1500]}


# ------------------------------------------------------------------------------------ drift
DRIFT_RUNBOOK_NAMES = ("data_drift", "concept_drift", "output_sharpness", "data_integrity")


def build_model_drift_sensor(champion_job: Any) -> Any:
    """The ``model_drift`` sensor; ``champion_job`` (defined with the assets) is what a
    sharpness revert launches."""

    @sensor(
        name="model_drift",
        jobs=[alert_job, shadow_retrain_job, champion_job],
        minimum_interval_seconds=guard_interval(600),
        default_status=DefaultSensorStatus.STOPPED,
        description="Hourly per crypto: data integrity (last 6 h of the top features: "
        "missing, stuck, out of range, or not what the candles give: recomputed from "
        "market_data). Daily per crypto: data drift (window-shape PSI of the "
        "non-calendar top-5 features, 7 d), concept drift (f1_buy gap, 14 d matured labels), "
        "output sharpness (7 d, focal champions). Crit drift: shadow retrain; 2 consecutive "
        "sharpness triggers: revert to the baseline.",
    )
    def model_drift(
        context: SensorEvaluationContext,
        guard_clock: GuardClock,
        model_registry: ModelRegistry,
        market_data: MarketDataResource,
    ):
        return evaluate_model_drift(context, guard_clock.now(), model_registry, market_data)

    return model_drift


def evaluate_model_drift(
    context: SensorEvaluationContext,
    now: datetime,
    model_registry: ModelRegistry,
    market_data: Any = None,
) -> Any:
    """One tick of ``model_drift`` at ``now`` (the sensor body); ``market_data`` (the resource)
    lets ``data_integrity`` compare the journaled features with their recomputation."""
    day, hour = _bucket(now, "D"), _bucket(now, "h")
    cursor = _cursor(context)
    new_day = not (cursor.get("evaluated_day") and pd.Timestamp(cursor["evaluated_day"]) >= day)
    if (
        not new_day
        and cursor.get("evaluated_hour")
        and pd.Timestamp(cursor["evaluated_hour"]) >= hour
    ):
        return SkipReason(f"day {day.date()} already evaluated (and the hour's integrity)")
    requests = integrity_requests(model_registry, hour, market_data)
    if not new_day:
        cursor["evaluated_hour"] = hour.isoformat()
        return SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor),
            skip_reason=None if requests else SkipReason(f"{hour:%Y-%m-%dT%H}: integrity ok"),
        )
    sharp = dict(cursor.get("sharpness", {}))
    summary = {}
    for crypto in SETTINGS.universe:
        ev = evaluate_drift(model_registry, crypto, day)
        if ev is None:
            continue
        summary[crypto] = {k: v.level for k, v in ev.items()}
        requests += drift_alert_requests(ev)
        state = SharpnessState(int(sharp.get(crypto, 0))).update(ev["output_sharpness"])
        sharp[crypto] = state.consecutive
        if state.revert:
            requests.append(
                revert_to_baseline_request(crypto, day, state.consecutive, ev.min_trade_share)
            )
            sharp[crypto] = 0
    context.log.info(f"{day.date()}: {summary}")
    new_cursor = json.dumps(
        {"evaluated_day": day.isoformat(), "evaluated_hour": hour.isoformat(), "sharpness": sharp}
    )
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(f"{day.date()}: no drift alarm {summary}"), cursor=new_cursor
        )
    return SensorResult(run_requests=requests, cursor=new_cursor)


def integrity_requests(
    model_registry: ModelRegistry, hour: datetime, market_data: Any = None
) -> list[RunRequest]:
    """``data_integrity`` (issue 23) every hour per crypto: one alert per broken crypto and
    UTC day (its run key; a break lasting hours pages once a day), never a retrain (a model
    retrained on a broken feed learns the break)."""
    requests = []
    for crypto in SETTINGS.universe:
        ev = evaluate_integrity(model_registry, crypto, hour, market_data)
        if ev is None or not ev["data_integrity"].alarm:
            continue
        v, day = ev["data_integrity"], _bucket(hour, "D")
        inc = incident_id("data_integrity", [crypto], day)
        requests.append(
            RunRequest(
                run_key=_key("alert", "data_integrity", crypto, day),
                job_name=alert_job.name,
                run_config=alert_run_config(
                    "data_integrity",
                    v.level,
                    [crypto],
                    ev.figures("data_integrity"),
                    inc,
                    ev.message("data_integrity"),
                    hour,
                ),  # fmt: skip
                tags={"cvn/alert": "data_integrity", "cvn/severity": v.level},
            )
        )
    return requests


def drift_alert_requests(ev: DriftEvaluation) -> list[RunRequest]:
    """One alert per alarming detector of ``ev`` (figures and message from the rows it used),
    and at most one shadow retrain for the crypto-day, naming every crit detector."""
    requests = []
    crit: list[tuple[str, str]] = []
    for name, v in ev.items():
        if not v.alarm:
            continue
        inc = incident_id(name, [ev.crypto], ev.as_of)
        requests.append(
            RunRequest(
                run_key=_key("alert", name, ev.crypto, ev.as_of),
                job_name=alert_job.name,
                run_config=alert_run_config(
                    name, v.level, [ev.crypto], ev.figures(name), inc, ev.message(name), ev.as_of
                ),
                tags={"cvn/alert": name, "cvn/severity": v.level},
            )
        )
        if name in ("data_drift", "concept_drift") and v.level == "crit":
            crit.append((name, v.reason))
    if crit:
        names = [n for n, _ in crit]
        inc = incident_id(names[0], [ev.crypto], ev.as_of)
        why = "; ".join(f"{n} crit: {r}" for n, r in crit)
        requests.append(shadow_retrain_request(ev.crypto, names, inc, ev.as_of, why))
    return requests


def shadow_retrain_request(
    crypto: str, detectors: list[str], inc: str, day: datetime, why: str
) -> RunRequest:
    """One ``shadow_retrain_job`` run per crypto-day (its run key), naming every crit
    detector in its reason and tags."""
    return RunRequest(
        run_key=_key("shadow_retrain", crypto, day),
        job_name="shadow_retrain_job",
        run_config={
            "ops": {
                "shadow_retrain": {
                    "config": {
                        "crypto": crypto,
                        "actor": "sensor:model_drift",
                        "reason": why,
                        "incident_id": inc,
                        "through": day.isoformat(),
                    }
                }
            }
        },
        tags={"cvn/incident": inc, "cvn/detectors": ",".join(detectors)},
    )


def revert_to_baseline_request(
    crypto: str, day: datetime, consecutive: int, min_trade_share: float | None = None
) -> RunRequest:
    """``champion_job`` for ``crypto`` with the baseline variant (audited override), at the
    live champion's trading share (``min_trade_share``; None: champion_models' default)."""
    share = {} if min_trade_share is None else {"min_trade_share": float(min_trade_share)}
    baseline = next(v for v in SETTINGS.variants if v.loss_function == CROSS_ENTROPY)
    return RunRequest(
        run_key=_key("revert_baseline", crypto, day),
        job_name="champion_job",
        partition_key=crypto,
        run_config={
            "ops": {
                "champion_models": {
                    "config": {
                        "override_variant": baseline.name,
                        "force_promote": True,
                        "actor": "sensor:model_drift",
                        "reason": f"output sharpness: {consecutive} consecutive triggers: "
                        "revert to the baseline (spec 6.3)",
                        **share,
                    }
                }
            }
        },
        tags={"cvn/incident": incident_id("output_sharpness", [crypto], day)},
    )


#: the sensors that need nothing from the asset definitions (``model_drift`` is built there)
GUARD_SENSORS = [
    expectancy_negative_focal,
    expectancy_negative_any,
    focal_training_crash,
    guard_stale,
    rollback_confirmation,
    alert_delivery,
]
