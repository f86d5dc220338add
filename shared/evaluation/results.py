"""Result files: one JSON per run, appended as one line to a results table (JSON Lines).

A result holds at least ``protocol``, ``preset``, ``top1`` and ``top5`` (percent), ``hyperparameters`` (the
resolved preset), ``input`` (transform description), ``dataset``, ``checkpoint`` (path, SHA-256, detected
format, load report), ``curve`` (one entry per epoch for trained protocols) and provenance (package version,
time, argv). The table defaults to ``results.jsonl`` beside the result file (``--results_table`` to choose
another).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RESULT_FORMAT", "append_to_table", "default_table_path", "load_results", "write_result"]

RESULT_FORMAT = "selfsup-eval-result"


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def provenance() -> dict[str, Any]:
    """Package version, time and command line of this process."""
    from selfsup.shared import __version__

    return {
        "selfsup_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": list(sys.argv),
    }


def default_table_path(output: str | os.PathLike[str]) -> Path:
    """``results.jsonl`` in the folder of ``output``."""
    return Path(output).parent / "results.jsonl"


def append_to_table(result: dict[str, Any], table: str | os.PathLike[str]) -> Path:
    """Append ``result`` as one JSON line to ``table`` (one ``write`` call, so lines never interleave)."""
    path = Path(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(result, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_result(
    result: dict[str, Any],
    output: str | os.PathLike[str],
    *,
    results_table: str | os.PathLike[str] | bool | None = None,
) -> Path:
    """Write ``result`` to ``output`` atomically and append it to the results table; returns ``output``.

    ``results_table``: a path, ``None``/``True`` for ``results.jsonl`` beside ``output``, ``False`` for none.
    """
    result = {"format": RESULT_FORMAT, **result}
    path = Path(output)
    _atomic_write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", path)
    if results_table is not False:
        table = default_table_path(path) if results_table in (None, True) else Path(results_table)
        append_to_table(result, table)
    return path


def load_results(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Results from ``.json`` files (one result) and ``.jsonl`` tables (one per line), in the given order."""
    results: list[dict[str, Any]] = []
    for item in paths:
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"--results: {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        results.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"--results: {path} line {number} is not JSON ({err})") from err
        else:
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"--results: {path} is not a JSON result file ({err})") from err
            results.extend(loaded if isinstance(loaded, list) else [loaded])
    for result in results:
        if "top1" not in result or "protocol" not in result:
            raise ValueError(f"--results: an entry lacks 'protocol'/'top1' (keys: {sorted(result)[:10]})")
    return results
