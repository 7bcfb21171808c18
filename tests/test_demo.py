"""examples/demo.py keeps working: its main() with tiny settings (1 epoch, a small model)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
pytest.importorskip("orbax.checkpoint")

DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "demo.py")


def load_demo():
    spec = importlib.util.spec_from_file_location("plait_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_main_tiny(tmp_path):
    demo = load_demo()
    figure = tmp_path / "demo.png"
    result = demo.main(["--epochs", "1", "--depth", "2", "--hidden", "16", "--lr", "1e-2",
                        "--figure", str(figure), "--checkpoint-dir", str(tmp_path / "ckpt"), "--min-accuracy", "0"])
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["restored_step"] == 1 and os.listdir(tmp_path / "ckpt") == ["1"]
    assert result["restored_accuracy"] == result["test_accuracy"] > 0.3  # one epoch learns something
    history = result["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert result["predictions"].shape == result["y_test"].shape == (450,)


def test_demo_lists_its_knobs(capsys):
    with pytest.raises(SystemExit) as info:
        load_demo().main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for knob in ("--epochs", "--depth", "--hidden", "--seed", "--figure", "--checkpoint-dir", "--min-accuracy"):
        assert knob in text
