"""Results store against real SQLite and real PostgreSQL: upsert replaces, never duplicates."""

import math

import pandas as pd
import pytest
import sqlalchemy as sa

from cvn_assets.ablation.identity import SweepIdentity
from resources.results_store import ResultsStore, SweepIdentityConflict, UnknownSweep


def _identity(eta: float = 0.05, source: str = "synthetic") -> SweepIdentity:
    return SweepIdentity(
        settings={"eta": eta, "seed": 0},
        definition={"universe": ["BTCUSDC", "ETHUSDC"], "n_folds": 5, "variants": []},
        data={"source": source, "seed": 7},
        code={"xgboost": "3.2.0"},
    )


def _row(crypto: str, fold: int, variant: str, f1: float) -> dict:
    return {
        "crypto": crypto,
        "fold": fold,
        "variant": variant,
        "loss_function": "focal",
        "f1_buy": f1,
        "ece_hold_temperature": 0.02,
        "n_test": 100,
    }


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> ResultsStore:
    if request.param == "sqlite":
        s = ResultsStore(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}")
    else:
        s = ResultsStore(database_url=request.getfixturevalue("pg_database"))
    for sweep_id in ("s", "s1", "s2"):
        s.register_sweep(sweep_id, _identity())
    return s


def test_a_sweep_id_keeps_its_identity(store):
    assert store.register_sweep("s", _identity()) == "same"
    assert store.register_sweep("new", _identity(eta=0.1)) == "new"
    with pytest.raises(SweepIdentityConflict) as err:
        store.register_sweep("s", _identity(eta=0.1, source="csv"))
    msg = str(err.value)
    assert "sweep id 's'" in msg
    assert "settings.eta: 0.05 -> 0.1" in msg and "data.source: 'synthetic' -> 'csv'" in msg
    assert store.get_sweep("s")["fingerprint"] == _identity().fingerprint


def test_replacing_a_sweep_drops_its_rows_in_one_transaction(store):
    store.replace_results("s", [_row("BTCUSDC", 0, "baseline", 0.3)])
    store.replace_results("s1", [_row("BTCUSDC", 0, "baseline", 0.3)])
    assert store.register_sweep("s", _identity(eta=0.2), replace=True) == "replaced"
    assert store.load_results("s").empty
    assert len(store.load_results("s1")) == 1
    assert store.get_sweep("s")["identity"]["settings"]["eta"] == 0.2
    listed = store.list_sweeps().set_index("sweep_id")
    assert listed.loc["s1", "result_rows"] == 1 and listed.loc["s", "result_rows"] == 0


def test_every_row_belongs_to_a_registered_sweep(store):
    with pytest.raises(UnknownSweep, match="sweep 'ghost' is not registered"):
        store.replace_results("ghost", [_row("BTCUSDC", 0, "baseline", 0.3)])
    with pytest.raises(UnknownSweep, match="gate_verdicts: sweep 'ghost'"):
        store.replace_verdicts("ghost", [{"variant": "x", "lock": False}])
    # the database itself refuses an orphan row (foreign key, also on SQLite)
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "insert into finetune_results (sweep_id, crypto, fold, variant) "
                    "values ('ghost', 'BTCUSDC', 0, 'baseline')"
                )
            )


def test_upsert_replaces_rows_of_the_same_key(store):
    store.replace_results(
        "s1", [_row("BTCUSDC", 0, "baseline", 0.3), _row("ETHUSDC", 0, "baseline", 0.4)]
    )
    store.replace_results("s1", [_row("BTCUSDC", 0, "baseline", 0.5)])
    store.replace_results("s2", [_row("BTCUSDC", 0, "baseline", 0.9)])
    got = store.load_results("s1").set_index("crypto")
    assert len(got) == 2
    assert got.loc["BTCUSDC", "f1_buy"] == pytest.approx(0.5)
    assert got.loc["ETHUSDC", "f1_buy"] == pytest.approx(0.4)
    assert len(store.load_results("s2")) == 1
    with store.engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from finetune_results")).scalar()
    assert n == 3


def test_nan_is_stored_as_null_and_numpy_scalars_accepted(store):
    import numpy as np

    row = _row("BTCUSDC", np.int64(1), "focal_x", np.float64("nan"))
    store.replace_results("s", [row])
    got = store.load_results("s")
    assert got["fold"].tolist() == [1]
    assert got["f1_buy"].isna().all() or math.isnan(got["f1_buy"].iloc[0])


def test_bad_rows_are_rejected_before_anything_is_written(store):
    with pytest.raises(ValueError, match="row 1: missing key column"):
        store.replace_results("s", [_row("BTCUSDC", 0, "baseline", 0.3), {"crypto": "X"}])
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['bogus'\]"):
        store.replace_results("s", [{**_row("BTCUSDC", 0, "baseline", 0.3), "bogus": 1}])
    assert store.load_results("s").empty


def test_oos_returns_and_verdicts_round_trip(store):
    frame = pd.DataFrame(
        {
            "crypto": ["BTCUSDC"] * 3,
            "fold": [0, 0, 0],
            "variant": ["baseline"] * 3,
            "period": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "net_return": [0.01, -0.005, 0.0],
            "n_trades": [2, 1, 0],
        }
    )
    assert store.replace_oos_returns("s", frame) == 3
    assert store.replace_oos_returns("s", frame.iloc[:2]) == 2  # replaces the cell's rows
    got = store.load_oos_returns("s")
    assert sorted(got["period"]) == ["2024-01-01", "2024-01-02"]
    store.replace_verdicts("s", [{"variant": "focal_a", "lock": False, "ci_low": -0.01}])
    store.replace_verdicts("s", [{"variant": "focal_a", "lock": True, "ci_low": 0.02}])
    v = store.load_verdicts("s")
    assert v.to_dict("records") == [{"variant": "focal_a", "lock": True, "ci_low": 0.02}]
