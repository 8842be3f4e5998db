"""The library holds the logic; kfp, BentoML and DVC are reached only through the adapters, which the
library never imports; and no two library modules import each other, even inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fusionrec"
FRAMEWORKS = ("kfp", "bentoml", "dvc", "optuna")
OPTUNA_HOME = "automl"  # the one package allowed to import optuna (search space apart from training)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_the_orchestration_frameworks() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        for name in _imports(path) & set(FRAMEWORKS):
            if name == "optuna" and rel.parts[0].removesuffix(".py") == OPTUNA_HOME:
                continue
            offenders.append(f"{rel} imports {name}")
    assert not offenders, "adapters (components/, pipelines/, serving/) own these imports: " + "; ".join(offenders)


def test_cli_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from fusionrec.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'transformers', 'evidently', 'bentoml', 'kfp', 'optuna') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`fusionrec --help` imported {out}: heavy imports belong inside the functions"


ADAPTERS = ("components", "pipelines", "serving", "harness")  # adapter packages next to src/: they import the library
CLI = "cli"  # fusionrec.cli is itself an adapter: it wires the adapters to the library's steps


def _module_name(path: Path) -> str:
    parts = ("fusionrec",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run: module level and function-local, without `if TYPE_CHECKING:` bodies."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend([node.test, *node.orelse])
        else:
            stack.extend(ast.iter_child_nodes(node))
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ImportFrom names, with relative imports resolved against `module`."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(path: Path, runtime_only: bool = False) -> set[str]:
    """Dotted names a module imports; `from a import b` gives a.b (b may be a module) and a."""
    tree = ast.parse(path.read_text())
    module, is_package = _module_name(path), path.name == "__init__.py"
    names: set[str] = set()
    for node in _runtime_nodes(tree) if runtime_only else list(ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _library_files() -> list[Path]:
    """src/fusionrec without the CLI adapter."""
    return [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] != CLI]


def test_library_never_imports_the_adapters() -> None:
    offenders = []
    for path in _library_files():
        hits: list[str] = []
        for name in sorted(_imported(path)):  # a package sorts before its modules: name it once
            adapter = name.split(".")[0] in ADAPTERS or name == f"fusionrec.{CLI}" or name.startswith(f"fusionrec.{CLI}.")
            if adapter and not any(name.startswith(hit + ".") for hit in hits):
                hits.append(name)
        offenders += [f"{path.relative_to(SRC)} imports {name}" for name in hits]
    assert not offenders, ("the library takes its backends as Protocol-typed arguments; only fusionrec/cli/ "
                           "may import components, pipelines or serving: " + "; ".join(offenders))


def _import_graph() -> dict[str, set[str]]:
    """module -> library modules it imports at run time (module level or in a function)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in _imported(path, runtime_only=True) if m in modules and m != name}
            for name, path in modules.items()}


def _tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _path_in(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest cycle through `start` inside one strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return [start]


def test_no_import_cycles() -> None:
    graph = _import_graph()
    found = []
    for tangle in _tangles(graph):
        cycle = " -> ".join(_path_in(graph, set(tangle), tangle[0]))
        found.append(cycle if len(tangle) <= 2 else f"{cycle} (tangled with {', '.join(tangle)})")
    assert not found, ("import cycles among src/fusionrec modules (function-local imports count, `if TYPE_CHECKING:` "
                       "does not); move what both sides need into a module of its own: " + "; ".join(found))


def test_the_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    (tangle,) = _tangles(graph)
    assert tangle == ["a", "b", "c"]
    assert _path_in(graph, set(tangle), "a") == ["a", "b", "c", "a"]
