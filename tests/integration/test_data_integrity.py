"""``data_integrity`` (issue 23) through the real ``model_drift`` sensor: evaluated every hour
on the journal (SQLite, the real registry), one alert per broken crypto and UTC day, never a
retrain; the daily drift detectors still once a day; a feature served from the wrong hours is
caught by recomputing it from the ``market_data`` resource's candles."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from cvn_assets.ablation.identity import SweepIdentity
from cvn_assets.market.features import build_features
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from sensors.evaluation import evaluate_integrity
from tests.integration.test_alert_evidence import (
    T0,
    _send_alert_config,
    _setup,
    _tick,
    _write_predictions,
    home,  # noqa: F401  (the fixture)
)


def test_a_stuck_feature_pages_within_the_day_once_per_crypto_day(home):  # noqa: F811
    url = home
    ids = _setup(url)
    crypto, vid = "BTCUSDC", ids["BTCUSDC"]["focal"]
    day = T0 + timedelta(days=20)
    hours = [day + timedelta(hours=h) for h in range(-24 * 8, 15)]  # to 14:00 of the day
    n = len(hours)
    rng = np.random.default_rng(4)
    feats = rng.normal(0.0, 1.0, (n, 2))
    feats[-7:, 1] = 0.25  # vol_24h stuck from 08:00 (to 14:00)
    _write_predictions(url, crypto, vid, hours, rng.uniform(0.3, 0.7, n), feats,
                       rng.integers(0, 2, n))  # fmt: skip
    reg = ModelRegistry(database_url=url)
    at_13 = day + timedelta(hours=13)  # hours 07:00 .. 12:00: 07:00 still moves
    assert evaluate_integrity(reg, crypto, at_13)["data_integrity"].level == "ok"
    at_14 = day + timedelta(hours=14)
    v = evaluate_integrity(reg, crypto, at_14)["data_integrity"]
    assert v.level == "crit" and v.details["vol_24h"]["problem"] == "stuck"

    first = _tick("model_drift", day, url)  # the day's drift evaluation (00:00)
    cursor = first.cursor
    quiet = _tick("model_drift", at_13, url, cursor)
    assert not quiet.run_requests
    paged = _tick("model_drift", at_14, url, quiet.cursor)
    alerts = [r for r in paged.run_requests if r.job_name == "alert_job"]
    assert [r.job_name for r in paged.run_requests] == ["alert_job"]  # no retrain
    cfg = _send_alert_config(alerts[0])
    assert cfg["name"] == "data_integrity" and cfg["severity"] == "crit"
    assert alerts[0].run_key == f"alert:data_integrity:{crypto}:{day:%Y-%m-%dT%H}"
    assert json.loads(cfg["figures_json"])["value"] == 1.0
    # the same hour again: skipped; the next hour: the same run key (one page a day)
    assert "already evaluated" in _tick("model_drift", at_14, url, paged.cursor).skip_message
    later = _tick("model_drift", at_14 + timedelta(hours=1), url, paged.cursor)
    assert [r.run_key for r in later.run_requests] == [alerts[0].run_key]
    # the daily detectors were not evaluated again within the day
    assert json.loads(later.cursor)["evaluated_day"] == day.isoformat()


def _real_feature_setup(url: str, names: tuple[str, ...], features) -> int:
    """A focal champion of BTCUSDC live from T0 - 1 h whose top features are the feature
    code's own ``names`` (decile edges from the market's year before T0)."""
    ResultsStore(database_url=url).register_sweep(
        "s", SweepIdentity({"eta": 0.05}, {"universe": ["BTCUSDC"]}, {"source": "x"}, {})
    )
    year = features.loc[T0 - timedelta(days=365) : T0, list(names)]
    ref = {
        "top_features": [
            {"name": f, "train_decile_edges": list(np.quantile(year[f], np.linspace(0.1, 0.9, 9)))}
            for f in names
        ],
        "n_train": len(year), "oos_f1_buy": 0.6, "f1_threshold": 0.5,
        "train_mean_confidence": 0.55,
    }  # fmt: skip
    reg = ModelRegistry(database_url=url)
    vid = reg.register_version(
        "BTCUSDC", "focal_g2_a025", loss_function="focal", gamma=2.0, alpha=0.25,
        train_start=datetime(2025, 1, 1, tzinfo=UTC), train_end=datetime(2026, 1, 1, tzinfo=UTC),
        sweep_id="s", artifact_uri="file:///x/BTCUSDC/focal", reference_stats=ref,
    )  # fmt: skip
    reg.promote("BTCUSDC", vid, actor="t", reason="setup", at=T0 - timedelta(hours=1))
    return vid


def test_a_feature_lagged_by_a_day_pages_when_it_differs_from_its_recomputation(home):  # noqa: F811
    """The journal serves ``dist_low_168`` of 24 h earlier from 08:00: same distribution,
    same range (no other rule sees it), but the ``market_data`` resource's candles give other
    values: the ``model_drift`` sensor pages ``data_integrity`` (mismatch) at 11:00, when 3 of
    the last 6 hours differ; the correctly served hours before raise nothing."""
    url = home
    market = MarketDataResource()
    candles = market.load_candles_through("BTCUSDC", T0 + timedelta(days=22))
    features = build_features(candles)
    names = ("dist_low_168", "rv_24")
    vid = _real_feature_setup(url, names, features)
    day = T0 + timedelta(days=20)
    hours = pd.date_range(day - timedelta(days=2), day + timedelta(hours=14), freq="h")
    served = features.loc[hours, list(names)].to_numpy().copy()
    lag_from = list(hours).index(day + timedelta(hours=8))
    served[lag_from:, 0] = features.loc[hours[lag_from:] - timedelta(days=1), names[0]]
    rng = np.random.default_rng(5)
    _write_predictions(url, "BTCUSDC", vid, list(hours), rng.uniform(0.3, 0.7, len(hours)),
                       served, rng.integers(0, 2, len(hours)))  # fmt: skip
    reg = ModelRegistry(database_url=url)
    # the lag keeps the range: without the candles nothing is wrong
    assert (
        evaluate_integrity(reg, "BTCUSDC", day + timedelta(hours=14))["data_integrity"].level
        == "ok"
    )
    at_10 = evaluate_integrity(reg, "BTCUSDC", day + timedelta(hours=10), market)
    assert at_10["data_integrity"].level == "ok"  # 08:00, 09:00 differ: 2 of 6
    at_11 = evaluate_integrity(reg, "BTCUSDC", day + timedelta(hours=11), market)
    v = at_11["data_integrity"]
    assert v.level == "crit" and v.details["dist_low_168"]["problem"] == "mismatch"
    assert v.details["dist_low_168"]["mismatch_share"] == 0.5
    assert v.details["rv_24"]["mismatch_share"] == 0.0  # served right, recomputed equal

    # the sensor as the definitions build it (its market_data: the default market, as here)
    first = _tick("model_drift", day, url)
    quiet = _tick("model_drift", day + timedelta(hours=10), url, first.cursor)
    assert not [r for r in quiet.run_requests if r.job_name == "alert_job"]
    paged = _tick("model_drift", day + timedelta(hours=11), url, quiet.cursor)
    alerts = [r for r in paged.run_requests if r.job_name == "alert_job"]
    assert [r.job_name for r in paged.run_requests] == ["alert_job"]
    cfg = _send_alert_config(alerts[0])
    assert cfg["name"] == "data_integrity" and "dist_low_168: mismatch" in cfg["message"]
