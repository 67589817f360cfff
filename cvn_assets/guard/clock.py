"""The accelerated guard clock (the live drill): market time running faster than the wall.

Three environment variables, read at use and shared by every process of a deployment (the
daemon, the code server, each run's subprocess), so they all agree on "now":

* ``CVN_GUARD_CLOCK_START``: the market time at the origin (ISO; naive = UTC);
* ``CVN_GUARD_CLOCK_ORIGIN``: the wall-clock instant of that start (ISO; naive = UTC);
* ``CVN_GUARD_CLOCK_SPEED``: market seconds per wall second (> 0; default 1: a shifted clock).

``now = start + (wall - origin) * speed``. The clock never runs past the wall clock (the
market's future does not exist): :meth:`AcceleratedClock.at` refuses it. START and ORIGIN
go together; SPEED alone is an error (it would accelerate nothing). Pure: no Dagster.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

__all__ = [
    "CLOCK_ORIGIN_ENV",
    "CLOCK_SPEED_ENV",
    "CLOCK_START_ENV",
    "AcceleratedClock",
    "accelerated_clock",
    "interval_seconds",
]

CLOCK_START_ENV = "CVN_GUARD_CLOCK_START"
CLOCK_ORIGIN_ENV = "CVN_GUARD_CLOCK_ORIGIN"
CLOCK_SPEED_ENV = "CVN_GUARD_CLOCK_SPEED"


def _utc(name: str, value: str) -> datetime:
    """``value`` (ISO text; naive = UTC) as an aware UTC datetime; ValueError naming both."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {value!r} is not an ISO time") from exc
    if ts is pd.NaT:
        raise ValueError(f"{name}: {value!r} is not an ISO time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"{CLOCK_SPEED_ENV}: {value!r} is not a number") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"{CLOCK_SPEED_ENV}: {value!r} must be a finite number > 0")
    return speed


@dataclass(frozen=True)
class AcceleratedClock:
    """Market time ``start`` at wall instant ``origin`` (both aware UTC), running ``speed``
    market seconds per wall second."""

    start: datetime
    origin: datetime
    speed: float

    def at(self, wall: datetime) -> datetime:
        """The market time (aware UTC) at wall instant ``wall`` (aware). ValueError naming
        :data:`CLOCK_START_ENV` and :data:`CLOCK_SPEED_ENV` when it would lie past ``wall``."""
        elapsed = (wall - self.origin).total_seconds()
        now = self.start + timedelta(seconds=elapsed * self.speed)
        if now > wall:
            raise ValueError(
                f"{CLOCK_START_ENV} {self.start.isoformat()} at {CLOCK_SPEED_ENV} {self.speed:g} "
                f"reached {now.isoformat()}, past the wall clock {wall.isoformat()}: the "
                "accelerated clock must stay in the past (an earlier start or a lower speed)"
            )
        return now


def accelerated_clock(env: Mapping[str, str]) -> AcceleratedClock | None:
    """The accelerated clock the environment ``env`` describes, or None when none of its
    three variables is set (empty counts as unset). ValueError naming the variable and the
    value for a bad time or speed, or a missing partner (START without ORIGIN and back,
    SPEED without both)."""
    raw = {k: env.get(k, "").strip() for k in (CLOCK_START_ENV, CLOCK_ORIGIN_ENV, CLOCK_SPEED_ENV)}
    if not any(raw.values()):
        return None
    for name in (CLOCK_START_ENV, CLOCK_ORIGIN_ENV):
        if not raw[name]:
            given = ", ".join(f"{k}={v!r}" for k, v in raw.items() if v)
            raise ValueError(f"{name} is required with {given} (the accelerated guard clock)")
    return AcceleratedClock(
        start=_utc(CLOCK_START_ENV, raw[CLOCK_START_ENV]),
        origin=_utc(CLOCK_ORIGIN_ENV, raw[CLOCK_ORIGIN_ENV]),
        speed=_speed(raw[CLOCK_SPEED_ENV]) if raw[CLOCK_SPEED_ENV] else 1.0,
    )


def interval_seconds(seconds: int, speed: float) -> int:
    """A wall-clock interval for ``seconds`` of market time at ``speed``:
    ``max(1, round(seconds / speed))``. ValueError for ``seconds < 1`` or ``speed <= 0``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"seconds must be an integer >= 1, got {seconds!r}")
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
    return max(1, round(seconds / speed))
