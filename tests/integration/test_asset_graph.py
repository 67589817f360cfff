"""The asset graph materialized in process on a real (temporary) Dagster instance."""

import pytest
from dagster import AssetKey, DagsterInstance, Definitions, MultiPartitionKey

from cvn_assets.definitions import defs
from cvn_assets.partitions import SETTINGS, crypto_fold_partitions, split_key
from resources.model_store import ArtifactStore

CRYPTO = SETTINGS.universe[0]


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with DagsterInstance.from_config(str(tmp_path / "home")) as inst:
        yield inst


def _resources(tmp_path, **sweep):
    store = str(tmp_path / "store")
    return {
        "resources": {
            "market_data": {"config": {"hours": 3000}},
            "sweep": {"config": {"num_boost_round": 30, "early_stopping_rounds": 10, **sweep}},
            "results_store": {"config": {"database_url": f"sqlite:///{tmp_path / 'r.sqlite'}"}},
            "artifacts": {"config": {"base_dir": store}},
            "io_manager": {"config": {"base_dir": store}},
        }
    }


def _range(a: str, b: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b}


def _error_texts(result) -> list[str]:
    """Messages of every error in the run's events, following the cause chain."""
    out = []
    for e in result.all_events:
        err = getattr(e.event_specific_data, "error", None)
        while err is not None:
            out.append(err.message)
            err = err.cause
    return out


def test_definitions_shape():
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"candles", "features", "labels", "model_dataset", "fold_splits"} <= keys
    assert {"finetune_results", "gate_verdicts"} <= keys
    assert len(SETTINGS.variants) == 5
    for v in SETTINGS.variants:
        assert {f"model_{v.name}", f"calibrated_{v.name}"} <= keys
        job = defs.resolve_job_def(f"train_{v.name}_job")
        assert job.tags["cvn/variant"] == v.name
        assert job.tags["cvn/loss_function"] == v.loss_function
    assert len(crypto_fold_partitions.get_partition_keys()) == 25
    assert split_key(MultiPartitionKey({"crypto": "ETHUSDC", "fold": "f3"})) == ("ETHUSDC", 3)


def test_invalid_config_fails_the_run_before_any_work(tmp_path, instance):
    result = defs.resolve_job_def("market_job").execute_in_process(
        run_config=_resources(tmp_path, embargo_pct=0.7),
        instance=instance,
        partition_key=CRYPTO,
        raise_on_error=False,
    )
    assert not result.success
    messages = " ".join(_error_texts(result))
    assert "embargo_pct" in messages and "0.7" in messages
    assert not instance.get_materialized_partitions(AssetKey("candles"))
    assert not (tmp_path / "store" / "candles").exists()


def test_market_then_a_ranged_training_run(tmp_path, instance):
    cfg = _resources(tmp_path)
    assert (
        defs.resolve_job_def("market_job")
        .execute_in_process(run_config=cfg, instance=instance, partition_key=CRYPTO)
        .success
    )
    mat = instance.get_latest_materialization_event(AssetKey("labels")).asset_materialization
    assert 0.05 < mat.metadata["buy_rate"].value < 0.35

    focal = next(v for v in SETTINGS.variants if v.loss_function == "focal")
    job = defs.resolve_job_def(f"train_{focal.name}_job")
    res = job.execute_in_process(
        run_config=cfg, instance=instance, tags=_range(f"{CRYPTO}|f0", f"{CRYPTO}|f4")
    )
    assert res.success
    done = instance.get_materialized_partitions(AssetKey(f"calibrated_{focal.name}"))
    assert done == {f"{CRYPTO}|f{i}" for i in range(5)}
    # per-partition metadata of the calibrated asset
    ev = instance.get_latest_materialization_event(AssetKey(f"calibrated_{focal.name}"))
    md = ev.asset_materialization.metadata
    for k in ("f1_buy", "threshold", "fitted_temperature", "ece_hold_platt", "n_test"):
        assert k in md
    # every cell's row is in the results store, with its training time
    import sqlalchemy as sa

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with eng.connect() as conn:
        rows = conn.execute(
            sa.text("select fold, train_seconds, best_iteration from finetune_results")
        ).all()
    eng.dispose()
    assert sorted(r.fold for r in rows) == [0, 1, 2, 3, 4]
    assert all(r.train_seconds > 0 and r.best_iteration >= 0 for r in rows)
    # stored value is a real calibrated model whose predictions agree with its stored test eval
    store = ArtifactStore(base_dir=str(tmp_path / "store"))
    cal = store.read(f"calibrated_{focal.name}", f"{CRYPTO}|f2")  # the slot's CURRENT value
    ds = store.read("model_dataset", CRYPTO)
    plans = store.read("fold_splits", CRYPTO)
    from cvn_assets.market.features import FEATURE_NAMES

    X = ds.iloc[plans[2].test][list(FEATURE_NAMES)]
    p = cal.predict_proba(X)[:, 1]
    assert p == pytest.approx(cal.test_eval[f"prob_{cal.primary}"], abs=1e-12)
    assert (cal.predict(X) == cal.test_eval["y_pred"]).all()
    # the leakage check ran with the market job and passed
    from dagster import AssetCheckKey

    for ck in (
        AssetCheckKey(AssetKey("fold_splits"), "no_leakage"),
        AssetCheckKey(AssetKey(f"calibrated_{focal.name}"), "probabilities_valid"),
    ):
        rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([ck])[ck]
        assert rec.evaluation.passed, ck


def test_one_failing_cell_keeps_the_others_and_rerun_finishes_it(tmp_path, instance, monkeypatch):
    import cvn_assets.assets.cells as cells  # where the in-process assets call train_cell

    cfg = _resources(tmp_path)
    assert (
        defs.resolve_job_def("market_job")
        .execute_in_process(run_config=cfg, instance=instance, partition_key=CRYPTO)
        .success
    )
    baseline = SETTINGS.variants[0]
    real = cells.train_cell
    calls: list[int] = []

    def flaky(variant, dataset, plan, **kw):
        calls.append(plan.fold)
        if plan.fold == 3:
            raise RuntimeError("simulated crash in fold 3")
        return real(variant, dataset, plan, **kw)

    monkeypatch.setattr(cells, "train_cell", flaky)
    job = defs.resolve_job_def(f"train_{baseline.name}_job")
    tags = _range(f"{CRYPTO}|f0", f"{CRYPTO}|f4")
    res = job.execute_in_process(run_config=cfg, instance=instance, tags=tags, raise_on_error=False)
    assert not res.success
    assert sorted(calls) == [0, 1, 2, 3, 4]  # the crash did not stop the other cells
    assert any(f"{CRYPTO}|f3" in m and "simulated crash" in m for m in _error_texts(res))

    counted: list[int] = []

    def counting(variant, dataset, plan, **kw):
        counted.append(plan.fold)
        return real(variant, dataset, plan, **kw)

    monkeypatch.setattr(cells, "train_cell", counting)
    res = job.execute_in_process(run_config=cfg, instance=instance, tags=tags)
    assert res.success
    assert counted == [3]  # the four finished cells came from their checkpoints
    done = instance.get_materialized_partitions(AssetKey(f"model_{baseline.name}"))
    assert done == {f"{CRYPTO}|f{i}" for i in range(5)}
