"""One POST of an alert to a Slack incoming webhook, classified (no retry here: the caller's
policy, :mod:`resources.alert_policy`, decides).

Uses ``slack_sdk``'s ``WebhookClient`` with its retry handlers turned off (its default retries
a connection error once, which would hide an attempt) and a logger that emits nothing
(``slack_sdk`` logs the request URL, a secret). The webhook URL never appears in an
:class:`~resources.alert_policy.Outcome`: errors are redacted.
"""

import logging
import socket
import urllib.error
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.webhook import WebhookClient

from resources.alert_policy import Outcome, classify_status, retry_after_seconds

__all__ = ["post_webhook", "redact"]

_silenced = logging.getLogger(f"{__name__}.slack_sdk_silenced")
_silenced.setLevel(logging.CRITICAL + 1)
_silenced.propagate = False
_silenced.addHandler(logging.NullHandler())


def redact(text: str, url: str) -> str:
    """``text`` with the webhook URL and its path replaced by placeholders."""
    out = text.replace(url, "<webhook url>")
    path = urlsplit(url).path
    if path and len(path) > 1:
        out = out.replace(path, "<webhook path>")
    return out


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if str(key).lower() == name.lower():
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def _describe_error(err: BaseException, timeout_s: float) -> str:
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"timeout: no answer within {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"host name not resolved ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return f"{type(err).__name__}: {err}"


def post_webhook(url: str, text: str, blocks: list[dict[str, Any]], timeout_s: float) -> Outcome:
    """POST ``{"text", "blocks"}`` to ``url`` once, waiting at most ``timeout_s`` for each
    socket operation (a hung endpoint ends as a timeout). Never raises for the channel's
    failures: they are the :class:`Outcome` (HTTP status, redacted error, ``Retry-After``)."""
    client = WebhookClient(url, timeout=timeout_s, logger=_silenced, retry_handlers=[])  # type: ignore[arg-type]
    try:
        response = client.send(text=text, blocks=blocks)
    except Exception as err:  # network errors; never chained: the cause may hold the URL
        return Outcome(ok=False, error=redact(_describe_error(err, timeout_s), url)[:300])
    status = int(response.status_code)
    kind = classify_status(status)
    if kind == "ok":
        return Outcome(ok=True, status=status)
    body = redact(str(response.body or "")[:200], url)
    retry_after = retry_after_seconds(_header(response.headers, "Retry-After"), datetime.now(UTC))
    return Outcome(
        ok=False,
        status=status,
        error=f"HTTP {status} ({body!r})",
        retry_after=retry_after,
        permanent=kind == "permanent",
    )
