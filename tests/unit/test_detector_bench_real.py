"""The detector benchmark on the real candles of ``../shared/data`` (skipped when absent):
two cryptos, the champion's own training, the integrity and data-drift rules on the held-out
2023 stream and with a top feature broken; and the out-of-sample set-up (trained on 2021-2023,
monitored on the whole 2024-2026 file)."""

from pathlib import Path

import pandas as pd
import pytest

from cvn_assets.ablation.variants import DEFAULT_VARIANTS
from cvn_assets.guard import detector_bench as db
from cvn_assets.guard.detector_setup import prepare
from cvn_assets.market.labels import parse_label_strategy

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance_spot_1h_2021_2023"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} absent (real candles)")


def test_real_candles_integrity_is_silent_on_2023_and_catches_a_stuck_feature():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_detectors

    from cvn_assets.market.candles_io import read_candles_csv

    variant = next(v for v in DEFAULT_VARIANTS if v.name == "focal_g2_a025")
    label = parse_label_strategy("SL0.5_TP1_H4")
    ms = []
    for pair in ("BTCUSDT", "ETHUSDT"):
        candles = read_candles_csv(DATA / f"{pair}_1h.csv")
        split = bench_detectors.split_for(len(candles) - 171, quick=False)
        m, summary = prepare(
            pair, candles, split, variant=variant, label=label,
            settings=bench_detectors.settings(quick=True), fee_per_side=0.00075,
            min_trade_share=0.10,
        )  # fmt: skip
        assert summary["monitored"].startswith("2023-04") and summary["monitored_rows"] > 6000
        # the trade outcomes (simulate_long_trades) give the dataset's labels (their BUY rate)
        assert round(float(m.take_profit.mean()), 4) == summary["buy_rate"]
        ms.append(m)
    tables, raw = db.run_benchmark(ms, faults=["stuck"], every_days=42, expectancy=False)
    by = {t.detector: t for t in tables}
    integ = by["data_integrity"]
    assert integ.nulls["held_out"].alerts == 0 and integ.nulls["held_out"].days > 500
    assert all(d <= 1.0 for d in integ.delays["stuck"])  # every run within a day
    assert len(integ.delays["stuck"]) == 2 * len(raw["onsets"]["stuck"])
    # the window-shape data drift stays under the 1 alert / 30 days over the cryptos
    assert by["data_drift"].nulls["held_out"].book_30d <= 1.0
    assert pd.Timestamp(raw["onsets"]["stuck"][0]) >= ms[0].features.index[0] + db.WARMUP


LIVE = DATA.parent / "binance_spot_1h_2024_2026"


@pytest.mark.skipif(not LIVE.is_dir(), reason=f"{LIVE} absent (real candles)")
def test_real_live_trains_on_2021_2023_and_monitors_the_whole_2024_2026_file():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_detectors

    from cvn_assets.guard.detector_setup import prepare_live
    from cvn_assets.market.candles_io import read_candles_csv

    history = read_candles_csv(DATA / "BTCUSDT_1h.csv")
    live = read_candles_csv(LIVE / "BTCUSDT_1h.csv")
    # 23 987 candles - 167 warm-up - 4 unlabeled = 23 816 rows: 20 958 to train, 2 858 OOS
    split = bench_detectors.split_for(len(history) - 171, quick=False, live=True)
    variant = next(v for v in DEFAULT_VARIANTS if v.name == "focal_g2_a025")
    m, summary = prepare_live(
        "BTCUSDT", history, live, split, variant=variant,
        label=parse_label_strategy("SL0.5_TP1_H4"), settings=bench_detectors.settings(quick=True),
        fee_per_side=0.00075, min_trade_share=0.10,
    )  # fmt: skip
    # the data README: 2024-04-16 01:00 -> 2026-04-15 23:00, 17 519 hours, no gaps; the
    # monitored rows start 167 hours later and end 4 hours earlier
    assert len(m.features) == 17_519 - 167 - 4 == summary["monitored_rows"]
    assert m.features.index[0] == pd.Timestamp("2024-04-23 00:00", tz="UTC")
    assert m.features.index[-1] == pd.Timestamp("2026-04-15 19:00", tz="UTC")
    assert summary["train_rows"] == 20_958 and summary["test_rows"] == 2_858 - 4
    assert pd.Timestamp(summary["trained"].split("..")[1]) < pd.Timestamp("2023-12-31", tz="UTC")
