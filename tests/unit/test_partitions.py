"""The day partitions' first day (issue 21, item 7)."""

import os
import subprocess
import sys

from cvn_assets.partitions import default_paper_start

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_default_is_the_day_after_the_default_sweeps_window():
    # by hand: 2023-07-01 00:00 + 21900 h = + 912 days 12 h = 2025-12-29 12:00 (2024 is a
    # leap year: 366 + 365 + 181 days); its day ends, so the first full day is 2025-12-30
    assert default_paper_start({}) == "2025-12-30"
    assert default_paper_start({"CVN_MARKET_SOURCE": "synthetic"}) == "2025-12-30"


def test_explicit_setting_wins_and_csv_keeps_the_old_start():
    assert default_paper_start({"CVN_PAPER_START": "2024-02-01"}) == "2024-02-01"
    env = {"CVN_MARKET_SOURCE": "csv", "CVN_PAPER_START": "2024-02-01"}
    assert default_paper_start(env) == "2024-02-01"
    assert default_paper_start({"CVN_MARKET_SOURCE": "csv"}) == "2023-07-01"


def test_the_definitions_partitions_start_there_without_the_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVN_")}
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from cvn_assets.definitions import defs\n"
        "pd = defs.resolve_assets_def('paper_trades').partitions_def\n"
        "print(pd.get_partitions_def_for_dimension('day').get_first_partition_key())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": REPO},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2025-12-30"
