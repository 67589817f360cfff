"""Helpers shared by the asset modules (ranged runs, partition dicts, metadata)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, MetadataValue

from cvn_assets.ablation.identity import SweepIdentity, code_versions
from cvn_assets.partitions import SETTINGS
from resources.home_source import ensure_home_source

#: run tag that makes the training assets retrain cells whose fingerprint is stored
RETRAIN_TAG = "cvn/retrain"
#: run tag naming the sweep a run worked for
SWEEP_TAG = "cvn/sweep_id"


def run_partition_keys(context: AssetExecutionContext) -> list[str]:
    """The partitions this step materializes: one, or a range in a single-run backfill."""
    return [str(k) for k in context.partition_keys]


def warn_if_no_partition(context: AssetExecutionContext) -> bool:
    """True (after a warning in the run's log) when the run selected no partition at all: a
    key range of crypto x fold is a rectangle, so ``BTCUSDC|f4...ETHUSDC|f0`` (crypto in
    [BTCUSDC..ETHUSDC] x fold in [f4..f0]) is empty. Such a run does nothing and says so."""
    if run_partition_keys(context):
        return False
    tags = context.run.tags
    rng = (
        f"{tags.get('dagster/asset_partition_range_start')}..."
        f"{tags.get('dagster/asset_partition_range_end')}"
    )
    context.log.warning(
        f"the partition range {rng} selects no cell: Dagster reads a range of crypto x fold as a "
        "rectangle (crypto range x fold range), and this one is empty; nothing was done. Use "
        "e.g. 'BTCUSDC|f0...ETHUSDC|f4' (both cryptos, all folds) or one range per crypto."
    )
    return True


def by_key(value: Any, keys: list[str]) -> dict[str, Any]:
    """Normalize an input loaded for one or several upstream partitions to ``{key: value}``.

    The IO manager returns the bare value for one partition and a dict for several.
    """
    if len(keys) == 1 and not (isinstance(value, Mapping) and set(map(str, value)) == set(keys)):
        return {keys[0]: value}
    return {str(k): v for k, v in value.items()}


def round_floats(d: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def sweep_identity(sweep: Any, market_data: Any) -> SweepIdentity:
    """This run's :class:`SweepIdentity` from its resources and the definition-time settings."""
    return SweepIdentity(
        settings=sweep.identity_settings(),
        definition=SETTINGS.identity(),
        data=market_data.data_identity(list(SETTINGS.universe)),
        code=code_versions(),
    )


def instance_home(context: Any) -> Path | None:
    """The Dagster home of the run's instance (None for an ephemeral instance)."""
    try:
        root = context.instance.root_directory
    except Exception:  # ephemeral instances have no home of their own
        return None
    return Path(root).resolve() if root else None


def check_home_source(context: Any, market_data: Any) -> None:
    """Refuse, before any work, a market-data source other than the one the home records."""
    ensure_home_source(market_data.home_source(), instance_home(context))


def prepare_sweep(context: Any, sweep: Any, market_data: Any, results_store: Any) -> SweepIdentity:
    """Before any work: the home's data source must match, and the sweep id is registered
    with this run's identity (refused, naming what changed, if it was registered with
    another). Costs a few ms (file hashes are memoized)."""
    check_home_source(context, market_data)
    identity = sweep_identity(sweep, market_data)
    results_store.register_sweep(sweep.sweep_id, identity, replace=sweep.replace_sweep)
    if context.run.tags.get(SWEEP_TAG) != sweep.sweep_id:  # the Runs page filters by sweep
        context.instance.add_run_tags(context.run.run_id, {SWEEP_TAG: sweep.sweep_id})
    return identity


def wants_retrain(context: AssetExecutionContext, sweep: Any) -> bool:
    """``sweep.retrain`` or the run tag ``cvn/retrain=true`` (settable on a UI backfill)."""
    return bool(sweep.retrain) or context.run.tags.get(RETRAIN_TAG, "").lower() == "true"


def identity_metadata(identity: SweepIdentity) -> dict[str, Any]:
    """The identity as asset metadata: fingerprint, data, code and every setting."""
    doc = identity.as_dict()
    return {
        "sweep_fingerprint": identity.fingerprint,
        "sweep_identity": MetadataValue.json(doc),
        "data_source": str(doc["data"].get("source")),
    }
