"""The serving lock: the part of requirements.lock that the serving process needs, derived, never listed by hand.

The serving image (the bento, `serving/bentofile.yaml`) installs `requirements-serving.lock`, then the
fusionrec wheel with no dependencies. That lock is computed here from the code:

1. The import closure of `serving.service` (what `bentoml serve serving.service:FusionRec` loads):
   every first-party module it can reach, following imports at module level and inside functions
   (not `if TYPE_CHECKING:` bodies), and the third-party top-level modules those import.
2. Each third-party module mapped to the distribution that installs it (the environment's
   `importlib.metadata.packages_distributions()`, the venv that installed requirements.lock).
3. Plus RUNTIME_ROOTS: distributions the service loads by name at run time, never in an import
   statement (SQLAlchemy picks the PostgreSQL driver from the database URL).
4. Closed over every distribution's Requires-Dist, extras followed, markers evaluated for this
   interpreter (CPython 3.11 on Linux x86_64, the platform of the images), each at the version
   requirements.lock pins; a requirement that lock does not satisfy is an error.

    python -m tools.serving_lock          # rewrite requirements-serving.lock
    python -m tools.serving_lock --check  # exit 1 when the file differs from what the code needs
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as md
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
FULL_LOCK = REPO / "requirements.lock"
SERVING_LOCK = REPO / "requirements-serving.lock"
ENTRY = "serving.service"  # the module `bentoml serve serving.service:FusionRec` imports
FIRST_PARTY = {"fusionrec": REPO / "src" / "fusionrec", "serving": REPO / "serving"}
# The installer itself: nothing the service runs requires it, and every environment has its own.
UNLOCKED = frozenset({"pip"})
# Distributions loaded by name, not by an import statement: {requirement: why}.
RUNTIME_ROOTS = {
    "psycopg[binary]": "the feedback store's PostgreSQL driver: SQLAlchemy loads it for postgresql+psycopg:// URLs",
    "s3fs": "fsspec loads it for an s3:// champion (monitor.models_root on S3 or MinIO)",
}


class LockError(ValueError):
    """The serving set cannot be derived from requirements.lock (a module or requirement it lacks)."""


@dataclass
class ImportClosure:
    """What a module can import: first-party modules reached, third-party top-level names and who imports them."""

    modules: set[str] = field(default_factory=set)
    third_party: dict[str, set[str]] = field(default_factory=dict)  # top-level name -> importing modules


def read_lock(path: Path = FULL_LOCK) -> dict[str, tuple[str, str]]:
    """{canonical name: (version, the lock's line)} of a `name==version` lock file."""
    pins: dict[str, tuple[str, str]] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version or ";" in version or "[" in name:
            raise LockError(f"{path.name}:{n}: expected `name==version`, got {raw!r}")
        pins[canonicalize_name(name)] = (version.strip(), line)
    return pins


def _source(module: str) -> tuple[Path, bool] | None:
    """(file, is_package) of a first-party module, or None when it is not a module of ours."""
    top, *rest = module.split(".")
    base = FIRST_PARTY[top].joinpath(*rest)
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    return None  # `from package import name` where name is an attribute, not a module


def _runtime_imports(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Modules named by the import statements that can run (TYPE_CHECKING bodies skipped)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")[: None if is_package else -1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # a submodule imported by name
        stack.extend(ast.iter_child_nodes(node))


def import_closure(entry: str = ENTRY) -> ImportClosure:
    """Every first-party module `entry` can import, transitively, and the third-party names they import."""
    closure = ImportClosure()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in closure.modules or module.split(".")[0] not in FIRST_PARTY:
            continue
        found = _source(module)
        if found is None:
            continue
        closure.modules.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
        path, is_package = found
        for name in _runtime_imports(ast.parse(path.read_text(), str(path)), module, is_package):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                closure.third_party.setdefault(top, set()).add(module)
    return closure


def import_roots(closure: ImportClosure) -> dict[str, str]:
    """{distribution: why} for the third-party modules of the closure (the distribution installing each)."""
    owners = md.packages_distributions()
    roots: dict[str, str] = {}
    for name, importers in sorted(closure.third_party.items()):
        dists = owners.get(name)
        if not dists:
            raise LockError(f"`import {name}` (in {', '.join(sorted(importers))}) is installed by no distribution "
                            "of this environment: install requirements.lock, or add the package to it")
        for dist in dists:
            roots.setdefault(canonicalize_name(dist), f"import {name} ({min(importers)})")
    return roots


def requires_closure(roots: Iterable[str], lock: dict[str, tuple[str, str]]) -> dict[str, str]:
    """{canonical name: version}: the roots and everything their Requires-Dist pulls in, at the lock's versions.

    Raises:
        LockError: a required distribution is not in the lock, or its locked version does not satisfy
            the requirement, or it is not installed here (its metadata is read from this environment).
    """
    env = {k: str(v) for k, v in default_environment().items()}
    chosen: dict[str, str] = {}
    todo = [(Requirement(r), "serving") for r in roots]
    extras_seen: set[tuple[str, str]] = set()
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        if name not in lock:
            raise LockError(f"{parent} requires {req}, which requirements.lock does not hold")
        version = lock[name][0]
        if not req.specifier.contains(Version(version), prereleases=True):
            raise LockError(f"{parent} requires {req}; requirements.lock pins {name}=={version}")
        new_extras = {e for e in req.extras if (name, e) not in extras_seen}
        if name in chosen and not new_extras:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise LockError(f"{name} ({parent}) is not installed here: install requirements.lock first") from None
        if dist.version != version:
            raise LockError(f"{name} {dist.version} is installed here, requirements.lock pins {version}: reinstall it")
        chosen[name] = version
        extras_seen.update((name, e) for e in new_extras)
        for line in dist.requires or []:
            sub = Requirement(line)
            wanted = [""] + sorted(new_extras | {e for (n, e) in extras_seen if n == name})
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in wanted):
                todo.append((sub, f"{name}=={version}"))
    return chosen


def serving_set() -> tuple[dict[str, str], dict[str, str]]:
    """({canonical name: version} of the serving lock, {root distribution: why it is a root})."""
    lock = read_lock()
    roots = {**import_roots(import_closure()), **RUNTIME_ROOTS}
    return requires_closure(roots, lock), roots


def render(chosen: dict[str, str], roots: dict[str, str]) -> str:
    """The serving lock's text: a header naming the roots, then the full lock's own lines for the set."""
    lock = read_lock()
    why = "\n".join(f"#   {name}: {reason}" for name, reason in sorted(roots.items()))
    header = (
        "# The serving set: what `bentoml serve serving.service:FusionRec` imports, and what that requires,\n"
        "# at the versions of requirements.lock (a subset of it). Generated by `python -m tools.serving_lock`\n"
        "# from the service's import closure; do not edit by hand, rerun it after a change of imports or lock.\n"
        f"# Roots ({len(roots)}):\n{why}\n"
    )
    return header + "".join(lock[name][1] + "\n" for name in sorted(chosen))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--out", type=Path, default=SERVING_LOCK)
    args = parser.parse_args(argv)
    chosen, roots = serving_set()
    text = render(chosen, roots)
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"{args.out.name} is out of date: run `python -m tools.serving_lock`", file=sys.stderr)
            return 1
        print(f"{args.out.name}: up to date ({len(chosen)} of {len(read_lock())} distributions)")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(chosen)} of {len(read_lock())} distributions, {len(roots)} roots)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
