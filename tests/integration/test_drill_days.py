"""The incident drill's daily ``paper_job`` runs (``cvn_assets.drill.paper_day_tags``): one run
per day at the next midnight, tagged ``cvn/live``. The first day has no state (full path), every
later day continues from it (live path: that day only); each model version's latency is measured
once, at the first run, and every later day journals exactly that stored measurement; and the
journal equals one backfill of the same days (the replay's rows, latency aside).

Same small canary champion as ``test_paper_trades.py``."""

import pandas as pd
import pytest
from dagster import DagsterInstance

from cvn_assets.drill import paper_day_tags
from resources.journal import read_predictions, read_trades
from resources.live_state import read_live_state
from tests.integration.test_paper_trades import CANARY, _canary_champion, _errors, _paper

DAY = pd.Timedelta(days=1)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _summary(res) -> dict:
    mats = res.asset_materializations_for_node("paper_trades")
    return mats[-1].metadata["run_summary"].value[CANARY]


def test_the_drills_days_continue_from_the_state_and_reuse_the_measured_latency(tmp_path, instance):
    _, registry = _canary_champion(tmp_path, instance)
    engine = registry.engine
    version = int(registry.alias(CANARY, "champion")["id"])
    d1 = pd.Timestamp(registry.alias(CANARY, "champion")["train_end"]).ceil("D")
    days = [d1 + i * DAY for i in range(3)]
    tags = paper_day_tags([CANARY], d1)
    assert tags["cvn/live"] == "true"
    paths, latencies = [], []
    for day in days:
        res = _paper(
            tmp_path, instance, f"{day:%Y-%m-%d}", f"{day:%Y-%m-%d}", day + DAY,
            {"cvn/live": paper_day_tags([CANARY], day)["cvn/live"]},
        )  # fmt: skip
        assert res.success, _errors(res)
        summary = _summary(res)
        paths.append(summary["path"])
        latencies.append({int(v): ms for v, ms in summary["latency_ms"].items()})
        assert summary["replayed_from"] == f"{day:%Y-%m-%d} 00:00"  # that day only
    assert paths == ["full", "live", "live"]
    stored = read_live_state(engine, CANARY).latency_ms
    assert set(stored) == {version} and stored[version] > 0
    # measured once (day 1), then the stored value at every later run and in every row
    assert all(lat == {version: round(stored[version], 3)} for lat in latencies)
    live_p = read_predictions(engine, CANARY, days[0], days[-1] + DAY - pd.Timedelta("1us"))
    assert len(live_p) == 72
    assert live_p["latency_ms"].tolist() == [stored[version]] * 72
    live_t = read_trades(engine, CANARY, days[0], days[-1] + DAY - pd.Timedelta("1us"))

    # one backfill of the three days (no live tag) journals the same rows
    res = _paper(tmp_path, instance, f"{days[0]:%Y-%m-%d}", f"{days[-1]:%Y-%m-%d}", days[-1] + DAY)
    assert res.success, _errors(res)
    assert _summary(res)["path"] == "full"
    full_p = read_predictions(engine, CANARY, days[0], days[-1] + DAY - pd.Timedelta("1us"))
    full_t = read_trades(engine, CANARY, days[0], days[-1] + DAY - pd.Timedelta("1us"))
    cols = [c for c in live_p.columns if c != "latency_ms"]
    pd.testing.assert_frame_equal(full_p[cols], live_p[cols], check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(full_t, live_t, check_exact=False, rtol=1e-12)
