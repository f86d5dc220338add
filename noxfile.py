"""Test sessions. Every session runs in the one environment where ``pip install -e ".[dev,plot]"`` put
selfsup and torch (no per-session virtualenv, so no session ever installs its own torch).

    nox                 # lint + every test session (what CI and the README run)
    nox -s moco         # one project's tests
    nox -s demo         # the CPU demo of the README
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = [
    "lint",
    "shared",
    "moco",
    "cmc",
    "swav_unmix",
    "intl",
    "transfer",
    "transfer_d2",
    "e2e",
]
nox.options.error_on_missing_interpreters = False
# Every session runs on the interpreter nox itself runs on. tox (tox.ini) calls nox from the README's environment
# but puts its own empty environment first on PATH; putting this interpreter's folder first makes ``python``,
# ``ruff`` and the selfsup commands mean the README's environment in every session, under nox and tox alike.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

PYTEST = ("python", "-m", "pytest", "-q", "-m", "not slow")
#: Source archives of Detectron2 and DETR (not on PyPI) beside the checkout on CI machines; absent for users.
VENDOR = Path(__file__).resolve().parent.parent / "shared" / "vendor"
IN_CI = os.environ.get("CI", "").lower() == "true"
DETECTRON2_HINT = (
    "Detectron2 is not installed: pip install 'setuptools<80' wheel ninja && pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git@02b5c4e295e990042a714712c21dc79b731e8833' "
    "(docs/transfer.md)"
)


def _importable(module: str) -> bool:
    """Whether the ``python`` the sessions run can import ``module``."""
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _install_transfer_extra(session: nox.Session) -> None:
    """pycocotools, transformers, timm, scipy: the ``[transfer]`` extra, as docs/transfer.md installs it."""
    session.run("python", "-m", "pip", "install", "-q", "-e", ".[transfer]")


def _build_detectron2(session: nox.Session, archive: Path) -> None:
    """Build Detectron2 from a vendored source archive the way its users do (no build isolation: it imports torch)."""
    folder = Path(tempfile.mkdtemp(prefix="detectron2-src-"))
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (source,) = folder.iterdir()
    session.run("python", "-m", "pip", "install", "-q", "setuptools<80", "wheel", "ninja")
    session.run(
        "python", "-m", "pip", "install", "-q", "--no-build-isolation", str(source), env={"MAX_JOBS": "2"}
    )
    shutil.rmtree(folder, ignore_errors=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def shared(session: nox.Session) -> None:
    """The core: backbones, data, distributed, optimisation, checkpoints, evaluation harness."""
    session.run(*PYTEST, "shared/tests", *session.posargs)


@nox.session
def moco(session: nox.Session) -> None:
    """projects/moco: model, loss, trainer, resume, torchrun, CLI errors."""
    session.run(*PYTEST, "projects/moco/tests", *session.posargs)


@nox.session
def cmc(session: nox.Session) -> None:
    """projects/cmc: views, encoders, memory banks, NCE, Image Mixture, trainers, resume, torchrun."""
    session.run(*PYTEST, "projects/cmc/tests", *session.posargs)


@nox.session
def swav_unmix(session: nox.Session) -> None:
    """projects/swav_unmix: Sinkhorn, swapped loss, queue, Un-Mix, model, trainer, resume, scripts, torchrun."""
    session.run(*PYTEST, "projects/swav_unmix/tests", *session.posargs)


@nox.session
def intl(session: nox.Session) -> None:
    """projects/intl: IterNorm, spectral power, group ZCA, losses, INTL and CW-RGP trainers, evaluate.py, scripts."""
    session.run(*PYTEST, "projects/intl/tests", *session.posargs)


@nox.session
def transfer(session: nox.Session) -> None:
    """transfer/ without Detectron2: converters, presets, COCO scoring, DETR (vendored checkout) and HF DETR."""
    _install_transfer_extra(session)
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-m",
        "not slow and not detectron2",
        "transfer/tests",
        *session.posargs,
    )


@nox.session
def transfer_d2(session: nox.Session) -> None:
    """transfer/ against the real Detectron2: shipped configs, weights in the built models, selfsup-transfer.

    Uses an installed Detectron2; else builds the vendored source (../shared/vendor) when it is there; else skips
    with the install command, except under CI=true, where it never skips."""
    _install_transfer_extra(session)
    if not _importable("detectron2"):
        archives = sorted(VENDOR.glob("detectron2-*.tar.gz"))
        if archives:
            _build_detectron2(session, archives[-1])
        elif IN_CI:
            session.error(f"CI needs Detectron2 and found no archive in {VENDOR}; {DETECTRON2_HINT}")
        else:
            session.skip(DETECTRON2_HINT)
    session.run(
        "python", "-m", "pytest", "-q", "-m", "detectron2 and not slow", "transfer/tests", *session.posargs
    )


@nox.session
def e2e(session: nox.Session) -> None:
    """Cross-project and end-to-end tests (packaging, train -> evaluate)."""
    session.run(*PYTEST, "tests", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """The checks marked slow (kept out of CI)."""
    session.run("python", "-m", "pytest", "-q", "-m", "slow", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The README demo: MoCo on the embedded digits, then kNN and linear evaluation."""
    session.run("moco-demo", *session.posargs)
