"""cvn-focal: focal-loss ablation sweep for a crypto BUY classifier, as a Dagster asset graph.

XGBoost's OpenMP threads (GNU libgomp in the Linux wheels) spin-wait between parallel regions,
by default for 300,000 spins; when other processes compete for the cores, the spinning threads
burn the CPU the work needs. Measured with ``bench/bench_load.py`` (the default sweep, idle and
beside two busy processes on this 2-core machine, one run each):

=============================  ===========  =============  ======
thread wait policy              idle wall    loaded wall    ratio
=============================  ===========  =============  ======
libgomp default                 48.8 s       225.1 s        4.6x
``OMP_WAIT_POLICY=PASSIVE``      57.3 s        91.1 s        1.6x
``GOMP_SPINCOUNT=30000``         47.5 s       105.2 s        2.2x
=============================  ===========  =============  ======

The last keeps the idle speed and holds up under load, so it is the default here. The
runtime reads it when it starts, so it is set before anything imports XGBoost; an explicit
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` in the environment wins.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")
