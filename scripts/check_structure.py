"""The structure check (``make lint`` runs it): ``ptexp/``'s imports flow one way, and the size budgets hold.

``python scripts/check_structure.py [--verbose] [--root DIR]`` reads every module under ``ptexp/``, and every
``.py`` under ``SIZE_ONLY`` (``benchmarks/``, ``scripts/``), with :mod:`ast` (nothing is imported) and fails (exit 1,
one line per problem) when:

- an import in ``ptexp/``, at the top or inside a function (a lazy import still ties the two modules together), goes
  from a module to one of a higher layer of ``LAYERS``, or closes a cycle of imports inside ``ptexp/``;
- a module, in ``ptexp/`` or ``SIZE_ONLY``, has more than ``MAX_MODULE_LINES`` lines, or a function (method, nested
  function) more than ``MAX_FUNCTION_LINES``, from its ``def`` to its last line.

The layers and cycles are ``ptexp/``'s only: the benchmarks import each other as top-level modules (``common``).

Importing ``ptexp.a.b`` runs ``ptexp/a/__init__.py`` first; that implied import is not counted, so a method module
may import ``ptexp.methods.base`` while the registry ``ptexp/methods/__init__.py`` imports the method modules.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ptexp"
SIZE_ONLY = ("benchmarks", "scripts")  # folders held to the size budgets, not to the layers
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 80

# Lowest first. A module imports modules of its own layer or of lower ones only. A name ending in "." stands for
# every module below that package (the package's own __init__ included); the longest matching name wins.
LAYERS: list[tuple[str, ...]] = [
    ("ptexp", "ptexp.errors"),
    ("ptexp.config", "ptexp.checks", "ptexp.hub", "ptexp.families", "ptexp.tables", "ptexp.fetch_models"),
    ("ptexp.metrics", "ptexp.encoding", "ptexp.prefix_attention"),
    ("ptexp.data", "ptexp.models", "ptexp.devices", "ptexp.fast_dropout", "ptexp.adapters"),
    ("ptexp.methods.",),  # the method modules, ptexp.methods.base and the registry
    ("ptexp.experiment",),  # config checks that need the registry; data + tokenizer + model of one experiment
    ("ptexp.evaluation", "ptexp.optim", "ptexp.distributed", "ptexp.signals", "ptexp.checkpoint", "ptexp.store"),
    ("ptexp.tracking", "ptexp.sweep", "ptexp.predictions"),
    ("ptexp.loop",),
    ("ptexp.inference",),  # the inference timing after the loop: the final model at a fixed batch size
    ("ptexp.trainer",),
    ("ptexp.__main__", "ptexp.evaluate", "ptexp.sync", "ptexp.report.", "ptexp.study."),  # the command lines
]

# Import cycles that remain on purpose, as (module, imported module), each with its reason. None today.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The ptexp modules ``tree`` (module ``name``) imports anywhere: at the top, in functions, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package (a package's __init__ is its own package)
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # "from pkg import sub" imports the submodule pkg.sub; "from mod import name" the module itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            matches = module == entry.rstrip(".") or (entry.endswith(".") and module.startswith(entry))
            if matches and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, line count) of every function and method, nested ones included."""
    out: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child.lineno, child.end_lineno - child.lineno + 1))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def sizes(rel: Path, text: str, tree: ast.AST, stats: dict[str, tuple[int, str]]) -> list[str]:
    """The size budgets' problems of one module; ``stats`` keeps the largest module and the longest function."""
    problems: list[str] = []
    lines = len(text.splitlines())
    stats["largest"] = max(stats["largest"], (lines, str(rel)))
    if lines > MAX_MODULE_LINES:
        problems.append(f"{rel}: {lines} lines; budget {MAX_MODULE_LINES}")
    for func, first, count in functions(tree):
        stats["longest"] = max(stats["longest"], (count, f"{rel}:{first} {func}"))
        if count > MAX_FUNCTION_LINES:
            problems.append(f"{rel}:{first}: function {func} has {count} lines; budget {MAX_FUNCTION_LINES}")
    return problems


def check(root: Path = ROOT, verbose: bool = False) -> list[str]:
    """Every problem found in ``root``'s package and ``SIZE_ONLY`` folders, one line each (empty: all holds)."""
    paths = sorted((root / PACKAGE).rglob("*.py"))
    names = {module_name(p, root): p for p in paths}
    known = set(names)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    stats = {"largest": (0, ""), "longest": (0, "")}
    for name, path in names.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(root)
        graph[name] = imported(tree, name, path.name == "__init__.py", known)
        problems += sizes(rel, text, tree, stats)
        if layer_of(name) < 0:
            problems.append(f"{rel}: module {name} is in no layer of scripts/check_structure.py's LAYERS")
    others = sorted(p for folder in SIZE_ONLY for p in (root / folder).rglob("*.py"))
    for path in others:
        text = path.read_text()
        problems += sizes(path.relative_to(root), text, ast.parse(text, filename=str(path)), stats)
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if (name, target) in ALLOWED_CYCLE_EDGES:
                continue
            if layer_of(target) > layer_of(name) >= 0:
                problems.append(f"{names[name].relative_to(root)}: imports {target}, a module of a higher layer")
    checked = {n: {t for t in ts if (n, t) not in ALLOWED_CYCLE_EDGES} for n, ts in graph.items()}
    problems += [f"import cycle: {' <-> '.join(component)}" for component in cycles(checked)]
    if verbose:
        print(f"{len(names)} modules, {sum(len(t) for t in graph.values())} imports between them", end="")
        print(f"; {len(others)} more files held to the size budgets only ({', '.join(SIZE_ONLY)})")
        print(f"largest module: {stats['largest'][1]} ({stats['largest'][0]} lines)")
        print(f"longest function: {stats['longest'][1]} ({stats['longest'][0]} lines)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="also print the largest module and function")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    args = parser.parse_args(argv)
    problems = check(args.root.resolve(), args.verbose)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("structure ok: imports flow one way, no cycle, module and function budgets hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
