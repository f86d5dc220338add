"""ImageNet-100, CMC's 100-class subset of ImageNet, and a command that builds it from an ImageNet folder.

The class list ships with the package (``imagenet100.txt``: HobbitLong/CMC, commit ``7b227be``, BSD-2-Clause,
Copyright 2020 Yonglong Tian; MD5 ``9974508e5d4cc0098b70e8b6a0fe6067``). The original leaves building the
``train/`` and ``val/`` folders to the user (HobbitLong/CMC#22, #24);
``python -m selfsup.cmc.imagenet100 --imagenet /data/imagenet --output /data/imagenet100`` does it with symbolic
links (``--copy`` copies), for ``--dataset imagenet100 --data_folder /data/imagenet100``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

__all__ = ["CLASS_LIST_MD5", "build_imagenet100", "imagenet100_classes"]

CLASS_LIST_MD5 = "9974508e5d4cc0098b70e8b6a0fe6067"


def imagenet100_classes() -> list[str]:
    """The 100 WordNet ids, in the file's order (checked against the published MD5)."""
    data = resources.files("selfsup.cmc").joinpath("imagenet100.txt").read_bytes()
    if hashlib.md5(data).hexdigest() != CLASS_LIST_MD5:
        raise ValueError("imagenet100.txt does not match its published MD5; reinstall selfsup")
    return data.decode().split()


def build_imagenet100(imagenet: Path, output: Path, *, copy: bool = False) -> dict[str, int]:
    """Link (or copy) the 100 classes of ``imagenet/{train,val}`` into ``output/{train,val}``; returns the number
    of class folders per split. A missing class folder is an error naming it."""
    counts: dict[str, int] = {}
    for split in ("train", "val"):
        source = imagenet / split
        if not source.is_dir():
            raise FileNotFoundError(
                f"--imagenet: {source} is not a folder (expected train/ and val/ class folders)"
            )
        missing = [wnid for wnid in imagenet100_classes() if not (source / wnid).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"--imagenet: {len(missing)} ImageNet-100 classes missing in {source}, e.g. {missing[0]}"
            )
        (output / split).mkdir(parents=True, exist_ok=True)
        for wnid in imagenet100_classes():
            target = output / split / wnid
            if target.exists() or target.is_symlink():
                continue
            if copy:
                shutil.copytree(source / wnid, target)
            else:
                os.symlink((source / wnid).resolve(), target, target_is_directory=True)
        counts[split] = len(imagenet100_classes())
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.cmc.imagenet100", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--imagenet", required=True, help="ImageNet folder with train/ and val/ class folders"
    )
    parser.add_argument("--output", required=True, help="where to create ImageNet-100's train/ and val/")
    parser.add_argument("--copy", action="store_true", help="copy the class folders instead of linking them")
    args = parser.parse_args(argv)
    try:
        counts = build_imagenet100(Path(args.imagenet), Path(args.output), copy=args.copy)
    except (FileNotFoundError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"ImageNet-100 in {args.output}: {counts['train']} train and {counts['val']} val class folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
