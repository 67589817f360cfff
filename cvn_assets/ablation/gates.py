"""Statistical ship/no-ship gates for the focal-loss ablation sweep (spec 7.3-7.5).

Input is the ``finetune_results`` frame: one row per (crypto, fold, variant), 5 x 5 x 5 = 125
rows by default. Every focal variant is compared with the ``binary:logistic`` baseline trained
on the *same* crypto and fold, so all tests here are **paired** on the (crypto, fold) cell.

Gates (one row per variant in :func:`evaluate_gates`; all six must pass for ``lock``):

1. **Significance** -- per (variant, fold) a one-sided paired t-test across the cryptos
   (H1: mean f1_buy delta > 0, ``n_cryptos - 1`` df), Benjamini-Hochberg adjusted over the whole
   family "non-baseline variants x folds" (4 x 5 = 20 tests, spec 7.3).  The gate needs the
   variant's smallest BH-adjusted fold p <= ``alpha_fdr`` (at least one fold is a discovery) AND
   the per-variant one-sided paired t-test over all crypto x fold cells, BH-adjusted over the
   variants, <= ``alpha_fdr`` (the gain is not confined to one period).
2. **Bootstrap CI** -- the lower bound of the paired percentile-bootstrap 95% CI of the mean
   f1_buy delta over cells is > 0.
3. **Effect size** -- Cohen's d_av >= 0.2 ("small", Cohen 1988): a significant but negligible
   gain is not worth a new loss function in production.
4. **Per asset** -- a crypto "improves" when the median delta over its folds is > 0; at least
   ``ceil(min_improving_fraction * n_cryptos)`` cryptos (4 of 5) must improve.
5. **ECE_HOLD** -- mean test-block ECE of the variant <= mean baseline ECE + ``ece_tolerance``
   (0.01) on the variant's primary calibration method (method-matched baseline); all methods
   and a bootstrap CI of the mean ECE difference are reported.
6. **PBO** -- probability of backtest overfitting by CSCV across all variants < 0.5.

The tests themselves (and why a one-sided paired t-test rather than Wilcoxon) are in
:mod:`cvn_assets.ablation.stats`; this module turns them into the gate decisions.

References
----------
- The statistical procedures' references are in :mod:`cvn_assets.ablation.stats`.
- Cohen (1988), *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed. (d >= 0.2).
- Guo, Pleiss, Sun, Weinberger (2017), "On calibration of modern neural networks", ICML (ECE).
- Bailey, Borwein, Lopez de Prado, Zhu (2014/2017), "The probability of backtest overfitting",
  J. Computational Finance 20(4) (CSCV, PBO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.ablation.stats import (
    OneSidedTest,
    PboMetric,
    benjamini_hochberg,
    check_probability,
    cohens_d,
    paired_bootstrap_ci,
    paired_t_test_greater,
    performance_array,
    probability_of_backtest_overfitting,
    trim_to_blocks,
    wilcoxon_greater,
)

__all__ = [
    "ECE_METHODS",
    "GATE_COLUMNS",
    "REQUIRED_COLUMNS",
    "evaluate_gates",
    "fold_tests",
    "gate_verdicts_markdown",
    "pbo_performance_matrix",
    "per_asset_breakdown",
]

#: Calibration methods whose test-block ECE is stored as ``ece_hold_<method>``.  Mirrors
#: ``cvn_assets.ablation.calibration.CALIBRATION_METHODS`` (kept local so this module has no
#: import-time dependency on the calibration code; a unit test checks the two agree).
ECE_METHODS: tuple[str, ...] = ("none", "temperature", "platt", "isotonic")

#: Columns ``finetune_results`` must carry (docs/CONTRACTS.md, gates.py section).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "crypto",
    "fold",
    "variant",
    "loss_function",
    "f1_buy",
    *(f"ece_hold_{m}" for m in ECE_METHODS),
)

#: The six gate columns of :func:`evaluate_gates` ("PASS" / "FAIL", <NA> on the baseline row).
GATE_COLUMNS: tuple[str, ...] = (
    "gate_significance",
    "gate_bootstrap_ci",
    "gate_effect_size",
    "gate_per_asset",
    "gate_ece",
    "gate_pbo",
)

_PBO_THRESHOLD = 0.5
_EFFECT_SIZE_THRESHOLD = 0.2
_F1_CELL_SOURCE = "f1_buy per (fold, crypto) cell, ordered by fold"
_OOS_SOURCE = "oos_returns net_return per period"


# --------------------------------------------------------------------------------------------
# finetune_results validation and grid
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    baseline: str
    variants: tuple[str, ...]  # baseline first
    folds: tuple[Any, ...]
    cryptos: tuple[str, ...]
    loss_function: dict[str, str]
    f1: NDArray[np.float64]  # (V, F, C)
    ece: dict[str, NDArray[np.float64]]  # method -> (V, F, C)
    expectancy: NDArray[np.float64] | None
    n_test: NDArray[np.float64] | None

    @property
    def focal(self) -> tuple[str, ...]:
        return self.variants[1:]

    def idx(self, variant: str) -> int:
        return self.variants.index(variant)

    def delta(self, variant: str) -> NDArray[np.float64]:
        """(F, C) f1_buy delta variant - baseline."""
        return self.f1[self.idx(variant)] - self.f1[0]


def _py(x: Any) -> Any:
    """numpy scalar -> Python scalar, so error messages read ``fold=3`` not ``np.int64(3)``."""
    return x.item() if isinstance(x, np.generic) else x


def _cell(row: pd.Series) -> str:
    v, c, f = (_py(row[k]) for k in ("variant", "crypto", "fold"))
    return f"(variant={v!r}, crypto={c!r}, fold={f!r})"


def _numeric_column(
    df: pd.DataFrame, column: str, *, lo: float | None, hi: float | None, allow_nan: bool
) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        row = df.loc[bad.idxmax()]
        raise ValueError(
            f"column {column!r} is not numeric at cell {_cell(row)}: {_py(row[column])!r}"
        )
    if not allow_nan and values.isna().any():
        row = df.loc[values.isna().idxmax()]
        raise ValueError(f"column {column!r} is NaN at cell {_cell(row)}")
    finite = values.dropna()
    out_of_range = ~np.isfinite(finite.to_numpy(dtype=float))
    if lo is not None:
        out_of_range |= finite.to_numpy(dtype=float) < lo
    if hi is not None:
        out_of_range |= finite.to_numpy(dtype=float) > hi
    if out_of_range.any():
        label = finite.index[int(np.flatnonzero(out_of_range)[0])]
        row = df.loc[label]
        raise ValueError(
            f"column {column!r} at cell {_cell(row)} must be in [{lo}, {hi}]; "
            f"got {_py(row[column])!r}"
        )
    return values.astype(float)


def _prepare(results: pd.DataFrame, baseline: str) -> _Grid:
    """Validate ``finetune_results`` and reshape it to (variant, fold, crypto) arrays.

    Raises ``TypeError`` for a non-DataFrame and ``ValueError`` naming the column, cell or
    value for anything else (missing columns, empty, NaN keys, unknown baseline, a lone
    variant, duplicate cells, a loss function varying within a variant, values out of range,
    fewer than 2 cryptos, an incomplete grid), in that order.
    """
    df, variants_seen = _checked_frame(results, baseline)
    loss = _loss_functions(df)
    f1 = _numeric_column(df, "f1_buy", lo=0.0, hi=1.0, allow_nan=False)
    ece_cols = {
        m: _numeric_column(df, f"ece_hold_{m}", lo=0.0, hi=1.0, allow_nan=False)
        for m in ECE_METHODS
    }
    expectancy = (
        _numeric_column(df, "expectancy_net", lo=None, hi=None, allow_nan=True)
        if "expectancy_net" in df.columns
        else None
    )
    n_test = (
        _numeric_column(df, "n_test", lo=0.0, hi=None, allow_nan=True)
        if "n_test" in df.columns
        else None
    )
    variants, folds, cryptos = _grid_axes(df, baseline, variants_seen)
    cube = _cube_maker(df, variants, folds, cryptos)
    return _Grid(
        baseline=baseline,
        variants=variants,
        folds=folds,
        cryptos=cryptos,
        loss_function=loss,
        f1=cube(f1),
        ece={m: cube(v) for m, v in ece_cols.items()},
        expectancy=None if expectancy is None else cube(expectancy),
        n_test=None if n_test is None else cube(n_test),
    )


def _checked_frame(results: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows (index reset) and the variants in row order, after the structural checks:
    columns, keys, baseline, at least one other variant, no duplicate cell."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame; got {type(results).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"finetune_results is missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}"
        )
    if results.empty:
        raise ValueError("finetune_results is empty")
    df = results.reset_index(drop=True)
    for key in ("crypto", "fold", "variant"):
        if df[key].isna().any():
            i = int(df[key].isna().to_numpy().argmax())
            raise ValueError(f"column {key!r} is missing (NaN) in row {i}")
    variants_seen = list(dict.fromkeys(df["variant"].astype(str)))
    if baseline not in variants_seen:
        raise ValueError(
            f"baseline variant {baseline!r} not found in column 'variant'; "
            f"variants present: {variants_seen}"
        )
    if len(variants_seen) < 2:
        raise ValueError(
            f"finetune_results needs the baseline and >= 1 variant; got {variants_seen}"
        )
    dup = df.duplicated(["variant", "crypto", "fold"], keep="first")
    if dup.any():
        raise ValueError(f"duplicate finetune_results cell {_cell(df.loc[dup.idxmax()])}")
    return df, variants_seen


def _loss_functions(df: pd.DataFrame) -> dict[str, str]:
    """variant -> its loss function (one per variant, else ``ValueError``)."""
    loss: dict[str, str] = {}
    for name, group in df.groupby("variant", sort=False):
        kinds = group["loss_function"].astype(str).unique()
        if len(kinds) != 1:
            raise ValueError(
                f"column 'loss_function' must be constant per variant; variant {name!r} has "
                f"{sorted(kinds)}"
            )
        loss[str(name)] = str(kinds[0])
    return loss


def _grid_axes(
    df: pd.DataFrame, baseline: str, variants_seen: list[str]
) -> tuple[tuple[str, ...], tuple[Any, ...], tuple[str, ...]]:
    """(variants with the baseline first, folds, cryptos), each sorted.

    Sorted, not row order: the verdicts (and PBO's row order) must not depend on the order in
    which the results store returns rows.
    """
    variants = (baseline, *sorted(v for v in variants_seen if v != baseline))
    cryptos = tuple(sorted(dict.fromkeys(df["crypto"].astype(str))))
    try:
        folds = tuple(sorted(dict.fromkeys(_py(f) for f in df["fold"])))
    except TypeError as exc:
        raise ValueError(
            f"column 'fold' must hold sortable values; got {df['fold'].unique()}"
        ) from exc
    if len(cryptos) < 2:
        raise ValueError(f"the paired tests need >= 2 cryptos; column 'crypto' has {list(cryptos)}")
    return variants, folds, cryptos


def _cube_maker(
    df: pd.DataFrame,
    variants: tuple[str, ...],
    folds: tuple[Any, ...],
    cryptos: tuple[str, ...],
) -> Callable[[pd.Series], NDArray[np.float64]]:
    """A function reshaping a column of ``df`` to (V, F, C); ``ValueError`` naming the first
    cell of the full grid without a row."""
    key = pd.MultiIndex.from_arrays(
        [df["variant"].astype(str), df["fold"], df["crypto"].astype(str)]
    )
    full = pd.MultiIndex.from_product([variants, folds, cryptos])
    present = set(key)
    for cell in full:
        if cell not in present:
            v, f, c = cell
            raise ValueError(
                f"incomplete grid: finetune_results has no row for cell "
                f"(variant={v!r}, crypto={c!r}, fold={f!r})"
            )
    shape = (len(variants), len(folds), len(cryptos))

    def cube(values: pd.Series) -> NDArray[np.float64]:
        s = pd.Series(values.to_numpy(dtype=float), index=key)
        return s.reindex(full).to_numpy(dtype=float).reshape(shape)

    return cube


def _fold_test_table(grid: _Grid) -> pd.DataFrame:
    rows = []
    for v in grid.focal:
        delta = grid.delta(v)
        for fi, fold in enumerate(grid.folds):
            test = paired_t_test_greater(delta[fi])
            rows.append(
                {
                    "variant": v,
                    "fold": fold,
                    "n_cryptos": len(grid.cryptos),
                    "mean_delta": float(delta[fi].mean()),
                    "median_delta": float(np.median(delta[fi])),
                    "var_delta": float(delta[fi].var(ddof=1)),
                    "t": test.statistic,
                    "p": test.pvalue,
                    "test": test.method,
                }
            )
    table = pd.DataFrame(rows)
    table["p_bh"] = benjamini_hochberg(table["p"].to_numpy(dtype=float))
    return table


def fold_tests(results: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """Per (variant, fold) paired test across cryptos with BH over the variant x fold family.

    Columns: variant, fold, n_cryptos, mean_delta, median_delta, var_delta (across cryptos,
    ddof=1), t, p (one-sided paired t, :func:`paired_t_test_greater`), test, p_bh (BH over all
    non-baseline variants x folds, spec 7.3).
    """
    return _fold_test_table(_prepare(results, baseline))


def _asset_table(grid: _Grid) -> pd.DataFrame:
    rows = []
    for v in grid.focal:
        delta = grid.delta(v)
        for ci, crypto in enumerate(grid.cryptos):
            col = delta[:, ci]
            median = float(np.median(col))
            rows.append(
                {
                    "variant": v,
                    "crypto": crypto,
                    "n_folds": len(grid.folds),
                    "median_delta": median,
                    "mean_delta": float(col.mean()),
                    "var_delta": float(col.var(ddof=1)) if col.size > 1 else float("nan"),
                    "improves": median > 0.0,
                }
            )
    return pd.DataFrame(rows)


def per_asset_breakdown(results: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """Per (variant, crypto): median, mean and variance over folds of the f1_buy delta.

    A crypto ``improves`` when its median delta over folds is > 0 (median: one lucky fold must
    not decide).  The variance across folds sits next to the median as F1_BUY_BOOST_PLAN §7
    asks (spec 7.3), so a median gain with a wild fold-to-fold swing is visible.
    """
    return _asset_table(_prepare(results, baseline))


# --------------------------------------------------------------------------------------------
# PBO input
# --------------------------------------------------------------------------------------------
def _oos_matrix(oos_returns: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    if not isinstance(oos_returns, pd.DataFrame):
        raise TypeError(f"oos_returns must be a pandas DataFrame; got {type(oos_returns).__name__}")
    need = ("period", "variant", "net_return")
    missing = [c for c in need if c not in oos_returns.columns]
    if missing:
        raise ValueError(f"oos_returns is missing column(s) {missing}; required: {list(need)}")
    if oos_returns.empty:
        raise ValueError("oos_returns is empty")
    df = oos_returns.assign(variant=oos_returns["variant"].astype(str))
    present = list(dict.fromkeys(df["variant"]))
    absent = [v for v in variants if v not in present]
    extra = [v for v in present if v not in variants]
    if absent or extra:
        raise ValueError(
            f"oos_returns variants must match finetune_results: missing {absent}, unknown {extra}"
        )
    dup = df.duplicated(["period", "variant"])
    if dup.any():
        row = df.loc[dup.idxmax()]
        raise ValueError(
            f"oos_returns has duplicate cell "
            f"(period={_py(row['period'])!r}, variant={row['variant']!r})"
        )
    values = pd.to_numeric(df["net_return"], errors="coerce")
    not_finite = ~np.isfinite(values.to_numpy(dtype=float))
    if not_finite.any():
        row = df.iloc[int(not_finite.argmax())]
        raise ValueError(
            f"oos_returns column 'net_return' is not a finite number at cell "
            f"(period={_py(row['period'])!r}, variant={row['variant']!r}): "
            f"{_py(row['net_return'])!r}"
        )
    wide = df.assign(net_return=values).pivot(
        index="period", columns="variant", values="net_return"
    )
    wide = wide.sort_index()
    if wide.isna().any().any():
        period, variant = next(
            (p, v) for p in wide.index for v in wide.columns if pd.isna(wide.at[p, v])
        )
        raise ValueError(
            f"oos_returns has no row for cell (period={_py(period)!r}, variant={variant!r})"
        )
    return wide[list(variants)]


def _f1_matrix(grid: _Grid) -> pd.DataFrame:
    # (V, F, C) -> rows (fold, crypto) in fold order, columns variants
    values = grid.f1.reshape(len(grid.variants), -1).T
    index = pd.MultiIndex.from_product([grid.folds, grid.cryptos], names=["fold", "crypto"])
    return pd.DataFrame(values, index=index, columns=list(grid.variants))


def pbo_performance_matrix(
    results: pd.DataFrame,
    *,
    baseline: str = "baseline",
    oos_returns: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, str]:
    """The T x N matrix CSCV runs on, and a sentence naming its source.

    With ``oos_returns`` (long frame ``period, variant, net_return``): pivoted to periods x
    variants, sorted by period.  Without it: f1_buy per (fold, crypto) cell, rows ordered by
    fold (folds are contiguous in time) then crypto name, one column per variant incl. baseline.
    """
    grid = _prepare(results, baseline)
    if oos_returns is None:
        return _f1_matrix(grid), _F1_CELL_SOURCE
    return _oos_matrix(oos_returns, grid.variants), _OOS_SOURCE


# --------------------------------------------------------------------------------------------
# the verdict table
# --------------------------------------------------------------------------------------------
def _pass(flag: bool) -> str:
    return "PASS" if flag else "FAIL"


def _validate_gate_params(
    *,
    alpha_fdr: float,
    min_improving_fraction: float,
    ece_tolerance: float,
    n_pbo_blocks: int,
    seed: int,
    n_resamples: int,
    pbo_metric: str,
) -> None:
    check_probability(alpha_fdr, "alpha_fdr")
    check_probability(min_improving_fraction, "min_improving_fraction", inclusive_high=True)
    if not (isinstance(ece_tolerance, int | float) and math.isfinite(ece_tolerance)) or (
        ece_tolerance < 0
    ):
        raise ValueError(f"ece_tolerance must be a finite number >= 0; got {ece_tolerance!r}")
    if isinstance(n_pbo_blocks, bool) or not isinstance(n_pbo_blocks, int | np.integer):
        raise ValueError(f"n_pbo_blocks must be an even integer >= 2; got {n_pbo_blocks!r}")
    if n_pbo_blocks < 2 or n_pbo_blocks % 2:
        raise ValueError(f"n_pbo_blocks must be an even integer >= 2; got {n_pbo_blocks}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100; got {n_resamples!r}")
    if pbo_metric not in ("mean", "sharpe"):
        raise ValueError(f"pbo_metric must be 'mean' or 'sharpe'; got {pbo_metric!r}")


def _primary_methods(
    primary_calibration: str | Mapping[str, str], variants: Sequence[str]
) -> dict[str, str]:
    if isinstance(primary_calibration, str):
        chosen = dict.fromkeys(variants, primary_calibration)
    elif isinstance(primary_calibration, Mapping):
        unknown = [v for v in primary_calibration if v not in variants]
        if unknown:
            raise ValueError(
                f"primary_calibration names unknown variant(s) {unknown}; "
                f"variants: {list(variants)}"
            )
        chosen = {v: primary_calibration.get(v, "temperature") for v in variants}
    else:
        raise ValueError(
            f"primary_calibration must be a method name or a variant -> method mapping; "
            f"got {primary_calibration!r}"
        )
    for v, m in chosen.items():
        if m not in ECE_METHODS:
            raise ValueError(
                f"primary_calibration for variant {v!r} must be one of {list(ECE_METHODS)}; "
                f"got {m!r}"
            )
    return chosen


def _fold_var(cube: NDArray[np.float64]) -> float:
    """Variance across folds (ddof=1) of the per-fold mean over cryptos; NaN with one fold."""
    per_fold = cube.mean(axis=1)
    return float(per_fold.var(ddof=1)) if per_fold.size > 1 else float("nan")


def evaluate_gates(
    results: pd.DataFrame,
    *,
    baseline: str = "baseline",
    primary_calibration: str | Mapping[str, str] = "temperature",
    oos_returns: pd.DataFrame | None = None,
    alpha_fdr: float = 0.05,
    min_improving_fraction: float = 0.8,
    ece_tolerance: float = 0.01,
    n_pbo_blocks: int = 8,
    seed: int = 0,
    n_resamples: int = 10_000,
    pbo_metric: PboMetric = "mean",
) -> pd.DataFrame:
    """Evaluate the six ship gates (module docstring) for every variant of ``finetune_results``.

    (Longer than a screen by its docstring only: the column reference below.)

    Returns one row per variant: the baseline first (its gate columns and ``lock`` are <NA>;
    its f1_buy level statistics are filled for reference), then the others sorted by name.
    Every gate has its figure(s), its threshold and a "PASS"/"FAIL" column
    (:data:`GATE_COLUMNS`); ``lock`` is True only when all six pass.

    ``primary_calibration`` is one method for all variants or a mapping variant -> method
    (unlisted variants use "temperature"); the ECE comparison is method-matched (the
    baseline's ECE under the same calibrator).  The ECE gate compares the point estimate of the
    mean ECE difference over cells with ``ece_tolerance``; its percentile bootstrap CI is
    reported because at 1-2k test rows even a perfectly calibrated model shows ECE ~0.02-0.03,
    so the sampling noise is of the order of the tolerance.

    PBO runs CSCV with ``n_pbo_blocks`` blocks on :func:`pbo_performance_matrix` (net returns
    per period when ``oos_returns`` is given, else f1_buy per (fold, crypto) cell); when T is
    not divisible by ``n_pbo_blocks`` the oldest ``T mod n_pbo_blocks`` rows are dropped and the
    count is in ``pbo_rows_dropped``.  Bootstraps use ``seed`` for every variant (common random
    numbers: variants are compared on the same resamples).

    Columns (deltas are variant - baseline per (crypto, fold) cell):
    ``variant, loss_function, is_baseline, n_cells, f1_buy_mean, f1_buy_median,
    f1_buy_fold_var`` (variance over folds of the per-fold mean), optional
    ``expectancy_net_mean, n_test_total``; ``mean_delta, median_delta, fold_var_delta``
    (0 on the baseline row);
    gate 1 ``p_fold_min, p_fold_min_bh, best_fold, p_cells, p_cells_bh, p_cells_wilcoxon``
    (one-sided, reported only), ``alpha_fdr, gate_significance``; gate 2 ``ci_lo, ci_hi,
    ci_threshold, gate_bootstrap_ci``; gate 3 ``d_z, d_av, d_magnitude, d_threshold,
    gate_effect_size``; gate 4 ``n_cryptos, n_cryptos_improving, n_cryptos_required,
    cryptos_improving, gate_per_asset``; gate 5 ``ece_delta_<m>, ece_delta_<m>_lo,
    ece_delta_<m>_hi, ece_pass_<m>`` for every method, ``ece_method, ece_variant,
    ece_baseline, ece_delta, ece_delta_lo, ece_delta_hi, ece_tolerance, gate_ece``; gate 6
    ``pbo, pbo_threshold, pbo_source, pbo_metric, pbo_n_blocks, pbo_rows_dropped, gate_pbo``;
    and ``lock``.
    """
    _validate_gate_params(
        alpha_fdr=alpha_fdr,
        min_improving_fraction=min_improving_fraction,
        ece_tolerance=ece_tolerance,
        n_pbo_blocks=n_pbo_blocks,
        seed=seed,
        n_resamples=n_resamples,
        pbo_metric=pbo_metric,
    )
    n_pbo_blocks = int(n_pbo_blocks)
    grid = _prepare(results, baseline)
    primary = _primary_methods(primary_calibration, grid.focal)
    matrix, source = _pbo_matrix(grid, oos_returns, n_pbo_blocks)
    # --- everything validated; now the work ---
    pbo_columns = _pbo_columns(matrix, source, n_pbo_blocks, pbo_metric)
    shared = _Shared(
        grid=grid,
        folds=_fold_test_table(grid),
        assets=_asset_table(grid),
        cell_tests={v: paired_t_test_greater(grid.delta(v).ravel()) for v in grid.focal},
        n_resamples=n_resamples,
        seed=int(seed),
    )
    rows: list[dict[str, Any]] = []
    for v in grid.variants:
        row = {**_level_columns(grid, v), **pbo_columns}
        if v == baseline:
            # baseline - baseline: exactly zero, filled so sorting by mean_delta stays numeric
            row.update({"mean_delta": 0.0, "median_delta": 0.0, "fold_var_delta": 0.0})
            rows.append(row)
            continue
        row.update(_delta_columns(grid, v))
        row.update(_gate_significance(shared, v, alpha_fdr))
        row.update(_gate_bootstrap_ci(shared, v))
        row.update(_gate_effect_size(grid, v))
        row.update(_gate_per_asset(shared, v, min_improving_fraction))
        row.update(_gate_ece(shared, v, primary[v], ece_tolerance))
        row.update(_gate_pbo(pbo_columns["pbo"]))
        row["lock"] = all(row[g] == "PASS" for g in GATE_COLUMNS)
        rows.append(row)
    return _typed_verdicts(pd.DataFrame(rows))


@dataclass(frozen=True)
class _Shared:
    """What every variant's gates read: the grid, the per-fold and per-crypto tables, the
    one-sided cell tests (BH over the variants) and the bootstrap settings."""

    grid: _Grid
    folds: pd.DataFrame
    assets: pd.DataFrame
    cell_tests: dict[str, OneSidedTest]
    n_resamples: int
    seed: int

    @property
    def cell_p_bh(self) -> dict[str, float]:
        focal = self.grid.focal
        adjusted = benjamini_hochberg([self.cell_tests[v].pvalue for v in focal])
        return dict(zip(focal, adjusted, strict=True))


def _pbo_matrix(
    grid: _Grid, oos_returns: pd.DataFrame | None, n_pbo_blocks: int
) -> tuple[pd.DataFrame, str]:
    """The PBO matrix and its source; ``ValueError`` when it has fewer rows than blocks."""
    if oos_returns is None:
        matrix, source = _f1_matrix(grid), _F1_CELL_SOURCE
    else:
        matrix, source = _oos_matrix(oos_returns, grid.variants), _OOS_SOURCE
    if matrix.shape[0] < n_pbo_blocks:
        raise ValueError(
            f"n_pbo_blocks={n_pbo_blocks} needs at least {n_pbo_blocks} rows in the PBO matrix "
            f"({source}); got T={matrix.shape[0]}"
        )
    return matrix, source


def _pbo_columns(
    matrix: pd.DataFrame, source: str, n_pbo_blocks: int, pbo_metric: PboMetric
) -> dict[str, Any]:
    """PBO (CSCV on the matrix, the oldest ``T mod n_pbo_blocks`` rows dropped) and how it
    was computed: the same on every row."""
    trimmed, n_dropped = trim_to_blocks(
        performance_array(matrix.to_numpy(dtype=float)), n_pbo_blocks
    )
    pbo = probability_of_backtest_overfitting(trimmed, n_pbo_blocks, metric=pbo_metric)
    return {
        "pbo": pbo,
        "pbo_threshold": _PBO_THRESHOLD,
        "pbo_source": source,
        "pbo_metric": pbo_metric,
        "pbo_n_blocks": n_pbo_blocks,
        "pbo_rows_dropped": n_dropped,
    }


def _level_columns(grid: _Grid, v: str) -> dict[str, Any]:
    """The variant's own f1_buy level (and expectancy, test rows when present)."""
    vi = grid.idx(v)
    f1 = grid.f1[vi]
    row: dict[str, Any] = {
        "variant": v,
        "loss_function": grid.loss_function[v],
        "is_baseline": v == grid.baseline,
        "n_cells": int(f1.size),
        "f1_buy_mean": float(f1.mean()),
        "f1_buy_median": float(np.median(f1)),
        "f1_buy_fold_var": _fold_var(f1),
    }
    if grid.expectancy is not None:
        exp = grid.expectancy[vi]
        row["expectancy_net_mean"] = (
            float(np.nanmean(exp)) if np.isfinite(exp).any() else float("nan")
        )
    if grid.n_test is not None:
        row["n_test_total"] = float(np.nansum(grid.n_test[vi]))
    return row


def _delta_columns(grid: _Grid, v: str) -> dict[str, Any]:
    delta = grid.delta(v)
    cells = delta.ravel()
    return {
        "mean_delta": float(cells.mean()),
        "median_delta": float(np.median(cells)),
        "fold_var_delta": _fold_var(delta),
    }


def _gate_significance(shared: _Shared, v: str, alpha_fdr: float) -> dict[str, Any]:
    """Gate 1: the best fold's BH-adjusted p and the all-cells BH-adjusted p both <= alpha."""
    vf = shared.folds[shared.folds["variant"] == v]
    best = vf.loc[vf["p_bh"].idxmin()]
    p_cells_bh = shared.cell_p_bh[v]
    return {
        "p_fold_min": float(vf["p"].min()),
        "p_fold_min_bh": float(best["p_bh"]),
        "best_fold": _py(best["fold"]),
        "p_cells": shared.cell_tests[v].pvalue,
        "p_cells_bh": float(p_cells_bh),
        "p_cells_wilcoxon": wilcoxon_greater(shared.grid.delta(v).ravel()),
        "alpha_fdr": alpha_fdr,
        "gate_significance": _pass(bool(best["p_bh"] <= alpha_fdr and p_cells_bh <= alpha_fdr)),
    }


def _gate_bootstrap_ci(shared: _Shared, v: str) -> dict[str, Any]:
    """Gate 2: the percentile bootstrap CI of the mean cell delta lies above 0."""
    cells = shared.grid.delta(v).ravel()
    lo, hi = paired_bootstrap_ci(cells, n_resamples=shared.n_resamples, seed=shared.seed)
    return {"ci_lo": lo, "ci_hi": hi, "ci_threshold": 0.0, "gate_bootstrap_ci": _pass(lo > 0.0)}


def _gate_effect_size(grid: _Grid, v: str) -> dict[str, Any]:
    """Gate 3: Cohen's d_av of the cells >= the threshold (d_z reported)."""
    d = cohens_d(grid.f1[grid.idx(v)].ravel(), grid.f1[0].ravel())
    return {
        "d_z": d["d_z"],
        "d_av": d["d_av"],
        "d_magnitude": d["magnitude"],
        "d_threshold": _EFFECT_SIZE_THRESHOLD,
        "gate_effect_size": _pass(d["d_av"] >= _EFFECT_SIZE_THRESHOLD),
    }


def _gate_per_asset(shared: _Shared, v: str, min_improving_fraction: float) -> dict[str, Any]:
    """Gate 4: at least ``ceil(fraction x cryptos)`` cryptos improve (median delta > 0)."""
    n_cryptos = len(shared.grid.cryptos)
    required = math.ceil(min_improving_fraction * n_cryptos - 1e-9)
    va = shared.assets[shared.assets["variant"] == v]
    n_improving = int(va["improves"].sum())
    return {
        "n_cryptos": n_cryptos,
        "n_cryptos_improving": n_improving,
        "n_cryptos_required": required,
        "cryptos_improving": ",".join(va.loc[va["improves"], "crypto"]),
        "gate_per_asset": _pass(n_improving >= required),
    }


def _gate_ece(shared: _Shared, v: str, method: str, ece_tolerance: float) -> dict[str, Any]:
    """Gate 5: every calibration method's mean ECE difference (and its bootstrap CI) is
    reported; the primary ``method``'s point estimate <= ``ece_tolerance`` gates."""
    grid = shared.grid
    vi = grid.idx(v)
    row: dict[str, Any] = {}
    for m in ECE_METHODS:
        diff = (grid.ece[m][vi] - grid.ece[m][0]).ravel()
        m_lo, m_hi = paired_bootstrap_ci(diff, n_resamples=shared.n_resamples, seed=shared.seed)
        row[f"ece_delta_{m}"] = float(diff.mean())
        row[f"ece_delta_{m}_lo"] = m_lo
        row[f"ece_delta_{m}_hi"] = m_hi
        row[f"ece_pass_{m}"] = _pass(float(diff.mean()) <= ece_tolerance)
    return {
        **row,
        "ece_method": method,
        "ece_variant": float(grid.ece[method][vi].mean()),
        "ece_baseline": float(grid.ece[method][0].mean()),
        "ece_delta": row[f"ece_delta_{method}"],
        "ece_delta_lo": row[f"ece_delta_{method}_lo"],
        "ece_delta_hi": row[f"ece_delta_{method}_hi"],
        "ece_tolerance": ece_tolerance,
        "gate_ece": row[f"ece_pass_{method}"],
    }


def _gate_pbo(pbo: float) -> dict[str, Any]:
    """Gate 6: PBO below its threshold."""
    return {"gate_pbo": _pass(pbo < _PBO_THRESHOLD)}


def _typed_verdicts(out: pd.DataFrame) -> pd.DataFrame:
    """Gate columns as strings, crypto counts as nullable ints, ``lock`` as nullable bool."""
    for col in (*GATE_COLUMNS, *(f"ece_pass_{m}" for m in ECE_METHODS)):
        out[col] = out[col].astype("string")
    for col in ("n_cryptos", "n_cryptos_improving", "n_cryptos_required"):
        out[col] = out[col].astype("Int64")
    out["lock"] = out["lock"].astype("boolean")
    return out


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "n/a"
    return format(x, spec)


#: (key, heading) of each column of the verdict table, in display order
VERDICT_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("variant", "variant"),
    ("lock", "lock"),
    ("significance", "significance (min p_BH fold / p_BH cells; both <= 0.05 to pass)"),
    ("bootstrap_ci", "bootstrap 95% CI of mean delta f1_buy"),
    ("cohens_d", "Cohen's d_av"),
    ("cryptos_improving", "cryptos improving"),
    ("delta_ece_hold", "delta ECE_HOLD"),
    ("pbo", "PBO"),
)


def gate_verdict_rows(verdicts: pd.DataFrame) -> list[dict[str, str]]:
    """One display row per variant (keys of :data:`VERDICT_TABLE_COLUMNS`): each gate's
    figure with PASS/FAIL and the lock decision, as text. Validates ``verdicts``."""
    need = ("variant", "is_baseline", "lock", *GATE_COLUMNS)
    if not isinstance(verdicts, pd.DataFrame):
        raise TypeError(f"verdicts must be a pandas DataFrame; got {type(verdicts).__name__}")
    missing = [c for c in need if c not in verdicts.columns]
    if missing:
        raise ValueError(f"verdicts is missing column(s) {missing}; pass evaluate_gates() output")
    rows: list[dict[str, str]] = []
    for _, r in verdicts.iterrows():
        name = str(r["variant"])
        if bool(r["is_baseline"]):
            f1 = _fmt(r.get("f1_buy_mean"), ".4f")
            rows.append(
                {
                    "variant": name,
                    "lock": "reference",
                    "significance": f"f1_buy mean {f1}",
                    "bootstrap_ci": "-",
                    "cohens_d": "-",
                    "cryptos_improving": "-",
                    "delta_ece_hold": "-",
                    "pbo": _fmt(r.get("pbo"), ".3f"),
                }
            )
            continue
        rows.append(
            {
                "variant": name,
                "lock": "LOCK" if bool(r["lock"]) else "no",
                "significance": f"{_fmt(r['p_fold_min_bh'], '.3g')} / "
                f"{_fmt(r['p_cells_bh'], '.3g')} {r['gate_significance']}",
                "bootstrap_ci": f"{_fmt(r['mean_delta'], '+.4f')} [{_fmt(r['ci_lo'], '+.4f')}, "
                f"{_fmt(r['ci_hi'], '+.4f')}] {r['gate_bootstrap_ci']}",
                "cohens_d": f"{_fmt(r['d_av'], '.2f')} ({r['d_magnitude']}) "
                f"{r['gate_effect_size']}",
                "cryptos_improving": f"{int(r['n_cryptos_improving'])}/{int(r['n_cryptos'])} "
                f"(need {int(r['n_cryptos_required'])}) {r['gate_per_asset']}",
                "delta_ece_hold": f"{_fmt(r['ece_delta'], '+.4f')} ({r['ece_method']}, tol "
                f"{r['ece_tolerance']}) {r['gate_ece']}",
                "pbo": f"{_fmt(r['pbo'], '.3f')} {r['gate_pbo']}",
            }
        )
    return rows


#: the Markdown table's columns, narrow: what a reader needs first on the left (the variant,
#: the lock, which gates failed, the effect and its p-values), short headers (the legend
#: below the table spells them out)
MARKDOWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("variant", "variant"),
    ("lock", "lock"),
    ("failed", "failed gates"),
    ("bootstrap_ci", "Δ f1_buy [95% CI]"),
    ("significance", "p_BH fold / cells"),
    ("cohens_d", "d_av"),
    ("cryptos_improving", "cryptos up"),
    ("delta_ece_hold", "Δ ECE_HOLD"),
    ("pbo", "PBO"),
)
_GATE_SHORT = {
    "gate_significance": "p",
    "gate_bootstrap_ci": "CI",
    "gate_effect_size": "d",
    "gate_per_asset": "cryptos",
    "gate_ece": "ECE",
    "gate_pbo": "PBO",
}


def gate_verdicts_markdown(verdicts: pd.DataFrame) -> str:
    """Render :func:`evaluate_gates` output as a narrow GitHub-flavoured Markdown table.

    One line per variant (:data:`MARKDOWN_COLUMNS`): the variant, the lock decision, the
    failed gates by short name, then each gate's figure with PASS/FAIL (from
    :func:`gate_verdict_rows`); then a legend of the columns and the PBO source note.
    """
    rows = gate_verdict_rows(verdicts)
    header = [h for _, h in MARKDOWN_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, (_, r) in zip(rows, verdicts.iterrows(), strict=True):
        failed = [short for g, short in _GATE_SHORT.items() if str(r.get(g)) == "FAIL"]
        row = {**row, "failed": "-" if bool(r["is_baseline"]) else ", ".join(failed) or "none"}
        cells = [row[k].replace("|", "\\|") for k, _ in MARKDOWN_COLUMNS]
        if cells[1] == "LOCK":
            cells[1] = "**LOCK**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Gates: p = significance (min p_BH over folds and p_BH over cells, both <= 0.05); "
        "CI = bootstrap 95% CI of the mean delta f1_buy above 0; d = Cohen's d_av; cryptos = "
        "cryptos improving; ECE = delta ECE_HOLD within tolerance; PBO = probability of "
        "backtest overfitting. LOCK when every gate passes."
    )
    first = verdicts.iloc[0]
    if "pbo_source" in verdicts.columns:
        lines.append("")
        lines.append(
            f"PBO by CSCV on {first['pbo_source']} ({first['pbo_metric']}, "
            f"{first['pbo_n_blocks']} blocks, {first['pbo_rows_dropped']} oldest rows dropped)."
        )
    return "\n".join(lines) + "\n"


def verdict_table_problems(
    verdicts: pd.DataFrame, variant_names: Sequence[str], *, baseline: str
) -> list[str]:
    """What is wrong with a verdict table (empty list: well formed).

    Well formed: exactly one row per variant of ``variant_names``; for every non-baseline
    row, each gate of :data:`GATE_COLUMNS` is ``"PASS"`` or ``"FAIL"`` and ``lock`` is True
    exactly when all of them pass. Whether any variant is locked is not a problem.
    """
    problems: list[str] = []
    have = [str(v) for v in verdicts["variant"]]
    if sorted(have) != sorted(map(str, variant_names)):
        problems.append(f"variants {sorted(have)} != definition {sorted(map(str, variant_names))}")
    for row in verdicts.to_dict("records"):
        if str(row["variant"]) == baseline:
            continue
        gates = {g: row.get(g) for g in GATE_COLUMNS}
        bad = {g: v for g, v in gates.items() if v not in ("PASS", "FAIL")}
        if bad:
            problems.append(f"{row['variant']}: gates without a verdict {bad}")
        expected = all(v == "PASS" for v in gates.values())
        lock = row.get("lock")
        if lock is None or pd.isna(lock) or bool(lock) != expected:
            problems.append(f"{row['variant']}: lock={lock} but all gates pass={expected}")
    return problems
