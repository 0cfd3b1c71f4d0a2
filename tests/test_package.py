"""The bundled model, from an installed (non-editable) package, with the edge install only."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "hemalite" / "models"


def test_bundled_model_files_are_small_and_listed():
    assert (MODELS / "hemalite_int8.tflite").stat().st_size < 10_000_000
    assert (MODELS / "hemalite_float32.tflite").stat().st_size < 10_000_000
    header = (MODELS / "test_split.csv").read_text().splitlines()[0]
    assert header.startswith("path,label")


@pytest.mark.slow
def test_installed_package_classifies_a_test_image_without_tensorflow(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True)
    assert (target / "hemalite" / "models" / "hemalite_int8.tflite").is_file()
    rows = (MODELS / "test_split.csv").read_text().splitlines()[1:]
    image = SHARED_DATA / rows[0].split(",")[0]
    truth = rows[0].split(",")[1]
    if not image.is_file():
        pytest.skip("../shared/data/all4 not present")
    code = f"""
import sys, json
sys.modules["tensorflow"] = None  # the edge install has no TensorFlow
sys.modules["keras"] = None
import hemalite
from hemalite.edge.runtime import default_model_path, load_model
from hemalite.contract import load_image, preprocess
path = default_model_path()
model = load_model(path)
scores = model.predict(preprocess(load_image({str(image)!r}, model.info.spec), model.info.spec))
print(json.dumps({{"file": hemalite.__file__, "model": path,
                  "label": model.info.labels[int(scores.argmax())], "dtype": str(model.input_details["dtype"])}}))
"""
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(target)) and out["model"].startswith(str(target))
    assert out["label"] == truth and "uint8" in out["dtype"]


def test_a_stage_without_its_extra_says_what_to_install():
    """`hemalite train` on the edge install: one line naming the extra, no traceback."""
    import click
    from click.testing import CliRunner

    from hemalite.cli import Command

    @click.command("train", cls=Command)
    def needs_keras():
        raise ModuleNotFoundError("No module named 'keras'", name="keras")

    result = CliRunner().invoke(needs_keras, [])
    assert result.exit_code == 2
    assert result.output.strip() == ('error: `train` needs keras, which this install lacks: '
                                     'pip install ".[train]" (from the checkout)')

    @click.command("other", cls=Command)
    def needs_something_else():
        raise ModuleNotFoundError("No module named 'nowhere'", name="nowhere")

    assert isinstance(CliRunner().invoke(needs_something_else, []).exception,
                      ModuleNotFoundError)  # not ours to explain: the traceback stays
