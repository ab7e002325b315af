"""The layering rules of DESIGN.md and the README's Layout, checked on the import statements.

``retention`` imports no platform code (kfp, kserve, components, pipelines, serving, the CLI), and
its own packages are layered: the modules at its top (contract, catalogue, results, config,
fileio, ...) at the bottom, then data, models, then evaluation / decision / messaging /
experiments, then store / deploy. A package imports only from its own layer or below, and no two
packages import each other, directly or round a longer loop. Lazy imports inside functions count.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"kfp", "kserve", "components", "pipelines", "serving", "retention_cli"}
# The package's own layers, bottom first; the modules directly in retention/ are layer 0.
LAYERS = (
    (),
    ("data",),
    ("models",),
    ("evaluation", "decision", "messaging", "experiments", "monitoring"),
    ("store", "deploy"),
    # Insights read the released models and phrase them with the writer's base model; the
    # registry pushes releases (store), their manifests (deploy) and references (monitoring).
    ("insights", "registry"),
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _unit(package: Path, path: Path) -> str:
    """The part of ``retention`` a file belongs to: its subpackage, or its own module name."""
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0]


def _targets(package: Path, path: Path) -> set[str]:
    """The parts of ``retention`` that ``path`` imports (absolute and relative imports)."""
    here = path.relative_to(package.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            # ``from retention import catalogue`` imports the module retention.catalogue.
            modules = [module + [a.name] for a in node.names] if len(module) == 1 else [module]
        else:
            continue
        for m in modules:
            if m[0] == package.name and len(m) > 1:
                out.add(m[1])
    return out


def layer_of(unit: str, package: Path) -> int | None:
    if (package / f"{unit}.py").is_file():
        return 0
    return next((k for k, units in enumerate(LAYERS) if unit in units), None)


def import_graph(package: Path) -> dict[str, set[str]]:
    """unit -> the other units it imports."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        unit = _unit(package, path)
        if unit == "__init__":
            continue
        graph.setdefault(unit, set()).update(_targets(package, path) - {unit})
    return graph


def layer_violations(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        unit = _unit(package, path)
        if unit == "__init__":
            continue
        mine = layer_of(unit, package)
        if mine is None:
            out.append(f"{path.relative_to(package.parent)}: '{unit}' is in no layer of LAYERS")
            continue
        for target in sorted(_targets(package, path) - {unit}):
            theirs = layer_of(target, package)
            if theirs is not None and theirs > mine:
                out.append(
                    f"{path.relative_to(package.parent)}: {unit} (layer {mine}) imports "
                    f"{target} (layer {theirs})"
                )
    return out


def import_cycles(package: Path) -> list[list[str]]:
    """Every cycle of the unit graph, each once, as the loop of units."""
    graph = import_graph(package)
    cycles, seen = [], set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                loop = path[path.index(nxt) :]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    cycles.append([*loop, nxt])
            elif nxt in graph:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


def test_retention_imports_no_platform_layer():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
        for p in (ROOT / "retention").rglob("*.py")
        if _imports(p) & FORBIDDEN
    }
    assert offenders == {}


def test_retention_packages_import_only_their_layer_or_below():
    assert layer_violations(ROOT / "retention") == []


def test_retention_packages_import_each_other_in_no_cycle():
    assert import_cycles(ROOT / "retention") == []


def test_every_retention_package_has_a_layer():
    packages = {p.parent.name for p in (ROOT / "retention").glob("*/__init__.py")}
    assert packages == {u for layer in LAYERS for u in layer}


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "retention"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_checker_sees_an_upward_import(tmp_path):
    package = _plant(
        tmp_path,
        {
            "results.py": "",
            "models/__init__.py": "",
            "models/fit.py": "def f():\n    from retention.evaluation import gates\n",
            "evaluation/__init__.py": "",
            "evaluation/gates.py": "from retention.models import fit\n",
        },
    )
    assert layer_violations(package) == [
        "retention/models/fit.py: models (layer 2) imports evaluation (layer 3)"
    ]
    assert import_cycles(package) == [["evaluation", "models", "evaluation"]]


def test_checker_sees_bottom_modules_relative_imports_and_unknown_packages(tmp_path):
    package = _plant(
        tmp_path,
        {
            "config.py": "from retention import catalogue\n",
            "catalogue.py": "from . import config\n",  # a cycle at the bottom
            "data/__init__.py": "",
            "data/x.py": "from ..store import push\n",  # relative, two layers up
            "store/__init__.py": "",
            "store/push.py": "",
            "extras/__init__.py": "",
        },
    )
    assert layer_violations(package) == [
        "retention/data/x.py: data (layer 1) imports store (layer 4)",
        "retention/extras/__init__.py: 'extras' is in no layer of LAYERS",
    ]
    assert import_cycles(package) == [["catalogue", "config", "catalogue"]]


def test_same_layer_packages_may_import_each_other_one_way(tmp_path):
    package = _plant(
        tmp_path,
        {
            "store/__init__.py": "",
            "store/push.py": "from retention.deploy.manifests import render\n",
            "deploy/__init__.py": "",
            "deploy/manifests.py": "import retention.results\n",
            "results.py": "",
        },
    )
    assert layer_violations(package) == [] and import_cycles(package) == []
    (package / "deploy" / "apply.py").write_text("from retention.store import push\n")
    assert import_cycles(package) == [["deploy", "store", "deploy"]]


def test_components_do_not_import_pipelines_or_serving():
    for p in (ROOT / "components").rglob("*.py"):
        assert not _imports(p) & {"pipelines", "serving", "retention_cli"}, p


def test_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from kfp import dsl\n    import serving.x\n")
    assert _imports(f) >= {"kfp", "serving"}


def test_serving_and_pipelines_stay_apart():
    for p in (ROOT / "serving").rglob("*.py"):
        assert not _imports(p) & {"kfp", "components", "pipelines", "retention_cli"}, p
    for p in (ROOT / "pipelines").rglob("*.py"):
        assert not _imports(p) & {"serving", "kserve"}, p
