"""What the guard's sensors evaluate: the journal windows fed to the rules of
:mod:`cvn_assets.drift`, as of a given time (no Dagster here; the sensors are thin).

Every window ends at ``as_of`` and uses only what was known then: trades whose ``exit_time``
is in ``(as_of - h, as_of]``, prediction rows whose ``hour`` closed by ``as_of`` (``hour + 1 h
<= as_of``), labels only once matured (``label_known_at <= as_of``). The **live model** of a
crypto is the registry's champion at ``as_of`` (``ModelRegistry.live_at``); the drift windows
keep only the rows that model produced, so its references (training deciles, sharpness mean,
OOS f1_buy, f1 threshold: ``model_versions.reference_stats_json``) are compared with data it
served, and after a rollback the new champion starts from an empty window ("insufficient",
never a false alarm caused by the rollback itself).

Reads per crypto and evaluation: <= 48 h of trades, <= 14 days of predictions (336 rows):
the cost of a tick does not grow with the journal (see ``bench/bench_sensors.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cvn_assets.drift import (
    EXPECTANCY_MIN_TRADES,
    Verdict,
    concept_drift,
    data_drift,
    expectancy_alert,
    expectancy_negative_focal,
    sharpness_drift,
)
from cvn_assets.metrics import classification_metrics
from resources.journal import predictions_table, trades_table
from resources.model_registry import ModelRegistry

__all__ = [
    "DATA_DRIFT_DAYS",
    "CONCEPT_DAYS",
    "SHARPNESS_DAYS",
    "ExpectancyEvaluation",
    "evaluate_drift",
    "evaluate_expectancy",
    "live_champions",
]

DATA_DRIFT_DAYS = 7
CONCEPT_DAYS = 14
SHARPNESS_DAYS = 7
FOCAL = "focal"
N_TOP_FEATURES = 5


def live_champions(
    registry: ModelRegistry, cryptos: Iterable[str], as_of: datetime
) -> dict[str, dict[str, Any] | None]:
    """crypto -> the version that was champion at ``as_of`` (None before the first one)."""
    return {c: registry.live_at(c, as_of) for c in cryptos}


@dataclasses.dataclass(frozen=True)
class ExpectancyEvaluation:
    """The P1 rule's inputs and verdict at ``as_of``."""

    as_of: datetime
    verdict: Verdict  # expectancy_negative_focal over the focal cryptos
    per_crypto: Mapping[str, Verdict]  # every crypto with a live champion
    focal_cryptos: tuple[str, ...]  # cryptos whose live champion is focal-trained

    def figures(self) -> dict[str, Any]:
        """Flat JSON scalars for the alert: per crypto mean/critical/n of the 48 h window."""
        out: dict[str, Any] = {
            "crypto_count_crit": int(self.verdict.value)
            if math.isfinite(self.verdict.value)
            else None,
            "focal_cryptos": ",".join(self.focal_cryptos),
        }
        for crypto, v in sorted(self.per_crypto.items()):
            out[f"{crypto}_level"] = v.level
            out[f"{crypto}_n_48h"] = int(v.details.get("n_48h", v.n))
            for k in ("mean_48h", "critical_48h", "mean_24h", "critical_24h"):
                if k in v.details:
                    out[f"{crypto}_{k}"] = round(float(v.details[k]), 6)
        return out


def _trade_returns(
    conn: sa.Connection, crypto: str, version: int, lo: datetime, hi: datetime
) -> np.ndarray:
    """Net returns of ``crypto``'s trades decided by ``version`` exiting in ``(lo, hi]``, oldest
    first."""
    t = trades_table
    q = (
        sa.select(t.c.net_return)
        .where(
            (t.c.crypto == crypto)
            & (t.c.model_version == version)
            & (t.c.exit_time > lo)
            & (t.c.exit_time <= hi)
        )
        .order_by(t.c.exit_time)
    )
    return np.array([r[0] for r in conn.execute(q)], dtype=np.float64)


#: how far back the evidence of a sparse trader may reach (see evaluate_expectancy)
EVIDENCE_LOOKBACK = timedelta(days=7)


def evaluate_expectancy(
    registry: ModelRegistry,
    cryptos: Iterable[str],
    as_of: datetime,
    *,
    min_trades: int | None = None,
    alpha: float | None = None,
    min_cryptos: int = 2,
) -> ExpectancyEvaluation:
    """``expectancy_negative_focal`` at ``as_of`` (rule: :mod:`cvn_assets.drift`, section 1).

    Per crypto with a live champion: :func:`cvn_assets.drift.expectancy_alert` on the net
    returns of **that champion's** trades exiting in the last 48 h and 24 h (trades of an
    earlier model never count against the live one). A sparse trader (fewer than
    ``min_trades`` trades in 48 h but at least one) is judged on its last ``min_trades``
    trades within :data:`EVIDENCE_LOOKBACK` (7 days), so a model that trades once a day is
    not silent for ever; one with no trade in 48 h is ``insufficient`` (nothing to page on).
    "Focal active" is per crypto: its live champion was trained with the focal loss; only
    those cryptos count towards the ``min_cryptos`` (2) of the P1, so a crypto already rolled
    back to cross-entropy does not.
    """
    kwargs: dict[str, Any] = {}
    k = EXPECTANCY_MIN_TRADES if min_trades is None else min_trades
    if min_trades is not None:
        kwargs["min_trades"] = min_trades
    if alpha is not None:
        kwargs["alpha"] = alpha
    live = live_champions(registry, cryptos, as_of)
    per: dict[str, Verdict] = {}
    with registry.engine.connect() as conn:
        for crypto, version in live.items():
            if version is None:
                continue
            vid = int(version["id"])
            r48 = _trade_returns(conn, crypto, vid, as_of - timedelta(hours=48), as_of)
            r24 = _trade_returns(conn, crypto, vid, as_of - timedelta(hours=24), as_of)
            if 0 < r48.size < k:  # sparse: the last k trades, within the lookback
                week = _trade_returns(conn, crypto, vid, as_of - EVIDENCE_LOOKBACK, as_of)
                r48 = week[-k:]
            per[crypto] = expectancy_alert(r48, r24, **kwargs)
    focal = tuple(sorted(c for c, v in live.items() if v and v["loss_function"] == FOCAL))
    verdict = expectancy_negative_focal(
        {c: per[c] for c in focal}, bool(focal), min_cryptos=min_cryptos
    )
    return ExpectancyEvaluation(as_of, verdict, per, focal)


def _prediction_window(
    conn: sa.Connection, crypto: str, version: int, lo: datetime, as_of: datetime
) -> pd.DataFrame:
    t = predictions_table
    cols = [t.c.hour, t.c.buy_proba]
    cols += [t.c[f"feature_{i}"] for i in range(1, N_TOP_FEATURES + 1)]
    cols += [t.c.label, t.c.label_known_at]
    q = sa.select(*cols).where(
        (t.c.crypto == crypto)
        & (t.c.model_version == version)
        & (t.c.hour >= lo)
        & (t.c.hour <= as_of - timedelta(hours=1))  # the hour's candle has closed
    )
    rows = conn.execute(q).all()
    frame = pd.DataFrame(rows, columns=[c.name for c in cols])
    for c in ("hour", "label_known_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


def evaluate_drift(
    registry: ModelRegistry, crypto: str, as_of: datetime
) -> dict[str, Verdict] | None:
    """The three drift detectors of ``crypto`` at ``as_of`` (rules: :mod:`cvn_assets.drift`,
    sections 2-4), or None when it has no live champion.

    * ``data_drift``: PSI of the live champion's top-5 features (by gain; ``feature_1..5`` of
      ``predictions``, in its reference order) over the last 7 days against their training
      bins (decile edges merged where tied, the training shares in them);
    * ``concept_drift``: f1_buy at the champion's f1 threshold over the last 14 days of
      **matured** labels (``label_known_at <= as_of``) against the sweep's OOS f1_buy;
    * ``output_sharpness``: mean of max(p, 1 - p) over the last 7 days against the training
      mean + 0.10.
    """
    version = registry.live_at(crypto, as_of)
    if version is None:
        return None
    ref = version.get("reference_stats") or {}
    with registry.engine.connect() as conn:
        rows = _prediction_window(
            conn, crypto, int(version["id"]), as_of - timedelta(days=CONCEPT_DAYS), as_of
        )
    week = rows[rows["hour"] >= as_of - timedelta(days=DATA_DRIFT_DAYS)]
    out: dict[str, Verdict] = {}

    top = list(ref.get("top_features") or [])[:N_TOP_FEATURES]
    windows = {}
    edges = {}
    for i, f in enumerate(top, start=1):
        values = week[f"feature_{i}"].dropna().to_numpy(np.float64)
        windows[f["name"]] = values
        edges[f["name"]] = f["train_decile_edges"]
    if windows:
        floors = {f["name"]: f.get("window_psi_q99") for f in top}
        shares = {f["name"]: f.get("train_bin_shares") for f in top}  # absent: older stats
        out["data_drift"] = data_drift(
            windows, edges, n_train=ref.get("n_train"), null_floor=floors, expected_shares=shares
        )
    else:
        out["data_drift"] = Verdict(
            "insufficient", math.nan, math.nan, 0, "the live model has no top features recorded"
        )

    matured = rows[rows["label"].notna() & (rows["label_known_at"] <= pd.Timestamp(as_of))]
    oos = ref.get("oos_f1_buy")
    f1_threshold = ref.get("f1_threshold")
    if oos is None or f1_threshold is None:
        out["concept_drift"] = Verdict(
            "insufficient",
            math.nan,
            math.nan,
            len(matured),
            "the live model has no OOS f1_buy or f1 threshold recorded",
        )
    else:
        label = matured["label"].to_numpy(np.int64)
        pred = matured["buy_proba"].to_numpy(np.float64) >= f1_threshold
        m = classification_metrics(label, pred.astype(np.int8))
        relevant = m["tp"] + m["fp"] + m["fn"]
        out["concept_drift"] = concept_drift(
            m["f1_buy"],
            float(oos),
            len(matured),
            n_positives=m["n_true_buy"],
            n_relevant=max(relevant, m["n_true_buy"]),
            gap_floor=ref.get("f1_window_gap_q95"),
        )

    mean_conf = ref.get("train_mean_confidence")
    if mean_conf is None:
        out["output_sharpness"] = Verdict(
            "insufficient", math.nan, math.nan, len(week), "no training mean confidence"
        )
    else:
        out["output_sharpness"] = sharpness_drift(
            week["buy_proba"].to_numpy(np.float64), float(mean_conf)
        )
    return out
