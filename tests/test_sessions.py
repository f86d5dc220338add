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
