"""The .prom textfile of resources.metrics_export, parsed back with prometheus_client's parser."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cvn_assets.guard.monitoring import metrics_row
from resources.metrics_export import metrics_dir, write_prom_file

UTC = dt.UTC
END = dt.datetime(2024, 3, 2, tzinfo=UTC)
H = dt.timedelta(hours=1)


def _row(crypto: str = "BTCUSDC", **overrides) -> dict:
    rng = np.random.default_rng(0)
    inputs = dict(
        crypto=crypto,
        day="2024-03-01",
        loss_function="focal",
        gamma=2.0,
        alpha=0.25,
        buy_proba=rng.beta(2, 6, size=168),
        training_proba=rng.beta(2, 6, size=4380),
        trades=[(END - 2 * H, 0.01), (END - 30 * H, -0.02), (END - 40 * H, 0.004)],
        latency_ms=rng.lognormal(1.0, 0.5, size=500),
        run_records=[
            ("FAILURE", END - 10 * H, {"cvn/loss_function": "focal"}),
            ("FAILURE", END - 0.5 * H, {"cvn/loss_function": "binary:logistic"}),
            ("FAILURE", END - 0.5 * H, {"cvn/loss_function": "hinge"}),
        ],
    )
    inputs.update(overrides)
    return metrics_row(**inputs)


def _samples(path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_prom_file_parses_back_to_the_row_values(tmp_path):
    row = _row()
    path = write_prom_file(tmp_path / "metrics", "BTCUSDC", row)
    assert path == tmp_path / "metrics" / "BTCUSDC.prom"
    assert [p.name for p in path.parent.iterdir()] == ["BTCUSDC.prom"]  # no temp file left
    got = _samples(path)
    c = "BTCUSDC"
    want = {
        _key("cvn_xgboost_training_failed", crypto=c, loss_function="focal", window="1h"): 0,
        _key("cvn_xgboost_training_failed", crypto=c, loss_function="focal", window="24h"): 1,
        _key(
            "cvn_xgboost_training_failed", crypto=c, loss_function="binary:logistic", window="1h"
        ): 1,
        _key(
            "cvn_xgboost_training_failed", crypto=c, loss_function="binary:logistic", window="24h"
        ): 1,
        _key("cvn_xgboost_training_failed", crypto=c, loss_function="other", window="1h"): 1,
        _key("cvn_xgboost_training_failed", crypto=c, loss_function="other", window="24h"): 1,
        _key("cvn_focal_loss_active", crypto=c, gamma="2", alpha="0.25"): 1,
        _key("cvn_buy_proba_quantile", crypto=c, quantile="0.05"): row["buy_proba_p05"],
        _key("cvn_buy_proba_quantile", crypto=c, quantile="0.25"): row["buy_proba_p25"],
        _key("cvn_buy_proba_quantile", crypto=c, quantile="0.5"): row["buy_proba_p50"],
        _key("cvn_buy_proba_quantile", crypto=c, quantile="0.75"): row["buy_proba_p75"],
        _key("cvn_buy_proba_quantile", crypto=c, quantile="0.95"): row["buy_proba_p95"],
        _key("cvn_buy_proba_samples", crypto=c): 168,
        _key("cvn_buy_proba_psi", crypto=c): row["buy_proba_psi"],
        _key("cvn_buy_proba_psi_null_quantile", crypto=c, quantile="0.95"): row[
            "buy_proba_psi_null_p95"
        ],
        _key("cvn_expectancy_net_realized", crypto=c, window="24h"): 0.01,
        _key("cvn_expectancy_net_realized", crypto=c, window="48h"): row["expectancy_net_48h"],
        _key("cvn_expectancy_trades", crypto=c, window="24h"): 1,
        _key("cvn_expectancy_trades", crypto=c, window="48h"): 3,
        _key("cvn_inference_latency_seconds", crypto=c, quantile="0.5"): row["latency_p50_ms"]
        / 1000,
        _key("cvn_inference_latency_seconds", crypto=c, quantile="0.99"): row["latency_p99_ms"]
        / 1000,
        _key("cvn_inference_latency_samples", crypto=c): 500,
        _key("cvn_monitoring_as_of_timestamp_seconds", crypto=c): END.timestamp(),
    }
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-15, abs=0), k
    assert row["expectancy_net_48h"] == pytest.approx((0.01 - 0.02 + 0.004) / 3)


def test_missing_measurements_are_left_out_not_written_as_zero(tmp_path):
    row = _row(
        "ETHUSDC",
        loss_function="binary:logistic",
        gamma=None,
        alpha=None,
        buy_proba=[],
        trades=[],
        latency_ms=[],
    )
    got = _samples(write_prom_file(tmp_path, "ETHUSDC", row))
    names = {name for name, _ in got}
    assert "cvn_buy_proba_quantile" not in names and "cvn_buy_proba_psi" not in names
    assert "cvn_expectancy_net_realized" not in names
    assert "cvn_inference_latency_seconds" not in names
    assert got[_key("cvn_buy_proba_samples", crypto="ETHUSDC")] == 0
    assert got[_key("cvn_expectancy_trades", crypto="ETHUSDC", window="48h")] == 0
    assert got[_key("cvn_inference_latency_samples", crypto="ETHUSDC")] == 0
    assert got[_key("cvn_focal_loss_active", crypto="ETHUSDC", gamma="", alpha="")] == 0


def test_one_file_per_crypto_rewritten_in_place(tmp_path):
    write_prom_file(tmp_path, "BTCUSDC", _row("BTCUSDC"))
    write_prom_file(tmp_path, "ETHUSDC", _row("ETHUSDC"))
    second = _row("BTCUSDC", trades=[])
    write_prom_file(tmp_path, "BTCUSDC", second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDC.prom", "ETHUSDC.prom"]
    got = _samples(tmp_path / "BTCUSDC.prom")
    assert got[_key("cvn_expectancy_trades", crypto="BTCUSDC", window="24h")] == 0


def test_bad_crypto_and_rows_are_named(tmp_path):
    row = _row()
    with pytest.raises(ValueError, match="crypto must match"):
        write_prom_file(tmp_path, "../BTC", row)
    with pytest.raises(ValueError, match=r"row\['crypto'\]='BTCUSDC'"):
        write_prom_file(tmp_path, "ETHUSDC", row)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['latency_n'\]"):
        write_prom_file(tmp_path, "BTCUSDC", {k: v for k, v in row.items() if k != "latency_n"})
    with pytest.raises(ValueError, match=r"row\['buy_proba_psi'\] must be a number"):
        write_prom_file(tmp_path, "BTCUSDC", {**row, "buy_proba_psi": "high"})
    assert list(tmp_path.iterdir()) == []


def test_metrics_dir_is_under_dagster_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert metrics_dir() == tmp_path / "metrics"
    assert metrics_dir("/srv/dagster") == tmp_path.__class__("/srv/dagster/metrics")
