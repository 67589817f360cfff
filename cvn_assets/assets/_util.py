"""Helpers shared by the asset modules (ranged runs, partition dicts, metadata)."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext


def run_partition_keys(context: AssetExecutionContext) -> list[str]:
    """The partitions this step materializes: one, or a range in a single-run backfill."""
    return [str(k) for k in context.partition_keys]


def by_key(value: Any, keys: list[str]) -> dict[str, Any]:
    """Normalize an input loaded for one or several upstream partitions to ``{key: value}``.

    The IO manager returns the bare value for one partition and a dict for several.
    """
    if len(keys) == 1 and not (isinstance(value, Mapping) and set(map(str, value)) == set(keys)):
        return {keys[0]: value}
    return {str(k): v for k, v in value.items()}


def round_floats(d: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}
