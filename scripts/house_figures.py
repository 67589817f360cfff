"""The shape of the house in figures (issue 19): files, their lines, import levels and
cycles, functions over 80 lines, function-level imports of project modules.

Reads the source with :mod:`ast` (nothing is imported but the test module's graph helpers):
``python scripts/house_figures.py [ROOT]`` (default: this checkout).
"""

import ast
import statistics
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.test_import_structure import PACKAGES, _cycles, _graph  # noqa: E402


def main(root: Path) -> None:
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "versions" not in p.parts]
    lines = [len(p.read_text().splitlines()) for p in files]
    long, lazy = [], 0
    for p in files:
        for n in ast.walk(ast.parse(p.read_text())):
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if n.end_lineno - n.lineno + 1 > 80:
                long.append((n.end_lineno - n.lineno + 1, f"{p.relative_to(root)}:{n.name}"))
            for m in ast.walk(n):
                if isinstance(m, ast.Import):
                    names = [a.name for a in m.names]
                elif isinstance(m, ast.ImportFrom):
                    names = [m.module or ""]
                else:
                    continue
                lazy += any(x.split(".")[0] in PACKAGES for x in names)
    graph = _graph(root)

    @cache
    def level(v: str, seen: frozenset[str] = frozenset()) -> int:
        return 1 + max((level(w, seen | {v}) for w in graph[v] if w not in seen), default=0)

    print(
        f"files {len(files)}; lines per file: median {statistics.median(lines)}, max {max(lines)}"
    )
    print(f"import levels {max(level(v) for v in graph)}; cycles {_cycles(graph)}")
    print(f"functions over 80 lines: {len(long)}")
    for n, where in sorted(long, reverse=True):
        print(f"  {n:4d}  {where}")
    print(f"function-level imports of project modules: {lazy}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO)
