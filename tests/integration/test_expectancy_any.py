"""Issue 21, item 4: the P2 ``expectancy_negative_any`` watches every live champion whatever its
loss, so after a rollback to the baseline a losing baseline pages (the P1 stays ``ok - focal
not active``); never a rollback; one run key per hour. And ``promote_candidate_job`` refuses a
focal candidate while the kill switch says ``binary:logistic``.

Hand-built journals on a real SQLite results store and a real Dagster instance; the
independent truth is scipy's one-sided t-test (``ttest_1samp(..., alternative="less")``) and
numpy's mean / standard deviation."""

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance
from scipy import stats

from cvn_assets.guard.drift import EXPECTANCY_ALPHA
from resources.config_store import ConfigStore
from resources.journal import replace_days
from resources.model_registry import ModelRegistry
from tests.integration.test_guard_jobs_sensors import (
    CRYPTOS,
    T0,
    _rollback,
    _run,
    _setup,
    _tick,
    home,  # noqa: F401 (fixture)
)
from tests.support.journal_hours import journal_until

ANY = "expectancy_negative_any"
P1 = "expectancy_negative_focal"


def _trades(url: str, crypto: str, version: int, loss: str, end, net: np.ndarray) -> None:
    """``len(net)`` trades of ``version`` exiting every 2 h up to ``end`` with net returns
    ``net``; the journal's hours reach ``end`` (not stale)."""
    n = len(net)
    exits = [end - timedelta(hours=2 * i) for i in range(n)][::-1]
    frame = pd.DataFrame(
        {"crypto": crypto, "entry_time": [e - timedelta(hours=1) for e in exits],
         "entry_price": 100.0, "exit_time": exits, "exit_price": 100.0 * (1 + net + 0.002),
         "barrier": "sl", "gross_return": net + 0.002, "net_return": net,
         "model_version": version, "loss_function": loss}
    )  # fmt: skip
    days = sorted({pd.Timestamp(e).normalize() for e in exits})
    replace_days(ModelRegistry(database_url=url).engine, crypto, days, None, frame)
    journal_until(url, crypto, version, end)


def _after_rollback(url: str, n: int = 12):
    """Focal champions rolled back (rollback_job) to their baselines at ``T0 + 1 day``; then
    ``n`` losing baseline trades per crypto (~ -0.3 % each) exiting every 2 h up to ``now``
    (``T0 + 2 days``, all after the rollback). Returns (ids, now, nets)."""
    ids = _setup(url)
    rolled_at = T0 + timedelta(days=1)
    assert _rollback("INC-rb", clock=rolled_at).success
    reg = ModelRegistry(database_url=url)
    for c in CRYPTOS:
        assert reg.alias(c, "champion")["id"] == ids[c]["baseline"]
    now = T0 + timedelta(days=2)
    nets = {}
    for k, c in enumerate(CRYPTOS):
        nets[c] = -0.003 + 0.002 * np.random.default_rng(10 + k).standard_normal(n)
        _trades(url, c, ids[c]["baseline"], "binary:logistic", now, nets[c])
    return ids, now, nets


def test_baselines_losing_after_a_rollback_page_the_p2_not_the_p1(home):  # noqa: F811
    url, tmp = home
    ids, now, nets = _after_rollback(url)
    # independent truth: each baseline's 12 trades are significantly negative (one-sided t)
    for net in nets.values():
        assert stats.ttest_1samp(net, 0.0, alternative="less").pvalue < 0.05

    # the P1 watches focal champions only: ok - focal not active, nothing requested
    p1 = _tick(P1, now, url)
    assert not p1.run_requests
    assert f"{now.isoformat()}: ok: focal not active" in p1.skip_message

    res = _tick(ANY, now, url)
    assert [r.job_name for r in res.run_requests] == ["alert_job"]  # never a rollback
    req = res.run_requests[0]
    assert req.run_key.startswith(f"alert:{ANY}:P2:") and req.run_key.endswith(f"{now:%Y-%m-%d}")
    cfg = req.run_config["ops"]["send_alert"]["config"]
    assert (cfg["name"], cfg["severity"], cfg["cryptos"]) == (ANY, "P2", sorted(CRYPTOS))
    assert cfg["runbook"] == "runbooks/runbook_negative_expectancy_all.md"
    assert cfg["incident_id"] == f"INC-{now:%Y%m%dT%H%M}-{ANY}-BTCUSDC+ETHUSDC"
    fig = json.loads(cfg["figures_json"])
    assert fig["window_48h_start"] == (now - timedelta(hours=48)).isoformat()
    assert fig["window_end"] == now.isoformat()
    assert (fig["crypto_count"], fig["crypto_count_needed"]) == (2, 2)
    assert fig["focal_cryptos"] == ""  # the P1's scope is empty
    for c in CRYPTOS:
        net = nets[c]
        sd = float(np.std(net, ddof=1))
        critical = -stats.t.ppf(1 - EXPECTANCY_ALPHA, len(net) - 1) * sd / np.sqrt(len(net))
        assert fig[f"{c}_model_version"] == ids[c]["baseline"]
        assert (fig[f"{c}_variant"], fig[f"{c}_loss_function"]) == ("baseline", "binary:logistic")
        assert (fig[f"{c}_level"], fig[f"{c}_n_48h"], fig[f"{c}_n_24h"]) == ("crit", 12, 12)
        assert fig[f"{c}_mean_48h"] == pytest.approx(float(np.mean(net)), abs=1e-6)
        assert fig[f"{c}_critical_48h"] == pytest.approx(critical, abs=1e-6)
        assert f"{c} 48 h mean {100 * np.mean(net):+.3f} %" in cfg["message"]
        assert f"[v{ids[c]['baseline']} baseline, binary:logistic]" in cfg["message"]
    assert cfg["message"].startswith(
        f"P2: net expectancy < 0 over the 48 h to {now:%Y-%m-%dT%H:%M}Z (trades exiting in "
        f"({now - timedelta(hours=48):%Y-%m-%dT%H:%M}Z, {now:%Y-%m-%dT%H:%M}Z]) on 2 live "
        "champions, whatever their loss (0 focal, 2 other loss): "
    )
    # the alert run records it; its metadata links the asset check showing the same losses
    out = _run(req.job_name, req.run_config["ops"], clock=now)
    assert out.success
    outputs = [e for e in out.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = outputs[0].event_specific_data.metadata
    assert meta["asset_check"].value == "monitoring_metrics:net_expectancy"
    assert meta["runbook"].value == "runbooks/runbook_negative_expectancy_all.md"
    # no rollback was requested by either sensor, and the flag is where the rollback left it
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION")[0] == "binary:logistic"


def test_the_p2_pages_once_per_set_of_cryptos_and_day(home):  # noqa: F811
    url, _ = home
    ids, now, _ = _after_rollback(url)
    instance = DagsterInstance.ephemeral()

    def journal_to(end):  # the live loop journaling up to end's last closed candle
        for c in CRYPTOS:
            journal_until(url, c, ids[c]["baseline"], end)

    first = _tick(ANY, now, url, instance=instance)
    (req,) = first.run_requests
    cryptos = "+".join(sorted(req.run_config["ops"]["send_alert"]["config"]["cryptos"]))
    key = f"alert:{ANY}:P2:{cryptos}:{now:%Y-%m-%d}"
    assert req.run_key == key
    # the same hour again with the cursor: already evaluated, nothing requested
    again = _tick(ANY, now + timedelta(minutes=20), url, first.cursor, instance=instance)
    assert not again.run_requests and "already evaluated" in again.skip_message
    # a retried tick (no cursor stored) requests the same key: Dagster launches it once
    retried = _tick(ANY, now + timedelta(minutes=20), url, instance=instance)
    assert [r.run_key for r in retried.run_requests] == [key]
    # the next hour, same losing set, same day: the same key (no second page that day)
    later = now + timedelta(hours=1)
    assert later.date() == now.date(), "the fixture's hour must leave room in its day"
    journal_to(later)
    nxt = _tick(ANY, later, url, first.cursor, instance=instance)
    assert [r.run_key for r in nxt.run_requests] == [key]
    # a catch-up of two hours of one day: one request, the cursor at the last hour
    late = now + timedelta(hours=3)
    journal_to(late)
    caught = _tick(ANY, late, url, nxt.cursor, instance=instance)
    want = f"alert:{ANY}:P2:{cryptos}:{late:%Y-%m-%d}"
    assert [r.run_key for r in caught.run_requests] == [want]
    assert json.loads(caught.cursor) == {"evaluated_hour": late.isoformat()}


def test_one_losing_champion_alone_does_not_page(home):  # noqa: F811
    url, _ = home
    ids = _setup(url)
    assert _rollback("INC-rb", clock=T0 + timedelta(days=1)).success
    now = T0 + timedelta(days=2)
    rng = np.random.default_rng(3)
    losing = -0.003 + 0.002 * rng.standard_normal(12)
    winning = 0.003 + 0.002 * rng.standard_normal(12)
    assert stats.ttest_1samp(losing, 0.0, alternative="less").pvalue < 0.05
    assert stats.ttest_1samp(winning, 0.0, alternative="less").pvalue > 0.05
    _trades(url, "BTCUSDC", ids["BTCUSDC"]["baseline"], "binary:logistic", now, losing)
    _trades(url, "ETHUSDC", ids["ETHUSDC"]["baseline"], "binary:logistic", now, winning)
    res = _tick(ANY, now, url)
    assert not res.run_requests
    assert f"{now.isoformat()}: ok: 1 cryptos crit < 2" in res.skip_message


def test_the_p2_is_stale_not_ok_when_a_journal_stops(home):  # noqa: F811
    url, _ = home
    ids = _setup(url)
    assert _rollback("INC-rb", clock=T0 + timedelta(days=1)).success
    now = T0 + timedelta(days=2)
    for c in CRYPTOS:  # 12 break-even trades each, the journals end 5 h before now
        _trades(url, c, ids[c]["baseline"], "binary:logistic", now - timedelta(hours=5),
                np.resize([0.001, -0.001], 12))  # fmt: skip
    res = _tick(ANY, now, url)
    assert not res.run_requests
    assert f"{now.isoformat()}: stale: journal stale on 2 cryptos" in res.skip_message


def _candidate(url: str, crypto: str, loss: str) -> int:
    reg = ModelRegistry(database_url=url)
    g, a = (2.0, 0.25) if loss == "focal" else (None, None)
    vid = reg.register_version(
        crypto, "focal_g2_a025" if loss == "focal" else "baseline", loss_function=loss,
        gamma=g, alpha=a, train_start=T0 - timedelta(days=400), train_end=T0,
        sweep_id="s", artifact_uri=f"file:///x/{crypto}/cand-{loss}", reference_stats={},
    )  # fmt: skip
    reg.set_alias(crypto, "candidate", vid, actor="t", reason="shadow", at=T0)
    return vid


def _promote(crypto: str):
    cfg = {"crypto": crypto, "actor": "alice", "reason": "candidate better on matured labels"}
    return _run("promote_candidate_job", {"promote_candidate": {"config": cfg}})


def test_promote_candidate_refuses_a_focal_candidate_behind_the_kill_switch(home):  # noqa: F811
    url, _ = home
    ids = _setup(url)
    focal_cand = _candidate(url, "BTCUSDC", "focal")
    assert _rollback("INC-rb", clock=T0 + timedelta(hours=1)).success  # flag: binary:logistic
    reg = ModelRegistry(database_url=url)
    n_history = len(reg.history())
    res = _promote("BTCUSDC")
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    msg = failure.event_specific_data.error.message
    assert (
        "promote_candidate_job: refused: CVN_LOSS_FUNCTION='binary:logistic' (kill switch, "
        f"version 2) but the candidate of BTCUSDC (version {focal_cand}, variant "
        "'focal_g2_a025') was trained with loss 'focal'"
    ) in msg
    # nothing changed: champion, candidate alias, alias history
    assert reg.alias("BTCUSDC", "champion")["id"] == ids["BTCUSDC"]["baseline"]
    assert reg.alias("BTCUSDC", "candidate")["id"] == focal_cand
    assert len(reg.history()) == n_history
    # a cross-entropy candidate behind the same kill switch is promoted
    ce_cand = _candidate(url, "ETHUSDC", "binary:logistic")
    assert _promote("ETHUSDC").success
    assert reg.alias("ETHUSDC", "champion")["id"] == ce_cand


def test_promote_candidate_takes_a_focal_candidate_while_focal_is_on(home):  # noqa: F811
    url, _ = home
    _setup(url)
    cand = _candidate(url, "BTCUSDC", "focal")
    assert ConfigStore(database_url=url).get("CVN_LOSS_FUNCTION")[0] == "focal"
    assert _promote("BTCUSDC").success
    assert ModelRegistry(database_url=url).alias("BTCUSDC", "champion")["id"] == cand
