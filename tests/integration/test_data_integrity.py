"""``data_integrity`` (issue 23) through the real ``model_drift`` sensor: evaluated every hour
on the journal (SQLite, the real registry), one alert per broken crypto and UTC day, never a
retrain; the daily drift detectors still once a day."""

import json
from datetime import timedelta

import numpy as np

from resources.model_registry import ModelRegistry
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
