"""Results stage: the fan-in ``finetune_results`` (125 rows by default) and ``gate_verdicts``."""

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    asset_check,
)

from cvn_assets.ablation.calibration import CALIBRATION_METHODS
from cvn_assets.ablation.evaluation import (
    daily_oos_returns,
    pbo_logits,
    pooled_reliability,
    portfolio_daily_returns,
    result_row,
    variant_summary,
)
from cvn_assets.ablation.gates import (
    VERDICT_TABLE_COLUMNS,
    evaluate_gates,
    gate_verdict_rows,
    gate_verdicts_markdown,
    verdict_table_problems,
)
from cvn_assets.ablation.identity import SweepIdentity, module_digest
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import identity_metadata, prepare_sweep
from cvn_assets.assets.training import calibrated_asset_name
from cvn_assets.partitions import SETTINGS, cell_key
from resources.home_source import home_dir
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings

KEY_METRICS = (
    "f1_buy",
    "precision_buy",
    "recall_buy",
    "log_loss",
    "threshold",
    "expectancy_net",
    *(f"ece_hold_{m}" for m in CALIBRATION_METHODS),
)


def expected_cells(variants: tuple[Variant, ...]) -> list[tuple[str, int, str]]:
    return [
        (c, f, v.name) for v in variants for c in SETTINGS.universe for f in range(SETTINGS.n_folds)
    ]


def read_sweep_cell(
    artifacts: ArtifactStore, identity: SweepIdentity, crypto: str, fold: int, variant: Variant
):
    """The calibrated cell made with exactly this sweep's settings, data and code (by its
    fingerprint, whatever was materialized last); ``FileNotFoundError`` if there is none."""
    fp = identity.calibrated_fingerprint(crypto, fold, variant.name)
    return artifacts.read(
        calibrated_asset_name(variant), cell_key(crypto, fold), fp, with_model=False
    )


@asset(
    group_name="results",
    deps=[AssetKey(calibrated_asset_name(v)) for v in SETTINGS.variants],
    kinds={"pandas", "sql"},
    code_version=module_digest("ablation/evaluation.py"),
)
def finetune_results(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    results_store: ResultsStore,
    sweep: SweepSettings,
    market_data: MarketDataResource,
) -> pd.DataFrame:
    """One row per crypto x fold x variant with OOS metrics, upserted into the results store.

    Reads, for every cell, the calibrated value stored under the cell's fingerprint for this
    sweep's identity (never a value made with other settings), one at a time without the
    boosters (the fan-in never holds 125 models in memory). Cells with no such value fail the
    asset, naming them.
    """
    identity = prepare_sweep(context, sweep, market_data, results_store)
    rows: list[dict[str, Any]] = []
    oos_parts: list[pd.DataFrame] = []
    missing: list[str] = []
    for crypto, fold, variant in expected_cells(SETTINGS.variants):
        v = next(x for x in SETTINGS.variants if x.name == variant)
        try:
            cal = read_sweep_cell(artifacts, identity, crypto, fold, v)
        except FileNotFoundError:
            missing.append(f"{variant} {crypto}|f{fold}")
            continue
        rows.append(result_row(crypto, fold, cal))
        oos_parts.append(daily_oos_returns(crypto, fold, variant, cal))
    if missing:
        raise Failure(
            description=f"finetune_results: {len(missing)} cells not materialized with this "
            f"sweep's settings (identity {identity.fingerprint}): "
            + ", ".join(missing[:20])
            + (" ..." if len(missing) > 20 else ""),
            metadata={"missing": MetadataValue.json(missing)},
        )
    frame = pd.DataFrame(rows)
    oos = pd.concat(oos_parts, ignore_index=True)
    results_store.replace_results(sweep.sweep_id, frame.to_dict("records"))
    results_store.replace_oos_returns(sweep.sweep_id, oos)

    summary = variant_summary(frame)
    context.add_output_metadata(
        {
            "sweep_id": sweep.sweep_id,
            **identity_metadata(identity),
            "rows": len(frame),
            "results_store": MetadataValue.text(results_store.url_redacted),
            "oos_return_rows": len(oos),
            "summary": MetadataValue.md(summary.to_markdown()),
        }
    )
    return frame


@asset_check(asset=finetune_results, blocking=True, description="Every cell present, no NaN.")
def finetune_results_complete(
    artifacts: ArtifactStore, results_store: ResultsStore, sweep: SweepSettings
) -> AssetCheckResult:
    frame = results_store.load_results(sweep.sweep_id)
    have = {(r.crypto, int(r.fold), r.variant) for r in frame.itertuples()}
    want = set(expected_cells(SETTINGS.variants))
    missing = sorted(want - have)
    extra = sorted(have - want)
    nan_mask = frame[list(KEY_METRICS)].isna().any(axis=1) if len(frame) else []
    nan_cells = [f"{r.variant} {r.crypto}|f{r.fold}" for r in frame[nan_mask].itertuples()]
    ok = not missing and not nan_cells and len(frame) == len(want)
    covered = frame.groupby("variant")["crypto"].size().to_dict() if len(frame) else {}
    return AssetCheckResult(
        passed=ok,
        metadata={
            "sweep_id": sweep.sweep_id,
            "cells_covered_per_variant": MetadataValue.json(
                {str(k): int(v) for k, v in covered.items()}
            ),
            "rows": len(frame),
            "expected_rows": len(want),
            "missing_cells": MetadataValue.json([list(map(str, m)) for m in missing[:50]]),
            "cells_with_nan": MetadataValue.json(nan_cells[:50]),
            "cells_outside_grid": len(extra),
        },
    )


@asset(
    group_name="results",
    kinds={"pandas", "sql", "html"},
    code_version=module_digest("ablation/gates.py", "ablation/stats.py", "ablation/report.py"),
)
def gate_verdicts(
    context: AssetExecutionContext,
    finetune_results: pd.DataFrame,
    artifacts: ArtifactStore,
    results_store: ResultsStore,
    sweep: SweepSettings,
    market_data: MarketDataResource,
) -> pd.DataFrame:
    """Per variant: every gate's figure, threshold and PASS/FAIL, and the lock decision."""
    identity = prepare_sweep(context, sweep, market_data, results_store)
    oos = results_store.load_oos_returns(sweep.sweep_id)
    daily = portfolio_daily_returns(oos)
    # CSCV drops the oldest T mod n_blocks days and says so: keep that note in the metadata
    # instead of printing a warning on every run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdicts = evaluate_gates(
            finetune_results,
            baseline=_baseline_name(),
            primary_calibration=sweep.primary_calibration,
            oos_returns=daily,
            seed=sweep.seed,
        )
        results_store.replace_verdicts(sweep.sweep_id, verdicts.to_dict("records"))
        report_path, figures = _write_report(
            finetune_results, verdicts, daily, artifacts, sweep, identity
        )
    notes = sorted({str(w.message) for w in caught})
    locked = [str(v) for v in verdicts.loc[verdicts["lock"].fillna(False).astype(bool), "variant"]]
    context.add_output_metadata(
        {
            "sweep_id": sweep.sweep_id,
            **identity_metadata(identity),
            "verdict_table": verdict_table_metadata(verdicts),
            "decision": (
                f"lockable: {', '.join(locked)}"
                if locked
                else "no focal variant may be locked (a valid outcome)"
            ),
            "verdicts": MetadataValue.md(gate_verdicts_markdown(verdicts)),
            "lockable_variants": MetadataValue.json(locked),
            **figure_metadata(figures),
            "report": MetadataValue.path(str(report_path)),
            "pbo_periods": int(daily["period"].nunique()),
            "notes": MetadataValue.json(notes),
        }
    )
    return verdicts


@asset_check(
    asset=gate_verdicts,
    description="The verdict table is well formed: one row per variant, the baseline as the "
    "reference, every gate PASS or FAIL, and lock exactly when all gates pass. Whether a variant "
    "may be locked is the decision (in the metadata), not a check result: 'no variant may be "
    "locked' is a valid outcome.",
)
def verdicts_consistent(gate_verdicts: pd.DataFrame) -> AssetCheckResult:
    base = _baseline_name()
    problems = verdict_table_problems(
        gate_verdicts, [v.name for v in SETTINGS.variants], baseline=base
    )
    have = [str(v) for v in gate_verdicts["variant"]]
    focal = gate_verdicts[gate_verdicts["variant"] != base]
    locked = focal.loc[focal["lock"].fillna(False).astype(bool), "variant"].tolist()
    return AssetCheckResult(
        passed=not problems,
        metadata={
            "variants_checked": MetadataValue.json(have),
            "problems": MetadataValue.json(problems),
            "decision": (
                f"lockable: {', '.join(map(str, locked))}"
                if locked
                else "no focal variant may be locked (a valid outcome)"
            ),
        },
    )


def _baseline_name() -> str:
    return next(v.name for v in SETTINGS.variants if v.loss_function == "binary:logistic")


def report_dir(sweep_id: str) -> Path:
    return home_dir() / "reports" / sweep_id


def _write_report(
    results: pd.DataFrame,
    verdicts: pd.DataFrame,
    daily: pd.DataFrame,
    artifacts: ArtifactStore,
    sweep: SweepSettings,
    identity: SweepIdentity,
) -> tuple[Path, dict[str, str]]:
    # imported here, not at the top: matplotlib's import adds 1.1-1.6 s (measured with -X
    # importtime after cvn_assets.definitions) to every load of the definitions (each Celery
    # step, code server and sweep), and only this fan-in draws the report
    from cvn_assets.ablation.report import best_focal_variant, render_report, report_figures

    reliability = {}
    for name in (_baseline_name(), best_focal_variant(verdicts)):
        v = next(x for x in SETTINGS.variants if x.name == name)
        reliability[name] = pooled_reliability(
            read_sweep_cell(artifacts, identity, c, f, v).test_eval
            for c, f, _ in expected_cells((v,))
        )
    logits = pbo_logits(daily)
    out = report_dir(sweep.sweep_id) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = report_figures(results, verdicts, reliability=reliability, pbo_logits=logits)
    path = render_report(
        results,
        verdicts,
        reliability=reliability,
        pbo_logits=logits,
        out_path=out,
        title=f"cvn-focal FTF sweep {sweep.sweep_id}",
        identity=identity.as_dict(),
        identity_fingerprint=identity.fingerprint,
        figures=figures,
    )
    return path, figures


_FIGURE_TITLES = {
    "forest_plot": "Forest plot: mean f1_buy delta vs baseline with 95% bootstrap CI",
    "heatmaps": "Crypto x fold f1_buy delta per focal variant",
    "reliability": "Reliability diagrams (test blocks): baseline and best focal variant",
    "cscv_histogram": "PBO: CSCV logit distribution",
}


def figure_metadata(figures: dict[str, str]) -> dict[str, Any]:
    """Each plot as Markdown metadata with the PNG inline (a remote browser sees it; a path
    on the server's disk it could not open)."""
    return {
        f"plot_{key}": MetadataValue.md(
            f"**{_FIGURE_TITLES.get(key, key)}**\n\n![{key}](data:image/png;base64,{b64})"
        )
        for key, b64 in figures.items()
    }


def verdict_table_metadata(verdicts: pd.DataFrame) -> MetadataValue:
    """The verdict table as a Dagster table (rendered inline on the asset page)."""
    return MetadataValue.table(
        records=[TableRecord(row) for row in gate_verdict_rows(verdicts)],
        schema=TableSchema(
            columns=[TableColumn(key, "string", description=h) for key, h in VERDICT_TABLE_COLUMNS]
        ),
    )
