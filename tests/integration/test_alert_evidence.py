"""Every guard alert states exactly the evidence it used (issue 18, kind 1).

On hand-made journals (SQLite, the real registry and sensors): the P1 judges only the live
focal champions' trades exiting in the last 48 h (a thin window is ``insufficient``, never
crit, and never leads to a rollback); the separate ``expectancy_negative_sparse`` P2 states
its own window; every figure of every rule (expectancy 48 h / 24 h, sparse, data drift,
concept drift, sharpness) equals what is recomputed here by hand from exactly the rows inside
the rule's window, and rows just outside it (older, not yet closed, another model version)
change nothing.
"""

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, build_sensor_context
from scipy import stats

from cvn_assets.ablation.identity import SweepIdentity
from cvn_assets.definitions import defs
from cvn_assets.guard.drift import EXPECTANCY_ALPHA, data_drift
from resources.config_store import ConfigStore
from resources.guard_clock import GuardClock
from resources.journal import replace_days
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from resources.rollbacks import RollbackLog
from sensors.evaluation import evaluate_drift, evaluate_expectancy
from sensors.guard_sensors import drift_alert_requests
from tests.support.journal_hours import journal_until

CRYPTOS = ("BTCUSDC", "ETHUSDC")
T0 = datetime(2026, 3, 2, 0, tzinfo=UTC)  # promotions happen before, trades after
FEATURES = ("ret_1h", "vol_24h")


def _reference_stats() -> dict:
    return {
        "top_features": [
            {
                "name": f,
                "train_decile_edges": list(np.linspace(-1.6, 1.6, 9)),
                "window_psi_q99": 0.0,
            }
            for f in FEATURES
        ],
        "n_train": 10_000,
        "oos_f1_buy": 0.60,
        "f1_threshold": 0.5,
        "train_mean_confidence": 0.55,
    }


def _setup(url: str) -> dict[str, dict[str, int]]:
    """Each crypto: a baseline champion replaced by a focal one (before T0)."""
    ResultsStore(database_url=url).register_sweep(
        "s", SweepIdentity({"eta": 0.05}, {"universe": list(CRYPTOS)}, {"source": "x"}, {})
    )
    reg = ModelRegistry(database_url=url)
    ids: dict[str, dict[str, int]] = {}
    for crypto in CRYPTOS:
        ids[crypto] = {}
        for k, (variant, loss, g, a) in enumerate(
            (("baseline", "binary:logistic", None, None), ("focal_g2_a025", "focal", 2.0, 0.25))
        ):
            vid = reg.register_version(
                crypto, variant, loss_function=loss, gamma=g, alpha=a,
                train_start=datetime(2025, 1, 1, tzinfo=UTC),
                train_end=datetime(2026, 1, 1, tzinfo=UTC), sweep_id="s",
                artifact_uri=f"file:///x/{crypto}/{variant}", reference_stats=_reference_stats(),
            )  # fmt: skip
            reg.promote(crypto, vid, actor="t", reason="setup", at=T0 - timedelta(hours=2 - k))
            ids[crypto][variant.split("_")[0]] = vid
    return ids


@pytest.fixture
def home(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'guard.sqlite'}"
    monkeypatch.setenv("CVN_DATABASE_URL", url)
    monkeypatch.setenv("CVN_ALERTS_PATH", str(tmp_path / "alerts.jsonl"))
    return url


def _tick(name: str, now: datetime, url: str, cursor=None):
    ctx = build_sensor_context(
        instance=DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={
            "guard_clock": GuardClock(fixed_now=now.isoformat()),
            "model_registry": ModelRegistry(database_url=url),
            "config_store": ConfigStore(database_url=url),
            "rollback_log": RollbackLog(database_url=url),
            "market_data": MarketDataResource(),
        },
        sensor_name=name,
        definitions=defs,
    )
    return defs.get_repository_def().get_sensor_def(name).evaluate_tick(ctx)


def _write_trades(url: str, crypto: str, exits: list[datetime], net, versions) -> None:
    net = np.asarray(net, dtype=float)
    frame = pd.DataFrame(
        {"crypto": crypto, "entry_time": [e - timedelta(hours=1) for e in exits],
         "entry_price": 100.0, "exit_time": exits, "exit_price": 100.0 * (1 + net),
         "barrier": "sl", "gross_return": net + 0.002, "net_return": net,
         "model_version": versions, "loss_function": "focal"}
    )  # fmt: skip
    days = sorted({pd.Timestamp(e).normalize() for e in exits})
    replace_days(ModelRegistry(database_url=url).engine, crypto, days, None, frame)


def _send_alert_config(request) -> dict:
    return request.run_config["ops"]["send_alert"]["config"]


# ----------------------------------------------------------------------------- expectancy
def test_thin_48h_window_is_insufficient_never_a_p1_or_rollback_and_pages_a_sparse_p2(home):
    """The issue's example: 2 trades in 48 h at +0.30 %, 8 trades at -1 % that exited 3 to 6
    days ago. The P1 is insufficient on both cryptos over two hourly ticks (no rollback); the
    sparse P2 states its own window, and its figures are those of exactly these 10 trades."""
    url = home
    ids = _setup(url)
    now = T0 + timedelta(days=8)
    old = [now - timedelta(days=6) + timedelta(hours=10 * i) for i in range(8)]  # 3-6 days ago
    recent = [now - timedelta(hours=30), now - timedelta(hours=5)]
    net = [-0.01] * 8 + [0.003] * 2
    for c in CRYPTOS:
        _write_trades(url, c, old + recent, net, ids[c]["focal"])
        journal_until(url, c, ids[c]["focal"], now)  # the journal is current: not stale
    ev = evaluate_expectancy(ModelRegistry(database_url=url), CRYPTOS, now)
    assert ev.verdict.level == "insufficient"
    assert {c: v.level for c, v in ev.per_crypto.items()} == dict.fromkeys(CRYPTOS, "insufficient")
    assert ev.figures()["BTCUSDC_n_48h"] == 2 and "BTCUSDC_mean_48h" not in ev.figures()

    first = _tick("expectancy_negative_focal", now, url)
    for c in CRYPTOS:  # the live loop journals the next hour before it is judged
        journal_until(url, c, ids[c]["focal"], now + timedelta(hours=1))
    second = _tick("expectancy_negative_focal", now + timedelta(hours=1), url, first.cursor)
    for res in (first, second):
        assert all(r.job_name == "alert_job" for r in res.run_requests)
        configs = [_send_alert_config(r) for r in res.run_requests]
        assert all(c["name"] == "expectancy_negative_sparse" for c in configs)
        assert all(c["severity"] == "P2" for c in configs)
    assert json.loads(second.cursor)["p1_times"] == []
    # the sparse P2: one per crypto, once for the same trades (the run key holds the last exit)
    assert [r.run_key for r in first.run_requests] == [
        f"alert:expectancy_negative_sparse:{c}:{recent[-1]:%Y-%m-%dT%H}" for c in CRYPTOS
    ]
    assert [r.run_key for r in second.run_requests] == [r.run_key for r in first.run_requests]
    cfg = _send_alert_config(first.run_requests[0])
    fig = json.loads(cfg["figures_json"])
    r = np.array(net)
    t_crit = -stats.t.ppf(1 - EXPECTANCY_ALPHA, 9) * r.std(ddof=1) / math.sqrt(10)
    assert stats.ttest_1samp(r, 0.0, alternative="less").pvalue < 0.05
    assert fig["n_trades"] == 10 and fig["n_48h"] == 2
    assert fig["mean"] == pytest.approx(-0.0074, abs=1e-9)
    assert fig["critical"] == pytest.approx(t_crit, abs=1e-6)
    assert fig["first_exit"] == pd.Timestamp(old[0]).isoformat()
    assert fig["last_exit"] == pd.Timestamp(recent[-1]).isoformat()
    assert fig["model_version"] == ids["BTCUSDC"]["focal"]
    assert "last 10 trades" in cfg["message"] and "48 h" in cfg["message"]
    assert f"{old[0]:%Y-%m-%dT%H:%M}Z" in cfg["message"] and "-0.740 %" in cfg["message"]


def test_p1_and_warn_figures_are_exactly_the_live_focal_trades_of_their_windows(home):
    url = home
    ids = _setup(url)
    now = T0 + timedelta(days=4)
    rng = np.random.default_rng(3)
    inside = [now - timedelta(hours=47) + timedelta(hours=4 * i) for i in range(12)]  # in 48 h
    boundary_out = now - timedelta(hours=48)  # (now - 48 h, now]: excluded
    net_in = -0.004 + 0.001 * rng.standard_normal(12)
    for c in CRYPTOS:  # one write per crypto: replace_days replaces whole days
        # outside (now - 48 h, now]: at now - 48 h and 60 h ago; and a trade of the baseline
        # inside the window, which never counts against the focal champion
        exits = [*inside, boundary_out, now - timedelta(hours=60), now - timedelta(minutes=90)]
        versions = [ids[c]["focal"]] * 14 + [ids[c]["baseline"]]
        _write_trades(url, c, exits, [*net_in, 0.05, 0.05, 0.5], versions)
    first = _tick("expectancy_negative_focal", now, url)
    p1 = [r for r in first.run_requests if _send_alert_config(r)["name"] ==
          "expectancy_negative_focal"]  # fmt: skip
    assert len(p1) == 1
    cfg = _send_alert_config(p1[0])
    fig = json.loads(cfg["figures_json"])
    in24 = np.array(
        [x for x, e in zip(net_in, inside, strict=True) if e > now - timedelta(hours=24)]
    )
    assert cfg["severity"] == "P1"
    assert fig["window_48h_start"] == (now - timedelta(hours=48)).isoformat()
    assert fig["window_24h_start"] == (now - timedelta(hours=24)).isoformat()
    assert fig["window_end"] == now.isoformat()
    for c in CRYPTOS:
        assert fig[f"{c}_model_version"] == ids[c]["focal"]
        assert fig[f"{c}_n_48h"] == 12 and fig[f"{c}_n_24h"] == in24.size == 6
        assert fig[f"{c}_mean_48h"] == pytest.approx(net_in.mean(), abs=1e-6)
        crit = -stats.t.ppf(1 - EXPECTANCY_ALPHA, 11) * net_in.std(ddof=1) / math.sqrt(12)
        assert fig[f"{c}_critical_48h"] == pytest.approx(crit, abs=1e-6)
        assert f"{c} 48 h mean {100 * net_in.mean():+.3f} %" in cfg["message"]
        assert "(n 12)" in cfg["message"]
    assert fig["crypto_count"] == 2 and fig["crypto_count_needed"] == 2
    assert (
        "48 h" in cfg["message"]
        and f"{now - timedelta(hours=48):%Y-%m-%dT%H:%M}Z" in cfg["message"]
    )


def test_warn_alert_states_the_24h_evidence_and_omits_non_focal_cryptos(home):
    url = home
    ids = _setup(url)
    now = T0 + timedelta(days=4)
    # 48 h: 10 winners then 10 losers (48 h mean > 0: not crit); 24 h: the 10 losers (crit)
    early = [now - timedelta(hours=46) + timedelta(hours=2 * i) for i in range(10)]
    late = [now - timedelta(hours=23) + timedelta(hours=2 * i) for i in range(10)]
    rng = np.random.default_rng(9)
    losers = -0.004 + 0.0005 * rng.standard_normal(10)
    winners = np.full(10, 0.006)
    for c in CRYPTOS:
        _write_trades(url, c, early + late, np.r_[winners, losers], ids[c]["focal"])
    # a third crypto whose champion is the baseline: not an input of the rule
    ev = evaluate_expectancy(ModelRegistry(database_url=url), CRYPTOS, now)
    assert ev.verdict.level == "warn"
    fig, msg = ev.figures(), ev.message()
    for c in CRYPTOS:
        assert fig[f"{c}_level"] == "warn"
        assert fig[f"{c}_n_24h"] == 10 and fig[f"{c}_n_48h"] == 20
        assert fig[f"{c}_mean_24h"] == pytest.approx(losers.mean(), abs=1e-6)
        assert fig[f"{c}_mean_48h"] == pytest.approx(np.r_[winners, losers].mean(), abs=1e-6)
        assert f"{c} 24 h mean {100 * losers.mean():+.3f} %" in msg and "(n 10)" in msg
    # roll ETH back to its baseline: ETH leaves the figures, and the rule cannot reach 2
    reg = ModelRegistry(database_url=url)
    reg.promote("ETHUSDC", ids["ETHUSDC"]["baseline"], actor="t", reason="r",
                at=now - timedelta(minutes=1))  # fmt: skip
    ev = evaluate_expectancy(reg, CRYPTOS, now)
    assert ev.focal_cryptos == ("BTCUSDC",)
    assert not any(k.startswith("ETHUSDC_") for k in ev.figures())
    assert ev.verdict.level == "insufficient" or not ev.verdict.alarm


# ----------------------------------------------------------------------------------- drift
def _write_predictions(url: str, crypto: str, version: int, hours, proba, features, labels):
    frame = pd.DataFrame(
        {"crypto": crypto, "hour": hours, "model_version": version, "loss_function": "focal",
         "buy_proba": proba, "decision": np.where(np.asarray(proba) >= 0.5, "BUY", "HOLD"),
         "latency_ms": None,
         **{f"feature_{i + 1}": features[:, i] for i in range(features.shape[1])},
         "label": labels, "label_known_at": [h + timedelta(hours=5) for h in hours]}
    )  # fmt: skip
    days = sorted({pd.Timestamp(h).normalize() for h in hours})
    replace_days(ModelRegistry(database_url=url).engine, crypto, days, frame, None)


def test_drift_alerts_state_exactly_the_rows_each_rule_used(home):
    url = home
    ids = _setup(url)
    crypto, vid = "BTCUSDC", ids["BTCUSDC"]["focal"]
    as_of = T0 + timedelta(days=20)  # a day boundary, as the daily sensor evaluates
    hours = [as_of - timedelta(hours=h) for h in range(24 * 16, -3, -1)]  # 16 days + 2 h ahead
    n = len(hours)
    rng = np.random.default_rng(11)
    feats = np.c_[rng.normal(0.0, 1.0, n) + 1.2, rng.normal(0.0, 1.0, n)]  # ret_1h shifted
    proba = rng.uniform(0.0, 1.0, n) ** 0.1  # sharp: mostly near 1
    labels = rng.integers(0, 2, n)
    _write_predictions(url, crypto, vid, hours, proba, feats, labels)
    ev = evaluate_drift(ModelRegistry(database_url=url), crypto, as_of)
    frame = pd.DataFrame({"hour": hours, "p": proba, "label": labels,
                          "known": [h + timedelta(hours=5) for h in hours]})  # fmt: skip
    frame[["f1", "f2"]] = feats
    closed = frame["hour"] + timedelta(hours=1) <= as_of
    week = frame[closed & (frame["hour"] >= as_of - timedelta(days=7))]
    fortnight = frame[closed & (frame["hour"] >= as_of - timedelta(days=14))]
    matured = fortnight[fortnight["known"] <= as_of]
    assert len(week) == 168 and len(fortnight) == 336 and len(matured) == 336 - 4

    # data drift: the PSI of exactly the week's values of each feature
    d = ev["data_drift"]
    ref = _reference_stats()
    edges = {f["name"]: f["train_decile_edges"] for f in ref["top_features"]}
    expected = data_drift(
        {"ret_1h": week["f1"].to_numpy(), "vol_24h": week["f2"].to_numpy()},
        edges, n_train=ref["n_train"], null_floor={f: 0.0 for f in FEATURES},
    )  # fmt: skip
    assert d.level == expected.level == "crit"
    fig = ev.figures("data_drift")
    assert fig["rows"] == 168 and fig["n"] == 168 and fig["n_ret_1h"] == 168
    assert fig["psi_ret_1h"] == pytest.approx(expected.details["ret_1h"]["psi"], abs=1e-6)
    assert fig["psi_vol_24h"] == pytest.approx(expected.details["vol_24h"]["psi"], abs=1e-6)
    assert fig["first_hour"] == week["hour"].min().isoformat()
    assert fig["last_hour"] == (as_of - timedelta(hours=1)).isoformat()
    assert fig["window_start"] == (as_of - timedelta(days=7)).isoformat()
    assert fig["model_version"] == vid

    # concept drift: f1_buy at the threshold over exactly the matured rows
    c = ev["concept_drift"]
    pred = matured["p"].to_numpy() >= 0.5
    y = matured["label"].to_numpy() == 1
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    f1 = 2 * tp / (2 * tp + fp + fn)
    fig = ev.figures("concept_drift")
    assert fig["rows"] == c.n == len(matured) == 332
    assert fig["live_f1"] == pytest.approx(f1, abs=1e-6)
    assert fig["gap"] == pytest.approx(0.60 - f1, abs=1e-6)
    assert fig["n_positives"] == int(y.sum())
    assert fig["last_hour"] == matured["hour"].max().isoformat()
    assert fig["window_start"] == (as_of - timedelta(days=14)).isoformat()

    # sharpness: mean max(p, 1 - p) over exactly the week
    s = ev["output_sharpness"]
    sharp = float(np.maximum(week["p"], 1 - week["p"]).mean())
    fig = ev.figures("output_sharpness")
    assert s.level == "warn" and fig["value"] == pytest.approx(sharp, abs=1e-6)
    assert fig["rows"] == fig["n"] == 168

    # the messages name the rows; one request per run key; one retrain naming both reasons
    for name in ("data_drift", "concept_drift", "output_sharpness"):
        msg = ev.message(name)
        rows = ev.windows[name].n_rows
        assert f"model v{vid}" in msg and f"{rows} hourly predictions" in msg
    requests = drift_alert_requests(ev)
    assert len({r.run_key for r in requests}) == len(requests)
    for r in requests:
        if r.job_name == "alert_job":
            cfg = _send_alert_config(r)
            assert cfg["message"] == ev.message(cfg["name"])
            assert json.loads(cfg["figures_json"]) == ev.figures(cfg["name"])


def test_data_and_concept_crit_on_one_crypto_day_request_one_retrain_naming_both(home):
    url = home
    ids = _setup(url)
    crypto, vid = "ETHUSDC", ids["ETHUSDC"]["focal"]
    as_of = T0 + timedelta(days=20)
    hours = [as_of - timedelta(hours=h) for h in range(24 * 14, 0, -1)]
    n = len(hours)
    rng = np.random.default_rng(5)
    feats = np.c_[rng.normal(0.0, 1.0, n) + 2.0, rng.normal(0.0, 1.0, n)]
    labels = rng.integers(0, 2, n)
    proba = np.where(labels == 1, 0.4, 0.6)  # always wrong (f1 0 vs OOS 0.60), not sharp
    _write_predictions(url, crypto, vid, hours, proba, feats, labels)
    ev = evaluate_drift(ModelRegistry(database_url=url), crypto, as_of)
    assert ev["data_drift"].level == "crit" and ev["concept_drift"].level == "crit"
    requests = drift_alert_requests(ev)
    assert len({r.run_key for r in requests}) == len(requests)
    retrains = [r for r in requests if r.job_name == "shadow_retrain_job"]
    assert len(retrains) == 1
    assert retrains[0].run_key == f"shadow_retrain:{crypto}:{as_of:%Y-%m-%dT%H}"
    reason = retrains[0].run_config["ops"]["shadow_retrain"]["config"]["reason"]
    assert reason.startswith("data_drift crit: ") and "; concept_drift crit: " in reason
    alerts = [_send_alert_config(r)["name"] for r in requests if r.job_name == "alert_job"]
    assert sorted(alerts) == ["concept_drift", "data_drift"]


def test_sharpness_revert_keeps_the_live_champions_trading_share(home):
    """Two consecutive sharpness triggers request champion_job with the baseline at the live
    champion's min_trade_share (a revert at the default share would retrain another model
    under the same version key: ModelVersionConflict, seen in the calm drill)."""
    from dagster import validate_run_config

    url = home
    reg = ModelRegistry(database_url=url)
    ids = _setup(url)
    crypto, vid = "BTCUSDC", ids["BTCUSDC"]["focal"]
    with reg.engine.begin() as conn:  # the champion was trained at a 30 % trading share
        from resources.model_registry import model_versions_table as mv

        stats = {**_reference_stats(), "min_trade_share": 0.3}
        conn.execute(
            mv.update().where(mv.c.id == vid).values(reference_stats_json=json.dumps(stats))
        )
    day = T0 + timedelta(days=20)
    hours = [day + timedelta(days=1) - timedelta(hours=h) for h in range(24 * 9, 0, -1)]
    rng = np.random.default_rng(2)
    n = len(hours)
    _write_predictions(url, crypto, vid, hours, np.full(n, 0.97), rng.normal(0, 1, (n, 2)),
                       rng.integers(0, 2, n))  # fmt: skip
    first = _tick("model_drift", day, url)
    second = _tick("model_drift", day + timedelta(days=1), url, first.cursor)
    reverts = [r for r in second.run_requests if r.job_name == "champion_job"]
    assert [r.partition_key for r in reverts] == [crypto]
    cfg = reverts[0].run_config["ops"]["champion_models"]["config"]
    assert cfg["override_variant"] == "baseline" and cfg["min_trade_share"] == 0.3
    job = defs.resolve_job_def("champion_job")
    assert validate_run_config(job, reverts[0].run_config)
