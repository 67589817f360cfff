"""The drill's phase report (``python -m cvn_assets.drill --scenario crash --profile``): wall and
CPU seconds per phase (the sweep, the champions, the daily ``paper_job`` runs, the sensor
evaluations, the runs the sensors launched, by job), so a change's effect on each is visible.

CPU seconds are the process's user + system time plus that of its waited-for children
(:func:`os.times`): every thread counts (XGBoost's OpenMP threads included), so on a busy
machine CPU seconds are the figure to compare, wall seconds depend on the load.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class PhaseRow:
    """One phase's totals: ``wall`` and ``cpu`` in seconds, ``count`` entries."""

    wall: float = 0.0
    cpu: float = 0.0
    count: int = 0


@dataclass
class Phases:
    """Wall and CPU seconds per named phase, summed over the phase's entries (in first-entry
    order). Phases must not nest (a nested phase's time would be counted twice)."""

    rows: dict[str, PhaseRow] = field(default_factory=dict)
    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=cpu_seconds)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall and CPU seconds of the ``with`` body to phase ``name``."""
        w0, c0 = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            row = self.rows.setdefault(name, PhaseRow())
            row.wall += time.perf_counter() - w0
            row.cpu += cpu_seconds() - c0
            row.count += 1

    def table(self) -> str:
        """The phases as a Markdown table with their share of the total CPU, an ``other``
        row (time outside every phase) and the ``total`` since this object was made."""
        total_wall, total_cpu = time.perf_counter() - self.wall0, cpu_seconds() - self.cpu0
        other = PhaseRow(
            total_wall - sum(r.wall for r in self.rows.values()),
            total_cpu - sum(r.cpu for r in self.rows.values()),
        )
        lines = [
            "| phase | count | wall s | CPU s | CPU share |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in [*self.rows.items(), ("other", other), ("total", None)]:
            r = r or PhaseRow(total_wall, total_cpu)
            share = 100 * r.cpu / total_cpu if total_cpu > 0 else 0.0
            count = str(r.count) if r.count else ""
            lines.append(f"| {name} | {count} | {r.wall:.1f} | {r.cpu:.1f} | {share:.1f} % |")
        return "\n".join(lines)
