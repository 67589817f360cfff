"""Plain-text screens of the operator command (:mod:`cvn_assets.ops`); pure: dicts in, text out.

* :func:`table`: a left-aligned text table (header, a dashed rule, one line per row); cells
  longer than ``width`` are cut with ``...``; ``none`` when there is no row.
* :func:`status_text`: the one screen of ``ops status``: the kill-switch flags with their last
  change, per crypto the champion (version, variant, loss), the candidate, the last journaled
  hour and the closed hours it is behind the guard clock, the open rollback incidents with
  their confirm deadline, and the undelivered alerts.
* :func:`alerts_text`, :func:`audit_text`, :func:`models_text`, :func:`evaluation_text`: the
  other read commands' tables.

Times print as ``YYYY-MM-DD HH:MM UTC`` (seconds kept when not zero); a missing value prints
``none`` (:data:`cvn_assets.guard.state.NONE`), an unread one ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from cvn_assets.guard.state import NONE, UNKNOWN

__all__ = [
    "alerts_text",
    "audit_text",
    "deadline_text",
    "evaluation_text",
    "events_text",
    "models_text",
    "status_text",
    "table",
    "text_time",
    "trades_text",
]


def text_time(value: Any) -> str:
    """``YYYY-MM-DD HH:MM UTC`` (``:SS`` when the seconds are not 0) of an aware time or ISO
    text; ``none`` for None. ValueError for a naive time."""
    if value is None:
        return NONE
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    ts = ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if ts.second else "%Y-%m-%d %H:%M UTC")


def _cut(text: Any, width: int) -> str:
    s = " ".join(str(text).split())  # one line
    return s if len(s) <= width else s[: max(width - 3, 1)] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int = 48) -> str:
    """``headers`` and ``rows`` as aligned columns (two spaces apart), each cell at most
    ``width`` characters; ``  none`` when ``rows`` is empty."""
    if not rows:
        return "  " + NONE
    cells = [[_cut(c, width) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(s.rstrip() for s in out)


def deadline_text(confirm_by: datetime | None, now: datetime) -> str:
    """``in 12 min`` / ``overdue by 3 min`` / ``none`` (whole minutes, rounded down)."""
    if confirm_by is None:
        return NONE
    minutes = int((pd.Timestamp(confirm_by) - pd.Timestamp(now)).total_seconds() // 60)
    return f"in {minutes} min" if minutes >= 0 else f"overdue by {-minutes} min"


def _flag_rows(flags: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for f in flags:
        reason = f"{UNKNOWN}: {f['error']}" if f["error"] else f["reason"]
        if f.get("incident_id"):
            reason = f"{reason} [{f['incident_id']}]"
        rows.append(
            [
                f["flag"],
                f["value"],
                NONE if f["version"] is None else f["version"],
                UNKNOWN if f["error"] else text_time(f["changed_at"]),
                f["actor"],
                reason,
            ]
        )
    return rows


def _model_cells(row: Mapping[str, Any], part: str) -> list[str]:
    if row["registry_error"]:
        return [UNKNOWN] * 3
    m = row[part]
    if m is None:
        return [NONE] * 3
    return [f"v{m['version_id']}", m["variant"], m["loss_function"]]


def _crypto_rows(cryptos: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in cryptos:
        champ = _model_cells(r, "champion")
        cand = _model_cells(r, "candidate")
        unread = bool(r["journal_error"])
        behind = r["hours_behind"]
        rows.append(
            [
                r["crypto"],
                *champ,
                NONE if cand[0] == NONE else f"{cand[0]} {cand[1]}",
                UNKNOWN if unread else text_time(r["last_hour"]),
                UNKNOWN if unread else (NONE if behind is None else behind),
                "STALE" if r.get("stale") else "",
            ]
        )
    return rows


def _rollback_rows(rollbacks: Sequence[Mapping[str, Any]], now: datetime) -> list[list[Any]]:
    return [
        [
            r["incident_id"],
            r["trigger"],
            r["state"],
            text_time(r["triggered_at"]),
            text_time(r["confirm_by"]),
            deadline_text(r["confirm_by"], now) if r["state"] == "pending" else "escalated",
            ",".join(r["cryptos"]) or NONE,
        ]
        for r in rollbacks
    ]


def _alert_rows(alerts: Sequence[Mapping[str, Any]], message: bool) -> list[list[Any]]:
    rows = []
    for a in alerts:
        row = [
            text_time(a["at"]),
            a["severity"],
            a["name"],
            a["incident_id"],
            a["delivery_state"],
            a["attempts"],
        ]
        row.append(a["message"] if message else (a.get("last_error") or ""))
        rows.append(row)
    return rows


def status_text(view: Mapping[str, Any]) -> str:
    """The ``ops status`` screen of ``view`` (see :func:`cvn_assets.ops.status_view`)."""
    now = view["now"]
    parts = [
        f"guard at {text_time(now)}  DAGSTER_HOME={view['dagster_home']}  "
        f"results {view['results']}",
        "",
        "KILL SWITCH",
        table(
            ["flag", "value", "version", "last change at", "by", "reason [incident]"],
            _flag_rows(view["flags"]),
        ),
        "",
        "CHAMPIONS (behind: closed candles not yet journaled; STALE: journal ends > 2 h ago)",
        table(
            [
                "crypto",
                "champion",
                "variant",
                "loss",
                "candidate",
                "last journaled hour",
                "behind",
                "stale",
            ],
            _crypto_rows(view["cryptos"]),
        ),  # fmt: skip
        "",
        "OPEN ROLLBACKS (pending: confirm by the deadline, else held and escalated)",
        table(
            ["incident", "trigger", "state", "triggered at", "confirm by", "deadline", "cryptos"],
            _rollback_rows(view["rollbacks_open"], now),
            width=64,
        ),
        "",
        "UNDELIVERED ALERTS (pending or failed delivery)",
        table(
            ["at", "sev", "name", "incident", "state", "attempts", "last error"],
            _alert_rows(view["alerts_undelivered"], message=False),
            width=64,
        ),
    ]
    return "\n".join(parts)


def alerts_text(alerts: Sequence[Mapping[str, Any]]) -> str:
    """``ops alerts``: one line per alert (oldest first) with its delivery state."""
    return table(
        ["at", "sev", "name", "incident", "state", "attempts", "message"],
        _alert_rows(alerts, message=True),
        width=72,
    )


def audit_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ops audit``: the ``config_audit`` rows (oldest first)."""
    return table(
        ["changed at", "flag", "change", "version", "by", "reason", "incident", "run"],
        [
            [
                text_time(r["changed_at"]),
                r["flag"],
                f"{r['old_value'] if r['old_value'] is not None else NONE} -> {r['new_value']}",
                f"{r['old_version']} -> {r['new_version']}",
                r["actor"],
                r["reason"],
                r["incident_id"] or NONE,
                (r["dagster_run_id"] or NONE)[:8],
            ]
            for r in rows
        ],
    )


def _version_cell(v: Mapping[str, Any] | None) -> str:
    if v is None:
        return NONE
    return f"v{v['id']} {v['variant']} ({v['loss_function']})"


def models_text(models: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> str:
    """``ops models``: champion / previous / candidate per crypto, then the alias history."""
    head = table(
        ["crypto", "champion", "previous", "candidate", "champion trained to"],
        [
            [
                m["crypto"],
                _version_cell(m["champion"]),
                _version_cell(m["previous"]),
                _version_cell(m["candidate"]),
                text_time(m["champion"]["train_end"]) if m["champion"] else NONE,
            ]
            for m in models
        ],
    )
    if not history:
        return head
    hist = table(
        ["from", "to", "crypto", "alias", "version", "by", "reason"],
        [
            [
                text_time(h["valid_from"]),
                text_time(h["valid_to"]),
                h["crypto"],
                h["alias"],
                f"v{h['version_id']}",
                h["actor"],
                h["reason"],
            ]
            for h in history
        ],
        width=64,
    )
    return head + "\n\nALIAS HISTORY (newest last)\n" + hist


def evaluation_text(ev: Mapping[str, Any]) -> str:
    """``ops evaluate``: the expectancy rule's verdict at ``as_of`` and per crypto."""
    lines = [
        f"expectancy_negative_focal as of {text_time(ev['as_of'])} (champions live at "
        f"{text_time(ev['champions_at'])}): {ev['level']} - {ev['reason']}",
        f"focal cryptos: {', '.join(ev['focal_cryptos']) or NONE}",
        table(
            ["crypto", "version", "level", "n 48h", "mean 48h", "critical 48h", "reason"],
            [
                [
                    c["crypto"],
                    f"v{c['version']}",
                    c["level"],
                    c["n"],
                    NONE if c["mean"] is None else f"{c['mean']:+.5f}",
                    NONE if c["critical"] is None else f"{c['critical']:+.5f}",
                    c["reason"],
                ]
                for c in ev["per_crypto"]
            ],
            width=72,
        ),
    ]
    return "\n".join(lines)


def trades_text(view: Mapping[str, Any]) -> str:
    """``ops trades``: the window, the trades (entry, exit, barrier, net, model), the mean."""
    mean = view["mean_net"]
    head = (
        f"{view['crypto']}: {view['n']} trades exiting in [{text_time(view['start'])}, "
        f"{text_time(view['end'])}], mean net {NONE if mean is None else f'{mean:+.5f}'}"
    )
    rows = [
        [
            text_time(t["entry_time"]),
            text_time(t["exit_time"]),
            t["barrier"],
            f"{t['net_return']:+.5f}",
            f"v{t['model_version']}",
            t["loss_function"],
        ]
        for t in view["trades"]
    ]
    return head + "\n" + table(["entry", "exit", "barrier", "net", "model", "loss"], rows)


def events_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ops events``: the live loop's events, oldest first."""
    keys = ("at", "crypto", "kind", "first_hour", "last_hour", "message")
    return table(
        list(keys),
        [
            [text_time(r.get(k)) if k in ("at", "first_hour", "last_hour") else r.get(k, "")
             for k in keys]
            for r in rows
        ],
        width=72,
    )  # fmt: skip
