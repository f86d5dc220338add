"""selfsup installs as one namespace: the wheel maps each folder under ``selfsup/``, the editable install
resolves to the working tree, and no generic top-level name (shared, projects, transfer) is importable."""

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import selfsup.moco
import selfsup.shared

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "selfsup"
    # build from a copy so the working tree gets no build/ artefacts
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".git", ".nox", "output", "demo_output", "__pycache__")
    )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(src),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return next(out.glob("selfsup-*.whl"))


def test_wheel_maps_every_folder_into_the_selfsup_namespace(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "selfsup/shared/backbones.py" in names and "selfsup/moco/model.py" in names
    assert "selfsup/transfer/__init__.py" in names
    tops = {name.split("/")[0] for name in names}
    assert tops <= {"selfsup", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert not any("/tests/" in name for name in names)
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )
    for script in ("moco-train", "moco-demo", "selfsup-eval"):
        assert script in entry_points
    zipfile.ZipFile(wheel).extractall(tmp_path)
    spec = importlib.machinery.PathFinder.find_spec("selfsup", [str(tmp_path)])
    assert spec is not None and list(spec.submodule_search_locations) == [str(tmp_path / "selfsup")]
    moco = importlib.machinery.PathFinder.find_spec("selfsup.moco", [str(tmp_path / "selfsup")])
    assert moco is not None and Path(moco.origin).parent == tmp_path / "selfsup" / "moco"


def test_editable_install_resolves_to_the_working_tree():
    assert Path(selfsup.shared.__file__).resolve().parent == ROOT / "shared"
    assert Path(selfsup.moco.__file__).resolve().parent == ROOT / "projects" / "moco"


@pytest.mark.parametrize("name", ["shared", "projects", "transfer", "moco"])
def test_no_generic_top_level_module(name):
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is not None)"
    # run outside the repository so the current folder is not on sys.path
    assert subprocess.run([sys.executable, "-c", code], cwd="/", check=False).returncode == 0


def test_console_scripts_run():
    for script in ("moco-train", "selfsup-eval"):
        path = shutil.which(script)
        assert path is not None, script
        assert subprocess.run([path, "--help"], capture_output=True, timeout=120).returncode == 0
