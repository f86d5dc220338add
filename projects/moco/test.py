"""``python -m selfsup.moco.test``: the unofficial MoCo's ``test.py`` under its original name, with the same
flags and output. The code is :mod:`selfsup.moco.linear_eval` (linear evaluation of a run's checkpoint)."""

from __future__ import annotations

import sys

from selfsup.moco import linear_eval


def main(argv: list[str] | None = None) -> int:
    return linear_eval.main(argv, prog="python -m selfsup.moco.test")


if __name__ == "__main__":
    sys.exit(main())
