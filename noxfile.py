"""Test sessions. Every session runs in the one environment where ``pip install -e ".[dev,plot]"`` put
selfsup and torch (no per-session virtualenv, so no session ever installs its own torch).

    nox                 # lint + every test session (what CI and the README run)
    nox -s moco         # one project's tests
    nox -s demo         # the CPU demo of the README
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "shared", "moco", "cmc", "swav_unmix", "intl", "transfer", "e2e"]
nox.options.error_on_missing_interpreters = False

PYTEST = ("python", "-m", "pytest", "-q", "-m", "not slow")


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
    """transfer/: Detectron2 and DETR converters."""
    session.run(*PYTEST, "transfer/tests", *session.posargs, success_codes=[0, 5])


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
