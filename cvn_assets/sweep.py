"""The one command: run the whole FTF sweep into a persistent local Dagster instance.

``python -m cvn_assets.sweep`` (what ``make sweep`` calls) launches, through the real Dagster
instance in ``$DAGSTER_HOME`` (default ``./.dagster_home``), one ranged single run per stage:

1. ``market_job`` over the crypto partitions (candles -> features, labels -> fold plans);
2. ``train_<variant>_job`` per variant over the crypto x fold partitions (model + calibrated
   model), tagged ``cvn/variant`` and ``cvn/loss_function``;
3. ``results_job``: ``finetune_results`` (fan-in, blocking completeness check) -> ``gate_verdicts``.

Only partitions that are not yet materialized are launched (contiguous key ranges), and the
training assets reuse crash checkpoints, so a re-run after a failure or ``kill -9`` finishes
only what is missing. Runs are executed in process (``in_process_executor``), which keeps the
orchestration overhead near 0.03 s per partition; afterwards ``dagster dev -w workspace.yaml``
shows every run, materialization, check and metadata entry.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _ensure_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    cfg = Path(home) / "dagster.yaml"
    if not cfg.exists():
        from resources.instance_storage import default_instance_yaml

        cfg.write_text(default_instance_yaml(str(Path(home).resolve())))
    return Path(home)


def contiguous_ranges(all_keys: Sequence[str], wanted: set[str]) -> list[tuple[str, str]]:
    """Minimal list of [start, end] key ranges (in partition order) covering ``wanted``."""
    ranges: list[tuple[str, str]] = []
    start: str | None = None
    prev: str | None = None
    for k in all_keys:
        if k in wanted:
            if start is None:
                start = k
            prev = k
        elif start is not None:
            assert prev is not None
            ranges.append((start, prev))
            start = None
    if start is not None and prev is not None:
        ranges.append((start, prev))
    return ranges


def _range_tags(start: str, end: str) -> dict[str, str]:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-id", default="default", help="results-store key of this sweep")
    parser.add_argument(
        "--force", action="store_true", help="re-materialize every partition (ignores what exists)"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-training progress lines")
    parser.add_argument(
        "--resource-config",
        default="{}",
        help='JSON run config per resource, e.g. \'{"sweep": {"num_boost_round": 100}, '
        '"market_data": {"hours": 8760}}\'',
    )
    args = parser.parse_args(argv)

    home = _ensure_home()
    from dagster import AssetKey, DagsterInstance

    from cvn_assets.assets.training import calibrated_asset_name, model_asset_name
    from cvn_assets.definitions import defs
    from cvn_assets.partitions import SETTINGS, crypto_fold_partitions, crypto_partitions
    from resources.sweep_settings import SweepSettings, reset_progress

    try:
        extra = json.loads(args.resource_config)
    except json.JSONDecodeError as exc:
        parser.error(f"--resource-config: not valid JSON ({exc.msg})")
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        parser.error("--resource-config: expected a JSON object of objects per resource")
    sweep_cfg = {**extra.pop("sweep", {}), "sweep_id": args.sweep_id}
    try:
        SweepSettings(**sweep_cfg).validate_all()  # fail before any work, naming the field
    except Exception as exc:
        print(f"invalid sweep config: {exc}", file=sys.stderr)
        return 2

    instance = DagsterInstance.get()
    t_start = time.perf_counter()
    failures: list[str] = []

    def materialized(asset: str) -> set[str]:
        if args.force:
            return set()
        return {str(k) for k in instance.get_materialized_partitions(AssetKey(asset))}

    def run(job_name: str, tags: dict[str, str], total: int = 0) -> bool:
        job = defs.resolve_job_def(job_name)
        run_config: dict[str, Any] = {
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "resources": {
                **{name: {"config": cfg} for name, cfg in extra.items()},
                "sweep": {"config": sweep_cfg},
                "progress": {"config": {"echo": not args.quiet, "log": False, "total": total}},
            },
        }
        result = job.execute_in_process(
            run_config=run_config, instance=instance, tags=tags, raise_on_error=False
        )
        if not result.success:
            failures.append(f"{job_name} {tags} (run {result.run_id})")
            print(f"!! {job_name} failed (run {result.run_id}); continuing", file=sys.stderr)
        return result.success

    print(
        f"DAGSTER_HOME={home}  universe={','.join(SETTINGS.universe)}  folds={SETTINGS.n_folds}"
        f"  variants={','.join(v.name for v in SETTINGS.variants)}"
    )

    # 1. market stage
    crypto_keys = list(crypto_partitions.get_partition_keys())
    market_missing = set(crypto_keys) - (
        materialized("fold_splits") & materialized("model_dataset")
    )
    t0 = time.perf_counter()
    for a, b in contiguous_ranges(crypto_keys, market_missing):
        run("market_job", _range_tags(a, b))
    print(
        f"market stage: {len(market_missing)} crypto partitions in {time.perf_counter() - t0:.1f}s"
    )

    # 2. models + calibration, one ranged run per variant
    cell_keys = [str(k) for k in crypto_fold_partitions.get_partition_keys()]
    todo = {
        v.name: set(cell_keys)
        - (materialized(model_asset_name(v)) & materialized(calibrated_asset_name(v)))
        for v in SETTINGS.variants
    }
    total = sum(len(s) for s in todo.values())
    reset_progress()
    t0 = time.perf_counter()
    for v in SETTINGS.variants:
        for a, b in contiguous_ranges(cell_keys, todo[v.name]):
            run(f"train_{v.name}_job", _range_tags(a, b), total=total)
    print(f"models stage: {total} trainings+calibrations in {time.perf_counter() - t0:.1f}s")

    # 3. fan-in and gates (always: cheap, and reflects the current cells)
    t0 = time.perf_counter()
    run("results_job", {})
    print(f"results stage in {time.perf_counter() - t0:.1f}s")

    _print_summary(args.sweep_id)
    print(f"sweep wall time {time.perf_counter() - t_start:.1f}s")
    if failures:
        print("FAILED runs:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def _print_summary(sweep_id: str) -> None:
    import pandas as pd

    from cvn_assets.assets.results import report_dir
    from cvn_assets.definitions import build_resources
    from cvn_assets.evaluation import variant_summary

    store = build_resources()["results_store"]
    frame = store.load_results(sweep_id)
    if frame.empty:
        print("no finetune_results rows")
        return
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"\nfinetune_results: {len(frame)} rows (sweep {sweep_id!r}) — per variant:")
        summary = variant_summary(frame)
        print(summary.to_string())
        verdicts = store.load_verdicts(sweep_id)
        if not verdicts.empty:
            from cvn_assets.gates import gate_verdicts_markdown

            print("\ngate verdicts:")
            print(gate_verdicts_markdown(verdicts))
            report = report_dir(sweep_id) / "report.html"
            if report.exists():
                print(f"\nreport: {report}")


if __name__ == "__main__":
    raise SystemExit(main())
