"""Purged + embargoed K-fold and the three-way plan: paper cases and a brute-force reference."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.folds import (
    FoldError,
    FoldPlan,
    check_fold_labels,
    leakage_check,
    purged_kfold_splits,
    three_way_fold_plan,
)

# ------------------------------------------------------------------ references


def _overlap(a0, a1, b0, b1) -> bool:  # closed intervals
    return a0 <= b1 and b0 <= a1


def _reference_kfold(t0, t1, n_splits, embargo_pct):
    """The contract written as plain loops (O(n^2)), independent of the implementation."""
    n = len(t0)
    m = int(n * embargo_pct)
    bounds = []
    start = 0
    for k in range(n_splits):  # numpy.array_split sizes: the first n % k blocks get one more
        size = n // n_splits + (1 if k < n % n_splits else 0)
        bounds.append((start, start + size))
        start += size
    out = []
    for s, e in bounds:
        w0, w1 = t0[s], max(t1[s:e])
        purged = [_overlap(t0[j], t1[j], w0, w1) for j in range(n)]
        embargoed = set()
        j = e
        while j < n and purged[j]:
            j += 1
        for q in range(j, min(n, j + m)):
            embargoed.add(q)
        train = [j for j in range(n) if not (s <= j < e) and not purged[j] and j not in embargoed]
        out.append((train, list(range(s, e))))
    return out


def _brute_leaks(t0, t1, a, b) -> list[int]:
    """Rows of ``a`` whose interval overlaps some row of ``b`` (or that are in ``b``)."""
    bs = set(int(x) for x in b)
    return [
        int(i) for i in a if int(i) in bs or any(_overlap(t0[i], t1[i], t0[j], t1[j]) for j in b)
    ]


# ------------------------------------------------------------------ hand-made cases


def test_fixed_length_labels_by_hand() -> None:
    # n = 10, t0 = 0..9, each label spans two bars: t1 = t0 + 2. n_splits = 5 -> blocks of 2 rows;
    # embargo_pct = 0.1 -> int(10 * 0.1) = 1 row.
    t0 = np.arange(10)
    t1 = t0 + 2
    splits = purged_kfold_splits(t0, t1, n_splits=5, embargo_pct=0.1)
    got = [(tr.tolist(), te.tolist()) for tr, te in splits]
    # fold 0: test [0,1], window [0, max(2,3)=3]. Purge rows with t0 <= 3 and t1 >= 0: rows 2, 3.
    #         First survivor after the block: row 4 -> embargo row 4. Train = 5..9.
    # fold 1: test [2,3], window [2, 5]. Purged: row 0 [0,2], 1 [1,3], 4 [4,6], 5 [5,7].
    #         First survivor after the block: 6 -> embargo 6. Train = 7, 8, 9.
    # fold 2: test [4,5], window [4, 7]. Purged: 2 [2,4], 3 [3,5], 6 [6,8], 7 [7,9].
    #         Survivor after: 8 -> embargoed. Train = 0, 1, 9.
    # fold 3: test [6,7], window [6, 9]. Purged: 4, 5, 8 [8,10], 9 [9,11]. No survivor after the
    #         block, so no embargo. Train = 0..3.
    # fold 4: test [8,9], window [8, 11]. Purged: 6 [6,8], 7 [7,9]. Last block: no embargo.
    #         Train = 0..5.
    assert got == [
        ([5, 6, 7, 8, 9], [0, 1]),
        ([7, 8, 9], [2, 3]),
        ([0, 1, 9], [4, 5]),
        ([0, 1, 2, 3], [6, 7]),
        ([0, 1, 2, 3, 4, 5], [8, 9]),
    ]


def test_window_starts_at_first_test_start_not_its_end() -> None:
    # The mlfinlab port starts the test window at t1 of the first test row (here 6 for fold 2 of
    # the case above): row 3, label [3, 5], ends before 6 and would stay in training although it
    # overlaps test row 4's label [4, 6]. The contract window starts at t0 = 4: row 3 is purged.
    t0 = np.arange(10)
    t1 = t0 + 2
    train, test = purged_kfold_splits(t0, t1, n_splits=5, embargo_pct=0.0)[2]
    assert test.tolist() == [4, 5]
    assert 3 not in train and 2 not in train
    assert leakage_check(t0, t1, train, test).ok
    leaky_train = np.array([0, 1, 3, 8, 9])  # what the defective window would keep
    rep = leakage_check(t0, t1, leaky_train, test)
    assert not rep.ok and rep.first_pair == (3, 4) and rep.n_overlaps == 1


def test_variable_length_labels_by_hand() -> None:
    # n = 12, t0 = 0..11; row 0 carries a long label up to 9, the others are short.
    t0 = np.arange(12)
    t1 = np.array([9, 2, 3, 3, 5, 5, 7, 7, 9, 10, 11, 11])
    splits = purged_kfold_splits(t0, t1, n_splits=3, embargo_pct=0.0)
    got = [(tr.tolist(), te.tolist()) for tr, te in splits]
    # blocks [0..3], [4..7], [8..11]
    # fold 0: window [0, max(9,2,3,3) = 9] -- the long label of row 0 sets the end, not the last
    #         row's t1 = 3. Purge rows with t0 <= 9: rows 4..9. Train = 10, 11.
    # fold 1: window [4, 7]. Row 0 [0, 9] overlaps (0 <= 7 and 9 >= 4): purged although far
    #         away; rows 1..3 end before 4; row 8 starts after 7. Train = 1, 2, 3, 8..11.
    # fold 2: window [8, 11]. Row 0 (t1 = 9 >= 8) purged; rows 1..7 end by 7. Train = 1..7.
    assert got == [
        ([10, 11], [0, 1, 2, 3]),
        ([1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7]),
        ([1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11]),
    ]


def test_embargo_counts_from_first_survivor_and_never_before() -> None:
    # n = 20, t0 = 0..19, t1 = t0 + 3, 4 blocks of 5, embargo int(20 * 0.1) = 2 rows.
    t0 = np.arange(20)
    t1 = t0 + 3
    train, test = purged_kfold_splits(t0, t1, n_splits=4, embargo_pct=0.1)[1]
    # fold 1: test 5..9, window [5, 12]. Purged before: rows 2, 3, 4 (t1 = 5, 6, 7 >= 5).
    # Purged after: rows 10, 11, 12 (t0 <= 12). First survivor 13 -> embargo 13, 14.
    # Nothing embargoed before the block: rows 0, 1 stay.
    assert test.tolist() == [5, 6, 7, 8, 9]
    assert train.tolist() == [0, 1, 15, 16, 17, 18, 19]


def test_three_way_plan_by_hand() -> None:
    # n = 20, t0 = 0..19, t1 = t0 + 1; 5 blocks of 4: B0 0-3, B1 4-7, B2 8-11, B3 12-15,
    # B4 16-19; embargo int(20 * 0.05) = 1 row; early_stopping_frac 0.25.
    t0 = np.arange(20)
    t1 = t0 + 1
    plans = three_way_fold_plan(t0, t1, n_splits=5, embargo_pct=0.05, early_stopping_frac=0.25)
    got = {
        p.fold: (
            p.test.tolist(),
            p.calibration.tolist(),
            p.early_stopping.tolist(),
            p.train.tolist(),
        )
        for p in plans
    }
    # fold 0: test B0, window [0, 4]; calibration = B1 (no block before B0). Row 4 [4,5]
    #   overlaps -> purged; first survivor 5 -> embargoed. Calibration = 6, 7.
    #   Train candidates 8..19; calibration window [6, 8]: row 8 purged, row 9 embargoed.
    #   Train before ES = 10..19 (10 rows); ES = ceil(0.25 * 10) = 3 last rows 17, 18, 19;
    #   ES window [17, 20] purges row 16 [16,17]. Train = 10..15.
    # fold 2: test B2, window [8, 12]; calibration = B1, row 7 [7,8] purged -> 4, 5, 6.
    #   Candidates 0-3, 12-19: row 12 purged (t0 12 <= 12), row 13 embargoed; calibration window
    #   [4, 7] purges row 3 [3,4]. Before ES: 0, 1, 2, 14..19 (9 rows); ES = ceil(2.25) = 3:
    #   17, 18, 19, purging row 16. Train = 0, 1, 2, 14, 15.
    # fold 3: test B3, window [12, 16]; calibration = B2, row 11 purged -> 8, 9, 10.
    #   Candidates 0-7, 16-19: row 16 purged, 17 embargoed; calibration window [8, 11] purges
    #   row 7. Before ES: 0..6, 18, 19 (9 rows). ES needs 3 contiguous rows: the last run
    #   (18, 19) is too short, so ES = tail of run 0..6 = 4, 5, 6. Its window [4, 7] purges row 3;
    #   its embargo lands on row 8 (calibration, not train). Train = 0, 1, 2, 18, 19.
    # fold 4: test B4, window [16, 20]; calibration = B3, row 15 purged -> 12, 13, 14.
    #   Candidates 0-11: calibration window [12, 15] purges row 11. Before ES: 0..10 (11 rows);
    #   ES = ceil(2.75) = 3: 8, 9, 10; purges row 7. Train = 0..6.
    assert got[0] == ([0, 1, 2, 3], [6, 7], [17, 18, 19], [10, 11, 12, 13, 14, 15])
    assert got[2] == ([8, 9, 10, 11], [4, 5, 6], [17, 18, 19], [0, 1, 2, 14, 15])
    assert got[3] == ([12, 13, 14, 15], [8, 9, 10], [4, 5, 6], [0, 1, 2, 18, 19])
    assert got[4] == ([16, 17, 18, 19], [12, 13, 14], [8, 9, 10], [0, 1, 2, 3, 4, 5, 6])
    assert [p.calibration_block for p in plans] == [1, 0, 1, 2, 3]


# ------------------------------------------------------------------ random cases vs reference


def _random_labels(rng: np.random.Generator, n: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    t0 = np.cumsum(rng.integers(0, 3, n))  # non-decreasing, with repeated starts
    t1 = t0 + rng.integers(0, max_len + 1, n)  # variable-length labels, some of length 0
    return t0, t1


@pytest.mark.parametrize("seed", range(12))
def test_kfold_matches_reference_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 160))
    n_splits = int(rng.integers(2, 7))
    embargo = float(rng.choice([0.0, 0.01, 0.05, 0.1]))
    t0, t1 = _random_labels(rng, n, int(rng.integers(1, 12)))
    try:
        got = purged_kfold_splits(t0, t1, n_splits=n_splits, embargo_pct=embargo)
    except FoldError:
        ref = _reference_kfold(t0, t1, n_splits, embargo)
        assert any(len(tr) == 0 for tr, _ in ref)  # an error only when a train set is empty
        return
    ref = _reference_kfold(t0, t1, n_splits, embargo)
    assert [(tr.tolist(), te.tolist()) for tr, te in got] == ref
    for train, test in got:
        assert not _brute_leaks(t0, t1, train, test)


@pytest.mark.parametrize("seed", range(8))
def test_three_way_plan_invariants_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(150, 400))
    n_splits = int(rng.integers(3, 7))
    embargo = float(rng.choice([0.0, 0.01, 0.03]))
    t0, t1 = _random_labels(rng, n, int(rng.integers(1, 8)))
    plans = three_way_fold_plan(t0, t1, n_splits=n_splits, embargo_pct=embargo)
    m = int(n * embargo)
    seen_test: list[int] = []
    for p in plans:
        sets = {
            "train": p.train,
            "es": p.early_stopping,
            "cal": p.calibration,
            "test": p.test,
        }
        for name, s in sets.items():
            assert len(s) > 0, name
            assert np.all(np.diff(s) > 0), name  # sorted, unique
        all_rows = np.concatenate(list(sets.values()))
        assert len(np.unique(all_rows)) == len(all_rows)  # disjoint
        # no label overlap, brute force, between any fitting set and any evaluation set
        assert not _brute_leaks(t0, t1, p.train, np.concatenate([p.calibration, p.test]))
        assert not _brute_leaks(t0, t1, p.early_stopping, np.concatenate([p.calibration, p.test]))
        assert not _brute_leaks(t0, t1, p.calibration, p.test)
        assert not _brute_leaks(t0, t1, p.train, p.early_stopping)
        # embargo after the test block: the m rows from the first non-overlapping row after it
        end = p.test[-1] + 1
        w0, w1 = t0[p.test[0]], t1[p.test].max()
        j = end
        while j < n and _overlap(t0[j], t1[j], w0, w1):
            j += 1
        embargoed = set(range(j, min(n, j + m)))
        used = set(p.train) | set(p.early_stopping) | set(p.calibration)
        assert not embargoed & used
        # early stopping is contiguous and calibration is a single block
        assert np.all(np.diff(p.early_stopping) == 1)
        seen_test.extend(p.test.tolist())
        # the leakage_check agrees with the brute force on these sets
        assert leakage_check(t0, t1, p.train, p.test).ok
    assert sorted(seen_test) == list(range(n))  # every row tested exactly once


@pytest.mark.parametrize("seed", range(10))
def test_leakage_check_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 120
    t0, t1 = _random_labels(rng, n, 6)
    train = np.sort(rng.choice(n, size=50, replace=False))
    evaluation = np.sort(rng.choice(n, size=20, replace=False))
    rep = leakage_check(t0, t1, train, evaluation)
    leaks = _brute_leaks(t0, t1, train, evaluation)
    assert rep.n_overlaps == len(leaks)
    assert rep.ok == (not leaks) and bool(rep) == rep.ok
    if leaks:
        i, j = rep.first_pair  # type: ignore[misc]
        assert i == leaks[0]
        assert j in set(evaluation.tolist())
        assert i == j or _overlap(t0[i], t1[i], t0[j], t1[j])


def test_leakage_check_by_hand() -> None:
    t0 = np.array([0, 1, 2, 3, 4])
    t1 = np.array([1, 2, 4, 3, 4])
    # train rows 0 [0,1] and 2 [2,4]; evaluation row 4 [4,4]: row 2 touches it at 4 (closed).
    rep = leakage_check(t0, t1, np.array([0, 2]), np.array([4]))
    assert (rep.ok, rep.n_overlaps, rep.first_pair) == (False, 1, (2, 4))
    # a row in both sets is a leak of itself
    rep = leakage_check(t0, t1, np.array([0, 3]), np.array([3]))
    assert (rep.n_overlaps, rep.first_pair) == (1, (3, 3))
    assert leakage_check(t0, t1, np.array([0]), np.array([3])).ok
    assert leakage_check(t0, t1, np.array([], dtype=int), np.array([3])).ok


# ------------------------------------------------------------------ time types


def test_datetime_inputs_give_the_same_splits_as_integers() -> None:
    idx = pd.date_range("2024-01-01", periods=60, freq="h", tz="UTC", name="open_time")
    horizon = 4
    t1 = pd.Series(list(idx[horizon:]) + [idx[-1]] * horizon, index=idx)
    ints0 = np.arange(60)
    ints1 = np.minimum(ints0 + horizon, 59)
    ref = purged_kfold_splits(ints0, ints1, 5, 0.05)
    for a0, a1 in [
        (idx, t1),  # DatetimeIndex + Series (tz-aware)
        (idx.to_numpy(), t1.to_numpy()),  # object arrays of Timestamps (what .to_numpy() gives)
        (idx.tz_localize(None).to_numpy(), t1.dt.tz_localize(None).to_numpy()),  # datetime64
        (  # object arrays of naive Timestamps
            np.array(list(idx.tz_localize(None)), dtype=object),
            np.array(list(t1.dt.tz_localize(None)), dtype=object),
        ),
    ]:
        got = purged_kfold_splits(a0, a1, 5, 0.05)
        assert [(a.tolist(), b.tolist()) for a, b in got] == [
            (a.tolist(), b.tolist()) for a, b in ref
        ]
        p_dt = three_way_fold_plan(a0, a1)
        p_int = three_way_fold_plan(ints0, ints1)
        assert [p.to_dict() for p in p_dt] == [p.to_dict() for p in p_int]


def test_deterministic_and_serialisable() -> None:
    rng = np.random.default_rng(5)
    t0, t1 = _random_labels(rng, 300, 5)
    a = three_way_fold_plan(t0, t1)
    b = three_way_fold_plan(t0, t1)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    back = [FoldPlan.from_dict(p.to_dict()) for p in a]
    assert [p.to_dict() for p in back] == [p.to_dict() for p in a]
    assert a[0].sizes()["test"] == len(a[0].test)


def test_default_sizes_on_a_realistic_dataset() -> None:
    # 21,700 rows, horizon 4, defaults: 5 folds, 0.5 % embargo (108 rows), 10 % early stopping.
    n = 21_700
    t0 = np.arange(n)
    t1 = np.minimum(t0 + 4, n - 1)
    plans = three_way_fold_plan(t0, t1)
    assert len(plans) == 5
    for p in plans:
        assert len(p.test) == n // 5
        assert p.info["embargo_rows"] == 108
        assert np.all(np.diff(p.early_stopping) == 1)
        # calibration loses exactly its 4 overlapping rows (before test) or 4 + 108 (after)
        lost = 4 if p.calibration_block < p.test_block else 4 + 108
        assert len(p.calibration) == n // 5 - lost


# ------------------------------------------------------------------ bad input


def test_rejects_bad_inputs_with_clear_errors() -> None:
    t0 = np.arange(10)
    t1 = t0 + 1
    with pytest.raises(FoldError, match="empty"):
        purged_kfold_splits(np.array([]), np.array([]))
    with pytest.raises(FoldError, match="too few rows for 5 folds: 3 rows"):
        purged_kfold_splits(t0[:3], t1[:3])
    with pytest.raises(ValueError, match="same length"):
        purged_kfold_splits(t0, t1[:5])
    bad0 = t0.copy()
    bad0[6] = 2
    with pytest.raises(ValueError, match="row 6 has t0=2"):
        purged_kfold_splits(bad0, np.maximum(t1, bad0))
    bad1 = t1.copy()
    bad1[4] = 3
    with pytest.raises(ValueError, match="row 4: label end t1=3 is before its start t0=4"):
        purged_kfold_splits(t0, bad1)
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        purged_kfold_splits(t0, t1, n_splits=1)
    with pytest.raises(ValueError, match="n_splits must be >= 3"):
        three_way_fold_plan(t0, t1, n_splits=2)
    with pytest.raises(ValueError, match="embargo_pct"):
        purged_kfold_splits(t0, t1, embargo_pct=1.5)
    with pytest.raises(ValueError, match="early_stopping_frac"):
        three_way_fold_plan(t0, t1, early_stopping_frac=0.0)
    with pytest.raises(ValueError, match="t1 row 2 is missing"):
        purged_kfold_splits(t0.astype(float), np.where(t0 == 2, np.nan, t1.astype(float)))


def test_labels_spanning_everything_leave_no_train() -> None:
    t0 = np.arange(10)
    t1 = np.full(10, 9)  # every label ends at the last bar: all overlap every block
    with pytest.raises(FoldError, match="fold 0: no training rows"):
        purged_kfold_splits(t0, t1, n_splits=5)
    with pytest.raises(FoldError, match="fold 0"):
        three_way_fold_plan(t0, t1, n_splits=5)


def test_fold_without_buy_labels_is_named() -> None:
    n = 100
    t0 = np.arange(n)
    t1 = t0 + 1
    y = np.zeros(n, dtype=int)
    y[::7] = 1
    y[60:80] = 0  # block 3 (rows 60..79) has no BUY
    # fold 3 tests block 3; fold 4 calibrates on block 3 -> fold 3 is hit first
    with pytest.raises(FoldError, match="fold 3: the test set has zero BUY labels"):
        three_way_fold_plan(t0, t1, labels=y)
    with pytest.raises(FoldError, match="fold 3: the test set has zero BUY labels"):
        purged_kfold_splits(t0, t1, labels=y)
    plans = three_way_fold_plan(t0, t1)
    with pytest.raises(FoldError, match="fold 3: the test set"):
        check_fold_labels(plans, y)
    y2 = np.zeros(n, dtype=int)
    y2[::7] = 1
    y2[0:20] = 0  # block 0: tested in fold 0 (error there first) and calibration of fold 1
    with pytest.raises(FoldError, match="fold 0: the test set"):
        three_way_fold_plan(t0, t1, labels=y2)
    y3 = np.zeros(n, dtype=int)
    y3[::7] = 1
    y3[20:40] = 0  # block 1: calibration of fold 0 and of fold 2, test of fold 1
    with pytest.raises(FoldError, match="fold 0: the calibration set has zero BUY labels"):
        three_way_fold_plan(t0, t1, labels=y3)
    y_ok = np.zeros(n, dtype=int)
    y_ok[::3] = 1
    check_fold_labels(three_way_fold_plan(t0, t1, labels=y_ok), y_ok)
