"""Tables of the detector benchmark (issue 23): false alarms on a null, delays on faults
(pure; :mod:`cvn_assets.guard.detector_bench` fills them)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DetectorTable", "NullRate", "fault_delay", "null_rate", "summarize"]

DAY = pd.Timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class NullRate:
    """False alarms of one detector on a no-change null: ``alerts`` alarming days out of
    ``days`` evaluated over ``streams`` runs (cryptos) side by side; ``per_30d = 30 * alerts /
    days`` (per crypto, NaN without a day) and ``book_30d = streams * per_30d`` (what an
    on-call engineer gets from all the cryptos together: issue 23's target, <= 1)."""

    alerts: int
    days: int
    streams: int = 1

    @property
    def per_30d(self) -> float:
        return 30.0 * self.alerts / self.days if self.days else math.nan

    @property
    def book_30d(self) -> float:
        return self.streams * self.per_30d


def null_rate(flags: Sequence[pd.Series]) -> NullRate:
    """Pool alarming days over several null runs (e.g. the cryptos)."""
    return NullRate(
        int(sum(int(f.sum()) for f in flags)), int(sum(len(f) for f in flags)), len(flags)
    )


def fault_delay(flags: pd.Series, onset: pd.Timestamp, horizon: pd.Timedelta) -> float:
    """Days from ``onset`` to the first alarming evaluation in ``[onset, onset + horizon]``
    (``inf``: none). ``flags`` is indexed by the evaluation times (days)."""
    win = flags[(flags.index >= onset) & (flags.index <= onset + horizon)]
    hit = win[win]
    if hit.empty:
        return math.inf
    return float((hit.index[0] - onset) / DAY)


@dataclasses.dataclass(frozen=True)
class DetectorTable:
    """One detector's measured table: the null rate per null kind, and per fault the
    delays of its runs."""

    detector: str
    nulls: Mapping[str, NullRate]
    delays: Mapping[str, Sequence[float]]

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, r in self.nulls.items():
            out.append({"case": f"null: {name}", "far_30d": r.per_30d, "book_30d": r.book_30d,
                        "alerts": r.alerts, "days": r.days, "streams": r.streams})  # fmt: skip
        for name, d in self.delays.items():
            arr = np.asarray(d, dtype=np.float64)
            out.append(
                {
                    "case": f"fault: {name}",
                    "runs": int(arr.size),
                    "median_delay_d": float(np.median(arr)) if arr.size else math.nan,
                    "within_1d": float(np.mean(arr <= 1.0)) if arr.size else math.nan,
                    "within_7d": float(np.mean(arr <= 7.0)) if arr.size else math.nan,
                }
            )
        return out

    def markdown(self) -> str:
        # the P1 and the any-champion P2 judge the whole book: one stream, not one per crypto
        per = "per book (alerts / book-days)" if self.detector in BOOK_RULES else (
            "per crypto (alerts / days)")  # fmt: skip
        lines = [
            f"### {self.detector}",
            "",
            f"| case | FAR / 30 d {per} | FAR / 30 d, all cryptos | "
            "median delay (d) | within 1 d | within 7 d |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows():
            if r["case"].startswith("null"):
                lines.append(f"| {r['case']} | {r['far_30d']:.2f} ({r['alerts']} / {r['days']}) "
                             f"| {r['book_30d']:.2f} | | | |")  # fmt: skip
            else:
                lines.append(
                    f"| {r['case']} ({r['runs']} runs) | | | {_fmt_delay(r['median_delay_d'])} | "
                    f"{_pct(r['within_1d'])} | {_pct(r['within_7d'])} |"
                )
        return "\n".join(lines)


#: detectors whose streams are the book (one per run), not one per crypto
BOOK_RULES = ("expectancy_p1", "expectancy_any")


def _fmt_delay(x: float) -> str:
    return "never" if math.isinf(x) else "-" if math.isnan(x) else f"{x:.2f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f} %"


def summarize(
    nulls: Mapping[str, Mapping[str, Sequence[pd.Series]]],
    delays: Mapping[str, Mapping[str, Sequence[float]]],
) -> list[DetectorTable]:
    """``nulls``: null kind -> detector -> the flag Series of its runs; ``delays``: fault ->
    detector -> the delays of its runs. One :class:`DetectorTable` per detector met."""
    detectors: list[str] = []
    for per in (*nulls.values(), *delays.values()):
        detectors += [d for d in per if d not in detectors]
    return [
        DetectorTable(
            d,
            {k: null_rate(per[d]) for k, per in nulls.items() if d in per},
            {f: per[d] for f, per in delays.items() if d in per},
        )
        for d in detectors
    ]
