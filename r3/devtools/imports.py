"""The project's import graph, read statically with `ast`: which project modules each module imports.

Every `import` statement counts, at module level or inside a function (a deferred import: it runs when the
function is first called). `explicit_imports` gives the modules a statement names (the graph whose layers and
cycles `r3.devtools.layers` checks); `closure` adds what Python also runs, the `__init__.py` of every package above
an imported module, and so gives the code a module runs: the code of a pipeline stage is the closure of its flow
module `flows/<stage>.py`.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
PACKAGES = ("r3", "tasks", "flows")
"""The project's top-level packages; imports of anything else (stdlib, third party) are not followed."""


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the project packages: dotted name -> file (a package's file is its __init__.py)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Dotted names one statement may refer to, most specific first per name (`from a import b`: a.b, then a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = ".".join(package[: len(package) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    return [name for alias in node.names for name in (f"{base}.{alias.name}", base)]


def explicit_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules its import statements, anywhere in it, name (`from a import b` names a.b if
    that is a module, else the package a; `import a.b` names a.b)."""
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)):
            candidates = _imported(node, name, is_package)
            if isinstance(node, ast.Import):
                targets.update(c for c in candidates if c in modules)
                continue
            for specific, package in zip(candidates[::2], candidates[1::2], strict=True):
                targets.add(specific if specific in modules else package)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def parents(module: str) -> list[str]:
    """The packages whose __init__.py Python runs before `module`: a.b.c -> [a, a.b]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(start: str, modules: dict[str, Path], graph: dict[str, set[str]] | None = None) -> set[str]:
    """Every project module that importing `start` runs: its imports, their parent packages, recursively."""
    graph = explicit_imports(modules) if graph is None else graph
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen or module not in modules:
            continue
        seen.add(module)
        todo.extend(graph[module])
        todo.extend(parents(module))
    return seen


def code_files(start: str, root: Path = ROOT) -> tuple[str, ...]:
    """The source files (repository-relative, sorted) of `closure(start)`: the code that module runs."""
    modules = project_modules(root)
    if start not in modules:
        raise KeyError(f"{start}: not a module of {', '.join(PACKAGES)} under {root}")
    return tuple(sorted(modules[m].relative_to(root).as_posix() for m in closure(start, modules)))


def stage_code(stage: str, root: Path = ROOT) -> tuple[str, ...]:
    """The code of a pipeline stage: `code_files` of its flow module flows/<stage>.py. DVC's code deps of the stage
    (flows.graph) and the code digest of its Prefect cache keys (tasks.cache) are both this list."""
    return code_files(f"flows.{stage}", root)
