"""``shared/`` is grouped by concern: every module lives in a sub-package whose ``__init__`` says what belongs
there, and no module of the core imports a project."""

import ast
import re
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


#: Method and repository names that must not name anything in the training core.
METHOD_NAME = re.compile(r"moco|cmc|insdis|swav|unmix|intl|cwrgp|cw_rgp|wmse|eveningglow", re.IGNORECASE)
#: Folders of shared/ whose job is to read every original's checkpoints and protocols (they name them).
HARNESS = {"evaluation", "checkpoints", "tests"}
#: Names the harness needs to rebuild an original without importing a project, and normalisation names that
#: checkpoints store (``input_normalization``), which ``selfsup-eval`` resolves.
ALLOWED = {
    "models/alexnet.py": {"CMCAlexNetHalf", "CMC_ALEXNET_HALF", "build_cmc_alexnet_half", "cmc_alexnet_half"},
    "data/transforms.py": {"swav", "cifar_swav"},
}


def _defined_names(tree: ast.AST) -> set[str]:
    """Functions, classes, assignment targets, arguments and short identifier-like strings (registry keys)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"[A-Za-z_][\w.-]{0,40}", node.value)
        ):
            names.add(node.value)
    return names


def test_the_training_core_names_no_method():
    offenders = {}
    for path in sorted(SHARED.rglob("*.py")):
        relative = path.relative_to(SHARED)
        if relative.parts[0] in HARNESS:
            continue
        named = {n for n in _defined_names(ast.parse(path.read_text())) if METHOD_NAME.search(n)}
        named -= ALLOWED.get(relative.as_posix(), set())
        if named:
            offenders[relative.as_posix()] = sorted(named)
    assert not offenders, f"method-specific code in shared/ (move it into its project): {offenders}"
