"""The domain library must stay free of platform imports (the layering rule of DESIGN.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"kfp", "kserve", "components", "pipelines", "serving", "retention_cli"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_retention_imports_no_platform_layer():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
        for p in (ROOT / "retention").rglob("*.py")
        if _imports(p) & FORBIDDEN
    }
    assert offenders == {}


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
