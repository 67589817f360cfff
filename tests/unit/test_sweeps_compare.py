"""Comparing two sweeps: hand-checked per-variant means, deltas and the settings diff."""

import math

import pandas as pd
import pytest

from cvn_assets.sweeps import compare_sweeps, comparison_html


def _rows(variant, f1s, eces_temp, eces_iso, exps):
    return [
        {
            "variant": variant,
            "f1_buy": f,
            "ece_hold_temperature": et,
            "ece_hold_isotonic": ei,
            "expectancy_net": e,
        }
        for f, et, ei, e in zip(f1s, eces_temp, eces_iso, exps, strict=True)
    ]


def test_side_by_side_means_and_deltas():
    a = pd.DataFrame(
        _rows("baseline", [0.30, 0.40], [0.02, 0.04], [0.5, 0.5], [0.001, -0.001])
        + _rows("focal_x", [0.35, 0.45], [0.03, 0.05], [0.5, 0.5], [0.002, 0.0])
    )
    b = pd.DataFrame(
        _rows("baseline", [0.20, 0.30], [0.9, 0.9], [0.01, 0.03], [0.0, 0.0])
        + _rows("focal_y", [0.5], [0.9], [0.02], [0.004])
    )
    ia = {"settings": {"primary_calibration": "temperature", "eta": 0.05}}
    ib = {"settings": {"primary_calibration": "isotonic", "eta": 0.1}}
    table, diff = compare_sweeps(a, b, ia, ib)
    base = table.loc["baseline"]
    assert base["f1_buy_a"] == pytest.approx(0.35) and base["f1_buy_b"] == pytest.approx(0.25)
    assert base["f1_buy_delta"] == pytest.approx(-0.10)
    # each sweep's ECE_HOLD is its own primary calibration's
    assert base["ece_hold_a"] == pytest.approx(0.03) and base["ece_hold_b"] == pytest.approx(0.02)
    assert base["expectancy_net_delta"] == pytest.approx(0.0)
    assert (base["cells_a"], base["cells_b"]) == (2, 2)
    assert math.isnan(table.loc["focal_x", "f1_buy_b"])  # only in A
    assert table.loc["focal_y", "f1_buy_b"] == pytest.approx(0.5)
    assert diff == [
        ("settings.eta", 0.05, 0.1),
        ("settings.primary_calibration", "temperature", "isotonic"),
    ]
    page = comparison_html("A", "B", {"fingerprint": "fa"}, {"fingerprint": "fb"}, table, diff)
    assert "settings.eta" in page and "focal_y" in page and "fa" in page
