"""Production guard, part 1: ``paper_trades`` and ``monitoring_metrics`` on a real temporary
Dagster instance (small config, as ``test_champion_models.py``).

A canary champion is trained on 3000 synthetic hours (its window ends 2023-11-03); then the
days after it are paper-traded through ``paper_job`` (both assets, crypto x day partitions).
"""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from prometheus_client.parser import text_string_to_metric_families

from cvn_assets.assets._util import sweep_identity
from cvn_assets.assets.guard import LABEL_LOOKAHEAD, candidate_schedule_of, champion_schedule
from cvn_assets.definitions import defs
from cvn_assets.guard.paper import DEFAULT_FEE_PER_SIDE, replay
from cvn_assets.market.features import build_features
from cvn_assets.market.labels import labels_for_strategy
from cvn_assets.partitions import SETTINGS
from resources.config_store import ConfigStore
from resources.journal import (
    predictions_table,
    read_monitoring,
    read_predictions,
    read_trades,
    trades_table,
)
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

CANARY = "BTCUSDC"
BASELINE = next(v for v in SETTINGS.variants if v.loss_function == "binary:logistic")
LOCKED = next(v for v in SETTINGS.variants if v.loss_function == "focal")


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


#: the synthetic market's edge: at the default 0.5 a champion this small finds no threshold
#: trading in >= 10 % of its calibration hours with a positive net expectancy (so it never
#: trades); at 2.0 (the drill's market) it trades, which the journal checks below need
EDGE = 2.0


#: the market of the tests' champions: 3000 synthetic hours at EDGE
MARKET = {"hours": 3000, "edge": EDGE}


def _cfg(tmp_path, ops=None, market=None):
    store = str(tmp_path / "store")
    db = {"config": {"database_url": f"sqlite:///{tmp_path / 'r.sqlite'}"}}
    cfg = {
        "resources": {
            "market_data": {"config": market or MARKET},
            "sweep": {"config": {"num_boost_round": 30, "early_stopping_rounds": 10}},
            "results_store": db,
            "config_store": db,
            "model_registry": db,
            "artifacts": {"config": {"base_dir": store}},
            "io_manager": {"config": {"base_dir": store}},
        },
    }
    if ops:
        cfg["ops"] = ops
    return cfg


def _errors(result) -> str:
    out = []
    for e in result.all_events:
        err = getattr(e.event_specific_data, "error", None)
        while err is not None:
            out.append(err.message)
            err = err.cause
    return "\n".join(out)


def _paper(tmp_path, instance, first, last=None, clock=None, tags=None, resources=None):
    kw = (
        {"partition_key": f"{CANARY}|{first}"}
        if last is None
        else {
            "tags": {
                ASSET_PARTITION_RANGE_START_TAG: f"{CANARY}|{first}",
                ASSET_PARTITION_RANGE_END_TAG: f"{CANARY}|{last}",
            }
        }
    )
    cfg = _cfg(tmp_path)
    if clock is not None:
        cfg["resources"]["guard_clock"] = {"config": {"fixed_now": pd.Timestamp(clock).isoformat()}}
    if tags:
        kw["tags"] = {**kw.get("tags", {}), **tags}
    for name, value in (resources or {}).items():
        cfg["resources"][name] = value
    return defs.resolve_job_def("paper_job").execute_in_process(
        run_config=cfg, instance=instance, raise_on_error=False, **kw
    )


def _count(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def _canary_champion(tmp_path, instance, market=None) -> tuple[str, ModelRegistry]:
    """The market (``market``: market_data's config, default :data:`MARKET`) and a canary
    champion (the focal variant locked); returns the results database URL and the registry."""
    res = defs.resolve_job_def("market_job").execute_in_process(
        run_config=_cfg(tmp_path, market=market), instance=instance, partition_key=CANARY
    )
    assert res.success, _errors(res)
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    identity = sweep_identity(
        SweepSettings(num_boost_round=30, early_stopping_rounds=10),
        MarketDataResource(**(market or MARKET)),
    )
    results = ResultsStore(database_url=url)
    results.register_sweep("default", identity)
    results.replace_verdicts(
        "default",
        [{"variant": v.name, "is_baseline": v is BASELINE, "lock": v is LOCKED,
          "mean_delta": 0.0 if v is BASELINE else 0.01} for v in SETTINGS.variants],
    )  # fmt: skip
    res = defs.resolve_job_def("champion_job").execute_in_process(
        run_config=_cfg(tmp_path, market=market), instance=instance, partition_key=CANARY
    )
    assert res.success, _errors(res)
    return url, ModelRegistry(database_url=url)


def test_paper_trades_journal_leakage_halt_and_monitoring(tmp_path, instance):
    url, registry = _canary_champion(tmp_path, instance)
    champ = registry.alias(CANARY, "champion")
    train_end = pd.Timestamp(champ["train_end"])
    first_day = train_end.ceil("D")
    d1, d2, d3, d4 = (f"{first_day + pd.Timedelta(days=i):%Y-%m-%d}" for i in range(4))

    # two days of the canary in one (single-run backfill) run: 24 predictions per day
    res = _paper(tmp_path, instance, d1, d2)
    assert res.success, _errors(res)
    engine = registry.engine
    preds = read_predictions(engine, CANARY, f"{d1}T00:00+00:00", f"{d2} 23:00+00:00")
    assert len(preds) == 48
    assert set(preds["model_version"]) == {champ["id"]}
    assert set(preds["decision"]) <= {"BUY", "HOLD"}
    trades = read_trades(engine, CANARY, f"{d1}T00:00+00:00", f"{d2} 23:59+00:00")
    assert len(trades) > 0 and (trades["model_version"] == champ["id"]).all()
    n_p, n_t = _count(engine, predictions_table), _count(engine, trades_table)
    assert (n_p, n_t) == (48, len(trades))
    mats = res.asset_materializations_for_node("paper_trades")
    assert len(mats) == 2

    # re-materializing a day replaces its rows: same rows, no duplicates
    res = _paper(tmp_path, instance, d2)
    assert res.success, _errors(res)
    assert (_count(engine, predictions_table), _count(engine, trades_table)) == (n_p, n_t)
    again = read_trades(engine, CANARY, f"{d1}T00:00+00:00", f"{d2} 23:59+00:00")
    pd.testing.assert_frame_equal(again, trades)

    # a day before the champion's train_end: refused, naming both dates
    early = f"{first_day - pd.Timedelta(days=2):%Y-%m-%d}"
    res = _paper(tmp_path, instance, early)
    assert not res.success
    text = _errors(res)
    assert "leakage" in text and early in text and f"{train_end:%Y-%m-%d %H:%M}" in text
    assert _count(engine, predictions_table) == n_p

    # monitoring: a row per day in the table, and a .prom file that parses back
    mon = read_monitoring(engine, CANARY)
    assert [str(d) for d in mon["day"]] == [d1, d2]
    row = mon.iloc[-1]
    assert row["buy_proba_n"] == 24 and row["latency_n"] == 24
    assert row["focal_loss_active"] == 1 and row["loss_function"] == "focal"
    assert row["buy_proba_psi"] is not None and row["buy_proba_psi"] >= 0
    prom = tmp_path / "home" / "metrics" / f"{CANARY}.prom"
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert families["cvn_buy_proba_samples"].samples[0].value == 24
    assert "cvn_focal_loss_active" in families and "cvn_inference_latency_seconds" in families
    mats = _paper(tmp_path, instance, d2).asset_materializations_for_node("monitoring_metrics")
    meta = mats[0].metadata
    assert meta["buy_proba_n"].value == 24 and "expectancy_trades_24h" in meta

    # the halt flag, as its audit history recorded it at each hour (never the run-time value):
    # halted from d3 00:00, cleared from d4 00:00 -> no entry on d3
    config = ConfigStore(database_url=url)
    value, version = config.get("trading_halted")
    start, stop = (pd.Timestamp(d, tz="UTC").to_pydatetime() for d in (d3, d4))
    config.compare_and_set("trading_halted", version, "true", actor="ops", reason="drill", at=start)
    res = _paper(tmp_path, instance, d3)
    assert res.success, _errors(res)
    day3 = read_predictions(engine, CANARY, f"{d3}T00:00+00:00", f"{d3} 23:00+00:00")
    assert len(day3) == 24
    t3 = read_trades(engine, CANARY, f"{d3}T00:00+00:00", f"{d3} 23:59+00:00")
    assert (t3["entry_time"] < pd.Timestamp(d3, tz="UTC")).all()
    assert set(t3["barrier"]) <= {"halt", "tp", "sl", "time"}
    (meta,) = [m.metadata for m in res.asset_materializations_for_node("paper_trades")]
    assert (
        meta["trading_halted"].value == "halted at 24/24 decision hours (changes: 00:00:00 -> true)"
    )
    # the clear comes after d3: re-running d3 now gives the same journal
    config.compare_and_set(
        "trading_halted", version + 1, "false", actor="ops", reason="over", at=stop
    )
    res = _paper(tmp_path, instance, d3)
    assert res.success, _errors(res)
    again = read_trades(engine, CANARY, f"{d3}T00:00+00:00", f"{d3} 23:59+00:00")
    pd.testing.assert_frame_equal(again, t3)

    # a day in progress on the guard clock (d4 10:30): its 10 closed hours (00:00 .. 09:00),
    # and the partition's metadata says so; a day with no closed candle yet is refused
    d4_ = pd.Timestamp(d4, tz="UTC")
    res = _paper(tmp_path, instance, d4, clock=d4_ + pd.Timedelta(hours=10, minutes=30))
    assert res.success, _errors(res)
    day4 = read_predictions(engine, CANARY, d4_, d4_ + pd.Timedelta(hours=23))
    assert day4["hour"].tolist() == list(pd.date_range(d4_, periods=10, freq="h"))
    (meta,) = [m.metadata for m in res.asset_materializations_for_node("paper_trades")]
    assert meta["hours_journaled"].value == 10
    assert meta["last_journaled_hour"].value == f"{d4} 09:00"
    res = _paper(tmp_path, instance, d4, clock=d4_ + pd.Timedelta(minutes=59))
    assert not res.success and f"day {d4} has no closed candle yet" in _errors(res)
    assert len(read_predictions(engine, CANARY, d4_, d4_ + pd.Timedelta(hours=23))) == 10


def test_paper_trades_journals_the_drift_inputs_and_shadows_a_candidate(tmp_path, instance):
    """feature_1..5 = the champion's top features (registered reference stats, in order) at
    each hour; label / label_known_at = the labels module's on the same candles; a candidate
    set at d2 12:00 is logged beside the champion from then on, and changes nothing else."""
    url, registry = _canary_champion(tmp_path, instance)
    champ = registry.alias(CANARY, "champion")
    first_day = pd.Timestamp(champ["train_end"]).ceil("D")
    d1, d2 = (first_day + pd.Timedelta(days=i) for i in range(2))
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d2:%Y-%m-%d}")
    assert res.success, _errors(res)
    engine = registry.engine
    end = d2 + pd.Timedelta(hours=23)
    before = read_predictions(engine, CANARY, f"{d1}T00:00+00:00", end)
    assert len(before) == 48

    # the drift inputs, against the features and labels computed here from the candles
    top = [f["name"] for f in champ["reference_stats"]["top_features"]]
    assert len(top) == 5
    candles = MarketDataResource(hours=3000, edge=EDGE).load_candles_through(
        CANARY, d2 + pd.Timedelta(days=3)
    )
    feats = build_features(candles)
    hours = pd.DatetimeIndex(before["hour"])
    np.testing.assert_allclose(
        before[[f"feature_{i}" for i in range(1, 6)]].to_numpy(np.float64),
        feats.loc[hours, top].to_numpy(),
        rtol=1e-9,
    )
    labels = labels_for_strategy(candles, SweepSettings().label_strategy)
    assert before["label"].notna().all()  # the synthetic market goes on after d2
    assert before["label"].astype(int).tolist() == labels.loc[hours, "label"].astype(int).tolist()
    known = pd.DatetimeIndex(before["label_known_at"])
    assert (known > hours).all() and (
        known <= labels.loc[hours, "t1"] + pd.Timedelta(hours=1)
    ).all()
    assert (
        before[["candidate_version", "candidate_buy_proba", "candidate_decision"]]
        .isna()
        .all()
        .all()
    )

    # a candidate (here the champion's artifact under another name) from d2 12:00
    version = registry.get_version(champ["id"])
    cand = registry.register_version(
        CANARY,
        "shadow_test",
        loss_function="binary:logistic",
        gamma=None,
        alpha=None,
        train_start=version["train_start"],
        train_end=version["train_end"],
        sweep_id=version["sweep_id"],
        artifact_uri=version["artifact_uri"],
        reference_stats=version["reference_stats"],
    )
    since = d2 + pd.Timedelta(hours=12)
    registry.set_alias(
        CANARY, "candidate", cand, actor="test", reason="shadow", at=since.to_pydatetime()
    )
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d2:%Y-%m-%d}")
    assert res.success, _errors(res)
    after = read_predictions(engine, CANARY, f"{d1}T00:00+00:00", end)
    shadow = ["candidate_version", "candidate_buy_proba", "candidate_decision"]
    same = [*shadow, "latency_ms"]  # latency: measured again by each run
    pd.testing.assert_frame_equal(after.drop(columns=same), before.drop(columns=same))
    live = pd.DatetimeIndex(after["hour"]) >= since
    assert after.loc[~live, shadow].isna().all().all()
    assert (after.loc[live, "candidate_version"] == cand).all() and live.sum() == 12
    # the same artifact: the candidate's probabilities are the champion's
    np.testing.assert_allclose(
        after.loc[live, "candidate_buy_proba"], after.loc[live, "buy_proba"], rtol=1e-12
    )
    assert after.loc[live, "candidate_decision"].tolist() == after.loc[live, "decision"].tolist()
    (meta,) = [
        m.metadata
        for m in res.asset_materializations_for_node("paper_trades")
        if m.partition == f"{CANARY}|{d2:%Y-%m-%d}"
    ]
    assert meta["candidate_version"].value == str(cand)
    assert meta["candidate_variant"].value == "shadow_test" and meta["labels_known"].value == 24

    # promoting the candidate closes the alias: the hours after it have no shadow any more
    registry.promote_candidate(CANARY, actor="test", reason="better", incident_id="i-1")
    assert registry.alias(CANARY, "candidate") is None
    assert registry.alias(CANARY, "champion")["id"] == cand


def _hand_replay(registry, days, halted):
    """The replay of ``days`` with a hand-written ``halted``: the asset's own inputs (champion
    and candidate schedules, candles, label strategy, default fee), not its flag reading."""
    served = {}
    schedule, _ = champion_schedule(registry, CANARY, served)
    shadow, _ = candidate_schedule_of(registry, CANARY, served)
    label = SweepSettings(num_boost_round=30, early_stopping_rounds=10).label
    candles = MarketDataResource(hours=3000, edge=EDGE).load_candles_through(
        CANARY, days[-1] + pd.Timedelta(days=1) + LABEL_LOOKAHEAD
    )
    first = min(schedule.models[0].train_end.ceil("D"), days[0])
    rep = replay(
        candles, None, first, days[-1], schedule, crypto=CANARY,
        take_profit=label.take_profit, stop_loss=label.stop_loss, horizon=label.horizon,
        fee_per_side=DEFAULT_FEE_PER_SIDE, halted=halted, candidates=shadow,
    )  # fmt: skip
    own = pd.DatetimeIndex(days)
    preds = rep.predictions[rep.predictions["hour"].dt.normalize().isin(own)]
    trades = rep.trades[rep.trades["exit_time"].dt.normalize().isin(own)]
    return preds.reset_index(drop=True), trades.reset_index(drop=True)


def _journal(engine, days):
    lo, hi = days[0], days[-1] + pd.Timedelta(hours=23, minutes=59)
    return read_predictions(engine, CANARY, lo, hi), read_trades(engine, CANARY, lo, hi)


def _same_journal(got, want):
    # latency: measured per run; no candidate here (NULL read back as None, the replay's NaN)
    shadow = ["candidate_version", "candidate_buy_proba", "candidate_decision"]
    assert got[0][shadow].isna().all().all() and want[0][shadow].isna().all().all()
    keep = [c for c in want[0].columns if c not in ("latency_ms", *shadow)]
    pd.testing.assert_frame_equal(got[0][keep], want[0][keep], check_dtype=False)
    pd.testing.assert_frame_equal(got[1], want[1][got[1].columns], check_dtype=False)


def test_the_halt_applies_as_it_was_at_each_hour_whenever_the_day_runs(tmp_path, instance):
    """Issue 18, kind 3: ``trading_halted`` set at d1 15:00 and cleared at d2 09:00. Day 1 run
    after the halt (before the clear), day 2 run after the clear, then both re-run after later
    halts: every time the journal is the replay with the hand-written halt window -- the
    decisions taken in [d1 15:00, d2 09:00), i.e. the candles opening d1 14:00 .. d2 07:00."""
    url, registry = _canary_champion(tmp_path, instance)
    engine = registry.engine
    first_day = pd.Timestamp(registry.alias(CANARY, "champion")["train_end"]).ceil("D")
    d1, d2, d3 = (first_day + pd.Timedelta(days=i) for i in range(3))
    halt, clear = d1 + pd.Timedelta(hours=15), d2 + pd.Timedelta(hours=9)

    def by_hand(hour: pd.Timestamp) -> bool:
        return d1 + pd.Timedelta(hours=14) <= hour <= d2 + pd.Timedelta(hours=7)

    free = _hand_replay(registry, [d1, d2], None)  # no halt at all
    want = _hand_replay(registry, [d1, d2], by_hand)
    # the halt makes a difference: without it some trade is entered in the halted hours
    assert any(by_hand(t) for t in pd.DatetimeIndex(free[1]["entry_time"]))
    assert not any(by_hand(t) for t in pd.DatetimeIndex(want[1]["entry_time"]))

    config = ConfigStore(database_url=url)
    config.compare_and_set(
        "trading_halted", 1, "true", actor="ops", reason="halt", at=halt.to_pydatetime()
    )
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}")  # run after the halt, before the clear
    assert res.success, _errors(res)
    (meta,) = [m.metadata for m in res.asset_materializations_for_node("paper_trades")]
    assert meta["trading_halted"].value == (
        "halted at 10/24 decision hours (changes: 15:00:00 -> true)"
    )
    config.compare_and_set(
        "trading_halted", 2, "false", actor="ops", reason="clear", at=clear.to_pydatetime()
    )
    res = _paper(tmp_path, instance, f"{d2:%Y-%m-%d}")  # run after the clear
    assert res.success, _errors(res)
    _same_journal(_journal(engine, [d1, d2]), want)

    # later halts (after d2) change nothing of d1, d2 when they are re-run (one backfill)
    config.compare_and_set(
        "trading_halted", 3, "true", actor="ops", reason="again",
        at=(d3 + pd.Timedelta(hours=10)).to_pydatetime(),
    )  # fmt: skip
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d2:%Y-%m-%d}")
    assert res.success, _errors(res)
    _same_journal(_journal(engine, [d1, d2]), want)


def test_a_missing_hour_in_the_paper_csv_is_reported_and_has_no_decision(tmp_path, instance):
    """Issue 21, item 6: a row deleted from the paper-trading CSV. The replay has no decision
    at that hour (bars are positional), the day's metadata says which hour is missing, and the
    run summary counts it."""
    from cvn_assets.market.synthetic_market import synthetic_candles

    full = synthetic_candles(list(SETTINGS.universe), hours=3000 + 24 * 5, edge=EDGE)
    sweep_dir, paper_dir = tmp_path / "sweep", tmp_path / "paper"
    sweep_dir.mkdir()
    paper_dir.mkdir()
    for sym, frame in full.items():
        out = frame.reset_index()
        out["open_time"] = out["open_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.iloc[:3000].to_csv(sweep_dir / f"{sym}_1h.csv", index=False)
        later = out.iloc[3000:]
        if sym == CANARY:
            later = later.drop(later.index[24 + 10])  # the second paper day's 10:00 candle
        later.to_csv(paper_dir / f"{sym}_1h.csv", index=False)
    csv = {"source": "csv", "csv_dir": str(sweep_dir), "paper_csv_dir": str(paper_dir)}
    url, registry = _canary_champion(tmp_path, instance, market=csv)
    champ = registry.alias(CANARY, "champion")
    d1 = pd.Timestamp(champ["train_end"]).ceil("D")
    d2 = d1 + pd.Timedelta(days=1)
    gap = full[CANARY].index[3000 + 24 + 10]
    assert gap.normalize() == d2 and gap.hour == 10  # the window ends at midnight here
    market = {"market_data": {"config": csv}}
    res = _paper(tmp_path, instance, f"{d1:%Y-%m-%d}", f"{d2:%Y-%m-%d}", resources=market)
    assert res.success, _errors(res)
    meta = {m.partition: m.metadata for m in res.asset_materializations_for_node("paper_trades")}
    day2 = meta[f"{CANARY}|{d2:%Y-%m-%d}"]
    assert day2["missing_hours"].value == 1 and day2["missing_hour_list"].value == "10:00"
    assert meta[f"{CANARY}|{d1:%Y-%m-%d}"]["missing_hours"].value == 0
    assert day2["hours_journaled"].value == 23
    preds = read_predictions(registry.engine, CANARY, d2, d2 + pd.Timedelta(hours=23))
    assert gap not in set(preds["hour"]) and len(preds) == 23
