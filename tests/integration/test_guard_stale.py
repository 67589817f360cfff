"""Silence is an alert (issue 20, item 4), on a real SQLite results database, the real
registry and journal, and the real sensors ticked through ``build_sensor_context`` with a
fixed guard clock:

* ``guard_stale`` pages P2 when a crypto with a champion has journaled no new hour for more
  than 2 h (2 h 01 min: fires, naming the crypto, its last hour and 2.02 h behind; exactly
  2 h: not); a crypto journaled up to the last closed hour is fine; no champion, no page; a
  champion with no hour journaled is stale 2 h after the first champion went live; the run
  key holds the set of stale cryptos and the clock hour (same hour: the same key, deduped by
  Dagster; next hour: a new page);
* the expectancy and drift rules report ``stale`` rather than ``ok`` / ``insufficient`` on a
  journal that stops 3 h short, and ``crit`` stays ``crit``;
* ``expectancy_negative_focal`` catches up: a tick after two skipped hours judges both,
  oldest first, and the P1 pair across them launches the rollback.

Hand-checked truth: the hours behind are clock arithmetic (2 h 01 min = 2.0167 h), the
t-tests are scipy's.
"""

import json
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats

from resources.alerts import read_alerts
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from sensors.evaluation import evaluate_drift, evaluate_expectancy
from sensors.guard_sensors import hours_to_evaluate
from tests.integration.test_guard_jobs_sensors import (
    CRYPTOS,
    T0,
    _losing_trades,
    _run,
    _setup,
    _tick,
)
from tests.support.journal_hours import journal_hours, journal_until

H = timedelta(hours=1)
#: BTC's last journaled hour (candle open); its candle closed at LAST + 1 h
LAST = T0 + timedelta(days=3, hours=10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A results database and an alerts file of the test's own (as test_guard_jobs_sensors)."""
    url = f"sqlite:///{tmp_path / 'guard.sqlite'}"
    monkeypatch.setenv("CVN_DATABASE_URL", url)
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "alerts.jsonl"))
    return url, tmp_path


def _config(request) -> dict:
    return request.run_config["ops"]["send_alert"]["config"]


# ----------------------------------------------------------------------------- guard_stale
def test_stale_journal_pages_p2_naming_the_crypto_and_its_last_hour(home):
    url, tmp = home
    ids = _setup(url)
    now = LAST + H + 2 * H + timedelta(minutes=1)  # 2 h 01 min after BTC's last candle closed
    journal_hours(url, "BTCUSDC", ids["BTCUSDC"]["focal"], LAST - 5 * H, LAST)
    journal_until(url, "ETHUSDC", ids["ETHUSDC"]["focal"], now)  # up to now - 1 h: fine
    res = _tick("guard_stale", now, url)
    assert [r.job_name for r in res.run_requests] == ["alert_job"]
    req = res.run_requests[0]
    cfg = _config(req)
    assert (cfg["name"], cfg["severity"], cfg["cryptos"]) == ("guard_stale", "P2", ["BTCUSDC"])
    assert req.run_key == f"alert:guard_stale:BTCUSDC:{now:%Y-%m-%dT%H}"
    assert cfg["runbook"] == "runbooks/runbook_guard_stale.md"
    fig = json.loads(cfg["figures_json"])
    assert fig["BTCUSDC_last_hour"] == LAST.isoformat()
    assert fig["BTCUSDC_hours_behind"] == pytest.approx(2 + 1 / 60, abs=1e-4)
    assert fig["stale_cryptos"] == "BTCUSDC" and "ETHUSDC_hours_behind" not in fig
    assert f"BTCUSDC last journaled hour {LAST:%Y-%m-%dT%H}:00Z" in cfg["message"]
    assert "2.02 h behind" in cfg["message"] and "ETHUSDC" not in cfg["message"]
    # the requested run records the P2 with its runbook
    assert _run(req.job_name, req.run_config["ops"], clock=now).success
    (alert,) = [a for a in read_alerts(tmp / "alerts.jsonl") if a["name"] == "guard_stale"]
    assert alert["severity"] == "P2" and alert["cryptos"] == ["BTCUSDC"]

    # the same clock hour: the same run key (Dagster runs a key once); the next: a new page
    again = _tick("guard_stale", now + timedelta(minutes=20), url, res.cursor)
    assert [r.run_key for r in again.run_requests] == [req.run_key]
    later = _tick("guard_stale", now + H, url, again.cursor)
    assert [r.run_key for r in later.run_requests] == [
        f"alert:guard_stale:BTCUSDC:{now + H:%Y-%m-%dT%H}"
    ]
    assert json.loads(later.cursor)["stale"] == ["BTCUSDC"]


def test_exactly_two_hours_behind_is_not_stale(home):
    url, _ = home
    ids = _setup(url)
    for c in CRYPTOS:
        journal_hours(url, c, ids[c]["focal"], LAST - 2 * H, LAST)
    res = _tick("guard_stale", LAST + 3 * H, url)  # candle closed at LAST + 1 h: 2 h 00 min
    assert not res.run_requests
    assert "journals current" in res.skip_message and "BTCUSDC 2.00 h" in res.skip_message
    assert _tick("guard_stale", LAST + 3 * H + timedelta(minutes=1), url).run_requests


def test_no_champion_no_page_and_a_champion_never_journaled_is_stale_after_2_hours(home):
    url, _ = home
    ResultsStore(database_url=url).engine.dispose()  # the schema, no champion
    res = _tick("guard_stale", T0 + timedelta(days=5), url)
    assert not res.run_requests and res.skip_message == "no crypto has a champion"
    _setup(url)  # the first champions (the baselines) go live at T0 - 2 h; nothing journaled
    assert not _tick("guard_stale", T0 - timedelta(minutes=1), url).run_requests  # 1 h 59
    res = _tick("guard_stale", T0 + timedelta(minutes=1), url)  # 2 h 01 min
    cfg = _config(res.run_requests[0])
    assert cfg["cryptos"] == sorted(CRYPTOS)
    assert res.run_requests[0].run_key == f"alert:guard_stale:BTCUSDC+ETHUSDC:{T0:%Y-%m-%dT%H}"
    fig = json.loads(cfg["figures_json"])
    assert fig["BTCUSDC_last_hour"] is None
    assert fig["BTCUSDC_live_since"] == (T0 - 2 * H).isoformat()
    assert "no hour journaled since its first champion went live" in cfg["message"]


# ------------------------------------------------------------------------- stale verdicts
def test_expectancy_is_stale_on_journals_3h_short_and_crit_stays_crit(home):
    url, _ = home
    ids = _setup(url)
    now = T0 + timedelta(days=2, hours=12)
    reg = ModelRegistry(database_url=url)
    nets = {c: _losing_trades(url, c, ids[c]["focal"], now, 12, k) for k, c in enumerate(CRYPTOS)}
    for net in nets.values():  # the hand check: each crypto's 48 h window is crit
        assert stats.ttest_1samp(net, 0.0, alternative="less").pvalue < 0.05
    ev = evaluate_expectancy(reg, CRYPTOS, now)  # the journal reaches now: current
    assert ev.verdict.level == "crit"
    assert {c: v.level for c, v in ev.per_crypto.items()} == dict.fromkeys(CRYPTOS, "crit")

    # 9 trades (< 10: insufficient) on journals that stop 3 h short: stale, not insufficient
    for k, c in enumerate(CRYPTOS):
        _losing_trades(url, c, ids[c]["focal"], now - 4 * H, 9, k)  # journal to now - 4 h
        journal_hours(url, c, ids[c]["focal"], now - 6 * H, now - 4 * H)  # last hour now - 4 h
    ev = evaluate_expectancy(reg, CRYPTOS, now)
    assert ev.verdict.level == "stale" and not ev.verdict.alarm
    for c in CRYPTOS:
        assert ev.per_crypto[c].level == "stale"
        assert f"{c}: journal stops at the hour {now - 4 * H:%Y-%m-%dT%H}:00Z" in ev.verdict.reason
        assert ev.figures()[f"{c}_hours_behind"] == pytest.approx(3.0)
    # the sensor: no page, no P1 time, and its skip reason says why
    res = _tick("expectancy_negative_focal", now, url)
    assert not res.run_requests and json.loads(res.cursor)["p1_times"] == []
    assert ": stale: " in res.skip_message and "not complete" in res.skip_message
    # crit on the trades already journaled stands on a stale journal (module docstring)
    for k, c in enumerate(CRYPTOS):
        _losing_trades(url, c, ids[c]["focal"], now - 4 * H, 12, k)
        journal_hours(url, c, ids[c]["focal"], now - 6 * H, now - 4 * H)
    assert evaluate_expectancy(reg, CRYPTOS, now).verdict.level == "crit"


def test_drift_verdicts_are_stale_on_a_journal_3h_short(home):
    url, _ = home
    ids = _setup(url)  # reference stats {}: every detector insufficient on any window
    as_of = T0 + timedelta(days=10)
    vid = ids["BTCUSDC"]["focal"]
    journal_hours(url, "BTCUSDC", vid, as_of - timedelta(days=8), as_of - H)
    current = evaluate_drift(ModelRegistry(database_url=url), "BTCUSDC", as_of)
    assert {k: v.level for k, v in current.items()} == dict.fromkeys(
        ("data_drift", "concept_drift", "output_sharpness"), "insufficient"
    )
    journal_hours(url, "BTCUSDC", vid, as_of - timedelta(days=1), as_of - 4 * H)  # 3 h short
    ev = evaluate_drift(ModelRegistry(database_url=url), "BTCUSDC", as_of)
    for _, v in ev.items():
        assert v.level == "stale" and not v.alarm
        assert f"{as_of - 4 * H:%Y-%m-%dT%H}:00Z" in v.reason and "3 h 00 min" in v.reason


# -------------------------------------------------------------------------------- catch-up
def test_hours_to_evaluate_catches_up_at_most_the_last_two():
    hour = T0 + timedelta(days=1, hours=7)
    assert hours_to_evaluate(None, hour) == [hour]
    assert hours_to_evaluate((hour - H).isoformat(), hour) == [hour]
    assert hours_to_evaluate((hour - 2 * H).isoformat(), hour) == [hour - H, hour]
    assert hours_to_evaluate((hour - 9 * H).isoformat(), hour) == [hour - H, hour]
    assert hours_to_evaluate(hour.isoformat(), hour) == []
    assert hours_to_evaluate((hour + H).isoformat(), hour) == []


def test_a_tick_after_two_skipped_hours_judges_both_and_the_p1_pair_rolls_back(home):
    url, _ = home
    ids = _setup(url)
    now = T0 + timedelta(days=2, hours=12)
    # 12 losing trades exiting up to now - 1 h: both hours' 48 h windows hold all 12 (crit)
    nets = [_losing_trades(url, c, ids[c]["focal"], now - H, 12, k) for k, c in
            enumerate(CRYPTOS)]  # fmt: skip
    for net in nets:
        assert stats.ttest_1samp(net, 0.0, alternative="less").pvalue < 0.05
    assert np.all([len(n) == 12 for n in nets])
    for c in CRYPTOS:  # the live loop journaled up to now (the candle of now - 1 h)
        journal_until(url, c, ids[c]["focal"], now)
    # the last tick evaluated now - 3 h; the ticks of now - 2 h and now - 1 h never came
    cursor = json.dumps({"evaluated_hour": (now - 3 * H).isoformat(), "p1_times": []})
    res = _tick("expectancy_negative_focal", now, url, cursor)
    assert [r.run_key for r in res.run_requests] == [
        f"alert:expectancy_negative_focal:P1:{now - H:%Y-%m-%dT%H}",
        f"alert:expectancy_negative_focal:P1:{now:%Y-%m-%dT%H}",
        f"rollback:auto:{now:%Y-%m-%dT%H}",
    ]
    rb = res.run_requests[-1].run_config["ops"]["rollback"]["config"]
    assert rb["trigger"] == "auto" and "INC-" in rb["incident_id"]
    assert json.loads(res.cursor) == {
        "evaluated_hour": now.isoformat(),
        "p1_times": [(now - H).isoformat(), now.isoformat()],
    }
    # without the catch-up (the cursor at now - 1 h) one P1 alone: no rollback
    one = json.dumps({"evaluated_hour": (now - H).isoformat(), "p1_times": []})
    alone = _tick("expectancy_negative_focal", now, url, one)
    assert [r.job_name for r in alone.run_requests] == ["alert_job"]
