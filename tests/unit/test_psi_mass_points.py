"""PSI when the training deciles tie (issue 18, kind 4): expected shares are the training
sample's own shares in the merged bins, and the no-drift thresholds use the same bins.

Independent truth: training samples built so that every decile edge is one order statistic
(``m = 1001``: ``np.quantile``'s virtual index ``(m - 1) k / 10 = 100 k`` is an integer, no
interpolation), whose bin counts are counted by hand below; PSI values from the closed form
``sum (a - e) ln(a / e)`` written out with those hand counts; no-drift quantiles
cross-checked by brute force (raw values drawn from the distribution, binned by ``psi``).
"""

import math

import numpy as np
import pytest

from cvn_assets.guard.champion import window_psi_quantile
from cvn_assets.guard.drift import data_drift, false_alarm_rate
from cvn_assets.guard.monitoring import (
    PSI_FLOOR,
    decile_edges,
    merged_edges,
    psi,
    psi_null_quantile,
    training_shares,
)

M = 1001


def _term(a: float, e: float) -> float:
    """One bin of the closed form, shares floored at 1e-4 as spec 6.1."""
    a, e = max(a, PSI_FLOOR), max(e, PSI_FLOOR)
    return (a - e) * math.log(a / e)


def _window(groups: list[tuple[float, int]]) -> np.ndarray:
    return np.concatenate([np.full(k, v, dtype=np.float64) for v, k in groups])


# --------------------------------------------------------------------------- one mass point

#: 300 zeros, then the 701 distinct values 1..701: edges x[100k] = 0, 0, 1, 101, ..., 601
ONE = np.concatenate([np.zeros(300), np.arange(1.0, 702.0)])
#: by hand: (-inf,0) 0; [0,1) the 300 zeros; [1,101) .. [501,601) 100 each; [601,inf) 101
ONE_COUNTS = [0, 300, 100, 100, 100, 100, 100, 100, 101]


def test_one_mass_point_edges_shares_and_the_phantom_it_used_to_page():
    edges = decile_edges(ONE)
    np.testing.assert_array_equal(edges, [0, 0, 1, 101, 201, 301, 401, 501, 601])
    np.testing.assert_array_equal(merged_edges(edges), [0, 1, 101, 201, 301, 401, 501, 601])
    shares = training_shares(ONE, edges)
    np.testing.assert_allclose(shares, np.array(ONE_COUNTS) / M, rtol=0, atol=1e-15)
    assert psi(ONE, edges, expected=shares) == 0.0  # the training sample against itself

    # a window from the same distribution: 30 % zeros, 10 % in each other decile
    groups = [(0.0, 60)] + [(50.0 + 100 * i, 20) for i in range(6)] + [(650.0, 20)]
    w = _window(groups)
    a = [0.0, 0.3] + [0.1] * 6 + [0.1]
    hand = sum(_term(ai, c / M) for ai, c in zip(a, ONE_COUNTS, strict=True))
    assert hand < 0.001
    assert psi(w, edges, expected=shares) == pytest.approx(hand, rel=1e-12)
    assert psi(w, edges, training=ONE) == pytest.approx(hand, rel=1e-12)
    # the old 1/10 expectation on the raw bins: two empty bins (-inf,0) and [0,0) at
    # 0.0999 ln(1000) each, 0.3 in [0,1) against 0.1 -- the issue's ~1.6, crit
    old = 2 * _term(0.0, 0.1) + _term(0.3, 0.1) + 7 * _term(0.1, 0.1)
    assert old == pytest.approx(1.599892, abs=1e-6)
    assert psi(w, edges) == pytest.approx(old, rel=1e-12)

    # a real shift: half the window at 0, less at the top
    groups = [(0.0, 100)] + [(50.0 + 100 * i, 15) for i in range(6)] + [(650.0, 10)]
    w = _window(groups)
    a = [0.0, 0.5] + [0.075] * 6 + [0.05]
    hand = sum(_term(ai, c / M) for ai, c in zip(a, ONE_COUNTS, strict=True))
    assert psi(w, edges, expected=shares) == pytest.approx(hand, rel=1e-12)
    assert 0.1 < hand < 0.2


def test_two_mass_points():
    # 300 zeros, 200 fives, then 501 distinct values 6..506: edges 0,0,5,5,6,106,..,406
    x = np.concatenate([np.zeros(300), np.full(200, 5.0), np.arange(6.0, 507.0)])
    edges = decile_edges(x)
    np.testing.assert_array_equal(edges, [0, 0, 5, 5, 6, 106, 206, 306, 406])
    np.testing.assert_array_equal(merged_edges(edges), [0, 5, 6, 106, 206, 306, 406])
    counts = [0, 300, 200, 100, 100, 100, 100, 101]  # by hand: (-inf,0) [0,5) [5,6) ...
    shares = training_shares(x, edges)
    np.testing.assert_allclose(shares, np.array(counts) / M, rtol=0, atol=1e-15)
    w = _window([(0.0, 50), (5.0, 70), (50.0, 20), (150.0, 20), (250.0, 20), (350.0, 10)])
    w = np.concatenate([w, np.full(10, 450.0)])
    a = [0.0, 0.25, 0.35, 0.1, 0.1, 0.1, 0.05, 0.05]
    hand = sum(_term(ai, c / M) for ai, c in zip(a, counts, strict=True))
    assert psi(w, edges, expected=shares) == pytest.approx(hand, rel=1e-12)
    assert psi(x, edges, expected=shares) == 0.0
    # 1/10 on the raw bins: (-inf,0), [0,0), [5,5) empty; 0.3 and 0.2 where 0.1 was expected
    assert psi(x, edges) == pytest.approx(
        3 * _term(0.0, 0.1)
        + _term(300 / M, 0.1)
        + _term(200 / M, 0.1)
        + 4 * _term(100 / M, 0.1)
        + _term(101 / M, 0.1),
        rel=1e-12,
    )


def test_mass_point_at_the_top_end():
    # 700 distinct values 1..700, then 301 at the clip 1000: edges 101,..,601,1000,1000,1000
    x = np.concatenate([np.arange(1.0, 701.0), np.full(301, 1000.0)])
    edges = decile_edges(x)
    np.testing.assert_array_equal(edges, [101, 201, 301, 401, 501, 601, 1000, 1000, 1000])
    counts = [100, 100, 100, 100, 100, 100, 100, 301]  # (-inf,101) .. [601,1000) [1000,inf)
    shares = training_shares(x, edges)
    np.testing.assert_allclose(shares, np.array(counts) / M, rtol=0, atol=1e-15)
    w = np.concatenate([np.full(20, 50.0 + 100 * i) for i in range(7)] + [np.full(60, 1000.0)])
    a = [0.1] * 7 + [0.3]
    hand = sum(_term(ai, c / M) for ai, c in zip(a, counts, strict=True))
    assert psi(w, edges, expected=shares) == pytest.approx(hand, rel=1e-12) and hand < 0.001
    assert psi(w, edges) > 1.0  # the phantom of the 1/10 expectation


def test_constant_feature():
    x = np.full(50, 7.0)
    edges = decile_edges(x)
    np.testing.assert_array_equal(merged_edges(edges), [7.0])
    shares = training_shares(x, edges)
    np.testing.assert_array_equal(shares, [0.0, 1.0])
    assert psi(np.full(168, 7.0), edges, expected=shares) == 0.0
    # 10 % below the constant: (0.1 - 1e-4) ln(0.1 / 1e-4) + (0.9 - 1) ln(0.9)
    w = np.concatenate([np.full(10, 6.0), np.full(90, 7.0)])
    assert psi(w, edges, expected=shares) == pytest.approx(
        0.0999 * math.log(1000.0) + (-0.1) * math.log(0.9), rel=1e-12
    )
    # above it: the open top bin [7, inf) -- not seen (documented)
    assert psi(np.concatenate([np.full(10, 8.0), np.full(90, 7.0)]), edges, expected=shares) == 0
    # no-drift null: nothing can move, exactly 0, with or without the training size
    assert psi_null_quantile(168, expected=shares) == 0.0
    assert psi_null_quantile(168, n_train=50, expected=shares) == 0.0


def test_binary_feature():
    x = np.concatenate([np.zeros(700), np.ones(301)])
    edges = decile_edges(x)
    np.testing.assert_array_equal(edges, [0, 0, 0, 0, 0, 0, 1, 1, 1])  # x[100k], x[700] = 1
    shares = training_shares(x, edges)
    np.testing.assert_allclose(shares, [0.0, 700 / M, 301 / M], rtol=0, atol=1e-15)
    w = np.concatenate([np.zeros(84), np.ones(84)])
    hand = _term(0.5, 700 / M) + _term(0.5, 301 / M)
    assert psi(w, edges, expected=shares) == pytest.approx(hand, rel=1e-12)
    assert psi(x[::7], edges, expected=shares) == pytest.approx(
        _term(100 / 143, 700 / M) + _term(43 / 143, 301 / M), rel=1e-12
    )


def test_window_values_outside_the_training_range():
    edges = decile_edges(ONE)
    shares = training_shares(ONE, edges)
    base = [(0.0, 60)] + [(50.0 + 100 * i, 20) for i in range(6)] + [(650.0, 20)]
    # 20 of 200 values below the training minimum 0: the bin (-inf, 0) had share 0
    below = _window([(-5.0, 20), (0.0, 40)] + base[1:])
    a = [0.1, 0.2] + [0.1] * 7
    hand = sum(_term(ai, c / M) for ai, c in zip(a, ONE_COUNTS, strict=True))
    assert psi(below, edges, expected=shares) == pytest.approx(hand, rel=1e-12)
    assert hand > 0.5  # crit-sized
    # above the training maximum 701: the open top bin [601, inf)
    above = _window(base[:-1] + [(10_000.0, 20)])
    assert psi(above, edges, expected=shares) == psi(_window(base), edges, expected=shares)


def test_nan_and_bad_shares_are_refused_naming_the_argument():
    edges = decile_edges(ONE)
    shares = training_shares(ONE, edges)
    with pytest.raises(ValueError, match=r"actual\[1\]"):
        psi([0.0, np.nan], edges, expected=shares)
    with pytest.raises(ValueError, match="training"):
        training_shares(np.array([0.0, np.nan]), edges)
    with pytest.raises(ValueError, match="expected"):
        psi([0.0], edges, expected=[np.nan] * 9)
    with pytest.raises(ValueError, match="9 shares but the merged bins of edges are 10"):
        psi([0.0], [0, 1, 2, 3, 4, 5, 6, 7, 8], expected=shares)
    with pytest.raises(ValueError, match="sum to 1"):
        psi_null_quantile(100, expected=[0.5, 0.6])
    with pytest.raises(ValueError, match=r"expected\[0\]"):
        psi_null_quantile(100, expected=[-0.1, 1.1])
    with pytest.raises(ValueError, match=r"feature_windows\['f'\]"):
        data_drift({"f": [0.0] * 150 + [np.nan]}, {"f": edges}, expected_shares={"f": shares})
    with pytest.raises(ValueError, match=r"expected_shares\['f'\]"):
        data_drift({"f": [0.0] * 150}, {"f": edges}, expected_shares={"f": [0.5, 0.5]})


# --------------------------------------------------------------------------- the null

#: population: 0 with probability 0.3, else Uniform(0, 7). Quantiles k/10: 0 for k <= 3, then
#: k - 3, so the edges 0,0,0,1,..,6 merge into 0,1,..,6; shares by hand (-inf,0) 0,
#: [0,1) 0.3 + 0.1, then 0.1 each.
POP_EDGES = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6], dtype=np.float64)
POP_SHARES = np.array([0.0, 0.4] + [0.1] * 6)


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.0, 7.0, n))


def test_null_with_uniform_shares_is_the_old_known_deciles_null():
    for n in (100, 168):
        assert psi_null_quantile(n, expected=[0.1] * 10) == psi_null_quantile(n)


def test_null_on_merged_bins_matches_brute_force():
    """Known shares: the Monte Carlo quantile equals the quantile of ``psi`` of raw windows
    drawn from the distribution (3 000 draws; 95th percentile, MC error ~2 %)."""
    rng = np.random.default_rng(21)
    brute = [psi(_draw(rng, 168), POP_EDGES, expected=POP_SHARES) for _ in range(3000)]
    got = psi_null_quantile(168, expected=POP_SHARES)
    assert got == pytest.approx(float(np.quantile(brute, 0.95)), rel=0.06)
    # 8 merged bins, 7 degrees of freedom: ~ chi2_7(0.95) / n = 14.07 / 168
    assert got == pytest.approx(14.067 / 168, rel=0.1)
    # the old 10-bin null (9 d.o.f.) on these bins would sit higher
    assert got < psi_null_quantile(168)


def test_null_with_estimated_shares_matches_brute_force():
    """Shares estimated from m = 2000 training values: brute force draws a training sample,
    freezes its edges and shares, and scores a fresh 168-row window (2 000 draws)."""
    rng = np.random.default_rng(22)
    vals = []
    for _ in range(2000):
        tr = _draw(rng, 2000)
        edges = decile_edges(tr)
        vals.append(psi(_draw(rng, 168), edges, expected=training_shares(tr, edges)))
    got = psi_null_quantile(168, n_train=2000, expected=POP_SHARES)
    assert got == pytest.approx(float(np.quantile(vals, 0.95)), rel=0.1)
    assert got > psi_null_quantile(168, expected=POP_SHARES)  # the 1/m term


def test_no_drift_false_alarm_rate_on_a_mass_point_feature_is_nominal():
    """data_drift on windows drawn from the training distribution (seed 8, 20 000 windows):
    the sample-size-aware part alone alarms at ~5 % (q = 0.95), the full rule almost never;
    with 1/10 shares every window is crit."""
    edges = {"f": POP_EDGES}
    shares = {"f": POP_SHARES}

    def sampler(rng):
        return {"f": _draw(rng, 168)}

    aware = false_alarm_rate(
        lambda w: data_drift(w, edges, warn=0.0, crit=0.0, expected_shares=shares),
        sampler,
        20_000,
        8,
    )
    assert aware.rate == pytest.approx(0.05, abs=0.01)
    full = false_alarm_rate(
        lambda w: data_drift(w, edges, expected_shares=shares), sampler, 20_000, 8
    )
    assert full.rate < 0.005
    uniform = false_alarm_rate(
        lambda w: data_drift(w, {"f": [0, 0.001, 0.002, 1, 2, 3, 4, 5, 6]}),
        sampler,
        2_000,
        8,
        levels=("crit",),
    )
    assert uniform.rate == 1.0
    print(f"mass point: aware {aware.rate:.4f}, full {full.rate:.4f}, uniform {uniform.rate}")


def test_data_drift_without_stored_shares():
    """Older reference statistics: untied edges keep the 1/10 expectation; tied edges are
    insufficient (named), not a phantom page."""
    rng = np.random.default_rng(9)
    cont = rng.normal(size=5000)
    e_cont = decile_edges(cont)
    windows = {"c": rng.normal(size=168), "m": _draw(rng, 168)}
    v = data_drift(windows, {"c": e_cont, "m": POP_EDGES})
    assert v.details["m"]["level"] == "insufficient" and v.details["m"]["expected"] == "missing"
    assert v.details["c"]["expected"] == "uniform"
    assert v.details["c"]["psi"] == psi(windows["c"], e_cont)
    assert v.level == "ok"
    only = data_drift({"m": windows["m"]}, {"m": POP_EDGES})
    assert only.level == "insufficient" and "tied deciles without stored training shares" in (
        only.reason
    )
    with_shares = data_drift(
        {"m": windows["m"]}, {"m": POP_EDGES}, expected_shares={"m": POP_SHARES}
    )
    assert with_shares.level == "ok" and with_shares.details["m"]["expected"] == "training"
    assert with_shares.value == psi(windows["m"], POP_EDGES, expected=POP_SHARES)
    assert with_shares.details["m"]["null_q"] == psi_null_quantile(168, expected=POP_SHARES)


def test_window_floor_uses_the_merged_bins_and_their_shares():
    """The training series' own window-PSI floor of an iid mass-point feature is the iid
    no-drift level, not the ~1.6 of the 1/10 expectation (which made the feature unable to
    alarm: its floor was above the crit bound)."""
    x = _draw(np.random.default_rng(10), 168 * 60)
    floor = window_psi_quantile(x)
    assert floor is not None and floor < 0.3
    edges = decile_edges(x)
    null99 = psi_null_quantile(168, 0.99, expected=training_shares(x, edges))
    assert floor == pytest.approx(null99, rel=0.35)  # 60 blocks: a coarse 99th percentile
