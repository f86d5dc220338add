"""``python -m selfsup.cmc.eval_moco_ins``: the CMC repository's ``eval_moco_ins.py`` command line (InsDis/MoCo
linear probe, preset ``cmc_insdis``); the same as ``python -m selfsup.cmc.linear --moco_ins``."""

from __future__ import annotations

import sys

from selfsup.cmc.linear import main as linear_main


def main(argv: list[str] | None = None) -> int:
    return linear_main(argv, moco_ins=True)


if __name__ == "__main__":
    sys.exit(main())
