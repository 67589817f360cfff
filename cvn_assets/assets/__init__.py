"""Thin Dagster layer: each asset calls the pure modules beside it and reports metadata.

``backfill_policy`` is still flagged beta in Dagster 1.13; the sweep depends on
``BackfillPolicy.single_run()`` on purpose (one ranged run per stage instead of one run per
partition, ~0.03 s instead of 0.1-0.6 s of overhead per partition), so that one known warning
is silenced here rather than printed on every load of the code location.
"""

import warnings

from dagster import BetaWarning

warnings.filterwarnings("ignore", category=BetaWarning, message=r".*backfill_policy.*")
