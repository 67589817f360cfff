"""Tests for cvn_assets.ablation.gates against statsmodels/scipy and hand-checked numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cvn_assets.ablation import gates
from cvn_assets.ablation.gates import (
    ECE_METHODS,
    GATE_COLUMNS,
    evaluate_gates,
    fold_tests,
    gate_verdicts_markdown,
    pbo_performance_matrix,
    per_asset_breakdown,
)
from cvn_assets.ablation.stats import (
    benjamini_hochberg,
    cohens_d,
    cscv_logits,
    effect_size_label,
    paired_bootstrap_ci,
    paired_t_test_greater,
    probability_of_backtest_overfitting,
    trim_for_cscv,
)

CRYPTOS = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
FOLDS = (0, 1, 2, 3, 4)
N_BOOT = 2000  # bootstrap resamples in evaluate_gates tests (speed)


# --------------------------------------------------------------------------------------------
# synthetic finetune_results
# --------------------------------------------------------------------------------------------
def make_results(
    shifts: dict[str, float | dict[str, float]],
    *,
    ece_shift: dict[str, dict[str, float]] | None = None,
    noise: float = 0.01,
    seed: int = 1,
) -> pd.DataFrame:
    """125-row style frame; ``shifts[v]`` is the f1_buy gain over baseline (per crypto if dict).

    Baseline f1_buy = 0.40 + 0.03 * fold + crypto offset; every variant shares that structure
    (so deltas are small noise around the shift, as with paired trainings on the same data).
    """
    rng = np.random.default_rng(seed)
    ece_shift = ece_shift or {}
    rows = []
    for v, shift in {"baseline": 0.0, **shifts}.items():
        for f in FOLDS:
            for ci, c in enumerate(CRYPTOS):
                gain = shift[c] if isinstance(shift, dict) else shift
                row = {
                    "crypto": c,
                    "fold": f,
                    "variant": v,
                    "loss_function": "binary:logistic" if v == "baseline" else "focal",
                    "f1_buy": 0.40 + 0.03 * f + 0.02 * ci + gain + rng.normal(0.0, noise),
                    "expectancy_net": 0.001 + rng.normal(0.0, 1e-4),
                    "n_test": 1500,
                }
                for m in ECE_METHODS:
                    extra = ece_shift.get(v, {}).get(m, 0.0)
                    row[f"ece_hold_{m}"] = 0.03 + extra + rng.normal(0.0, 0.002)
                rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_bh_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 15), rng.uniform(0, 0.01, 5)])
    p[3] = p[4]  # a tie
    p[0] = 1.0
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=0, atol=1e-15)


def test_bh_hand_checked_and_keeps_shape() -> None:
    # sorted p = .01 .03 .04 .2, m = 4 -> p*m/k = .04 .06 .0533 .2; running min from the top:
    # .04 .0533 .0533 .2; back in input order:
    p = np.array([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    grid = np.linspace(0.001, 0.2, 20).reshape(4, 5)  # variants x folds family
    out = benjamini_hochberg(grid)
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out.ravel(), multipletests(grid.ravel(), method="fdr_bh")[1])


@pytest.mark.parametrize(
    ("bad", "match"),
    [([], "empty"), ([0.1, np.nan], r"pvalues\[1\]"), ([0.2, 1.5], r"pvalues\[1\].*1.5")],
)
def test_bh_rejects_bad_input(bad: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        benjamini_hochberg(bad)


# --------------------------------------------------------------------------------------------
# paired test
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_t_test_matches_scipy_ttest_rel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    control = rng.uniform(0.3, 0.6, 5)
    treatment = control + rng.normal(0.01, 0.02, 5)
    ref = stats.ttest_rel(treatment, control, alternative="greater")
    got = paired_t_test_greater(treatment - control)
    assert got.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert got.df == 4


def test_wilcoxon_floor_is_why_a_t_test_is_used() -> None:
    """The fact behind the test choice: n = 5 Wilcoxon cannot pass BH over 20 tests at 0.05."""
    deltas = np.array([0.01, 0.02, 0.03, 0.04, 0.05])  # the best case: all positive
    assert stats.wilcoxon(deltas).pvalue == pytest.approx(0.0625)
    assert stats.wilcoxon(deltas, alternative="greater").pvalue == pytest.approx(0.03125)
    assert benjamini_hochberg(np.full(20, 0.0625)).min() > 0.05
    # the one-sided t-test on the same deltas: t = 0.03 / (0.0158/sqrt5) = 4.243, 4 df
    p = paired_t_test_greater(deltas).pvalue
    assert p == pytest.approx(stats.t.sf(4.242640687, 4))
    assert benjamini_hochberg(np.full(20, p)).max() < 0.05
    # and with consistent gains it can pass even as the only discovery among 20 (p <= .05/20)
    tight = np.array([0.030, 0.031, 0.029, 0.030, 0.032])
    assert paired_t_test_greater(tight).pvalue < 0.05 / 20


@pytest.mark.parametrize(
    ("deltas", "p", "tag"),
    [
        ([-0.02] * 5, 1.0, "<= 0"),
        ([0.0] * 5, 1.0, "<= 0"),
        ([0.02] * 5, 1 / 32, "sign test"),
        # float noise: 0.3 - 0.1 - 0.2 style deltas are "equal"
        (np.array([0.3, 0.3, 0.3]) - np.array([0.1, 0.2, 0.0]) - [0.2, 0.1, 0.3], 1.0, "<= 0"),
    ],
)
def test_t_test_zero_variance(deltas: list[float], p: float, tag: str) -> None:
    res = paired_t_test_greater(deltas)
    assert res.pvalue == pytest.approx(p)
    assert tag in res.method


@pytest.mark.parametrize(("bad", "match"), [([0.1], "at least 2"), ([0.1, np.inf], r"deltas\[1\]")])
def test_t_test_rejects_bad_input(bad: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_t_test_greater(bad)


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------
def test_bootstrap_ci_matches_hand_rolled_percentile_bootstrap() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.03, 25)
    lo, hi = paired_bootstrap_ci(d, n_resamples=20_000, seed=0)
    # independent percentile bootstrap with its own generator
    idx = np.random.default_rng(99).integers(0, d.size, size=(200_000, d.size))
    means = d[idx].mean(axis=1)
    ref_lo, ref_hi = np.quantile(means, [0.025, 0.975])
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert lo == pytest.approx(ref_lo, abs=0.05 * se)
    assert hi == pytest.approx(ref_hi, abs=0.05 * se)
    # and close to the normal-theory t interval (bootstrap is a bit narrower: sd with ddof=0)
    half = stats.t.ppf(0.975, d.size - 1) * se
    assert (hi - lo) == pytest.approx(2 * half, rel=0.12)


def test_bootstrap_ci_seeded_and_degenerate() -> None:
    d = np.random.default_rng(5).normal(0.0, 1.0, 10)
    assert paired_bootstrap_ci(d, seed=1) == paired_bootstrap_ci(d, seed=1)
    assert paired_bootstrap_ci(d, seed=1) != paired_bootstrap_ci(d, seed=2)
    assert paired_bootstrap_ci([0.01] * 5) == (0.01, 0.01)  # BCa would be NaN here


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"confidence": 1.5}, "confidence"),
        ({"n_resamples": 10}, "n_resamples"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bootstrap_ci_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_bootstrap_ci([0.1, 0.2, 0.3], **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Cohen's d
# --------------------------------------------------------------------------------------------
def test_cohens_d_hand_checked() -> None:
    control = [1, 2, 3, 4, 5]
    treatment = [2, 4, 4, 6, 6]
    # diff = 1 2 1 2 1: mean 1.4, var = (3*.16 + 2*.36)/4 = 0.3  -> d_z = 1.4/sqrt(.3) = 2.5560
    # sd(control) = sqrt(10/4) = 1.5811, sd(treatment) = sqrt(11.2/4) = 1.6733
    # d_av = 1.4 / ((1.5811 + 1.6733) / 2) = 0.8604 -> "large"
    d = cohens_d(treatment, control)
    assert d["mean_delta"] == pytest.approx(1.4)
    assert d["d_z"] == pytest.approx(2.5560, abs=1e-4)
    assert d["d_av"] == pytest.approx(0.8604, abs=1e-4)
    assert d["magnitude"] == "large"


def test_cohens_d_zero_spread_and_errors() -> None:
    assert cohens_d([1.0, 2.0], [1.0, 2.0])["d_z"] == 0.0
    assert cohens_d([2.0, 3.0], [1.0, 2.0])["d_z"] == math.inf
    with pytest.raises(ValueError, match="paired"):
        cohens_d([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("d", "label"),
    [(0.0, "negligible"), (0.19, "negligible"), (0.2, "small"), (-0.3, "small"), (0.5, "medium")]
    + [(0.79, "medium"), (0.8, "large"), (-2.0, "large")],
)
def test_effect_size_label(d: float, label: str) -> None:
    assert effect_size_label(d) == label


# --------------------------------------------------------------------------------------------
# PBO / CSCV
# --------------------------------------------------------------------------------------------
WORKED = [[7, 1, 0], [7, 1, 7], [3, 5, 9], [9, 4, 2]]


def test_pbo_worked_example() -> None:
    # 4 blocks of one row, N = 3 columns; IS halves and column means:
    # IS{0,1} [7,1,3.5] best c0; OOS{2,3} [6,4.5,5.5] c0 rank 3 -> logit(3/4) =  ln 3
    # IS{0,2} [5,3,4.5] best c0; OOS{1,3} [8,2.5,4.5] c0 rank 3 -> ln 3
    # IS{0,3} [8,2.5,1] best c0; OOS{1,2} [5,3,8]     c0 rank 2 -> logit(2/4) = 0  (counts)
    # IS{1,2} [5,3,8]   best c2; OOS{0,3} [8,2.5,1]   c2 rank 1 -> logit(1/4) = -ln 3 (counts)
    # IS{1,3} [8,2.5,4.5] best c0; OOS{0,2} [5,3,4.5] c0 rank 3 -> ln 3
    # IS{2,3} [6,4.5,5.5] best c0; OOS{0,1} [7,1,3.5] c0 rank 3 -> ln 3
    # PBO = #(logit <= 0) / 6 = 2/6 = 1/3
    ln3 = math.log(3)
    np.testing.assert_allclose(cscv_logits(WORKED, 4), [ln3, ln3, 0.0, -ln3, ln3, ln3], atol=1e-12)
    assert probability_of_backtest_overfitting(WORKED, 4) == pytest.approx(1 / 3)


def _brute_force_pbo_logits(m: np.ndarray, s: int, metric: str) -> list[float]:
    """Reference CSCV written with plain loops, independent of the vectorised code."""
    t, n = m.shape
    size = t // s
    out = []
    for is_blocks in itertools.combinations(range(s), s // 2):
        is_rows = [r for b in is_blocks for r in range(b * size, (b + 1) * size)]
        oos_rows = [r for r in range(t) if r not in is_rows]

        def perf(rows: list[int], col: int) -> float:
            x = [float(m[r, col]) for r in rows]
            mu = sum(x) / len(x)
            if metric == "mean":
                return mu
            sd = math.sqrt(sum((v - mu) ** 2 for v in x) / (len(x) - 1))
            return mu / sd

        is_perf = [perf(is_rows, c) for c in range(n)]
        best = max(range(n), key=lambda c: (is_perf[c], -c))  # first of the maxima
        oos = [perf(oos_rows, c) for c in range(n)]
        below = sum(1 for c in range(n) if oos[c] < oos[best])
        ties = sum(1 for c in range(n) if oos[c] == oos[best]) - 1
        rank = 1 + below + ties / 2
        w = rank / (n + 1)
        out.append(math.log(w / (1 - w)))
    return out


@pytest.mark.parametrize(
    ("seed", "t", "n", "s", "metric"),
    [(0, 12, 4, 4, "mean"), (1, 24, 5, 6, "mean"), (2, 16, 3, 8, "sharpe"), (3, 10, 6, 2, "mean")]
    + [(4, 40, 5, 8, "sharpe")],
)
def test_pbo_matches_brute_force(seed: int, t: int, n: int, s: int, metric: str) -> None:
    m = np.random.default_rng(seed).normal(0, 1, (t, n))
    expected = _brute_force_pbo_logits(m, s, metric)
    np.testing.assert_allclose(cscv_logits(m, s, metric=metric), expected, atol=1e-12)  # type: ignore[arg-type]
    pbo = probability_of_backtest_overfitting(m, s, metric=metric)  # type: ignore[arg-type]
    assert pbo == pytest.approx(np.mean(np.asarray(expected) <= 0))


def test_pbo_extremes() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(0, 1, (16, 4))
    m[:, 2] += 10  # dominant everywhere: always best IS and best OOS
    assert probability_of_backtest_overfitting(m, 4) == 0.0
    # regime flip: col 0 best then worst, col 1 worst then best -> IS winner is OOS loser
    flip = np.array([[3, 0, 1, 2]] * 4 + [[0, 3, 1, 2]] * 4, dtype=float)
    assert probability_of_backtest_overfitting(flip, 2) == 1.0


def test_pbo_input_errors_and_trim() -> None:
    m = np.arange(30, dtype=float).reshape(10, 3)
    with pytest.raises(ValueError, match="not divisible"):
        cscv_logits(m, 4)
    with pytest.raises(ValueError, match="even"):
        cscv_logits(m, 5)
    with pytest.raises(ValueError, match="at least 12 rows"):
        cscv_logits(m, 12)
    with pytest.raises(ValueError, match="2 columns"):
        cscv_logits(m[:, :1], 2)
    bad = m.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"performance\[2, 1\]"):
        cscv_logits(bad, 2)
    with pytest.raises(ValueError, match="'mean' or 'sharpe'"):
        cscv_logits(m, 2, metric="median")  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="dropped the first 2 of 10 rows"):
        trimmed, dropped = trim_for_cscv(m, 4)
    assert dropped == 2
    np.testing.assert_array_equal(trimmed, m[2:])  # the oldest rows go


# --------------------------------------------------------------------------------------------
# evaluate_gates
# --------------------------------------------------------------------------------------------
SHIFTS: dict[str, float | dict[str, float]] = {
    "focal_win": 0.05,
    "focal_lose": -0.05,
    "focal_badece": 0.05,
    "focal_three": {"BTCUSDC": 0.05, "ETHUSDC": 0.05, "SOLUSDC": 0.05}
    | {"BNBUSDC": -0.04, "XRPUSDC": -0.04},
}
ECE_SHIFT = {"focal_badece": {"temperature": 0.04, "none": 0.04, "platt": 0.04}}


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return make_results(SHIFTS, ece_shift=ECE_SHIFT)


@pytest.fixture(scope="module")
def verdicts(results: pd.DataFrame) -> pd.DataFrame:
    return evaluate_gates(results, n_resamples=N_BOOT)


def _row(verdicts: pd.DataFrame, variant: str) -> pd.Series:
    return verdicts.set_index("variant").loc[variant]


def test_verdicts_shape_and_baseline_row(verdicts: pd.DataFrame) -> None:
    assert list(verdicts["variant"]) == [
        "baseline",
        "focal_badece",
        "focal_lose",
        "focal_three",
        "focal_win",
    ]
    base = _row(verdicts, "baseline")
    assert all(pd.isna(base[g]) for g in GATE_COLUMNS)
    assert pd.isna(base["lock"])
    assert base["mean_delta"] == 0.0 and base["fold_var_delta"] == 0.0
    assert base["f1_buy_mean"] == pytest.approx(0.40 + 0.03 * 2 + 0.02 * 2, abs=0.01)


def test_clear_winner_locks_and_clear_loser_fails(verdicts: pd.DataFrame) -> None:
    win = _row(verdicts, "focal_win")
    assert [win[g] for g in GATE_COLUMNS] == ["PASS"] * 6
    assert bool(win["lock"]) is True
    assert win["n_cryptos_improving"] == 5 and win["n_cryptos_required"] == 4
    lose = _row(verdicts, "focal_lose")
    assert [lose[g] for g in GATE_COLUMNS[:4]] == ["FAIL"] * 4
    assert lose["ci_hi"] < 0 and lose["d_av"] < -0.8
    assert bool(lose["lock"]) is False


def test_only_the_failing_gate_fails(verdicts: pd.DataFrame) -> None:
    bad_ece = _row(verdicts, "focal_badece")
    assert bad_ece["gate_ece"] == "FAIL" and bool(bad_ece["lock"]) is False
    assert [bad_ece[g] for g in GATE_COLUMNS if g != "gate_ece"] == ["PASS"] * 5
    assert bad_ece["ece_delta"] == pytest.approx(0.04, abs=0.003)
    assert bad_ece["ece_delta_lo"] < bad_ece["ece_delta"] < bad_ece["ece_delta_hi"]
    assert bad_ece["ece_pass_isotonic"] == "PASS"  # only 3 methods got worse
    three = _row(verdicts, "focal_three")
    assert three["n_cryptos_improving"] == 3
    assert three["gate_per_asset"] == "FAIL" and bool(three["lock"]) is False
    assert three["cryptos_improving"] == "BTCUSDC,ETHUSDC,SOLUSDC"


def test_significance_figures_match_scipy_and_statsmodels(
    results: pd.DataFrame, verdicts: pd.DataFrame
) -> None:
    wide = results.pivot_table(index=["fold", "crypto"], columns="variant", values="f1_buy")
    focal = ["focal_badece", "focal_lose", "focal_three", "focal_win"]
    fold_p = {
        (v, f): stats.ttest_rel(
            wide.loc[f, v].to_numpy(), wide.loc[f, "baseline"].to_numpy(), alternative="greater"
        ).pvalue
        for v in focal
        for f in FOLDS
    }
    adjusted = dict(
        zip(fold_p, multipletests(list(fold_p.values()), method="fdr_bh")[1], strict=True)
    )
    cell_p = [
        stats.ttest_rel(wide[v], wide["baseline"], alternative="greater").pvalue for v in focal
    ]
    cell_p_bh = multipletests(cell_p, method="fdr_bh")[1]
    for i, v in enumerate(focal):
        row = _row(verdicts, v)
        assert row["p_fold_min_bh"] == pytest.approx(min(adjusted[(v, f)] for f in FOLDS))
        assert row["p_cells"] == pytest.approx(cell_p[i])
        assert row["p_cells_bh"] == pytest.approx(cell_p_bh[i])
        delta = (wide[v] - wide["baseline"]).to_numpy()
        assert row["mean_delta"] == pytest.approx(delta.mean())
        # d_av by hand on the 25 cells
        sd_av = (wide[v].std(ddof=1) + wide["baseline"].std(ddof=1)) / 2
        assert row["d_av"] == pytest.approx(delta.mean() / sd_av)
        assert row["d_z"] == pytest.approx(delta.mean() / delta.std(ddof=1))
        assert (row["ci_lo"], row["ci_hi"]) == paired_bootstrap_ci(delta, n_resamples=2000)
        # per-fold variance next to the median: variance over folds of per-fold mean delta
        per_fold = (wide[v] - wide["baseline"]).groupby(level="fold").mean()
        assert row["fold_var_delta"] == pytest.approx(per_fold.var(ddof=1))


def test_fold_tests_and_per_asset_tables(results: pd.DataFrame) -> None:
    ft = fold_tests(results)
    assert len(ft) == 4 * 5
    np.testing.assert_allclose(ft["p_bh"], multipletests(ft["p"], method="fdr_bh")[1])
    pa = per_asset_breakdown(results)
    assert len(pa) == 4 * 5
    three = pa[pa["variant"] == "focal_three"].set_index("crypto")
    assert three["improves"].to_dict() == {
        "BNBUSDC": False,
        "BTCUSDC": True,
        "ETHUSDC": True,
        "SOLUSDC": True,
        "XRPUSDC": False,
    }
    cell = results.query("variant == 'focal_three' and crypto == 'BNBUSDC'").sort_values("fold")
    base = results.query("variant == 'baseline' and crypto == 'BNBUSDC'").sort_values("fold")
    d = cell["f1_buy"].to_numpy() - base["f1_buy"].to_numpy()
    assert three.loc["BNBUSDC", "median_delta"] == pytest.approx(np.median(d))
    assert three.loc["BNBUSDC", "var_delta"] == pytest.approx(np.var(d, ddof=1))


def test_min_improving_fraction_and_primary_calibration(results: pd.DataFrame) -> None:
    v = evaluate_gates(results, min_improving_fraction=0.6, n_resamples=N_BOOT)
    assert _row(v, "focal_three")["n_cryptos_required"] == 3
    assert _row(v, "focal_three")["gate_per_asset"] == "PASS"
    # focal_badece only kept isotonic calibration intact: gating on it passes the ECE gate
    v = evaluate_gates(
        results, primary_calibration={"focal_badece": "isotonic"}, n_resamples=N_BOOT
    )
    row = _row(v, "focal_badece")
    assert row["ece_method"] == "isotonic" and row["gate_ece"] == "PASS"
    assert bool(row["lock"]) is True
    assert _row(v, "focal_win")["ece_method"] == "temperature"


def test_verdicts_do_not_depend_on_row_order(results: pd.DataFrame) -> None:
    shuffled = results.sample(frac=1.0, random_state=4).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        evaluate_gates(shuffled, n_resamples=N_BOOT), evaluate_gates(results, n_resamples=N_BOOT)
    )


def test_pbo_default_uses_f1_cells(results: pd.DataFrame, verdicts: pd.DataFrame) -> None:
    matrix, source = pbo_performance_matrix(results)
    assert matrix.shape == (25, 5) and "f1_buy" in source
    assert list(matrix.index[:2]) == [(0, "BNBUSDC"), (0, "BTCUSDC")]
    expected = probability_of_backtest_overfitting(matrix.to_numpy()[1:], 8)  # 25 % 8 = 1
    row = _row(verdicts, "focal_win")
    assert row["pbo"] == expected and row["pbo_rows_dropped"] == 1
    assert row["pbo_source"] == source


def test_pbo_from_oos_returns_can_fail_the_lock(results: pd.DataFrame) -> None:
    variants = ["baseline", "focal_badece", "focal_lose", "focal_three", "focal_win"]
    # first half: focal_win best, focal_lose worst; second half: the reverse -> PBO = 1
    first = dict(zip(variants, [0.0, 0.1, -1.0, 0.2, 1.0], strict=True))
    second = dict(zip(variants, [0.0, 0.1, 1.0, 0.2, -1.0], strict=True))
    rows = [
        {"period": p, "variant": v, "net_return": (first if p < 4 else second)[v]}
        for p in range(8)
        for v in variants
    ]
    oos = pd.DataFrame(rows)
    v = evaluate_gates(results, oos_returns=oos, n_pbo_blocks=2, n_resamples=N_BOOT)
    win = _row(v, "focal_win")
    assert win["pbo"] == 1.0 and win["gate_pbo"] == "FAIL" and bool(win["lock"]) is False
    assert "oos_returns" in win["pbo_source"] and win["pbo_rows_dropped"] == 0
    with pytest.raises(ValueError, match=r"no row for cell \(period=3, variant='focal_three'\)"):
        evaluate_gates(results, oos_returns=oos.drop(index=18), n_pbo_blocks=2, n_resamples=N_BOOT)
    with pytest.raises(ValueError, match="missing \\['focal_win'\\]"):
        evaluate_gates(results, oos_returns=oos[oos["variant"] != "focal_win"], n_resamples=N_BOOT)


def _drop_cell(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(df.query("variant=='focal_win' and crypto=='SOLUSDC' and fold==3").index)


def _nan_f1(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["variant"] == "focal_lose") & (out["fold"] == 2), "f1_buy"] = np.nan
    return out


def _mixed_loss(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["variant"] == "focal_win") & (out["fold"] == 0), "loss_function"] = "other"
    return out


def _out_of_range(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[0, "ece_hold_platt"] = 1.5
    return out


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns=["ece_hold_platt"]), r"missing column\(s\) \['ece_hold_platt'\]"),
        (lambda d: d[d["variant"] != "baseline"], "baseline variant 'baseline' not found"),
        (
            _drop_cell,
            r"incomplete grid.*\(variant='focal_win', crypto='SOLUSDC', fold=3\)",
        ),
        (_nan_f1, r"'f1_buy' is NaN at cell \(variant='focal_lose', crypto='BTCUSDC', fold=2\)"),
        (lambda d: pd.concat([d, d.iloc[[7]]]), "duplicate finetune_results cell"),
        (_mixed_loss, "'loss_function' must be constant per variant"),
        (_out_of_range, r"'ece_hold_platt' at cell .* must be in \[0.0, 1.0\]; got 1.5"),
        (lambda d: d[d["crypto"] == "BTCUSDC"], ">= 2 cryptos"),
        (lambda d: d.iloc[0:0], "empty"),
    ],
)
def test_evaluate_gates_rejects_bad_results(results: pd.DataFrame, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        evaluate_gates(mutate(results), n_resamples=N_BOOT)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha_fdr": 0.0}, "alpha_fdr"),
        ({"min_improving_fraction": 1.2}, "min_improving_fraction"),
        ({"ece_tolerance": -0.01}, "ece_tolerance"),
        ({"n_pbo_blocks": 3}, "n_pbo_blocks"),
        ({"n_pbo_blocks": 26}, "needs at least 26 rows"),
        ({"primary_calibration": "bogus"}, "primary_calibration.*'bogus'"),
        ({"primary_calibration": {"nope": "platt"}}, "unknown variant"),
        ({"baseline": "ce"}, "baseline variant 'ce' not found"),
        ({"pbo_metric": "median"}, "pbo_metric"),
    ],
)
def test_evaluate_gates_rejects_bad_parameters(
    results: pd.DataFrame, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_gates(results, **kwargs)  # type: ignore[arg-type]


def test_evaluate_gates_rejects_non_frame() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        evaluate_gates([{"crypto": "BTCUSDC"}])  # type: ignore[arg-type]


def test_markdown_table(verdicts: pd.DataFrame) -> None:
    md = gate_verdicts_markdown(verdicts)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| variant | lock |")
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + len(verdicts)
    win = next(ln for ln in table if ln.startswith("| focal_win "))
    assert "**LOCK**" in win and "FAIL" not in win and win.count("PASS") == 6
    three = next(ln for ln in table if ln.startswith("| focal_three "))
    assert "3/5 (need 4) FAIL" in three
    # narrow: what a reader needs first on the left, short headers, the legend below
    assert lines[0] == (
        "| variant | lock | failed gates | Δ f1_buy [95% CI] | p_BH fold / cells | d_av "
        "| cryptos up | Δ ECE_HOLD | PBO |"
    )
    assert win.split(" | ")[2] == "none"
    assert "cryptos" in three.split(" | ")[2].split(", ")
    assert any(ln.startswith("Gates: p = significance") for ln in lines)
    assert "dropped" in lines[-1] and "f1_buy" in lines[-1]
    with pytest.raises(ValueError, match="missing column"):
        gate_verdicts_markdown(verdicts.drop(columns=["lock"]))


def test_ece_methods_match_calibration_module() -> None:
    calibration = pytest.importorskip("cvn_assets.ablation.calibration")
    assert tuple(calibration.CALIBRATION_METHODS) == gates.ECE_METHODS


def test_verdict_table_problems_only_flags_malformed_tables() -> None:
    names = ["baseline", "focal_a", "focal_b"]

    def row(variant: str, gates_: str, lock: object) -> dict:
        return {"variant": variant, "lock": lock, **{g: gates_ for g in gates.GATE_COLUMNS}}

    base = {"variant": "baseline", "lock": pd.NA, **{g: pd.NA for g in gates.GATE_COLUMNS}}
    # nothing lockable is a valid outcome: no problem
    ok = pd.DataFrame([base, row("focal_a", "FAIL", False), row("focal_b", "FAIL", False)])
    assert gates.verdict_table_problems(ok, names, baseline="baseline") == []
    locked = pd.DataFrame([base, row("focal_a", "PASS", True), row("focal_b", "FAIL", False)])
    assert gates.verdict_table_problems(locked, names, baseline="baseline") == []
    # lock without every gate passing, a missing variant, a gate without verdict
    bad = pd.DataFrame([base, row("focal_a", "FAIL", True)])
    probs = gates.verdict_table_problems(bad, names, baseline="baseline")
    assert any("focal_b" in p and "definition" in p for p in probs)
    assert any(p.startswith("focal_a: lock=True but all gates pass=False") for p in probs)
    gap = pd.DataFrame([base, row("focal_a", "FAIL", False), row("focal_b", None, False)])
    assert any(
        "gates without a verdict" in p
        for p in gates.verdict_table_problems(gap, names, baseline="baseline")
    )
