"""A config flag over time: its audit history as a step function (pure; no Dagster, no SQL).

The guard's flags (``trading_halted``, ``CVN_LOSS_FUNCTION``; :mod:`resources.config_store`)
change by audited compare-and-sets. Whatever reads a flag *per hour of the past* -- the paper
trading replay deciding whether an hour could open a trade -- must use the value that held at
that hour, not the value at the time of the run: a day replayed after a halt was set must not
be halted before the halt, and a day replayed after the halt was cleared must still be halted
during it. :func:`flag_history` turns the audit rows into a :class:`FlagHistory`:

* **value at an instant t**: the ``new_value`` of the last change with ``changed_at <= t``
  (a change applies from its own instant on: right-continuous). Several changes at the same
  instant: the last one (audit order) wins.
* **before the first change**: the first row's ``old_value``; when the first row is the flag's
  creation (``old_value`` None: the migration's seed, written when the database was created)
  its ``new_value`` is the flag's initial value and holds from the beginning of time (the
  seed's own ``changed_at`` is when the database was made, not when the value began); with
  no rows at all, ``default``.
* **value at an hour's decision** (:meth:`FlagHistory.at_decision`): an hourly candle opening
  at ``hour`` is decided at its close, ``hour + 1 h`` (:data:`DECISION_LAG`; the replay's
  convention, :mod:`cvn_assets.guard.paper`), so the hour uses the value at ``hour + 1 h``. A change
  at exactly a decision time applies to that decision: a halt at 15:00:00 halts the 14:00
  candle's decision (taken at 15:00) and every later one; a clear at 09:00:00 lets the 08:00
  candle's decision (taken at 09:00) trade again. A halt at 14:30 halts the 14:00 candle's
  decision too (it is taken at 15:00, after the halt).

Pure function of the rows: a replay of a past day gives the same answer whenever it runs, as
long as no change is later recorded *inside* that day (changes after it never matter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["DECISION_LAG", "FlagHistory", "flag_history", "utc_instant"]

#: an hourly candle opening at ``hour`` is decided at its close
DECISION_LAG = pd.Timedelta(hours=1)


def utc_instant(name: str, value: Any) -> pd.Timestamp:
    """Aware UTC Timestamp (ns); ValueError naming ``name`` for naive or non-times."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {value!r} is not a time") from exc
    if ts is pd.NaT:
        raise ValueError(f"{name}: {value!r} is not a time")
    if ts.tzinfo is None:
        raise ValueError(f"{name}: naive time {value!r} refused: give a UTC offset")
    return ts.tz_convert("UTC").as_unit("ns")


@dataclass(frozen=True)
class FlagHistory:
    """``flag`` over time: ``initial`` before ``changed_at[0]``, then ``values[i]`` over
    ``[changed_at[i], changed_at[i + 1])`` (``changed_at`` non-decreasing, aware UTC)."""

    flag: str
    initial: str
    changed_at: tuple[pd.Timestamp, ...]
    values: tuple[str, ...]

    def _keys(self) -> NDArray[np.int64]:
        return np.array([t.value for t in self.changed_at], dtype=np.int64)

    def values_at(self, instants: Any) -> NDArray[np.object_]:
        """The value at each instant (aware; naive refused): an object array of str."""
        idx = pd.DatetimeIndex(instants)
        if len(idx) and idx.tz is None:
            raise ValueError(f"{self.flag}: naive instants refused ({idx[0]!r}): give UTC")
        ns = idx.tz_convert("UTC").as_unit("ns").asi8
        i = np.searchsorted(self._keys(), ns, side="right") - 1
        table = np.array([self.initial, *self.values], dtype=object)
        return table[i + 1]

    def value_at(self, when: Any) -> str:
        """The value at the instant ``when`` (changes at exactly ``when`` included)."""
        ts = utc_instant(f"{self.flag}: when", when)
        return str(self.values_at(pd.DatetimeIndex([ts]))[0])

    def at_decision(self, hour: Any) -> str:
        """The value the decision of the candle opening at ``hour`` sees (at ``hour + 1 h``)."""
        return self.value_at(utc_instant(f"{self.flag}: hour", hour) + DECISION_LAG)

    def at_decisions(self, hours: Any) -> NDArray[np.object_]:
        """:meth:`at_decision` of every hour (vectorised)."""
        return self.values_at(pd.DatetimeIndex(hours) + DECISION_LAG)

    def is_value(self, value: str) -> Callable[[pd.Timestamp], bool]:
        """``hour -> at_decision(hour) == value`` (e.g. ``is_value("true")`` is the replay's
        ``halted``)."""

        def check(hour: pd.Timestamp) -> bool:
            return self.at_decision(hour) == value

        return check

    def changes_within(self, start: Any, end: Any) -> list[tuple[pd.Timestamp, str]]:
        """The changes with ``start <= changed_at < end``, in order."""
        lo, hi = utc_instant("start", start), utc_instant("end", end)
        return [(t, v) for t, v in zip(self.changed_at, self.values, strict=True) if lo <= t < hi]


def flag_history(flag: str, rows: Iterable[Mapping[str, Any]], *, default: str) -> FlagHistory:
    """The step function of ``flag`` from its audit rows, **in audit order** (``id``).

    Each row needs ``changed_at`` (aware; naive: ValueError naming the row), ``new_value``
    and ``old_value`` (None for a creation). Rules: see the module docstring. Raises
    ValueError naming the row when a change precedes the one before it (the audit is ordered
    in time; a first creation row's own time does not count), or a row lacks a field.
    """
    items = list(rows)
    for i, r in enumerate(items):
        missing = [k for k in ("changed_at", "new_value", "old_value") if k not in r]
        if missing:
            raise ValueError(f"{flag}: audit row {i} lacks {missing}")
    if not items:
        return FlagHistory(flag, default, (), ())
    first = items[0]
    if first["old_value"] is None:  # creation: the initial value, from the beginning
        initial, steps = str(first["new_value"]), items[1:]
        offset = 1
    else:
        initial, steps, offset = str(first["old_value"]), items, 0
    times: list[pd.Timestamp] = []
    values: list[str] = []
    for j, r in enumerate(steps):
        ts = utc_instant(f"{flag}: audit row {j + offset} changed_at", r["changed_at"])
        if times and ts < times[-1]:
            raise ValueError(
                f"{flag}: audit row {j + offset} changed_at {ts.isoformat()} precedes the "
                f"previous change at {times[-1].isoformat()}"
            )
        times.append(ts)
        values.append(str(r["new_value"]))
    return FlagHistory(flag, initial, tuple(times), tuple(values))
