"""tox and nox run one list of sessions: tox.ini's envlist is the noxfile's default sessions, and every tox
environment calls the nox session of its name."""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def noxfile():
    pytest.importorskip("nox", reason="nox is in the [dev] extra")
    spec = importlib.util.spec_from_file_location("selfsup_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tox() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def test_tox_envlist_is_the_nox_session_list(noxfile):
    envlist = [name.strip() for name in _tox()["tox"]["envlist"].split(",")]
    assert envlist == list(noxfile.nox.options.sessions)


def test_every_tox_environment_runs_the_nox_session_of_its_name(noxfile):
    tox = _tox()
    assert "{envname}" in tox["testenv"]["commands"] and "-m nox" in tox["testenv"]["commands"]
    overridden = [section for section in tox.sections() if section.startswith("testenv:")]
    assert not overridden, f"tox environments with their own commands drift from nox: {overridden}"
    registry = noxfile.nox.registry.get()
    for name in [*noxfile.nox.options.sessions, "slow", "demo"]:
        assert name in registry, f"noxfile has no session {name}"


def test_sessions_run_on_the_interpreter_nox_runs_on_even_behind_an_empty_environment(tmp_path, noxfile):
    """tox puts its own empty environment first on PATH; a session must still run the README's interpreter."""
    import os
    import subprocess
    import sys

    decoy = tmp_path / "bin"
    decoy.mkdir()
    fake = decoy / "python"
    fake.write_text("#!/bin/sh\necho 'the empty environment ran' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": os.pathsep.join([str(decoy), os.environ.get("PATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--no-venv", "--session", "shared", "--", "-k", "test_seeding", "-x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the empty environment ran" not in result.stderr
