"""Remake tests/data/tiny_{int8,float32}.tflite: `make tiny-models` (needs TensorFlow).

The edge tests run these committed files so that they need no TensorFlow (a Pi has none).
They are made exactly as a user makes a model: `hemalite train` then `hemalite convert`,
on the tests' colour dataset (conftest.make_dataset), so they carry real TFLite metadata.
Usage, from the repository root: python -m tests.make_tiny_models [--out tests/data]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import TINY_SIZE, make_dataset

DATA = Path(__file__).resolve().parent / "data"
# A MobileNetV2 (the bundled model's graph) narrowed to alpha 0.1 so the files stay small
# (int8 250 kB, float32 405 kB), trained from scratch (flat colours need no ImageNet
# features) for 40 epochs: at 12 the narrow net still confused the colours. Colour squares
# are not smears: no stain mask (--no-ground), no acquisition shifts.
TRAIN = ["--weights", "none", "--alpha", "0.1", "--image-size", str(TINY_SIZE),
         "--epochs", "40", "--batch-size", "8", "--learning-rate", "1e-2", "--patience", "40",
         "--no-augment", "--no-ground", "--no-acquisition", "--no-progress"]
CONVERT = ["--int8", "--float32", "--calib-size", "32"]


def hemalite(*args: str) -> None:
    """The `hemalite` command of this Python's environment."""
    subprocess.run([str(Path(sys.executable).with_name("hemalite")), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA, help="folder for the .tflite files")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as tmp:
        data, run = make_dataset(Path(tmp, "data")), Path(tmp, "run")
        hemalite("train", str(data), "--out", str(run), *TRAIN)
        hemalite("convert", str(run), *CONVERT)
        out.mkdir(parents=True, exist_ok=True)
        for variant in ("int8", "float32"):
            target = out / f"tiny_{variant}.tflite"
            shutil.copyfile(run / "tflite" / f"model_{variant}.tflite", target)
            print(f"wrote {target} ({target.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
