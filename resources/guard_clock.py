"""The guard's clock: what "now" is for the sensors and guard jobs.

Production: the wall clock (UTC). A drill or a test replays the past and evaluates the
sensors tick by tick at simulated times: it gives the resource ``fixed_now`` (an ISO time;
naive = UTC) through the sensor context (``build_sensor_context(resources=...)``) or the run
config of a job, so the sensor functions themselves run unchanged. A fixed time in the future
of the wall clock is refused (the journal and the registry record what happened).

The live drill runs the real daemon on an **accelerated** clock
(:mod:`cvn_assets.guard.clock`: ``CVN_GUARD_CLOCK_START``, ``CVN_GUARD_CLOCK_ORIGIN``,
``CVN_GUARD_CLOCK_SPEED``, read at use by every process); :func:`guard_interval` shortens the
sensors' minimum intervals by the same speed, so they tick once per market interval.
"""

import os
from datetime import datetime

import pandas as pd
from dagster import ConfigurableResource

from cvn_assets.guard.clock import accelerated_clock, interval_seconds
from resources.db import as_utc, utc_now

__all__ = ["GUARD_NOW_ENV", "GuardClock", "guard_interval", "parse_utc", "wall_clock"]


def parse_utc(name: str, value: str) -> datetime:
    """``value`` (ISO text; naive = UTC) as an aware UTC datetime; ValueError naming ``name``."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {value!r} is not an ISO time") from exc
    if ts is pd.NaT:
        raise ValueError(f"{name}: {value!r} is not an ISO time")
    return as_utc(ts.to_pydatetime())


#: a fixed clock for a whole code location (tests under the real daemon): read at use
GUARD_NOW_ENV = "CVN_GUARD_NOW"


def wall_clock() -> datetime:
    """The wall clock (aware UTC); the one place the guard clock reads it (tests replace it)."""
    return utc_now()


def guard_interval(seconds: int) -> int:
    """A sensor's ``minimum_interval_seconds`` for ``seconds`` of market time: ``seconds``
    on the wall clock, ``max(1, round(seconds / speed))`` under the accelerated clock of the
    environment (read when the sensor is defined). ValueError for a bad clock setting
    (naming the variable) or ``seconds < 1``."""
    clock = accelerated_clock(os.environ)
    return interval_seconds(seconds, clock.speed if clock is not None else 1.0)


class GuardClock(ConfigurableResource):
    """``now()``, by precedence: ``fixed_now`` when set (drills, tests); else
    ``$CVN_GUARD_NOW`` (a test that runs the real daemon and must not race the wall clock's
    hour); else the accelerated clock of ``$CVN_GUARD_CLOCK_*`` (the live drill); else the
    wall clock (UTC). A time in the future of the wall clock is refused, naming where it came
    from (ValueError); so is a bad setting."""

    fixed_now: str = ""

    def now(self) -> datetime:
        name, fixed = "guard_clock.fixed_now", self.fixed_now
        if not fixed:
            name, fixed = GUARD_NOW_ENV, os.environ.get(GUARD_NOW_ENV, "")
        wall = wall_clock()
        if not fixed:
            clock = accelerated_clock(os.environ)
            return wall if clock is None else clock.at(wall)
        when = parse_utc(name, fixed)
        if when > wall:
            raise ValueError(f"{name} {fixed!r} is in the future")
        return when
