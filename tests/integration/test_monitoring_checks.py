"""Issue 21, item 8: spec 6.1's warn / crit thresholds as asset checks of ``monitoring_metrics``.

``monitoring_metrics`` is materialized in process (a real Dagster instance on disk, a real
SQLite results store) over hand-built journals: two cryptos x two days, with a crypto-day over
each threshold. Each check's result (passed, severity, the worst crypto-day, every crossing) is
compared with numbers computed by hand here: the PSI's closed form on the 10 uniform bins, numpy's
type-7 quantile by hand for the p99, scipy's one-sided t-test for the expectancy, and the failed
runs' end times counted per clock hour with pandas."""

import math

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    job,
    materialize,
    op,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from scipy import stats

from cvn_assets.ablation.identity import SweepIdentity
from cvn_assets.assets.guard import monitoring_metrics
from cvn_assets.guard.drift import EXPECTANCY_ALPHA
from resources.journal import predictions_table, replace_day, replace_days
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore

BTC, ETH = "BTCUSDC", "ETHUSDC"
D2 = pd.Timestamp.now(tz="UTC").normalize()  # today: the failed runs below end today
D1 = D2 - pd.Timedelta(days=1)
EDGES = [k / 10 for k in range(1, 10)]  # uniform deciles: PSI against 1/10 per bin
SPREAD = [(k + 0.5) / 24 for k in range(24)]  # buy_proba over [0, 1]: no drift at n = 24


@op(tags={"cvn/loss_function": "focal"})
def _crash():
    raise RuntimeError("training crashed")


@job(tags={"cvn/loss_function": "focal"})
def _focal_training():
    _crash()


@job(tags={"cvn/loss_function": "binary:logistic"})
def _baseline_training():
    _crash()


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _versions(url: str) -> dict[str, int]:
    ResultsStore(database_url=url).register_sweep(
        "s", SweepIdentity({"eta": 0.05}, {"universe": [BTC, ETH]}, {"source": "x"}, {})
    )
    reg = ModelRegistry(database_url=url)
    ids = {}
    champions = (
        (BTC, "focal_g2_a025", "focal", 2.0, 0.25),
        (ETH, "baseline", "binary:logistic", None, None),
    )
    for crypto, variant, loss, g, a in champions:
        ids[crypto] = reg.register_version(
            crypto, variant, loss_function=loss, gamma=g, alpha=a,
            train_start=D1 - pd.Timedelta(days=400), train_end=D1 - pd.Timedelta(days=30),
            sweep_id="s", artifact_uri=f"file:///x/{crypto}",
            reference_stats={"buy_proba_decile_edges": EDGES},
        )  # fmt: skip
        reg.promote(crypto, ids[crypto], actor="t", reason="setup", at=D1 - pd.Timedelta(days=30))
    return ids


def _trades(engine, crypto, version, loss, day, net):
    """``len(net)`` trades exiting at ``day`` 01:00, 03:00, ... (every 2 h)."""
    exits = [day + pd.Timedelta(hours=1 + 2 * i) for i in range(len(net))]
    return pd.DataFrame(
        {"crypto": crypto, "entry_time": [e - pd.Timedelta(hours=1) for e in exits],
         "entry_price": 100.0, "exit_time": exits, "exit_price": 100.0 * (1 + net + 0.002),
         "barrier": "sl", "gross_return": net + 0.002, "net_return": net,
         "model_version": version, "loss_function": loss}
    )  # fmt: skip


def _journal(url: str, ids: dict[str, int]) -> dict[str, np.ndarray]:
    """Trades, then one prediction per hour of D1 and D2 per crypto. Returns the net returns:
    BTC loses on D1 (crit on both days: its 12 trades are in both 48 h windows); ETH wins on D1
    and loses on D2 (warn on D2: the 24 h window is negative, the 48 h one is not)."""
    engine = ModelRegistry(database_url=url).engine
    rng = np.random.default_rng(21)
    nets = {
        "btc": -0.003 + 0.002 * rng.standard_normal(12),
        "eth_d1": 0.005 + 0.002 * rng.standard_normal(12),
        "eth_d2": -0.003 + 0.002 * rng.standard_normal(12),
    }
    losses = {BTC: "focal", ETH: "binary:logistic"}
    frames = {
        BTC: _trades(engine, BTC, ids[BTC], "focal", D1, nets["btc"]),
        ETH: pd.concat([_trades(engine, ETH, ids[ETH], losses[ETH], D1, nets["eth_d1"]),
                        _trades(engine, ETH, ids[ETH], losses[ETH], D2, nets["eth_d2"])]),
    }  # fmt: skip
    for crypto, frame in frames.items():
        replace_days(engine, crypto, [D1, D2], None, frame)
    latency = {  # ms per hour; 10 ms unless said
        (BTC, D1): [10.0] * 23 + [1000.0],  # p99 772.3 ms: crit
        (ETH, D2): [10.0] * 22 + [200.0, 200.0],  # p99 200 ms: warn
    }
    proba = {(BTC, D2): [0.95] * 24}  # every prediction in the top decile: drift
    for crypto in (BTC, ETH):
        for day in (D1, D2):
            p = proba.get((crypto, day), SPREAD)
            ms = latency.get((crypto, day), [10.0] * 24)
            rows = [
                {"crypto": crypto, "hour": (day + pd.Timedelta(hours=h)).to_pydatetime(),
                 "model_version": ids[crypto], "loss_function": losses[crypto],
                 "buy_proba": p[h], "decision": "HOLD", "latency_ms": ms[h]}
                for h in range(24)
            ]  # fmt: skip
            replace_day(engine, predictions_table, crypto, day, rows)
    return nets


def _materialize(instance, url, start: str, end: str):
    return materialize(
        [monitoring_metrics],
        instance=instance,
        resources={"model_registry": ModelRegistry(database_url=url)},
        tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        raise_on_error=False,
    )


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _t_critical(r: np.ndarray) -> float:
    return float(-stats.t.ppf(1 - EXPECTANCY_ALPHA, r.size - 1) * r.std(ddof=1) / math.sqrt(r.size))


def _peak_per_clock_hour(ends: list[float], day: pd.Timestamp) -> int:
    """Failed runs per clock hour ``(h, h + 1 h]`` of ``day``, the largest count (by hand:
    the hour index of an end time is ceil(hours since the day's start) - 1)."""
    t = pd.to_datetime(pd.Series(ends), unit="s", utc=True)
    since = (t - day) / pd.Timedelta(hours=1)
    idx = np.ceil(since.to_numpy()) - 1
    idx = idx[(idx >= 0) & (idx < 24)]
    return int(np.bincount(idx.astype(int)).max()) if idx.size else 0


def test_spec_thresholds_are_asset_checks_naming_the_worst_crypto_day(tmp_path, instance):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    ids = _versions(url)
    nets = _journal(url, ids)
    for _ in range(5):
        _focal_training.execute_in_process(instance=instance, raise_on_error=False)
    _baseline_training.execute_in_process(instance=instance, raise_on_error=False)

    res = _materialize(instance, url, f"{BTC}|{D1:%Y-%m-%d}", f"{ETH}|{D2:%Y-%m-%d}")
    assert res.success
    checks = _checks(res)
    assert sorted(checks) == [
        "buy_proba_drift", "inference_latency_p99", "net_expectancy",
        "training_failures_per_hour",
    ]  # fmt: skip
    assert all(c.asset_key == AssetKey("monitoring_metrics") for c in checks.values())

    # --- latency p99: type-7 quantile by hand, index 0.99 * 23 = 22.77
    lat = checks["inference_latency_p99"]
    btc_p99 = 10.0 + 0.77 * (1000.0 - 10.0)  # 772.3 ms > 500: crit
    assert (lat.passed, lat.severity) == (False, AssetCheckSeverity.ERROR)
    m = lat.metadata
    assert (m["worst_crypto"].value, m["worst_day"].value) == (BTC, f"{D1:%Y-%m-%d}")
    assert m["worst_value"].value == pytest.approx(btc_p99)
    assert m["worst_threshold"].value == 500.0
    crossings = m["crossings"].value
    assert [(c["crypto"], c["day"], c["level"], c["threshold"]) for c in crossings] == [
        (BTC, f"{D1:%Y-%m-%d}", "crit", 500.0),
        (ETH, f"{D2:%Y-%m-%d}", "warn", 100.0),  # 22 x 10 ms, 2 x 200 ms: p99 = 200 ms
    ]
    assert crossings[1]["value"] == pytest.approx(200.0)
    assert (m["n_evaluated"].value, m["n_crossings"].value) == (4, 2)
    assert lat.description.startswith(f"CRIT: {BTC} {D1:%Y-%m-%d}: inference latency p99 772.3")

    # --- buy_proba drift: all 24 in the top bin of 10 uniform ones, shares floored at 1e-4
    psi_hand = (1.0 - 0.1) * math.log(1.0 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    drift = checks["buy_proba_drift"]
    assert (drift.passed, drift.severity) == (False, AssetCheckSeverity.WARN)  # no crit level
    m = drift.metadata
    assert (m["worst_crypto"].value, m["worst_day"].value) == (BTC, f"{D2:%Y-%m-%d}")
    assert m["worst_value"].value == pytest.approx(psi_hand, rel=1e-9)
    # the bound used: max(spec 0.10, the PSI's no-drift 95th percentile at n = 24) ~ 1.73
    assert 1.5 < m["worst_threshold"].value < 2.0 < psi_hand
    assert m["n_crossings"].value == 1 and "0.10" in m["spec"].value

    # --- net expectancy: scipy's one-sided t-test decides, as the P1's per-crypto rule
    assert stats.ttest_1samp(nets["btc"], 0, alternative="less").pvalue < 0.05
    eth48 = np.concatenate([nets["eth_d1"], nets["eth_d2"]])
    assert stats.ttest_1samp(eth48, 0, alternative="less").pvalue > 0.05  # 48 h: not crit
    assert stats.ttest_1samp(nets["eth_d2"], 0, alternative="less").pvalue < 0.05  # 24 h: warn
    assert stats.ttest_1samp(nets["eth_d1"], 0, alternative="less").pvalue > 0.05
    exp = checks["net_expectancy"]
    assert (exp.passed, exp.severity) == (False, AssetCheckSeverity.ERROR)
    m = exp.metadata
    assert (m["worst_crypto"].value, m["worst_day"].value) == (BTC, f"{D1:%Y-%m-%d}")
    assert m["worst_value"].value == pytest.approx(float(nets["btc"].mean()))
    assert m["worst_threshold"].value == pytest.approx(_t_critical(nets["btc"]))
    got = [(c["crypto"], c["day"], c["level"]) for c in m["crossings"].value]
    assert got == [
        (BTC, f"{D1:%Y-%m-%d}", "crit"),
        (BTC, f"{D2:%Y-%m-%d}", "crit"),  # the same 12 trades are in D2's 48 h window
        (ETH, f"{D2:%Y-%m-%d}", "warn"),
    ]
    eth = m["crossings"].value[2]
    assert eth["value"] == pytest.approx(float(nets["eth_d2"].mean()), abs=1e-6)
    assert eth["threshold"] == pytest.approx(_t_critical(nets["eth_d2"]), abs=1e-6)

    # --- failed focal training runs per clock hour (global: the day, not a crypto)
    records = instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.FAILURE], tags={"cvn/loss_function": "focal"})
    )
    assert len(records) == 5
    peak = _peak_per_clock_hour([r.end_time for r in records], D2)
    fail = checks["training_failures_per_hour"]
    assert fail.passed is False
    assert fail.severity == (AssetCheckSeverity.ERROR if peak >= 5 else AssetCheckSeverity.WARN)
    m = fail.metadata
    assert (m["worst_crypto"].value, m["worst_day"].value) == ("*", f"{D2:%Y-%m-%d}")
    assert m["worst_value"].value == peak  # the baseline's failure does not count
    assert [c["day"] for c in m["crossings"].value] == [f"{D2:%Y-%m-%d}"]  # D1: none
    assert m["n_evaluated"].value == 2  # days


def test_a_crypto_day_within_every_threshold_passes_every_check(tmp_path, instance):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    ids = _versions(url)
    _journal(url, ids)
    res = _materialize(instance, url, f"{ETH}|{D1:%Y-%m-%d}", f"{ETH}|{D1:%Y-%m-%d}")
    assert res.success
    checks = _checks(res)
    assert len(checks) == 4 and all(c.passed for c in checks.values())
    assert checks["inference_latency_p99"].description == "1 crypto-day(s) within the thresholds"
    assert checks["training_failures_per_hour"].description == "1 day(s) within the thresholds"
    assert all(c.metadata["n_crossings"].value == 0 for c in checks.values())
    # the same results are in the instance: the UI shows them on the asset
    key = AssetKey("monitoring_metrics")
    from dagster import AssetCheckKey

    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(key, "net_expectancy")]
    )
    assert rec[AssetCheckKey(key, "net_expectancy")].status.value == "SUCCEEDED"
