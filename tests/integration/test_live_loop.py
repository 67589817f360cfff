"""The live loop (issue 20): ``paper_trades`` runs tagged ``cvn/live=true`` journal the hours
closed on the guard clock from the stored state; hour by hour equals a backfill; re-running
changes nothing; unreadable flags open no position (spec 6.4's fail-safe).

Same small champion as ``test_paper_trades.py`` (3000 synthetic hours, edge 2.0, canary only).
"""

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from resources.alert_store import alerts_table
from resources.journal import last_journaled_hours, read_predictions, read_trades
from resources.live_state import read_events, read_live_state
from tests.integration.test_paper_trades import (
    CANARY,
    _canary_champion,
    _errors,
    _hand_replay,
    _paper,
)

LIVE = {"cvn/live": "true"}
DEAD_URL = "postgresql+psycopg2://postgres@127.0.0.1:1/nothing"


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _live(tmp_path, instance, first, last, clock, **kw):
    res = _paper(tmp_path, instance, f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}", clock, LIVE, **kw)
    return res


def _journal(engine, lo, hi):
    return read_predictions(engine, CANARY, lo, hi), read_trades(engine, CANARY, lo, hi)


def test_hour_by_hour_equals_a_backfill_and_reruns_change_nothing(tmp_path, instance):
    _, registry = _canary_champion(tmp_path, instance)
    engine = registry.engine
    d1 = pd.Timestamp(registry.alias(CANARY, "champion")["train_end"]).ceil("D")
    d2, d3 = d1 + pd.Timedelta(days=1), d1 + pd.Timedelta(days=2)
    H = pd.Timedelta(hours=1)

    # the first live run has no state: a full replay up to the last closed hour (d1 04:00)
    res = _live(tmp_path, instance, d1, d1, d1 + pd.Timedelta(hours=5, minutes=30))
    assert res.success, _errors(res)
    state = read_live_state(engine, CANARY)
    assert state.last_hour == d1 + 4 * H
    assert last_journaled_hours(engine, [CANARY]) == {CANARY: d1 + 4 * H}
    # then hour by hour, several hours at once, across midnight (the run spans d1..d2)
    clocks = [d1 + 6 * H + pd.Timedelta(minutes=1), d1 + 7 * H, d1 + 15 * H, d2 + 3 * H]
    clocks += [d2 + 4 * H, d2 + 20 * H, d3 + 2 * H]
    # and a run boundary inside every trade of two hours or more (a position carried over)
    _, free_t = _hand_replay(registry, [d1, d2], None)
    long = free_t[(free_t["exit_time"] - free_t["entry_time"] >= 2 * H)]
    long = long[long["entry_time"] >= d1 + 7 * H]
    assert len(long) >= 1
    clocks = sorted({*clocks, *(long["entry_time"] + 3 * H)})
    starts = []  # each live run's first hour
    for clock in clocks:
        before = read_live_state(engine, CANARY).last_hour
        starts.append(before + H)
        res = _live(tmp_path, instance, before.normalize(), clock.floor("h") - H, clock)
        assert res.success, _errors(res)
        summary = _mats(res)[-1].metadata["run_summary"].value
        assert summary[CANARY]["path"] == "live", summary
        assert read_live_state(engine, CANARY).last_hour == clock.floor("h") - H
    end = d3 + H  # the last journaled hour
    live_p, live_t = _journal(engine, d1, end)
    assert live_p["hour"].tolist() == list(pd.date_range(d1, end, freq="h"))
    # a position carried across runs: some trade was entered before a run's first hour and
    # exited after it (else this test would not test the carried state)
    spans = [((live_t["entry_time"] < s) & (live_t["exit_time"] >= s)).any() for s in starts]
    assert any(spans), "no trade spans a run boundary"
    # labels matured: every hour whose label was known by the last run's clock has it
    known = live_p["label_known_at"].notna()
    assert known.sum() >= len(live_p) - 24

    # re-running the last live hour: nothing new, nothing written
    res = _live(tmp_path, instance, d3, d3, d3 + 2 * H)
    assert res.success, _errors(res)
    assert _mats(res)[-1].metadata["run_summary"].value[CANARY]["path"] == "live: nothing new"
    again = _journal(engine, d1, end)
    pd.testing.assert_frame_equal(again[0], live_p)
    pd.testing.assert_frame_equal(again[1], live_t)

    # a backfill (no live tag) of the same days at the same clock: the same journal
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d3:%Y-%m-%d}", d3 + 2 * H)
    assert res.success, _errors(res)
    full_p, full_t = _journal(engine, d1, end)
    cols = [c for c in live_p.columns if c != "latency_ms"]
    pd.testing.assert_frame_equal(full_p[cols], live_p[cols], check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(full_t, live_t, check_exact=False, rtol=1e-12)
    assert read_live_state(engine, CANARY).last_hour == end
    # today's partition (d3) shows its hours so far
    meta = {m.partition: m.metadata for m in _mats(res)}
    assert meta[f"{CANARY}|{d3:%Y-%m-%d}"]["hours_journaled"].value == 2


def _mats(res):
    return res.asset_materializations_for_node("paper_trades")


def test_unreadable_flags_open_no_position_journal_why_and_alert(tmp_path, instance):
    _, registry = _canary_champion(tmp_path, instance)
    engine = registry.engine
    d1 = pd.Timestamp(registry.alias(CANARY, "champion")["train_end"]).ceil("D")
    H = pd.Timedelta(hours=1)
    res = _live(tmp_path, instance, d1, d1, d1 + H)  # the state: d1 00:00
    assert res.success, _errors(res)
    # what the loop would have traded over d1 01:00 .. d2 23:00 with readable flags
    d2 = d1 + pd.Timedelta(days=1)
    _, free_t = _hand_replay(registry, [d1, d2], None)
    assert (free_t["entry_time"] >= d1 + H).sum() >= 3  # the blocked hours would trade
    # a live run with a config store that does not answer
    dead = {
        "config_store": {"config": {"database_url": DEAD_URL}},
        "alert_sink": {
            "config": {
                "database_url": registry.url,
                "alerts_path": str(tmp_path / "alerts.jsonl"),
            }
        },
    }
    res = _live(tmp_path, instance, d1, d2, d2 + 24 * H, resources=dead)
    assert res.success, _errors(res)
    preds, trades = _journal(engine, d1 + H, d2 + 23 * H)
    assert len(preds) == 47 and (preds["decision"] == "BUY").any()  # signals still journaled
    assert not (trades["entry_time"] >= d1 + H).any()  # but no position opened
    ev = read_events(engine, CANARY)
    assert ev["kind"].tolist() == ["flags_unreadable"]
    assert ev["first_hour"].iloc[0] == d1 + H and ev["last_hour"].iloc[0] == d2 + 23 * H
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(alerts_table)).mappings().all()
    assert row["name"] == "guard_flags_unreadable" and row["severity"] == "P1"
    assert "127.0.0.1" in row["message"] or "OperationalError" in row["message"]
    # a backfill cannot replay without the flags: refused, naming the flag and the cause
    res = _paper(
        tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d2:%Y-%m-%d}", d2 + 24 * H, resources=dead
    )
    assert not res.success and "trading_halted cannot be read" in _errors(res)
