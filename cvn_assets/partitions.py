"""Partitions of the sweep: ``crypto`` (the configured universe) x ``fold`` (f0..f{K-1}).

Per-crypto assets (candles, features, labels, fold plans) use ``crypto_partitions``; every
per-variant model and calibrated model uses ``crypto_fold_partitions`` (25 by default), so a
single crypto, a single fold or one cell can be re-materialized or backfilled on its own.
"""

import warnings

from dagster import (
    BetaWarning,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from cvn_assets.settings import ProjectSettings, load_settings

SETTINGS: ProjectSettings = load_settings()

crypto_partitions = StaticPartitionsDefinition(list(SETTINGS.universe))
fold_partitions = StaticPartitionsDefinition(list(SETTINGS.fold_keys))
crypto_fold_partitions = MultiPartitionsDefinition(
    {"crypto": crypto_partitions, "fold": fold_partitions}
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
