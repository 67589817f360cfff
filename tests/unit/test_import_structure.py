"""The house keeps its shape (issue 19): read from the source with :mod:`ast`, nothing imported.

* no import cycle among the project's modules (every import counts: module top, function
  bodies, ``TYPE_CHECKING`` blocks -- a lazy import only hides a cycle);
* the pure stage folders (``cvn_assets/market``, ``ablation``, ``guard``) import no Dagster
  and none of the Dagster layer (``cvn_assets.assets``, ``resources``, ``sensors``);
* the shipped packages never import test support (``tests``).
A self-check builds a tiny tree with a cycle and a pure module importing Dagster and sees
both refused.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cvn_assets", "resources", "sensors")
PURE = ("cvn_assets.market", "cvn_assets.ablation", "cvn_assets.guard")
DAGSTER_LAYER = ("dagster", "dagster_celery", "cvn_assets.assets", "resources", "sensors")


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (root / pkg).rglob("*.py"):
            if "versions" in p.parts:  # Alembic revisions: loaded by Alembic, not imported
                continue
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports(path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (``from a import b``: both
    ``a`` and ``a.b``, so a module imported from its package counts)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _graph(root: Path) -> dict[str, set[str]]:
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target in _imports(path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _impure(root: Path) -> list[tuple[str, str]]:
    bad = []
    for name, path in _modules(root).items():
        if not name.startswith(PURE):
            continue
        for target in _imports(path):
            if target.startswith(DAGSTER_LAYER) and (
                target.split(".")[0] in ("dagster", "dagster_celery", "resources", "sensors")
                or target.startswith("cvn_assets.assets")
            ):
                bad.append((name, target))
    return sorted(bad)


def test_no_import_cycle():
    assert _cycles(_graph(ROOT)) == []


def test_pure_stage_modules_import_no_dagster_layer():
    assert _impure(ROOT) == []


def test_shipped_packages_do_not_import_test_support():
    offenders = [
        (name, t)
        for name, path in _modules(ROOT).items()
        for t in _imports(path)
        if t == "tests" or t.startswith("tests.")
    ]
    assert offenders == []


def test_the_checks_see_a_cycle_and_an_impure_module(tmp_path):
    pkg = tmp_path / "cvn_assets"
    (pkg / "market").mkdir(parents=True)
    for p in ("resources", "sensors"):
        (tmp_path / p).mkdir()
        (tmp_path / p / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "market" / "__init__.py").write_text("")
    (pkg / "market" / "a.py").write_text("from cvn_assets.market import b\nimport dagster\n")
    (pkg / "market" / "b.py").write_text("def f():\n    from cvn_assets.market.a import x\n")
    assert _cycles(_graph(tmp_path)) == [["cvn_assets.market.a", "cvn_assets.market.b"]]
    assert _impure(tmp_path) == [("cvn_assets.market.a", "dagster")]
