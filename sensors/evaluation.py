"""What the guard's sensors evaluate: the journal windows fed to the rules of
:mod:`cvn_assets.guard.drift`, as of a given time (no Dagster here; the sensors are thin).

Every window ends at ``as_of`` and uses only what was known then: trades whose ``exit_time``
is in ``(as_of - h, as_of]``, prediction rows whose ``hour`` closed by ``as_of`` (``hour + 1 h
<= as_of``), labels only once matured (``label_known_at <= as_of``). The **live model** of a
crypto is the registry's champion at ``as_of`` (``ModelRegistry.live_at``); the drift windows
keep only the rows that model produced, so its references (training deciles, sharpness mean,
OOS f1_buy, f1 threshold: ``model_versions.reference_stats_json``) are compared with data it
served, and after a rollback the new champion starts from an empty window ("insufficient",
never a false alarm caused by the rollback itself).

**Stale journals** (issue 20): a window is judged complete only when the crypto's journal
reaches ``as_of``: :func:`journal_ends` reads each crypto's last journaled hour
(:func:`resources.journal.last_journaled_hours`) and, for a crypto with none, when its first
champion went live (the registry's alias history); :func:`cvn_assets.guard.drift.stale_verdict`
then turns an ``ok`` / ``insufficient`` verdict on a journal more than 2 h behind into
``stale`` (expectancy per crypto, and each drift detector). The ``guard_stale`` sensor pages
on the same :class:`JournalEnd`.

Reads per crypto and evaluation: <= 48 h of trades, <= 14 days of predictions (336 rows):
the cost of a tick does not grow with the journal (see ``bench/bench_sensors.py``). The reads
are the journal's (:func:`resources.journal.read_model_trades`,
:func:`resources.journal.read_model_predictions`), on one connection per evaluation; this
module runs no SQL of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from cvn_assets.ablation.guardrails import FOCAL
from cvn_assets.guard.drift import (
    EXPECTANCY_ANY_MIN_CRYPTOS,
    EXPECTANCY_MIN_TRADES,
    STALE_AFTER,
    Verdict,
    expectancy_alert,
    expectancy_last_trades,
    expectancy_negative_any,
    expectancy_negative_focal,
    journal_lag,
    journal_stale,
    stale_verdict,
)
from cvn_assets.guard.integrity import INTEGRITY_RECENT, RECOMPUTE_HISTORY, recompute_features
from cvn_assets.guard.window_rules import (
    CONCEPT_DAYS,
    DATA_DRIFT_DAYS,
    SHARPNESS_DAYS,
    drift_verdicts,
    drift_windows,
    integrity_verdict,
)
from cvn_assets.market.features import WARMUP_BARS
from resources.journal import (
    last_journaled_hours,
    read_model_predictions,
    read_model_trades,
)
from resources.model_registry import ModelRegistry

__all__ = [
    "DATA_DRIFT_DAYS",
    "CONCEPT_DAYS",
    "SHARPNESS_DAYS",
    "SPARSE_LOOKBACK",
    "DriftEvaluation",
    "RowWindow",
    "ChampionsExpectancy",
    "ExpectancyEvaluation",
    "JournalEnd",
    "SparseExpectancy",
    "drift_verdicts",
    "drift_windows",
    "evaluate_any_expectancy",
    "evaluate_drift",
    "evaluate_integrity",
    "evaluate_expectancy",
    "evaluate_sparse_expectancy",
    "journal_ends",
    "live_champions",
]


def live_champions(
    registry: ModelRegistry, cryptos: Iterable[str], as_of: datetime
) -> dict[str, dict[str, Any] | None]:
    """crypto -> the version that was champion at ``as_of`` (None before the first one)."""
    return {c: registry.live_at(c, as_of) for c in cryptos}


@dataclasses.dataclass(frozen=True)
class JournalEnd:
    """Where a crypto's journal stops: ``last_hour`` (its last journaled ``predictions.hour``,
    a candle's open time, aware UTC; None: no hour journaled) and ``live_since`` (when its
    first champion went live; read only when ``last_hour`` is None)."""

    crypto: str
    last_hour: datetime | None
    live_since: datetime | None = None

    def lag(self, as_of: datetime) -> timedelta | None:
        """:func:`cvn_assets.guard.drift.journal_lag` at ``as_of``."""
        return journal_lag(self.last_hour, self.live_since, as_of)

    def stale(self, as_of: datetime, after: timedelta = STALE_AFTER) -> bool:
        """Whether the journal is more than ``after`` (2 h) behind ``as_of``."""
        return journal_stale(self.last_hour, self.live_since, as_of, after=after)

    def judge(self, verdict: Verdict, as_of: datetime) -> Verdict:
        """``verdict`` (of a window ending at ``as_of``) made ``stale`` when the journal is."""
        return stale_verdict(verdict, self.last_hour, self.live_since, as_of)


def journal_ends(registry: ModelRegistry, cryptos: Iterable[str]) -> dict[str, JournalEnd]:
    """crypto -> its :class:`JournalEnd`: one indexed ``MAX(hour)`` per crypto, and the
    champion alias history of the cryptos with no hour journaled."""
    cryptos = list(cryptos)
    last = last_journaled_hours(registry.engine, cryptos)
    out: dict[str, JournalEnd] = {}
    for c in cryptos:
        hour = last.get(c)
        if hour is not None:
            out[c] = JournalEnd(c, hour.to_pydatetime())
            continue
        starts = [r["valid_from"] for r in registry.history(c, "champion")]
        out[c] = JournalEnd(c, None, min(starts) if starts else None)
    return out


#: the P1's window (spec 6.2) and the warn window (spec 6.1)
WINDOW_48H = timedelta(hours=48)
WINDOW_24H = timedelta(hours=24)
#: how far back the separate sparse-trader rule may reach (``expectancy_negative_sparse``)
SPARSE_LOOKBACK = timedelta(days=7)


def _iso(t: datetime) -> str:
    return pd.Timestamp(t).tz_convert("UTC").isoformat()


def _window_figures(as_of: datetime, min_trades: int, verdict: Verdict) -> dict[str, Any]:
    """The alert figures every expectancy combination shares: the 48 h / 24 h windows'
    bounds, the trade minimum, and how many cryptos alarm against how many are needed."""
    return {
        "window_48h_start": _iso(as_of - WINDOW_48H),
        "window_24h_start": _iso(as_of - WINDOW_24H),
        "window_end": _iso(as_of),
        "min_trades": min_trades,
        "crypto_count": int(verdict.value) if math.isfinite(verdict.value) else None,
        "crypto_count_needed": int(verdict.threshold) if math.isfinite(verdict.threshold) else None,
    }


def _pct(x: float) -> str:
    return f"{100.0 * x:+.3f} %"


def _crypto_figures(crypto: str, cv: Verdict, version: int | None) -> dict[str, Any]:
    """``<crypto>_*`` figures of one crypto's expectancy verdict: model version, level, trade
    counts, means and critical means (fractions), and how far behind a stale journal is."""
    out: dict[str, Any] = {
        f"{crypto}_model_version": version,
        f"{crypto}_level": cv.level,
        f"{crypto}_n_48h": int(cv.details["n_48h"]),
        f"{crypto}_n_24h": int(cv.details["n_24h"]),
    }
    for k in ("mean_48h", "critical_48h", "mean_24h", "critical_24h", "hours_behind"):
        if k in cv.details:
            out[f"{crypto}_{k}"] = round(float(cv.details[k]), 6)
    if "journal_end" in cv.details:
        out[f"{crypto}_journal_end"] = cv.details["journal_end"]
    return out


def _evidence(crypto: str, cv: Verdict) -> str:
    """``<crypto> 48 h mean ... < critical ... (n ...)`` (24 h for a warn)."""
    w = "48h" if cv.level == "crit" else "24h"
    return (
        f"{crypto} {w[:2]} h mean {_pct(cv.details[f'mean_{w}'])} < critical "
        f"{_pct(cv.details[f'critical_{w}'])} (n {cv.details[f'n_{w}']})"
    )


@dataclasses.dataclass(frozen=True)
class ExpectancyEvaluation:
    """The P1 rule's inputs and verdict at ``as_of`` (spec 6.2: net expectancy over the last
    48 h on >= 2 focal cryptos; the 24 h window only warns).

    ``per_crypto`` holds :func:`cvn_assets.guard.drift.expectancy_alert` on the live champion's
    trades exiting in ``(as_of - 48 h, as_of]`` and ``(as_of - 24 h, as_of]`` for every crypto
    with a live champion; only ``focal_cryptos`` enter the rule, so only they enter the
    alert's figures and message. ``versions``: crypto -> live model version id.
    """

    as_of: datetime
    verdict: Verdict  # expectancy_negative_focal over the focal cryptos
    per_crypto: Mapping[str, Verdict]  # every crypto with a live champion
    focal_cryptos: tuple[str, ...]  # cryptos whose live champion is focal-trained
    versions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    min_trades: int = EXPECTANCY_MIN_TRADES
    #: crypto -> the live champion's variant and loss function (every crypto with one)
    variants: Mapping[str, str] = dataclasses.field(default_factory=dict)
    losses: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """Flat JSON scalars for the alert: the two windows' bounds and, per focal crypto,
        the live model version, level, trade counts, means and critical means (fractions)."""
        v = self.verdict
        out: dict[str, Any] = {
            **_window_figures(self.as_of, self.min_trades, v),
            "focal_cryptos": ",".join(self.focal_cryptos),
        }
        for crypto in self.focal_cryptos:
            out.update(_crypto_figures(crypto, self.per_crypto[crypto], self.versions.get(crypto)))
        return out

    def _evidence(self, crypto: str) -> str:
        return _evidence(crypto, self.per_crypto[crypto])

    def message(self) -> str:
        """One line stating the windows and, per alarming focal crypto, its evidence."""
        v = self.verdict
        alarming = [c for c in self.focal_cryptos if self.per_crypto[c].alarm]
        end = f"{self.as_of:%Y-%m-%dT%H:%M}Z"
        if v.level == "crit":
            crit = [c for c in alarming if self.per_crypto[c].level == "crit"]
            head = (
                f"P1: net expectancy < 0 over the 48 h to {end} (trades exiting in "
                f"({self.as_of - WINDOW_48H:%Y-%m-%dT%H:%M}Z, {end}]) on {len(crit)} focal "
                "cryptos: "
            )
            return head + "; ".join(self._evidence(c) for c in crit)
        if v.level == "warn":
            return (
                f"net expectancy < 0 on {len(alarming)} focal cryptos (48 h or 24 h windows "
                f"to {end}): " + "; ".join(self._evidence(c) for c in alarming)
            )
        return f"{v.level}: {v.reason} (48 h window to {end})"


def evaluate_expectancy(
    registry: ModelRegistry,
    cryptos: Iterable[str],
    as_of: datetime,
    *,
    min_trades: int | None = None,
    alpha: float | None = None,
    min_cryptos: int = 2,
) -> ExpectancyEvaluation:
    """``expectancy_negative_focal`` at ``as_of`` (rule: :mod:`cvn_assets.guard.drift`, section 1).

    Per crypto with a live champion: :func:`cvn_assets.guard.drift.expectancy_alert` on the net
    returns of **that champion's** trades exiting in the last 48 h and 24 h (trades of an
    earlier model never count against the live one). A window with fewer than
    ``min_trades`` trades is ``insufficient``: the P1 (and so the automatic rollback) never
    judges older trades than its 48 h (sparse traders have their own P2 rule,
    :func:`evaluate_sparse_expectancy`). "Focal active" is per crypto: its live champion was
    trained with the focal loss; only those cryptos count towards the ``min_cryptos`` (2) of
    the P1, so a crypto already rolled back to cross-entropy does not. A crypto whose journal
    stops more than 2 h before ``as_of`` (:class:`JournalEnd`) is ``stale`` instead of
    ``ok`` / ``insufficient`` (its ``warn`` / ``crit`` stand), and so is the rule when no two
    focal cryptos are crit or warn (never an alarm; the reason names each stale crypto's
    journal end).
    """
    kwargs: dict[str, Any] = {}
    if min_trades is not None:
        kwargs["min_trades"] = min_trades
    if alpha is not None:
        kwargs["alpha"] = alpha
    live = live_champions(registry, cryptos, as_of)
    ends = journal_ends(registry, [c for c, v in live.items() if v is not None])
    per: dict[str, Verdict] = {}
    versions: dict[str, int] = {}
    with registry.engine.connect() as conn:
        for crypto, version in live.items():
            if version is None:
                continue
            vid = versions[crypto] = int(version["id"])
            r48 = read_model_trades(conn, crypto, vid, as_of - WINDOW_48H, as_of).net_returns
            r24 = read_model_trades(conn, crypto, vid, as_of - WINDOW_24H, as_of).net_returns
            per[crypto] = ends[crypto].judge(expectancy_alert(r48, r24, **kwargs), as_of)
    focal = tuple(sorted(c for c, v in live.items() if v and v["loss_function"] == FOCAL))
    verdict = expectancy_negative_focal(
        {c: per[c] for c in focal}, bool(focal), min_cryptos=min_cryptos
    )
    k = EXPECTANCY_MIN_TRADES if min_trades is None else min_trades
    variants = {c: str(v["variant"]) for c, v in live.items() if v is not None}
    losses = {c: str(v["loss_function"]) for c, v in live.items() if v is not None}
    return ExpectancyEvaluation(as_of, verdict, per, focal, versions, k, variants, losses)


@dataclasses.dataclass(frozen=True)
class ChampionsExpectancy:
    """``expectancy_negative_any`` (P2) at ``as_of``: the P1's per-crypto verdicts
    (:class:`ExpectancyEvaluation`, the same reads) combined over **every** live champion,
    whatever its loss (:func:`cvn_assets.guard.drift.expectancy_negative_any`). Never a
    rollback."""

    evaluation: ExpectancyEvaluation
    verdict: Verdict  # expectancy_negative_any over every live champion

    @property
    def as_of(self) -> datetime:
        return self.evaluation.as_of

    @property
    def cryptos(self) -> tuple[str, ...]:
        """Every crypto with a live champion, sorted."""
        return tuple(sorted(self.evaluation.per_crypto))

    def alarming(self) -> list[str]:
        """The cryptos at the verdict's level (crit: crit ones; warn: warn-or-crit)."""
        v, per = self.verdict, self.evaluation.per_crypto
        if v.level == "crit":
            return [c for c in self.cryptos if per[c].level == "crit"]
        if v.level == "warn":
            return [c for c in self.cryptos if per[c].alarm]
        return []

    def figures(self) -> dict[str, Any]:
        """Flat JSON scalars for the alert: the windows' bounds, the counts, and per live
        champion (every crypto that has one) its version, variant, loss, level, trade counts,
        means and critical means (fractions)."""
        ev, v = self.evaluation, self.verdict
        out: dict[str, Any] = {
            **_window_figures(ev.as_of, ev.min_trades, v),
            "live_cryptos": ",".join(self.cryptos),
            "focal_cryptos": ",".join(ev.focal_cryptos),
        }
        for c in self.cryptos:
            out.update(_crypto_figures(c, ev.per_crypto[c], ev.versions.get(c)))
            out[f"{c}_variant"] = ev.variants.get(c)
            out[f"{c}_loss_function"] = ev.losses.get(c)
        return out

    def _row(self, crypto: str) -> str:
        ev = self.evaluation
        return (
            f"{_evidence(crypto, ev.per_crypto[crypto])} [v{ev.versions.get(crypto)} "
            f"{ev.variants.get(crypto)}, {ev.losses.get(crypto)}]"
        )

    def message(self) -> str:
        """One line: the window and, per alarming champion, its evidence, version, variant
        and loss; how many of them are focal (the P1's) and how many cross-entropy."""
        ev, v = self.evaluation, self.verdict
        end = f"{ev.as_of:%Y-%m-%dT%H:%M}Z"
        alarming = self.alarming()
        if not alarming:
            return f"{v.level}: {v.reason} (48 h window to {end})"
        n_focal = sum(ev.losses.get(c) == FOCAL for c in alarming)
        split = f"{n_focal} focal, {len(alarming) - n_focal} other loss"
        if v.level == "crit":
            head = (
                f"P2: net expectancy < 0 over the 48 h to {end} (trades exiting in "
                f"({ev.as_of - WINDOW_48H:%Y-%m-%dT%H:%M}Z, {end}]) on {len(alarming)} live "
                f"champions, whatever their loss ({split}): "
            )
        else:
            head = (
                f"net expectancy < 0 on {len(alarming)} live champions (48 h or 24 h windows "
                f"to {end}; {split}): "
            )
        return head + "; ".join(self._row(c) for c in alarming)


def evaluate_any_expectancy(
    ev: ExpectancyEvaluation, *, min_cryptos: int = EXPECTANCY_ANY_MIN_CRYPTOS
) -> ChampionsExpectancy:
    """``expectancy_negative_any`` on the per-crypto verdicts of ``ev`` (every live
    champion's, as :func:`evaluate_expectancy` judged them: same windows, trades of the live
    champion only, stale journals ``stale``)."""
    return ChampionsExpectancy(ev, expectancy_negative_any(ev.per_crypto, min_cryptos=min_cryptos))


@dataclasses.dataclass(frozen=True)
class SparseExpectancy:
    """``expectancy_negative_sparse`` of one crypto at ``as_of``: the live focal champion's
    last ``n`` trades exiting within :data:`SPARSE_LOOKBACK`, judged because its 48 h window
    was too thin for the P1. A P2 of its own; it never counts towards the P1 or the
    automatic rollback."""

    crypto: str
    as_of: datetime
    model_version: int
    verdict: Verdict  # cvn_assets.guard.drift.expectancy_last_trades
    first_exit: datetime | None
    last_exit: datetime | None
    n_48h: int

    def figures(self) -> dict[str, Any]:
        v = self.verdict
        out: dict[str, Any] = {
            "model_version": self.model_version,
            "lookback_start": _iso(self.as_of - SPARSE_LOOKBACK),
            "window_end": _iso(self.as_of),
            "first_exit": _iso(self.first_exit) if self.first_exit else None,
            "last_exit": _iso(self.last_exit) if self.last_exit else None,
            "n_trades": v.n,
            "n_48h": self.n_48h,
        }
        for k in ("mean", "critical"):
            if k in v.details:
                out[k] = round(float(v.details[k]), 6)
        return out

    def message(self) -> str:
        v = self.verdict
        if "mean" not in v.details or self.first_exit is None or self.last_exit is None:
            return f"{self.crypto}: {v.level}: {v.reason}"
        return (
            f"{self.crypto}: net expectancy < 0 over the focal champion's last {v.n} trades "
            f"(exits {self.first_exit:%Y-%m-%dT%H:%M}Z .. {self.last_exit:%Y-%m-%dT%H:%M}Z, "
            f"within 7 days of {self.as_of:%Y-%m-%dT%H:%M}Z; only {self.n_48h} in 48 h, too "
            f"few for the P1): mean {_pct(v.details['mean'])} < critical "
            f"{_pct(v.details['critical'])}"
        )


def evaluate_sparse_expectancy(
    registry: ModelRegistry,
    cryptos: Iterable[str],
    as_of: datetime,
    *,
    min_trades: int = EXPECTANCY_MIN_TRADES,
    alpha: float | None = None,
) -> dict[str, SparseExpectancy]:
    """``expectancy_negative_sparse`` at ``as_of`` for every crypto whose live champion is
    focal and whose 48 h window holds at least one but fewer than ``min_trades`` trades:
    :func:`cvn_assets.guard.drift.expectancy_last_trades` on its last ``min_trades`` trades exiting
    in ``(as_of - 7 days, as_of]``. A crypto with no trade in 48 h is not judged (no recent
    trading, nothing at stake)."""
    kwargs: dict[str, Any] = {"min_trades": min_trades}
    if alpha is not None:
        kwargs["alpha"] = alpha
    out: dict[str, SparseExpectancy] = {}
    with registry.engine.connect() as conn:
        for crypto, version in live_champions(registry, cryptos, as_of).items():
            if version is None or version["loss_function"] != FOCAL:
                continue
            vid = int(version["id"])
            n48 = read_model_trades(conn, crypto, vid, as_of - WINDOW_48H, as_of).n
            if not 0 < n48 < min_trades:
                continue
            window = read_model_trades(conn, crypto, vid, as_of - SPARSE_LOOKBACK, as_of)
            r, exits = window.net_returns[-min_trades:], window.exit_times[-min_trades:]
            verdict = expectancy_last_trades(r, **kwargs)
            first, last = (exits[0], exits[-1]) if exits else (None, None)
            out[crypto] = SparseExpectancy(crypto, as_of, vid, verdict, first, last, n48)
    return out


@dataclasses.dataclass(frozen=True)
class RowWindow:
    """The prediction rows a drift rule judged: hours in ``[start, end)`` whose candle closed
    by ``end`` (the evaluation time); ``n_rows`` of them were used (``what`` says which:
    hourly predictions, or those whose label had matured by ``end``), the first and last of
    them at ``first_hour`` / ``last_hour`` (None when there were none)."""

    start: datetime
    end: datetime
    n_rows: int
    first_hour: datetime | None
    last_hour: datetime | None
    what: str

    @classmethod
    def of(cls, hours: pd.Series, start: datetime, end: datetime, what: str) -> RowWindow:
        first = hours.min().to_pydatetime() if len(hours) else None
        last = hours.max().to_pydatetime() if len(hours) else None
        return cls(start, end, int(len(hours)), first, last, what)

    def figures(self) -> dict[str, Any]:
        return {
            "window_start": _iso(self.start),
            "window_end": _iso(self.end),
            "rows": self.n_rows,
            "first_hour": _iso(self.first_hour) if self.first_hour else None,
            "last_hour": _iso(self.last_hour) if self.last_hour else None,
        }

    def describe(self) -> str:
        span = f"[{self.start:%Y-%m-%dT%H:%M}Z, {self.end:%Y-%m-%dT%H:%M}Z)"
        if not self.n_rows:
            return f"no {self.what} in {span}"
        return (
            f"{self.n_rows} {self.what} of the hours {self.first_hour:%Y-%m-%dT%H}.."
            f"{self.last_hour:%Y-%m-%dT%H} in {span}"
        )


@dataclasses.dataclass(frozen=True)
class DriftEvaluation:
    """The three drift detectors of one crypto at ``as_of``: each rule's :class:`Verdict`
    and the :class:`RowWindow` it judged, for the live ``model_version``."""

    crypto: str
    as_of: datetime
    model_version: int
    verdicts: Mapping[str, Verdict]
    windows: Mapping[str, RowWindow]
    #: the live model's trading share (what a revert to the baseline must keep); None: older
    min_trade_share: float | None = None

    def __getitem__(self, name: str) -> Verdict:
        return self.verdicts[name]

    def items(self) -> Iterable[tuple[str, Verdict]]:
        return self.verdicts.items()

    def figures(self, name: str) -> dict[str, Any]:
        """Flat JSON scalars for the alert of rule ``name``: the window, the deciding
        statistic, its bound and sample size, and the rule's own inputs."""
        v = self.verdicts[name]
        out: dict[str, Any] = {"model_version": self.model_version}
        out.update(self.windows[name].figures())
        out["value"] = round(v.value, 6) if math.isfinite(v.value) else None
        out["threshold"] = round(v.threshold, 6) if math.isfinite(v.threshold) else None
        out["n"] = v.n
        if name == "data_drift":
            for feature, d in v.details.items():
                out[f"psi_{feature}"] = round(d["psi"], 6) if math.isfinite(d["psi"]) else None
                out[f"n_{feature}"] = d["n"]
        elif name == "concept_drift":
            for k in ("gap", "live_f1", "oos_f1", "n_positives", "n_relevant"):
                if k in v.details:
                    x = v.details[k]
                    out[k] = round(x, 6) if isinstance(x, float) else x
        return out

    def message(self, name: str) -> str:
        """One line: rule, level, crypto, model, the rule's reason and the rows it used."""
        v = self.verdicts[name]
        return (
            f"{name} {v.level} on {self.crypto} (model v{self.model_version}): {v.reason}; "
            f"{self.windows[name].describe()}"
        )


def evaluate_drift(registry: ModelRegistry, crypto: str, as_of: datetime) -> DriftEvaluation | None:
    """The three drift detectors of ``crypto`` at ``as_of`` (rules: :mod:`cvn_assets.guard.drift`,
    sections 2-4), or None when it has no live champion.

    * ``data_drift``: PSI of the live champion's top-5 features (by gain; ``feature_1..5`` of
      ``predictions``, in its reference order) over the last 7 days against their training
      bins (decile edges merged where tied, the training shares in them);
    * ``concept_drift``: f1_buy at the champion's f1 threshold over the last 14 days of
      **matured** labels (``label_known_at <= as_of``) against the sweep's OOS f1_buy;
    * ``output_sharpness``: mean of max(p, 1 - p) over the last 7 days against the training
      mean + 0.10 -- for a focal champion only (else ``ok``, "not judged": the revert to the
      baseline has nothing to revert).

    Each verdict comes with the :class:`RowWindow` of the rows it used (for the alert). A
    crypto whose journal stops more than 2 h before ``as_of`` (:class:`JournalEnd`) gets
    ``stale`` instead of ``ok`` / ``insufficient`` (warn and crit stand).
    """
    version = registry.live_at(crypto, as_of)
    if version is None:
        return None
    ref = version.get("reference_stats") or {}
    vid = int(version["id"])
    lo14, lo7 = as_of - timedelta(days=CONCEPT_DAYS), as_of - timedelta(days=DATA_DRIFT_DAYS)
    with registry.engine.connect() as conn:
        rows = read_model_predictions(conn, crypto, vid, lo14, as_of)
    week, matured = drift_windows(rows, as_of)
    end = journal_ends(registry, [crypto])[crypto]
    loss = version.get("loss_function")
    verdicts = {
        name: end.judge(v, as_of) for name, v in drift_verdicts(week, matured, ref, loss).items()
    }
    windows = {
        "data_drift": RowWindow.of(week["hour"], lo7, as_of, "hourly predictions"),
        "concept_drift": RowWindow.of(
            matured["hour"], lo14, as_of, "hourly predictions with a matured label"
        ),
        "output_sharpness": RowWindow.of(week["hour"], lo7, as_of, "hourly predictions"),
    }
    share = ref.get("min_trade_share")
    return DriftEvaluation(crypto, as_of, vid, verdicts, windows, share)


def evaluate_integrity(
    registry: ModelRegistry, crypto: str, as_of: datetime, market_data: Any = None
) -> DriftEvaluation | None:
    """``data_integrity`` of ``crypto`` at ``as_of`` (:func:`cvn_assets.guard.window_rules.
    integrity_verdict`: the live champion's top features over the last 6 journaled hours --
    missing, stuck, out of range, or, with ``market_data`` (the ``market_data`` resource), not
    what the candles give: :func:`recomputed_window`), or None when it has no live champion. A
    stale journal turns ``ok`` / ``insufficient`` into ``stale`` as for the drift detectors."""
    version = registry.live_at(crypto, as_of)
    if version is None:
        return None
    ref = version.get("reference_stats") or {}
    vid = int(version["id"])
    lo = as_of - timedelta(hours=INTEGRITY_RECENT)
    with registry.engine.connect() as conn:
        rows = read_model_predictions(conn, crypto, vid, lo, as_of)
    again, why = None, None
    if market_data is not None and len(rows):
        try:
            again = recomputed_window(market_data, crypto, min(rows["hour"]), max(rows["hour"]))
        except (ValueError, OSError) as exc:  # the feed's own failure: guard_stale's, not ours
            why = f"features not recomputed from the candles: {exc}"
    end = journal_ends(registry, [crypto])[crypto]
    verdict = integrity_verdict(rows, ref, as_of, again)
    if why is not None:
        verdict = dataclasses.replace(verdict, details={**verdict.details, "recompute": why})
    verdict = end.judge(verdict, as_of)
    window = RowWindow.of(rows["hour"], lo, as_of, "hourly predictions")
    return DriftEvaluation(
        crypto, as_of, vid, {"data_integrity": verdict}, {"data_integrity": window}
    )


#: (crypto, candle-window digest) -> recomputed features, the last few only
_RECOMPUTED: dict[tuple[str, str], pd.DataFrame] = {}
_RECOMPUTED_LOCK = threading.Lock()


def recomputed_window(
    market_data: Any, crypto: str, first_hour: pd.Timestamp, last_hour: pd.Timestamp
) -> pd.DataFrame:
    """The features of ``crypto``'s hours ``[first_hour, last_hour]`` recomputed from the
    ``market_data`` resource's candles (:func:`cvn_assets.guard.integrity.recompute_features`).

    The candles are loaded through the end of ``last_hour``'s UTC day (those that exist: the
    feed stops at the last closed candle; the features are causal, so later candles change
    nothing in the hours judged) and recomputed from the start of the day before (a 6-hour
    window may straddle midnight), so every hourly evaluation whose last hour falls in the
    same day asks for the same window: the result is kept per crypto and candle window, and
    the 24 evaluations of a day replayed at once (the drills) recompute once; a candle revised
    by the feed changes the window's digest and is recomputed."""
    day_end = pd.Timestamp(last_hour).floor("D") + pd.Timedelta(days=1)
    candles = market_data.load_candles_through(crypto, day_end)
    first = min(pd.Timestamp(first_hour).floor("D"), day_end - pd.Timedelta(days=2))
    # exactly the candles recompute_features reads: its history and warm-up before ``first``
    i0 = max(0, int(candles.index.searchsorted(first)) - RECOMPUTE_HISTORY - WARMUP_BARS)
    window = candles.iloc[i0:]
    digest = hashlib.sha1(window.to_numpy().tobytes())
    digest.update(window.index.asi8.tobytes())
    key = (crypto, digest.hexdigest())
    with _RECOMPUTED_LOCK:  # the daemon evaluates sensors in threads
        hit = _RECOMPUTED.get(key)
    if hit is not None:
        return hit
    frame = recompute_features(window, first, window.index[-1])
    with _RECOMPUTED_LOCK:
        while len(_RECOMPUTED) >= 16:
            _RECOMPUTED.pop(next(iter(_RECOMPUTED)))
        _RECOMPUTED[key] = frame
    return frame
