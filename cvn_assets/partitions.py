"""Partitions of the sweep: ``crypto`` (the configured universe) x ``fold`` (f0..f{K-1}).

Per-crypto assets (candles, features, labels, fold plans) use ``crypto_partitions``; every
per-variant model and calibrated model uses ``crypto_fold_partitions`` (25 by default), so a
single crypto, a single fold or one cell can be re-materialized or backfilled on its own.

The live loop (``paper_trades``, ``monitoring_metrics``) uses ``day_crypto_partitions``: crypto x
UTC day (``DailyPartitionsDefinition`` from :data:`PAPER_START`), so a month of one crypto is one
key range ``BTCUSDC|2026-01-01...BTCUSDC|2026-01-31`` (a rectangle, as every multi-partition
range). The days start at ``$CVN_PAPER_START`` when it is set; otherwise, on the synthetic
market, at the first day after the default sweep's window (:func:`default_paper_start`:
2025-12-30, the day its champions' paper trading starts), so the UI shows no partitions that
can never be materialized (days inside the champions' training window). On CSV data the
window is the files', unknown when the definitions load: set ``CVN_PAPER_START`` to the first
day after the sweep's candles (else the days start at the synthetic market's first day,
2023-07-01, as before).
"""

import os
import warnings
from collections.abc import Mapping

import pandas as pd
from dagster import (
    BetaWarning,
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from cvn_assets.market.synthetic_market import DEFAULT_HOURS, DEFAULT_START
from cvn_assets.settings import ProjectSettings, load_settings

SETTINGS: ProjectSettings = load_settings()

crypto_partitions = StaticPartitionsDefinition(list(SETTINGS.universe))
fold_partitions = StaticPartitionsDefinition(list(SETTINGS.fold_keys))
crypto_fold_partitions = MultiPartitionsDefinition(
    {"crypto": crypto_partitions, "fold": fold_partitions}
)


def default_paper_start(env: Mapping[str, str]) -> str:
    """First day of the live loop's day partitions, ``YYYY-MM-DD`` (UTC): ``CVN_PAPER_START``
    when set; on the synthetic market (the default source) the first day after the default
    sweep's window (``DEFAULT_START`` + ``DEFAULT_HOURS`` hours, rounded up to a day);
    otherwise (CSV) the synthetic market's first day."""
    explicit = env.get("CVN_PAPER_START", "").strip()
    if explicit:
        return explicit
    if env.get("CVN_MARKET_SOURCE", "").strip() in ("", "synthetic"):
        end = pd.Timestamp(DEFAULT_START) + pd.Timedelta(hours=DEFAULT_HOURS)
        return f"{end.ceil('D'):%Y-%m-%d}"
    return DEFAULT_START


#: first day of the live loop's day dimension (UTC)
PAPER_START: str = default_paper_start(os.environ)
#: ``end_offset=1``: today (in progress) is a partition; it fails until its last candle exists
day_partitions = DailyPartitionsDefinition(start_date=PAPER_START, timezone="UTC", end_offset=1)
day_crypto_partitions = MultiPartitionsDefinition(
    {"crypto": crypto_partitions, "day": day_partitions}
)
#: maps a crypto x fold partition to its crypto's per-crypto upstream partition (explicit
#: rather than inferred, so the contract is visible; the class is flagged beta in 1.13)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    to_crypto = MultiToSingleDimensionPartitionMapping(partition_dimension_name="crypto")


def split_key(key: str | MultiPartitionKey) -> tuple[str, int]:
    """``'BTCUSDC|f3'`` -> ``('BTCUSDC', 3)`` (Dagster orders dimension names alphabetically)."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        crypto, fold = dims["crypto"], dims["fold"]
    else:
        crypto, fold = str(key).split("|")
    return crypto, int(fold.removeprefix("f"))


def cell_key(crypto: str, fold: int) -> MultiPartitionKey:
    return MultiPartitionKey({"crypto": crypto, "fold": f"f{fold}"})


def split_day_key(key: str | MultiPartitionKey) -> tuple[str, str]:
    """``'BTCUSDC|2026-01-03'`` -> ``('BTCUSDC', '2026-01-03')``."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["crypto"], dims["day"]
    crypto, day = str(key).split("|")
    return crypto, day


def day_key(crypto: str, day: str) -> MultiPartitionKey:
    return MultiPartitionKey({"crypto": crypto, "day": day})
