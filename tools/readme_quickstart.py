"""Print the command lines of the README's Quick start block, one per line, exactly as written.

``.ci/run`` runs them in a fresh virtual environment, so CI tests what a new user types (reading them from the
README keeps the two the same). The block is the first fenced code block under the ``## Quick start`` heading;
blank lines and ``#`` comment lines are left out.
"""

from __future__ import annotations

import sys
from pathlib import Path


def quickstart_lines(readme: str) -> list[str]:
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "## quick start")
    except StopIteration:
        raise ValueError("README has no '## Quick start' section") from None
    body = lines[start + 1 :]
    try:
        fence = next(i for i, line in enumerate(body) if line.startswith("```"))
        end = next(i for i in range(fence + 1, len(body)) if body[i].startswith("```"))
    except StopIteration:
        raise ValueError("README's Quick start section has no complete fenced code block") from None
    if any(line.startswith("## ") for line in body[:fence]):
        raise ValueError("README's Quick start section has no fenced code block before the next section")
    commands = [line.strip() for line in body[fence + 1 : end]]
    return [line for line in commands if line and not line.startswith("#")]


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "README.md")
    try:
        print("\n".join(quickstart_lines(path.read_text())))
    except (OSError, ValueError) as err:
        print(f"readme_quickstart: {path}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
