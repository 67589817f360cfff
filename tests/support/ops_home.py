"""A drill-like home built in about a second, for the operator command and the docs' commands:
the state a crash drill leaves after its automatic rollback, written by hand (no sweep).

At the fixed guard clock ``now`` (``H + 10 min``, ``H`` an hour two hours before the wall clock):

* sweep ``default`` registered; ``BTCUSDC`` and ``ETHUSDC``: a baseline champion promoted at
  ``H - 5 d``, replaced by a focal one at ``H - 3 d`` (previous = baseline), each with 12
  losing trades exiting every 2 h up to ``H`` (the P1's hour) and a journal to ``H - 1 h``;
  ``BTCUSDC`` also has a cross-entropy candidate; ``SOLUSDC``: a baseline champion whose
  journal stops at ``H - 10 h`` (stale); ``BNBUSDC``, ``XRPUSDC``: nothing;
* an automatic rollback (``rollback_job``, trigger ``auto``) at ``H`` (as the drill's, at the
  second P1's hour): the loss flag is ``binary:logistic``, both focal champions rolled back to
  the baseline, the incident pending until ``H + 15 min``, its ``rollback`` alert recorded;
* two more alerts: the P1 ``expectancy_negative_focal`` at ``H`` (delivery ``none``) and a
  ``guard_stale`` P2 on ``SOLUSDC`` whose delivery ``failed`` (set by hand);
* a ``flags_unreadable`` live event on ``SOLUSDC`` (hours ``H - 12 h .. H - 11 h``).

:func:`build_home` returns the truth the tests compare the command's output with.
"""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cvn_assets.ablation.identity import SweepIdentity
from resources.alert_store import alerts_table
from resources.alerts import Alert, AlertSink, incident_id
from resources.instance_storage import default_instance_yaml
from resources.journal import replace_days
from resources.live_state import record_event_in
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from tests.support.journal_hours import journal_hours

FOCAL_CRYPTOS = ("BTCUSDC", "ETHUSDC")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _version(reg: ModelRegistry, crypto: str, variant: str, at: datetime) -> int:
    focal = variant.startswith("focal")
    return reg.register_version(
        crypto, variant, loss_function="focal" if focal else "binary:logistic",
        gamma=2.0 if focal else None, alpha=0.25 if focal else None,
        train_start=datetime(2025, 1, 1, tzinfo=UTC), train_end=at - timedelta(days=1),
        sweep_id="default", artifact_uri=f"file:///x/{crypto}/{variant}/{at:%s}",
        reference_stats={},
    )  # fmt: skip


def _trades(engine: sa.Engine, crypto: str, version: int, end: datetime, seed: int) -> list:
    """12 trades exiting every 2 h up to ``end``, net ~ -0.4 % +- 0.1 %."""
    rng = np.random.default_rng(seed)
    exits = [end - timedelta(hours=2 * i) for i in range(12)][::-1]
    net = -0.004 + 0.001 * rng.standard_normal(12)
    frame = pd.DataFrame(
        {
            "crypto": crypto, "entry_time": [e - timedelta(hours=1) for e in exits],
            "entry_price": 100.0, "exit_time": exits, "exit_price": 100.0 * (1 + net + 0.002),
            "barrier": "sl", "gross_return": net + 0.002, "net_return": net,
            "model_version": version, "loss_function": "focal",
        }
    )  # fmt: skip
    days = sorted({pd.Timestamp(e).normalize() for e in exits})
    replace_days(engine, crypto, days, None, frame)
    return [float(x) for x in net]


def _alerts(hour: datetime) -> dict[str, str]:
    """The P1 at ``hour`` and a failed ``guard_stale`` P2; their incident ids."""
    sink = AlertSink()
    p1 = incident_id("expectancy_negative_focal", list(FOCAL_CRYPTOS), hour)
    stale = incident_id("guard_stale", ["SOLUSDC"], hour)
    for name, sev, cryptos, inc in (
        ("expectancy_negative_focal", "P1", FOCAL_CRYPTOS, p1),
        ("guard_stale", "P2", ("SOLUSDC",), stale),
    ):
        sink.record(
            Alert(name=name, severity=sev, cryptos=cryptos, figures={}, incident_id=inc,
                  runbook="runbooks/README.md", at=hour, message=f"{name} (test home)"),
            now=hour,
        )  # fmt: skip
    with sink.engine.begin() as conn:
        conn.execute(
            alerts_table.update()
            .where(alerts_table.c.incident_id == stale)
            .values(
                delivery_state="failed",
                attempts=12,
                last_error="HTTP 404 (no_service)",
                channel="slack",
                failed_at=hour,
            )  # fmt: skip
        )
    return {"p1": p1, "stale": stale}


def build_home(home: Path, instance: Any = None) -> dict[str, Any]:
    """Build the home in ``home`` (the caller has set ``DAGSTER_HOME`` to it and unset
    ``CVN_DATABASE_URL`` / ``CVN_ALERTS_PATH``); returns the truth: ``now``, ``hour`` (H),
    ``ids`` ({crypto: {"baseline", "focal", "candidate"}}), ``nets`` (the trades' net
    returns), ``rollback`` (its incident id), ``alerts`` (incident ids)."""
    from dagster import DagsterInstance

    from cvn_assets.definitions import defs

    assert os.environ["DAGSTER_HOME"] == str(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(default_instance_yaml(str(home)))
    hour = pd.Timestamp.now(tz="UTC").floor("h").to_pydatetime() - timedelta(hours=2)
    now = hour + timedelta(minutes=10)
    ResultsStore().register_sweep(
        "default", SweepIdentity({"eta": 0.05}, {"universe": ["BTCUSDC"]}, {"source": "x"}, {})
    )
    reg = ModelRegistry()
    ids: dict[str, dict[str, int]] = {}
    nets: dict[str, list[float]] = {}
    for k, crypto in enumerate((*FOCAL_CRYPTOS, "SOLUSDC")):
        base = _version(reg, crypto, "baseline", hour - timedelta(days=5))
        reg.promote(crypto, base, actor="drill", reason="baseline", at=hour - timedelta(days=5))
        ids[crypto] = {"baseline": base}
        if crypto == "SOLUSDC":
            journal_hours(
                reg.url, crypto, base, hour - timedelta(hours=12), hour - timedelta(hours=10)
            )
            continue
        focal = _version(reg, crypto, "focal_g2_a025", hour - timedelta(days=3))
        reg.promote(crypto, focal, actor="drill", reason="focal", at=hour - timedelta(days=3))
        ids[crypto]["focal"] = focal
        nets[crypto] = _trades(reg.engine, crypto, focal, hour, seed=k)
        journal_hours(reg.url, crypto, focal, hour - timedelta(hours=6), hour - timedelta(hours=1))
    with reg.engine.begin() as conn:  # the live loop could not read the flags for 2 hours
        record_event_in(
            conn, "SOLUSDC", hour - timedelta(hours=12), hour - timedelta(hours=11),
            "flags_unreadable", "OperationalError: no such table: ftf_config",
            now=hour - timedelta(hours=10), run_id=None,
        )  # fmt: skip
    cand = _version(reg, "BTCUSDC", "baseline", hour - timedelta(days=1))
    reg.set_alias("BTCUSDC", "candidate", cand, actor="drill", reason="shadow", at=hour)
    ids["BTCUSDC"]["candidate"] = cand
    alerts = _alerts(hour)
    rollback = incident_id("rollback", list(FOCAL_CRYPTOS), hour)
    rc = {
        **QUIET,
        "ops": {"rollback": {"config": {"actor": "guard", "reason": "two P1s within 1 h",
                                        "incident_id": rollback, "trigger": "auto"}}},
        "resources": {"guard_clock": {"config": {"fixed_now": hour.isoformat()}}},
    }  # fmt: skip
    res = defs.resolve_job_def("rollback_job").execute_in_process(
        run_config=rc, instance=instance or DagsterInstance.get()
    )
    assert res.success
    return {"now": now, "hour": hour, "ids": ids, "nets": nets, "rollback": rollback,
            "alerts": alerts}  # fmt: skip
