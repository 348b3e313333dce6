"""The package's layers, read from its imports: no import cycles; the science core imports nothing
from orchestration nor Ray; the config schema imports no data module; weak labels and features
import nothing from the grid.

Every import counts, those inside functions included (a cycle hidden in a function is still a
cycle). A module and a subpackage of the same name count alike: rules match the first component
after ``w2sweep.`` (``w2sweep.frontier`` and ``w2sweep.frontier.plots`` are both ``frontier``).
"""

import ast
import shutil
from pathlib import Path

import pytest

import w2sweep

PACKAGE = Path(w2sweep.__file__).parent
CORE = {"config", "config_checks", "config_loading", "subgrids", "costs", "data", "models", "losses", "train", "metrics", "results", "frontier", "storage",
        "layout", "methods", "prompting", "weak", "features", "grid", "cells", "report", "status", "pull", "search",
        "prerequisites", "shots", "consistency", "capacity", "truncation", "cell_objects", "memory"}
ORCHESTRATION = {"sweep", "claims", "distributed", "telemetry", "cli", "cli_output", "raycompat", "trackers"}
FORBIDDEN = {  # component -> components it must not import, and why
    "config": ({"data"}, "the config schema knows no dataset (references are checked by grid.plan)"),
    "config_checks": ({"data"}, "the config schema knows no dataset (references are checked by grid.plan)"),
    "config_loading": ({"data"}, "the config schema knows no dataset (references are checked by grid.plan)"),
    "weak": ({"grid"}, "weak labels are computed from specs, not from the grid"),
    "features": ({"grid"}, "features are computed from specs, not from the grid"),
}


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package by its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = ("w2sweep", *path.relative_to(package).with_suffix("").parts)
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every absolute name `path`'s imports name (``from a import b`` names ``a`` and ``a.b``),
    relative imports resolved against the module's package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def component(name: str) -> str | None:
    """``w2sweep.data.pools`` -> ``data``; None for the package itself or a name outside it."""
    parts = name.split(".")
    return parts[1] if parts[0] == "w2sweep" and len(parts) > 1 else None


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours an imported name is, or is in (``w2sweep.data.pools_for`` -> ``w2sweep.data``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (each group sorted)."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in graph}
    groups = {tuple(sorted({m} | {o for o in reachable[m] if m in reachable[o]}))
              for m in graph if m in reachable[m]}
    return [list(g) for g in sorted(groups)]


def layer_problems(package: Path) -> list[str]:
    """One line per broken rule in the package at `package`; empty when its layers hold."""
    known = modules(package)
    graph, problems = {}, []
    for name, path in known.items():
        names = imported_names(name, path)
        ours = {_resolve(n, known) for n in names if n.split(".")[0] == "w2sweep"}
        # A package's __init__ runs before its modules: importing it is no edge back from them.
        graph[name] = {m for m in ours if m and m != name and not name.startswith(m + ".")}
        here = component(name)
        if here in CORE:
            problems += [f"{name} imports ray: the science core runs without Ray"
                         for n in sorted(names) if n.split(".")[0] == "ray"][:1]
            problems += [f"{name} imports {m}: the science core imports no orchestration"
                         for m in sorted(graph[name]) if component(m) in ORCHESTRATION]
        if here in FORBIDDEN:
            banned, why = FORBIDDEN[here]
            problems += [f"{name} imports {m}: {why}" for m in sorted(graph[name]) if component(m) in banned]
    problems += [f"import cycle: {' <-> '.join(group)}" for group in _cycles(graph)]
    return problems


def test_the_package_keeps_its_layers():
    assert layer_problems(PACKAGE) == []


def test_every_module_of_the_package_is_in_a_layer():
    """A new top-level module must be placed: core or orchestration (the rules above read these)."""
    placed = CORE | ORCHESTRATION
    assert {component(m) for m in modules(PACKAGE)} - {None} <= placed


PLANTED = [  # (file, line appended inside a function, what the checker must say)
    ("metrics.py", "from w2sweep import sweep", "w2sweep.metrics imports w2sweep.sweep: the science core imports no orchestration"),
    ("data/pools.py", "from ..claims import Claims", "w2sweep.data.pools imports w2sweep.claims: the science core"),
    ("costs.py", "import ray.tune", "w2sweep.costs imports ray"),
    ("config.py", "from w2sweep.data import pools_for", "w2sweep.config imports w2sweep.data: the config schema knows no dataset"),
    ("features.py", "from w2sweep.grid import Cell", "w2sweep.features imports w2sweep.grid"),
    ("layout.py", "from w2sweep import results", "import cycle: w2sweep.layout <-> w2sweep.results"),
    ("frontier/stats.py", "from w2sweep.frontier import tables", "import cycle: w2sweep.frontier.stats <-> w2sweep.frontier.tables"),
]


@pytest.mark.parametrize("file,line,says", PLANTED, ids=[p[1] for p in PLANTED])
def test_the_checker_finds_a_planted_import(tmp_path, file, line, says):
    copy = tmp_path / "w2sweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layer_problems(copy) == []
    with (copy / file).open("a") as f:
        f.write(f"\n\ndef _planted():\n    {line}\n")
    problems = layer_problems(copy)
    assert any(p.startswith(says) for p in problems), problems
