"""The guard's clock: what "now" is for the sensors and guard jobs.

Production: the wall clock (UTC). A drill or a test replays the past and evaluates the
sensors tick by tick at simulated times: it gives the resource ``fixed_now`` (an ISO time;
naive = UTC) through the sensor context (``build_sensor_context(resources=...)``) or the run
config of a job, so the sensor functions themselves run unchanged. A fixed time in the future
of the wall clock is refused (the journal and the registry record what happened).
"""

from datetime import datetime

import pandas as pd
from dagster import ConfigurableResource

from resources.db import as_utc, utc_now

__all__ = ["GuardClock", "parse_utc"]


def parse_utc(name: str, value: str) -> datetime:
    """``value`` (ISO text; naive = UTC) as an aware UTC datetime; ValueError naming ``name``."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {value!r} is not an ISO time") from exc
    if ts is pd.NaT:
        raise ValueError(f"{name}: {value!r} is not an ISO time")
    return as_utc(ts.to_pydatetime())


class GuardClock(ConfigurableResource):
    """``now()``: ``fixed_now`` when set (drills, tests), else the wall clock (UTC)."""

    fixed_now: str = ""

    def now(self) -> datetime:
        if not self.fixed_now:
            return utc_now()
        when = parse_utc("guard_clock.fixed_now", self.fixed_now)
        if when > utc_now():
            raise ValueError(f"guard_clock.fixed_now {self.fixed_now!r} is in the future")
        return when
