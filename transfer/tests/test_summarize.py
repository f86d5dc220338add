"""Mean ± std over trials of selfsup-transfer metrics."""

from __future__ import annotations

import json
import math

import pytest

from selfsup.transfer.summarize import main, summarize


def test_summarize_by_hand():
    runs = [
        {"bbox": {"AP": 55.0, "AP50": 81.0}},
        {"bbox": {"AP": 57.0, "AP50": 82.0}},
        {"bbox": {"AP": 56.0, "AP50": float("nan")}},
    ]
    summary = summarize(runs)["bbox"]
    assert summary["AP"] == {"mean": 56.0, "std": 1.0, "n": 3}  # sample std of 55, 56, 57
    assert summary["AP50"]["mean"] == 81.5 and summary["AP50"]["n"] == 2
    assert summary["AP50"]["std"] == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError, match="bbox/AP50 is missing"):
        summarize([{"bbox": {"AP50": 1.0}}, {"bbox": {}}])


def test_cli(tmp_path, capsys):
    for i, ap in enumerate((50.0, 52.0)):
        (tmp_path / f"m{i}.json").write_text(json.dumps({"bbox": {"AP": ap}}))
    assert (
        main([str(tmp_path / "m0.json"), str(tmp_path / "m1.json"), "--output", str(tmp_path / "s.json")])
        == 0
    )
    assert "bbox (n=2): AP 51.00 ± 1.41" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["bbox"]["AP"]["mean"] == 51.0
    with pytest.raises(SystemExit):
        main([str(tmp_path / "absent.json")])
    assert "metrics " in capsys.readouterr().err
