"""PEP 517 backend: poetry-core, with an editable install that keeps the ``selfsup`` namespace.

poetry-core builds the regular wheel correctly (``shared/`` -> ``selfsup/shared`` and so on, from the
``packages`` table in ``pyproject.toml``). Its editable wheel, however, only adds the *source* folders to
``sys.path`` through a ``.pth`` file, which would expose ``shared``, ``moco`` and ``transfer`` as top-level
modules and no ``selfsup`` at all. This wrapper post-processes that editable wheel: the ``.pth`` file is
replaced by a ``selfsup/__init__.py`` whose ``__path__`` points at the repository folders, so
``import selfsup.shared`` / ``import selfsup.moco`` resolve to the working tree and nothing generic becomes a
top-level name in site-packages.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (named in pyproject's build-system requires)
    import tomli as tomllib

from poetry.core.masonry import api as _poetry

build_sdist = _poetry.build_sdist
build_wheel = _poetry.build_wheel
get_requires_for_build_sdist = _poetry.get_requires_for_build_sdist
get_requires_for_build_wheel = _poetry.get_requires_for_build_wheel
get_requires_for_build_editable = _poetry.get_requires_for_build_editable
prepare_metadata_for_build_wheel = _poetry.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _poetry.prepare_metadata_for_build_editable

_ROOT = Path(__file__).resolve().parent.parent


def _namespace_dirs() -> list[str]:
    """Folders that hold the ``selfsup`` sub-packages, read from ``[tool.poetry] packages``."""
    config = tomllib.loads((_ROOT / "pyproject.toml").read_text())
    dirs: list[str] = []
    for entry in config["tool"]["poetry"]["packages"]:
        if entry.get("to") != "selfsup":
            raise ValueError(f"pyproject.toml: every package must map into 'selfsup', got {entry}")
        folder = str((_ROOT / entry.get("from", ".")).resolve())
        if folder not in dirs:
            dirs.append(folder)
    return dirs


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _poetry.build_editable(wheel_directory, config_settings, metadata_directory)
    path = os.path.join(wheel_directory, name)
    init = (
        '"""Editable install of selfsup: sub-packages live in the working tree."""\n'
        f"__path__ = {_namespace_dirs()!r}\n"
    ).encode()
    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    record_name = next(n for n in entries if n.endswith(".dist-info/RECORD"))
    kept = {n: d for n, d in entries.items() if not n.endswith(".pth") and n != record_name}
    kept["selfsup/__init__.py"] = init
    record = [_record_line(n, d) for n, d in kept.items()] + [f"{record_name},,"]
    kept[record_name] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for n, d in kept.items():
            dst.writestr(n, d)
    return name
