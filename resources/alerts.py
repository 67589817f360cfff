"""The alert sink of the production guard: JSON lines under ``$DAGSTER_HOME``, and Slack.

An :class:`Alert` is a pure, validated value: its rule's ``name``, a ``severity``, the
``cryptos`` concerned, the ``figures`` that fired it, an ``incident_id`` (deterministic, see
:func:`incident_id`, so a retried tick or run reuses it), the ``runbook`` to follow, the time
``at`` (aware UTC) and a one-line ``message``.

:class:`AlertSink` (a Dagster resource) sends one:

1. it appends one JSON line to the alerts file (``alerts_path``, else ``$CVN_ALERTS_PATH``,
   else ``$DAGSTER_HOME/alerts/alerts.jsonl``), unless an alert with the same
   ``(incident_id, name)`` is already there: sending is idempotent, so a re-executed alert
   run does not duplicate;
2. when a Slack incoming webhook is configured (``slack_webhook_url``, e.g.
   ``EnvVar("CVN_SLACK_WEBHOOK_URL")``, else ``$CVN_SLACK_WEBHOOK_URL`` at use), it posts the
   alert with ``slack_sdk``'s ``WebhookClient`` unless that alert was already delivered, and
   then appends a delivery line. A failed delivery raises :class:`AlertDeliveryError` after
   the alert line is written; sending the same alert again retries the delivery only.

The file holds two kinds of lines, both JSON objects with a ``record`` key::

    {"record": "alert", "name": ..., "severity": ..., "cryptos": [...], "figures": {...},
     "incident_id": ..., "runbook": ..., "at": "2026-12-01T13:00:00+00:00", "message": ...,
     "recorded_at": "..."}
    {"record": "delivery", "channel": "slack", "incident_id": ..., "name": ...,
     "at": "..."}

Writers take an exclusive ``flock`` on the file for check-and-append (so concurrent senders
of one alert write it once), append with ``O_APPEND`` in a single ``write`` per line and
``fsync``. Readers (:func:`read_alerts`) need no lock. The webhook URL is a secret: it is
never logged, never put in metadata or in an error message, and hidden from the resource's
``repr``.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from resources.home_source import home_dir

__all__ = [
    "ALERTS_PATH_ENV",
    "SEVERITIES",
    "SLACK_WEBHOOK_ENV",
    "Alert",
    "AlertDeliveryError",
    "AlertSink",
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

#: the allowed severities: the guard's rule levels (P1, P2) and the drift levels
SEVERITIES: tuple[str, ...] = ("P1", "P2", "crit", "warn", "info")

#: JSON scalars a figure may hold
FigureValue = str | int | float | bool | None

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CRYPTO_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_INCIDENT_MAX = 128  # config_audit.incident_id is String(128)

_log = logging.getLogger(__name__)

# slack_sdk logs the full request URL (the secret) at DEBUG and on retries at INFO; its client
# gets this logger, which emits nothing. Failures reach the caller as AlertDeliveryError.
_slack_sdk_logger = logging.getLogger(f"{__name__}.slack_sdk_silenced")
_slack_sdk_logger.setLevel(logging.CRITICAL + 1)
_slack_sdk_logger.propagate = False
_slack_sdk_logger.addHandler(logging.NullHandler())


class AlertDeliveryError(RuntimeError):
    """A channel (Slack) did not accept an alert; the message names the status, never the
    webhook URL. The alert's JSON line was written before."""


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
    from urllib.parse import urlsplit

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
    ``incident_id``, ``runbook``, ``at`` (ISO 8601 UTC text), ``message``, ``recorded_at``
    (when the line was written, ISO 8601 UTC) and ``delivered`` (sorted list of the channels
    that accepted it, e.g. ``["slack"]``). ``Alert.from_record(d)`` rebuilds the value.
    ``path`` ``None``: :func:`default_alerts_path`; a missing file reads as ``[]``.
    """
    records = read_records(path)
    delivered: dict[tuple[Any, Any], set[str]] = {}
    for r in records:
        if r.get("record") == "delivery":
            delivered.setdefault((r.get("incident_id"), r.get("name")), set()).add(
                str(r.get("channel"))
            )
    out = []
    for r in records:
        if r.get("record") != "alert":
            continue
        d = {k: v for k, v in r.items() if k != "record"}
        d["delivered"] = sorted(delivered.get((r.get("incident_id"), r.get("name")), ()))
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


class AlertSink(ConfigurableResource):
    """Where the guard's alerts go: a JSON-lines file, and Slack when configured.

    ``alerts_path``: the field, else ``$CVN_ALERTS_PATH``, else
    ``$DAGSTER_HOME/alerts/alerts.jsonl`` (resolved at use; must be absolute when given).
    ``slack_webhook_url``: the field (use ``EnvVar("CVN_SLACK_WEBHOOK_URL")``), else
    ``$CVN_SLACK_WEBHOOK_URL`` at use; empty: no Slack. (Resolving at use keeps the
    environment's values when a run's config replaces the resource's constructor values.)
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
    slack_timeout_s: int = Field(default=10, description="seconds to wait for Slack")

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

    # ---------------------------------------------------------------- sending
    def send(self, alert: Alert) -> bool:
        """Record ``alert`` and deliver it to Slack when configured; idempotent.

        Returns ``True`` if this call did something (wrote the alert's line, or delivered it
        to Slack where an earlier attempt had failed), ``False`` when the alert's
        ``(incident_id, name)`` was already recorded (and, with Slack, delivered).

        Raises ``TypeError`` for a non-:class:`Alert`, ``ValueError`` for a bad path or
        webhook URL (before anything is written), ``OSError`` if the file cannot be written,
        and :class:`AlertDeliveryError` when Slack answers non-2xx or cannot be reached (the
        alert line is written first; sending again retries the delivery only).
        """
        if not isinstance(alert, Alert):
            raise TypeError(f"AlertSink.send: expected an Alert, got {type(alert).__name__}")
        path = self.path
        url = self._webhook_url()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
            rfd = os.open(path, os.O_RDONLY)
            try:
                text = _read_fd(rfd)
            finally:
                os.close(rfd)
            recorded = delivered = False
            for r in _parse_lines(text, path):
                if (r.get("incident_id"), r.get("name")) != alert.key:
                    continue
                if r.get("record") == "alert":
                    recorded = True
                elif r.get("record") == "delivery" and r.get("channel") == "slack":
                    delivered = True
            if text and not text.endswith("\n"):  # a torn last line: start a fresh one
                os.write(fd, b"\n")
            did = False
            if not recorded:
                _append_line(
                    fd,
                    {"record": "alert", **alert.to_record(), "recorded_at": _now_iso()},
                )
                did = True
            if url is not None and not delivered:
                # still under the lock: two senders of one alert post it once
                self._post_slack(url, alert)
                _append_line(
                    fd,
                    {
                        "record": "delivery",
                        "channel": "slack",
                        "incident_id": alert.incident_id,
                        "name": alert.name,
                        "at": _now_iso(),
                    },
                )
                did = True
            return did
        finally:
            os.close(fd)

    def _post_slack(self, url: str, alert: Alert) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(url, timeout=self.slack_timeout_s, logger=_slack_sdk_logger)
        text, blocks = slack_message(alert)
        try:
            response = client.send(text=text, blocks=blocks)
        except Exception as err:  # network errors; never chain: the cause may hold the URL
            detail = _redact(f"{type(err).__name__}: {err}", url)
            raise AlertDeliveryError(
                f"alert {alert.name} ({alert.incident_id}): Slack webhook not reached: {detail}"
            ) from None
        if not 200 <= response.status_code < 300:
            body = _redact(str(response.body or "")[:200], url)
            raise AlertDeliveryError(
                f"alert {alert.name} ({alert.incident_id}): Slack webhook answered HTTP "
                f"{response.status_code} ({body!r}); the alert is recorded in the alerts file, "
                "send it again to retry the delivery"
            )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _redact(text: str, url: str) -> str:
    from urllib.parse import urlsplit

    out = text.replace(url, "<webhook url>")
    parts = urlsplit(url)
    if parts.path and len(parts.path) > 1:
        out = out.replace(parts.path, "<webhook path>")
    return out


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
