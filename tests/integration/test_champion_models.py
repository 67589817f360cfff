"""Production guard, part 1: ``champion_models`` on a real temporary Dagster instance.

The market stage runs for two cryptos; the sweep's gate verdict (one focal variant locked) is
written to the results store directly (the champion reads only the verdict, not the cells).
Then: the canary is promoted with the locked variant, the artifact loads and predicts; the
kill switch flipped to binary:logistic makes the next champion train with cross-entropy; a
non-canary crypto is refused before any training without canary trades, and promoted with
``force_promote`` (actor and reason audited in the alias history).
"""

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance

from cvn_assets.assets._util import sweep_identity
from cvn_assets.definitions import defs
from cvn_assets.market.features import FEATURE_NAMES
from cvn_assets.partitions import SETTINGS
from resources.config_store import ConfigStore
from resources.journal import read_trades, replace_day, trades_table
from resources.market_data import MarketDataResource
from resources.model_registry import ModelRegistry
from resources.model_store import ArtifactStore
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

CANARY = "BTCUSDC"
OTHER = next(c for c in SETTINGS.universe if c != CANARY)
BASELINE = next(v for v in SETTINGS.variants if v.loss_function == "binary:logistic")
LOCKED = next(v for v in SETTINGS.variants if v.loss_function == "focal")


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _cfg(tmp_path, **champion):
    store = str(tmp_path / "store")
    db = {"config": {"database_url": f"sqlite:///{tmp_path / 'r.sqlite'}"}}
    return {
        "resources": {
            "market_data": {"config": {"hours": 3000}},
            "sweep": {"config": {"num_boost_round": 30, "early_stopping_rounds": 10}},
            "results_store": db,
            "config_store": db,
            "model_registry": db,
            "artifacts": {"config": {"base_dir": store}},
            "io_manager": {"config": {"base_dir": store}},
        },
        "ops": {"champion_models": {"config": champion}},
    }


def _errors(result) -> str:
    out = []
    for e in result.all_events:
        err = getattr(e.event_specific_data, "error", None)
        while err is not None:
            out.append(err.message)
            err = err.cause
    return "\n".join(out)


def _champion(tmp_path, instance, crypto, **champion):
    return defs.resolve_job_def("champion_job").execute_in_process(
        run_config=_cfg(tmp_path, **champion),
        instance=instance,
        partition_key=crypto,
        raise_on_error=False,
    )


def test_champion_models_canary_kill_switch_and_staged_rollout(tmp_path, instance, monkeypatch):
    cfg = _cfg(tmp_path)
    cfg.pop("ops")
    for crypto in (CANARY, OTHER):
        res = defs.resolve_job_def("market_job").execute_in_process(
            run_config=cfg, instance=instance, partition_key=crypto
        )
        assert res.success, _errors(res)
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    results = ResultsStore(database_url=url)
    identity = sweep_identity(
        SweepSettings(num_boost_round=30, early_stopping_rounds=10),
        MarketDataResource(hours=3000),
    )
    results.register_sweep("default", identity)  # as a sweep run with this config does
    results.replace_verdicts(
        "default",
        [{"variant": v.name, "is_baseline": v is BASELINE, "lock": v is LOCKED,
          "mean_delta": 0.0 if v is BASELINE else (0.01 if v is LOCKED else 0.02)}
         for v in SETTINGS.variants],
    )  # fmt: skip

    import cvn_assets.guard.training as guard_training  # the champion's training path

    trained: list[str] = []
    real = guard_training.train_cell

    def counting(variant, dataset, plan, **kw):
        trained.append(variant.loss_function)
        return real(variant, dataset, plan, **kw)

    monkeypatch.setattr(guard_training, "train_cell", counting)
    registry = ModelRegistry(database_url=url)

    # the canary: the locked focal variant, trained with focal loss, registered, promoted
    res = _champion(tmp_path, instance, CANARY)
    assert res.success, _errors(res)
    assert trained == ["focal"]
    champ = registry.alias(CANARY, "champion")
    assert (champ["variant"], champ["loss_function"]) == (LOCKED.name, "focal")
    stats = champ["reference_stats"]
    assert len(stats["top_features"]) == 5 and len(stats["buy_proba_decile_edges"]) == 9
    assert 0.5 <= stats["train_mean_confidence"] <= 1.0
    assert 0.0 <= stats["f1_threshold"] <= 1.0 and "trading_threshold" in stats
    (hist,) = registry.history(CANARY, "champion")
    assert (
        hist["actor"] == "dagster:champion_models"
        and "locked by the gate verdict" in (hist["reason"])
    )
    cal = ArtifactStore(base_dir=str(tmp_path / "store")).read("champion_models", CANARY)
    assert cal.info["reference_statistics"]["top_features"] == stats["top_features"]
    X = np.zeros((3, len(FEATURE_NAMES)))
    p = cal.predict_proba(X)
    assert p.shape == (3, 2) and np.all((p >= 0) & (p <= 1))
    meta = res.asset_materializations_for_node("champion_models")[0].metadata
    assert meta["chosen_variant"].value == LOCKED.name
    assert meta["effective_loss_function"].value == "focal"
    assert meta["registry_version_id"].value == champ["id"]

    # a non-canary crypto without canary trades: refused before any training, naming the rule
    trained.clear()
    res = _champion(tmp_path, instance, OTHER)
    assert not res.success and trained == []
    text = _errors(res)
    assert "staged rollout" in text and ">= 20 trades" in text and "no canary trade" in text
    # with 24 winning canary trades journaled yesterday: still refused, the canary champion
    # was promoted a moment ago (the window is 14 days of paper trading)
    day = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=1)
    rows = [
        {"crypto": CANARY, "entry_time": day + pd.Timedelta(hours=h),
         "exit_time": day + pd.Timedelta(hours=h, minutes=30), "entry_price": 100.0,
         "exit_price": 101.0, "barrier": "tp", "gross_return": 0.01, "net_return": 0.008,
         "model_version": champ["id"], "loss_function": "focal"}
        for h in range(24)
    ]  # fmt: skip
    assert replace_day(registry.engine, trades_table, CANARY, day, rows) == 24
    assert replace_day(registry.engine, trades_table, CANARY, day, rows) == 24  # replaced
    assert len(read_trades(registry.engine, CANARY, day, day + pd.Timedelta(days=1))) == 24
    res = _champion(tmp_path, instance, OTHER)
    assert not res.success and trained == []
    assert "covers 0.0 days only" in _errors(res)
    assert registry.alias(OTHER, "champion") is None

    # the kill switch: the next champion trains with cross-entropy whatever the verdict says
    config = ConfigStore(database_url=url)
    value, version = config.get("CVN_LOSS_FUNCTION")
    assert value == "focal"
    config.compare_and_set(
        "CVN_LOSS_FUNCTION", version, "binary:logistic", actor="ops", reason="incident 7"
    )
    res = _champion(tmp_path, instance, CANARY)
    assert res.success, _errors(res)
    assert trained == ["binary:logistic"]
    new = registry.alias(CANARY, "champion")
    assert (new["variant"], new["loss_function"]) == (BASELINE.name, "binary:logistic")
    assert registry.alias(CANARY, "previous")["id"] == champ["id"]
    assert "CVN_LOSS_FUNCTION=binary:logistic" in registry.history(CANARY, "champion")[-1]["reason"]

    # the operator's override promotes the other crypto, audited
    res = _champion(
        tmp_path, instance, OTHER, force_promote=True, actor="alice", reason="ticket 42"
    )
    assert res.success, _errors(res)
    (row,) = registry.history(OTHER, "champion")
    assert row["actor"] == "alice" and row["reason"].startswith("ticket 42")
    assert "force_promote by alice" in row["reason"]
    # an override without a reason is refused
    res = _champion(tmp_path, instance, OTHER, override_variant=LOCKED.name)
    assert not res.success and "needs a reason" in _errors(res)
