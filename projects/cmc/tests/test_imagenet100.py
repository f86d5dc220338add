"""The shipped ImageNet-100 class list and the folder builder."""

from selfsup.cmc.imagenet100 import build_imagenet100, imagenet100_classes, main


def test_the_class_list_ships_with_the_package():
    classes = imagenet100_classes()
    assert len(classes) == 100 == len(set(classes)) and classes[:2] == ["n02869837", "n01749939"]
    assert all(c.startswith("n") and len(c) == 9 for c in classes)


def test_build_links_the_hundred_classes_and_names_a_missing_one(tmp_path, capsys):
    imagenet = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in [*imagenet100_classes(), "n99999999"]:
            (imagenet / split / wnid).mkdir(parents=True)
            (imagenet / split / wnid / "a.JPEG").write_bytes(b"x")
    assert build_imagenet100(imagenet, tmp_path / "in100") == {"train": 100, "val": 100}
    assert sorted(p.name for p in (tmp_path / "in100" / "train").iterdir()) == sorted(imagenet100_classes())
    assert (tmp_path / "in100" / "val" / "n02869837" / "a.JPEG").is_file()
    (imagenet / "val" / "n01749939" / "a.JPEG").unlink()
    (imagenet / "val" / "n01749939").rmdir()
    assert main(["--imagenet", str(imagenet), "--output", str(tmp_path / "other")]) == 2
    assert "n01749939" in capsys.readouterr().err
