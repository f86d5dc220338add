"""selfsup installs as one namespace: the wheel maps each folder under ``selfsup/``, the editable install
resolves to the working tree, and no generic top-level name (shared, projects, transfer) is importable."""

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import selfsup.moco
import selfsup.shared

ROOT = Path(__file__).resolve().parents[1]


PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # requires-python = ">=3.10"; the newest we know of


def copy_source(dest: Path) -> Path:
    """The repository without VCS and run artefacts, so that builds leave nothing in the working tree."""
    ignore = shutil.ignore_patterns(".git", ".nox", ".tox", "output", "demo_output", "__pycache__", "build")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def build_wheel(python: str, src: Path, out: Path) -> Path:
    """``pip wheel`` as a user runs it: build isolation, so pip installs the build backend's requirements
    itself (nothing in the test environment is assumed)."""
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return next(out.glob("selfsup-*.whl"))


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` on this machine (PATH or pyenv), or None."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    candidates = [shutil.which(f"python{version}")]
    candidates += [str(p) for root in roots for p in sorted(root.glob(f"{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True
        )
        if probe.returncode == 0 and probe.stdout.decode().strip() == str(
            tuple(map(int, version.split(".")))
        ):
            return candidate
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = copy_source(tmp_path_factory.mktemp("src") / "selfsup")
    return build_wheel(sys.executable, src, tmp_path_factory.mktemp("wheel"))


def test_wheel_maps_every_folder_into_the_selfsup_namespace(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "selfsup/shared/models/backbones.py" in names and "selfsup/moco/model.py" in names
    assert "selfsup/transfer/__init__.py" in names and "selfsup/demo.py" in names
    assert "selfsup/cmc/train.py" in names and "selfsup/cmc/imagenet100.txt" in names
    assert "selfsup/swav_unmix/train.py" in names and "selfsup/intl/cwrgp_train.py" in names
    assert (
        "selfsup/transfer/configs/detectron2/voc_R_50_C4_24k.yaml" in names
    )  # selfsup-transfer's shipped configs
    assert "selfsup/transfer/configs/detectron2/Base-RCNN-C4-BN.yaml" in names
    tops = {name.split("/")[0] for name in names}
    assert tops <= {"selfsup", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert not any("/tests/" in name for name in names)
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )
    scripts = ("moco-train", "moco-demo", "selfsup-demo", "selfsup-eval", "selfsup-convert", "cmc-train")
    for script in (*scripts, "swav-unmix-train", "intl-train", "cwrgp-train", "selfsup-transfer"):
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
    for script in ("moco-train", "selfsup-eval", "selfsup-convert"):
        # the scripts of the interpreter running the tests (tox may run it without activating its environment)
        beside = Path(sys.executable).parent / script
        path = str(beside) if beside.is_file() else shutil.which(script)
        assert path is not None, script
        assert subprocess.run([path, "--help"], capture_output=True, timeout=120).returncode == 0


@pytest.mark.parametrize("version", PYTHONS)
def test_wheel_and_editable_install_build_on_every_supported_python(version, tmp_path):
    """Both build hooks (the wheel and our editable wheel) run on each interpreter from 3.10 on, and the
    editable install resolves ``selfsup.shared`` to the source tree (no dependency is installed: the package's
    own ``__init__`` files import none)."""
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    src = copy_source(tmp_path / "selfsup")
    wheel = build_wheel(python, src, tmp_path / "wheel")
    assert "selfsup/shared/models/backbones.py" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([python, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    venv_python = str(tmp_path / "venv" / "bin" / "python")
    install = [venv_python, "-m", "pip", "install", "--no-deps", "-q", "-e", str(src)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    code = "import selfsup.shared as s; print(s.__file__)"
    where = subprocess.run([venv_python, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert Path(where.stdout.strip()).resolve() == src / "shared" / "__init__.py"
