"""`python -m r3.devtools.layers`: print the import layers of r3/, tasks/ and flows/; exit 1 on an import cycle
or on an import that climbs from a lower layer to a higher one (or across to a peer of the same layer).

A module belongs to the unit of LAYERS with the longest matching dotted prefix. A unit may import itself and
any unit of a lower layer. Both rules hold for every import, deferred ones (inside a function) included: an
import moved into a function to dodge a cycle still makes one, so the code that both modules need moves instead.
"""

import argparse
import sys
from pathlib import Path

from r3.devtools.imports import ROOT, explicit_imports, project_modules

LAYERS: tuple[tuple[str, ...], ...] = (
    ("r3", "r3.config", "r3.paths", "r3.machine", "r3.devtools"),
    ("r3.params",),
    ("r3.world",),
    ("r3.data",),
    ("r3.models",),
    ("r3.rewards",),
    ("r3.evals",),
    ("r3.train",),
    ("r3.train.sft", "r3.rl"),
    ("r3.train.pretrain",),
    ("tasks",),
    ("flows",),
)
"""Units from the bottom up: the foundation (configs, paths, the machine record, these checks; params.yaml reading), the synthetic world, its tables, the models,
rewards, evaluation, what both training stages share, the two stages (peers: neither imports the other), the
pretrain stage (the SFT loop on general skills), the Prefect tasks and the flows."""


def unit_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> tuple[int, str] | None:
    """(layer index, unit) of a module, or None when no unit holds it."""
    matches = [(len(unit), i, unit) for i, layer in enumerate(layers) for unit in layer
               if module == unit or module.startswith(unit + ".")]
    if not matches:
        return None
    _, layer, unit = max(matches)
    return layer, unit


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of the graph: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """One line per module outside every unit, per upward or sideways import, and per import cycle."""
    problems = [f"no layer: {m}" for m in sorted(graph) if unit_of(m, layers) is None]
    for source in sorted(graph):
        placed = unit_of(source, layers)
        for target in sorted(graph[source]):
            aimed = unit_of(target, layers)
            if placed is None or aimed is None or aimed[1] == placed[1] or aimed[0] < placed[0]:
                continue
            kind = "upward" if aimed[0] > placed[0] else "sideways"
            problems.append(f"{kind} import: {source} ({placed[1]}, layer {placed[0]}) -> {target} "
                            f"({aimed[1]}, layer {aimed[0]})")
    problems += [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return problems


def describe(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> str:
    """The layers from the top down, each unit with its module count."""
    counts: dict[str, int] = {}
    for module in graph:
        placed = unit_of(module, layers)
        if placed is not None:
            counts[placed[1]] = counts.get(placed[1], 0) + 1
    lines = [f"{i}: " + " | ".join(f"{unit} ({counts.get(unit, 0)})" for unit in layer)
             for i, layer in reversed(list(enumerate(layers)))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    modules = project_modules(args.root)
    graph = explicit_imports(modules)
    print(describe(graph))
    problems = violations(graph)
    for line in problems:
        print(line, file=sys.stderr)
    edges = sum(len(t) for t in graph.values())
    print(f"{'FAILED' if problems else 'ok'}: {len(graph)} modules, {edges} imports, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
