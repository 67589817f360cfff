"""The guard's state at a glance (pure: no Dagster, no database): what the ``guard_state``
asset (:mod:`cvn_assets.assets.guard_state`) shows after every live hour.

From plain dicts the resources return:

* :func:`flag_state`: a kill-switch flag's value and version (``ftf_config``) and its last
  change (the newest ``config_audit`` row: time, actor, reason, incident id);
  :func:`unknown_flag` when the flags could not be read (spec 6.4's fail-safe: an operator
  must see *that* state, with the error, rather than no state at all).
* :func:`crypto_row`: per crypto, the live champion (the version the ``champion`` alias points
  at, with the open ``model_alias_history`` row: promoted at, by whom, why), the candidate if
  one is set, the last journaled hour and how far it is behind the guard's clock.
* :func:`hours_behind`: closed hourly candles not yet journaled. A candle opening at ``h``
  closes at ``h + 1 h``; at ``now`` the newest closed candle opens at ``floor(now, 1 h) - 1 h``.
  So ``hours_behind = (floor(now, 1 h) - 1 h - last_hour) / 1 h``: 0 when the journal is up
  to date, negative when it is ahead of the clock (a replay journaled past the clock), None
  with no journal.
* :func:`state_markdown`, :func:`flag_markdown`: the two Markdown tables; :func:`plot_entries`:
  flat numbers and texts that the UI plots over the materializations.

Missing data is a state, never an error: no champion, no candidate or no journal reads
``none``; a part that could not be read reads ``unknown`` (with its error kept beside it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from cvn_assets.guard.flags import utc_instant

__all__ = [
    "NONE",
    "UNKNOWN",
    "crypto_row",
    "flag_markdown",
    "flag_state",
    "hours_behind",
    "open_assignment",
    "plot_entries",
    "state_markdown",
    "unknown_flag",
]

#: what a cell reads when there is nothing (no champion, no journal, no change)
NONE = "none"
#: what a cell reads when its source could not be read
UNKNOWN = "unknown"
_HOUR = pd.Timedelta(hours=1)


def _text_time(value: Any) -> str:
    """``YYYY-MM-DD HH:MM UTC`` (seconds kept when not zero), or ``none``."""
    if value is None:
        return NONE
    ts = utc_instant("time", value)
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if ts.second else "%Y-%m-%d %H:%M UTC")


def flag_state(
    flag: str, current: tuple[str, int] | None, audit: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A flag's state: ``{"flag", "value", "version", "changed_at", "actor", "reason",
    "incident_id", "error"}``.

    ``current``: ``(value, version)`` from ``ftf_config`` (None: the flag has no row, value
    and version ``none``); ``audit``: the flag's ``config_audit`` rows oldest first (each with
    ``changed_at`` aware, ``actor``, ``reason``, ``incident_id``); the last one is the last
    change (the seed's creation row counts: actor ``alembic:...``). ``changed_at`` is ISO text
    or ``none``; ``error`` is None."""
    last = audit[-1] if audit else None
    return {
        "flag": flag,
        "value": NONE if current is None else str(current[0]),
        "version": None if current is None else int(current[1]),
        "changed_at": None
        if last is None
        else utc_instant("changed_at", last["changed_at"]).isoformat(),
        "actor": NONE if last is None else str(last["actor"]),
        "reason": NONE if last is None else str(last["reason"]),
        "incident_id": None if last is None else last.get("incident_id"),
        "error": None,
    }


def unknown_flag(flag: str, error: str) -> dict[str, Any]:
    """The state of a flag that could not be read: value ``unknown``, ``error`` the reason."""
    return {
        "flag": flag,
        "value": UNKNOWN,
        "version": None,
        "changed_at": None,
        "actor": UNKNOWN,
        "reason": UNKNOWN,
        "incident_id": None,
        "error": error,
    }


def open_assignment(history: Sequence[Mapping[str, Any]], alias: str) -> Mapping[str, Any] | None:
    """The open (``valid_to`` None) ``model_alias_history`` row of ``alias``, or None."""
    rows = [r for r in history if r["alias"] == alias and r["valid_to"] is None]
    return rows[-1] if rows else None


def hours_behind(last_hour: Any, now: Any) -> int | None:
    """Closed hourly candles after ``last_hour`` (a candle's open time) at ``now`` (both
    aware): ``(floor(now, 1 h) - 1 h - last_hour) / 1 h``, rounded down; None when
    ``last_hour`` is None. Negative: the journal is ahead of ``now``."""
    if last_hour is None:
        return None
    newest_closed = utc_instant("now", now).floor("h") - _HOUR
    return int((newest_closed - utc_instant("last_hour", last_hour)) // _HOUR)


def _model(version: Mapping[str, Any] | None, assigned: Mapping[str, Any] | None) -> dict | None:
    if version is None:
        return None
    return {
        "version_id": int(version["id"]),
        "variant": str(version["variant"]),
        "loss_function": str(version["loss_function"]),
        "since": None
        if assigned is None
        else utc_instant("valid_from", assigned["valid_from"]).isoformat(),
        "by": None if assigned is None else str(assigned["actor"]),
        "reason": None if assigned is None else str(assigned["reason"]),
    }


def crypto_row(
    crypto: str,
    *,
    champion: Mapping[str, Any] | None,
    champion_assigned: Mapping[str, Any] | None,
    candidate: Mapping[str, Any] | None,
    candidate_assigned: Mapping[str, Any] | None,
    last_hour: Any,
    now: datetime,
    registry_error: str | None = None,
    journal_error: str | None = None,
) -> dict[str, Any]:
    """One crypto's row: ``{"crypto", "champion", "candidate", "last_hour", "hours_behind",
    "registry_error", "journal_error"}``.

    ``champion`` / ``candidate``: the registry's version dicts (``id``, ``variant``,
    ``loss_function``) or None; ``*_assigned``: their open alias-history rows
    (``valid_from``, ``actor``, ``reason``), from :func:`open_assignment`. ``champion`` and
    ``candidate`` become ``{"version_id", "variant", "loss_function", "since", "by",
    "reason"}`` or None. ``last_hour``: the last journaled hour (aware) or None; ``now``: the
    guard clock. An ``*_error`` marks that part unread (shown ``unknown``)."""
    return {
        "crypto": crypto,
        "champion": None if registry_error else _model(champion, champion_assigned),
        "candidate": None if registry_error else _model(candidate, candidate_assigned),
        "last_hour": None
        if journal_error or last_hour is None
        else utc_instant("last_hour", last_hour).isoformat(),
        "hours_behind": None if journal_error else hours_behind(last_hour, now),
        "registry_error": registry_error,
        "journal_error": journal_error,
    }


def _cell(row: Mapping[str, Any], part: str, key: str) -> str:
    if row["registry_error"]:
        return UNKNOWN
    model = row[part]
    if model is None:
        return NONE
    value = model[key]
    if key == "since":
        return _text_time(value)
    return f"v{value}" if key == "version_id" else str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def state_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-crypto Markdown table: champion, variant, loss, promoted at and by, candidate,
    last journaled hour, hours behind (``none`` / ``unknown`` where there is nothing / it
    could not be read)."""
    head = (
        "| crypto | champion | variant | loss | promoted at | by | candidate "
        "| last journaled hour | hours behind |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        cand = _cell(r, "candidate", "version_id")
        if r["candidate"] is not None:
            cand = f"{cand} {r['candidate']['variant']}"
        unread = bool(r["journal_error"])
        last = UNKNOWN if unread else _text_time(r["last_hour"])
        behind = UNKNOWN if unread else (NONE if r["hours_behind"] is None else r["hours_behind"])
        cells = [
            r["crypto"],
            _cell(r, "champion", "version_id"),
            _cell(r, "champion", "variant"),
            _cell(r, "champion", "loss_function"),
            _cell(r, "champion", "since"),
            _cell(r, "champion", "by"),
            cand,
            last,
            str(behind),
        ]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines)


def flag_markdown(flags: Sequence[Mapping[str, Any]]) -> str:
    """The kill-switch Markdown table: flag, value, version, last change (at, by, reason),
    and the error when a flag could not be read."""
    lines = [
        "| flag | value | version | last change at | by | reason |",
        "|---|---|---|---|---|---|",
    ]
    for f in flags:
        reason = f["reason"] if not f["error"] else f"{UNKNOWN}: {f['error']}"
        if f.get("incident_id"):
            reason = f"{reason} [incident {f['incident_id']}]"
        cells = [
            f["flag"],
            f["value"],
            NONE if f["version"] is None else str(f["version"]),
            UNKNOWN if f["error"] else _text_time(f["changed_at"]),
            f["actor"],
            reason,
        ]
        lines.append("| " + " | ".join(_md(str(c)) for c in cells) + " |")
    return "\n".join(lines)


def plot_entries(
    flags: Mapping[str, Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    loss_flag: str,
    halt_flag: str,
    focal: str,
) -> dict[str, Any]:
    """Flat entries to plot over the materializations: ``loss_function`` and
    ``trading_halted`` (the flags' values, ``unknown`` when unread), their versions
    (None when unread), ``flags_error`` (``none`` or the error), ``champions`` (cryptos with a
    champion), ``focal_champions`` (whose champion's loss function is ``focal``),
    ``candidates``, ``cryptos_journaled``, ``hours_behind_max`` (over the journaled cryptos;
    None when none is), and per crypto ``hours_behind_<crypto>`` (None: no journal or
    unread) and ``champion_version_<crypto>`` (None: no champion or unread)."""
    errors = sorted({f["error"] for f in flags.values() if f["error"]})
    champs = [r["champion"] for r in rows if r["champion"] is not None]
    behind = [r["hours_behind"] for r in rows if r["hours_behind"] is not None]
    out: dict[str, Any] = {
        "loss_function": flags[loss_flag]["value"],
        "loss_function_version": flags[loss_flag]["version"],
        "trading_halted": flags[halt_flag]["value"],
        "trading_halted_version": flags[halt_flag]["version"],
        "flags_error": "; ".join(errors) if errors else NONE,
        "champions": len(champs),
        "focal_champions": sum(1 for c in champs if c["loss_function"] == focal),
        "candidates": sum(1 for r in rows if r["candidate"] is not None),
        "cryptos_journaled": sum(1 for r in rows if r["last_hour"] is not None),
        "hours_behind_max": max(behind) if behind else None,
    }
    for r in rows:
        out[f"hours_behind_{r['crypto']}"] = r["hours_behind"]
        champ = r["champion"]
        out[f"champion_version_{r['crypto']}"] = None if champ is None else champ["version_id"]
    return out
