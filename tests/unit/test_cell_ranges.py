"""Exact rectangle covers of crypto x fold cells, checked against Dagster's own range reading."""

import random

import pytest
from dagster import MultiPartitionsDefinition, PartitionKeyRange, StaticPartitionsDefinition

from cvn_assets.execution.cell_ranges import cover_with_rectangles

CRYPTOS = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
FOLDS = ("f0", "f1", "f2", "f3", "f4")
GRID = MultiPartitionsDefinition(
    {
        "crypto": StaticPartitionsDefinition(list(CRYPTOS)),
        "fold": StaticPartitionsDefinition(list(FOLDS)),
    }
)


def dagster_cells(start: str, end: str) -> set[tuple[str, str]]:
    """The cells Dagster itself selects for a key range (the independent truth)."""
    keys = GRID.get_partition_keys_in_range(PartitionKeyRange(start, end))
    return {(k.keys_by_dimension["crypto"], k.keys_by_dimension["fold"]) for k in keys}


def check_exact_cover(cells: set[tuple[str, str]]) -> None:
    rects = cover_with_rectangles(CRYPTOS, FOLDS, cells)
    covered: set[tuple[str, str]] = set()
    for r in rects:
        got = dagster_cells(r.start, r.end)
        assert got == r.cells(), (r, got)  # Dagster reads the range as exactly this rectangle
        assert not (got & covered), "rectangles overlap"
        covered |= got
    assert covered == cells


def test_the_issue_example_is_two_single_cells_not_an_empty_range():
    # the linear cut 'BTCUSDC|f4...ETHUSDC|f0' selects nothing in Dagster
    assert dagster_cells("BTCUSDC|f4", "ETHUSDC|f0") == set()
    cells = {("BTCUSDC", "f4"), ("ETHUSDC", "f0")}
    rects = cover_with_rectangles(CRYPTOS, FOLDS, cells)
    assert [(r.start, r.end) for r in rects] == [
        ("BTCUSDC|f4", "BTCUSDC|f4"),
        ("ETHUSDC|f0", "ETHUSDC|f0"),
    ]
    check_exact_cover(cells)


def test_empty_set_gives_no_range_and_full_grid_one():
    assert cover_with_rectangles(CRYPTOS, FOLDS, set()) == []
    full = {(c, f) for c in CRYPTOS for f in FOLDS}
    rects = cover_with_rectangles(CRYPTOS, FOLDS, full)
    assert [(r.start, r.end) for r in rects] == [("BTCUSDC|f0", "XRPUSDC|f4")]
    check_exact_cover(full)


@pytest.mark.parametrize("crypto", [CRYPTOS[0], CRYPTOS[-1]])
@pytest.mark.parametrize("fold", [FOLDS[0], FOLDS[-1]])
def test_single_cells_at_the_ends_of_the_dimensions(crypto, fold):
    rects = cover_with_rectangles(CRYPTOS, FOLDS, {(crypto, fold)})
    assert len(rects) == 1 and len(rects[0]) == 1
    check_exact_cover({(crypto, fold)})


def test_the_full_grid_minus_two_cells_of_the_issue():
    cells = {(c, f) for c in CRYPTOS for f in FOLDS} - {("BTCUSDC", "f4"), ("ETHUSDC", "f0")}
    check_exact_cover(cells)


def test_property_random_sets_of_missing_cells():
    rng = random.Random(20261130)
    all_cells = [(c, f) for c in CRYPTOS for f in FOLDS]
    for _ in range(600):
        k = rng.randint(0, len(all_cells))
        check_exact_cover(set(rng.sample(all_cells, k)))


def test_rectangles_are_merged_across_cryptos_with_the_same_fold_run():
    cells = {(c, f) for c in CRYPTOS[:3] for f in ("f1", "f2")} | {("XRPUSDC", "f1")}
    rects = cover_with_rectangles(CRYPTOS, FOLDS, cells)
    assert [(r.start, r.end) for r in rects] == [
        ("BTCUSDC|f1", "SOLUSDC|f2"),
        ("XRPUSDC|f1", "XRPUSDC|f1"),
    ]


def test_a_cell_outside_the_grid_is_named():
    with pytest.raises(ValueError, match=r"cell DOGEUSDC\|f0 is not in the grid"):
        cover_with_rectangles(CRYPTOS, FOLDS, {("DOGEUSDC", "f0")})
