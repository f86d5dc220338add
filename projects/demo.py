"""``selfsup-demo --method NAME``: each method's CPU demo on the embedded digits, offline, in about 3 minutes.

Every demo pre-trains a small network with its method, then evaluates the pretrained encoder and the same
network at random initialisation with a kNN classifier and a linear probe, side by side. Options after
``--method NAME`` go to that method's demo (``selfsup-demo --method moco --help`` lists them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

#: The one registry of demos: method name -> ``"module"`` with a ``main(argv, prog) -> int``, or
#: ``"module:function"`` when one module serves several methods. A project adds its line here when it lands.
DEMOS: dict[str, str] = {
    "moco": "selfsup.moco.demo",
    "cmc": "selfsup.cmc.demo",
    "cmc-moco": "selfsup.cmc.demo_moco",
    "swav": "selfsup.swav_unmix.demo:main_swav",
    "unmix": "selfsup.swav_unmix.demo:main_unmix",
    "intl": "selfsup.intl.demo:main_intl",
    "cwrgp": "selfsup.intl.demo:main_cwrgp",
}


def load_demo(method: str) -> Callable[..., int]:
    """The entry point ``(argv, prog) -> exit code`` registered for ``method`` in :data:`DEMOS`."""
    module, _, function = DEMOS[method].partition(":")
    return getattr(importlib.import_module(module), function or "main")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup-demo",
        description="Each method's CPU demo on the embedded digits, offline, in about 3 minutes: pre-training, "
        "then kNN and linear-probe accuracy of the pretrained encoder and of the same network at random "
        "initialisation, side by side.",
        epilog="Options after --method NAME go to that method's demo; selfsup-demo --method NAME --help lists them.",
        add_help=False,
    )
    parser.add_argument("--method", choices=sorted(DEMOS), default=None, help="the method to demonstrate")
    parser.add_argument("-h", "--help", action="store_true", help="this help, or the method's with --method")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.method is None:
        if args.help:
            parser.print_help()
            return 0
        parser.error(f"--method is required: one of {', '.join(sorted(DEMOS))}")
    demo = load_demo(args.method)
    return demo([*rest, *(["--help"] if args.help else [])], prog=f"selfsup-demo --method {args.method}")


if __name__ == "__main__":
    sys.exit(main())
