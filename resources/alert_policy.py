"""When to retry an alert's delivery, and when to give up (pure: no I/O, no Dagster).

A delivery attempt ends in an :class:`Outcome`: accepted (2xx), a transient failure (HTTP 429,
408, 5xx; a timeout, a refused connection, a name that does not resolve) worth retrying, or a
permanent one (any other 4xx: the webhook is revoked, archived or the payload refused) that no
retry can mend. :func:`retry_after_seconds` reads an HTTP ``Retry-After`` header (delta-seconds
or an HTTP date); :func:`next_delay` is the wait before the next attempt: the server's
``Retry-After`` when it gives one, never less than the exponential backoff
``base * 2**(attempts - 1)`` capped at ``cap`` (all in seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

__all__ = [
    "Outcome",
    "classify_status",
    "give_up",
    "next_delay",
    "retry_after_seconds",
]

#: HTTP statuses worth retrying: rate limited, request timeout, server errors
_TRANSIENT = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt: ``ok``; else ``permanent`` (no retry can help) or transient;
    ``status`` (HTTP status, ``None`` when no answer), ``error`` (one line, no secret) and
    ``retry_after`` (seconds the server asked to wait, ``None`` when it did not)."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False


def classify_status(status: int) -> str:
    """``"ok"`` (2xx), ``"transient"`` (408, 425, 429, 5xx) or ``"permanent"`` (other)."""
    if 200 <= status < 300:
        return "ok"
    if status in _TRANSIENT or 500 <= status < 600:
        return "transient"
    return "permanent"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header value at ``now`` (aware).

    ``"1"`` -> 1.0; an HTTP date -> seconds from ``now`` to it (0.0 if past); ``None``, empty,
    negative or unreadable -> ``None`` (the caller's backoff applies).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def next_delay(attempts: int, retry_after: float | None, *, base: float, cap: float) -> float:
    """Seconds before attempt ``attempts + 1``: ``max(retry_after, min(cap, base *
    2**(attempts - 1)))`` (``attempts >= 1`` made so far). ``retry_after`` is honoured even
    above ``cap``: the server said when. Raises ``ValueError`` for ``attempts < 1`` or a
    negative ``base``/``cap``."""
    if attempts < 1:
        raise ValueError(f"next_delay: attempts must be >= 1, got {attempts}")
    if base < 0 or cap < 0:
        raise ValueError(f"next_delay: base and cap must be >= 0, got {base}, {cap}")
    backoff = min(cap, base * 2.0 ** min(attempts - 1, 60))
    return max(backoff, retry_after or 0.0)


def give_up(
    attempts: int, recorded_at: datetime, now: datetime, *, max_attempts: int, within: timedelta
) -> bool:
    """Whether delivery stops for good: ``attempts >= max_attempts`` or ``now`` is past
    ``recorded_at + within``."""
    return attempts >= max_attempts or now >= recorded_at + within
