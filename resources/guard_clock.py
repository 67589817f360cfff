"""The guard's clock: what "now" is for the sensors and guard jobs.

Production: the wall clock (UTC). A drill or a test replays the past and evaluates the
sensors tick by tick at simulated times: it gives the resource ``fixed_now`` (an ISO time;
naive = UTC) through the sensor context (``build_sensor_context(resources=...)``) or the run
config of a job, so the sensor functions themselves run unchanged. A fixed time in the future
of the wall clock is refused (the journal and the registry record what happened).
"""

import os
from datetime import datetime

import pandas as pd
from dagster import ConfigurableResource

from resources.db import as_utc, utc_now

__all__ = ["GUARD_NOW_ENV", "GuardClock", "parse_utc"]


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


class GuardClock(ConfigurableResource):
    """``now()``: ``fixed_now`` when set (drills, tests), else ``$CVN_GUARD_NOW`` when set (a
    test that runs the real daemon and must not race the wall clock's hour), else the wall
    clock (UTC). A fixed time in the future is refused, naming where it came from."""

    fixed_now: str = ""

    def now(self) -> datetime:
        name, fixed = "guard_clock.fixed_now", self.fixed_now
        if not fixed:
            name, fixed = GUARD_NOW_ENV, os.environ.get(GUARD_NOW_ENV, "")
        if not fixed:
            return utc_now()
        when = parse_utc(name, fixed)
        if when > utc_now():
            raise ValueError(f"{name} {fixed!r} is in the future")
        return when
