"""``shared/`` is grouped by concern: every module lives in a sub-package whose ``__init__`` says what belongs
there, and no module of the core imports a project."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
SUBPACKAGES = sorted(p for p in SHARED.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")
PROJECTS = sorted(p.name for p in (ROOT / "projects").iterdir() if (p / "__init__.py").is_file())


def test_shared_holds_only_sub_packages():
    loose = sorted(p.name for p in SHARED.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly in shared/ (put each in the sub-package of its concern): {loose}"
    assert {p.name for p in SUBPACKAGES} >= {
        "models",
        "data",
        "distributed",
        "optim",
        "checkpoints",
        "runtime",
        "evaluation",
    }


@pytest.mark.parametrize("package", SUBPACKAGES, ids=lambda p: p.name)
def test_each_sub_package_says_what_belongs_there(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert docstring and len(docstring.split()) >= 10, package
    for module in package.glob("*.py"):
        if module.name != "__init__.py":
            assert module.stem in docstring, f"{package.name}/__init__ does not mention {module.name}"


def test_the_core_never_imports_a_project():
    assert "moco" in PROJECTS
    for path in SHARED.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "selfsup" and len(parts) > 1 and parts[1] in PROJECTS), (path, name)
