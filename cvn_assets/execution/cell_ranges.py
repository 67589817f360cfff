"""Cover a set of crypto x fold cells with Dagster partition key ranges, exactly.

Dagster reads a key range of a ``MultiPartitionsDefinition`` as a *rectangle*: one range per
dimension (crypto in [a..b] x fold in [c..d]), not as a slice of the flattened partition list.
A range from ``BTCUSDC|f4`` to ``ETHUSDC|f0`` therefore selects crypto in [BTCUSDC..ETHUSDC] x
fold in [f4..f0], which is empty. Any set of cells to (re-)materialize must be cut into
rectangles that cover exactly that set: :func:`cover_with_rectangles` does that.

This module imports no Dagster.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CellRectangle:
    """Cryptos ``cryptos[0..-1]`` (contiguous in universe order) x folds ``folds`` (contiguous)."""

    cryptos: tuple[str, ...]
    folds: tuple[str, ...]

    @property
    def start(self) -> str:
        """Partition key of the first corner, e.g. ``'BTCUSDC|f1'``."""
        return f"{self.cryptos[0]}|{self.folds[0]}"

    @property
    def end(self) -> str:
        """Partition key of the last corner, e.g. ``'ETHUSDC|f3'``."""
        return f"{self.cryptos[-1]}|{self.folds[-1]}"

    def cells(self) -> set[tuple[str, str]]:
        return {(c, f) for c in self.cryptos for f in self.folds}

    def __len__(self) -> int:
        return len(self.cryptos) * len(self.folds)


def _runs(order: Sequence[str], members: Iterable[str]) -> list[tuple[str, ...]]:
    """Maximal runs of consecutive elements of ``order`` that are in ``members``."""
    wanted = set(members)
    runs: list[tuple[str, ...]] = []
    current: list[str] = []
    for item in order:
        if item in wanted:
            current.append(item)
        elif current:
            runs.append(tuple(current))
            current = []
    if current:
        runs.append(tuple(current))
    return runs


def cover_with_rectangles(
    cryptos: Sequence[str], folds: Sequence[str], cells: Iterable[tuple[str, str]]
) -> list[CellRectangle]:
    """Disjoint rectangles whose union is exactly ``cells``.

    ``cryptos`` and ``folds`` give the order of each dimension as Dagster sorts it (the order of
    the static partitions). Per crypto, its folds are cut into maximal contiguous runs; then
    consecutive cryptos with the same fold run are merged into one rectangle. The empty set
    gives no rectangle; the full grid gives one.

    Raises ``ValueError`` naming a cell outside the grid.
    """
    cell_set = set(cells)
    crypto_pos = {c: i for i, c in enumerate(cryptos)}
    fold_pos = {f: i for i, f in enumerate(folds)}
    for c, f in sorted(cell_set):
        if c not in crypto_pos or f not in fold_pos:
            raise ValueError(f"cell {c}|{f} is not in the grid {list(cryptos)} x {list(folds)}")
    by_crypto: dict[str, list[tuple[str, ...]]] = {
        c: _runs(folds, (f for cc, f in cell_set if cc == c)) for c in cryptos
    }
    out: list[CellRectangle] = []
    # sweep cryptos in order; an open rectangle per fold run extends while the run repeats
    open_rects: dict[tuple[str, ...], list[str]] = {}
    for c in cryptos:
        runs = set(by_crypto[c])
        for run in list(open_rects):
            if run not in runs:
                out.append(CellRectangle(tuple(open_rects.pop(run)), run))
        for run in by_crypto[c]:
            open_rects.setdefault(run, []).append(c)
    for run, members in open_rects.items():
        out.append(CellRectangle(tuple(members), run))
    return sorted(out, key=lambda r: (crypto_pos[r.cryptos[0]], fold_pos[r.folds[0]]))
