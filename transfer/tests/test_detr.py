"""Converted backbones in a real facebookresearch/detr model and a real Hugging Face DETR, on CPU.

DETR comes from ``SELFSUP_DETR_ROOT`` (a checkout) or from the vendored archive
``<repo>/../shared/vendor/detr-*.tar.gz``; Hugging Face DETR needs ``transformers`` and ``timm``. Without them
the tests skip locally and fail under ``CI=true``: CI must run them. Nothing is downloaded: DETR's backbone and
the Hugging Face config are built without pretrained weights, and the tests prove it by making torchvision's
weight loading raise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import resnet18, resnet50

from selfsup.transfer import detr_train
from selfsup.transfer.cli import main as convert_main
from selfsup.transfer.convert import DETR_BACKBONE_PREFIX, HF_DETR_BACKBONE_PREFIX
from selfsup.transfer.detr import (
    DETR_MAIN_MODULE,
    DETR_TOP_LEVEL,
    detr_backbone_body,
    import_detr,
    import_detr_main,
    load_into_detr,
    load_into_hf_detr,
    read_converted,
)
from selfsup.transfer.presets import PresetMismatchError

REPO = Path(__file__).parents[2]
VENDOR = REPO.parent / "shared" / "vendor"
SCRIPTS = REPO / "transfer" / "scripts"
IN_CI = os.environ.get("CI", "").lower() == "true"  # the rule of conftest.require and noxfile
HOW_TO_GET_DETR = (
    "set SELFSUP_DETR_ROOT to a facebookresearch/detr checkout (git clone https://github.com/facebookresearch/detr) "
    f"or put the vendored detr-<commit>.tar.gz in {VENDOR}"
)


def _unavailable(message: str) -> None:
    """Skip locally; fail under CI=true, where these tests must run."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: this test must not skip)")
    pytest.skip(message)


# ---------------------------------------------------------------------------------------------- fixtures


def _find_checkout(folder: Path) -> Path | None:
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / "models" / "detr.py").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def detr_root(tmp_path_factory) -> Iterator[Path]:
    """A DETR checkout; its top-level modules are forgotten again at the end of the session."""
    env = os.environ.get("SELFSUP_DETR_ROOT")
    if env:
        root = Path(env).expanduser()
        if not (root / "models" / "detr.py").is_file():
            pytest.fail(
                f"SELFSUP_DETR_ROOT={env} is not a facebookresearch/detr checkout (no models/detr.py)"
            )
    else:
        archives = sorted(VENDOR.glob("detr-*.tar.gz"))
        if not archives:
            _unavailable(f"DETR not found: {HOW_TO_GET_DETR}")
        target = tmp_path_factory.mktemp("detr")
        with tarfile.open(archives[-1]) as archive:
            archive.extractall(target, filter="data")
        root = _find_checkout(target)
        if root is None:
            pytest.fail(f"{archives[-1]} holds no models/detr.py")
    root = root.resolve()
    yield root
    sys.path[:] = [p for p in sys.path if p != str(root)]
    for name in [*DETR_TOP_LEVEL, DETR_MAIN_MODULE]:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]


@pytest.fixture(scope="session")
def detr_main(detr_root) -> ModuleType:
    try:
        return import_detr_main(detr_root)
    except ModuleNotFoundError as err:
        if err.name not in ("scipy", "pycocotools"):
            raise
        _unavailable(f'DETR needs scipy and pycocotools ({err}): pip install -e ".[transfer]"')
        raise


@pytest.fixture(scope="session")
def hf() -> ModuleType:
    try:
        import timm  # noqa: F401
        import transformers
    except ImportError as err:
        _unavailable(f'Hugging Face DETR needs transformers and timm ({err}): pip install -e ".[transfer]"')
    return transformers


def _sensible_weights(factory, seed: int) -> dict[str, torch.Tensor]:
    """Random torchvision weights with positive BN variances (so a forward pass stays finite) and BN values
    unlike their defaults (so a buffer left unloaded shows)."""
    torch.manual_seed(seed)
    model = factory()
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var") or (key.endswith(".weight") and value.ndim == 1 and "fc" not in key):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith(("running_mean", ".bias")) and "fc" not in key:
            value = 0.1 * torch.randn(value.shape, generator=generator)
        out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    return _sensible_weights(resnet50, seed=0)


def _convert(tmp: Path, weights: dict[str, torch.Tensor], target: str, name: str) -> Path:
    source = tmp / f"{name}_torchvision.pth"
    if not source.exists():
        torch.save(weights, source)
    output = tmp / f"{name}_{target}.pth"
    assert convert_main([target, "--checkpoint", str(source), "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def files(r50, tmp_path_factory) -> dict[str, Path]:
    """``selfsup-convert detr`` and ``detr-hf`` files of ``r50``, and a ``detr``/``detr-hf`` resnet18 pair."""
    tmp = tmp_path_factory.mktemp("converted")
    r18 = _sensible_weights(resnet18, seed=1)
    return {
        "detr": _convert(tmp, r50, "detr", "r50"),
        "detr-hf": _convert(tmp, r50, "detr-hf", "r50"),
        "detr_r18": _convert(tmp, r18, "detr", "r18"),
        "detr-hf_r18": _convert(tmp, r18, "detr-hf", "r18"),
        "r18_source": tmp / "r18_torchvision.pth",
    }


def _no_torchvision_weights(*args, **kwargs):
    raise AssertionError("torchvision pretrained weights were requested")


@pytest.fixture(scope="module")
def detr_args(detr_main) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[detr_main.get_args_parser()])
    return parser.parse_args(["--backbone", "resnet50", "--device", "cpu"])  # DETR's defaults otherwise


@pytest.fixture(scope="module")
def detr_model(detr_root, detr_main, detr_args) -> torch.nn.Module:
    """DETR's full model (main.py defaults, resnet50), built with torchvision's weight loading disabled."""
    models = import_detr(detr_root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.models.WeightsEnum, "get_state_dict", _no_torchvision_weights)
        patch.setattr(torch.hub, "load_state_dict_from_url", _no_torchvision_weights)
        model, _, _ = models.build_model(detr_args)
    return model.eval()


@pytest.fixture(scope="module")
def hf_model(hf) -> torch.nn.Module:
    config = hf.DetrConfig(
        backbone="resnet50",
        use_timm_backbone=True,
        use_pretrained_backbone=False,
        num_queries=10,
        num_labels=3,
    )
    return hf.DetrForObjectDetection(config).eval()


# ----------------------------------------------------------------------------------- selfsup-convert detr-hf


def test_cli_detr_hf_file_keys_preset_and_settings(files, r50, tmp_path, capsys):
    saved = torch.load(files["detr-hf"], weights_only=True)
    expected = {
        HF_DETR_BACKBONE_PREFIX + k: v
        for k, v in r50.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert set(saved["model"]) == set(expected) and len(expected) == 265
    assert all(torch.equal(saved["model"][k], v) for k, v in expected.items())
    assert saved["selfsup_preset"] == {
        "backbone": "resnet50", "input_format": "RGB", "pixel_mean": [0.485, 0.456, 0.406],
        "pixel_std": [0.229, 0.224, 0.225], "target": "detr-hf",
    }  # fmt: skip
    assert saved["selfsup_conversion"]["target"] == "detr-hf"
    out = tmp_path / "r18_hf.pt"
    assert convert_main(["detr-hf", "--checkpoint", str(files["r18_source"]), "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert 'DetrConfig(backbone="resnet18", use_timm_backbone=True, use_pretrained_backbone=False' in stdout
    assert f"load_into_hf_detr(model, '{out}')" in stdout
    with pytest.raises(SystemExit):
        convert_main(
            ["detr-hf", "--checkpoint", str(files["r18_source"]), "--output", str(tmp_path / "x.pkl")]
        )
    assert "a detr-hf file must end with .pth or .pt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- facebookresearch/detr


def test_import_detr_refuses_what_is_not_detr(detr_root, detr_main, tmp_path):
    with pytest.raises(ValueError, match="not a facebookresearch/detr checkout"):
        import_detr(tmp_path)
    other = tmp_path / "other_detr"
    (other / "models").mkdir(parents=True)
    (other / "models" / "detr.py").write_text("")
    import_detr(detr_root)
    with pytest.raises(ImportError, match="'models' is already imported from"):
        import_detr(other)


def test_detr_file_fills_torchvision_resnet_but_fc(files, r50):
    weights = torch.load(files["detr"], weights_only=True)["model"]
    assert all(k.startswith(DETR_BACKBONE_PREFIX) for k in weights)
    with torch.device("meta"):
        plain = resnet50()
    result = plain.load_state_dict({k.removeprefix(DETR_BACKBONE_PREFIX): v for k, v in weights.items()},
                                   strict=False, assign=True)  # fmt: skip
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []


def test_detr_backbone_body_loads_every_tensor(detr_model, files, r50):
    body = detr_backbone_body(detr_model)
    report = load_into_detr(detr_model, files["detr"], backbone_name="resnet50")
    assert report.module == "backbone.0.body"
    assert len(report.loaded) == 265 == len(body.state_dict())
    loaded = detr_model.state_dict()
    for key in report.loaded:
        assert torch.equal(loaded[key], r50[key.removeprefix(DETR_BACKBONE_PREFIX)]), key
    x = torch.randn(1, 3, 64, 64)
    with torch.device("meta"):
        reference = resnet50()
    reference.load_state_dict(r50, assign=True)
    reference.eval()
    with torch.no_grad():
        features = body(x)["0"]
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))  # fmt: skip
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_full_detr_state_dict_load_misses_only_non_backbone_keys(detr_model, files):
    result = detr_model.load_state_dict(torch.load(files["detr"], weights_only=True)["model"], strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and not [k for k in result.missing_keys if k.startswith(DETR_BACKBONE_PREFIX)]
    assert any(k.startswith("transformer.") for k in result.missing_keys)


def test_detr_forward_pass(detr_model, files, detr_args):
    from util.misc import nested_tensor_from_tensor_list  # DETR's own, from the checkout

    load_into_detr(detr_model, files["detr"])
    images = nested_tensor_from_tensor_list([torch.randn(3, 64, 64), torch.randn(3, 48, 64)])
    with torch.no_grad():
        out = detr_model(images)
    assert out["pred_logits"].shape == (2, detr_args.num_queries, 91 + 1)  # COCO: 91 ids + no-object
    assert out["pred_boxes"].shape == (2, detr_args.num_queries, 4)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_boxes"]).all()


def test_preset_mismatch_names_both_backbones(detr_model, files):
    with pytest.raises(
        PresetMismatchError, match=r"--backbone is resnet50, the weights need --backbone resnet18"
    ):
        load_into_detr(detr_model, files["detr_r18"], backbone_name="resnet50")
    with pytest.raises(ValueError, match=r"does not fit the DETR backbone.0.body: .*missing"):
        load_into_detr(detr_model, files["detr_r18"])  # no name given: the shapes still refuse it
    with pytest.raises(PresetMismatchError, match="written for detr-hf"):
        load_into_detr(detr_model, files["detr-hf"], backbone_name="resnet50")


def test_bare_state_dict_has_no_preset_but_keys_are_checked(detr_model, r50):
    with pytest.raises(ValueError, match=re.escape("not under 'backbone.0.body.'")):
        load_into_detr(detr_model, {k: v for k, v in r50.items() if not k.startswith("fc")})
    assert read_converted({"model": {"x": torch.zeros(1)}}).preset is None


# -------------------------------------------------------------------------------------- Hugging Face DETR


def test_hf_detr_loads_every_backbone_tensor_and_runs(hf_model, files, r50):
    report = load_into_hf_detr(hf_model, files["detr-hf"])
    backbone_keys = [k for k in hf_model.state_dict() if k.startswith(report.module + ".")]
    assert sorted(report.loaded) == sorted(backbone_keys)  # nothing missing, nothing unexpected
    assert len(report.loaded) == 265
    state = hf_model.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], r50[key.removeprefix(report.module + ".")]), key
    if (
        report.module + "." == HF_DETR_BACKBONE_PREFIX
    ):  # transformers 5 names: the file's keys load as they are
        result = hf_model.load_state_dict(
            torch.load(files["detr-hf"], weights_only=True)["model"], strict=False
        )
        assert result.unexpected_keys == []
        assert not [k for k in result.missing_keys if k.startswith(HF_DETR_BACKBONE_PREFIX)]
    with torch.no_grad():
        out = hf_model(pixel_values=torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 10, 3 + 1)
    assert out.pred_boxes.shape == (1, 10, 4)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.pred_boxes).all()


def test_hf_and_detr_backbones_compute_the_same_features(hf_model, detr_model, files):
    load_into_hf_detr(hf_model, files["detr-hf"])
    load_into_detr(detr_model, files["detr"])
    x = torch.randn(1, 3, 64, 64)
    _, hf_backbone = next((n, m) for n, m in hf_model.named_modules() if n.endswith("backbone.model"))
    with torch.no_grad():
        hf_features = hf_backbone(x)[-1]
        detr_features = detr_backbone_body(detr_model)(x)["0"]
    scale = detr_features.abs().max().item()
    torch.testing.assert_close(hf_features, detr_features, rtol=1e-4, atol=1e-4 * scale)


def test_hf_detr_refuses_other_files(hf_model, files):
    with pytest.raises(
        PresetMismatchError, match="--backbone is resnet50, the weights need --backbone resnet18"
    ):
        load_into_hf_detr(hf_model, files["detr-hf_r18"])
    with pytest.raises(PresetMismatchError, match=r"the weights were written for detr$"):
        load_into_hf_detr(hf_model, files["detr"])


# --------------------------------------------------------------------------------------------- detr_train


def _train_fails(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        detr_train.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_detr_train_refuses_bad_input(detr_root, files, tmp_path, capsys):
    assert "--detr_root is required" in _train_fails(capsys, "--selfsup_weights", str(files["detr"]))
    err = _train_fails(capsys, "--detr_root", str(tmp_path / "nope"), "--selfsup_weights", str(files["detr"]))
    assert "--detr_root" in err and "not a facebookresearch/detr checkout" in err
    err = _train_fails(
        capsys, "--detr_root", str(detr_root), "--selfsup_weights", str(tmp_path / "absent.pth")
    )
    assert "--selfsup_weights" in err and "not found" in err
    assert "--selfsup_weights is required" in _train_fails(capsys, "--detr_root", str(detr_root))
    err = _train_fails(capsys, "--detr_root", str(detr_root), "--selfsup_weights", str(files["detr_r18"]))
    assert "--backbone is resnet50, the weights need --backbone resnet18" in err  # DETR's default --backbone
    err = _train_fails(capsys, "--detr_root", str(detr_root), "--selfsup_weights", str(files["detr-hf"]))
    assert "written for detr-hf" in err
    for suffix in (".pkl", ".pth"):  # Detectron2 files: a numpy pickle, and tensors under Detectron2's names
        d2 = tmp_path / f"d2{suffix}"
        assert (
            convert_main(["detectron2", "--checkpoint", str(files["r18_source"]), "--output", str(d2)]) == 0
        )
        err = _train_fails(
            capsys, "--detr_root", str(detr_root), "--selfsup_weights", str(d2), "--backbone", "resnet18"
        )
        last = err.strip().splitlines()[-1]  # argparse's usage, then the one-line error
        assert last.startswith(f"{detr_train.PROG}: error: --selfsup_weights: {d2}")
        assert ("Detectron2's format" if suffix == ".pkl" else "not a DETR one") in last


def _tiny_coco(root: Path) -> Path:
    """One 64x48 image with one box per split, in DETR's COCO layout."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            root / f"{split}2017" / "1.jpg"
        )
        coco = {
            "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8.0, 6.0, 20.0, 16.0],
                             "area": 320.0, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}],
        }  # fmt: skip
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
    return root


def test_detr_train_one_epoch_starts_from_the_converted_backbone(
    detr_root, files, tmp_path, capsys, monkeypatch
):
    """DETR's own main() for one epoch (one train and one val image, tiny transformer, resnet18): the trained
    checkpoint still holds the converted frozen layers (stem, layer1, every frozen-BN buffer)."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):  # DETR would start distributed mode
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "run"
    argv = [
        "--detr_root", str(detr_root), "--selfsup_weights", str(files["detr_r18"]), "--backbone", "resnet18",
        "--coco_path", str(_tiny_coco(tmp_path / "coco")), "--output_dir", str(output), "--device", "cpu",
        "--epochs", "1", "--batch_size", "1", "--num_workers", "0", "--lr_backbone", "5e-5",
        "--num_queries", "5", "--enc_layers", "1", "--dec_layers", "1", "--hidden_dim", "32", "--nheads", "2",
        "--dim_feedforward", "64",
    ]  # fmt: skip
    assert detr_train.main(argv) == 0
    assert "selfsup: loaded 100 backbone tensors" in capsys.readouterr().out
    source = torch.load(files["r18_source"], weights_only=True)
    trained = torch.load(output / "checkpoint.pth", weights_only=True)["model"]  # Namespace allowed by main()
    frozen = [k for k in source if k.startswith(("conv1.", "bn1.", "layer1.")) or "running_" in k]
    frozen = [k for k in frozen if not k.endswith("num_batches_tracked")]  # DETR's frozen BN has none
    assert len(frozen) > 40
    for key in frozen:
        assert torch.equal(trained[DETR_BACKBONE_PREFIX + key], source[key]), key
    record = json.loads((output / detr_train.RECORD).read_text())
    assert record["num_tensors"] == 100 and record["selfsup_preset"]["backbone"] == "resnet18"


# ----------------------------------------------------------------------------------------------- scripts


def _fake_bin(folder: Path, **programs: str) -> dict[str, str]:
    folder.mkdir()
    for name, body in programs.items():
        path = folder / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("script", ["detr_coco_torchrun.sh", "detr_coco.sbatch"])
def test_scripts_pass_the_swav_recipe_and_resume(script, tmp_path):
    path = SCRIPTS / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    env = _fake_bin(
        tmp_path / "bin",
        torchrun='printf "%s\\n" "$@"',
        srun='shift; exec "$@"',  # drops --kill-on-bad-exit=1
        scontrol="echo node-a; echo node-b",
    )
    output = tmp_path / "run"
    env.update(DETR_ROOT="/detr", COCO_PATH="/coco", WEIGHTS="/w.pth", OUTPUT=str(output))
    env.update(
        SLURM_JOB_NODELIST="node-[a-b]", SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="4"
    )
    run = subprocess.run([str(path), "--epochs", "3"], env=env, capture_output=True, text=True, check=True)
    args = run.stdout.split("\n")
    assert args[args.index("-m") + 1] == "selfsup.transfer.detr_train"
    flags = dict(zip(args[args.index("-m") + 2 :: 2], args[args.index("-m") + 3 :: 2]))
    assert flags["--lr_backbone"] == "5e-5" and flags["--backbone"] == "resnet50"
    assert flags["--selfsup_weights"] == "/w.pth" and flags["--epochs"] == "3"
    assert "--resume" not in flags
    if script.endswith(".sbatch"):
        assert args[args.index("--rdzv_endpoint") + 1] == "node-a:29500"
        assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--nproc_per_node") + 1] == "4"
    (output / "checkpoint.pth").write_bytes(b"")
    run = subprocess.run([str(path)], env=env, capture_output=True, text=True, check=True)
    assert f"--resume\n{output / 'checkpoint.pth'}\n" in run.stdout
    del env["WEIGHTS"]
    missing = subprocess.run([str(path)], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "WEIGHTS" in missing.stderr
