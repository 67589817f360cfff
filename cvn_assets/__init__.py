"""cvn-focal: focal-loss ablation sweep for a crypto BUY classifier, as a Dagster asset graph.

XGBoost's OpenMP threads (GNU libgomp in the Linux wheels) spin-wait between parallel regions,
by default for 300,000 spins; when other processes compete for the cores, the spinning threads
burn the CPU the work needs. Measured with ``bench/bench_load.py`` (the default sweep, idle and
beside two busy processes on this 2-core machine, one run each; one cell at a time on a
2-thread team, as before issue 22):

=============================  ===========  =============  ======
thread wait policy              idle wall    loaded wall    ratio
=============================  ===========  =============  ======
libgomp default                 48.8 s       225.1 s        4.6x
``OMP_WAIT_POLICY=PASSIVE``      57.3 s        91.1 s        1.6x
``GOMP_SPINCOUNT=30000``         47.5 s       105.2 s        2.2x
=============================  ===========  =============  ======

Since issue 22 the sweep no longer trains on a thread team: each cell's booster has one
thread (``nthread`` 1) and a ranged run computes one cell per core at once
(``SweepSettings.cell_workers``), so no thread waits for a parked team mate, whatever the wait
policy. ``bench/bench_load.py`` compares it with the settings above (README "Threads under
load"). What is still multi-threaded (a booster or objective given more threads by hand) waits
passively by default (``OMP_WAIT_POLICY=PASSIVE``): spinning only pays on an idle machine, and
costs 9-17x the CPU on a loaded one. The runtime reads it when it starts, so it is set before
anything imports XGBoost; an explicit ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` in the
environment wins.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
