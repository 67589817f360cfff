"""The alert sink of the production guard: recorded in the results database, mirrored as
JSON lines under ``$DAGSTER_HOME``, delivered to Slack at least once.

An :class:`Alert` is a pure, validated value: its rule's ``name``, a ``severity``, the
``cryptos`` concerned, the ``figures`` that fired it, an ``incident_id`` (deterministic, see
:func:`incident_id`, so a retried tick or run reuses it), the ``runbook`` to follow, the time
``at`` (aware UTC) and a one-line ``message``.

:class:`AlertSink` (a Dagster resource) sends one in two steps, never holding a lock or a
transaction across a network call:

1. **record** (:meth:`AlertSink.record`): one row in the ``alerts`` table
   (:mod:`resources.alert_store`; unique by ``(incident_id, name)``, so a re-executed alert
   run does not duplicate), ``pending`` when a Slack webhook is configured (``none``
   otherwise), then its line in the alerts file (``alerts_path``, else ``$CVN_ALERTS_PATH``,
   else ``$DAGSTER_HOME/alerts/alerts.jsonl``) under a short exclusive ``flock``. A state
   change that must not happen without its page records it inside its own transaction
   (:meth:`AlertSink.record_in`: the rollback's ``held`` and its escalation);
2. **deliver** (:meth:`AlertSink.deliver`): claim the row, POST with bounded retries that
   honour ``Retry-After`` (:mod:`resources.alert_policy`, :mod:`resources.slack_channel`),
   record every attempt, and end ``delivered``, ``pending`` (due again at ``next_attempt_at``:
   the ``alert_delivery`` sensor retries it) or ``failed`` (gave up: a ``delivery_failed``
   line in the file, an error in the log, a failed ``alert_delivery_job`` run). A channel's
   failure never raises: :meth:`AlertSink.send` returns a :class:`Delivery`.

The file holds three kinds of lines, JSON objects with a ``record`` key::

    {"record": "alert", "name": ..., "severity": ..., "cryptos": [...], "figures": {...},
     "incident_id": ..., "runbook": ..., "at": "2026-12-01T13:00:00+00:00", "message": ...,
     "channel": "slack" | null, "recorded_at": "..."}
    {"record": "delivery", "channel": "slack", "incident_id": ..., "name": ..., "at": "...",
     "attempts": 2}
    {"record": "delivery_failed", "channel": "slack", "incident_id": ..., "name": ...,
     "at": "...", "attempts": 12, "last_status": 500, "last_error": "HTTP 500 (...)"}

Writers append with ``O_APPEND`` in a single ``write`` per line and ``fsync``, under the lock
(check-and-append: a line is written once). Readers (:func:`read_alerts`) need no lock. The
webhook URL is a secret: it is never logged, never put in metadata, a row or an error, and
hidden from the resource's ``repr``.
"""

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import numbers
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import Field

from resources.alert_policy import Outcome, give_up, next_delay
from resources.alert_store import alerts_table, find, insert_alert
from resources.alert_store import row as store_row
from resources.db import as_utc, utc_now, write_transaction
from resources.home_source import home_dir
from resources.results_store import ResultsDatabaseResource
from resources.slack_channel import post_webhook

__all__ = [
    "ALERTS_PATH_ENV",
    "SEVERITIES",
    "SLACK_WEBHOOK_ENV",
    "Alert",
    "AlertSink",
    "Delivery",
    "default_alerts_path",
    "incident_id",
    "read_alerts",
    "read_records",
    "slack_message",
    "validate_alerts_path",
    "validate_webhook_url",
]

ALERTS_PATH_ENV = "CVN_ALERTS_PATH"
SLACK_WEBHOOK_ENV = "CVN_SLACK_WEBHOOK_URL"
WRITE_WAIT_MS = 30_000

#: the allowed severities: the guard's rule levels (P1, P2) and the drift levels
SEVERITIES: tuple[str, ...] = ("P1", "P2", "crit", "warn", "info")

#: JSON scalars a figure may hold
FigureValue = str | int | float | bool | None

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CRYPTO_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_INCIDENT_MAX = 128  # config_audit.incident_id is String(128)

_log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the value


def _utc(value: Any, field_name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"alert {field_name}: {value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"alert {field_name}: {value.isoformat()!r} is naive; give it a timezone")
    return value.astimezone(UTC)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"alert name: {name!r} is not a rule name like 'expectancy_negative_focal' "
            "(lower case, digits and '_', at most 64 characters)"
        )
    return name


def _check_cryptos(cryptos: Any) -> tuple[str, ...]:
    if isinstance(cryptos, str) or not isinstance(cryptos, list | tuple):
        raise ValueError(f"alert cryptos: {cryptos!r} is not a tuple of symbols")
    for c in cryptos:
        if not isinstance(c, str) or not _CRYPTO_RE.match(c):
            raise ValueError(f"alert cryptos: {c!r} is not an exchange symbol like BTCUSDC")
    if len(set(cryptos)) != len(cryptos):
        raise ValueError(f"alert cryptos: duplicate symbols in {tuple(cryptos)!r}")
    return tuple(cryptos)


def _figure(key: str, value: Any) -> FigureValue:
    if value is None or isinstance(value, bool | str):
        return value
    if getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy bool
        return bool(value)
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # float, numpy floats
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"alert figures[{key!r}]: {value!r} is not a finite number")
        return f
    raise ValueError(
        f"alert figures[{key!r}]: {value!r} ({type(value).__name__}) is not a JSON scalar "
        "(str, int, float, bool or None)"
    )


def _check_figures(figures: Any) -> dict[str, FigureValue]:
    if not isinstance(figures, Mapping):
        raise ValueError(f"alert figures: {figures!r} is not a mapping of str to JSON scalars")
    out: dict[str, FigureValue] = {}
    for key, value in figures.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"alert figures: key {key!r} is not a non-empty string")
        out[key] = _figure(key, value)
    return out


def _check_runbook(runbook: Any) -> str:
    if not isinstance(runbook, str) or not runbook.strip():
        raise ValueError(f"alert runbook: {runbook!r} is not a path")
    p = PurePosixPath(runbook)
    if p.is_absolute() or "\\" in runbook or ".." in p.parts or p.suffix != ".md":
        raise ValueError(
            f"alert runbook: {runbook!r} is not a relative path to a Markdown file like "
            "'runbooks/runbook_focal_loss_negative_expectancy.md'"
        )
    return runbook


def _check_one_line(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise ValueError(f"alert {field_name}: {value!r} is not one non-empty line of text")
    return value


@dataclass(frozen=True)
class Alert:
    """One alert, validated on construction.

    Fields: ``name`` (the rule, ``[a-z][a-z0-9_]*``), ``severity`` (one of
    :data:`SEVERITIES`), ``cryptos`` (tuple of exchange symbols, possibly empty for a
    project-wide alert), ``figures`` (``{str: str | int | float | bool | None}``, the numbers
    that fired it; numpy scalars are converted, NaN and infinities refused), ``incident_id``
    (see :func:`incident_id`), ``runbook`` (relative path of a ``.md`` file), ``at`` (aware;
    stored in UTC), ``message`` (one line).

    Raises ``ValueError`` naming the field and the value for any invalid field.
    """

    name: str
    severity: str
    cryptos: tuple[str, ...]
    figures: dict[str, FigureValue]
    incident_id: str
    runbook: str
    at: datetime
    message: str
    # figures is a dict: the value is immutable by convention, not hashable
    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"alert severity: {self.severity!r} is not one of {', '.join(SEVERITIES)}"
            )
        object.__setattr__(self, "cryptos", _check_cryptos(self.cryptos))
        object.__setattr__(self, "figures", _check_figures(self.figures))
        if not isinstance(self.incident_id, str) or not _INCIDENT_RE.match(self.incident_id):
            raise ValueError(
                f"alert incident_id: {self.incident_id!r} is not an id like "
                "'INC-20261201T1300-expectancy_negative_focal-BTCUSDC+ETHUSDC' "
                f"(letters, digits and _.:+-, at most {_INCIDENT_MAX} characters)"
            )
        object.__setattr__(self, "runbook", _check_runbook(self.runbook))
        object.__setattr__(self, "at", _utc(self.at, "at"))
        _check_one_line(self.message, "message")

    @property
    def key(self) -> tuple[str, str]:
        """``(incident_id, name)``: what makes two sends the same alert."""
        return (self.incident_id, self.name)

    def to_record(self) -> dict[str, Any]:
        """The JSON object of its line (without ``record`` and ``recorded_at``)."""
        return {
            "name": self.name,
            "severity": self.severity,
            "cryptos": list(self.cryptos),
            "figures": dict(self.figures),
            "incident_id": self.incident_id,
            "runbook": self.runbook,
            "at": self.at.isoformat(),
            "message": self.message,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Alert":
        """The alert of a line read back (extra keys such as ``recorded_at`` are ignored).

        Raises ``ValueError`` for a missing or invalid field.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in record]
        if missing:
            raise ValueError(f"alert record: missing field(s) {', '.join(missing)}")
        at = record["at"]
        if isinstance(at, str):
            try:
                at = datetime.fromisoformat(at)
            except ValueError:
                raise ValueError(f"alert at: {at!r} is not an ISO 8601 time") from None
        return cls(
            name=record["name"],
            severity=record["severity"],
            cryptos=tuple(record["cryptos"]),
            figures=dict(record["figures"]),
            incident_id=record["incident_id"],
            runbook=record["runbook"],
            at=at,
            message=record["message"],
        )


def incident_id(name: str, cryptos: tuple[str, ...] | list[str], bucket_start_utc: datetime) -> str:
    """Deterministic incident id of rule ``name`` on ``cryptos`` in the time bucket that
    starts at ``bucket_start_utc``: ``INC-<YYYYMMDDTHHMM>-<name>-<cryptos sorted, joined by
    '+'>`` (``...-<name>`` alone when ``cryptos`` is empty), e.g.
    ``INC-20261201T1300-expectancy_negative_focal-BTCUSDC+ETHUSDC``.

    The same arguments always give the same id (the order of ``cryptos`` does not matter), so
    a retried tick or re-executed run reuses it. An id that would exceed 128 characters
    replaces the symbols by ``h<12 hex of their SHA-256>``. Raises ``ValueError`` naming the
    argument and value for a bad name, symbol or a naive time.
    """
    _check_name(name)
    symbols = sorted(_check_cryptos(tuple(cryptos)))
    bucket = _utc(bucket_start_utc, "bucket_start_utc")
    head = f"INC-{bucket:%Y%m%dT%H%M}-{name}"
    if not symbols:
        return head
    out = f"{head}-{'+'.join(symbols)}"
    if len(out) > _INCIDENT_MAX:
        digest = hashlib.sha256("+".join(symbols).encode()).hexdigest()[:12]
        out = f"{head}-h{digest}"
    return out


# ----------------------------------------------------------------------------- settings


def validate_webhook_url(url: str, source: str = SLACK_WEBHOOK_ENV) -> str:
    """``url`` if it is an http(s) URL with a host; ``ValueError`` otherwise.

    The message names ``source`` and the scheme, never the URL (it is a secret).
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(
            f"{source}: not an http(s) URL with a host ({shown}; value hidden, it is a secret); "
            "expected https://hooks.slack.com/services/..."
        )
    return url.strip()


def validate_alerts_path(path: str, source: str = ALERTS_PATH_ENV) -> str:
    """``path`` if it is absolute and not an existing directory; ``ValueError`` naming
    ``source`` and the value otherwise."""
    if not os.path.isabs(path):
        raise ValueError(
            f"{source}: {path!r} is not an absolute path (give the JSONL file's full path, "
            "e.g. /var/lib/cvn/alerts.jsonl)"
        )
    if os.path.isdir(path):
        raise ValueError(f"{source}: {path!r} is a directory; give the JSONL file's path")
    return path


def default_alerts_path() -> Path:
    """``$CVN_ALERTS_PATH``, else ``$DAGSTER_HOME/alerts/alerts.jsonl`` (resolved now)."""
    env = os.environ.get(ALERTS_PATH_ENV, "").strip()
    if env:
        return Path(validate_alerts_path(env))
    return home_dir() / "alerts" / "alerts.jsonl"


# ----------------------------------------------------------------------------- the file


def _parse_lines(text: str, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            # a line torn by a crash mid-write: skipped (the next writer starts a new line)
            _log.warning("alerts file %s: line %d is not JSON; skipped", path, number)
            continue
        if isinstance(obj, dict):
            yield obj
        else:
            _log.warning("alerts file %s: line %d is not a JSON object; skipped", path, number)


def read_records(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every line of the alerts file as a dict (alerts and deliveries), in file order.

    ``path`` ``None``: :func:`default_alerts_path`. A missing file reads as ``[]``; a line
    that is not a JSON object (torn by a crash) is skipped with a warning.
    """
    p = Path(path) if path is not None else default_alerts_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return list(_parse_lines(text, p))


def read_alerts(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The alerts of the file, oldest first, as dicts.

    Each dict: ``name``, ``severity``, ``cryptos`` (list), ``figures`` (dict),
    ``incident_id``, ``runbook``, ``at`` (ISO 8601 UTC text), ``message``, ``channel`` (the
    channel it was recorded for, ``None`` for none), ``recorded_at`` (ISO 8601 UTC),
    ``delivered`` (sorted list of the channels that accepted it, e.g. ``["slack"]``) and
    ``delivery`` (``delivered``, ``failed`` when a delivery-failed line says delivery gave up
    and no delivery line followed, ``pending`` for a channel not yet reached, ``none``).
    ``Alert.from_record(d)`` rebuilds the value. ``path`` ``None``:
    :func:`default_alerts_path`; a missing file reads as ``[]``.
    """
    records = read_records(path)
    delivered: dict[tuple[Any, Any], set[str]] = {}
    failed: set[tuple[Any, Any]] = set()
    for r in records:
        key = (r.get("incident_id"), r.get("name"))
        if r.get("record") == "delivery":
            delivered.setdefault(key, set()).add(str(r.get("channel")))
            failed.discard(key)
        elif r.get("record") == "delivery_failed":
            failed.add(key)
    out = []
    for r in records:
        if r.get("record") != "alert":
            continue
        key = (r.get("incident_id"), r.get("name"))
        d = {k: v for k, v in r.items() if k != "record"}
        d.setdefault("channel", None)
        d["delivered"] = sorted(delivered.get(key, ()))
        if d["delivered"]:
            d["delivery"] = "delivered"
        elif key in failed:
            d["delivery"] = "failed"
        else:
            d["delivery"] = "pending" if d["channel"] else "none"
        out.append(d)
    return out


def _append_line(fd: int, obj: Mapping[str, Any]) -> None:
    """One ``write`` of one JSON line on an ``O_APPEND`` descriptor, then ``fsync``."""
    data = (json.dumps(obj, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    written = os.write(fd, data)
    if written != len(data):  # a short write on a regular file: disk full
        raise OSError(f"short write to the alerts file ({written} of {len(data)} bytes)")
    os.fsync(fd)


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- the resource


class AlertSink(ResultsDatabaseResource):
    """Where the guard's alerts go: the results database (recorded first), the JSON-lines
    file, then Slack when configured, at least once.

    ``alerts_path``: the field, else ``$CVN_ALERTS_PATH``, else
    ``$DAGSTER_HOME/alerts/alerts.jsonl`` (resolved at use; must be absolute when given).
    ``slack_webhook_url``: the field (use ``EnvVar("CVN_SLACK_WEBHOOK_URL")``), else
    ``$CVN_SLACK_WEBHOOK_URL`` at use; empty: no Slack. ``database_url``: as the results
    store's (the field, else ``$CVN_DATABASE_URL``, else SQLite under ``$DAGSTER_HOME``).
    (Resolving at use keeps the environment's values when a run's config replaces the
    resource's constructor values.)

    Delivery policy: one call makes at most ``attempts_per_run`` POSTs, each waiting at most
    ``slack_timeout_s``, and waits between them (the server's ``Retry-After``, else
    ``retry_base_s * 2**k``) at most ``max_wait_s`` in total; what is still undelivered is due
    again at ``now + max(Retry-After, min(retry_backoff_cap_s, retry_backoff_s *
    2**(attempts - 1)))`` (the ``alert_delivery`` sensor retries it), until delivered or given
    up (``failed``) after ``max_attempts`` attempts, ``give_up_after_h`` hours after it was
    recorded, or at once on a permanent error (a 4xx other than 408/425/429).
    """

    alerts_path: str = Field(
        default="",
        description="JSONL file of the alerts (absolute); default $CVN_ALERTS_PATH, else "
        "$DAGSTER_HOME/alerts/alerts.jsonl",
    )
    slack_webhook_url: str | None = Field(
        default=None,
        repr=False,
        description="Slack incoming-webhook URL (a secret: use EnvVar('CVN_SLACK_WEBHOOK_URL')); "
        "default $CVN_SLACK_WEBHOOK_URL; empty: no Slack",
    )
    slack_timeout_s: float = Field(default=10.0, description="seconds to wait for Slack, per POST")
    attempts_per_run: int = Field(default=3, description="POSTs per delivery call")
    retry_base_s: float = Field(default=1.0, description="first wait between POSTs of one call")
    max_wait_s: float = Field(default=30.0, description="total wait between POSTs of one call")
    retry_backoff_s: float = Field(default=60.0, description="first wait before a later retry")
    retry_backoff_cap_s: float = Field(default=3600.0, description="longest backoff (seconds)")
    max_attempts: int = Field(default=12, description="attempts before delivery gives up")
    give_up_after_h: float = Field(default=24.0, description="hours after recording to give up")

    # ---------------------------------------------------------------- what is in effect
    @property
    def path(self) -> Path:
        """The alerts file in effect. Raises ``ValueError`` for a relative path."""
        if self.alerts_path:
            return Path(validate_alerts_path(self.alerts_path, "alert_sink.alerts_path"))
        return default_alerts_path()

    def _webhook_url(self) -> str | None:
        if self.slack_webhook_url and self.slack_webhook_url.strip():
            return validate_webhook_url(self.slack_webhook_url, "alert_sink.slack_webhook_url")
        env = os.environ.get(SLACK_WEBHOOK_ENV, "").strip()
        return validate_webhook_url(env) if env else None

    @property
    def slack_enabled(self) -> bool:
        """Whether a webhook URL is configured (the URL itself is never exposed)."""
        return self._webhook_url() is not None

    def _check_policy(self) -> None:
        for name in ("attempts_per_run", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"alert_sink.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("slack_timeout_s", "give_up_after_h"):
            if not getattr(self, name) > 0:
                raise ValueError(f"alert_sink.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("retry_base_s", "max_wait_s", "retry_backoff_s", "retry_backoff_cap_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"alert_sink.{name}: must be >= 0, got {getattr(self, name)}")

    def _lease(self) -> timedelta:
        """How long a claim lasts: longer than one call's POSTs and waits."""
        per_post = self.slack_timeout_s * 3 + 5  # connect, send, read; plus slack
        return timedelta(seconds=self.attempts_per_run * per_post + self.max_wait_s + 60)

    # ---------------------------------------------------------------- recording
    def record_in(
        self,
        conn: sa.Connection,
        alert: Alert,
        *,
        now: datetime | None = None,
        dagster_run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record ``alert`` in the caller's open transaction ``conn`` (same database), for a
        state change that must not happen without its page (``held`` + escalation). The file
        line and the delivery follow with :meth:`send` after the commit. ``(row, created)``."""
        if not isinstance(alert, Alert):
            raise TypeError(f"AlertSink.record: expected an Alert, got {type(alert).__name__}")
        self._check_policy()
        channel = "slack" if self._webhook_url() is not None else None
        self.path  # a bad path is refused before anything is written  # noqa: B018
        return insert_alert(
            conn,
            alert.to_record(),
            channel=channel,
            now=as_utc(now) if now is not None else utc_now(),
            dagster_run_id=dagster_run_id,
        )

    def record(
        self, alert: Alert, *, now: datetime | None = None, dagster_run_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Record ``alert`` (database row, then its file line; no network); idempotent by
        ``(incident_id, name)``. ``(row, created)``. Raises ``TypeError`` for a non-Alert,
        ``ValueError`` for a bad path, webhook URL or policy field (before anything is
        written). A file that cannot be written is logged, not raised: the row stays with
        ``file_synced`` false and the next delivery run writes the line."""
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            got, created = self.record_in(conn, alert, now=now, dagster_run_id=dagster_run_id)
        return self._sync(got), created

    # ---------------------------------------------------------------- sending
    def send(
        self, alert: Alert, *, now: datetime | None = None, dagster_run_id: str | None = None
    ) -> "Delivery":
        """Record ``alert`` (:meth:`record`), then deliver it if it is pending and due
        (:meth:`deliver`). Never raises for a channel's failure: the returned
        :class:`Delivery` says ``pending`` (retried later) or ``failed`` (gave up)."""
        when = as_utc(now) if now is not None else utc_now()
        got, created = self.record(alert, now=when, dagster_run_id=dagster_run_id)
        out = self.deliver(alert.incident_id, alert.name, now=when)
        return dataclasses.replace(out, recorded_now=created)

    def get(self, incident_id: str, name: str) -> dict[str, Any] | None:
        """The alert's row (see :mod:`resources.alert_store`), or ``None``."""
        with self.engine.connect() as conn:
            return find(conn, incident_id, name)

    def rows(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Every recorded alert (in ``states`` when given), oldest first."""
        t = alerts_table
        q = sa.select(t).order_by(t.c.id)
        if states is not None:
            q = q.where(t.c.delivery_state.in_(states))
        with self.engine.connect() as conn:
            return [store_row(r) for r in conn.execute(q).mappings()]

    def due(self, now: datetime) -> list[dict[str, Any]]:
        """Pending alerts due at ``now`` (``next_attempt_at <= now``, no live claim), and
        alerts whose state the file does not show yet."""
        t = alerts_table
        when = as_utc(now)
        pending_due = (
            (t.c.delivery_state == "pending")
            & (t.c.next_attempt_at <= when)
            & (t.c.lease_until.is_(None) | (t.c.lease_until <= when))
        )
        q = sa.select(t).where(pending_due | ~t.c.file_synced).order_by(t.c.id)
        with self.engine.connect() as conn:
            return [store_row(r) for r in conn.execute(q).mappings()]

    def deliver(self, incident_id: str, name: str, *, now: datetime | None = None) -> "Delivery":
        """Deliver a recorded alert if it is ``pending``, due and not claimed by another
        deliverer: claim it, POST outside any lock or transaction with the bounded retries of
        the class docstring, record each attempt, then the outcome (``delivered``, ``pending``
        with ``next_attempt_at``, or ``failed``), and write the file's delivery or
        delivery-failed line. Otherwise returns its state unchanged (``posts == 0``).

        Raises ``LookupError`` for an alert never recorded, ``ValueError`` for a bad webhook
        URL or policy field."""
        self._check_policy()
        when = as_utc(now) if now is not None else utc_now()
        url = self._webhook_url()
        t = alerts_table
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            got = find(conn, incident_id, name)
            if got is None:
                raise LookupError(f"alert {name} ({incident_id}) was never recorded")
            claimable = (
                got["delivery_state"] == "pending"
                and got["next_attempt_at"] is not None
                and got["next_attempt_at"] <= when
                and (got["lease_until"] is None or got["lease_until"] <= when)
            )
            if claimable:
                done = conn.execute(
                    t.update()
                    .where((t.c.id == got["id"]) & (t.c.delivery_state == "pending"))
                    .where(t.c.lease_until.is_(None) | (t.c.lease_until <= when))
                    .values(lease_until=when + self._lease())
                )
                claimable = done.rowcount == 1
        if not claimable:
            return Delivery.of(self._sync(got), posts=0)
        attempts, outcome, posts = self._attempts(got, url, when)
        final = self._finish(got, attempts, outcome, when)
        if final["delivery_state"] == "failed":
            _log.error(
                "alert %s (%s): delivery to %s failed for good after %d attempt(s): %s",
                name, incident_id, final["channel"], final["attempts"], final["last_error"],
            )  # fmt: skip
        return Delivery.of(self._sync(final), posts=posts)

    def _attempts(
        self, got: dict[str, Any], url: str | None, when: datetime
    ) -> tuple[int, Outcome, int]:
        """POST up to ``attempts_per_run`` times (no lock held); ``(attempts, last outcome,
        posts)``. Each attempt is recorded as it ends."""
        alert = Alert.from_record(got)
        text, blocks = slack_message(alert)
        attempts, posts, waited = int(got["attempts"]), 0, 0.0
        within = timedelta(hours=self.give_up_after_h)
        while True:
            if url is None:
                outcome = Outcome(
                    ok=False,
                    error=f"no Slack webhook configured (set {SLACK_WEBHOOK_ENV}) "
                    "where the delivery runs",
                )
            else:
                outcome = post_webhook(url, text, blocks, self.slack_timeout_s)
            attempts += 1
            posts += 1
            self._note_attempt(got["id"], attempts, outcome, when)
            if outcome.ok or outcome.permanent or url is None:
                break
            if give_up(attempts, got["recorded_at"], when, max_attempts=self.max_attempts,
                       within=within):  # fmt: skip
                break
            if posts >= self.attempts_per_run:
                break
            delay = next_delay(posts, outcome.retry_after, base=self.retry_base_s,
                               cap=self.max_wait_s)  # fmt: skip
            if waited + delay > self.max_wait_s:
                break  # the server asks for longer than this call may wait: scheduled
            time.sleep(delay)
            waited += delay
        return attempts, outcome, posts

    def _note_attempt(self, alert_id: int, attempts: int, outcome: Outcome, when: datetime) -> None:
        t = alerts_table
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            conn.execute(
                t.update()
                .where(t.c.id == alert_id)
                .values(
                    attempts=attempts,
                    last_status=outcome.status,
                    last_error=None if outcome.ok else outcome.error,
                    last_attempt_at=when,
                )
            )

    def _finish(
        self, got: dict[str, Any], attempts: int, outcome: Outcome, when: datetime
    ) -> dict[str, Any]:
        t = alerts_table
        values: dict[str, Any] = {"lease_until": None}
        within = timedelta(hours=self.give_up_after_h)
        if outcome.ok:
            values.update(delivery_state="delivered", delivered_at=when, next_attempt_at=None,
                          file_synced=False)  # fmt: skip
        elif outcome.permanent or give_up(
            attempts, got["recorded_at"], when, max_attempts=self.max_attempts, within=within
        ):
            values.update(delivery_state="failed", failed_at=when, next_attempt_at=None,
                          file_synced=False)  # fmt: skip
        else:
            delay = next_delay(attempts, outcome.retry_after, base=self.retry_backoff_s,
                               cap=self.retry_backoff_cap_s)  # fmt: skip
            values.update(next_attempt_at=when + timedelta(seconds=delay))
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            conn.execute(t.update().where(t.c.id == got["id"]).values(**values))
            final = find(conn, got["incident_id"], got["name"])
        assert final is not None
        return final

    def requeue(
        self, incident_id: str, name: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """An operator sends a ``failed`` alert again: back to ``pending``, due at ``now``,
        attempts from 0 (the ``alert_delivery`` sensor picks it up). Other states: unchanged.
        Raises ``LookupError`` for an alert never recorded."""
        when = as_utc(now) if now is not None else utc_now()
        t = alerts_table
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            conn.execute(
                t.update()
                .where((t.c.incident_id == incident_id) & (t.c.name == name))
                .where(t.c.delivery_state == "failed")
                .values(
                    delivery_state="pending",
                    attempts=0,
                    next_attempt_at=when,
                    failed_at=None,
                    channel="slack",
                )  # fmt: skip
            )
            got = find(conn, incident_id, name)
        if got is None:
            raise LookupError(f"alert {name} ({incident_id}) was never recorded")
        return got

    # ---------------------------------------------------------------- the file
    def sync_file(self) -> int:
        """Write the file lines of every row the file does not show yet; how many rows it
        could write (a file still unwritable is logged, see :meth:`_sync`)."""
        t = alerts_table
        with self.engine.connect() as conn:
            q = sa.select(t).where(~t.c.file_synced).order_by(t.c.id)
            todo = [store_row(r) for r in conn.execute(q).mappings()]
        return sum(bool(self._sync(got)["file_synced"]) for got in todo)

    def _sync(self, got: dict[str, Any]) -> dict[str, Any]:
        """Make the file show ``got`` (its alert line; its delivery or delivery-failed line),
        under the file's lock (no network), then mark the row synced. A file that cannot be
        written (disk full, a bad directory) is logged as an error and leaves the row
        unsynced: the database holds the alert, delivery goes on, and the next
        ``alert_delivery_job`` run writes the lines (the sensor asks for one)."""
        if got["file_synced"]:
            return got
        try:
            _mirror(self.path, got)
        except OSError as exc:
            _log.error(
                "alert %s (%s): the alerts file %s was not written (%s); the alert is "
                "recorded in the database and its line will be written by the next delivery run",
                got["name"], got["incident_id"], self.path, exc,
            )  # fmt: skip
            return got
        t = alerts_table
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            conn.execute(
                t.update()
                .where((t.c.id == got["id"]) & (t.c.delivery_state == got["delivery_state"]))
                .values(file_synced=True)
            )
        return {**got, "file_synced": True}


@dataclass(frozen=True)
class Delivery:
    """What became of one alert: ``state`` (``none`` | ``pending`` | ``delivered`` |
    ``failed``), ``attempts`` so far, ``last_status`` (HTTP status or ``None``),
    ``last_error`` (no secret), ``next_attempt_at`` (pending only), ``posts`` (POSTs made by
    this call) and ``recorded_now`` (this call recorded the alert)."""

    incident_id: str
    name: str
    channel: str | None
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    posts: int
    recorded_now: bool = False

    @classmethod
    def of(cls, got: Mapping[str, Any], *, posts: int) -> "Delivery":
        return cls(
            incident_id=got["incident_id"],
            name=got["name"],
            channel=got["channel"],
            state=got["delivery_state"],
            attempts=int(got["attempts"]),
            last_status=got["last_status"],
            last_error=got["last_error"],
            next_attempt_at=got["next_attempt_at"],
            posts=posts,
        )

    def summary(self) -> str:
        """One line, e.g. ``pending (slack): 3 attempt(s), last HTTP 429 (...); next attempt
        at 2026-12-01T13:05:00+00:00``."""
        if self.state == "none":
            return "recorded (no channel configured)"
        head = f"{self.state} ({self.channel}): {self.attempts} attempt(s)"
        if self.state != "delivered" and self.last_error:
            head += f", last {self.last_error}"
        if self.state == "pending" and self.next_attempt_at is not None:
            head += f"; next attempt at {self.next_attempt_at.isoformat()}"
        return head

    def metadata(self) -> dict[str, Any]:
        """JSON-able fields for a run's metadata (``delivery_*``)."""
        return {
            "delivery_state": self.state,
            "delivery_channel": self.channel or "",
            "delivery_attempts": self.attempts,
            "delivery_last_status": self.last_status if self.last_status is not None else "",
            "delivery_last_error": self.last_error or "",
            "delivery_next_attempt_at": (
                self.next_attempt_at.isoformat() if self.next_attempt_at else ""
            ),
            "delivery": self.summary(),
        }


def _mirror(path: Path, got: Mapping[str, Any]) -> None:
    """Append the lines the file lacks for the alert row ``got``, under an exclusive ``flock``
    held for the read and the appends only (never across a network call)."""
    key = (got["incident_id"], got["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        rfd = os.open(path, os.O_RDONLY)
        try:
            text = _read_fd(rfd)
        finally:
            os.close(rfd)
        seen: set[tuple[str, Any]] = set()
        for r in _parse_lines(text, path):
            if (r.get("incident_id"), r.get("name")) == key:
                seen.add(
                    (str(r.get("record")), r.get("at") if r.get("record") != "alert" else None)
                )
        if text and not text.endswith("\n"):  # a torn last line: start a fresh one
            os.write(fd, b"\n")
        if ("alert", None) not in seen:
            alert = Alert.from_record(got)
            _append_line(
                fd,
                {
                    "record": "alert",
                    **alert.to_record(),
                    "channel": got["channel"],
                    "recorded_at": got["recorded_at"].isoformat(),
                },
            )
        state = got["delivery_state"]
        if state == "delivered" and not any(s[0] == "delivery" for s in seen):
            _append_line(
                fd,
                {"record": "delivery", "channel": got["channel"], "incident_id": key[0],
                 "name": key[1], "at": got["delivered_at"].isoformat(),
                 "attempts": got["attempts"]},
            )  # fmt: skip
        failed_at = got["failed_at"].isoformat() if got["failed_at"] else None
        if state == "failed" and ("delivery_failed", failed_at) not in seen:
            _append_line(
                fd,
                {"record": "delivery_failed", "channel": got["channel"], "incident_id": key[0],
                 "name": key[1], "at": failed_at, "attempts": got["attempts"],
                 "last_status": got["last_status"], "last_error": got["last_error"]},
            )  # fmt: skip
    finally:
        os.close(fd)


def _format_figure(value: FigureValue) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


def slack_message(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    """``(text, blocks)`` of the Slack message: the fallback text and Block Kit blocks with
    severity, rule, cryptos, figures, incident id, runbook and time."""
    cryptos = ", ".join(alert.cryptos) or "all"
    text = f"[{alert.severity}] {alert.name} on {cryptos}: {alert.message} ({alert.incident_id})"
    figures = "\n".join(f"- {k}: {_format_figure(v)}" for k, v in alert.figures.items()) or "-"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"[{alert.severity}] {alert.name}"[:150]},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:3000]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
                {"type": "mrkdwn", "text": f"*Cryptos*\n{cryptos}"},
                {"type": "mrkdwn", "text": f"*Incident*\n`{alert.incident_id}`"},
                {"type": "mrkdwn", "text": f"*Runbook*\n`{alert.runbook}`"},
                {"type": "mrkdwn", "text": f"*At (UTC)*\n{alert.at:%Y-%m-%d %H:%M}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Figures*\n{figures}"[:3000]}},
    ]
    return text, blocks
