"""Test-wide setting: the day partitions start at the synthetic market's first day.

The tests train champions on short synthetic markets (e.g. 3000 hours: their paper days are
in 2023-11), so their days must be partitions; the default start (the day after the default
sweep's window, :func:`cvn_assets.partitions.default_paper_start`) is tested on its own
(``tests/unit/test_partitions.py``). Set before any test module imports the definitions;
subprocesses inherit it.
"""

import os

os.environ.setdefault("CVN_PAPER_START", "2023-07-01")
