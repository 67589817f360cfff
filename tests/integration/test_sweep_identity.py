"""Issue: a sweep is a reproducible object. In process, on a real temporary Dagster instance:
numbers never come from settings other than the ones a run names, and the environment's data
source survives partial run config."""

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from cvn_assets.definitions import defs
from cvn_assets.market.synthetic_market import synthetic_candles
from cvn_assets.partitions import SETTINGS
from resources.model_store import ArtifactStore

CRYPTO = SETTINGS.universe[0]
BASELINE = SETTINGS.variants[0]


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _cfg(tmp_path, sweep_id="default", market=None, **sweep):
    store = str(tmp_path / "store")
    return {
        "resources": {
            "market_data": {"config": market or {"hours": 3000}},
            "sweep": {
                "config": {
                    "num_boost_round": 30,
                    "early_stopping_rounds": 10,
                    "sweep_id": sweep_id,
                    **sweep,
                }
            },
            "results_store": {"config": {"database_url": f"sqlite:///{tmp_path / 'r.sqlite'}"}},
            "artifacts": {"config": {"base_dir": store}},
            "io_manager": {"config": {"base_dir": store}},
        }
    }


def _range(a: str, b: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b}


ALL_FOLDS = _range(f"{CRYPTO}|f0", f"{CRYPTO}|f{SETTINGS.n_folds - 1}")


def _errors(result) -> str:
    out = []
    for e in result.all_events:
        err = getattr(e.event_specific_data, "error", None)
        while err is not None:
            out.append(err.message)
            err = err.cause
    return "\n".join(out)


def _market(tmp_path, instance, **kw):
    res = defs.resolve_job_def("market_job").execute_in_process(
        run_config=_cfg(tmp_path, **kw), instance=instance, partition_key=CRYPTO
    )
    assert res.success, _errors(res)


def _train(tmp_path, instance, monkeypatch, tags=None, **kw) -> tuple[list[int], object]:
    """Run the baseline's training job over the crypto's folds; returns trained folds."""
    import cvn_assets.assets.cells as cells  # where the in-process assets call train_cell

    real = cells.train_cell
    trained: list[int] = []

    def counting(variant, dataset, plan, **k):
        trained.append(plan.fold)
        return real(variant, dataset, plan, **k)

    monkeypatch.setattr(cells, "train_cell", counting)
    res = defs.resolve_job_def(f"train_{BASELINE.name}_job").execute_in_process(
        run_config=_cfg(tmp_path, **kw),
        instance=instance,
        tags={**ALL_FOLDS, **(tags or {})},
        raise_on_error=False,
    )
    return sorted(trained), res


def _rows(tmp_path, sweep_id):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with eng.connect() as conn:
        frame = pd.read_sql(
            sa.text(
                "select fold, f1_buy, best_iteration from finetune_results "
                "where sweep_id = :s order by fold"
            ),
            conn,
            params={"s": sweep_id},
        )
    eng.dispose()
    return frame


def test_other_settings_train_their_own_models_and_never_rewrite_a_sweep(
    tmp_path, instance, monkeypatch
):
    folds = list(range(SETTINGS.n_folds))
    _market(tmp_path, instance)
    trained, res = _train(tmp_path, instance, monkeypatch)
    assert res.success and trained == folds
    default_rows = _rows(tmp_path, "default")
    assert len(default_rows) == SETTINGS.n_folds

    # another id with another eta trains (it must not reuse the default's models)
    trained, res = _train(tmp_path, instance, monkeypatch, sweep_id="eta01", eta=0.1, max_depth=6)
    assert res.success and trained == folds
    eta_rows = _rows(tmp_path, "eta01")
    assert not eta_rows["f1_buy"].equals(default_rows["f1_buy"])

    # the same id with other settings is refused, naming what changed, before any row is written
    trained, res = _train(tmp_path, instance, monkeypatch, eta=0.1)
    assert not res.success and trained == []
    assert "sweep id 'default'" in _errors(res) and "settings.eta: 0.05 -> 0.1" in _errors(res)
    pd.testing.assert_frame_equal(_rows(tmp_path, "default"), default_rows)

    # back to the default settings: the default's models are found by fingerprint (nothing
    # trained) and its rows are exactly the first run's, not rebuilt from the eta models
    trained, res = _train(tmp_path, instance, monkeypatch)
    assert res.success and trained == []
    pd.testing.assert_frame_equal(_rows(tmp_path, "default"), default_rows)
    store = ArtifactStore(base_dir=str(tmp_path / "store"))
    slot = store.slot(f"model_{BASELINE.name}", f"{CRYPTO}|f0")
    assert len([p for p in slot.iterdir() if p.is_dir()]) == 2  # one model per identity

    # retraining on purpose: the run tag a UI backfill can set, and the config flag
    trained, res = _train(tmp_path, instance, monkeypatch, tags={"cvn/retrain": "true"})
    assert res.success and trained == folds
    trained, res = _train(tmp_path, instance, monkeypatch, retrain=True)
    assert res.success and trained == folds
    pd.testing.assert_frame_equal(_rows(tmp_path, "default"), default_rows)  # deterministic


def test_models_refuse_market_inputs_made_with_other_settings(tmp_path, instance, monkeypatch):
    _market(tmp_path, instance, sweep_id="wide", label_strategy="SL1_TP2_H8")
    trained, res = _train(tmp_path, instance, monkeypatch)
    assert not res.success and trained == []
    text = _errors(res)
    assert "materialized with other settings" in text
    assert f"fold_splits {CRYPTO}" in text and f"model_dataset {CRYPTO}" in text


def _write_csvs(folder, hours=3000):
    folder.mkdir()
    market = synthetic_candles(SETTINGS.universe, hours=hours, seed=11)
    for sym, frame in market.items():
        out = frame.reset_index()
        out["open_time"] = out["open_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
        out.to_csv(folder / f"{sym}_1h.csv", index=False)
    return market


def test_partial_run_config_keeps_the_environments_data_source(tmp_path, instance, monkeypatch):
    market = _write_csvs(tmp_path / "csv")
    monkeypatch.setenv("CVN_MARKET_SOURCE", "csv")
    monkeypatch.setenv("CVN_CSV_DIR", str(tmp_path / "csv"))
    monkeypatch.setenv("CVN_STORE_DIR", str(tmp_path / "env_store"))
    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    # every resource that reads the environment gets a run config for an unrelated field
    res = defs.resolve_job_def("market_job").execute_in_process(
        run_config={
            "resources": {
                "market_data": {"config": {"hours": 2000}},
                "io_manager": {"config": {}},
                "artifacts": {"config": {}},
                "results_store": {"config": {}},
            }
        },
        instance=instance,
        partition_key=CRYPTO,
        asset_selection=[AssetKey("candles")],
    )
    assert res.success, _errors(res)
    md = instance.get_latest_materialization_event(AssetKey("candles")).asset_materialization
    assert md.metadata["source"].value == "csv"
    assert md.metadata["rows"].value == len(market[CRYPTO])  # the file, not 2000 synthetic
    assert ArtifactStore().current_fingerprint("candles", CRYPTO) is not None
    assert (tmp_path / "env_store" / "candles" / CRYPTO / "CURRENT").exists()
    from resources.results_store import ResultsStore

    assert ResultsStore().url == f"sqlite:///{tmp_path / 'env.sqlite'}"


def test_a_home_keeps_its_data_source(tmp_path, instance, monkeypatch):
    _write_csvs(tmp_path / "csv")
    monkeypatch.setenv("CVN_MARKET_SOURCE", "csv")
    monkeypatch.setenv("CVN_CSV_DIR", str(tmp_path / "csv"))
    _market(tmp_path, instance)
    n_before = len(instance.get_materialized_partitions(AssetKey("candles")))
    # opened without the CVN_* variables: synthetic candles must not enter this home
    monkeypatch.delenv("CVN_MARKET_SOURCE")
    monkeypatch.delenv("CVN_CSV_DIR")
    res = defs.resolve_job_def("market_job").execute_in_process(
        run_config=_cfg(tmp_path),
        instance=instance,
        partition_key=SETTINGS.universe[1],
        raise_on_error=False,
    )
    assert not res.success
    text = _errors(res)
    assert f"holds data from csv files in {tmp_path / 'csv'}" in text
    assert "this run's market data is synthetic" in text and "retarget-data-source" in text
    assert len(instance.get_materialized_partitions(AssetKey("candles"))) == n_before


def test_an_ad_hoc_materialization_is_tagged_with_its_variant(tmp_path, instance):
    """A UI materialization runs the implicit asset job, which carries no job tags: the
    training asset tags its run, so the Runs page filters by variant."""
    _market(tmp_path, instance)
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        run_config=_cfg(tmp_path),
        instance=instance,
        asset_selection=[AssetKey(f"model_{BASELINE.name}")],
        partition_key=f"{CRYPTO}|f0",
    )
    assert res.success, _errors(res)
    tags = instance.get_run_by_id(res.run_id).tags
    assert tags["cvn/variant"] == BASELINE.name
    assert tags["cvn/loss_function"] == BASELINE.loss_function


def test_an_empty_partition_range_does_nothing_and_says_why(tmp_path, instance, monkeypatch):
    """'BTCUSDC|f4...ETHUSDC|f0' is an empty rectangle for Dagster: the run does nothing,
    warns, fails no check and stores nothing."""
    _market(tmp_path, instance)
    trained, res = _train(
        tmp_path, instance, monkeypatch, tags=_range(f"{CRYPTO}|f4", f"{SETTINGS.universe[1]}|f0")
    )
    assert res.success and trained == []
    logs = [
        e.message
        for e in instance.all_logs(res.run_id)
        if e.level >= 30 and "selects no cell" in (e.message or "")
    ]
    assert logs and "rectangle" in logs[0]
    assert not instance.get_materialized_partitions(AssetKey(f"model_{BASELINE.name}"))
    from dagster import AssetCheckKey

    ck = AssetCheckKey(AssetKey(f"calibrated_{BASELINE.name}"), "probabilities_valid")
    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([ck])[ck]
    assert rec.evaluation.passed
