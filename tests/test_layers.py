"""The package imports only downward: each module may import its own layer and the layers below it, and
no modules import each other around a loop.

The layers, bottom to top, are the table of docs/architecture.md; every import counts, those inside functions
too, so a lazy import cannot hide a dependency that runs up the layers.
"""

import ast
from fnmatch import fnmatchcase
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exporter"

# bottom first: module prefixes of each layer, room by room (base, blocks, models, pipeline, measure, cli);
# a prefix with `*` matches one module name part there
LAYERS = [
    ("base", ["exporter.base"]),
    ("numerics", ["exporter.base.numerics"]),
    ("data", ["exporter.base.data"]),
    ("lowerings", ["exporter.blocks.lowering"]),
    ("blocks", ["exporter.blocks"]),
    ("models", ["exporter.models"]),
    # the targets' registry and recipe sections, from which the recipe is assembled
    ("sections", ["exporter.pipeline.targets.registry", "exporter.pipeline.targets.*.section"]),
    ("recipe", ["exporter.pipeline.recipe"]),
    ("stages", ["exporter.pipeline.stages"]),
    ("targets", ["exporter.pipeline.targets"]),
    ("pipeline", ["exporter.pipeline"]),
    ("measure", ["exporter.measure"]),
    ("studies", ["exporter.measure.studies"]),
    ("cli", ["exporter.cli"]),
    ("package", ["exporter"]),  # the package itself (exporter/__init__.py): its face, the Python API
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix matches `module`."""
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = fnmatchcase(module, prefix + ".*") and prefix != "exporter"  # the package: its own layer
            if (fnmatchcase(module, prefix) or inside) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return rank


def imported(path: Path) -> set[str]:
    """The package's modules that `path` imports (a name imported from a package, if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name for name in names if name == "exporter" or name.startswith("exporter.")}
    return found


def upward_imports() -> list[str]:
    found = []
    for module, path in MODULES.items():
        rank = layer_of(module)
        for target in sorted(imported(path)):
            if layer_of(target) > rank:
                found.append(f"{module} ({LAYERS[rank][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def import_cycles() -> list[list[str]]:
    """The groups of modules that import one another around a loop (each sorted), lazy imports included."""
    graph = {module: imported(path) & set(MODULES) for module, path in MODULES.items()}
    reach = {module: reachable(graph, module) for module in graph}
    groups = {
        tuple(sorted(m for m in reach[module] if module in reach[m]))
        for module in graph
        if module in reach[module]
    }
    return sorted(list(group) for group in groups)


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_the_check_sees_lazy_imports(tmp_path, monkeypatch):
    """An import inside a function counts: the check is not blind to the usual way of hiding one."""
    planted = tmp_path / "numerics_probe.py"
    planted.write_text("def f():\n    from exporter.pipeline.builder import Pipeline\n    return Pipeline\n")
    monkeypatch.setitem(MODULES, "exporter.base.numerics.probe", planted)
    assert upward_imports() == [
        "exporter.base.numerics.probe (numerics) imports exporter.pipeline.builder (pipeline)"
    ]


def test_no_modules_import_each_other_around_a_loop():
    assert import_cycles() == []


def test_the_cycle_check_sees_a_loop(tmp_path, monkeypatch):
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("from exporter.models.probe_second import f\n")
    second.write_text("def f():\n    from exporter.models import probe_first\n")
    monkeypatch.setitem(MODULES, "exporter.models.probe_first", first)
    monkeypatch.setitem(MODULES, "exporter.models.probe_second", second)
    assert import_cycles() == [["exporter.models.probe_first", "exporter.models.probe_second"]]


def test_the_architecture_page_shows_these_layers():
    """The architecture page's layer table names the same layers, top first."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = [line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| ")]
    assert rows[1:] == [name for name, _ in reversed(LAYERS)]
