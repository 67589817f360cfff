"""What the live drill watches (:mod:`cvn_assets.live_drill`): it reads, never acts.

:class:`Watcher` reads the Dagster instance (the runs the daemon launched, with their tags and
run config; the sensors' ticks) and the results database (the journal's hours per crypto,
the kill-switch flag, the champions) of a drill's home. :func:`passed_checks` states the
scenario's checks on what it read.
"""

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.scheduler.instigation import InstigatorType

from cvn_assets.ablation.guardrails import CROSS_ENTROPY, FOCAL
from cvn_assets.drill_setup import P1_RULE, hours_since
from cvn_assets.guard.clock import AcceleratedClock
from resources.config_store import LOSS_FLAG, ConfigStore
from resources.journal import predictions_table, trades_table
from resources.model_registry import ModelRegistry

IN_FLIGHT = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
}


@dataclass
class State:
    """One reading of the drill's home."""

    wall: datetime
    market: datetime
    runs: list[Any]  # DagsterRun, newest first
    journal: dict[str, dict[str, Any]]  # crypto -> hours, last hour, trades
    flag: str
    champions: dict[str, str | None]
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def of(self, job: str, status: DagsterRunStatus | None = None) -> list[Any]:
        """The runs of ``job`` (with ``status``), oldest first."""
        return [
            r for r in reversed(self.runs)
            if r.job_name == job and (status is None or r.status == status)
        ]  # fmt: skip

    @property
    def p1(self) -> list[dict[str, Any]]:
        """The successful P1 alert runs of the expectancy rule, by market time."""
        return [
            a for a in self.alerts
            if a["name"] == P1_RULE and a["severity"] == "P1" and a["status"] == "SUCCESS"
        ]  # fmt: skip

    @property
    def auto_rollbacks(self) -> list[Any]:
        """``rollback_job`` runs launched by the expectancy sensor."""
        return [r for r in self.of("rollback_job") if r.tags.get("dagster/sensor_name") == P1_RULE]


def _alert(run: Any) -> dict[str, Any]:
    c = run.run_config.get("ops", {}).get("send_alert", {}).get("config", {})
    return {
        "name": c.get("name"),
        "severity": c.get("severity"),
        "cryptos": c.get("cryptos"),
        "at": c.get("at"),
        "status": run.status.value,
    }


def _key_time(run: Any) -> str | None:
    """The market time at the end of a run's run key (``...:2026-01-01T13`` or
    ``...:2026-01-01T1315``), ISO; None without one."""
    m = re.search(r"(\d{4}-\d{2}-\d{2})T(\d{2})(\d{2})?$", run.tags.get("dagster/run_key", ""))
    if m is None:
        return None
    day, hour, minute = m.groups()
    return pd.Timestamp(f"{day}T{hour}:{minute or '00'}", tz="UTC").isoformat()


def journaled_through(s: State, end: pd.Timestamp) -> bool:
    """Every crypto journaled up to the hour closing at ``end`` (its ``hour`` is the open
    time of the candle the decision follows: ``end - 1 h``)."""
    last = [j["last_hour"] for j in s.journal.values()]
    return all(h is not None and pd.Timestamp(h) >= end - pd.Timedelta(hours=1) for h in last)


class Watcher:
    """Reads a live drill's home: ``cryptos``, their ``baseline`` variant, the journal from
    ``first_day``, and the guard ``clock`` the daemon runs on."""

    def __init__(
        self,
        home: Path,
        cryptos: list[str],
        baseline: str,
        first_day: pd.Timestamp,
        clock: AcceleratedClock | None,
    ) -> None:
        self.instance = DagsterInstance.from_config(str(home))
        self.cryptos, self.baseline, self.first_day, self.clock = (
            cryptos, baseline, first_day, clock
        )  # fmt: skip
        self.registry, self.config_store = ModelRegistry(), ConfigStore()
        self._printed = (0.0, "")
        self.stopping_at = float("inf")

    def _journal(self) -> dict[str, dict[str, Any]]:
        p, t = predictions_table, trades_table
        since = self.first_day.to_pydatetime()
        with self.registry.engine.connect() as conn:
            hours = conn.execute(
                sa.select(p.c.crypto, sa.func.count(), sa.func.max(p.c.hour))
                .where(p.c.hour >= since)
                .group_by(p.c.crypto)
            ).all()
            trades = dict(
                conn.execute(
                    sa.select(t.c.crypto, sa.func.count())
                    .where(t.c.exit_time >= since)
                    .group_by(t.c.crypto)
                ).all()
            )
        got = {c: (n, last) for c, n, last in hours}
        return {
            c: {
                "hours": int(got.get(c, (0, None))[0]),
                "last_hour": None if c not in got else pd.Timestamp(got[c][1]).isoformat(),
                "trades": int(trades.get(c, 0)),
            }
            for c in self.cryptos
        }

    def poll(self) -> State:
        wall = datetime.now(UTC)
        runs = [r.dagster_run for r in self.instance.get_run_records(limit=5000)]
        state = State(
            wall=wall,
            market=self.clock.at(wall) if self.clock else wall,
            runs=runs,
            journal=self._journal(),
            flag=self.config_store.get(LOSS_FLAG)[0],
            champions={
                c: (self.registry.alias(c, "champion") or {}).get("variant") for c in self.cryptos
            },
        )
        state.alerts = [_alert(r) for r in state.of("alert_job")]
        state.alerts.sort(key=lambda a: a["at"] or "")
        return state

    # ------------------------------------------------------------------ the chain
    def chain_complete(self, s: State) -> bool:
        """crash: hours journaled, two P1s, the automatic rollback run succeeded, the flag
        flipped, every champion the baseline, an escalation run succeeded."""
        ok = DagsterRunStatus.SUCCESS
        return (
            all(j["hours"] > 0 for j in s.journal.values())
            and len(s.p1) >= 2
            and any(r.status == ok for r in s.auto_rollbacks)
            and s.flag == CROSS_ENTROPY
            and all(v == self.baseline for v in s.champions.values())
            and bool(s.of("escalate_rollback_job", ok))
        )

    def progress_line(self, s: State, every_s: float = 15.0) -> str | None:
        """A status line when an event of the chain happened (an alert, a rollback run's
        status, the flag, a champion, an escalation, a failed run) or every ``every_s``
        seconds, else None."""
        last = [j["last_hour"] for j in s.journal.values()]
        journaled = min((h for h in last if h), default=None)
        flight = sum(r.status in IN_FLIGHT for r in s.runs)
        failed = len([r for r in s.runs if r.status == DagsterRunStatus.FAILURE])
        events = (
            f"alerts {len(s.alerts)} (P1 {len(s.p1)}) | rollback "
            f"{[r.status.value for r in s.auto_rollbacks] or '-'} | flag {s.flag} | "
            f"baseline champions {sum(v == self.baseline for v in s.champions.values())}/"
            f"{len(s.champions)} | escalations {len(s.of('escalate_rollback_job'))} | "
            f"failed runs {failed}"
        )
        now = s.wall.timestamp()
        if events == self._printed[1] and now - self._printed[0] < every_s:
            return None
        self._printed = (now, events)
        hours = sum(j["hours"] for j in s.journal.values())
        trades = sum(j["trades"] for j in s.journal.values())
        return (
            f"[{s.wall:%H:%M:%S}] market {s.market:%Y-%m-%d %H:%M} | journaled to "
            f"{journaled or '-'} ({hours} h, {trades} trades) | {events} | runs {len(s.runs)} "
            f"({flight} queued/running)"
        )

    # ------------------------------------------------------------------ the summary
    def ticks(self) -> dict[str, dict[str, int]]:
        """Per sensor: the daemon's ticks by status (from the instance's tick storage); a
        tick that failed once the drill was stopping ``dagster dev`` (the code server goes
        first: "Location ... does not exist") counts as ``FAILURE_DURING_STOP``."""
        out: dict[str, dict[str, int]] = {}
        for st in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            ticks = self.instance.get_ticks(st.instigator_origin_id, st.selector_id)
            counts = Counter(
                "FAILURE_DURING_STOP"
                if t.status.value == "FAILURE" and t.timestamp >= self.stopping_at
                else t.status.value
                for t in ticks
            )
            out[st.instigator_name] = {"total": len(ticks), **dict(sorted(counts.items()))}
        return dict(sorted(out.items()))

    def mark_stop(self) -> dict[str, str]:
        """Note that ``dagster dev`` is being stopped now; returns run id -> job of the runs
        queued or running (the stop ends them: not failures). Empty if the instance cannot
        be read."""
        self.stopping_at = time.time()
        try:
            recs = self.instance.get_run_records(RunsFilter(statuses=list(IN_FLIGHT)))
        except Exception:  # the summary reports what it can
            return {}
        return {r.dagster_run.run_id: r.dagster_run.job_name for r in recs}

    def failures(self, s: State, skip: set[str], n: int = 10) -> list[dict[str, str]]:
        """The first ``n`` failed runs not in ``skip``: job, run id and the last line of their
        first error."""
        out = []
        failed = [r for r in reversed(s.runs) if r.status == DagsterRunStatus.FAILURE]
        for r in [r for r in failed if r.run_id not in skip][:n]:
            msg = ""
            for ev in self.instance.all_logs(r.run_id):
                data = ev.dagster_event.event_specific_data if ev.dagster_event else None
                if getattr(data, "error", None) is not None:
                    msg = data.error.message.strip().splitlines()[-1]
                    break
            out.append({"job": r.job_name, "run_id": r.run_id, "error": msg[:300]})
        return out

    def summary(
        self, s: State, scenario: str, turn: pd.Timestamp, ended_by_stop: dict[str, str]
    ) -> dict[str, Any]:
        """The JSON summary of what was read (``ended_by_stop``: the runs in flight when
        the drill stopped ``dagster dev``, reported apart from the failures)."""
        runs = Counter(f"{r.job_name}:{r.status.value}" for r in s.runs)
        out: dict[str, Any] = {
            "scenario": scenario,
            "alerts": s.alerts,
            "rollback_runs": len(s.auto_rollbacks),
            "loss_function": s.flag,
            "champions": s.champions,
            "journal": s.journal,
            "hours_journaled": {c: j["hours"] for c, j in s.journal.items()},
            "escalations": [
                {"status": r.status.value, "at": _key_time(r)}
                for r in s.of("escalate_rollback_job")
            ],
            "sensor_ticks": self.ticks(),
            "runs": dict(sorted(runs.items())),
            "failed_runs": self.failures(s, set(ended_by_stop)),
            "in_flight_at_stop": sorted(ended_by_stop.values()),
            "turn": turn.isoformat(),
            "market_time_at_stop": s.market.isoformat(),
            "audit_rows": len(self.config_store.audit(LOSS_FLAG)),
        }
        if s.p1:
            out["hours_turn_to_first_p1"] = hours_since(turn, s.p1[0]["at"])
        rb = [_key_time(r) for r in s.auto_rollbacks]
        if rb and rb[0]:
            out["hours_turn_to_rollback"] = hours_since(turn, rb[0])
        return out


def passed_checks(
    scenario: str,
    s: State,
    summary: dict[str, Any],
    turn: pd.Timestamp,
    baseline: str,
    calm_end: pd.Timestamp,
) -> dict[str, bool]:
    """The scenario's checks, by name (all must hold).

    crash: every crypto journaled; >= 2 P1s, the first at or after the turn; exactly one
    rollback run, by the sensor, succeeded; the flag cross-entropy; every champion the
    ``baseline``; an escalation run succeeded. calm: every crypto journaled through the hour
    closing at ``calm_end``; no P1; no rollback; the flag still focal."""
    ok = DagsterRunStatus.SUCCESS
    if scenario == "crash":
        return {
            "hours_journaled": all(j["hours"] > 0 for j in s.journal.values()),
            "p1_twice_after_turn": len(s.p1) >= 2 and pd.Timestamp(s.p1[0]["at"]) >= turn,
            "one_auto_rollback": [r.status for r in s.auto_rollbacks] == [ok],
            "flag_flipped": s.flag == CROSS_ENTROPY,
            "champions_repromoted": all(v == baseline for v in s.champions.values()),
            "escalated": any(e["status"] == ok.value for e in summary["escalations"]),
        }
    return {
        "calm_window_journaled": journaled_through(s, calm_end),
        "no_p1": not [a for a in s.alerts if a["name"] == P1_RULE and a["severity"] == "P1"],
        "no_rollback": not s.of("rollback_job"),
        "flag_unchanged": s.flag == FOCAL,
    }
