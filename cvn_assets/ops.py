"""The guard's operator command: what an on-call engineer reads and does, in one place.

``python -m cvn_assets.ops <command>`` (``make ops OPS_ARGS="<command> ..."``), on the home of
``$DAGSTER_HOME`` (default ``./.dagster_home``) and the results store the resources resolve
(``$CVN_DATABASE_URL``, else SQLite under the home). Read commands (nothing is written):

- ``status``: one screen: the kill-switch flags with their last change, per crypto the
  champion (version, variant, loss) and candidate, the last journaled hour and the closed hours
  it is behind the guard clock, the open rollback incidents with their confirm deadline, the
  undelivered alerts;
- ``alerts [--since ISO] [--state S ...] [--name RULE] [--limit N]``: the recorded alerts;
- ``audit [--flag NAME] [--limit N]``: the kill-switch audit (``config_audit``);
- ``models [--crypto C] [--history N]``: champion / previous / candidate, the alias history;
- ``trades --crypto C [--end ISO] [--hours 48]``: the trades exiting in the window, their mean;
- ``events [--crypto C]``: the live loop's events (``live_events``: e.g. flags unreadable);
- ``evaluate [--as-of ISO] [--champions-at ISO | --before-rollback [INCIDENT]]``: the
  expectancy P1 rule as the sensor evaluates it at the hour of ``--as-of``; after a rollback
  the champions live at that hour are the rolled-back ones ("focal not active"), so
  ``--before-rollback`` judges the champions that were live just before the rollback.

Actions go through the guard's Dagster jobs (``sensors/jobs.py``), executed in this process on
the home's instance (``DagsterInstance.get()``): each is an audited run that the UI lists, tagged
``cvn/ops=<command>``:

- ``rollback --actor --reason [--incident-id] [--cryptos C ...]`` (``rollback_job``, manual);
- ``halt`` / ``resume --actor --reason [--incident-id] [--effective-at ISO]``
  (``halt_trading_job`` / ``resume_trading_job``);
- ``confirm --actor --reason [--incident-id]`` (``confirm_rollback_job``; without an id: the
  one open incident, refused when there are none or several);
- ``promote --crypto --actor --reason [--incident-id]`` (``promote_candidate_job``);
- ``retrain --crypto --actor --reason [--incident-id] [--through ISO]`` (``shadow_retrain_job``);
- ``deliver [NAME:INCIDENT ...]`` (``alert_delivery_job``: the due alerts, or those named).

Every value is checked before any run exists: a bad one ends the command with one line on
stderr naming the option and the value, exit status 2, nothing written. A placeholder such as
``<INCIDENT_ID>`` (anything with ``<`` or ``>``) is refused, so a runbook example cannot be
pasted into the audit as written. A job that fails prints its innermost cause in one line
(exit status 1). ``--json`` prints the same content as JSON.
"""

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

from cvn_assets.settings import SettingsError

_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")  # resources.alerts' rule
DELIVERY_STATES = ("none", "pending", "delivered", "failed")


class Refusal(Exception):
    """A bad input: one line naming the option and the value (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (exit status 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


# ------------------------------------------------------------------------- validation
def _text(option: str, value: str | None, *, required: bool = True) -> str:
    """``value`` stripped; Refusal for an empty required one or a ``<placeholder>``."""
    v = (value or "").strip()
    if required and not v:
        raise Refusal(f"{option}: must not be empty, got {value!r}")
    if "<" in v or ">" in v:
        raise Refusal(f"{option}: {value!r} is a placeholder: write the real value")
    return v


def _incident(value: str | None) -> str:
    v = _text("--incident-id", value, required=False)
    if v and not _INCIDENT_RE.match(v):
        raise Refusal(
            f"--incident-id: {value!r} is not an incident id (letters, digits, _.:+- ; "
            "at most 128; e.g. the incident_id of `ops alerts`)"
        )
    return v


def _time(option: str, value: str) -> datetime:
    from resources.db import utc_param

    try:
        return utc_param(option, value)
    except ValueError as exc:
        raise Refusal(str(exc)) from None


def _not_future(option: str, when: datetime) -> datetime:
    from resources.db import utc_now

    if when > utc_now() + timedelta(seconds=1):
        raise Refusal(f"{option}: {when.isoformat()} is in the future")
    return when


def _crypto(value: str, universe: Sequence[str], option: str = "--crypto") -> str:
    if value not in universe:
        raise Refusal(f"{option}: {value!r} is not in the universe {','.join(universe)}")
    return value


def _who(args: argparse.Namespace) -> dict[str, str]:
    return {
        "actor": _text("--actor", args.actor),
        "reason": _text("--reason", args.reason),
        "incident_id": _incident(args.incident_id),
    }


# ------------------------------------------------------------------------------ reading
def _universe() -> tuple[str, ...]:
    from cvn_assets.partitions import SETTINGS  # loads CVN_* (SettingsError: one line)

    return tuple(SETTINGS.universe)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def status_view() -> dict[str, Any]:
    """What ``status`` shows: ``{"now", "dagster_home", "results", "flags", "cryptos",
    "rollbacks_open", "alerts_undelivered"}`` (the rows of :mod:`cvn_assets.guard.state`, each
    crypto with ``stale``: its journal ends more than 2 h before now, the ``guard_stale``
    rule; rollbacks ``pending`` / ``held``; alerts ``pending`` / ``failed``)."""
    from cvn_assets.assets.guard_state import FLAGS, read_flags, read_rows
    from resources.alerts import AlertSink
    from resources.config_store import ConfigStore
    from resources.guard_clock import GuardClock
    from resources.home_source import home_dir
    from resources.model_registry import ModelRegistry
    from resources.rollbacks import RollbackLog
    from sensors.evaluation import journal_ends

    now = GuardClock().now()
    store, registry = ConfigStore(), ModelRegistry()
    flags = read_flags(store)
    rows = read_rows(registry, _universe(), now)
    ends = journal_ends(registry, [r["crypto"] for r in rows if r["champion"] is not None])
    for r in rows:  # the guard_stale sensor's rule: the journal ends > 2 h before now
        r["stale"] = r["crypto"] in ends and ends[r["crypto"]].stale(now)
    return {
        "now": now,
        "dagster_home": str(home_dir()),
        "results": store.url_redacted,
        "flags": [flags[f] for f in FLAGS],
        "cryptos": rows,
        "rollbacks_open": [r for r in RollbackLog().all() if r["state"] in ("pending", "held")],
        "alerts_undelivered": AlertSink().rows(("pending", "failed")),
    }


def _cmd_status(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import status_text

    view = status_view()
    _emit(args, view, status_text)
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import alerts_text
    from resources.alerts import AlertSink

    since = _time("--since", args.since) if args.since else None
    rows = AlertSink().rows(tuple(args.state) if args.state else None)
    rows = [
        r
        for r in rows
        if (since is None or r["at"] >= since) and (not args.name or r["name"] == args.name)
    ][-args.limit :]
    _emit(args, rows, alerts_text)
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import audit_text
    from resources.config_store import FLAGS, ConfigStore

    if args.flag is not None and args.flag not in FLAGS:
        raise Refusal(f"--flag: {args.flag!r} is not a flag (known: {', '.join(sorted(FLAGS))})")
    rows = ConfigStore().audit(args.flag)[-args.limit :]
    _emit(args, rows, audit_text)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import models_text
    from resources.model_registry import ModelRegistry

    universe = _universe()
    cryptos = [_crypto(args.crypto, universe)] if args.crypto else list(universe)
    reg = ModelRegistry()
    models = [
        {"crypto": c, **{a: reg.alias(c, a) for a in ("champion", "previous", "candidate")}}
        for c in cryptos
    ]
    history: list[dict[str, Any]] = []
    if args.history:
        history = [h for c in cryptos for h in reg.history(c)]
        history = sorted(history, key=lambda h: (h["valid_from"], h["id"]))[-args.history :]
    view = {"models": models, "history": history}
    _emit(args, view, lambda v: models_text(v["models"], v["history"]))
    return 0


def _frame_rows(frame: Any) -> list[dict[str, Any]]:
    return [
        {k: (None if v != v else v) for k, v in row.items()}  # NaN / NaT -> None
        for row in frame.to_dict("records")
    ]


def _cmd_trades(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import trades_text
    from resources.guard_clock import GuardClock
    from resources.journal import read_trades
    from resources.model_registry import ModelRegistry

    crypto = _crypto(args.crypto, _universe())
    end = _time("--end", args.end) if args.end else GuardClock().now()
    start = end - timedelta(hours=args.hours)
    frame = read_trades(ModelRegistry().engine, crypto, start, end)
    view = {
        "crypto": crypto,
        "start": start,
        "end": end,
        "n": len(frame),
        "mean_net": None if frame.empty else float(frame["net_return"].mean()),
        "trades": _frame_rows(frame),
    }
    _emit(args, view, trades_text)
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    from cvn_assets.guard.ops_text import events_text
    from resources.live_state import read_events
    from resources.model_registry import ModelRegistry

    crypto = _crypto(args.crypto, _universe()) if args.crypto else None
    rows = _frame_rows(read_events(ModelRegistry().engine, crypto))[-args.limit :]
    _emit(args, rows, events_text)
    return 0


def _registry_at(champions_at: datetime) -> Any:
    """A :class:`resources.model_registry.ModelRegistry` whose ``live_at`` answers for the
    champion alias at ``champions_at`` (the rule's windows still end at its ``as_of``)."""
    from resources.model_registry import ModelRegistry

    class _At(ModelRegistry):
        def live_at(self, crypto: str, when_utc: datetime, alias: str = "champion") -> Any:
            when = champions_at if alias == "champion" else when_utc
            return super().live_at(crypto, when, alias)

    return _At()


def _champions_at(args: argparse.Namespace, as_of: datetime) -> datetime:
    from resources.rollbacks import NoRollback, RollbackLog

    if args.champions_at:
        return _not_future("--champions-at", _time("--champions-at", args.champions_at))
    if args.before_rollback is None:
        return as_of
    rows = RollbackLog().all()
    if args.before_rollback != "latest":
        try:
            rows = [RollbackLog().get(_incident(args.before_rollback))]
        except NoRollback:
            raise Refusal(f"--before-rollback: no rollback {args.before_rollback!r}") from None
    if not rows:
        raise Refusal("--before-rollback: there is no rollback in this home")
    return rows[-1]["triggered_at"] - timedelta(microseconds=1)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from cvn_assets.guard.ops_text import evaluation_text
    from resources.guard_clock import GuardClock
    from sensors.evaluation import evaluate_expectancy

    if args.champions_at and args.before_rollback is not None:
        raise Refusal("--champions-at and --before-rollback: give one of them")
    now = _not_future("--as-of", _time("--as-of", args.as_of)) if args.as_of else None
    hour = pd.Timestamp(now or GuardClock().now()).floor("h").to_pydatetime()
    at = _champions_at(args, hour)
    ev = evaluate_expectancy(_registry_at(at), _universe(), hour)
    view = {
        "as_of": hour,
        "champions_at": at,
        "level": ev.verdict.level,
        "reason": ev.verdict.reason,
        "focal_cryptos": list(ev.focal_cryptos),
        "per_crypto": [
            {
                "crypto": c,
                "version": ev.versions.get(c),
                "level": v.level,
                "n": v.n,
                "mean": None if v.n == 0 else float(v.value),
                "critical": None if v.n < 2 else float(v.threshold),
                "reason": v.reason,
            }
            for c, v in sorted(ev.per_crypto.items())
        ],
    }
    _emit(args, view, evaluation_text)
    return 0


def _emit(args: argparse.Namespace, view: Any, render: Any) -> None:
    if args.json:
        print(json.dumps(_jsonable(view), indent=1, sort_keys=True, default=str))
    else:
        print(render(view))


# ------------------------------------------------------------------------------ actions
def _open_rollbacks() -> list[dict[str, Any]]:
    from resources.rollbacks import RollbackLog

    return [r for r in RollbackLog().all() if r["state"] in ("pending", "held")]


def _plan_rollback(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    universe = _universe()
    cfg: dict[str, Any] = {**_who(args), "trigger": "manual"}
    cfg["cryptos"] = sorted({_crypto(c, universe, "--cryptos") for c in args.cryptos or []})
    return "rollback_job", "rollback", cfg


def _plan_flag(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    from resources.config_store import HALT_FLAG, ConfigStore

    cfg: dict[str, Any] = _who(args)
    if args.effective_at:
        when = _not_future("--effective-at", _time("--effective-at", args.effective_at))
        audit = ConfigStore().audit(HALT_FLAG)
        if len(audit) > 1 and when < audit[-1]["changed_at"]:
            raise Refusal(
                f"--effective-at: {when.isoformat()} precedes {HALT_FLAG}'s last change at "
                f"{audit[-1]['changed_at'].isoformat()}"
            )
        cfg["effective_at"] = when.isoformat()
    name = "halt_trading" if args.command == "halt" else "resume_trading"
    return f"{name}_job", name, cfg


def _plan_confirm(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]] | str:
    from resources.rollbacks import NoRollback, RollbackLog

    cfg: dict[str, Any] = _who(args)
    if cfg["incident_id"]:
        try:
            row = RollbackLog().get(cfg["incident_id"])
        except NoRollback:
            raise Refusal(f"--incident-id: no rollback {cfg['incident_id']!r}") from None
        if row["state"] == "confirmed":
            return (
                f"nothing to do: rollback {row['incident_id']} was confirmed by "
                f"{row['confirmed_by']} at {row['confirmed_at'].isoformat()}"
            )
    else:
        open_ = _open_rollbacks()
        if len(open_) != 1:
            ids = ", ".join(r["incident_id"] for r in open_) or "none"
            raise Refusal(
                f"--incident-id: not given and {len(open_)} rollbacks are pending or held "
                f"({ids}): give the one to confirm"
            )
        cfg["incident_id"] = open_[0]["incident_id"]
    return "confirm_rollback_job", "confirm_rollback", cfg


def _plan_promote(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    from cvn_assets.ablation.guardrails import CROSS_ENTROPY, FOCAL
    from resources.config_store import LOSS_FLAG, ConfigStore
    from resources.model_registry import ModelRegistry

    crypto = _crypto(args.crypto, _universe())
    cfg: dict[str, Any] = {"crypto": crypto, **_who(args)}
    cand = ModelRegistry().alias(crypto, "candidate")
    if cand is None:
        raise Refusal(f"--crypto: {crypto} has no candidate to promote")
    flag, _ = ConfigStore().get(LOSS_FLAG)
    if cand["loss_function"] == FOCAL and flag == CROSS_ENTROPY:
        raise Refusal(
            f"--crypto: {crypto}'s candidate v{cand['id']} is focal-trained while {LOSS_FLAG}="
            f"{flag} (rolled back): retrain it (ops retrain) before promoting"
        )
    return "promote_candidate_job", "promote_candidate", cfg


def _plan_retrain(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    from resources.model_registry import ModelRegistry

    crypto = _crypto(args.crypto, _universe())
    cfg: dict[str, Any] = {"crypto": crypto, **_who(args)}
    if args.through:
        cfg["through"] = _not_future("--through", _time("--through", args.through)).isoformat()
    if ModelRegistry().alias(crypto, "champion") is None:
        raise Refusal(f"--crypto: {crypto} has no champion to shadow")
    return "shadow_retrain_job", "shadow_retrain", cfg


def _plan_deliver(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    from resources.alerts import AlertSink

    sink = AlertSink()
    for key in args.alerts:
        name, sep, incident = key.partition(":")
        if not sep or sink.get(_incident(incident), _text("alert", name)) is None:
            raise Refusal(f"alert: {key!r} is not a recorded '<name>:<incident_id>'")
    return "alert_delivery_job", "deliver_alerts", {"alerts": list(args.alerts)}


_PLANS = {
    "rollback": _plan_rollback,
    "halt": _plan_flag,
    "resume": _plan_flag,
    "confirm": _plan_confirm,
    "promote": _plan_promote,
    "retrain": _plan_retrain,
    "deliver": _plan_deliver,
}


def innermost_cause(result: Any) -> str:
    """The innermost cause of the run's failed steps in one line
    (:func:`cvn_assets.run_errors.run_failure_line`, shared with ``make paper``)."""
    from cvn_assets.run_errors import run_failure_line

    return run_failure_line(result) or "the run failed (see its log in the UI)"


def _execute(job_name: str, op_name: str, cfg: dict[str, Any], command: str) -> Any:
    from dagster import DagsterInstance

    from cvn_assets.definitions import defs

    tags = {"cvn/ops": command}
    if cfg.get("incident_id"):
        tags["cvn/incident"] = cfg["incident_id"]
    run_config = {
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        "ops": {op_name: {"config": cfg}},
    }
    return defs.resolve_job_def(job_name).execute_in_process(
        run_config=run_config, instance=DagsterInstance.get(), raise_on_error=False, tags=tags
    )


def _short(version: dict[str, Any] | None) -> str:
    return "none" if version is None else f"v{version['id']} {version['variant']}"


def _after(command: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """What the run left, read back from the stores (the run's own account is in the UI)."""
    from resources.config_store import HALT_FLAG, LOSS_FLAG, ConfigStore

    store = ConfigStore()
    out: dict[str, Any] = {}
    if command in ("halt", "resume", "rollback"):
        flag = HALT_FLAG if command != "rollback" else LOSS_FLAG
        value, version = store.get(flag)
        out[flag] = f"{value} (version {version})"
    if command in ("rollback", "confirm"):
        from resources.rollbacks import RollbackLog

        rows = RollbackLog().all()
        if command == "confirm":
            rows = [r for r in rows if r["incident_id"] == cfg["incident_id"]]
        if rows:
            r = rows[-1]
            out["rollback"] = f"{r['incident_id']} {r['state']} cryptos={','.join(r['cryptos'])}"
    if command in ("promote", "retrain", "rollback"):
        from resources.model_registry import ModelRegistry

        reg = ModelRegistry()
        cryptos = [cfg["crypto"]] if "crypto" in cfg else list(_universe())
        for c in cryptos:
            out[c] = ", ".join(
                f"{alias} {_short(reg.alias(c, alias))}" for alias in ("champion", "candidate")
            )
    return out


def _cmd_action(args: argparse.Namespace) -> int:
    plan = _PLANS[args.command](args)
    if isinstance(plan, str):  # nothing to do
        print(plan)
        return 0
    job_name, op_name, cfg = plan
    result = _execute(job_name, op_name, cfg, args.command)
    if not result.success:
        print(
            f"{job_name} failed (run {result.run_id}): {innermost_cause(result)}", file=sys.stderr
        )
        return 1
    view = {"job": job_name, "run_id": result.run_id, "config": cfg, **_after(args.command, cfg)}
    _emit(args, view, lambda v: "\n".join(f"{k}: {v[k]}" for k in v if k != "config"))
    return 0


# ------------------------------------------------------------------------------ the parser
def _who_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", required=True, help="who (audited)")
    p.add_argument("--reason", required=True, help="why (audited)")
    p.add_argument("--incident-id", default="", help="the incident id of the alert (audited)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cvn_assets.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="JSON instead of text tables")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("status", help="the guard on one screen")
    p = sub.add_parser("alerts", help="recorded alerts and their delivery")
    p.add_argument("--since", default="", help="ISO time with offset: alerts at or after it")
    p.add_argument("--state", nargs="+", choices=DELIVERY_STATES, help="delivery states")
    p.add_argument("--name", default="", help="one rule's alerts")
    p.add_argument("--limit", type=_positive, default=20, help="the last N (default 20)")
    p = sub.add_parser("audit", help="the kill-switch audit (config_audit)")
    p.add_argument("--flag", default=None, help="CVN_LOSS_FUNCTION or trading_halted")
    p.add_argument("--limit", type=_positive, default=20, help="the last N (default 20)")
    p = sub.add_parser("models", help="champion / previous / candidate per crypto")
    p.add_argument("--crypto", default="")
    p.add_argument("--history", type=_positive, default=0, help="also the last N alias changes")
    p = sub.add_parser("trades", help="one crypto's trades exiting in a window")
    p.add_argument("--crypto", required=True)
    p.add_argument("--end", default="", help="ISO time with offset (default: the clock)")
    p.add_argument("--hours", type=_positive, default=48, help="window length (default 48)")
    p = sub.add_parser("events", help="what the live loop journaled beside the hours")
    p.add_argument("--crypto", default="")
    p.add_argument("--limit", type=_positive, default=20, help="the last N (default 20)")
    p = sub.add_parser("evaluate", help="the expectancy P1 rule at an hour (read-only)")
    p.add_argument("--as-of", default="", help="ISO time with offset (default: the clock)")
    p.add_argument("--champions-at", default="", help="judge the champions live then")
    p.add_argument(
        "--before-rollback",
        nargs="?",
        const="latest",
        default=None,
        metavar="INCIDENT",
        help="judge the champions live just before the (latest) rollback",
    )
    p = sub.add_parser("rollback", help="rollback_job (manual)")
    _who_options(p)
    p.add_argument("--cryptos", nargs="+", default=[], help="default: every focal champion")
    for p in (
        sub.add_parser("halt", help="halt_trading_job: no new position from --effective-at"),
        sub.add_parser("resume", help="resume_trading_job: clear the halt"),
    ):
        _who_options(p)
        p.add_argument("--effective-at", default="", help="ISO time with offset (default now)")
    p = sub.add_parser("confirm", help="confirm_rollback_job")
    _who_options(p)
    for p in (
        sub.add_parser("promote", help="promote_candidate_job: the candidate becomes champion"),
        sub.add_parser("retrain", help="shadow_retrain_job: a new candidate (never promoted)"),
    ):
        p.add_argument("--crypto", required=True)
        _who_options(p)
        if p.prog.endswith("retrain"):
            p.add_argument("--through", default="", help="ISO end of the history (default now)")
    p = sub.add_parser("deliver", help="alert_delivery_job")
    p.add_argument("alerts", nargs="*", help="'<name>:<incident_id>' (default: every due one)")
    for action in sub.choices.values():  # --json after the sub-command too
        if not any("--json" in a.option_strings for a in action._actions):
            action.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


_READS = {
    "status": _cmd_status,
    "alerts": _cmd_alerts,
    "audit": _cmd_audit,
    "models": _cmd_models,
    "trades": _cmd_trades,
    "events": _cmd_events,
    "evaluate": _cmd_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    from cvn_assets.sweep import _ensure_home

    args = build_parser().parse_args(argv)
    try:
        from cvn_assets.execution.executors import executor_mode

        _ensure_home(write_default=executor_mode() != "celery")
        fn = _READS.get(args.command, _cmd_action)
        return int(fn(args))
    except Refusal as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"invalid environment: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
